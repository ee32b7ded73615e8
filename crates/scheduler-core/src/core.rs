//! The scheduler's state and its transitions. See the crate docs for the state table.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use rask_proto::msg::{ComputeMsg, DepLoc, Resource};
use rask_proto::{ClientId, Datum, StimulusId, TaskId, WorkerId};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::few::Few;
use crate::slab::Slab;
use crate::story::{Transition, TransitionLog};
use crate::TaskState;

/// Tunables of the core.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// Duration assumed for an op never seen before.
    pub default_duration_us: u64,
    /// How much estimated work each thread of a worker is given ahead (its queue).
    pub queue_target_us: u64,
    /// Hard cap on tasks assigned per worker thread, whatever the estimates say.
    pub max_processing_per_thread: u32,
    /// A task whose worker dies this many times errs with "killed worker".
    pub allowed_failures: u32,
    /// Bytes per second assumed for moving a dependency between workers.
    pub bandwidth: f64,
    /// Transitions kept for `story()`.
    pub log_capacity: usize,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            default_duration_us: 500,
            queue_target_us: 5_000,
            max_processing_per_thread: 1_000,
            allowed_failures: 3,
            bandwidth: 1e9,
            log_capacity: 100_000,
        }
    }
}

/// One task of a graph, as the core receives it.
#[derive(Clone, Debug, PartialEq)]
pub struct NewTask {
    pub key: String,
    pub op: String,
    /// Arguments; `Datum::Ref(i)` is the output of `deps[i]`, `Datum::Buf(i)` is `bufs[i]`.
    pub args: Datum,
    pub bufs: Vec<Bytes>,
    pub deps: Vec<String>,
    pub resources: Vec<Resource>,
}

/// A worker joining the cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerSpec {
    pub name: String,
    pub addr: String,
    pub host_id: String,
    pub nthreads: u32,
    pub memory_limit: u64,
    pub resources: Vec<Resource>,
    /// The GPU this worker drives (its index on its host), if any.
    pub gpu: Option<u32>,
    /// GPUs of the same host that `gpu` reaches over NVLink.
    pub nvlink: Vec<u32>,
    /// Device memory use past which the worker spills from its device (0: no device).
    pub device_spill_at: u64,
}

impl WorkerSpec {
    /// What moving a byte from `holder` to this worker costs, relative to the network:
    /// nothing on the same worker, little between CPU workers of one host (shared memory,
    /// no copy), a tenth over NVLink, half through the host's PCIe, all of it over tcp.
    pub fn link_factor(&self, holder: &WorkerSpec) -> f64 {
        let same_host = !self.host_id.is_empty() && self.host_id == holder.host_id;
        self.link_factor_on(same_host, holder)
    }

    /// `link_factor`, with whether both workers share a host already known.
    fn link_factor_on(&self, same_host: bool, holder: &WorkerSpec) -> f64 {
        if !same_host {
            return 1.0;
        }
        match (self.gpu, holder.gpu) {
            (None, None) => 0.05,
            (Some(a), Some(b)) if self.nvlink.contains(&b) || holder.nvlink.contains(&a) => 0.1,
            _ => 0.5,
        }
    }
}

/// Why a task failed: the failing task's key and op, and the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskFailure {
    pub key: String,
    pub op: String,
    pub message: String,
}

/// What the core asks the world to do, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Send a task to a worker.
    Compute {
        worker: WorkerId,
        msg: ComputeMsg,
        bufs: Vec<Bytes>,
    },
    /// Tell a worker to drop a task's data, or cancel it.
    Free { worker: WorkerId, task: TaskId },
    /// Tell a client that a key it wants is in memory.
    KeyInMemory {
        client: ClientId,
        key: Arc<str>,
        task: TaskId,
        nbytes: u64,
        holders: Vec<WorkerId>,
        /// The value, when the worker reported it inline.
        value: Option<Datum>,
    },
    /// Tell a client that a key it wants failed.
    KeyErred {
        client: ClientId,
        key: Arc<str>,
        error: Arc<TaskFailure>,
    },
}

/// A graph the core refuses as a whole; nothing of it is kept.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    #[error("task {key:?} uses unknown op {op:?} (not registered on the cluster's workers)")]
    UnknownOp { key: String, op: String },
    #[error("task {key:?} depends on unknown key {dep:?}")]
    UnknownDependency { key: String, dep: String },
    #[error("key {key:?} appears twice in one graph")]
    DuplicateKey { key: String },
    #[error("the graph has a cycle through {key:?}")]
    Cycle { key: String },
    #[error("task {key:?} refers to dependency {index} but has {count}")]
    BadReference {
        key: String,
        index: u32,
        count: usize,
    },
    #[error("task {key:?} refers to buffer {index} but has {count}")]
    BadBuffer {
        key: String,
        index: u32,
        count: usize,
    },
    #[error("key {key:?} is neither in the graph nor held on the cluster (released, or never submitted)")]
    UnknownKey { key: String },
    #[error("unknown client {0}")]
    UnknownClient(ClientId),
}

/// Counts for `scheduler_info`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CoreInfo {
    pub tasks_by_state: Vec<(&'static str, u64)>,
    pub workers: Vec<WorkerInfo>,
    pub clients: u32,
}

/// One worker's load, for `scheduler_info`.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerInfo {
    pub id: WorkerId,
    pub processing: u64,
    pub stored_keys: u64,
    pub stored_bytes: u64,
}

/// Fields most tasks never use, boxed to keep [`Task`] small.
#[derive(Debug, Default)]
struct TaskExtra {
    bufs: Vec<Bytes>,
    /// (resource id, amount).
    resources: Vec<(u32, f64)>,
    /// Names of the workers that died while running this task.
    killed_on: Vec<Arc<str>>,
    error: Option<Arc<TaskFailure>>,
}

#[derive(Debug)]
struct Task {
    key: Arc<str>,
    op: u32,
    args: Datum,
    deps: Box<[TaskId]>,
    dependents: Vec<TaskId>,
    state: TaskState,
    /// Invariant: in `Waiting`, the number of deps not in memory (> 0); otherwise 0.
    waiting_on: u32,
    /// Invariant: the number of dependents that are waiting, queued, no-worker or processing.
    waiters: u32,
    /// Invariant: non-empty exactly in `Memory`; mirrored by each worker's `has_what`.
    who_has: Few<WorkerId>,
    /// Invariant: `Some` exactly in `Processing`; mirrored by the worker's `processing`.
    processing_on: Option<WorkerId>,
    /// Estimated duration charged to the worker's occupancy while processing.
    est_us: u32,
    nbytes: u64,
    /// Invariant: mirrored by each client's `wants`.
    who_wants: Few<ClientId>,
    /// Lower runs first: submission order.
    priority: u64,
    suspicious: u32,
    extra: Option<Box<TaskExtra>>,
}

