//! What crosses the core's boundary: its settings, the tasks and workers it is given,
//! the actions it asks for, its errors and the counts it reports.

use std::sync::Arc;

use bytes::Bytes;
use rask_proto::msg::{ComputeMsg, DepLoc, Resource};
use rask_proto::packed::{Packed, TaskArgs};
use rask_proto::{ClientId, Datum, TaskId, WorkerId};

/// The largest size of one value the core counts (16 TiB): a worker's report of more is
/// taken as this much, so that sums over a million values stay within a `u64`.
pub const MAX_REPORTED_BYTES: u64 = 1 << 44;

/// The longest wait for inputs a worker's report counts for (10 s): a report of more
/// is taken as this much.
pub const MAX_FETCH_US: u64 = 10_000_000;

/// Tunables of the core.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// Duration assumed for an op never seen before.
    pub default_duration_us: u64,
    /// How much estimated work each thread of a worker is given ahead (its queue),
    /// besides the time its tasks have lately waited for inputs from peers (a moving
    /// average of its reports): a worker whose inputs come slowly gets a deeper queue,
    /// so that its threads have work while they arrive.
    pub queue_target_us: u64,
    /// Hard cap on tasks assigned per worker thread, whatever the estimates say.
    pub max_processing_per_thread: u32,
    /// A task whose worker dies this many times errs with "killed worker".
    pub allowed_failures: u32,
    /// Bytes per second assumed for moving a dependency between workers.
    pub bandwidth: f64,
    /// Transitions kept for `story()`.
    pub log_capacity: usize,
    /// Finished tasks kept for the task stream.
    pub stream_capacity: usize,
    /// Task prefixes taken from keys, at most: past it, new tasks count under their op's
    /// name (keys with unique names would otherwise grow the table without bound).
    pub max_prefixes: usize,
    /// Duration [`SchedulerCore::adaptive_target`](crate::SchedulerCore::adaptive_target)
    /// counts for a task whose op was never measured (Dask's `unknown-task-duration`).
    pub unknown_duration_us: u64,
    /// Work stealing: a worker with free threads takes tasks queued on busy ones when
    /// moving them pays (see [`SchedulerCore::on_steal_response`](crate::SchedulerCore::on_steal_response)).
    pub work_stealing: bool,
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
            stream_capacity: 10_000,
            max_prefixes: 1_000,
            unknown_duration_us: 500_000,
            work_stealing: true,
        }
    }
}

/// One task of a graph, as the core receives it.
#[derive(Clone, Debug, PartialEq)]
pub struct NewTask {
    /// The client's key for the task; a key already known keeps its existing task.
    pub key: String,
    /// The op to run; must be one the cluster's workers have, when the core knows them.
    pub op: String,
    /// Arguments; `Datum::Ref(i)` is the output of `deps[i]`, `Datum::Buf(i)` is `bufs[i]`.
    pub args: Datum,
    /// The byte payloads of `args`.
    pub bufs: Vec<Bytes>,
    /// Keys of the tasks whose outputs it reads: in the same graph or already known.
    pub deps: Vec<String>,
    /// What a worker must offer to run it (`gpu = 1`).
    pub resources: Vec<Resource>,
    /// The code the task must run with (a worker's [`WorkerSpec::code`]): a program's
    /// typed op runs only on workers of that very program; `None` runs on the cluster's
    /// base workers ([`WorkerSpec::base`]).
    pub code: Option<u64>,
}

/// Tasks of one op over many arguments (a client's `map`, HyperQueue's task arrays), as
/// the core receives them: the graph of the tasks [`NewMap::key`]`(i)`, each running `op`
/// on `args[i]` with no dependency, all wanted by the client, without a key, an op name
/// and a wanted key for each (see [`SchedulerCore::on_map`](crate::SchedulerCore::on_map)).
#[derive(Clone, Debug, PartialEq)]
pub struct NewMap {
    /// The keys' common part.
    pub prefix: String,
    /// The number in the first task's key.
    pub first: u64,
    /// The op each task runs.
    pub op: String,
    /// Each task's arguments (`Datum::Buf(i)` is the task's `bufs[i]`), packed as a
    /// client sends them or not, and their byte payloads.
    pub args: Vec<(TaskArgs, Vec<Bytes>)>,
    /// What a worker must offer to run each task.
    pub resources: Vec<Resource>,
    /// As [`NewTask::code`], for every task.
    pub code: Option<u64>,
}

