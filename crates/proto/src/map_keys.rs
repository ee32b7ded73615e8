//! [`MapKeys`]: values by the keys of maps (`{prefix}-{n}`, see [`crate::msg::map_key`]),
//! kept by number in a block per prefix.
//!
//! A process holding many keys looks each up in a hash table, where a key's place is
//! unrelated to its neighbours': with hundreds of thousands of keys, nearly every look-up
//! misses the processor's caches. A map's keys come numbered in a row and are mostly
//! used in order: kept by number, a look-up reads the number from the key and indexes its
//! block, next to the last one used. The client and the scheduler keep a map's keys here
//! and any other key in their own tables.
//!
//! A block loses its front as its keys go in order. One whose live keys fall below a
//! quarter of its slots is closed, and its keys given back to the caller's table
//! ([`MapKeys::take_if`]), so that a few keys kept from a large map do not keep the
//! whole block.

use std::cell::Cell;
use std::collections::VecDeque;

use rustc_hash::FxHashMap;

/// A block of at least this many slots is closed once fewer than a quarter of them are
/// live.
pub const CLOSE_SPARSE_FROM: usize = 256;

/// A key numbered this far past a block's last slot is out of its reach.
pub const MAX_GAP: u64 = 1024;

/// Values by map key, in blocks by prefix. See the module's docs.
#[derive(Debug)]
pub struct MapKeys<T> {
    blocks: Vec<Block<T>>,
    /// Each block's place in `blocks`.
    at: FxHashMap<Box<str>, usize>,
    /// The block found last: most look-ups in a row are of one map's keys, and comparing
    /// its prefix costs less than hashing it.
    last: Cell<usize>,
    /// Values held.
    len: usize,
    /// The slots of the last block closed empty, cleared, for the next block opened: a
    /// map's block grows to the map's size slot by slot, and the next map's would grow
    /// the same way again (copying its slots at each doubling, into fresh memory).
    spare: VecDeque<Option<T>>,
}

/// The most slots a block closed empty leaves for the next one (2 MiB of them for
/// 16-byte slots).
const SPARE_SLOTS: usize = 1 << 17;

#[derive(Debug)]
struct Block<T> {
    prefix: Box<str>,
    /// The number of the key in the first slot.
    first: u64,
    /// Slots from `first` on; the front is never empty.
    slots: VecDeque<Option<T>>,
    /// Slots that hold a value.
    live: usize,
}

/// What [`MapKeys::take_if`] did with a key held.
#[derive(Debug, PartialEq, Eq)]
pub enum Taken<T> {
    /// The value stays.
    Kept,
    /// The value was taken out.
    Taken {
        /// The value.
        value: T,
        /// The keys (numbers and values) of the block, closed for being left sparse;
        /// empty if it stays (or was left empty).
        spilled: Vec<(u64, T)>,
    },
}

impl<T> Default for MapKeys<T> {
    fn default() -> Self {
        MapKeys {
            blocks: Vec::new(),
            at: FxHashMap::default(),
            last: Cell::new(0),
            len: 0,
            spare: VecDeque::new(),
        }
    }
}

impl<T> Block<T> {
    /// Whether fewer than a quarter of its slots hold a value, and it has at least
    /// [`CLOSE_SPARSE_FROM`].
    fn sparse(&self) -> bool {
        self.slots.len() >= CLOSE_SPARSE_FROM && self.live * 4 < self.slots.len()
    }

    /// The index of key `n`'s slot, if within reach (possibly past the last slot).
    fn index(&self, n: u64) -> Option<usize> {
        let i = n.checked_sub(self.first)?;
        (i <= self.slots.len() as u64 + MAX_GAP).then_some(i as usize)
    }
}

impl<T> MapKeys<T> {
    /// Values held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no value is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether no block is open (then no key is within reach).
    pub fn no_blocks(&self) -> bool {
        self.blocks.is_empty()
    }

    fn find(&self, prefix: &str) -> Option<usize> {
        let last = self.last.get();
        if self.blocks.get(last).is_some_and(|b| *b.prefix == *prefix) {
            return Some(last);
        }
        let i = *self.at.get(prefix)?;
        self.last.set(i);
        Some(i)
    }

