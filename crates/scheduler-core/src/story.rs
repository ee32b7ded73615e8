//! A bounded log of transitions, so that `story(key)` can replay one task's history
//! (also after the task was forgotten, while the log still holds its entries).

use std::collections::VecDeque;
use std::sync::Arc;

use rask_proto::{StimulusId, TaskId, WorkerId};

use crate::api::TaskFailure;
use crate::TaskState;

/// One recorded transition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The task.
    pub task: TaskId,
    /// Its key.
    pub key: Arc<str>,
    /// Its state before.
    pub from: TaskState,
    /// Its state after.
    pub to: TaskState,
    /// The external input that caused it.
    pub stimulus: StimulusId,
    /// What that input was (`update-graph`, `task-finished`, `worker-lost`, …).
    pub why: &'static str,
    /// The worker concerned: the one running it (to `processing`), holding it (to
    /// `memory`), or the one the input came from.
    pub worker: Option<WorkerId>,
    /// When, on the scheduler's clock ([`SchedulerCore::set_now`](crate::SchedulerCore::set_now)).
    pub time_us: u64,
    /// Into `erred`: why it failed.
    pub error: Option<Arc<TaskFailure>>,
}

/// A ring buffer of the most recent transitions.
#[derive(Debug)]
pub struct TransitionLog {
    entries: VecDeque<Transition>,
    capacity: usize,
}

impl TransitionLog {
    /// A log keeping the last `capacity` transitions (0 disables it).
    pub fn new(capacity: usize) -> Self {
        TransitionLog {
            entries: VecDeque::with_capacity(capacity.min(1 << 16)),
            capacity,
        }
    }

    /// Whether it keeps anything (a capacity above 0).
    pub fn enabled(&self) -> bool {
        self.capacity > 0
    }

    pub(crate) fn record(&mut self, t: Transition) {
        if self.capacity == 0 {
            return;
        }
        if self.entries.len() == self.capacity {
            self.entries.pop_front();
        }
        self.entries.push_back(t);
    }

    /// The recorded transitions of one key, oldest first (a key forgotten and submitted
    /// again has the transitions of both tasks).
    pub fn story(&self, key: &str) -> Vec<Transition> {
        self.entries
            .iter()
            .filter(|t| *t.key == *key)
            .cloned()
            .collect()
    }

    /// Number of transitions held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the log holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(task: u64, stimulus: u64) -> Transition {
        Transition {
            task: TaskId(task),
            key: format!("k{task}").into(),
            from: TaskState::Released,
            to: TaskState::Waiting,
            stimulus: StimulusId(stimulus),
            why: "test",
            worker: None,
            time_us: stimulus,
            error: None,
        }
    }

    #[test]
    fn keeps_the_last_capacity_transitions() {
        let mut log = TransitionLog::new(2);
        assert!(log.is_empty());
        log.record(t(1, 1));
        assert_eq!((log.len(), log.is_empty()), (1, false));
        log.record(t(2, 2));
        log.record(t(1, 3));
        assert_eq!(log.len(), 2);
        assert_eq!(log.story("k1"), vec![t(1, 3)]);
        assert_eq!(log.story("k2"), vec![t(2, 2)]);
    }

    #[test]
    fn a_capacity_of_zero_keeps_nothing() {
        let mut log = TransitionLog::new(0);
        log.record(t(1, 1));
        assert!(log.is_empty());
        assert_eq!(log.len(), 0);
        assert_eq!(log.story("k1"), vec![]);
    }
}