impl Task {
    fn extra(&mut self) -> &mut TaskExtra {
        self.extra.get_or_insert_with(Default::default)
    }

    fn error(&self) -> Option<&Arc<TaskFailure>> {
        self.extra.as_ref().and_then(|e| e.error.as_ref())
    }

    fn resources(&self) -> &[(u32, f64)] {
        self.extra.as_ref().map_or(&[], |e| &e.resources)
    }
}

#[derive(Debug)]
struct Worker {
    spec: WorkerSpec,
    name: Arc<str>,
    /// Invariant: `spec.host_id` interned in the core's `host_ids`; `None` when it is
    /// empty (an unknown host, shared with no one).
    host: Option<u32>,
    /// (resource id, total amount).
    resources: Vec<(u32, f64)>,
    /// (resource id, amount held by processing tasks).
    used: Vec<(u32, f64)>,
    processing: FxHashSet<TaskId>,
    /// Invariant: the sum of `est_us` of `processing`.
    occupancy_us: u64,
    has_what: FxHashSet<TaskId>,
    /// Invariant: the sum of `nbytes` of `has_what`.
    nbytes: u64,
    /// Device memory in use, as last reported.
    device_used: u64,
}

impl Worker {
    fn has_capacity(&self, cfg: &CoreConfig, resources: &[(u32, f64)]) -> bool {
        let threads = self.spec.nthreads.max(1) as u64;
        let n = self.processing.len() as u64;
        let slots = n < threads
            || (self.occupancy_us < cfg.queue_target_us * threads
                && n < cfg.max_processing_per_thread as u64 * threads);
        slots
            && resources.iter().all(|&(r, need)| {
                let total = lookup(&self.resources, r);
                lookup(&self.used, r) + need <= total + 1e-9
            })
    }

    fn fits(&self, resources: &[(u32, f64)]) -> bool {
        resources
            .iter()
            .all(|&(r, need)| lookup(&self.resources, r) + 1e-9 >= need)
    }

    /// `WorkerSpec::link_factor`, comparing interned host ids instead of strings.
    fn link_factor(&self, holder: &Worker) -> f64 {
        let same_host = self.host.is_some() && self.host == holder.host;
        self.spec.link_factor_on(same_host, &holder.spec)
    }
}

// Scheduler memory per task is a target (≤ 500 B at a million tasks): keep `Task` small.
const _: () = assert!(std::mem::size_of::<Task>() <= 176);

fn lookup(v: &[(u32, f64)], r: u32) -> f64 {
    v.iter().find(|(id, _)| *id == r).map_or(0.0, |(_, a)| *a)
}

fn add_to(v: &mut Vec<(u32, f64)>, r: u32, amount: f64) {
    match v.iter_mut().find(|(id, _)| *id == r) {
        Some((_, a)) => *a += amount,
        None => v.push((r, amount)),
    }
}

#[derive(Debug)]
struct OpStat {
    name: Arc<str>,
    /// Moving average of measured durations; `None` until the first is measured.
    avg_us: Option<f64>,
}

fn is_active(s: TaskState) -> bool {
    matches!(
        s,
        TaskState::Waiting | TaskState::Queued | TaskState::NoWorker | TaskState::Processing
    )
}

/// The scheduler's whole state. See the crate docs.
pub struct SchedulerCore {
    cfg: CoreConfig,
    tasks: Slab<Task>,
    keys: FxHashMap<Arc<str>, TaskId>,
    next_priority: u64,
    workers: FxHashMap<WorkerId, Worker>,
    clients: FxHashMap<ClientId, FxHashSet<TaskId>>,
    /// Ready tasks waiting for a worker slot, by priority.
    queued: BTreeSet<(u64, TaskId)>,
    /// Ready tasks that no current worker can run, by priority.
    no_worker: BTreeSet<(u64, TaskId)>,
    ops: Vec<OpStat>,
    op_ids: FxHashMap<Arc<str>, u32>,
    resource_ids: FxHashMap<String, u32>,
    /// Hosts' ids interned, so that placement compares numbers.
    host_ids: FxHashMap<String, u32>,
    /// Op names the cluster's workers can run; `None` accepts any op.
    registry: Option<FxHashSet<String>>,
    actions: Vec<Action>,
    log: TransitionLog,
    recs: VecDeque<(TaskId, TaskState)>,
    stimulus: StimulusId,
    counts: [u64; 8],
}

impl SchedulerCore {
    /// An empty scheduler.
    pub fn new(cfg: CoreConfig) -> Self {
        let log = TransitionLog::new(cfg.log_capacity);
        SchedulerCore {
            cfg,
            tasks: Slab::default(),
            keys: FxHashMap::default(),
            next_priority: 0,
            workers: FxHashMap::default(),
            clients: FxHashMap::default(),
            queued: BTreeSet::new(),
            no_worker: BTreeSet::new(),
            ops: Vec::new(),
            op_ids: FxHashMap::default(),
            resource_ids: FxHashMap::default(),
            host_ids: FxHashMap::default(),
            registry: None,
            actions: Vec::new(),
            log,
            recs: VecDeque::new(),
            stimulus: StimulusId(0),
            counts: [0; 8],
        }
    }

    /// Restricts submitted graphs to these ops (the workers' registry), or lifts the
    /// restriction (`None`: no worker is there to say which ops exist).
    pub fn set_registry(&mut self, ops: Option<impl IntoIterator<Item = String>>) {
        self.registry = ops.map(|ops| ops.into_iter().collect());
    }

    /// The actions produced since the last call, in order.
    pub fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    /// The id of the stimulus handled last.
    pub fn last_stimulus(&self) -> StimulusId {
        self.stimulus
    }

    fn begin(&mut self) {
        self.stimulus = StimulusId(self.stimulus.0 + 1);
    }

    // ----- stimuli -----------------------------------------------------------------

    /// A client connected.
    pub fn add_client(&mut self, client: ClientId) {
        self.begin();
        self.clients.entry(client).or_default();
    }

    /// A client disconnected: everything it wanted is released.
    pub fn remove_client(&mut self, client: ClientId) {
        self.begin();
        let Some(wants) = self.clients.remove(&client) else {
            return;
        };
        for t in wants {
            if let Some(task) = self.tasks.get_mut(&t) {
                task.who_wants.retain(|c| *c != client);
                self.check_release(t);
            }
        }
        self.run();
    }

    /// A worker reports its device memory in use (placement avoids pushing a full
    /// device's values out when a peer has room).
    pub fn worker_device_memory(&mut self, id: WorkerId, used: u64) {
        if let Some(w) = self.workers.get_mut(&id) {
            w.device_used = used;
        }
    }

