//! The scheduler as a sans-IO state machine.
//!
//! All scheduler state lives in one [`SchedulerCore`]. Every external input (a graph from a
//! client, a task finished on a worker, a worker lost, keys released, …) is a synchronous
//! `on_*`/stimulus method that changes the state through one table of (from, to)
//! transitions and appends the messages to send to an ordered list of [`Action`]s, which
//! the caller drains with [`SchedulerCore::take_actions`]. This crate must not do I/O, use
//! a runtime, or read a clock: time arrives inside events (`duration_us`) and through
//! [`SchedulerCore::set_now`].
//!
//! For people watching the cluster it keeps only aggregated or bounded records (see
//! `observe` and `story`): counts per task prefix, the last finished tasks, the last
//! transitions.
//!
//! Task states, as Dask's:
//!
//! | from \ to  | waiting | queued | no-worker | processing | memory | erred | released | forgotten |
//! |------------|---------|--------|-----------|------------|--------|-------|----------|-----------|
//! | released   | needed  |        |           |            |        | dep erred |      | unreferenced |
//! | waiting    |         | ready, no slot | ready, no worker fits | ready, slot | | dep erred | not needed | |
//! | queued     |         |        | workers gone | slot freed |      |       | not needed / dep lost | |
//! | no-worker  |         | worker joined, no slot | | worker joined | |     | not needed / dep lost | |
//! | processing |         |        |           |            | finished | failed, killed 3× | worker lost, not needed | |
//! | memory     |         |        |           |            |        |       | data unneeded / lost | unreferenced |
//! | erred      |         |        |           |            |        |       | retried  | unreferenced |
//!
//! "Needed" means wanted by a client, or read by a task that is waiting, queued, no-worker
//! or processing. A released task still referenced by others keeps its lineage (op, args,
//! dependencies) so that lost data can be recomputed.
//!
//! Workers' states, as Dask's:
//!
//! | from \ to           | closing_gracefully        | running            | removed |
//! |----------------------|---------------------------|--------------------|---------|
//! | (joins) → running    | retire asked              |                    | lost    |
//! | closing_gracefully   |                           | data cannot move   | tasks done and data copied (closed); lost; asked to leave and data cannot move (closed) |
//!
//! A closing-gracefully (retiring) worker gets no new task; the values only retiring
//! workers hold are copied to running workers first (see `retire`), so that closing it
//! recomputes nothing. [`SchedulerCore::adaptive_target`] and
//! [`SchedulerCore::workers_to_close`] tell a cluster manager how many workers to have and
//! which to retire.

#![warn(missing_docs)]

mod adaptive;
mod api;
mod core;
mod dispatch;
mod few;
mod graph;
mod keys;
mod lists;
mod load;
mod map;
mod observe;
mod placement;
mod queue;
mod recover;
mod retire;
mod slab;
mod state;
mod steal;
mod stimuli;
mod story;
#[cfg(test)]
mod tests;
mod transitions;
mod validate;
mod wants;
mod watch;

pub use crate::api::{
    Action, CoreConfig, CoreInfo, GraphError, NewMap, NewTask, TaskFailure, WorkerInfo, WorkerSpec,
    MAX_FETCH_US, MAX_REPORTED_BYTES,
};
pub use crate::core::SchedulerCore;
pub use crate::observe::{
    key_prefix, Counters, PrefixInfo, SpillDirection, StreamEntry, StreamKind, TaskStream,
};
pub use crate::recover::{Export, RESTORE_GENERATIONS};
pub use crate::story::{Transition, TransitionLog, Why};
pub use crate::watch::{Activity, GraphNode, GraphView};

/// A task's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TaskState {
    /// Known, not needed now (or not yet): keeps its lineage, holds no data.
    Released,
    /// Needed, and waiting for some of its dependencies to be in memory.
    Waiting,
    /// Ready, held back by the scheduler until a worker has a free slot.
    Queued,
    /// Ready, but no worker offers the resources it needs.
    NoWorker,
    /// Assigned to a worker, which runs it (or will).
    Processing,
    /// Its value is held by at least one worker.
    Memory,
    /// Its op failed, a dependency erred, or it killed too many workers.
    Erred,
    /// Dropped from the scheduler (not stored; only transitions name it).
    Forgotten,
}

impl TaskState {
    /// The state's name as Dask spells it.
    pub fn name(self) -> &'static str {
        match self {
            TaskState::Released => "released",
            TaskState::Waiting => "waiting",
            TaskState::Queued => "queued",
            TaskState::NoWorker => "no-worker",
            TaskState::Processing => "processing",
            TaskState::Memory => "memory",
            TaskState::Erred => "erred",
            TaskState::Forgotten => "forgotten",
        }
    }

    /// All states, in display order.
    pub const ALL: [TaskState; 8] = [
        TaskState::Released,
        TaskState::Waiting,
        TaskState::Queued,
        TaskState::NoWorker,
        TaskState::Processing,
        TaskState::Memory,
        TaskState::Erred,
        TaskState::Forgotten,
    ];
}
