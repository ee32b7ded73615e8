//! What each client wants, found again when it leaves.
//!
//! Whether a client wants a task is the task's `who_wants`: that is what a graph's wanted
//! keys and a release check and change. A client's [`Wants`] only finds those tasks when
//! the client leaves. A task is appended when the client comes to want it and is not
//! removed when released, so the list may name tasks released since, forgotten, or
//! twice; leaving checks each against `who_wants`. The list is compacted (to exactly the
//! tasks still wanted, each once) when it has grown to twice its size after the last
//! compaction plus [`SLACK`]: its length stays within twice what the client wants plus
//! that margin, and compaction costs each append a constant share on average.
//!
//! A hash set per client did the same with an insertion and a removal per task, each a
//! miss in a table of every task the client holds: the list's append is neither.

use rask_proto::{ClientId, TaskId};

use crate::slab::Slab;
use crate::state::Task;

/// Appends past the size after the last compaction before one is due, whatever that size.
pub(crate) const SLACK: usize = 1024;

/// The tasks a client may want (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Wants {
    list: Vec<TaskId>,
    /// The list's length after its last compaction.
    kept: usize,
}

impl Wants {
    /// Notes that the client now wants `t` (it did not before), compacting first when due.
    pub(crate) fn add(&mut self, client: ClientId, t: TaskId, tasks: &Slab<Task>) {
        if self.list.len() >= self.bound() {
            self.compact(client, tasks);
        }
        self.list.push(t);
    }

    /// The most entries the list holds before the next append compacts it.
    pub(crate) fn bound(&self) -> usize {
        2 * self.kept + SLACK
    }

    /// Keeps exactly the tasks `client` still wants, each once, in id order.
    fn compact(&mut self, client: ClientId, tasks: &Slab<Task>) {
        self.list
            .retain(|t| tasks.get(t).is_some_and(|x| x.who_wants.contains(&client)));
        self.list.sort_unstable();
        self.list.dedup();
        self.kept = self.list.len();
    }

    /// The tasks named, with those no longer wanted and repeats among them.
    pub(crate) fn iter(&self) -> impl Iterator<Item = TaskId> + '_ {
        self.list.iter().copied()
    }

    /// The tasks `client` still wants, each once, in id order.
    pub(crate) fn wanted(&self, client: ClientId, tasks: &Slab<Task>) -> Vec<TaskId> {
        let mut v: Vec<TaskId> = self
            .iter()
            .filter(|t| tasks.get(t).is_some_and(|x| x.who_wants.contains(&client)))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compaction_is_due_at_twice_the_size_kept_plus_the_margin() {
        let mut w = Wants::default();
        assert_eq!(w.bound(), SLACK);
        w.kept = 3000;
        assert_eq!(w.bound(), 6000 + SLACK);
    }
}
