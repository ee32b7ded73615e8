//! The records the core keeps: tasks (hot fields inline, rare ones boxed), workers
//! (capacity, resources, load), per-op duration estimates.

use std::sync::Arc;

use bytes::Bytes;
use rask_proto::{ClientId, TaskId, WorkerId};

use crate::api::CoreConfig;
use crate::api::TaskFailure;
use crate::api::WorkerSpec;
use crate::few::Few;
use crate::TaskState;
use rask_proto::packed::Packed;

/// Fields most tasks never use, boxed to keep [`Task`] small.
#[derive(Debug, Default)]
pub(crate) struct TaskExtra {
    pub(crate) bufs: Vec<Bytes>,
    /// (resource id, amount).
    pub(crate) resources: Vec<(u32, f64)>,
    /// Names of the workers that died while running this task.
    pub(crate) killed_on: Vec<Arc<str>>,
    pub(crate) error: Option<Arc<TaskFailure>>,
    /// The code the task must run with (`NewTask::code`).
    pub(crate) code: Option<u64>,
}

impl TaskExtra {
    /// The extra fields of a new task, if it has any.
    pub(crate) fn of(
        bufs: Vec<Bytes>,
        resources: Vec<(u32, f64)>,
        code: Option<u64>,
    ) -> Option<Box<TaskExtra>> {
        (!bufs.is_empty() || !resources.is_empty() || code.is_some()).then(|| {
            Box::new(TaskExtra {
                bufs,
                resources,
                code,
                ..Default::default()
            })
        })
    }
}

#[derive(Debug)]
pub(crate) struct Task {
    pub(crate) key: Arc<str>,
    pub(crate) op: u32,
    /// Index into the core's `prefixes`.
    pub(crate) prefix: u32,
    /// Packed: the core only hands them on.
    pub(crate) args: Packed,
    pub(crate) deps: Box<[TaskId]>,
    /// Almost always one or none (a reduction's input): kept inline.
    pub(crate) dependents: Few<TaskId>,
    pub(crate) state: TaskState,
    /// Invariant: in `Waiting`, the number of deps not in memory (> 0); otherwise 0.
    pub(crate) waiting_on: u32,
    /// Invariant: the number of dependents that are waiting, queued, no-worker or processing.
    pub(crate) waiters: u32,
    /// Invariant: non-empty exactly in `Memory`, each worker once; each worker's
    /// `has_what` lists the task and counts it.
    pub(crate) who_has: Few<WorkerId>,
    /// Invariant: `Some` exactly in `Processing`; mirrored by the worker's `processing`.
    pub(crate) processing_on: Option<WorkerId>,
    /// Estimated duration charged to the worker's occupancy while processing.
    pub(crate) est_us: u32,
    pub(crate) nbytes: u64,
    /// Invariant: mirrored by each client's `wants`.
    pub(crate) who_wants: Few<ClientId>,
    /// Lower runs first: submission order.
    pub(crate) priority: u64,
    /// Workers that died running it (saturating; compared with `allowed_failures`).
    pub(crate) suspicious: u16,
    /// Its assignments so far, wrapping (a stale report is of the run before, not of one
    /// 256 runs back): a report of another run is stale
    /// ([`crate::SchedulerCore::is_stale_run`]).
    pub(crate) run: u8,
    pub(crate) extra: Option<Box<TaskExtra>>,
}

impl Task {
    pub(crate) fn extra(&mut self) -> &mut TaskExtra {
        self.extra.get_or_insert_with(Default::default)
    }

    pub(crate) fn error(&self) -> Option<&Arc<TaskFailure>> {
        self.extra.as_ref().and_then(|e| e.error.as_ref())
    }

    pub(crate) fn resources(&self) -> &[(u32, f64)] {
        self.extra.as_ref().map_or(&[], |e| &e.resources)
    }

    pub(crate) fn code(&self) -> Option<u64> {
        self.extra.as_ref().and_then(|e| e.code)
    }
}

#[derive(Debug)]
pub(crate) struct Worker {
    pub(crate) spec: WorkerSpec,
    pub(crate) name: Arc<str>,
    /// Invariant: `spec.host_id` interned in the core's `host_ids`; `None` when it is
    /// empty (an unknown host, shared with no one).
    pub(crate) host: Option<u32>,
    /// (resource id, total amount).
    pub(crate) resources: Vec<(u32, f64)>,
    /// (resource id, amount held by processing tasks).
    pub(crate) used: Vec<(u32, f64)>,
    pub(crate) processing: rask_proto::IdSet<TaskId>,
    /// Invariant: the sum of `est_us` of `processing`.
    pub(crate) occupancy_us: u64,
    /// How long its tasks waited for inputs from peers, a moving average of its reports
    /// (each counted at most [`crate::api::MAX_FETCH_US`]): its queue covers that wait
    /// besides the queue target, so that its threads have work while inputs arrive.
    pub(crate) fetch_us: u64,
    /// The values it holds: the tasks whose `who_has` names it (found by a list that
    /// may name more, see [`crate::lists`]).
    pub(crate) has_what: crate::lists::Held,
    /// Invariant: the sum of `nbytes` of the values it holds.
    pub(crate) nbytes: u64,
    /// Device memory in use, as last reported.
    pub(crate) device_used: u64,
    /// Retiring (Dask's `closing_gracefully`): no new task is placed on it; it is closed
    /// once its tasks are done and each value it holds has a copy on a running worker.
    /// Invariant: exactly the workers pending in some [`Retirement`].
    pub(crate) retiring: bool,
    /// Invariant: the sum of `nbytes` of the copies on their way to it (the core's
    /// `replicas`), which its memory must have room for besides what it holds.
    pub(crate) incoming: u64,
    /// Why it is about to die, as it said before leaving (its device failed for good):
    /// named by the error of a task that kills too many workers.
    pub(crate) failure: Option<Arc<str>>,
    /// Steals in flight for which it is the thief (see [`crate::steal`]).
    pub(crate) stealing_in: u32,
    /// How it is filed in the core's load index; `None` while retiring (see
    /// [`crate::load`]).
    pub(crate) indexed: Option<crate::load::Indexed>,
    /// Its filing is out of date: it is in the core's list of workers to file again.
    pub(crate) stale: bool,
    /// It is counted in the core's `free_workers`: running, with room for a task.
    pub(crate) free: bool,
}

