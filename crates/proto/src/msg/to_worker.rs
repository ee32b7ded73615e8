//! Messages from the scheduler to a worker: [`ToWorker`], tasks to run ([`ComputeMsg`]) and
//! where their inputs are ([`DepLoc`]).

use super::*;

wire! {
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
        pub op: SharedStr,
        /// Arguments; `Datum::Ref(i)` is the value of `deps[i]`.
        pub args: TaskArgs,
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
        /// Work stealing: the scheduler would give `task` (its run `run`) to an idle
        /// worker. Answered by [`ToScheduler::StealResponse`]: released if it had not
        /// started here, kept (to run here) if it had.
        Steal {
            /// The task.
            task: TaskId,
            /// Its run, as in [`ComputeMsg::run`].
            run: u32,
        },
        /// Send this back at once as [`ToScheduler::Echo`] (see there).
        Echo {
            /// The client it returns to.
            client: u32,
            /// Its number.
            seq: u64,
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
}
