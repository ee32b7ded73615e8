//! [`ReadyQueue`]: ready tasks by priority — the queued ones and the ones no worker fits —
//! as an ordered set that costs about 16 bytes per task.
//!
//! A `BTreeSet<(priority, TaskId)>` costs some 40 bytes per entry here: tasks arrive in
//! priority order, and a B-tree filled from one end leaves its nodes about half full. This
//! set keeps its entries in sorted runs of up to [`RUN`] (deques, so taking the first
//! task costs nothing), each run in a B-tree under a key not above its first entry (the
//! entry that was first when the run was filed: taking entries from its front leaves the
//! B-tree alone). An entry that goes to the end of a full last run starts a new run
//! instead of splitting it, so a queue filled in order is dense. It only orders entries;
//! what they mean is the core's business.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound::{Excluded, Unbounded};

use rask_proto::TaskId;

/// An entry: the task's priority (lower first), then its id.
pub(crate) type Entry = (u64, TaskId);

/// The longest run.
const RUN: usize = 256;

/// Entries in order. Invariant: every run is non-empty, sorted, at most [`RUN`] long,
/// keyed by an entry not above its first, and below the next run's key.
#[derive(Debug, Default)]
pub(crate) struct ReadyQueue {
    runs: BTreeMap<Entry, VecDeque<Entry>>,
    len: usize,
}

fn new_run(e: Entry) -> VecDeque<Entry> {
    let mut run = VecDeque::with_capacity(RUN);
    run.push_back(e);
    run
}

impl ReadyQueue {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The key of the run where `e` is or would go: the last whose key is not above it,
    /// else the first run.
    fn run_of(&self, e: &Entry) -> Option<Entry> {
        self.runs
            .range(..=*e)
            .next_back()
            .or_else(|| self.runs.first_key_value())
            .map(|(k, _)| *k)
    }

    /// Puts `e` in; `false` if it was in already.
    pub(crate) fn insert(&mut self, e: Entry) -> bool {
        // Most often past every entry (a graph's tasks are queued in priority order): onto
        // the end of the last run, or a run of its own when that one is full.
        if let Some(mut last) = self.runs.last_entry() {
            let run = last.get_mut();
            if run.back().is_some_and(|b| *b < e) {
                self.len += 1;
                match run.len() < RUN {
                    true => run.push_back(e),
                    false => {
                        self.runs.insert(e, new_run(e));
                    }
                }
                return true;
            }
        }
        let Some(key) = self.run_of(&e) else {
            self.runs.insert(e, new_run(e));
            self.len += 1;
            return true;
        };
        let run = self.runs.get_mut(&key).expect("invariant: found above");
        let Err(at) = run.binary_search(&e) else {
            return false;
        };
        self.len += 1;
        if at == run.len() && run.len() == RUN {
            // Past the end of a full run: a run of its own, as a queue filled in order.
            self.runs.insert(e, new_run(e));
            return true;
        }
        run.insert(at, e);
        if run.len() > RUN {
            let tail = run.split_off(RUN / 2);
            let mut tail_run = VecDeque::with_capacity(RUN);
            tail_run.extend(tail);
            self.runs.insert(tail_run[0], tail_run);
        }
        if at == 0 {
            self.rekey(key);
        }
        true
    }

    /// Takes `e` out; `false` if it was not in.
    pub(crate) fn remove(&mut self, e: &Entry) -> bool {
        let Some((&key, run)) = self.runs.range_mut(..=*e).next_back() else {
            return false;
        };
        // Most often the first entry (the queue taken from its front).
        if run.front() == Some(e) {
            run.pop_front();
        } else {
            let Ok(at) = run.binary_search(e) else {
                return false;
            };
            run.remove(at);
        }
        self.len -= 1;
        if run.is_empty() {
            self.runs.remove(&key);
        }
        true
    }

    /// Files the run under `key` again under its first entry.
    fn rekey(&mut self, key: Entry) {
        let run = self.runs.remove(&key).expect("invariant: a run to rekey");
        self.runs.insert(run[0], run);
    }

    pub(crate) fn contains(&self, e: &Entry) -> bool {
        self.runs
            .range(..=*e)
            .next_back()
            .is_some_and(|(_, run)| run.binary_search(e).is_ok())
    }