    /// Keeps the keys of `prefix` numbered from `first` on within reach from now on,
    /// unless a block is open for `prefix` already. A block is open only while it holds
    /// something: the caller puts a value in it next, or closes it
    /// ([`MapKeys::close_if_empty`]).
    pub fn open(&mut self, prefix: &str, first: u64) {
        if self.find(prefix).is_none() {
            self.at.insert(prefix.into(), self.blocks.len());
            self.blocks.push(Block {
                prefix: prefix.into(),
                first,
                slots: std::mem::take(&mut self.spare),
                live: 0,
            });
        }
    }

    /// Closes `prefix`'s block if it holds nothing (opened, and nothing put in it).
    pub fn close_if_empty(&mut self, prefix: &str) {
        if let Some(at) = self.find(prefix) {
            if self.blocks[at].live == 0 {
                self.close(at);
            }
        }
    }

    /// The numbers `prefix`'s block holds values among, if it is open: from its first
    /// slot's on, as many as it has slots (no value held is past them).
    pub fn span(&self, prefix: &str) -> Option<(u64, usize)> {
        let b = &self.blocks[self.find(prefix)?];
        Some((b.first, b.slots.len()))
    }

    /// Whether key `n` of `prefix` is within reach of an open block (held or not).
    pub fn reaches(&self, prefix: &str, n: u64) -> bool {
        self.find(prefix)
            .is_some_and(|b| self.blocks[b].index(n).is_some())
    }

    /// The value of key `n` of `prefix`, if held.
    pub fn get(&self, prefix: &str, n: u64) -> Option<&T> {
        let b = &self.blocks[self.find(prefix)?];
        b.slots.get(b.index(n)?)?.as_ref()
    }

    /// The value of key `n` of `prefix`, if held.
    pub fn get_mut(&mut self, prefix: &str, n: u64) -> Option<&mut T> {
        let at = self.find(prefix)?;
        let b = &mut self.blocks[at];
        let i = b.index(n)?;
        b.slots.get_mut(i)?.as_mut()
    }

    /// Holds `value` as key `n` of `prefix`, which it must not hold yet; gives the value
    /// back if the key is out of reach.
    pub fn insert(&mut self, prefix: &str, n: u64, value: T) -> Result<(), T> {
        let Some(b) = self.find(prefix) else {
            return Err(value);
        };
        let b = &mut self.blocks[b];
        let Some(i) = b.index(n) else {
            return Err(value);
        };
        if b.slots.len() == i {
            // The usual case, keys put in order: one slot more.
            b.slots.push_back(Some(value));
        } else {
            if b.slots.len() < i {
                b.slots.resize_with(i + 1, || None);
            }
            debug_assert!(b.slots[i].is_none(), "a key held twice");
            b.slots[i] = Some(value);
        }
        b.live += 1;
        self.len += 1;
        Ok(())
    }

    /// Takes key `n` of `prefix`'s value, if held. A block left empty is closed.
    pub fn remove(&mut self, prefix: &str, n: u64) -> Option<T> {
        let at = self.find(prefix)?;
        let i = self.blocks[at].index(n)?;
        self.blocks[at].slots.get(i)?.as_ref()?;
        Some(self.take_at(at, i))
    }

    /// Key `n` of `prefix`'s value, if held, given to `take`, and taken out if `take`
    /// says so: the block is found once for both. `None` if the key is not held. A block
    /// left empty is closed; one left sparse (fewer than a quarter of its slots holding a
    /// value, and at least [`CLOSE_SPARSE_FROM`] slots) is closed too, its keys given back
    /// in [`Taken::Taken::spilled`] for the caller to keep elsewhere, so that a few keys
    /// kept from a large map do not keep its whole block.
    pub fn take_if(
        &mut self,
        prefix: &str,
        n: u64,
        take: impl FnOnce(&mut T) -> bool,
    ) -> Option<Taken<T>> {
        let at = self.find(prefix)?;
        let b = &mut self.blocks[at];
        let i = b.index(n)?;
        if !take(b.slots.get_mut(i)?.as_mut()?) {
            return Some(Taken::Kept);
        }
        let value = self.take_at(at, i);
        let spilled = match self.blocks.get(at) {
            // Sparse first: the prefix is compared (the block taken from may have closed,
            // another moved to its place) only for a block that may close.
            Some(b) if b.sparse() && *b.prefix == *prefix => {
                let b = self.close(at);
                self.len -= b.live;
                let first = b.first;
                (0..)
                    .zip(b.slots)
                    .filter_map(|(i, v)| v.map(|v| (first + i, v)))
                    .collect()
            }
            _ => Vec::new(),
        };
        Some(Taken::Taken { value, spilled })
    }