impl NewMap {
    /// The key of the `i`th task: `"{prefix}-{first + i}"`.
    pub fn key(&self, i: usize) -> String {
        rask_proto::msg::map_key(&self.prefix, self.first.wrapping_add(i as u64))
    }

    /// Refuses a map whose tasks would be numbered past the largest number.
    pub fn check_numbers(&self) -> Result<(), GraphError> {
        let count = self.args.len();
        match count > 0 && self.first.checked_add(count as u64 - 1).is_none() {
            true => Err(GraphError::MapNumbers {
                prefix: self.prefix.clone(),
                first: self.first,
                count,
            }),
            false => Ok(()),
        }
    }

    /// The same tasks as a graph, with the keys the client wants (all of them).
    pub fn into_graph(self) -> (Vec<NewTask>, Vec<String>) {
        let keys: Vec<String> = (0..self.args.len()).map(|i| self.key(i)).collect();
        let tasks = self
            .args
            .into_iter()
            .zip(&keys)
            .map(|((args, bufs), key)| NewTask {
                key: key.clone(),
                op: self.op.clone(),
                args: args.into_datum(),
                bufs,
                deps: Vec::new(),
                resources: self.resources.clone(),
                code: self.code,
            })
            .collect();
        (tasks, keys)
    }
}

/// A worker joining the cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerSpec {
    /// The worker's name, for logs and `scheduler_info`.
    pub name: String,
    /// Where peers and clients fetch its data (its `listen_addr`).
    pub addr: String,
    /// Its host's identity: workers with equal (non-empty) ids share a host, which
    /// makes moving data between them cheap.
    pub host_id: String,
    /// Tasks it runs at once; its occupancy is divided by this.
    pub nthreads: u32,
    /// Its host memory limit, in bytes.
    pub memory_limit: u64,
    /// What it offers to tasks that declare needs.
    pub resources: Vec<Resource>,
    /// The GPU this worker drives (its index on its host), if any.
    pub gpu: Option<u32>,
    /// GPUs of the same host that `gpu` reaches over NVLink.
    pub nvlink: Vec<u32>,
    /// Device memory use past which the worker spills from its device (0: no device).
    pub device_spill_at: u64,
    /// The identity of the code the worker runs (its program): tasks with a
    /// [`NewTask::code`] go only to workers of that code.
    pub code: u64,
    /// Whether the worker runs tasks of no particular code (the cluster's built-in and
    /// registered ops): the cluster's workers do; a program's worker started for a
    /// client's typed ops may not.
    pub base: bool,
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
    pub(crate) fn link_factor_on(&self, same_host: bool, holder: &WorkerSpec) -> f64 {
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
    /// The task that failed (upstream of the keys that fail with it).
    pub key: String,
    /// Its op.
    pub op: String,
    /// The op's error, or why the task could not run (`killed worker`, …).
    pub message: String,
}

/// What the core asks the world to do, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Send a task to a worker.
    Compute {
        /// The worker chosen.
        worker: WorkerId,
        /// The message to send it.
        msg: ComputeMsg,
        /// The payloads `msg.args`' `Datum::Buf` indices refer to.
        bufs: Vec<Bytes>,
    },
    /// Ask a worker to give a task back if it has not started it (work stealing); it
    /// answers with [`SchedulerCore::on_steal_response`](crate::SchedulerCore::on_steal_response).
    Steal {
        /// The worker holding the task (the victim).
        worker: WorkerId,
        /// The task.
        task: TaskId,
        /// The run asked about.
        run: u32,
    },
    /// Tell a worker to drop a task's data, or cancel it.
    Free {
        /// The worker.
        worker: WorkerId,
        /// The task.
        task: TaskId,
    },
    /// Tell a client that a key it wants is in memory.
    KeyInMemory {
        /// The client that wants it.
        client: ClientId,
        /// The key.
        key: Arc<str>,
        /// Its task, by which holders serve the value.
        task: TaskId,
        /// The value's size as its worker reported it.
        nbytes: u64,
        /// The workers holding it.
        holders: Vec<WorkerId>,
        /// The value, when the worker reported it inline.
        value: Option<Packed>,
    },
    /// Tell a client that a key it wants failed.
    KeyErred {
        /// The client that wants it.
        client: ClientId,
        /// The key.
        key: Arc<str>,
        /// The failure, shared by every key that fails with it.
        error: Arc<TaskFailure>,
    },
    /// Ask a worker to fetch a copy of a value from its holders and keep it: it takes over
    /// data of a retiring worker. It answers with
    /// [`SchedulerCore::on_replicas_acquired`](crate::SchedulerCore::on_replicas_acquired)
    /// or [`SchedulerCore::on_replica_missing`](crate::SchedulerCore::on_replica_missing).
    AcquireReplica {
        /// The worker to keep the copy.
        worker: WorkerId,
        /// The value: its task, size and holders.
        dep: DepLoc,
    },
    /// Close a worker, which the core has already removed: it retired (each value it held
    /// has a copy elsewhere), or it asked to leave.
    CloseWorker {
        /// The worker.
        worker: WorkerId,
    },
    /// Tell a client which of the workers it asked to retire have retired (closed
    /// gracefully); the others were refused (no worker could take their data) or died.
    Retired {
        /// The client that asked.
        client: ClientId,
        /// Its request number.
        req: u64,
        /// The workers closed, with their names, in the order they closed.
        workers: Vec<(WorkerId, Arc<str>)>,
    },
}