    /// The first entry.
    pub(crate) fn first(&self) -> Option<Entry> {
        self.runs.first_key_value().map(|(_, run)| run[0])
    }

    /// The first entry above `e`.
    pub(crate) fn after(&self, e: &Entry) -> Option<Entry> {
        if let Some((_, run)) = self.runs.range(..=*e).next_back() {
            let at = run.binary_search(e).map_or_else(|i| i, |i| i + 1);
            if let Some(next) = run.get(at) {
                return Some(*next);
            }
        }
        self.runs
            .range((Excluded(*e), Unbounded))
            .next()
            .map(|(_, run)| run[0])
    }

    /// Every entry, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = Entry> + '_ {
        self.runs.values().flat_map(|run| run.iter().copied())
    }

    /// Checks the invariant (for `validate`).
    pub(crate) fn check(&self) {
        let mut last: Option<Entry> = None;
        let mut n = 0;
        for (key, run) in &self.runs {
            assert!(!run.is_empty() && run.len() <= RUN, "run of {}", run.len());
            assert!(*key <= run[0], "a run's key is not above its first entry");
            assert!(
                last.is_none_or(|l| l < *key),
                "a run's entries are below the next run's key"
            );
            for e in run {
                assert!(last.is_none_or(|l| l < *e), "entries in order");
                last = Some(*e);
            }
            n += run.len();
        }
        assert_eq!(n, self.len, "queue length");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn e(p: u64) -> Entry {
        (p, TaskId(p * 7))
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u64),
        Remove(u64),
        /// Past the last entry by this much (a queue filled in order).
        Append(u64),
    }

    proptest! {
        /// The queue answers as a `BTreeSet` does, whatever the order of changes.
        #[test]
        fn it_orders_as_a_btree_set(ops in prop::collection::vec(
            prop_oneof![
                (0..2000u64).prop_map(Op::Insert),
                (0..2000u64).prop_map(Op::Remove),
                (0..4u64).prop_map(Op::Append),
                (0..4u64).prop_map(Op::Append),
            ],
            0..3000,
        )) {
            let mut q = ReadyQueue::default();
            let mut model = BTreeSet::new();
            for op in ops {
                match op {
                    Op::Insert(p) => prop_assert_eq!(q.insert(e(p)), model.insert(e(p))),
                    Op::Remove(p) => prop_assert_eq!(q.remove(&e(p)), model.remove(&e(p))),
                    Op::Append(d) => {
                        let p = model.last().map_or(0, |l: &Entry| l.0) + d;
                        prop_assert_eq!(q.insert(e(p)), model.insert(e(p)));
                    }
                }
            }
            q.check();
            prop_assert_eq!(q.len(), model.len());
            prop_assert_eq!(q.is_empty(), model.is_empty());
            prop_assert_eq!(q.first(), model.first().copied());
            prop_assert!(q.iter().eq(model.iter().copied()));
            for p in (0..2001).step_by(13) {
                prop_assert_eq!(q.contains(&e(p)), model.contains(&e(p)));
                let next = model.range((Excluded(e(p)), Unbounded)).next().copied();
                prop_assert_eq!(q.after(&e(p)), next);
            }
        }
    }

    #[test]
    fn a_queue_filled_in_order_is_kept_in_full_runs() {
        let mut q = ReadyQueue::default();
        assert!(q.is_empty());
        for p in 0..(RUN as u64 * 4) {
            assert!(q.insert(e(p)));
        }
        assert!(!q.is_empty());
        q.check();
        assert_eq!(q.runs.len(), 4);
        assert!(q.runs.values().all(|r| r.len() == RUN));
        // Taken from the front, runs empty and go.
        for p in 0..(RUN as u64 + 1) {
            assert_eq!(q.first(), Some(e(p)));
            assert!(q.remove(&e(p)));
        }
        q.check();
        assert_eq!(q.runs.len(), 3);
        assert_eq!(q.len(), RUN * 3 - 1);
        for p in (RUN as u64 + 1)..(RUN as u64 * 4) {
            assert!(q.remove(&e(p)));
        }
        assert!(q.is_empty() && q.runs.is_empty());
        assert_eq!(q.first(), None);
    }

    #[test]
    #[should_panic(expected = "a run's key is not above its first entry")]
    fn the_check_finds_a_run_filed_under_a_key_above_its_first_entry() {
        let mut q = ReadyQueue::default();
        q.insert(e(5));
        let run = q.runs.remove(&e(5)).unwrap();
        q.runs.insert(e(6), run);
        q.check();
    }

    #[test]
    #[should_panic(expected = "a run's entries are below the next run's key")]
    fn the_check_finds_a_run_reaching_past_the_next_runs_key() {
        let mut q = ReadyQueue::default();
        q.insert(e(5));
        q.insert(e(9));
        q.runs.insert(e(7), new_run(e(8)));
        q.len += 1;
        q.check();
    }

    #[test]
    fn taking_from_the_front_leaves_a_runs_key_and_the_order_holds() {
        let mut q = ReadyQueue::default();
        for p in 0..(RUN as u64 * 2) {
            q.insert(e(p));
        }
        for p in 0..10 {
            assert!(q.remove(&e(p)));
        }
        // The first run is still filed under its first entry of before.
        assert_eq!(q.runs.first_key_value().map(|(k, _)| *k), Some(e(0)));
        assert_eq!(q.first(), Some(e(10)));
        q.check();
        // An entry below the run's key goes in front of it, and is first.
        assert!(q.insert((0, TaskId(1))));
        assert_eq!(q.first(), Some((0, TaskId(1))));
        // One between the key and the first entry too.
        assert!(q.insert(e(5)));
        assert!(q.contains(&e(5)));
        assert_eq!(q.after(&(0, TaskId(1))), Some(e(5)));
        assert_eq!(q.after(&e(5)), Some(e(10)));
        q.check();
        assert!(q.iter().eq([(0, TaskId(1)), e(5)]
            .into_iter()
            .chain((10..RUN as u64 * 2).map(e))));
    }

    #[test]
    #[should_panic(expected = "queue length")]
    fn the_check_finds_a_wrong_length() {
        let mut q = ReadyQueue::default();
        q.insert(e(5));
        q.len = 2;
        q.check();
    }

    #[test]
    fn an_entry_goes_into_its_run_while_that_has_room() {
        // Two full runs; one entry taken from inside the first leaves it room for one.
        let mut q = ReadyQueue::default();
        for p in 0..(RUN as u64) {
            q.insert(e(p * 2));
        }
        for p in 0..(RUN as u64) {
            q.insert(e(10_000 + p));
        }
        assert!(q.remove(&e(2)));
        q.check();
        assert_eq!(q.runs.len(), 2);
        // Past the end of the first run (not the last run): appended to it, not a run of
        // its own; it is full again.
        assert!(q.insert(e(RUN as u64 * 2)));
        q.check();
        assert_eq!(q.runs.len(), 2);
        assert_eq!(q.runs[&e(0)].len(), RUN);
        // Room again: an entry inside the run fills it to the brim, one run still.
        assert!(q.remove(&e(4)));
        assert!(q.insert(e(3)));
        q.check();
        assert_eq!(q.runs.len(), 2);
        assert_eq!(q.runs[&e(0)].len(), RUN);
        // One more inside the full run splits it.
        assert!(q.insert(e(5)));
        q.check();
        assert_eq!(q.runs.len(), 3);
        assert!(q.iter().eq([0, 3, 5, 6]
            .into_iter()
            .chain((4..=RUN as u64).map(|p| p * 2))
            .chain((0..RUN as u64).map(|p| 10_000 + p))
            .map(e)));
    }

    #[test]
    fn an_entry_into_a_full_run_splits_it_and_one_before_all_leads() {
        let mut q = ReadyQueue::default();
        for p in 1..=(RUN as u64) {
            q.insert(e(p * 2));
        }
        assert!(q.insert(e(3)));
        q.check();
        assert_eq!(q.runs.len(), 2);
        assert!(q.insert(e(0)));
        q.check();
        assert_eq!(q.first(), Some(e(0)));
        assert_eq!(q.after(&e(0)), Some(e(2)));
        assert_eq!(q.after(&e(1)), Some(e(2)));
        assert!(!q.insert(e(3)));
        assert!(!q.remove(&e(1)));
        assert!(q.remove(&e(0)));
        q.check();
        assert_eq!(q.first(), Some(e(2)));
        assert_eq!(q.after(&e(RUN as u64 * 2)), None);
    }
}
