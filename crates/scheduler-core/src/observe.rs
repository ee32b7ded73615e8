//! What the core keeps for people watching the cluster (a dashboard, a client's task
//! stream): counts per task prefix, a bounded ring of finished tasks, and monotonic
//! counters. Everything here is aggregated or bounded, updated in O(1) per transition or
//! finished task; nothing here decides anything about scheduling.

use std::collections::VecDeque;
use std::sync::Arc;

use rask_proto::{LinkClass, TaskId, WorkerId};

use crate::TaskState;

/// The prefix of a task's key, Dask's `key_split`: the leading `-`-separated words that
/// are names, up to the first that is not (a number, a hex token, a word with digits):
/// `matmul-17-0-1` → `matmul`, `sum-reduce-5-t1-0` → `sum-reduce`, `hits-a-3` → `hits`.
/// `None` when the key has no `-` or its first word is empty: the task's op names its
/// prefix then.
pub fn key_prefix(key: &str) -> Option<&str> {
    let mut words = key.split('-');
    let first = words.next()?;
    if first.is_empty() || first.len() == key.len() {
        return None;
    }
    let mut end = first.len();
    for w in words {
        let name = w.bytes().all(|b| b.is_ascii_alphabetic() || b == b'_')
            && !w.bytes().all(|b| b.is_ascii_hexdigit());
        if !name {
            break;
        }
        end += 1 + w.len();
    }
    Some(&key[..end])
}

/// Counts of one task prefix (all tasks whose keys share it, or its op when keys have
/// none).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PrefixInfo {
    /// The prefix.
    pub name: Arc<str>,
    /// Tasks in each state now, indexed as [`TaskState::ALL`] (the `forgotten` slot
    /// stays 0: forgotten tasks are not held).
    pub current: [u64; 8],
    /// Transitions into each state so far, indexed as [`TaskState::ALL`] (Dask's
    /// `prefix_state_totals`): monotonic, so `forgotten` counts tasks dropped so far.
    pub totals: [u64; 8],
    /// Sum of the reported durations of its finished tasks, in microseconds.
    pub compute_us: u64,
    /// Sum of the reported output sizes of its finished tasks, in bytes.
    pub output_bytes: u64,
}

impl PrefixInfo {
    /// Tasks in `state` now.
    pub fn current(&self, state: TaskState) -> u64 {
        self.current[state as usize]
    }

    /// Transitions into `state` so far.
    pub fn total(&self, state: TaskState) -> u64 {
        self.totals[state as usize]
    }
}

/// What a [`StreamEntry`] records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    /// A task ran on a worker.
    Compute,
    /// A worker fetched the task's value from a peer.
    Transfer {
        /// The peer.
        from: WorkerId,
        /// The link the bytes took.
        link: LinkClass,
    },
    /// A worker moved the task's value down a tier.
    Spill(SpillDirection),
}

impl StreamKind {
    /// The kind's name (`compute`, `transfer`, `spill`).
    pub fn name(self) -> &'static str {
        match self {
            StreamKind::Compute => "compute",
            StreamKind::Transfer { .. } => "transfer",
            StreamKind::Spill(_) => "spill",
        }
    }

    /// A transfer's link class, a spill's direction; empty for computing.
    pub fn detail(self) -> &'static str {
        match self {
            StreamKind::Compute => "",
            StreamKind::Transfer { link, .. } => link.as_str(),
            StreamKind::Spill(d) => d.as_str(),
        }
    }
}

/// Where a spill moved a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpillDirection {
    /// Out of device memory into host memory.
    DeviceToHost,
    /// Out of device memory onto disk.
    DeviceToDisk,
    /// Out of host memory onto disk.
    HostToDisk,
}

impl SpillDirection {
    /// Every direction.
    pub const ALL: [SpillDirection; 3] = [
        SpillDirection::DeviceToHost,
        SpillDirection::DeviceToDisk,
        SpillDirection::HostToDisk,
    ];

    /// Its name as workers report it (`device->host`, `device->disk`, `host->disk`).
    pub fn as_str(self) -> &'static str {
        match self {
            SpillDirection::DeviceToHost => "device->host",
            SpillDirection::DeviceToDisk => "device->disk",
            SpillDirection::HostToDisk => "host->disk",
        }
    }

    /// The direction named `name`, if any.
    pub fn from_name(name: &str) -> Option<SpillDirection> {
        SpillDirection::ALL.into_iter().find(|d| d.as_str() == name)
    }
}

/// One finished task in the task stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamEntry {
    /// Its position in the stream: 1 for the first task ever recorded, then +1 each.
    pub seq: u64,
    /// The task.
    pub task: TaskId,
    /// Its key.
    pub key: Arc<str>,
    /// Its prefix (see [`key_prefix`]).
    pub prefix: Arc<str>,
    /// The worker that ran it.
    pub worker: WorkerId,
    /// That worker's name.
    pub worker_name: Arc<str>,
    /// When it started: `stop_us` minus the duration the worker reported.
    pub start_us: u64,
    /// When the scheduler learnt it finished, on the scheduler's clock (the caller's
    /// [`SchedulerCore::set_now`](crate::SchedulerCore::set_now); the server gives
    /// microseconds since the Unix epoch).
    pub stop_us: u64,
    /// Its output's size in bytes, as reported.
    pub nbytes: u64,
    /// What it was.
    pub kind: StreamKind,
    /// For a transfer, the name of the worker it came from (empty otherwise).
    pub peer_name: Arc<str>,
}