    /// A worker joined.
    pub fn add_worker(&mut self, id: WorkerId, spec: WorkerSpec) {
        self.begin();
        let resources = spec
            .resources
            .iter()
            .map(|r| (self.resource_id(&r.name), r.amount))
            .collect();
        let name: Arc<str> = spec.name.as_str().into();
        let host = (!spec.host_id.is_empty()).then(|| self.host_id(&spec.host_id));
        self.workers.insert(
            id,
            Worker {
                spec,
                name,
                host,
                resources,
                used: Vec::new(),
                processing: FxHashSet::default(),
                occupancy_us: 0,
                has_what: FxHashSet::default(),
                nbytes: 0,
                device_used: 0,
            },
        );
        // Tasks no worker could run may fit now.
        let stuck: Vec<TaskId> = self.no_worker.iter().map(|&(_, t)| t).collect();
        for t in stuck {
            self.place_ready(t);
        }
        self.run();
        self.fill_slots();
    }

    /// A worker left or died: its running tasks are rescheduled, data only it held is
    /// recomputed if still needed, and a task that was running on `allowed_failures`
    /// dying workers errs.
    pub fn remove_worker(&mut self, id: WorkerId) {
        self.begin();
        let Some(w) = self.workers.remove(&id) else {
            return;
        };
        let mut processing: Vec<TaskId> = w.processing.into_iter().collect();
        processing.sort_unstable();
        for t in processing {
            let allowed = self.cfg.allowed_failures;
            let task = self
                .tasks
                .get_mut(&t)
                .expect("invariant: processing task exists");
            // A pre-assigned task still waiting for its local input was not running: the
            // death is not held against it.
            if task.waiting_on > 0 {
                self.recs.push_back((t, TaskState::Released));
                continue;
            }
            task.suspicious += 1;
            task.extra().killed_on.push(w.name.clone());
            if task.suspicious >= allowed {
                let killed = task.extra().killed_on.join(", ");
                let error = TaskFailure {
                    key: task.key.to_string(),
                    op: self.ops[task.op as usize].name.to_string(),
                    message: format!(
                        "killed worker: the task was running on {} workers that died ({killed})",
                        task.suspicious
                    ),
                };
                task.extra().error = Some(Arc::new(error));
                self.recs.push_back((t, TaskState::Erred));
            } else {
                self.recs.push_back((t, TaskState::Released));
            }
        }
        let mut held: Vec<TaskId> = w.has_what.into_iter().collect();
        held.sort_unstable();
        for t in held {
            let task = self.tasks.get_mut(&t).expect("invariant: held task exists");
            task.who_has.retain(|x| *x != id);
            if task.who_has.is_empty() {
                self.recs.push_back((t, TaskState::Released));
            }
        }
        self.run();
        if self.workers.is_empty() {
            let queued: Vec<TaskId> = self.queued.iter().map(|&(_, t)| t).collect();
            for t in queued {
                self.place_ready(t);
            }
        }
        self.fill_slots();
    }

    /// A client submitted a graph. `wanted` are the keys it holds futures for (they may
    /// name tasks submitted before). On error nothing changes.
    pub fn update_graph(
        &mut self,
        client: ClientId,
        tasks: Vec<NewTask>,
        wanted: &[String],
    ) -> Result<(), GraphError> {
        self.begin();
        if !self.clients.contains_key(&client) {
            return Err(GraphError::UnknownClient(client));
        }
        let order = self.check_graph(&tasks, wanted)?;
        let mut slots: Vec<Option<NewTask>> = tasks.into_iter().map(Some).collect();
        let mut created = Vec::new();
        for i in order {
            let nt = slots[i].take().expect("invariant: each index once");
            if self.keys.contains_key(nt.key.as_str()) {
                continue;
            }
            let id = self.tasks.next_id();
            let deps: Box<[TaskId]> = nt.deps.iter().map(|k| self.keys[k.as_str()]).collect();
            for d in deps.iter() {
                self.tasks
                    .get_mut(d)
                    .expect("invariant: dep exists")
                    .dependents
                    .push(id);
            }
            let op = self.op_id(&nt.op);
            let resources: Vec<(u32, f64)> = nt
                .resources
                .iter()
                .map(|r| (self.resource_id(&r.name), r.amount))
                .collect();
            let extra = (!nt.bufs.is_empty() || !resources.is_empty()).then(|| {
                Box::new(TaskExtra {
                    bufs: nt.bufs,
                    resources,
                    ..Default::default()
                })
            });
            let key: Arc<str> = nt.key.into();
            self.keys.insert(key.clone(), id);
            self.tasks.insert(
                id,
                Task {
                    key,
                    op,
                    args: nt.args,
                    deps,
                    dependents: Vec::new(),
                    state: TaskState::Released,
                    waiting_on: 0,
                    waiters: 0,
                    who_has: Few::default(),
                    processing_on: None,
                    est_us: 0,
                    nbytes: 0,
                    who_wants: Few::default(),
                    priority: self.next_priority,
                    suspicious: 0,
                    extra,
                },
            );
            self.next_priority += 1;
            self.counts[state_index(TaskState::Released)] += 1;
            created.push(id);
        }
        let mut touched = Vec::new();
        for key in wanted {
            let Some(&t) = self.keys.get(key.as_str()) else {
                continue;
            };
            let wants = self
                .clients
                .get_mut(&client)
                .expect("invariant: checked above");
            if !wants.insert(t) {
                continue;
            }
            let task = self
                .tasks
                .get_mut(&t)
                .expect("invariant: keyed task exists");
            task.who_wants.push(client);
            match task.state {
                TaskState::Memory => self.actions.push(Action::KeyInMemory {
                    client,
                    key: task.key.clone(),
                    task: t,
                    nbytes: task.nbytes,
                    holders: task.who_has.to_vec(),
                    value: None,
                }),
                TaskState::Erred => self.actions.push(Action::KeyErred {
                    client,
                    key: task.key.clone(),
                    error: task.error().expect("invariant: erred has error").clone(),
                }),
                TaskState::Released => touched.push(t),
                _ => {}
            }
        }
        // Wanted tasks start waiting; that makes their released dependencies needed, and
        // they follow, down to the roots.
        for t in created.iter().chain(&touched) {
            if !self.tasks[t].who_wants.is_empty() {
                self.recs.push_back((*t, TaskState::Waiting));
            }
        }
        // Tasks submitted but wanted by no one and read by no one are dropped at once.
        for t in created {
            self.check_release(t);
        }
        self.run();
        Ok(())
    }

