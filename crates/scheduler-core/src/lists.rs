//! Lists that find a task's holders again: the tasks each client wants, found when it
//! leaves, and the values each worker holds, found when it leaves or retires.
//!
//! Whether a client wants a task is the task's `who_wants`, and whether a worker holds it
//! is the task's `who_has`: those are what graphs, releases and reports check and change.
//! A [`TaskList`] only finds those tasks again. A task is appended when it joins and is
//! not removed when it leaves, so the list may name tasks that left since, forgotten
//! tasks, or a task twice; a reader checks each against the task's own list. The list
//! is compacted (to exactly the tasks still in, each once) when it has grown to twice
//! its size after the last compaction plus [`SLACK`]: its length stays within twice the
//! tasks in plus that margin, and compaction costs each append a constant share on
//! average.
//!
//! A hash set per client or worker did the same with an insertion and a removal per
//! task, each a miss in a table of every task the client or worker holds: the list's
//! append is neither.

use rask_proto::{ClientId, TaskId, WorkerId};

use crate::slab::Slab;
use crate::state::Task;

/// Appends past the size after the last compaction before one is due, whatever that size.
pub(crate) const SLACK: usize = 1024;

/// Tasks of which some may have left (see the module docs); `is_in` says which are in.
#[derive(Debug, Default)]
pub(crate) struct TaskList {
    list: Vec<TaskId>,
    /// The list's length after its last compaction.
    kept: usize,
}

impl TaskList {
    /// Notes that `t` is in now (it was not before), compacting first when due.
    fn add(&mut self, t: TaskId, tasks: &Slab<Task>, is_in: impl Fn(&Task) -> bool) {
        if self.list.len() >= self.bound() {
            self.list.retain(|t| tasks.get(t).is_some_and(&is_in));
            self.list.sort_unstable();
            self.list.dedup();
            self.kept = self.list.len();
        }
        self.list.push(t);
    }

    /// The most entries the list holds before the next append compacts it.
    pub(crate) fn bound(&self) -> usize {
        2 * self.kept + SLACK
    }

    /// The tasks named, with those no longer in and repeats among them.
    pub(crate) fn iter(&self) -> impl Iterator<Item = TaskId> + '_ {
        self.list.iter().copied()
    }

    /// The tasks in, each once, in id order.
    fn current(&self, tasks: &Slab<Task>, is_in: impl Fn(&Task) -> bool) -> Vec<TaskId> {
        let mut v: Vec<TaskId> = self
            .iter()
            .filter(|t| tasks.get(t).is_some_and(&is_in))
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Entries in the list (for the invariants' check and tests).
    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }
}

/// The tasks a client may want: those whose `who_wants` names it.
#[derive(Debug, Default)]
pub(crate) struct Wants {
    pub(crate) list: TaskList,
}

impl Wants {
    /// Notes that `client` now wants `t` (it did not before).
    pub(crate) fn add(&mut self, client: ClientId, t: TaskId, tasks: &Slab<Task>) {
        self.list.add(t, tasks, |x| x.who_wants.contains(&client));
    }

    /// The tasks `client` still wants, each once, in id order.
    pub(crate) fn wanted(&self, client: ClientId, tasks: &Slab<Task>) -> Vec<TaskId> {
        self.list.current(tasks, |x| x.who_wants.contains(&client))
    }
}

/// The values a worker may hold: those whose `who_has` names it, and how many they are.
#[derive(Debug, Default)]
pub(crate) struct Held {
    pub(crate) list: TaskList,
    /// Invariant: the number of tasks whose `who_has` names the worker.
    count: usize,
}

impl Held {
    /// Notes that `worker` now holds `t` (it did not before: `who_has` gained it).
    pub(crate) fn add(&mut self, worker: WorkerId, t: TaskId, tasks: &Slab<Task>) {
        self.count += 1;
        self.list.add(t, tasks, |x| x.who_has.contains(&worker));
    }

    /// Notes that the worker no longer holds a value (`who_has` lost it).
    pub(crate) fn remove(&mut self) {
        self.count -= 1;
    }

    /// How many values the worker holds.
    pub(crate) fn count(&self) -> usize {
        self.count
    }

    /// The values `worker` holds, each once, in id order.
    pub(crate) fn current(&self, worker: WorkerId, tasks: &Slab<Task>) -> Vec<TaskId> {
        self.list.current(tasks, |x| x.who_has.contains(&worker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compaction_is_due_at_twice_the_size_kept_plus_the_margin() {
        let mut w = TaskList::default();
        assert_eq!(w.bound(), SLACK);
        w.kept = 3000;
        assert_eq!(w.bound(), 6000 + SLACK);
    }
}
