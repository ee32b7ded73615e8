//! The messages, by direction: [`ToScheduler`], [`ToWorker`], [`ToClient`], [`PeerMsg`]
//! (worker ⇄ worker and client → worker data), and the [`Hello`] handshake.
//!
//! A frame carries a batch (`Vec`) of one direction's messages; byte counts are `u64`
//! (rkyv archives `usize` as 32 bits).

use rkyv::{Archive, Deserialize, Serialize};

use crate::observe::{ActivityMsg, PeerBytesMsg, TaskPrefixMsg, TaskStreamEntryMsg, TransitionMsg};
use crate::{Datum, TaskId, WorkerId};

/// Derives the traits every message type needs.
macro_rules! wire {
    ($($item:item)*) => {$(
        #[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq)]
        $item
    )*};
}

/// The most peers [`WorkerInfoMsg::received_from`] lists per worker.
pub const MAX_PEER_ROWS: usize = 64;

wire! {
    /// What a connecting peer is.
    pub enum Role {
        /// A client's connection to the scheduler.
        Client,
        /// A worker's connection to the scheduler ([`Hello::worker`] describes it).
        Worker,
        /// A worker or client opening a data connection to a worker.
        Peer,
    }

    /// The ops a process knows. Workers of one cluster must have the same registry (and
    /// code, [`WorkerHello::code`]); a client may know fewer or more ops, but those it
    /// shares with the workers must be the same versions.
    pub struct RegistryInfo {
        /// Hash of the sorted op names and their versions.
        pub fingerprint: u64,
        /// The ops, sorted by name (for error messages and submit-time checks).
        pub ops: Vec<OpInfo>,
    }

    /// One op of a [`RegistryInfo`].
    pub struct OpInfo {
        /// The name tasks call the op by.
        pub name: String,
        /// A hash of what defines the op's behaviour besides its code: its version
        /// number and, for an op with a CUDA kernel, the kernel's source and entry point.
        pub version: u64,
        /// An op of the program itself (a typed op, `#[rask::op]`): identified by its
        /// name and the program's code ([`ProgramInfo::code`]), run only by workers of
        /// that very program. Other ops are identified by name and version.
        pub program: bool,
    }

    /// The program a client runs, for its typed ops: the workers that run them must run
    /// this very program (its code), started by the cluster's workers if none does.
    pub struct ProgramInfo {
        /// The program's code identity (as a worker's [`WorkerHello::code`]): what its
        /// tasks are placed by, and what names it in the workers' caches.
        pub code: u64,
        /// The executable's size in bytes.
        pub size: u64,
        /// The executable's file name, for messages.
        pub name: String,
        /// The operating system and CPU it was built for (`linux-x86_64`).
        pub platform: String,
        /// Whether it can be started as a worker (its `main` begins with
        /// `rask::worker_entry()`); if not, only workers already running it serve it.
        pub shippable: bool,
    }

    /// A named amount of a resource a worker offers or a task needs (e.g. `gpu = 1`).
    pub struct Resource {
        /// The resource's name (`gpu`, `memory`, a device name such as `sim:2`, or any
        /// name a worker offers).
        pub name: String,
        /// How much; amounts are consumed while a task runs and returned after.
        pub amount: f64,
    }

    /// The first frame on every connection, from the connecting side.
    pub struct Hello {
        /// [`crate::PROTOCOL_VERSION`] of the sender's build.
        pub protocol: u16,
        /// [`crate::PROTOCOL_SCHEMA`] of the sender's build.
        pub schema: u64,
        /// [`crate::RASK_VERSION`] of the sender's build; must equal the receiver's.
        pub rask_version: String,
        /// What the connecting side is; decides which messages it may send after.
        pub role: Role,
        /// Human name (worker name, client name).
        pub name: String,
        /// Identity of the host (not an IP): same host ⇔ same id.
        pub host_id: String,
        /// The sender's process id: with `host_id`, tells a peer in the same process
        /// (served in process) from one on the same host (served by shared memory).
        pub pid: u32,
        /// The ops the sender knows, checked against the cluster's (workers and clients;
        /// `None` for data connections).
        pub registry: Option<RegistryInfo>,
        /// Present when `role` is `Worker`.
        pub worker: Option<WorkerHello>,
        /// A client's program, when it has typed ops.
        pub program: Option<ProgramInfo>,
        /// Fresh random bytes: the server's authentication proof covers them.
        pub nonce: [u8; 32],
        /// A client connecting again (after a lost connection or a scheduler restart):
        /// the id it had, which it keeps if the scheduler still has its keys.
        pub resume: Option<u32>,
    }

    /// What a worker tells the scheduler about itself.
    pub struct WorkerHello {
        /// Where peers and clients fetch data from, `tcp://host:port`.
        pub listen_addr: String,
        /// Where same-host peers fetch data through shared memory (`unix:@name`, an
        /// abstract unix socket); empty when the worker offers no shared memory.
        pub shm_addr: String,
        /// The worker's transport setting (`auto`, `tcp` or `shm`).
        pub transport: String,
        /// The device the worker drives: `host`, `sim:N` (simulated GPU) or `cuda:N` (a
        /// [`crate::DeviceLoc`] in its text form).
        pub device: String,
        /// What the device is: a GPU's product name, `simulated GPU (…)`, or empty.
        pub device_name: String,
        /// Its GPU index on this host, if it drives a GPU.
        pub gpu: Option<u32>,
        /// GPUs of this host reached from `gpu` over NVLink.
        pub nvlink: Vec<u32>,
        /// Bytes of device memory the worker may use (0 without a GPU).
        pub device_memory_limit: u64,
        /// Device memory use past which the worker spills from its device (0 without a
        /// GPU).
        pub device_spill_at: u64,
        /// Tasks the worker runs at once (its executor threads).
        pub nthreads: u32,
        /// Bytes of host memory the worker may use; spilling and pausing thresholds are
        /// fractions of it.
        pub memory_limit: u64,
        /// What the worker offers to tasks that declare needs (`gpu = 1`, `memory`, …).
        pub resources: Vec<Resource>,
        /// The identity of the code the worker runs ops with (a hash of its executable's
        /// code and read-only data): workers whose code differs never serve one cluster,
        /// even with equal op names and versions.
        pub code: u64,
        /// Whether the worker starts programs' workers when asked (`RunProgram`): a
        /// stock worker does; a program's worker, started so, does not.
        pub runs_programs: bool,
        /// Where the worker serves its own `/metrics` and `/health`, `http://host:port`
        /// (empty: it serves none).
        pub dashboard: String,
        /// The worker joins again holding values (after a partition or a scheduler
        /// restart): it tells which in [`ToScheduler::Holding`] before it gets tasks.
        pub holds: bool,
    }

    /// The answer to a [`Hello`]. A refusal is not a reply but a refusal frame (see
    /// [`crate::frame`]), which every protocol version reads.
    pub enum HelloReply {
        /// The peer is admitted; the connection carries its role's messages from now on.
        Welcome {
            /// The id given to the connecting client or worker (0 for peers).
            id: u32,
            /// The server's [`crate::RASK_VERSION`].
            rask_version: String,
            /// With a shared secret: the server's proof of it over both nonces, given only
            /// to a peer that proved it first.
            proof: Option<[u8; 32]>,
        },
        /// The server requires the shared secret: the client proves it first, over both
        /// nonces ([`AuthProof`]); the server proves it back in its `Welcome`.
        Challenge {
            /// The server's fresh random bytes, covered by both sides' proofs.
            nonce: [u8; 32],
        },
    }

    /// The client's answer to a [`HelloReply::Challenge`].
    pub struct AuthProof {
        /// HMAC-SHA256 keyed by the shared secret over both nonces; the secret itself
        /// never travels.
        pub proof: [u8; 32],
    }

    /// One task of a submitted graph.
    pub struct TaskSpec {
        /// The client's name for the task, unique within the cluster while held.
        pub key: String,
        /// Registered op name.
        pub op: String,
        /// Arguments; `Datum::Ref(i)` is the output of `deps[i]`.
        pub args: Datum,
        /// Keys of the tasks whose outputs this task reads.
        pub deps: Vec<String>,
        /// Resources needed to run, e.g. `gpu = 1`.
        pub resources: Vec<Resource>,
    }

    /// A graph submission (also used for `submit` and `map`: a graph of independent tasks).
    /// A graph too large for one frame travels in parts, in order: every part but the
    /// last has `more` set, and the scheduler takes the graph as a whole with the last.
    pub struct UpdateGraphMsg {
        /// The graph's tasks (of this part); dependencies may be in any part or already
        /// known to the scheduler.
        pub tasks: Vec<TaskSpec>,
        /// Keys the client holds futures for: they stay in memory until released.
        pub wanted: Vec<String>,
        /// More parts of this graph follow.
        pub more: bool,
    }

    /// A worker's report that a task completed.
    pub struct TaskFinishedMsg {
        /// The task that completed.
        pub task: TaskId,
        /// Approximate size of the result in memory ([`crate::Value::nbytes`]), for
        /// placement and memory accounting.
        pub nbytes: u64,
        /// How long the op ran, for duration estimates.
        pub duration_us: u64,
        /// The result itself, when the scheduler asked for it (a client waits on the key)
        /// and it is small: the client then needs no fetch from the worker.
        pub value: Option<Datum>,
        /// The run it reports ([`ComputeMsg::run`]): a report of an earlier run, sent
        /// before the worker heard that run was freed, is not taken for the current one.
        pub run: u32,
    }

    /// A worker's report that a task's op returned an error or panicked.
    pub struct TaskErredMsg {
        /// The task that failed.
        pub task: TaskId,
        /// The op's error, or its panic message.
        pub message: String,
        /// The run it reports ([`ComputeMsg::run`]).
        pub run: u32,
    }

    /// Messages to the scheduler, from clients and workers.
    pub enum ToScheduler {
        /// From a client: tasks to add (a graph, or a part of one).
        UpdateGraph(UpdateGraphMsg),
        /// The client dropped its last future for these keys.
        ReleaseKeys {
            /// The keys released.
            keys: Vec<String>,
        },
        /// From a client: which workers hold these keys; answered by
        /// [`ToClient::WhoHasReply`] with the same `req`.
        WhoHas {
            /// The client's request number, echoed in the reply.
            req: u64,
            /// The keys asked about.
            keys: Vec<String>,
        },
        /// From a client: the scheduler's state; answered by [`ToClient::InfoReply`].
        Info {
            /// The client's request number, echoed in the reply.
            req: u64,
        },
        /// From a client: the tasks finished after `since` (a
        /// [`TaskStreamEntryMsg::seq`]; 0 for all the stream still holds), at most
        /// `limit`; answered by [`ToClient::TaskStreamReply`].
        GetTaskStream {
            /// The client's request number, echoed in the reply.
            req: u64,
            /// The cursor: entries with a larger `seq` are sent.
            since: u64,
            /// The most entries wanted (the scheduler may send fewer).
            limit: u64,
        },
        /// From a client: the recorded transitions of a key; answered by
        /// [`ToClient::StoryReply`].
        Story {
            /// The client's request number, echoed in the reply.
            req: u64,
            /// The key.
            key: String,
        },
        /// From a worker: a task completed and its result is held there.
        TaskFinished(TaskFinishedMsg),
        /// From a worker: a task's op failed.
        TaskErred(TaskErredMsg),
        /// A worker could not fetch `dep` (for `task`) from `holder`.
        MissingData {
            /// The task that needed the value.
            task: TaskId,
            /// The dependency that could not be fetched.
            dep: TaskId,
            /// The worker that was asked for it and did not have it (or could not be
            /// reached).
            holder: WorkerId,
        },
        /// From a worker: its periodic state; also proves it is alive. Boxed: every
        /// `ToScheduler` (a task finished, the most frequent) archives at the size of its
        /// largest variant inline.
        Heartbeat(Box<HeartbeatMsg>),
        /// A part of a program's executable: bytes `offset..` of `size`, in the frame's
        /// buffer `buf` (from a client asked by `SendProgram`).
        ProgramPart { code: u64, offset: u64, size: u64, buf: u32 },
        /// A worker needs the executable of the program `code` (it has no copy on its
        /// host): the scheduler sends it in `ProgramPart`s.
        GetProgram { code: u64 },
        /// The program `code` cannot be sent (a client) or started (a worker), and why.
        ProgramFailed { code: u64, message: String },
        /// From a client: shut the cluster down (Dask's `Client.shutdown`): the scheduler
        /// tells every worker to close, waits a moment for them to leave, and ends.
        Shutdown {
            /// Why, for the logs.
            reason: String,
        },
        /// From a client: retire these workers gracefully (by name or address): no new
        /// tasks go to them, the data only they hold is copied to other workers first,
        /// then they are closed. Answered by [`ToClient::RetireWorkersReply`] once the
        /// workers retired have left; a worker whose data no other worker can take is not
        /// retired.
        RetireWorkers {
            /// The client's request number, echoed in the reply.
            req: u64,
            /// The workers' names (or data addresses).
            names: Vec<String>,
        },
        /// From a client: how many workers the cluster should have for its current load
        /// (Dask's `adaptive_target`); answered by [`ToClient::AdaptiveTargetReply`].
        AdaptiveTarget {
            /// The client's request number, echoed in the reply.
            req: u64,
            /// The work each worker should have queued, in microseconds (Dask's
            /// `target_duration`, 5 s by default).
            target_duration_us: u64,
        },
        /// From a client: which workers to retire to bring the cluster down to `target`
        /// workers (idle ones holding little data first); answered by
        /// [`ToClient::WorkersToCloseReply`].
        WorkersToClose {
            /// The client's request number, echoed in the reply.
            req: u64,
            /// The number of workers to keep.
            target: u64,
        },
        /// From a worker: retire it gracefully (its lifetime is over): its data moves to
        /// other workers, then the scheduler closes it — even when no other worker can
        /// take its data, which is then recomputed where needed.
        CloseGracefully {
            /// Why, for the scheduler's log.
            reason: String,
        },
        /// From a worker whose device failed for good (a sticky CUDA error), just before
        /// it leaves: why, naming the device and the kernels that were running. The tasks
        /// it was running are charged with its death as for any worker that dies, and one
        /// that errs for killing too many workers names this cause.
        DeviceLost {
            /// `cuda:0 failed for good: …`.
            message: String,
        },
        /// From a worker that joined with [`WorkerHello::holds`]: values it holds, by
        /// task and size, in parts; `last` on the final part.
        Holding {
            /// The tasks and their values' sizes.
            tasks: Vec<(TaskId, u64)>,
            /// No part follows.
            last: bool,
        },
        /// From a client that connected again ([`Hello::resume`]): the keys it holds
        /// futures for. The scheduler tells each one's state again, or that it is lost.
        Resubscribe {
            /// The keys.
            keys: Vec<String>,
        },
        /// From a worker: it now holds copies of these tasks' values, fetched as
        /// [`ToWorker::AcquireReplicas`] asked.
        ReplicasAcquired {
            /// The tasks whose values it holds.
            tasks: Vec<TaskId>,
        },
        /// From a worker: it could not fetch a copy of `task`'s value; `holder`, the last
        /// holder it tried, does not have it (or could not be reached).
        ReplicaMissing {
            /// The task whose value was asked for.
            task: TaskId,
            /// The holder tried last.
            holder: WorkerId,
        },
    }

    /// A worker's periodic state.
    pub struct HeartbeatMsg {
        /// Approximate bytes of the values the worker holds, wherever they are.
        pub stored_bytes: u64,
        /// Values the worker holds.
        pub stored_keys: u64,
        /// Tasks running now.
        pub executing: u32,
        /// The process's resident memory, in bytes (0 if unknown).
        pub rss_bytes: u64,
        /// Device memory in use (0 without a GPU).
        pub device_memory_used: u64,
        /// Bytes copied from device memory to the host (for ops on the CPU, spilling, the
        /// client), so far.
        pub device_to_host: u64,
        /// Bytes this worker received from peers, by link (`local`, `nvlink`, `pcie`,
        /// `shm`, `tcp`: a [`crate::LinkClass`] by its name).
        pub received: Vec<(String, u64)>,
        /// Bytes spilled, by direction (`device->host`, `device->disk`, `host->disk`).
        pub spilled: Vec<(String, u64)>,
        /// Tasks run, by where: `device` (by the device's kernels) or `cpu`.
        pub ran: Vec<(String, u64)>,
        /// Bytes of the values held in device memory now (of those large enough to be
        /// spilled; 0 without a device).
        pub device_bytes: u64,
        /// Bytes of the values spilled to disk now.
        pub disk_bytes: u64,
        /// Transfers and spills since the last heartbeat, for the task stream (at most
        /// a bounded number: the rest are counted in `activity_dropped`).
        pub activity: Vec<ActivityMsg>,
        /// Transfers and spills since the last heartbeat not in `activity`.
        pub activity_dropped: u64,
        /// What it received from each peer, by link: the running totals of the pairs
        /// that changed since the last heartbeat.
        pub received_from: Vec<PeerBytesMsg>,
        /// Its GPU's utilization in percent since the last heartbeat, where known.
        pub utilization: Option<f32>,
    }

    /// Where a dependency can be fetched from.
    pub struct DepLoc {
        /// The dependency.
        pub task: TaskId,
        /// Its size as its holder reported it (see [`TaskFinishedMsg::nbytes`]).
        pub nbytes: u64,
        /// The workers holding it; the worker tries them in turn.
        pub holders: Vec<WorkerId>,
    }

    /// Run a task.
    pub struct ComputeMsg {
        /// The task to run.
        pub task: TaskId,
        /// The registered op to run it with.
        pub op: String,
        /// Arguments; `Datum::Ref(i)` is the value of `deps[i]`.
        pub args: Datum,
        /// The task's dependencies, each with where to fetch it if not held here.
        pub deps: Vec<DepLoc>,
        /// Lower runs first.
        pub priority: u64,
        /// A client waits on this key: report a small result inline.
        pub report_value: bool,
        /// Which assignment of the task this is (the scheduler counts them): its reports
        /// carry it back.
        pub run: u32,
    }

    /// A worker's address, so peers can fetch from it.
    pub struct PeerAddr {
        /// The peer.
        pub worker: WorkerId,
        /// See [`WorkerHello::listen_addr`].
        pub addr: String,
        /// See [`WorkerHello::shm_addr`].
        pub shm_addr: String,
        /// See [`Hello::host_id`]: peers on the same host use shared memory.
        pub host_id: String,
        /// See [`Hello::pid`].
        pub pid: u32,
        /// See [`WorkerHello::gpu`].
        pub gpu: Option<u32>,
    }

    /// Messages from the scheduler to a worker.
    pub enum ToWorker {
        /// Run a task (fetching its inputs first).
        Compute(ComputeMsg),
        /// Drop these tasks' data, or cancel them if not yet run.
        Free {
            /// The tasks to forget.
            tasks: Vec<TaskId>,
        },
        /// Workers that joined (or all current ones, on connect).
        Peers {
            /// How to reach each.
            peers: Vec<PeerAddr>,
        },
        /// A worker left the cluster: stop fetching from it.
        PeerGone {
            /// The worker that left.
            worker: WorkerId,
        },
        /// The scheduler asks the worker to shut down.
        Close {
            /// Why, for the worker's log.
            reason: String,
        },
        /// Start a worker of this program beside this one, with the same resources (a
        /// client's typed ops need it); fetch its executable with `GetProgram` if this
        /// host has no copy.
        RunProgram { program: ProgramInfo },
        /// A part of a program's executable, as for `ToScheduler::ProgramPart`.
        ProgramPart { code: u64, offset: u64, size: u64, buf: u32 },
        /// No client needs the program any more: stop its worker.
        StopProgram { code: u64 },
        /// Fetch copies of these tasks' values from their holders and keep them, as the
        /// worker keeps its own outputs (until freed); answer with
        /// [`ToScheduler::ReplicasAcquired`] or [`ToScheduler::ReplicaMissing`]. The
        /// scheduler asks this of the workers that take over the data of a retiring one.
        AcquireReplicas {
            /// The values, each with its size and holders.
            tasks: Vec<DepLoc>,
        },
    }

    /// Why a task failed, as the client sees it.
    pub struct TaskError {
        /// The task that failed (may differ from the key waited on: the cause upstream).
        pub key: String,
        /// The op of that task.
        pub op: String,
        /// The op's error, or why the task could not run (a worker killed, a graph
        /// refused).
        pub message: String,
    }

    /// A worker holding a key, and how to reach it (see [`PeerAddr`]).
    pub struct Holder {
        /// The worker.
        pub worker: WorkerId,
        /// See [`WorkerHello::listen_addr`].
        pub addr: String,
        /// See [`WorkerHello::shm_addr`].
        pub shm_addr: String,
        /// See [`Hello::host_id`].
        pub host_id: String,
        /// See [`Hello::pid`].
        pub pid: u32,
        /// The device the value lives on (`host`, `sim:N`, `cuda:N`: a
        /// [`crate::DeviceLoc`] in its text form).
        pub device: String,
    }

    /// Keys and where they live.
    pub struct WhoHasEntry {
        /// The key asked about.
        pub key: String,
        /// The workers holding its value; empty when it is not in memory (or unknown).
        pub holders: Vec<Holder>,
    }

    /// One worker in [`SchedulerInfoMsg`].
    pub struct WorkerInfoMsg {
        /// The worker's id in this cluster.
        pub id: WorkerId,
        /// Its name (`--name`, or one given at start).
        pub name: String,
        /// See [`WorkerHello::listen_addr`].
        pub addr: String,
        /// See [`Hello::host_id`].
        pub host_id: String,
        /// See [`Hello::pid`].
        pub pid: u32,
        /// See [`WorkerHello::shm_addr`].
        pub shm_addr: String,
        /// See [`WorkerHello::transport`].
        pub transport: String,
        /// See [`WorkerHello::device`].
        pub device: String,
        /// See [`WorkerHello::device_name`].
        pub device_name: String,
        /// See [`WorkerHello::device_memory_limit`].
        pub device_memory_limit: u64,
        /// See [`HeartbeatMsg::device_memory_used`] (0 until the first heartbeat).
        pub device_memory_used: u64,
        /// See [`HeartbeatMsg::device_to_host`].
        pub device_to_host: u64,
        /// See [`HeartbeatMsg::received`].
        pub received: Vec<(String, u64)>,
        /// See [`HeartbeatMsg::spilled`].
        pub spilled: Vec<(String, u64)>,
        /// See [`HeartbeatMsg::ran`].
        pub ran: Vec<(String, u64)>,
        /// See [`WorkerHello::nthreads`].
        pub nthreads: u32,
        /// See [`WorkerHello::memory_limit`].
        pub memory_limit: u64,
        /// See [`WorkerHello::resources`].
        pub resources: Vec<Resource>,
        /// Tasks assigned to the worker and not finished.
        pub processing: u64,
        /// Keys in memory on the worker.
        pub stored_keys: u64,
        /// Bytes of those keys, as the worker reported their sizes.
        pub stored_bytes: u64,
        /// `running`, or `closing_gracefully` while it retires (it gets no new tasks,
        /// and its data moves to other workers before it is closed).
        pub status: String,
        /// See [`HeartbeatMsg::executing`]: tasks running now (0 until the first
        /// heartbeat).
        pub executing: u32,
        /// Bytes of its values in host memory now: [`HeartbeatMsg::stored_bytes`] less
        /// those on the device and on disk. On a worker with a device, what is spilled
        /// (or produced) to the host.
        pub host_bytes: u64,
        /// See [`HeartbeatMsg::device_bytes`].
        pub device_bytes: u64,
        /// See [`HeartbeatMsg::disk_bytes`]: spilled to disk now.
        pub disk_bytes: u64,
        /// See [`HeartbeatMsg::rss_bytes`].
        pub rss_bytes: u64,
        /// Seconds since its last heartbeat (since it joined, before the first).
        pub last_seen_secs: f64,
        /// See [`WorkerHello::dashboard`].
        pub dashboard: String,
        /// See [`HeartbeatMsg::utilization`].
        pub utilization: Option<f32>,
        /// What it received from each peer, by link (running totals; the pairs with the
        /// most bytes, at most [`MAX_PEER_ROWS`]).
        pub received_from: Vec<PeerBytesMsg>,
    }

    /// The scheduler's state, as `Client::scheduler_info` reports it.
    pub struct SchedulerInfoMsg {
        /// The address the scheduler listens on.
        pub address: String,
        /// The scheduler's [`crate::RASK_VERSION`].
        pub rask_version: String,
        /// The workers connected now.
        pub workers: Vec<WorkerInfoMsg>,
        /// Count of tasks in each state, by state name.
        pub tasks_by_state: Vec<(String, u64)>,
        /// Clients connected now.
        pub clients: u32,
        /// Programs the scheduler has heard of (clients' programs with typed ops).
        pub programs: Vec<ProgramStatusMsg>,
        /// Counts per task prefix, in the order the prefixes were first seen.
        pub prefixes: Vec<TaskPrefixMsg>,
        /// Tasks whose results workers reported, so far (monotonic: a rate is its
        /// difference between two calls over their `now_us` difference).
        pub tasks_completed: u64,
        /// Tasks whose ops failed on workers, so far.
        pub tasks_erred: u64,
        /// Workers that joined, so far.
        pub workers_added: u64,
        /// Workers that left (or died, or were closed), so far.
        pub workers_removed: u64,
        /// The task stream's last entry number: ask `GetTaskStream` with it as `since`
        /// for what finishes from now on.
        pub task_stream_last: u64,
        /// The scheduler's clock now, microseconds since the Unix epoch.
        pub now_us: u64,
        /// When the scheduler started, on that clock.
        pub started_us: u64,
        /// The dashboard's address (`http://host:port/status`), empty without one.
        pub dashboard: String,
    }

    /// One program in [`SchedulerInfoMsg`].
    pub struct ProgramStatusMsg {
        pub code: u64,
        pub name: String,
        pub size: u64,
        /// Times a client sent the executable to the scheduler.
        pub uploads: u32,
        /// Times the scheduler sent it to a worker (a host without a copy).
        pub downloads: u32,
        /// Connected workers running it.
        pub workers: u32,
        /// Connected clients using it.
        pub clients: u32,
        /// Why it cannot run, if it cannot.
        pub error: String,
    }

    /// Messages from the scheduler to a client.
    pub enum ToClient {
        /// Keys the client holds futures for that the scheduler no longer knows (it was
        /// restarted without them): their futures fail with `reason`.
        KeysLost {
            /// The keys.
            keys: Vec<String>,
            /// Why.
            reason: String,
        },
        /// A key the client wants is computed.
        KeyInMemory {
            /// The key.
            key: String,
            /// Its task, by which holders serve the value.
            task: TaskId,
            /// See [`TaskFinishedMsg::nbytes`].
            nbytes: u64,
            /// The workers holding the value.
            holders: Vec<Holder>,
            /// The value, when small enough to travel with the news.
            value: Option<Datum>,
        },
        /// A key the client wants failed, or one of the tasks it depends on did.
        KeyErred {
            /// The key the client waits on.
            key: String,
            /// The failure, naming the task where it happened.
            error: TaskError,
        },
        /// The graph was refused as a whole (unknown op, unknown dependency, …).
        GraphRejected {
            /// The keys the client wanted from that graph: each of their futures fails.
            keys: Vec<String>,
            /// Why the graph was refused.
            message: String,
        },
        /// The answer to [`ToScheduler::WhoHas`].
        WhoHasReply {
            /// The request's number.
            req: u64,
            /// One entry per key asked about, in order.
            entries: Vec<WhoHasEntry>,
        },
        /// The answer to [`ToScheduler::Info`].
        InfoReply {
            /// The request's number.
            req: u64,
            /// The scheduler's state (boxed: every `ToClient` archives at the size of
            /// its largest variant inline, and this one is large).
            info: Box<SchedulerInfoMsg>,
        },
        /// The scheduler closes the connection, and says why (a frame it could not
        /// accept, a message not meant for a client, shutting down).
        Closing {
            /// Why.
            reason: String,
        },
        /// Send the executable of this client's program (`ProgramPart`s): a worker
        /// needs it to start the program's worker.
        SendProgram {
            code: u64,
        },
        /// The answer to [`ToScheduler::RetireWorkers`], once the workers retired have
        /// left the cluster.
        RetireWorkersReply {
            /// The request's number.
            req: u64,
            /// The names of the workers retired (those whose data could not move
            /// elsewhere, or that died meanwhile, are not among them).
            retired: Vec<String>,
        },
        /// The answer to [`ToScheduler::AdaptiveTarget`].
        AdaptiveTargetReply {
            /// The request's number.
            req: u64,
            /// The number of workers the cluster should have.
            target: u64,
        },
        /// The answer to [`ToScheduler::WorkersToClose`].
        WorkersToCloseReply {
            /// The request's number.
            req: u64,
            /// The names of the workers to retire, best first.
            names: Vec<String>,
        },
        /// The answer to [`ToScheduler::GetTaskStream`].
        TaskStreamReply {
            /// The request's number.
            req: u64,
            /// The entries after the cursor, oldest first.
            entries: Vec<TaskStreamEntryMsg>,
            /// The cursor for the next request: the stream's last entry number, or the
            /// last entry's `seq` when the limit cut the answer (a limit of 0 asks only
            /// for the cursor).
            last: u64,
        },
        /// The answer to [`ToScheduler::Story`].
        StoryReply {
            /// The request's number.
            req: u64,
            /// The key's transitions the scheduler's bounded log still holds, oldest
            /// first.
            transitions: Vec<TransitionMsg>,
        },
    }

    /// One value in a [`PeerMsg::Data`] reply.
    pub struct DataItem {
        /// The task whose value this is.
        pub task: TaskId,
        /// The value; its `Buf` indices refer to the frame's buffers (or, in
        /// [`PeerMsg::ShmData`], to its `refs`).
        pub value: Datum,
    }

    /// Where one buffer of a shared-memory reply lives.
    pub enum BufRef {
        /// In the frame's own buffer list, at this index (small buffers travel inline).
        Inline(u32),
        /// In a segment of the holder's shared-memory arena.
        Shm {
            /// The segment's id (see [`ShmSegment::id`]).
            segment: u32,
            /// Where the buffer starts in the segment, in bytes.
            offset: u64,
            /// Length of the buffer in bytes.
            len: u64,
        },
        /// In the holder's device memory (`device`, as the holder names it): the receiver
        /// opens the allocation's IPC `handle`, copies `len` bytes from `offset` into its
        /// own device, and closes it.
        Device {
            /// The holder's device (`cuda:N` in the holder's numbering).
            device: String,
            /// The allocation's IPC handle.
            handle: Vec<u8>,
            /// Where the bytes start in the allocation.
            offset: u64,
            /// Length in bytes.
            len: u64,
        },
    }

    /// A shared-memory segment the receiver has not seen yet; its file descriptor
    /// travels with the frame (SCM_RIGHTS), in the order of this list.
    pub struct ShmSegment {
        /// The segment's id in the holder's arena; [`BufRef::Shm`] and
        /// [`PeerMsg::Retired`] name it by this.
        pub id: u32,
        /// Its length in bytes (what the receiver maps).
        pub len: u64,
    }

    /// Data connections: a worker or client fetching from a worker.
    pub enum PeerMsg {
        /// `into_device`: the requester imports bytes held in a device's memory into its
        /// own device (CUDA IPC on one host) rather than receiving them through the host.
        GetData {
            /// The requester's request number, echoed in the reply.
            req: u64,
            /// The values wanted.
            tasks: Vec<TaskId>,
            /// Leave device bytes on the holder's device for the requester to import.
            into_device: bool,
        },
        /// The reply on a tcp or in-process connection: the values, their bytes in the
        /// frame's buffers.
        Data {
            /// The request's number.
            req: u64,
            /// The values the holder has.
            items: Vec<DataItem>,
            /// The tasks asked for that the holder does not hold.
            missing: Vec<TaskId>,
        },
        /// The reply on a shared-memory connection: the items' `Datum::Buf(i)` refer to
        /// `refs[i]`. The holder keeps the buffers unchanged until the receiver releases
        /// `loan` (0: nothing lent).
        ShmData {
            /// The request's number.
            req: u64,
            /// The values the holder has.
            items: Vec<DataItem>,
            /// The tasks asked for that the holder does not hold.
            missing: Vec<TaskId>,
            /// Where each buffer is.
            refs: Vec<BufRef>,
            /// Segments first used by this reply.
            segments: Vec<ShmSegment>,
            /// The loan covering `refs`, released by [`PeerMsg::Release`].
            loan: u64,
        },
        /// The receiver no longer reads these loans' buffers.
        Release {
            /// The loans ([`PeerMsg::ShmData::loan`]).
            loans: Vec<u64>,
        },
        /// The holder unmapped these segments; the receiver drops its mappings of them.
        Retired {
            /// The segments' ids.
            segments: Vec<u32>,
        },
    }
}