impl Worker {
    /// A worker that joins: running, holding nothing, running nothing.
    pub(crate) fn new(spec: WorkerSpec, host: Option<u32>, resources: Vec<(u32, f64)>) -> Self {
        let name: Arc<str> = spec.name.as_str().into();
        Worker {
            spec,
            name,
            host,
            resources,
            used: Vec::new(),
            processing: Default::default(),
            occupancy_us: 0,
            fetch_us: 0,
            has_what: Default::default(),
            nbytes: 0,
            device_used: 0,
            retiring: false,
            incoming: 0,
            failure: None,
            stealing_in: 0,
            indexed: None,
            stale: false,
            free: false,
        }
    }

    /// A thread of it neither runs a task nor has one on its way (a thief for stealing).
    pub(crate) fn idle(&self) -> bool {
        self.processing.len() + (self.stealing_in as usize) < self.spec.nthreads.max(1) as usize
    }

    pub(crate) fn has_capacity(&self, cfg: &CoreConfig, resources: &[(u32, f64)]) -> bool {
        let threads = self.spec.nthreads.max(1) as u64;
        let n = self.processing.len() as u64;
        let slots = n < threads
            || (self.occupancy_us < (cfg.queue_target_us + self.fetch_us) * threads
                && n < cfg.max_processing_per_thread as u64 * threads);
        slots
            && resources.iter().all(|&(r, need)| {
                let total = lookup(&self.resources, r);
                lookup(&self.used, r) + need <= total + 1e-9
            })
    }

    /// Whether the worker takes a new task with these needs now: it is not retiring and
    /// has a free slot and the resources.
    pub(crate) fn takes_tasks(&self, cfg: &CoreConfig, resources: &[(u32, f64)]) -> bool {
        !self.retiring && self.has_capacity(cfg, resources)
    }

    /// Whether the worker could ever run a task with these needs: it runs the task's
    /// code and has enough of each resource.
    pub(crate) fn fits(&self, resources: &[(u32, f64)], code: Option<u64>) -> bool {
        code.map_or(self.spec.base, |c| c == self.spec.code)
            && resources
                .iter()
                .all(|&(r, need)| lookup(&self.resources, r) + 1e-9 >= need)
    }

    /// `WorkerSpec::link_factor`, comparing interned host ids instead of strings.
    pub(crate) fn link_factor(&self, holder: &Worker) -> f64 {
        let same_host = self.host.is_some() && self.host == holder.host;
        self.spec.link_factor_on(same_host, &holder.spec)
    }
}

const _: () = assert!(std::mem::size_of::<Task>() <= 160);

pub(crate) fn lookup(v: &[(u32, f64)], r: u32) -> f64 {
    v.iter().find(|(id, _)| *id == r).map_or(0.0, |(_, a)| *a)
}

pub(crate) fn add_to(v: &mut Vec<(u32, f64)>, r: u32, amount: f64) {
    match v.iter_mut().find(|(id, _)| *id == r) {
        Some((_, a)) => *a += amount,
        None => v.push((r, amount)),
    }
}

/// A retirement under way: workers a client (or a worker itself) asked to retire that
/// have neither closed, nor been refused, nor died yet.
#[derive(Debug)]
pub(crate) struct Retirement {
    /// The client and its request number, told the outcome when it is finished; `None`:
    /// the worker asked itself (its lifetime is over), and is closed even if its data
    /// cannot move.
    pub(crate) asker: Option<(ClientId, u64)>,
    /// Invariant: non-empty, each worker registered and retiring.
    pub(crate) pending: Vec<WorkerId>,
    /// The workers closed gracefully so far, with their names.
    pub(crate) retired: Vec<(WorkerId, Arc<str>)>,
}

#[derive(Debug)]
pub(crate) struct OpStat {
    pub(crate) name: Arc<str>,
    /// Moving average of measured durations; `None` until the first is measured.
    pub(crate) avg_us: Option<f64>,
}

pub(crate) fn is_active(s: TaskState) -> bool {
    matches!(
        s,
        TaskState::Waiting | TaskState::Queued | TaskState::NoWorker | TaskState::Processing
    )
}

pub(crate) fn state_index(s: TaskState) -> usize {
    s as usize
}
