//! [`ReadySet`]: the worker's ready tasks, lowest priority number first.
//!
//! The scheduler hands a worker its tasks in priority order, so most become ready past
//! every task ready already. Those go onto the end of a sorted list and leave from its
//! front, each at once, where an ordered tree costs a descent and a shuffle within a node
//! each way. Tasks that become ready out of order go to an ordered tree beside the list.
//! The list is bounded, so that taking an entry out of its middle (a task freed or
//! stolen while ready) stays cheap.

use std::collections::{BTreeSet, VecDeque};

use rask_proto::TaskId;

/// An entry: the task's priority (lower first), then its id.
pub(crate) type Entry = (u64, TaskId);

/// The longest the list of entries that arrived in order grows; later ones go to the tree.
const LIST_MAX: usize = 4096;

/// Ready tasks in order. Invariant: `list` is sorted, at most [`LIST_MAX`] long, and
/// shares no entry with `tree`.
#[derive(Debug, Default)]
pub(crate) struct ReadySet {
    list: VecDeque<Entry>,
    /// Open to the crate's tests, which break the invariant on purpose.
    pub(crate) tree: BTreeSet<Entry>,
}

impl ReadySet {
    /// Puts `e` in; `false` if it was in already.
    pub(crate) fn insert(&mut self, e: Entry) -> bool {
        let in_order = self.list.back().is_none_or(|b| *b < e);
        if in_order && self.list.len() < LIST_MAX && !self.tree.contains(&e) {
            self.list.push_back(e);
            return true;
        }
        if self.list.binary_search(&e).is_ok() {
            return false;
        }
        self.tree.insert(e)
    }

    /// Takes `e` out; `false` if it was not in.
    pub(crate) fn remove(&mut self, e: &Entry) -> bool {
        match self.list.binary_search(e) {
            Ok(at) => {
                self.list.remove(at);
                true
            }
            Err(_) => self.tree.remove(e),
        }
    }

    /// Takes the first entry out.
    pub(crate) fn pop_first(&mut self) -> Option<Entry> {
        match (self.list.front(), self.tree.first()) {
            (Some(l), Some(t)) if t < l => self.tree.pop_first(),
            (Some(_), _) => self.list.pop_front(),
            (None, _) => self.tree.pop_first(),
        }
    }

    pub(crate) fn contains(&self, e: &Entry) -> bool {
        self.list.binary_search(e).is_ok() || self.tree.contains(e)
    }

    /// Every entry, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Entry> + '_ {
        self.list.iter().chain(&self.tree)
    }

    /// Checks the invariant (for `validate`); `Err` says which part is broken.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.list.len() > LIST_MAX {
            return Err(format!("a ready list of {}", self.list.len()));
        }
        if let Some((a, b)) = self
            .list
            .iter()
            .zip(self.list.iter().skip(1))
            .find(|(a, b)| a >= b)
        {
            return Err(format!("the ready list has {a:?} before {b:?}"));
        }
        if let Some(e) = self.list.iter().find(|e| self.tree.contains(e)) {
            return Err(format!("{e:?} is in the ready list and tree both"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    fn e(p: u64) -> Entry {
        (p, TaskId(p))
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u64),
        Remove(u64),
        Pop,
        /// Past the last entry by this much (tasks arriving in order).
        Append(u64),
    }

    proptest! {
        /// The set answers as a `BTreeSet` does, whatever the order of changes.
        #[test]
        fn it_orders_as_a_btree_set(ops in prop::collection::vec(
            prop_oneof![
                (0..6000u64).prop_map(Op::Insert),
                (0..6000u64).prop_map(Op::Remove),
                Just(Op::Pop),
                (0..3u64).prop_map(Op::Append),
                (0..3u64).prop_map(Op::Append),
                (0..3u64).prop_map(Op::Append),
            ],
            0..12000,
        )) {
            let mut s = ReadySet::default();
            let mut model = BTreeSet::new();
            for op in ops {
                match op {
                    Op::Insert(p) => prop_assert_eq!(s.insert(e(p)), model.insert(e(p))),
                    Op::Remove(p) => prop_assert_eq!(s.remove(&e(p)), model.remove(&e(p))),
                    Op::Pop => prop_assert_eq!(s.pop_first(), model.pop_first()),
                    Op::Append(d) => {
                        let p = model.last().map_or(0, |l: &Entry| l.0) + d;
                        prop_assert_eq!(s.insert(e(p)), model.insert(e(p)));
                    }
                }
            }
            prop_assert_eq!(s.check(), Ok(()));
            let mut all: Vec<Entry> = s.iter().copied().collect();
            all.sort();
            prop_assert!(all.iter().eq(model.iter()));
            for p in (0..6001).step_by(7) {
                prop_assert_eq!(s.contains(&e(p)), model.contains(&e(p)));
            }
        }
    }

    /// Past its bound the list takes no more: what arrives in order then goes to the tree,
    /// and leaves in order all the same.
    #[test]
    fn past_the_bound_entries_go_to_the_tree_and_leave_in_order() {
        let mut s = ReadySet::default();
        let n = LIST_MAX as u64 + 10;
        for p in 0..n {
            assert!(s.insert(e(p)));
        }
        assert!(!s.insert(e(3)) && !s.insert(e(n - 1)), "each once");
        assert_eq!(s.list.len(), LIST_MAX);
        assert_eq!(s.tree.len(), 10);
        assert_eq!(s.check(), Ok(()));
        assert!(s.remove(&e(LIST_MAX as u64 / 2)));
        assert!(!s.contains(&e(LIST_MAX as u64 / 2)));
        let order: Vec<u64> = std::iter::from_fn(|| s.pop_first())
            .map(|(p, _)| p)
            .collect();
        let want: Vec<u64> = (0..n).filter(|p| *p != LIST_MAX as u64 / 2).collect();
        assert_eq!(order, want);
    }

    #[test]
    fn the_check_finds_an_entry_in_both_and_a_list_out_of_order() {
        let mut s = ReadySet::default();
        s.insert(e(1));
        s.tree.insert(e(1));
        assert!(s
            .check()
            .unwrap_err()
            .contains("in the ready list and tree both"));
        let mut s = ReadySet::default();
        s.list.extend([e(2), e(1)]);
        assert!(s.check().unwrap_err().contains("before"));
    }
}
