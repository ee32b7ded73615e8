//! What the worker's owner task reacts to: messages, finished jobs, fetched values,
//! links that went down. Executor threads and link tasks send these without knowing the
//! loop.

use rask_kernels::OpError;
use rask_proto::msg::ToWorker;
use rask_proto::{TaskId, Value, WorkerId};
use rask_transport::Batch;
use rask_worker_core::spill::Tier;

/// What the main loop reacts to.
pub(crate) enum Event {
    FromScheduler(Batch<ToWorker>),
    SchedulerGone(Option<String>),
    /// Results of one or more jobs, in completion order.
    Executed(Vec<Executed>),
    Fetched {
        from: WorkerId,
        req: u64,
        values: Vec<(TaskId, Value)>,
        missing: Vec<TaskId>,
    },
    LinkDown {
        from: WorkerId,
        error: String,
    },
    /// Values lent from a peer's device could not be imported into ours: fetch them again
    /// through the host (this time only when our device was full, else from now on).
    ImportFailed {
        from: WorkerId,
        tasks: Vec<TaskId>,
        error: OpError,
    },
    /// The spill thread moved a value down a tier (or could not).
    Spilled(Spilled),
    /// The scheduler's connection is back (see [`crate::rejoin`]).
    Rejoined(Box<crate::rejoin::Rejoined>),
    /// It did not come back in time: the worker stops.
    RejoinFailed(String),
}

/// A value moved by the spill thread: the copy, or why there is none.
pub(crate) struct Spilled {
    pub(crate) task: TaskId,
    pub(crate) to: Tier,
    /// Which move this answers (a value changed meanwhile is moved again under another).
    pub(crate) gen: u64,
    /// The value in its new tier, and the bytes moved.
    pub(crate) result: Result<(Value, u64), String>,
    /// When the copy started and ended.
    pub(crate) started: std::time::Instant,
    /// See [`Spilled::started`].
    pub(crate) stopped: std::time::Instant,
}

/// Why a job failed.
#[derive(Debug)]
pub(crate) enum JobError {
    /// The op failed: its message, as the user sees it.
    Failed(String),
    /// The device had no room for the op: spilling `needed` bytes and running it again
    /// may succeed ([`Executed::retry`] has what to run again).
    DeviceFull { needed: u64, message: String },
    /// The device failed for good; the message names the op and its kernels.
    DeviceLost(String),
}

/// What to run again: a job whose op did not fit on the device.
pub(crate) struct Retry {
    pub(crate) op: rask_proto::SharedStr,
    pub(crate) args: Value,
    /// The task's inputs (not spilled to make room for it: it reads them).
    pub(crate) deps: Vec<TaskId>,
}

/// One job's outcome.
pub(crate) struct Executed {
    pub(crate) task: TaskId,
    /// The value, and whether the device's kernels computed it.
    pub(crate) result: Result<(Value, bool), JobError>,
    pub(crate) duration_us: u64,
    /// Inputs brought back to the device for the job, for the store.
    pub(crate) unspilled: Vec<(TaskId, Value)>,
    /// The job, when its op did not fit on the device.
    pub(crate) retry: Option<Box<Retry>>,
}