impl Hello {
    /// The hello of this build and process in `role`, named `name` (on `host_id`, this
    /// host's identity as the transport computes it), with no registry and no worker
    /// description; the handshake fills in the nonce.
    pub fn new(role: Role, name: impl Into<String>, host_id: impl Into<String>) -> Hello {
        Hello {
            protocol: crate::PROTOCOL_VERSION,
            schema: crate::PROTOCOL_SCHEMA,
            rask_version: crate::RASK_VERSION.into(),
            role,
            name: name.into(),
            host_id: host_id.into(),
            pid: std::process::id(),
            registry: None,
            worker: None,
            program: None,
            nonce: [0; 32],
            resume: None,
        }
    }
}

/// A message type that travels in batches: one frame carries a `Vec` of them plus the raw
/// buffers their [`Datum::Buf`] indices refer to.
pub trait WireMessage: Sized + Send + 'static {
    /// Archives a batch (a `Vec`, which is what the receiver's archive root is).
    #[allow(clippy::ptr_arg)]
    fn encode_batch(msgs: &Vec<Self>) -> rkyv::util::AlignedVec;
    /// Validates and deserializes a batch (`bytes` 16-byte aligned).
    fn decode_batch(bytes: &[u8]) -> Result<Vec<Self>, crate::ProtoError>;
    /// Renumbers this message's buffer indices by `base` (its buffers are appended to a
    /// frame's list at that position).
    fn shift_buffers(&mut self, base: u32);
    /// An upper estimate of the message's archived size in bytes, so that a writer can
    /// keep frames within a size (buffers not counted: they travel outside the header).
    fn wire_size(&self) -> usize {
        256
    }
}

