//! What the worker's owner task reacts to: messages, finished jobs, fetched values,
//! links that went down. Executor threads and link tasks send these without knowing the
//! loop.

use rask_proto::msg::ToWorker;
use rask_proto::{TaskId, Value, WorkerId};
use rask_transport::Batch;

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
    /// through the host.
    ImportFailed {
        from: WorkerId,
        tasks: Vec<TaskId>,
        error: String,
    },
}

/// One job's outcome.
pub(crate) struct Executed {
    pub(crate) task: TaskId,
    /// The value, and whether the device's kernels computed it.
    pub(crate) result: Result<(Value, bool), String>,
    pub(crate) duration_us: u64,
    /// Inputs brought back to the device for the job, for the store.
    pub(crate) unspilled: Vec<(TaskId, Value)>,
}
