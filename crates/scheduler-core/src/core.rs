//! The core itself: its state, interning, and the read-only queries.

use std::collections::VecDeque;
use std::sync::Arc;

use rask_proto::{ClientId, StimulusId, TaskId, WorkerId};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::api::Action;
use crate::api::CoreConfig;
use crate::api::CoreInfo;
use crate::api::WorkerInfo;
use crate::observe::{key_prefix, Counters, PrefixInfo, StreamEntry, StreamKind, TaskStream};
use crate::slab::Slab;
use crate::state::state_index;
use crate::state::OpStat;
use crate::state::Retirement;
use crate::state::Task;
use crate::state::Worker;
use crate::story::{Live, Transition, TransitionLog, Why};
use crate::TaskState;

/// The scheduler's whole state. See the crate docs.
pub struct SchedulerCore {
    pub(crate) cfg: CoreConfig,
    pub(crate) tasks: Slab<Task>,
    pub(crate) keys: crate::keys::KeyIndex,
    pub(crate) next_priority: u64,
    pub(crate) workers: FxHashMap<WorkerId, Worker>,
    /// Running workers by work per thread (see [`crate::load`]).
    pub(crate) by_load: std::collections::BTreeSet<(u64, WorkerId)>,
    /// Running workers that take a task now. Invariant: as [`crate::load`] says.
    pub(crate) free_workers: usize,
    /// Running workers with a thread free of tasks and steals, by work (see
    /// [`crate::load`]).
    pub(crate) idle: std::collections::BTreeSet<(u64, WorkerId)>,
    /// Workers whose filing in the index is out of date, to be filed again before the
    /// index is next read (see [`crate::load`]).
    pub(crate) stale: Vec<WorkerId>,
    /// Connected clients, each with the tasks it may want (see [`crate::lists`]).
    pub(crate) clients: FxHashMap<ClientId, crate::lists::Wants>,
    /// Ready tasks waiting for a worker slot, by priority.
    pub(crate) queued: crate::queue::ReadyQueue,
    /// Ready tasks that no current worker can run, by priority.
    pub(crate) no_worker: crate::queue::ReadyQueue,
    /// Invariant: how many tasks of each program's code are in `no_worker` (codes with
    /// none are absent), so that asking whether a program's workers are awaited does not
    /// go through every task no worker can run.
    pub(crate) no_worker_codes: FxHashMap<u64, u32>,
    pub(crate) ops: Vec<OpStat>,
    pub(crate) op_ids: FxHashMap<Arc<str>, u32>,
    pub(crate) resource_ids: FxHashMap<String, u32>,
    /// Hosts' ids interned, so that placement compares numbers.
    pub(crate) host_ids: FxHashMap<String, u32>,
    /// Op names the cluster's workers can run; `None` accepts any op.
    pub(crate) registry: Option<FxHashSet<String>>,
    pub(crate) actions: Vec<Action>,
    pub(crate) log: TransitionLog,
    pub(crate) recs: VecDeque<(TaskId, TaskState)>,
    /// Tasks in memory recommended for release because no one needed them, released
    /// (if still so) once `recs` is empty.
    pub(crate) unneeded: VecDeque<TaskId>,
    pub(crate) stimulus: StimulusId,
    pub(crate) counts: [u64; 8],
    /// Copies being made for retiring workers: task → the worker fetching it (one at a
    /// time per task). Invariant: the task is in memory, the worker registered and not
    /// among its holders.
    pub(crate) replicas: rask_proto::IdMap<TaskId, WorkerId>,
    /// Retirements under way, in the order asked.
    pub(crate) retirements: Vec<Retirement>,
    /// Something a retirement waits on may have changed since retirements were last
    /// advanced. Invariant: unset between stimuli.
    pub(crate) retire_dirty: bool,
    /// Per task prefix: counts by state, compute time, output bytes. Invariant: each
    /// `current` equals the number of stored tasks of that prefix in that state.
    pub(crate) prefixes: Vec<PrefixInfo>,
    /// Prefix names interned; at most `cfg.max_prefixes` from keys, op names beyond.
    pub(crate) prefix_ids: FxHashMap<Arc<str>, u32>,
    /// The prefix given last, and its name.
    pub(crate) last_prefix: Option<(u32, Arc<str>)>,
    /// The last finished tasks, for the task stream.
    pub(crate) stream: TaskStream,
    /// The names of the workers gone, the last `DEPARTED_NAMES` of them.
    pub(crate) departed: VecDeque<(WorkerId, Arc<str>)>,
    pub(crate) counters: Counters,
    /// The caller's clock, as last set (microseconds).
    pub(crate) now_us: u64,
    /// What the current stimulus is, for the transition log.
    pub(crate) why: Why,
    /// The worker the current stimulus came from, if any.
    pub(crate) stim_worker: Option<WorkerId>,
    /// No task is placed on a worker while set (a restored scheduler waits for its
    /// workers to come back and say what they hold).
    pub(crate) hold: bool,
    /// What the journal must learn, when there is one: tasks created and forgotten.
    pub(crate) changes: Option<crate::recover::Changes>,
    /// Steals asked and not yet answered, by task.
    pub(crate) steals: rask_proto::IdMap<TaskId, crate::steal::Steal>,
    /// No look for a task to steal before this time (see `steal::STEAL_QUIET_US`).
    pub(crate) steal_quiet_until: u64,
    /// Workers whose cost placement has computed, in all (see
    /// [`SchedulerCore::workers_weighed`]); counted by the read-only cost model.
    pub(crate) weighed: std::cell::Cell<u64>,
}