/// A finished task as the stream keeps it: one reference (the key); the prefix and the
/// worker's name are looked up when the stream is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StreamRecord {
    pub(crate) seq: u64,
    pub(crate) task: TaskId,
    pub(crate) key: Arc<str>,
    /// Index into the core's prefixes.
    pub(crate) prefix: u32,
    pub(crate) worker: WorkerId,
    pub(crate) start_us: u64,
    pub(crate) stop_us: u64,
    pub(crate) nbytes: u64,
    pub(crate) kind: StreamKind,
}

/// A ring of the last finished tasks, each numbered, so that a poller asks only for
/// those after the last it saw.
#[derive(Debug)]
pub struct TaskStream {
    entries: VecDeque<StreamRecord>,
    capacity: usize,
    /// The number of entries ever pushed (the last one's `seq`).
    pushed: u64,
}

impl TaskStream {
    /// A ring keeping the last `capacity` entries (0 keeps none).
    pub fn new(capacity: usize) -> Self {
        TaskStream {
            entries: VecDeque::with_capacity(capacity.min(1 << 20)),
            capacity,
            pushed: 0,
        }
    }

    /// Records an entry, numbering it; the oldest goes when the ring is full.
    pub(crate) fn push(&mut self, mut e: StreamRecord) {
        self.pushed += 1;
        if self.capacity == 0 {
            return;
        }
        e.seq = self.pushed;
        if self.entries.len() == self.capacity {
            self.entries.pop_front();
        }
        self.entries.push_back(e);
    }

    /// Up to `limit` entries with `seq > since`, oldest first (those evicted are gone: the
    /// first returned may be past `since + 1`).
    pub(crate) fn since(&self, since: u64, limit: usize) -> Vec<StreamRecord> {
        // Entries are numbered consecutively: the first wanted is found by arithmetic.
        let first = self.pushed - self.entries.len() as u64;
        let skip = since.saturating_sub(first).min(self.entries.len() as u64) as usize;
        self.entries.range(skip..).take(limit).cloned().collect()
    }

    /// The `seq` of the last entry recorded (0 before the first): a cursor for "what is
    /// new from now on".
    pub fn last_seq(&self) -> u64 {
        self.pushed
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the ring holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Monotonic counters of the cluster's life, for rates (tasks/s) and Prometheus.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Tasks whose results a worker reported (stale reports not counted).
    pub tasks_completed: u64,
    /// Tasks whose op failed on a worker.
    pub tasks_erred: u64,
    /// Workers that joined.
    pub workers_added: u64,
    /// Workers that left, died or were closed.
    pub workers_removed: u64,
    /// Steals asked of workers (Dask's `dask_stealing_request_count_total`).
    pub steal_requests: u64,
    /// Steals the victim released, the task moving to the thief.
    pub steals: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(task: u64) -> StreamRecord {
        StreamRecord {
            seq: 0,
            task: TaskId(task),
            key: format!("k-{task}").into(),
            prefix: 0,
            worker: WorkerId(0),
            start_us: task,
            stop_us: task + 1,
            nbytes: 8,
            kind: StreamKind::Compute,
        }
    }

    fn seqs(v: &[StreamRecord]) -> Vec<u64> {
        v.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn key_prefixes_are_the_leading_name_words() {
        assert_eq!(key_prefix("matmul-17-0-1"), Some("matmul"));
        assert_eq!(key_prefix("sum-reduce-5-t1-0"), Some("sum-reduce"));
        assert_eq!(key_prefix("hits-a-3"), Some("hits"));
        assert_eq!(key_prefix("load_csv-beef-1"), Some("load_csv"));
        assert_eq!(key_prefix("hello-world-x1"), Some("hello-world"));
        assert_eq!(key_prefix("hello-world"), Some("hello-world"));
        assert_eq!(key_prefix("a-b_c"), Some("a-b_c"));
        assert_eq!(key_prefix("x"), None);
        assert_eq!(key_prefix("-1"), None);
        assert_eq!(key_prefix(""), None);
    }

    #[test]
    fn the_stream_numbers_entries_and_keeps_the_last_capacity() {
        let mut s = TaskStream::new(3);
        assert!(s.is_empty());
        assert_eq!(s.last_seq(), 0);
        for t in 1..=5 {
            s.push(entry(t));
            assert!(s.len() <= 3);
        }
        assert_eq!((s.len(), s.is_empty(), s.last_seq()), (3, false, 5));
        assert_eq!(seqs(&s.since(0, 100)), vec![3, 4, 5]);
        assert_eq!(seqs(&s.since(2, 100)), vec![3, 4, 5]);
        assert_eq!(seqs(&s.since(3, 100)), vec![4, 5]);
        assert_eq!(seqs(&s.since(4, 1)), vec![5]);
        assert_eq!(seqs(&s.since(5, 100)), Vec::<u64>::new());
        assert_eq!(seqs(&s.since(99, 100)), Vec::<u64>::new());
        assert_eq!(seqs(&s.since(0, 2)), vec![3, 4]);
        assert_eq!(s.since(4, 1)[0].key.as_ref(), "k-5");
    }

    #[test]
    fn a_stream_of_capacity_zero_keeps_nothing_but_counts() {
        let mut s = TaskStream::new(0);
        s.push(entry(1));
        s.push(entry(2));
        assert!(s.is_empty());
        assert_eq!(s.last_seq(), 2);
        assert_eq!(s.since(0, 10), vec![]);
    }

    #[test]
    fn prefix_counts_are_read_by_state() {
        let mut p = PrefixInfo::default();
        p.current[TaskState::Memory as usize] = 2;
        p.totals[TaskState::Forgotten as usize] = 5;
        assert_eq!(p.current(TaskState::Memory), 2);
        assert_eq!(p.current(TaskState::Waiting), 0);
        assert_eq!(p.total(TaskState::Forgotten), 5);
        assert_eq!(StreamKind::Compute.name(), "compute");
    }
}