/// A graph the core refuses as a whole; nothing of it is kept.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    /// A task names an op the cluster's workers do not have.
    #[error("task {key:?} uses unknown op {op:?} (not registered on the cluster's workers)")]
    UnknownOp {
        /// The task.
        key: String,
        /// The op it names.
        op: String,
    },
    /// A dependency is neither in the graph nor known to the scheduler.
    #[error("task {key:?} depends on unknown key {dep:?}")]
    UnknownDependency {
        /// The task.
        key: String,
        /// The dependency.
        dep: String,
    },
    /// Two tasks of the graph have one key.
    #[error("key {key:?} appears twice in one graph")]
    DuplicateKey {
        /// The key.
        key: String,
    },
    /// The graph's dependencies form a cycle.
    #[error("the graph has a cycle through {key:?}")]
    Cycle {
        /// A task that cannot be ordered (on the cycle, or downstream of it).
        key: String,
    },
    /// A task's arguments refer to a dependency past its `deps`.
    #[error("task {key:?} refers to dependency {index} but has {count}")]
    BadReference {
        /// The task.
        key: String,
        /// The largest index referred to.
        index: u32,
        /// How many dependencies it has.
        count: usize,
    },
    /// A task's arguments refer to a buffer past its `bufs`.
    #[error("task {key:?} refers to buffer {index} but has {count}")]
    BadBuffer {
        /// The task.
        key: String,
        /// The largest index referred to.
        index: u32,
        /// How many buffers it has.
        count: usize,
    },
    /// A map's tasks would be numbered past the largest number.
    #[error("map {prefix:?} numbers its {count} tasks from {first}, past the largest number")]
    MapNumbers {
        /// The map's keys' common part.
        prefix: String,
        /// The first task's number.
        first: u64,
        /// How many tasks it has.
        count: usize,
    },
    /// A key wanted is neither in the graph nor known to the scheduler.
    #[error("key {key:?} is neither in the graph nor held on the cluster (released, or never submitted)")]
    UnknownKey {
        /// The key.
        key: String,
    },
    /// The graph comes from a client the core does not know (never added, or gone).
    #[error("unknown client {0}")]
    UnknownClient(ClientId),
}

/// Counts for `scheduler_info`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CoreInfo {
    /// Tasks in each state, by [`TaskState::name`](crate::TaskState::name).
    pub tasks_by_state: Vec<(&'static str, u64)>,
    /// Every worker's load.
    pub workers: Vec<WorkerInfo>,
    /// Clients connected.
    pub clients: u32,
    /// Counts per task prefix, in the order the prefixes were first seen.
    pub prefixes: Vec<crate::PrefixInfo>,
    /// Monotonic counters (tasks completed, workers added and removed, …).
    pub counters: crate::Counters,
    /// The task stream's last entry number (a cursor for entries from now on).
    pub stream_last: u64,
}

/// One worker's load, for `scheduler_info`.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerInfo {
    /// The worker.
    pub id: WorkerId,
    /// Tasks assigned to it and not finished.
    pub processing: u64,
    /// Keys it holds.
    pub stored_keys: u64,
    /// Their sizes as it reported them, summed.
    pub stored_bytes: u64,
    /// Whether it is retiring (Dask's `closing_gracefully`).
    pub retiring: bool,
    /// How long its tasks wait for inputs from peers, a moving average of its reports
    /// (microseconds): it is sent that much more work ahead per thread than the queue
    /// target.
    pub fetch_us: u64,
}
