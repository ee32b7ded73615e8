//! Messages from the scheduler to a client: [`ToClient`], results and errors, and what
//! `scheduler_info` reports ([`SchedulerInfoMsg`], [`WorkerInfoMsg`]).

use super::*;

/// The most peers [`WorkerInfoMsg::received_from`] lists per worker.
pub const MAX_PEER_ROWS: usize = 64;

wire! {
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
        /// How long its tasks wait for inputs from peers, a moving average of
        /// [`TaskFinishedMsg::fetch_us`]: the scheduler sends it that much more work
        /// ahead per thread than its queue target.
        pub fetch_us: u64,
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
        /// The scheduler's host (see [`Hello::host_id`]) and process there: with those of
        /// the workers, what a program on the same host needs to read each process's use
        /// of the machine (as the benchmarks' CPU time per task does).
        pub host_id: String,
        /// See [`SchedulerInfoMsg::host_id`].
        pub pid: u32,
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

    /// The news of one computed key of a map's form (`{prefix}-{n}`), in a
    /// [`ToClient::MapInMemory`]: what a [`ToClient::KeyInMemory`] says, the key named
    /// by its number.
    pub struct MapNews {
        /// The key's number.
        pub n: u64,
        /// See [`ToClient::KeyInMemory`].
        pub task: TaskId,
        /// See [`TaskFinishedMsg::nbytes`].
        pub nbytes: u64,
        /// The value, when small enough to travel with the news (packed: the scheduler
        /// hands it on as the worker sent it).
        pub value: Option<Packed>,
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
        /// A [`ToScheduler::Echo`] of this client's, back from a worker.
        Echo {
            /// Its number.
            seq: u64,
        },
        /// Where workers can be reached: sent before the first news that names one
        /// of them to this client (news names holders by id alone).
        Workers {
            /// The workers.
            holders: Vec<Holder>,
        },
        /// A key the client wants is computed.
        KeyInMemory {
            /// The key.
            key: SharedStr,
            /// Its task, by which holders serve the value.
            task: TaskId,
            /// See [`TaskFinishedMsg::nbytes`].
            nbytes: u64,
            /// The workers holding the value, each told to this client by a
            /// [`ToClient::Workers`] before.
            holders: Vec<WorkerId>,
            /// The value, when small enough to travel with the news (packed: the scheduler
        /// hands it on as the worker sent it).
            value: Option<Packed>,
        },
        /// Keys the client wants of one map's form (`{prefix}-{n}`, as
        /// [`map_key`] writes them), computed and held by the same workers: the news
        /// of each as a [`ToClient::KeyInMemory`] would say it, without its key's text
        /// (the news of a map's keys, which come in runs, is most of what a client
        /// hears).
        MapInMemory {
            /// The keys' prefix.
            prefix: SharedStr,
            /// The workers holding every one of the values (see
            /// [`ToClient::KeyInMemory`]).
            holders: Vec<WorkerId>,
            /// Each key's news.
            keys: Vec<MapNews>,
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
        /// The answer to [`ToScheduler::Datasets`]: names (of datasets, or keys of one), or
        /// why the request was refused.
        DatasetsReply {
            /// The request's number.
            req: u64,
            /// What was asked for (see [`DatasetOp`]).
            names: Vec<String>,
            /// Why it was refused (no such dataset, a name taken, an unknown key).
            error: Option<String>,
        },
    }
}