    /// Takes the value in slot `i` of block `at`, which holds one; closes the block if
    /// left empty.
    fn take_at(&mut self, at: usize, i: usize) -> T {
        let b = &mut self.blocks[at];
        let value = b.slots[i]
            .take()
            .expect("invariant: the slot holds a value");
        b.live -= 1;
        self.len -= 1;
        if b.live == 0 {
            let mut slots = self.close(at).slots;
            if slots.capacity() <= SPARE_SLOTS && slots.capacity() > self.spare.capacity() {
                slots.clear();
                self.spare = slots;
            }
            return value;
        }
        // Up to the first value held, whose number is at most `u64::MAX`: the front's
        // number never passes it (emptied first, a block of a map ending at `u64::MAX`
        // would count past it).
        while let Some(None) = b.slots.front() {
            b.slots.pop_front();
            b.first += 1;
        }
        value
    }

    fn close(&mut self, at: usize) -> Block<T> {
        let b = self.blocks.swap_remove(at);
        self.at.remove(&b.prefix);
        if let Some(moved) = self.blocks.get(at) {
            *self.at.get_mut(&moved.prefix).expect("invariant: listed") = at;
        }
        b
    }

    /// Every key held, as its prefix and number, with its value.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64, &T)> {
        self.blocks.iter().flat_map(|b| {
            (0..)
                .zip(&b.slots)
                .filter_map(move |(i, v)| v.as_ref().map(|v| (&*b.prefix, b.first + i, v)))
        })
    }

    /// Every value held.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.blocks
            .iter_mut()
            .flat_map(|b| b.slots.iter_mut().flatten())
    }

    /// Checks the blocks' bookkeeping (for tests and the scheduler's `validate`).
    pub fn check(&self) {
        assert_eq!(self.blocks.len(), self.at.len(), "blocks listed");
        let mut len = 0;
        for (i, b) in self.blocks.iter().enumerate() {
            let p = &b.prefix;
            assert_eq!(self.at.get(p), Some(&i), "block {p}'s place");
            let live = b.slots.iter().flatten().count();
            assert_eq!(b.live, live, "live keys of block {p}");
            assert!(live > 0, "block {p} empty");
            assert!(
                b.slots.front().is_some_and(Option::is_some),
                "block {p}'s front"
            );
            len += live;
        }
        assert_eq!(self.len, len, "keys held in blocks");
        assert!(self.spare.is_empty(), "the spare slots hold nothing");
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::RngExt;
    use proptest::test_runner::{RngAlgorithm, TestRng};

    use super::*;

    /// A block's span: its first number and its slots, past which it holds nothing; none
    /// for a prefix with no block.
    #[test]
    fn a_blocks_span_is_its_first_number_and_its_slots() {
        let mut b = MapKeys::default();
        assert_eq!(b.span("a"), None);
        b.open("a", 7);
        assert_eq!(b.span("a"), Some((7, 0)));
        b.insert("a", 7, 1).unwrap();
        b.insert("a", 9, 2).unwrap();
        assert_eq!(b.span("a"), Some((7, 3)));
        assert_eq!(b.span("b"), None);
        // The front taken: the block starts at the next value held.
        assert_eq!(b.remove("a", 7), Some(1));
        assert_eq!(b.span("a"), Some((9, 1)));
    }

    /// Keys held and taken at random, in blocks opened, emptied and closed for sparseness,
    /// answer as a plain map does (keys out of reach stay in the plain map, as a caller's
    /// table would keep them).
    #[test]
    fn map_keys_answer_as_a_plain_map_with_a_table_beside() {
        let mut blocks = MapKeys::default();
        let mut table: std::collections::HashMap<(String, u64), u64> = Default::default();
        let mut model: std::collections::HashMap<(String, u64), u64> = Default::default();
        let mut rng = TestRng::deterministic_rng(RngAlgorithm::ChaCha);
        let mut rand = move |n: u64| rng.random_range(0..n);
        let prefixes = ["a", "b", "c-1", ""];
        for step in 0..50_000u64 {
            let p = prefixes[rand(4) as usize];
            let n = match rand(3) {
                0 => rand(3000),
                _ => 100 + rand(400),
            };
            let key = (p.to_string(), n);
            match rand(5) {
                0 => {
                    blocks.open(p, n);
                    if !model.contains_key(&key) && blocks.insert(p, n, step).is_ok() {
                        model.insert(key, step);
                    }
                    blocks.close_if_empty(p);
                }
                1 | 2 if !model.contains_key(&key) => {
                    if let Err(v) = blocks.insert(p, n, step) {
                        assert!(!blocks.reaches(p, n), "{p}-{n} refused within reach");
                        table.insert(key.clone(), v);
                    }
                    model.insert(key, step);
                }
                3 => {
                    // Taken only if it is the value the model holds (always, when held).
                    let want = model.get(&key).copied();
                    let got = match blocks.take_if(p, n, |v| Some(*v) == want) {
                        None => table.remove(&key),
                        Some(Taken::Kept) => panic!("{p}-{n} kept at step {step}"),
                        Some(Taken::Taken { value, spilled }) => {
                            for (m, v) in spilled {
                                assert!(m != n, "{p}-{n} spilled after it was taken");
                                table.insert((p.to_string(), m), v);
                            }
                            Some(value)
                        }
                    };
                    assert_eq!(got, model.remove(&key), "{p}-{n} at step {step}");
                }
                _ => {
                    // Looked at, not taken: everything stays.
                    let seen = blocks.take_if(p, n, |v| {
                        assert_eq!(Some(&*v), model.get(&key), "{p}-{n} at step {step}");
                        false
                    });
                    match seen {
                        None => assert_eq!(table.get(&key), model.get(&key)),
                        Some(t) => assert_eq!(t, Taken::Kept),
                    }
                }
            }
            blocks.check();
            assert_eq!(blocks.len() + table.len(), model.len(), "step {step}");
            assert_eq!(blocks.is_empty(), model.len() == table.len());
        }
        for ((p, n), v) in &model {
            let got = blocks.get(p, *n).or_else(|| table.get(&(p.clone(), *n)));
            assert_eq!(got, Some(v), "{p}-{n}");
        }
        let mut listed: Vec<(String, u64, u64)> = blocks
            .iter()
            .map(|(p, n, v)| (p.to_string(), n, *v))
            .chain(table.iter().map(|((p, n), v)| (p.clone(), *n, *v)))
            .collect();
        listed.sort();
        let mut want: Vec<(String, u64, u64)> = model
            .iter()
            .map(|((p, n), v)| (p.clone(), *n, *v))
            .collect();
        want.sort();
        assert_eq!(listed, want);
        assert_eq!(blocks.values_mut().count(), blocks.len());
    }

    /// A map whose last key is numbered `u64::MAX`: taken in order, in any order, or
    /// looked at and kept, no count passes the largest number.
    #[test]
    fn keys_up_to_the_largest_number_are_taken_without_overflow() {
        let first = u64::MAX - 9;
        for order in [
            (first..=u64::MAX).collect::<Vec<_>>(),
            (first..=u64::MAX).rev().collect(),
            vec![
                u64::MAX,
                first,
                u64::MAX - 1,
                first + 1,
                first + 5,
                first + 2,
                first + 3,
            ]
            .into_iter()
            .chain([first + 4, first + 6, first + 7])
            .collect(),
        ] {
            let mut b = MapKeys::default();
            b.open("p", first);
            for n in first..=u64::MAX {
                b.insert("p", n, n).unwrap();
            }
            for (i, &n) in order.iter().enumerate() {
                assert_eq!(b.take_if("p", n, |_| false), Some(Taken::Kept));
                let taken = if i % 2 == 0 {
                    b.remove("p", n)
                } else {
                    match b.take_if("p", n, |v| *v == n) {
                        Some(Taken::Taken { value, spilled }) => {
                            assert!(spilled.is_empty());
                            Some(value)
                        }
                        other => panic!("{n}: {other:?}"),
                    }
                };
                assert_eq!(taken, Some(n));
                b.check();
            }
            assert!(b.no_blocks() && b.is_empty(), "{order:?}");
        }
    }

    /// A block of at least [`CLOSE_SPARSE_FROM`] slots is sparse with fewer than a
    /// quarter of them live, not with a quarter exactly; a smaller one never is.
    /// A block closed empty leaves its room, cleared, to the next block opened, unless it
    /// is larger than [`SPARE_SLOTS`].
    #[test]
    fn a_block_closed_empty_leaves_its_room_to_the_next() {
        let mut b = MapKeys::default();
        for (p, n) in [
            ("a", 1000),
            ("b", 10),
            ("c", SPARE_SLOTS as u64 + 1),
            ("d", 1),
        ] {
            b.open(p, 0);
            let room = b.blocks[0].slots.capacity();
            (0..n).for_each(|i| b.insert(p, i, i).unwrap());
            match p {
                "a" => assert_eq!(room, 0, "nothing closed before"),
                "b" | "c" => assert!(room >= 1000, "{p}: room left by a: {room}"),
                _ => assert_eq!(room, 0, "c's room is not kept, and took a's"),
            }
            b.check();
            assert_eq!(b.get(p, n - 1), Some(&(n - 1)));
            assert_eq!(b.get(p, n), None, "{p}: a slot past those put in");
            (0..n).for_each(|i| assert_eq!(b.remove(p, i), Some(i)));
            assert!(b.no_blocks());
        }
    }

    #[test]
    fn a_block_is_sparse_below_a_quarter_of_its_slots() {
        let block = |slots: usize, live: usize| Block {
            prefix: "p".into(),
            first: 0,
            slots: (0..slots).map(|i| (i < live).then_some(i)).collect(),
            live,
        };
        let n = CLOSE_SPARSE_FROM;
        assert!(!block(n, n / 4).sparse());
        assert!(block(n, n / 4 - 1).sparse());
        assert!(block(4 * n, n - 1).sparse() && !block(4 * n, n).sparse());
        assert!(!block(n - 1, 0).sparse());
        assert!(!block(n, n).sparse());
    }

    #[test]
    fn a_block_loses_its_front_and_closes_when_sparse_or_empty() {
        let mut b = MapKeys::default();
        assert!(b.no_blocks());
        b.open("p", 10);
        assert!(!b.no_blocks());
        assert!(b.reaches("p", 10) && b.reaches("p", 10 + MAX_GAP));
        assert!(!b.reaches("p", 9) && !b.reaches("p", 11 + MAX_GAP) && !b.reaches("q", 10));
        for n in 10..1010 {
            b.insert("p", n, n).unwrap();
        }
        assert_eq!(b.insert("p", 9, 9), Err(9));
        assert_eq!(b.insert("q", 10, 10), Err(10));
        // Taken in order: the front goes.
        for n in 10..510 {
            let taken = b.take_if("p", n, |v| *v == n);
            assert_eq!(
                taken,
                Some(Taken::Taken {
                    value: n,
                    spilled: vec![]
                })
            );
        }
        assert_eq!((b.blocks[0].first, b.blocks[0].slots.len()), (510, 500));
        assert_eq!(b.remove("p", 300), None);
        // All but every eighth: closed once fewer than a quarter of its slots are live,
        // its keys given back (and taken from there after).
        let mut moved = std::collections::BTreeMap::new();
        for n in (510..1010).filter(|n| n % 8 != 0) {
            let got = match b.take_if("p", n, |_| true) {
                Some(Taken::Taken { value, spilled }) => {
                    if !spilled.is_empty() {
                        // Closed once, giving back every key still held.
                        assert!(moved.is_empty(), "closed twice");
                        let held = |m: u64| m.is_multiple_of(8) || m > n;
                        assert!(spilled.iter().all(|(m, v)| m == v && held(*m)));
                        assert_eq!(spilled.len(), (510..1010).filter(|m| held(*m)).count());
                    }
                    moved.extend(spilled);
                    Some(value)
                }
                Some(Taken::Kept) => unreachable!(),
                None => moved.remove(&n),
            };
            assert_eq!(got, Some(n));
        }
        assert!(b.no_blocks());
        assert_eq!(b.len(), 0);
        let want: Vec<u64> = (510..1010).filter(|n| n % 8 == 0).collect();
        assert_eq!(moved.keys().copied().collect::<Vec<_>>(), want);
        // Opened and left empty, or emptied: closed.
        b.open("r", 0);
        b.close_if_empty("r");
        assert!(b.no_blocks());
        b.open("r", 0);
        b.insert("r", 0, 0).unwrap();
        assert_eq!(b.remove("r", 0), Some(0));
        assert!(b.no_blocks());
        // The last block found is compared first; a block moved by another's closing is
        // still found.
        for p in ["x", "y", "z"] {
            b.open(p, 0);
            b.insert(p, 0, 1).unwrap();
        }
        assert_eq!(b.remove("x", 0), Some(1));
        assert_eq!(b.get("z", 0), Some(&1));
        assert_eq!(b.get("y", 0), Some(&1));
        *b.get_mut("z", 0).unwrap() = 2;
        assert_eq!(b.get("z", 0), Some(&2));
        b.check();
    }
}