impl SchedulerCore {
    /// An empty scheduler.
    pub fn new(cfg: CoreConfig) -> Self {
        let log = TransitionLog::new(cfg.log_capacity);
        let stream = TaskStream::new(cfg.stream_capacity);
        SchedulerCore {
            cfg,
            tasks: Slab::default(),
            keys: Default::default(),
            next_priority: 0,
            workers: FxHashMap::default(),
            by_load: Default::default(),
            free_workers: 0,
            idle: Default::default(),
            stale: Vec::new(),
            clients: FxHashMap::default(),
            queued: Default::default(),
            no_worker: Default::default(),
            no_worker_codes: FxHashMap::default(),
            ops: Vec::new(),
            op_ids: FxHashMap::default(),
            resource_ids: FxHashMap::default(),
            host_ids: FxHashMap::default(),
            registry: None,
            actions: Vec::new(),
            log,
            recs: VecDeque::new(),
            unneeded: VecDeque::new(),
            stimulus: StimulusId(0),
            counts: [0; 8],
            replicas: Default::default(),
            retirements: Vec::new(),
            retire_dirty: false,
            prefixes: Vec::new(),
            prefix_ids: FxHashMap::default(),
            last_prefix: None,
            stream,
            departed: VecDeque::new(),
            counters: Counters::default(),
            now_us: 0,
            why: Why::Start,
            stim_worker: None,
            hold: false,
            changes: None,
            steals: Default::default(),
            steal_quiet_until: 0,
            weighed: Default::default(),
        }
    }

