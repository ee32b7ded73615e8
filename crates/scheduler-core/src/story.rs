//! A bounded log of transitions, so that `story(key)` can replay one task's history.

use std::collections::VecDeque;

use rask_proto::{StimulusId, TaskId};

use crate::TaskState;

/// One recorded transition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub task: TaskId,
    pub from: TaskState,
    pub to: TaskState,
    pub stimulus: StimulusId,
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

    pub(crate) fn record(&mut self, t: Transition) {
        if self.capacity == 0 {
            return;
        }
        if self.entries.len() == self.capacity {
            self.entries.pop_front();
        }
        self.entries.push_back(t);
    }

    /// The recorded transitions of one task, oldest first.
    pub fn story(&self, task: TaskId) -> Vec<Transition> {
        self.entries
            .iter()
            .filter(|t| t.task == task)
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