macro_rules! wire_message {
    ($($t:ty => |$m:ident, $base:ident| $shift:block)*) => {$(
        impl WireMessage for $t {
            fn encode_batch(msgs: &Vec<Self>) -> rkyv::util::AlignedVec {
                crate::frame::encode_header(msgs)
            }
            fn decode_batch(bytes: &[u8]) -> Result<Vec<Self>, crate::ProtoError> {
                crate::frame::decode_header(bytes)
            }
            #[allow(unused_variables)]
            fn shift_buffers(&mut self, $base: u32) {
                let $m = self;
                $shift
            }
            fn wire_size(&self) -> usize {
                crate::size::WireSize::wire_size(self)
            }
        }
    )*};
}

wire_message! {
    ToScheduler => |m, base| {
        match m {
            ToScheduler::UpdateGraph(g) => {
                g.tasks.iter_mut().for_each(|t| t.args.shift_buffers(base));
            }
            ToScheduler::ProgramPart { buf, .. } => *buf += base,
            _ => {}
        }
    }
    ToWorker => |m, base| {
        match m {
            ToWorker::Compute(c) => c.args.shift_buffers(base),
            ToWorker::ProgramPart { buf, .. } => *buf += base,
            _ => {}
        }
    }
    ToClient => |m, base| {}
    PeerMsg => |m, base| {
        match m {
            PeerMsg::Data { items, .. } => {
                items.iter_mut().for_each(|i| i.value.shift_buffers(base));
            }
            PeerMsg::ShmData { refs, .. } => {
                for r in refs {
                    if let BufRef::Inline(i) = r {
                        *i += base;
                    }
                }
            }
            _ => {}
        }
    }
}

/// Refuses a peer of another version, protocol, or wire schema, naming both sides.
pub fn check_versions(h: &Hello, us: &str) -> Result<(), String> {
    if h.protocol != crate::PROTOCOL_VERSION || h.rask_version != crate::RASK_VERSION {
        return Err(format!(
            "version mismatch: {:?} {:?} runs rask {} (protocol {}), {us} runs rask {} (protocol {})",
            h.role, h.name, h.rask_version, h.protocol, crate::RASK_VERSION, crate::PROTOCOL_VERSION
        ));
    }
    if h.schema != crate::PROTOCOL_SCHEMA {
        return Err(format!(
            "wire schema mismatch: {:?} {:?} was built from other message definitions ({:016x}) than {us} ({:016x}), both rask {}; rebuild both from the same sources",
            h.role, h.name, h.schema, crate::PROTOCOL_SCHEMA, crate::RASK_VERSION
        ));
    }
    Ok(())
}