    /// Sets the clock that transitions and the task stream are stamped with (the core
    /// reads no clock itself); call it before handling inputs. The server gives
    /// microseconds since the Unix epoch.
    pub fn set_now(&mut self, now_us: u64) {
        self.now_us = now_us;
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

    /// The actions produced since the last call, in order, like
    /// [`take_actions`](Self::take_actions); `spare`, emptied, is where the core puts the
    /// next ones. A caller that hands back the vector it drained keeps its capacity, so the
    /// actions of a batch are not copied again each time the vector would have grown.
    pub fn swap_actions(&mut self, mut spare: Vec<Action>) -> Vec<Action> {
        spare.clear();
        std::mem::replace(&mut self.actions, spare)
    }

    /// The id of the stimulus handled last.
    pub fn last_stimulus(&self) -> StimulusId {
        self.stimulus
    }

    /// Starts handling an input: `why` names it in the transition log, `worker` is the
    /// worker it came from.
    pub(crate) fn begin(&mut self, why: Why, worker: Option<WorkerId>) {
        self.stimulus = StimulusId(self.stimulus.0 + 1);
        self.why = why;
        self.stim_worker = worker;
    }

    /// The task with this key, if known.
    pub fn task_id(&self, key: &str) -> Option<TaskId> {
        self.keys.get(key, &self.tasks)
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

    /// The worker running (or given) the task `t`, if it is processing.
    pub fn processing_on(&self, t: TaskId) -> Option<WorkerId> {
        self.tasks.get(&t).and_then(|task| task.processing_on)
    }

    /// The workers holding a key's data.
    pub fn who_has(&self, key: &str) -> Vec<WorkerId> {
        self.task_id(key)
            .and_then(|t| self.tasks.get(&t))
            .map_or_else(Vec::new, |t| t.who_has.to_vec())
    }

    /// The recorded transitions of a key, oldest first: all the bounded log still holds,
    /// also of a task since forgotten.
    pub fn story(&self, key: &str) -> Vec<Transition> {
        let live = self.task_id(key).map(|t| {
            let task = &self.tasks[&t];
            Live {
                task: t,
                key: &task.key,
                error: task.error(),
            }
        });
        self.log.story(key, live)
    }

    /// Up to `limit` finished tasks after the cursor `since` (a [`StreamEntry::seq`]; 0
    /// for all still held), oldest first.
    pub fn task_stream(&self, since: u64, limit: usize) -> Vec<StreamEntry> {
        self.stream
            .since(since, limit)
            .into_iter()
            .map(|r| StreamEntry {
                seq: r.seq,
                task: r.task,
                key: r.key,
                prefix: self.prefixes[r.prefix as usize].name.clone(),
                worker: r.worker,
                worker_name: self.worker_name(r.worker),
                start_us: r.start_us,
                stop_us: r.stop_us,
                nbytes: r.nbytes,
                kind: r.kind,
                peer_name: match r.kind {
                    StreamKind::Transfer { from, .. } => self.worker_name(from),
                    _ => "".into(),
                },
            })
            .collect()
    }

    /// A worker's name: of a registered worker, or of one of the last to leave (empty
    /// if it left long ago).
    pub fn worker_name(&self, w: WorkerId) -> Arc<str> {
        match self.workers.get(&w) {
            Some(worker) => worker.name.clone(),
            None => self
                .departed
                .iter()
                .rev()
                .find(|(id, _)| *id == w)
                .map_or_else(|| "".into(), |(_, n)| n.clone()),
        }
    }

    /// The task stream's last entry number (0 before the first): the cursor for entries
    /// from now on.
    pub fn task_stream_last(&self) -> u64 {
        self.stream.last_seq()
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
                stored_keys: w.has_what.count() as u64,
                stored_bytes: w.nbytes,
                retiring: w.retiring,
                fetch_us: w.fetch_us,
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
            prefixes: self.prefixes.clone(),
            counters: self.counters,
            stream_last: self.stream.last_seq(),
        }
    }

    /// The prefix of a new task with this key and op (see
    /// [`key_prefix`](crate::key_prefix)), interned.
    pub(crate) fn prefix_id(&mut self, key: &str, op: u32) -> u32 {
        let from_key = key_prefix(key);
        let op_name: Arc<str>;
        let name: &str = match from_key {
            Some(p) => p,
            None => {
                op_name = self.ops[op as usize].name.clone();
                &op_name
            }
        };
        // Tasks of a graph mostly share their prefix: the last one is checked first.
        if let Some(&(last, ref last_name)) = self.last_prefix.as_ref() {
            if **last_name == *name {
                return last;
            }
        }
        let id = match self.prefix_ids.get(name) {
            Some(&id) => id,
            None if from_key.is_some() && self.prefix_ids.len() >= self.cfg.max_prefixes => {
                // Past the limit, a new key prefix counts under its op.
                let op_name = self.ops[op as usize].name.clone();
                return self.intern_prefix(&op_name);
            }
            None => self.intern_prefix(name),
        };
        let name = self.prefixes[id as usize].name.clone();
        self.last_prefix = Some((id, name));
        id
    }

    fn intern_prefix(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.prefix_ids.get(name) {
            return id;
        }
        let id = self.prefixes.len() as u32;
        let name: Arc<str> = name.into();
        self.prefixes.push(PrefixInfo {
            name: name.clone(),
            ..Default::default()
        });
        self.prefix_ids.insert(name, id);
        id
    }

    pub(crate) fn op_id(&mut self, name: &str) -> u32 {
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

    pub(crate) fn resource_id(&mut self, name: &str) -> u32 {
        let next = self.resource_ids.len() as u32;
        *self.resource_ids.entry(name.to_string()).or_insert(next)
    }

    pub(crate) fn host_id(&mut self, host: &str) -> u32 {
        let next = self.host_ids.len() as u32;
        *self.host_ids.entry(host.to_string()).or_insert(next)
    }
}