    /// Validates a graph and the keys wanted from it; returns the indices of its tasks in
    /// topological order.
    fn check_graph(&self, tasks: &[NewTask], wanted: &[String]) -> Result<Vec<usize>, GraphError> {
        let mut index: FxHashMap<&str, usize> = FxHashMap::default();
        for (i, t) in tasks.iter().enumerate() {
            if index.insert(t.key.as_str(), i).is_some() {
                return Err(GraphError::DuplicateKey { key: t.key.clone() });
            }
        }
        if let Some(key) = wanted
            .iter()
            .find(|k| !index.contains_key(k.as_str()) && !self.keys.contains_key(k.as_str()))
        {
            return Err(GraphError::UnknownKey { key: key.clone() });
        }
        let mut indegree = vec![0u32; tasks.len()];
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); tasks.len()];
        for (i, t) in tasks.iter().enumerate() {
            if self.keys.contains_key(t.key.as_str()) {
                continue; // already known: kept as it is
            }
            if let Some(reg) = &self.registry {
                if !reg.contains(&t.op) {
                    return Err(GraphError::UnknownOp {
                        key: t.key.clone(),
                        op: t.op.clone(),
                    });
                }
            }
            let max_ref = t.args.max_ref();
            if max_ref as usize > t.deps.len() {
                return Err(GraphError::BadReference {
                    key: t.key.clone(),
                    index: max_ref - 1,
                    count: t.deps.len(),
                });
            }
            let max_buf = max_buf(&t.args);
            if max_buf as usize > t.bufs.len() {
                return Err(GraphError::BadBuffer {
                    key: t.key.clone(),
                    index: max_buf - 1,
                    count: t.bufs.len(),
                });
            }
            for d in &t.deps {
                if self.keys.contains_key(d.as_str()) {
                    continue;
                }
                match index.get(d.as_str()) {
                    Some(&j) => {
                        indegree[i] += 1;
                        dependents[j].push(i);
                    }
                    None => {
                        return Err(GraphError::UnknownDependency {
                            key: t.key.clone(),
                            dep: d.clone(),
                        })
                    }
                }
            }
        }
        let mut order: Vec<usize> = (0..tasks.len()).filter(|&i| indegree[i] == 0).collect();
        let mut head = 0;
        while head < order.len() {
            let i = order[head];
            head += 1;
            for &j in &dependents[i] {
                indegree[j] -= 1;
                if indegree[j] == 0 {
                    order.push(j);
                }
            }
        }
        if order.len() < tasks.len() {
            let stuck = (0..tasks.len())
                .find(|&i| indegree[i] > 0)
                .expect("invariant: a cycle");
            return Err(GraphError::Cycle {
                key: tasks[stuck].key.clone(),
            });
        }
        Ok(order)
    }

    /// A client dropped its last future for these keys.
    pub fn release_keys(&mut self, client: ClientId, keys: &[String]) {
        self.begin();
        for key in keys {
            let Some(&t) = self.keys.get(key.as_str()) else {
                continue;
            };
            let Some(wants) = self.clients.get_mut(&client) else {
                return;
            };
            if !wants.remove(&t) {
                continue;
            }
            let task = self
                .tasks
                .get_mut(&t)
                .expect("invariant: keyed task exists");
            task.who_wants.retain(|c| *c != client);
            self.check_release(t);
        }
        self.run();
    }

    /// A worker finished a task. Stale reports (the task was cancelled or moved) make the
    /// worker drop the result.
    pub fn task_finished(
        &mut self,
        worker: WorkerId,
        t: TaskId,
        nbytes: u64,
        duration_us: u64,
        value: Option<Datum>,
    ) {
        self.begin();
        let current = self.tasks.get(&t).is_some_and(|task| {
            task.state == TaskState::Processing
                && task.processing_on == Some(worker)
                && task.waiting_on == 0
        });
        if !current {
            if self.workers.contains_key(&worker) {
                self.actions.push(Action::Free { worker, task: t });
            }
            return;
        }
        let task = self.tasks.get_mut(&t).expect("invariant: checked above");
        let stat = &mut self.ops[task.op as usize];
        stat.avg_us = Some(match stat.avg_us {
            None => duration_us as f64,
            Some(avg) => 0.8 * avg + 0.2 * duration_us as f64,
        });
        task.nbytes = nbytes;
        self.release_slot(t);
        let task = self.tasks.get_mut(&t).expect("invariant: checked above");
        task.who_has.push(worker);
        let w = self
            .workers
            .get_mut(&worker)
            .expect("invariant: checked above");
        w.has_what.insert(t);
        w.nbytes += nbytes;
        self.set_state(t, TaskState::Memory);
        self.notify_memory(t, value);
        let task = &self.tasks[&t];
        let dependents = task.dependents.clone();
        let deps = task.deps.clone();
        for d in dependents {
            let dt = self.tasks.get_mut(&d).expect("invariant: dependent exists");
            match dt.state {
                TaskState::Waiting => {
                    dt.waiting_on -= 1;
                    if dt.waiting_on == 0 {
                        self.recs.push_back((d, TaskState::Processing));
                    }
                }
                // Pre-assigned on this worker: it runs there as soon as the input is done.
                TaskState::Processing if dt.waiting_on > 0 => dt.waiting_on -= 1,
                _ => {}
            }
        }
        for d in deps.iter() {
            self.check_release(*d);
        }
        self.check_release(t);
        self.run();
        self.fill_slots();
    }

    /// A worker reports that a task's op failed.
    pub fn task_erred(&mut self, worker: WorkerId, t: TaskId, message: String) {
        self.begin();
        let Some(task) = self.tasks.get_mut(&t) else {
            return;
        };
        if task.state != TaskState::Processing || task.processing_on != Some(worker) {
            return;
        }
        let op = self.ops[task.op as usize].name.to_string();
        task.extra().error = Some(Arc::new(TaskFailure {
            key: task.key.to_string(),
            op,
            message,
        }));
        self.recs.push_back((t, TaskState::Erred));
        self.run();
        self.fill_slots();
    }

    /// A worker could not fetch `dep` from `holder` to run `t`: the holder no longer has
    /// it. The task goes back to waiting; the dependency is recomputed if no one has it.
    pub fn missing_data(&mut self, worker: WorkerId, t: TaskId, dep: TaskId, holder: WorkerId) {
        self.begin();
        if let Some(d) = self.tasks.get_mut(&dep) {
            if d.who_has.contains(&holder) {
                d.who_has.retain(|x| *x != holder);
                if let Some(w) = self.workers.get_mut(&holder) {
                    w.has_what.remove(&dep);
                    w.nbytes -= d.nbytes;
                }
                if d.who_has.is_empty() && d.state == TaskState::Memory {
                    self.recs.push_back((dep, TaskState::Released));
                }
            }
        }
        if let Some(task) = self.tasks.get(&t) {
            if task.state == TaskState::Processing && task.processing_on == Some(worker) {
                self.recs.push_back((t, TaskState::Released));
            }
        }
        self.run();
        self.fill_slots();
    }

    // ----- queries -----------------------------------------------------------------

    /// The task with this key, if known.
    pub fn task_id(&self, key: &str) -> Option<TaskId> {
        self.keys.get(key).copied()
    }

    /// A task's key.
    pub fn key(&self, t: TaskId) -> Option<&Arc<str>> {
        self.tasks.get(&t).map(|t| &t.key)
    }

    /// A task's state (`Forgotten` if unknown).
    pub fn state(&self, key: &str) -> TaskState {
        self.task_id(key)
            .and_then(|t| self.tasks.get(&t))
            .map_or(TaskState::Forgotten, |t| t.state)
    }

    /// The workers holding a key's data.
    pub fn who_has(&self, key: &str) -> Vec<WorkerId> {
        self.task_id(key)
            .and_then(|t| self.tasks.get(&t))
            .map_or_else(Vec::new, |t| t.who_has.to_vec())
    }

    /// The recorded transitions of a key, oldest first.
    pub fn story(&self, key: &str) -> Vec<Transition> {
        self.task_id(key)
            .map_or_else(Vec::new, |t| self.log.story(t))
    }

    /// Number of tasks known (not forgotten).
    pub fn task_count(&self) -> usize {
        self.tasks.len()
    }

    /// Whether a worker is registered.
    pub fn has_worker(&self, w: WorkerId) -> bool {
        self.workers.contains_key(&w)
    }

    /// Counts for `scheduler_info`.
    pub fn info(&self) -> CoreInfo {
        let mut workers: Vec<WorkerInfo> = self
            .workers
            .iter()
            .map(|(id, w)| WorkerInfo {
                id: *id,
                processing: w.processing.len() as u64,
                stored_keys: w.has_what.len() as u64,
                stored_bytes: w.nbytes,
            })
            .collect();
        workers.sort_by_key(|w| w.id);
        CoreInfo {
            tasks_by_state: TaskState::ALL[..7]
                .iter()
                .map(|s| (s.name(), self.counts[state_index(*s)]))
                .collect(),
            workers,
            clients: self.clients.len() as u32,
        }
    }

    // ----- the transition table ----------------------------------------------------

    fn run(&mut self) {
        while let Some((t, to)) = self.recs.pop_front() {
            self.transition(t, to);
        }
    }

    fn transition(&mut self, t: TaskId, to: TaskState) {
        let Some(task) = self.tasks.get(&t) else {
            return;
        };
        use TaskState::*;
        match (task.state, to) {
            (Released, Waiting) => self.released_to_waiting(t),
            (Released, Erred) | (Waiting, Erred) | (Processing, Erred) => {
                self.transition_to_erred(t)
            }
            (Released, Forgotten) | (Erred, Forgotten) => self.transition_to_forgotten(t),
            (Memory, Forgotten) => {
                self.memory_to_released(t);
                self.transition_to_forgotten(t);
            }
            (Waiting, Processing) => self.waiting_to_processing(t),
            (Waiting, Released) => self.waiting_to_released(t),
            (Queued, Released) | (NoWorker, Released) => self.ready_to_released(t),
            (Processing, Released) => self.processing_to_released(t),
            (Memory, Released) => self.memory_to_released(t),
            // Stale recommendations: the task moved on since; nothing to do.
            (Released, Released | Processing | Queued | NoWorker | Memory)
            | (Waiting, Waiting | Queued | NoWorker | Memory | Forgotten)
            | (
                Queued | NoWorker,
                Waiting | Queued | NoWorker | Processing | Memory | Erred | Forgotten,
            )
            | (Processing, Waiting | Queued | NoWorker | Processing | Memory | Forgotten)
            | (Memory, Waiting | Queued | NoWorker | Processing | Memory | Erred)
            | (Erred, Waiting | Queued | NoWorker | Processing | Memory | Erred | Released)
            | (_, Forgotten) => {}
            (Forgotten, _) => unreachable!("invariant: forgotten tasks are not stored"),
        }
    }

    fn set_state(&mut self, t: TaskId, to: TaskState) {
        let task = self.tasks.get_mut(&t).expect("invariant: task exists");
        let from = task.state;
        task.state = to;
        self.counts[state_index(from)] -= 1;
        self.counts[state_index(to)] += 1;
        if is_active(from) != is_active(to) {
            let deps = task.deps.clone();
            for d in deps.iter() {
                let dt = self.tasks.get_mut(d).expect("invariant: dep exists");
                if is_active(to) {
                    dt.waiters += 1;
                } else {
                    dt.waiters -= 1;
                }
            }
        }
        self.log.record(Transition {
            task: t,
            from,
            to,
            stimulus: self.stimulus,
        });
    }

    fn released_to_waiting(&mut self, t: TaskId) {
        if !self.needed(t) {
            return;
        }
        let task = &self.tasks[&t];
        let mut waiting_on = 0;
        let mut to_start = Vec::new();
        for d in task.deps.iter() {
            let dt = &self.tasks[d];
            match dt.state {
                TaskState::Memory => {}
                TaskState::Erred => {
                    let error = dt.error().expect("invariant: erred has error").clone();
                    self.tasks.get_mut(&t).expect("invariant").extra().error = Some(error);
                    self.recs.push_back((t, TaskState::Erred));
                    return;
                }
                TaskState::Released => {
                    waiting_on += 1;
                    to_start.push(*d);
                }
                _ => waiting_on += 1,
            }
        }
        self.tasks.get_mut(&t).expect("invariant").waiting_on = waiting_on;
        self.set_state(t, TaskState::Waiting);
        for d in to_start {
            self.recs.push_back((d, TaskState::Waiting));
        }
        if waiting_on == 0 {
            self.recs.push_back((t, TaskState::Processing));
        }
    }

    fn waiting_to_processing(&mut self, t: TaskId) {
        if self.tasks[&t].waiting_on == 0 {
            self.place_ready(t);
        } else if let Some(w) = self.preassign_target(t) {
            self.assign(t, w);
        }
    }

    /// Where a waiting task can be sent ahead of its inputs: the worker running every
    /// input not yet in memory, if it has room. The task then starts there the moment its
    /// last input is done — no round trip through the scheduler per link of a chain.
    fn preassign_target(&self, t: TaskId) -> Option<WorkerId> {
        let task = &self.tasks[&t];
        let mut target = None;
        for d in task.deps.iter() {
            let dt = &self.tasks[d];
            match dt.state {
                TaskState::Memory => {}
                TaskState::Processing if dt.waiting_on == 0 || target.is_some() => {
                    let w = dt.processing_on?;
                    if target.is_some_and(|x| x != w) {
                        return None;
                    }
                    target = Some(w);
                }
                TaskState::Processing => target = Some(dt.processing_on?),
                _ => return None,
            }
        }
        let w = target?;
        let worker = self.workers.get(&w)?;
        let resources = task.resources();
        (worker.fits(resources) && worker.has_capacity(&self.cfg, resources)).then_some(w)
    }

    /// Puts a ready task (waiting with all deps in memory, queued or no-worker) on the best
    /// worker with a free slot, or in the queue, or in no-worker.
    fn place_ready(&mut self, t: TaskId) {
        let task = &self.tasks[&t];
        let key = (task.priority, t);
        let target = match self.decide_worker(t) {
            Placement::Worker(w) => {
                self.queued.remove(&key);
                self.no_worker.remove(&key);
                self.assign(t, w);
                return;
            }
            Placement::NoSlot => TaskState::Queued,
            Placement::NoFit => TaskState::NoWorker,
        };
        if task.state == target {
            return;
        }
        self.queued.remove(&key);
        self.no_worker.remove(&key);
        if target == TaskState::Queued {
            self.queued.insert(key);
        } else {
            self.no_worker.insert(key);
        }
        self.set_state(t, target);
    }

    fn decide_worker(&self, t: TaskId) -> Placement {
        let task = &self.tasks[&t];
        let resources = task.resources();
        // The output, guessed as large as the inputs (for the full-GPU penalty below).
        let out: u64 = task.deps.iter().map(|d| self.tasks[d].nbytes).sum();
        let mut best: Option<(f64, WorkerId)> = None;
        let mut any_fit = false;
        for (id, w) in &self.workers {
            if !w.fits(resources) {
                continue;
            }
            any_fit = true;
            if !w.has_capacity(&self.cfg, resources) {
                continue;
            }
            // Bytes to move, each weighted by the cheapest link from a holder.
            let mut missing: f64 = task
                .deps
                .iter()
                .map(|d| &self.tasks[d])
                .filter(|d| !d.who_has.contains(id))
                .map(|d| {
                    let cheapest = d
                        .who_has
                        .as_slice()
                        .iter()
                        .filter_map(|h| self.workers.get(h))
                        .map(|h| w.link_factor(h))
                        .fold(1.0, f64::min);
                    d.nbytes as f64 * cheapest
                })
                .sum();
            // On a GPU whose memory is full, the output pushes as many bytes off the
            // device to the host, over PCIe.
            if w.spec.device_spill_at > 0 {
                let over = (w.device_used + out).saturating_sub(w.spec.device_spill_at);
                missing += over as f64 * 0.5;
            }
            let cost = w.occupancy_us as f64 / w.spec.nthreads.max(1) as f64
                + missing / self.cfg.bandwidth * 1e6;
            if best.is_none_or(|(c, b)| (cost, *id) < (c, b)) {
                best = Some((cost, *id));
            }
        }
        match best {
            Some((_, w)) => Placement::Worker(w),
            None if any_fit => Placement::NoSlot,
            None => Placement::NoFit,
        }
    }

    fn assign(&mut self, t: TaskId, w: WorkerId) {
        let task = &self.tasks[&t];
        let stat = &self.ops[task.op as usize];
        let est = stat
            .avg_us
            .map_or(self.cfg.default_duration_us, |a| a as u64)
            .clamp(1, u32::MAX as u64);
        let msg = ComputeMsg {
            task: t,
            op: stat.name.to_string(),
            args: task.args.clone(),
            deps: task
                .deps
                .iter()
                .map(|d| {
                    let dt = &self.tasks[d];
                    DepLoc {
                        task: *d,
                        nbytes: dt.nbytes,
                        holders: dt.who_has.to_vec(),
                    }
                })
                .collect(),
            priority: task.priority,
            report_value: !task.who_wants.is_empty(),
        };
        let bufs = task
            .extra
            .as_ref()
            .map_or_else(Vec::new, |e| e.bufs.clone());
        let resources = task.resources().to_vec();
        let worker = self
            .workers
            .get_mut(&w)
            .expect("invariant: chosen worker exists");
        worker.processing.insert(t);
        worker.occupancy_us += est;
        for (r, a) in resources {
            add_to(&mut worker.used, r, a);
        }
        let task = self.tasks.get_mut(&t).expect("invariant");
        task.processing_on = Some(w);
        task.est_us = est as u32;
        self.set_state(t, TaskState::Processing);
        self.actions.push(Action::Compute {
            worker: w,
            msg,
            bufs,
        });
        for d in self.tasks[&t].dependents.clone() {
            if self.tasks[&d].state == TaskState::Waiting {
                self.recs.push_back((d, TaskState::Processing));
            }
        }
    }

    /// Undoes `assign`'s accounting; the task keeps its state.
    fn release_slot(&mut self, t: TaskId) {
        let task = self.tasks.get_mut(&t).expect("invariant");
        let Some(w) = task.processing_on.take() else {
            return;
        };
        let est = std::mem::take(&mut task.est_us) as u64;
        let resources = task.resources().to_vec();
        if let Some(worker) = self.workers.get_mut(&w) {
            worker.processing.remove(&t);
            worker.occupancy_us -= est;
            for (r, a) in resources {
                add_to(&mut worker.used, r, -a);
            }
        }
    }

    fn fill_slots(&mut self) {
        let mut skipped = 0;
        let mut cursor: Option<(u64, TaskId)> = None;
        loop {
            let next = match cursor {
                None => self.queued.first().copied(),
                Some(c) => self
                    .queued
                    .range((std::ops::Bound::Excluded(c), std::ops::Bound::Unbounded))
                    .next()
                    .copied(),
            };
            let Some(entry) = next else { break };
            if !self
                .workers
                .values()
                .any(|w| w.has_capacity(&self.cfg, &[]))
            {
                break;
            }
            let t = entry.1;
            self.place_ready(t);
            if self.tasks[&t].state == TaskState::Queued {
                // Its resources are busy everywhere; look past it, but not forever.
                skipped += 1;
                cursor = Some(entry);
                if skipped > 64 {
                    break;
                }
            }
        }
        self.run();
    }

    fn waiting_to_released(&mut self, t: TaskId) {
        self.tasks.get_mut(&t).expect("invariant").waiting_on = 0;
        self.set_state(t, TaskState::Released);
        self.after_release(t);
    }

    fn ready_to_released(&mut self, t: TaskId) {
        let key = (self.tasks[&t].priority, t);
        self.queued.remove(&key);
        self.no_worker.remove(&key);
        self.set_state(t, TaskState::Released);
        self.after_release(t);
    }

    fn processing_to_released(&mut self, t: TaskId) {
        let w = self.tasks[&t].processing_on;
        self.release_slot(t);
        self.tasks.get_mut(&t).expect("invariant").waiting_on = 0;
        if let Some(w) = w.filter(|w| self.workers.contains_key(w)) {
            self.actions.push(Action::Free { worker: w, task: t });
        }
        self.set_state(t, TaskState::Released);
        self.release_preassigned(t);
        self.after_release(t);
    }

    /// Dependents sent ahead to wait for `t` cannot get it now: back to the scheduler.
    fn release_preassigned(&mut self, t: TaskId) {
        for d in self.tasks[&t].dependents.clone() {
            let dt = &self.tasks[&d];
            if dt.state == TaskState::Processing && dt.waiting_on > 0 {
                self.recs.push_back((d, TaskState::Released));
            }
        }
    }

    fn memory_to_released(&mut self, t: TaskId) {
        let task = self.tasks.get_mut(&t).expect("invariant");
        let holders = std::mem::take(&mut task.who_has);
        let nbytes = task.nbytes;
        for &w in &holders {
            if let Some(worker) = self.workers.get_mut(&w) {
                worker.has_what.remove(&t);
                worker.nbytes -= nbytes;
                self.actions.push(Action::Free { worker: w, task: t });
            }
        }
        self.set_state(t, TaskState::Released);
        // Dependents that counted on this data must wait for it again.
        let dependents = self.tasks[&t].dependents.clone();
        for d in dependents {
            let dt = self.tasks.get_mut(&d).expect("invariant");
            match dt.state {
                TaskState::Waiting => dt.waiting_on += 1,
                TaskState::Queued | TaskState::NoWorker | TaskState::Processing => {
                    self.recs.push_back((d, TaskState::Released));
                }
                _ => {}
            }
        }
        self.after_release(t);
    }

    /// After a task became released: recompute it if needed, forget it if unreferenced,
    /// and let go of dependencies no one needs any more.
    fn after_release(&mut self, t: TaskId) {
        if self.needed(t) {
            self.recs.push_back((t, TaskState::Waiting));
        } else if self.unreferenced(t) {
            self.recs.push_back((t, TaskState::Forgotten));
        }
        let deps = self.tasks[&t].deps.clone();
        for d in deps.iter() {
            self.check_release(*d);
        }
    }

    fn transition_to_erred(&mut self, t: TaskId) {
        let on = self.tasks[&t].processing_on;
        self.release_slot(t);
        if let Some(w) = on.filter(|w| self.workers.contains_key(w)) {
            // Cancels it there (a no-op if the worker reported the failure itself).
            self.actions.push(Action::Free { worker: w, task: t });
        }
        let task = self.tasks.get_mut(&t).expect("invariant");
        task.waiting_on = 0;
        let error = task
            .error()
            .expect("invariant: error set before erring")
            .clone();
        self.set_state(t, TaskState::Erred);
        let task = &self.tasks[&t];
        for c in &task.who_wants {
            self.actions.push(Action::KeyErred {
                client: *c,
                key: task.key.clone(),
                error: error.clone(),
            });
        }
        let dependents = task.dependents.clone();
        let deps = task.deps.clone();
        for d in dependents {
            let dt = self.tasks.get_mut(&d).expect("invariant");
            if matches!(dt.state, TaskState::Waiting | TaskState::Released)
                || (dt.state == TaskState::Processing && dt.waiting_on > 0)
            {
                dt.extra().error = Some(error.clone());
                self.recs.push_back((d, TaskState::Erred));
            }
        }
        for d in deps.iter() {
            self.check_release(*d);
        }
        if self.unreferenced(t) {
            self.recs.push_back((t, TaskState::Forgotten));
        }
    }

    fn transition_to_forgotten(&mut self, t: TaskId) {
        if !self.unreferenced(t) {
            return;
        }
        let task = self.tasks.remove(&t).expect("invariant");
        self.counts[state_index(task.state)] -= 1;
        self.keys.remove(&task.key);
        self.log.record(Transition {
            task: t,
            from: task.state,
            to: TaskState::Forgotten,
            stimulus: self.stimulus,
        });
        for d in task.deps.iter() {
            let dt = self
                .tasks
                .get_mut(d)
                .expect("invariant: dep outlives dependent");
            dt.dependents.retain(|x| *x != t);
            self.check_release(*d);
        }
    }

    /// Recommends what a task should become now that something it depended on changed.
    fn check_release(&mut self, t: TaskId) {
        let Some(task) = self.tasks.get(&t) else {
            return;
        };
        let needed = self.needed(t);
        let unreferenced = self.unreferenced(t);
        match task.state {
            TaskState::Memory | TaskState::Released | TaskState::Erred if unreferenced => {
                self.recs.push_back((t, TaskState::Forgotten))
            }
            TaskState::Memory if !needed => self.recs.push_back((t, TaskState::Released)),
            TaskState::Waiting
            | TaskState::Queued
            | TaskState::NoWorker
            | TaskState::Processing
                if !needed =>
            {
                self.recs.push_back((t, TaskState::Released))
            }
            _ => {}
        }
    }

    fn needed(&self, t: TaskId) -> bool {
        let task = &self.tasks[&t];
        !task.who_wants.is_empty() || task.waiters > 0
    }

    fn unreferenced(&self, t: TaskId) -> bool {
        let task = &self.tasks[&t];
        task.who_wants.is_empty() && task.dependents.is_empty()
    }

    fn notify_memory(&mut self, t: TaskId, value: Option<Datum>) {
        let task = &self.tasks[&t];
        for c in &task.who_wants {
            self.actions.push(Action::KeyInMemory {
                client: *c,
                key: task.key.clone(),
                task: t,
                nbytes: task.nbytes,
                holders: task.who_has.to_vec(),
                value: value.clone(),
            });
        }
    }

    fn op_id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.op_ids.get(name) {
            return id;
        }
        let id = self.ops.len() as u32;
        let name: Arc<str> = name.into();
        self.ops.push(OpStat {
            name: name.clone(),
            avg_us: None,
        });
        self.op_ids.insert(name, id);
        id
    }

    fn resource_id(&mut self, name: &str) -> u32 {
        let next = self.resource_ids.len() as u32;
        *self.resource_ids.entry(name.to_string()).or_insert(next)
    }

    fn host_id(&mut self, host: &str) -> u32 {
        let next = self.host_ids.len() as u32;
        *self.host_ids.entry(host.to_string()).or_insert(next)
    }

    // ----- invariants --------------------------------------------------------------

    /// Checks every invariant; panics naming the first broken one. Run after every
    /// stimulus in tests.
    pub fn validate(&self) {
        let mut counts = [0u64; 8];
        for (id, t) in self.tasks.iter() {
            counts[state_index(t.state)] += 1;
            assert_eq!(self.keys.get(&t.key), Some(&id), "key map of {}", t.key);
            let deps_in_memory = t
                .deps
                .iter()
                .filter(|d| self.tasks[d].state == TaskState::Memory)
                .count();
            match t.state {
                TaskState::Waiting => {
                    assert_eq!(
                        t.waiting_on as usize,
                        t.deps.len() - deps_in_memory,
                        "waiting_on of {}",
                        t.key
                    );
                    assert!(t.waiting_on > 0, "{} waiting on nothing", t.key);
                }
                TaskState::Processing => {
                    assert_eq!(
                        t.waiting_on as usize,
                        t.deps.len() - deps_in_memory,
                        "waiting_on of {}",
                        t.key
                    );
                    for d in t.deps.iter() {
                        let dt = &self.tasks[d];
                        assert!(
                            dt.state == TaskState::Memory
                                || (dt.state == TaskState::Processing
                                    && dt.processing_on == t.processing_on),
                            "{} pre-assigned but its input {} is {:?} elsewhere",
                            t.key,
                            dt.key,
                            dt.state
                        );
                    }
                }
                TaskState::Queued | TaskState::NoWorker => {
                    assert_eq!(
                        deps_in_memory,
                        t.deps.len(),
                        "{} ready without its inputs",
                        t.key
                    );
                }
                _ => assert_eq!(t.waiting_on, 0, "waiting_on of {}", t.key),
            }
            assert_eq!(
                t.state == TaskState::Queued,
                self.queued.contains(&(t.priority, id)),
                "queue of {}",
                t.key
            );
            assert_eq!(
                t.state == TaskState::NoWorker,
                self.no_worker.contains(&(t.priority, id)),
                "no-worker of {}",
                t.key
            );
            assert_eq!(
                t.state == TaskState::Memory,
                !t.who_has.is_empty(),
                "who_has of {} in {:?}",
                t.key,
                t.state
            );
            for w in &t.who_has {
                assert!(
                    self.workers[w].has_what.contains(&id),
                    "has_what of {w} lacks {}",
                    t.key
                );
            }
            assert_eq!(
                t.state == TaskState::Processing,
                t.processing_on.is_some(),
                "processing_on of {}",
                t.key
            );
            if let Some(w) = t.processing_on {
                assert!(
                    self.workers[&w].processing.contains(&id),
                    "processing of {w} lacks {}",
                    t.key
                );
            }
            if t.state == TaskState::Erred {
                assert!(t.error().is_some(), "{} erred without error", t.key);
            }
            let waiters = t
                .dependents
                .iter()
                .filter(|d| is_active(self.tasks[d].state))
                .count();
            assert_eq!(t.waiters as usize, waiters, "waiters of {}", t.key);
            for d in t.dependents.iter() {
                assert!(
                    self.tasks[d].deps.contains(&id),
                    "dependents/deps of {}",
                    t.key
                );
            }
            for d in t.deps.iter() {
                assert!(
                    self.tasks[d].dependents.contains(&id),
                    "deps/dependents of {}",
                    t.key
                );
            }
            for c in &t.who_wants {
                assert!(
                    self.clients[c].contains(&id),
                    "wants of client {c} lack {}",
                    t.key
                );
            }
            if t.state == TaskState::Memory && t.who_wants.is_empty() {
                assert!(t.waiters > 0, "{} holds data no one needs", t.key);
            }
            if is_active(t.state) {
                assert!(
                    !t.who_wants.is_empty() || t.waiters > 0,
                    "{} runs for no one",
                    t.key
                );
            }
            assert!(
                !self.unreferenced(id) || is_active(t.state),
                "{} should be forgotten",
                t.key
            );
        }
        for s in TaskState::ALL {
            assert_eq!(
                counts[state_index(s)],
                self.counts[state_index(s)],
                "count of {}",
                s.name()
            );
        }
        assert_eq!(self.keys.len(), self.tasks.len(), "key map size");
        for (id, w) in &self.workers {
            let mut occupancy = 0;
            for t in &w.processing {
                let task = &self.tasks[t];
                assert_eq!(task.processing_on, Some(*id), "processing on {id}");
                occupancy += task.est_us as u64;
            }
            assert_eq!(occupancy, w.occupancy_us, "occupancy of {id}");
            let mut nbytes = 0;
            for t in &w.has_what {
                let task = &self.tasks[t];
                assert!(
                    task.who_has.contains(id),
                    "who_has of {} lacks {id}",
                    task.key
                );
                nbytes += task.nbytes;
            }
            assert_eq!(nbytes, w.nbytes, "nbytes of {id}");
            assert_eq!(
                w.host,
                self.host_ids.get(&w.spec.host_id).copied(),
                "interned host of {id}"
            );
            for (r, used) in &w.used {
                let expect: f64 = w
                    .processing
                    .iter()
                    .map(|t| lookup(self.tasks[t].resources(), *r))
                    .sum();
                assert!((expect - used).abs() < 1e-6, "resource {r} used on {id}");
            }
        }
        for (c, wants) in &self.clients {
            for t in wants {
                assert!(
                    self.tasks[t].who_wants.contains(c),
                    "who_wants of {t} lacks client {c}"
                );
            }
        }
    }
}

