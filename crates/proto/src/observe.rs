//! Messages for watching the cluster: counts per task prefix in
//! [`SchedulerInfoMsg`](crate::msg::SchedulerInfoMsg), the task stream's entries and
//! `story(key)`'s transitions. Part of the wire layout (covered by
//! [`PROTOCOL_SCHEMA`](crate::PROTOCOL_SCHEMA)). Times are microseconds since the Unix
//! epoch on the scheduler's clock.

use rkyv::{Archive, Deserialize, Serialize};

use crate::msg::TaskError;
use crate::{TaskId, WorkerId};

/// Counts of one task prefix in [`SchedulerInfoMsg`](crate::msg::SchedulerInfoMsg): the
/// key's leading name words (`matmul` of `matmul-17-0-1`, Dask's `key_split`), or the
/// op's name (`array.matmul`) for keys without one.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TaskPrefixMsg {
    /// The prefix.
    pub name: String,
    /// Tasks in each state now, by state name (`released`, `waiting`, `queued`,
    /// `no-worker`, `processing`, `memory`, `erred`).
    pub states: Vec<(String, u64)>,
    /// Transitions into each state so far, by state name, `forgotten` included
    /// (monotonic: Dask's `prefix_state_totals`).
    pub totals: Vec<(String, u64)>,
    /// Sum of the durations its finished tasks ran, in microseconds.
    pub compute_us: u64,
    /// Sum of its finished tasks' output sizes, in bytes.
    pub output_bytes: u64,
}

/// One finished task in the task stream (`GetTaskStream`).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TaskStreamEntryMsg {
    /// Its number in the stream (1, 2, …): the cursor to ask for what follows it.
    pub seq: u64,
    /// The task.
    pub task: TaskId,
    /// Its key.
    pub key: String,
    /// Its prefix (see [`TaskPrefixMsg::name`]).
    pub prefix: String,
    /// The worker that ran it.
    pub worker: WorkerId,
    /// That worker's name.
    pub worker_name: String,
    /// When it started: `stop_us` minus the duration the worker reported.
    pub start_us: u64,
    /// When the scheduler learnt it finished.
    pub stop_us: u64,
    /// Its output's size in bytes (for a transfer or a spill, the bytes moved).
    pub nbytes: u64,
    /// What it was: `compute`, `transfer` (the value fetched by `worker` from `peer`) or
    /// `spill` (moved by `worker` out of its device or memory).
    pub kind: String,
    /// For a transfer, the worker it came from.
    pub peer: Option<WorkerId>,
    /// That worker's name.
    pub peer_name: String,
    /// For a transfer its link class (`nvlink`, `pcie`, `shm`, `tcp`, `local`); for a
    /// spill its direction (`device->host`, `device->disk`, `host->disk`); empty for
    /// computing.
    pub detail: String,
}

/// Something a worker did besides computing, reported in its heartbeat for the task
/// stream. Times are microseconds before the heartbeat was sent (the scheduler places
/// them on its own clock when it arrives, so workers' clocks need not agree).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ActivityMsg {
    /// The task whose value moved.
    pub task: TaskId,
    /// What happened.
    pub kind: ActivityKind,
    /// When it started.
    pub start_ago_us: u64,
    /// When it ended.
    pub stop_ago_us: u64,
    /// Bytes moved.
    pub nbytes: u64,
}

/// What an [`ActivityMsg`] was.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub enum ActivityKind {
    /// The value was fetched from a peer: from the request to its arrival (a request
    /// for several values reports each with the request's times).
    Transfer {
        /// The peer.
        from: WorkerId,
        /// The link's class, a [`crate::LinkClass`] by its name.
        link: String,
    },
    /// The value was spilled: `device->host`, `device->disk` or `host->disk`.
    Spill {
        /// The direction.
        direction: String,
    },
}

/// What a worker received from one peer over one link so far (running totals).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct PeerBytesMsg {
    /// The peer it came from.
    pub peer: WorkerId,
    /// The link's class, a [`crate::LinkClass`] by its name.
    pub link: String,
    /// Bytes received.
    pub bytes: u64,
    /// Microseconds the transfers took, from request to arrival, summed.
    pub micros: u64,
}

/// Finished tasks after a cursor: a task-stream request's answer, as a client or the
/// dashboard receives it (not itself a message).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskStream {
    /// The entries, oldest first.
    pub entries: Vec<TaskStreamEntryMsg>,
    /// The cursor for the next request: the stream's last entry number, or the last
    /// entry's `seq` when the limit cut the answer (a limit of 0 asks only for it).
    pub last: u64,
}

/// One transition of a task, in `story(key)`.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TransitionMsg {
    /// The key.
    pub key: String,
    /// Its task (a key forgotten and submitted again has another).
    pub task: TaskId,
    /// The state before (`released`, `waiting`, `queued`, `no-worker`, `processing`,
    /// `memory`, `erred`).
    pub from: String,
    /// The state after (those, or `forgotten`).
    pub to: String,
    /// The number of the input that caused it: transitions with one number happened
    /// together.
    pub stimulus: u64,
    /// What that input was (`update-graph`, `task-finished`, `task-erred`,
    /// `worker-lost`, `release-keys`, `client-left`, …).
    pub why: String,
    /// The worker concerned (running it, holding it, or the input's sender).
    pub worker: Option<WorkerId>,
    /// That worker's name (empty for a worker gone long ago).
    pub worker_name: String,
    /// When.
    pub time_us: u64,
    /// Into `erred`: why it failed.
    pub error: Option<TaskError>,
}