enum Placement {
    Worker(WorkerId),
    NoSlot,
    NoFit,
}

fn state_index(s: TaskState) -> usize {
    s as usize
}

fn max_buf(d: &Datum) -> u32 {
    match d {
        Datum::Buf(i) => i + 1,
        Datum::List(l) => l.iter().map(max_buf).max().unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_task(key: &str, deps: &[&str], resources: &[&str]) -> NewTask {
        NewTask {
            key: key.into(),
            op: "add".into(),
            args: Datum::Null,
            bufs: vec![],
            deps: deps.iter().map(|d| d.to_string()).collect(),
            resources: resources
                .iter()
                .map(|r| Resource {
                    name: r.to_string(),
                    amount: 1.0,
                })
                .collect(),
        }
    }

    #[test]
    #[should_panic(expected = "y ready without its inputs")]
    fn validate_finds_a_ready_task_whose_input_is_not_in_memory() {
        let c = ClientId(1);
        let mut s = SchedulerCore::new(CoreConfig::default());
        s.add_client(c);
        // No worker has a GPU: both wait in no-worker.
        s.update_graph(
            c,
            vec![new_task("w", &[], &["gpu"]), new_task("y", &[], &["gpu"])],
            &["w".to_string(), "y".to_string()],
        )
        .unwrap();
        s.validate();
        let w = s.task_id("w").unwrap();
        let y = s.task_id("y").unwrap();
        // Broken on purpose: y reads w, which is not in memory.
        s.tasks.get_mut(&y).unwrap().deps = vec![w].into();
        s.validate();
    }
}
