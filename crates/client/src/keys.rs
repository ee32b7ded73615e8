//! The keys a client holds, each with its entry. A map's keys (`{prefix}-{n}`, numbered in
//! a row) are kept in a block of their own, by number: a look-up reads the number and
//! indexes the block, and the keys of a map, used mostly in order, sit side by side. Any
//! other key is in a hash table, where a key's place is unrelated to its neighbours' and
//! each look-up of a large table is a miss of the processor's caches.
//!
//! A key is in one place only: a block's slot if it has one there, else the table. A
//! block whose live keys fall below a quarter of its slots gives them to the table, so
//! that a few futures kept from a large map do not keep the whole block.

use std::collections::VecDeque;
use std::sync::Arc;

use rustc_hash::FxHashMap as HashMap;

use crate::state::{KeyEntry, Status};

/// A block of at least this many slots gives its keys to the table once fewer than a
/// quarter of them are held.
const COMPACT_FROM: usize = 256;

/// A key numbered this far past a block's last slot goes to the table instead.
const MAX_GAP: u64 = 1024;

#[derive(Default)]
pub(crate) struct Keys {
    table: HashMap<Arc<str>, KeyEntry>,
    /// Maps' blocks, by the keys' common part.
    blocks: HashMap<Box<str>, Block>,
    /// Keys held in blocks.
    in_blocks: usize,
}

struct Block {
    /// The number of the key in the first slot.
    first: u64,
    /// Slots from `first` on; the front is never empty (released keys at the front go,
    /// and `first` moves past them: a map's futures are mostly dropped in order).
    slots: VecDeque<Option<KeyEntry>>,
    /// Slots that hold a key.
    live: usize,
}

/// `{prefix}-{n}` split, where `n` is written as `format!` writes a `u64` (so that one
/// number has one key).
fn split(key: &str) -> Option<(&str, u64)> {
    let b = key.as_bytes();
    let mut i = b.len();
    while i > 0 && b[i - 1].is_ascii_digit() {
        i -= 1;
    }
    let digits = &b[i..];
    if i == 0 || b[i - 1] != b'-' || digits.is_empty() || (digits[0] == b'0' && digits.len() > 1) {
        return None;
    }
    let mut n = 0u64;
    for &d in digits {
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some((&key[..i - 1], n))
}

impl Keys {
    /// Keys held.
    pub(crate) fn len(&self) -> usize {
        self.table.len() + self.in_blocks
    }

    /// Keeps the keys `{prefix}-{first}`, `{prefix}-{first + 1}`, … in a block from now
    /// on, unless one is open for `prefix` already (a map's, whose common part no key held
    /// yet has: its chunks open it in turn).
    pub(crate) fn open_block(&mut self, prefix: &str, first: u64) {
        if !self.blocks.contains_key(prefix) {
            let slots = VecDeque::new();
            let block = Block {
                first,
                slots,
                live: 0,
            };
            self.blocks.insert(prefix.into(), block);
        }
    }

    /// Where `key`'s slot is (or would be) in a block: the block's prefix and the slot's
    /// index, at most [`MAX_GAP`] past the last slot.
    fn place<'k>(&self, key: &'k str) -> Option<(&'k str, usize)> {
        if self.blocks.is_empty() {
            return None;
        }
        let (prefix, n) = split(key)?;
        let b = self.blocks.get(prefix)?;
        let i = n.checked_sub(b.first)?;
        (i <= b.slots.len() as u64 + MAX_GAP).then_some((prefix, i as usize))
    }

    /// `key`'s entry, if held.
    pub(crate) fn get(&self, key: &str) -> Option<&KeyEntry> {
        if let Some((prefix, i)) = self.place(key) {
            if let Some(Some(e)) = self.blocks[prefix].slots.get(i) {
                return Some(e);
            }
        }
        self.table.get(key)
    }

    /// `key`'s entry, if held.
    pub(crate) fn get_mut(&mut self, key: &str) -> Option<&mut KeyEntry> {
        if let Some((prefix, i)) = self.place(key) {
            let b = self.blocks.get_mut(prefix).expect("invariant: just placed");
            if let Some(Some(e)) = b.slots.get_mut(i) {
                return Some(e);
            }
        }
        self.table.get_mut(key)
    }

    /// Room for `keys`, where the first of them goes.
    pub(crate) fn reserve(&mut self, keys: &[Arc<str>]) {
        let Some(first) = keys.first() else {
            return;
        };
        match self.place(first) {
            Some((prefix, _)) => {
                let b = self.blocks.get_mut(prefix).expect("invariant: just placed");
                b.slots.reserve(keys.len());
            }
            None => self.table.reserve(keys.len()),
        }
    }

    /// One handle more on `key`, whose entry is made (pending) if it was not held.
    pub(crate) fn hold(&mut self, key: &Arc<str>) {
        let new = || KeyEntry {
            refs: 1,
            waited: false,
            status: Status::Pending,
        };
        if let Some((prefix, i)) = self.place(key) {
            let b = self.blocks.get_mut(prefix).expect("invariant: just placed");
            match b.slots.get_mut(i) {
                Some(Some(e)) => {
                    e.refs += 1;
                    return;
                }
                // Held before its block opened: in the table.
                _ if !self.table.is_empty() && self.table.contains_key(&**key) => {}
                slot => {
                    match slot {
                        Some(empty) => *empty = Some(new()),
                        None => {
                            b.slots.resize_with(i, || None);
                            b.slots.push_back(Some(new()));
                        }
                    }
                    b.live += 1;
                    self.in_blocks += 1;
                    return;
                }
            }
        }
        self.table
            .entry(key.clone())
            .and_modify(|e| e.refs += 1)
            .or_insert_with(new);
    }

    /// One handle fewer on `key`: its entry, taken out, if that was the last.
    pub(crate) fn release(&mut self, key: &str) -> Option<KeyEntry> {
        if let Some((prefix, i)) = self.place(key) {
            let b = self.blocks.get_mut(prefix).expect("invariant: just placed");
            if let Some(Some(e)) = b.slots.get_mut(i) {
                e.refs -= 1;
                if e.refs > 0 {
                    return None;
                }
                let e = b.slots[i].take();
                b.live -= 1;
                self.in_blocks -= 1;
                while let Some(None) = b.slots.front() {
                    b.slots.pop_front();
                    b.first += 1;
                }
                if b.live == 0 {
                    self.blocks.remove(prefix);
                } else if b.slots.len() >= COMPACT_FROM && b.live * 4 < b.slots.len() {
                    self.compact(prefix);
                }
                return e;
            }
        }
        let e = self.table.get_mut(key)?;
        e.refs -= 1;
        if e.refs > 0 {
            return None;
        }
        self.table.remove(key)
    }

    /// Gives a block's keys to the table, and closes the block.
    fn compact(&mut self, prefix: &str) {
        let Some(b) = self.blocks.remove(prefix) else {
            return;
        };
        self.in_blocks -= b.live;
        self.table.reserve(b.live);
        for (i, e) in b.slots.into_iter().enumerate() {
            if let Some(e) = e {
                let name = format!("{prefix}-{}", b.first + i as u64);
                self.table.insert(name.into(), e);
            }
        }
    }

    /// Every entry.
    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut KeyEntry> {
        let blocks = self.blocks.values_mut();
        let in_blocks = blocks.flat_map(|b| b.slots.iter_mut().flatten());
        self.table.values_mut().chain(in_blocks)
    }

    /// Every key's name.
    pub(crate) fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.table.keys().map(|k| k.to_string()).collect();
        for (prefix, b) in &self.blocks {
            for (i, e) in b.slots.iter().enumerate() {
                if e.is_some() {
                    names.push(format!("{prefix}-{}", b.first + i as u64));
                }
            }
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Arc<str> {
        s.into()
    }

    #[test]
    fn only_numbers_as_format_writes_them_split() {
        assert_eq!(split("inc-1-2-30"), Some(("inc-1-2", 30)));
        assert_eq!(split("a-0"), Some(("a", 0)));
        assert_eq!(split("a--1"), Some(("a-", 1)));
        assert_eq!(split("a-18446744073709551615"), Some(("a", u64::MAX)));
        for bad in ["a-", "a-01", "a-1x", "a-+1", "a", "a-18446744073709551616"] {
            assert_eq!(split(bad), None, "{bad}");
        }
    }

    /// Keys held and released at random, in blocks and out, answer as a plain table of
    /// counts does, whatever the order; blocks close when empty or sparse.
    #[test]
    fn keys_answer_as_a_table_of_counts() {
        let mut keys = Keys::default();
        let mut model: std::collections::HashMap<String, u32> = Default::default();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rand = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        keys.open_block("m-1", 0);
        keys.open_block("m-2", 100);
        for step in 0..20_000 {
            let name = match rand(4) {
                0 => format!("m-1-{}", rand(600)),
                1 => format!("m-2-{}", 100 + rand(300)),
                2 => format!("m-2-{}", rand(2000)),
                _ => format!("other-{}", rand(50)),
            };
            let k = key(&name);
            if rand(3) == 0 && model.contains_key(&name) {
                let left = model.get_mut(&name).unwrap();
                *left -= 1;
                let gone = keys.release(&k);
                assert_eq!(gone.is_some(), *left == 0, "{name} at step {step}");
                if *left == 0 {
                    model.remove(&name);
                }
            } else {
                keys.hold(&k);
                *model.entry(name).or_default() += 1;
            }
            assert_eq!(keys.len(), model.len(), "step {step}");
        }
        for (name, refs) in &model {
            assert_eq!(keys.get(name).map(|e| e.refs), Some(*refs), "{name}");
        }
        let mut names = keys.names();
        names.sort();
        let mut want: Vec<String> = model.keys().cloned().collect();
        want.sort();
        assert_eq!(names, want);
        assert_eq!(keys.values_mut().count(), model.len());
        assert!(keys.get("m-1-100000").is_none());
        assert!(keys.get("never").is_none());
    }

    #[test]
    fn a_map_key_lives_in_its_block_and_a_sparse_block_moves_to_the_table() {
        let mut keys = Keys::default();
        keys.open_block("p", 10);
        let names: Vec<Arc<str>> = (10..1010).map(|n| key(&format!("p-{n}"))).collect();
        keys.reserve(&names);
        for k in &names {
            keys.hold(k);
        }
        assert_eq!((keys.in_blocks, keys.table.len()), (1000, 0));
        // Released in order: the block loses its front.
        for k in &names[..500] {
            assert!(keys.release(k).is_some());
        }
        assert_eq!((keys.in_blocks, keys.table.len()), (500, 0));
        assert_eq!(
            (keys.blocks["p"].first, keys.blocks["p"].slots.len()),
            (510, 500)
        );
        // Released but every eighth: fewer than a quarter held, the rest go to the table
        // under their names.
        for (k, n) in names[500..].iter().zip(510..) {
            if n % 8 != 0 {
                assert!(keys.release(k).is_some());
            }
        }
        assert_eq!((keys.in_blocks, keys.table.len()), (0, 63));
        assert!(keys.blocks.is_empty());
        assert_eq!(keys.get("p-1008").map(|e| e.refs), Some(1));
        assert!(keys.get("p-1009").is_none());
        // A key held twice goes with its second release.
        keys.hold(&names[998]);
        assert!(keys.release(&names[998]).is_none());
        assert!(keys.release(&names[998]).is_some());
        assert_eq!(keys.len(), 62);
    }

    #[test]
    fn a_key_held_before_its_block_opened_stays_where_it_is() {
        let mut keys = Keys::default();
        let k = key("q-3");
        keys.hold(&k);
        keys.open_block("q", 0);
        keys.hold(&k);
        assert_eq!(keys.table.get("q-3").map(|e| e.refs), Some(2));
        assert_eq!(keys.in_blocks, 0);
        let others: Vec<Arc<str>> = (0..3).map(|n| key(&format!("q-{n}"))).collect();
        for o in &others {
            keys.hold(o);
        }
        assert_eq!(keys.in_blocks, 3);
        assert!(keys.release(&k).is_none());
        assert!(keys.release(&k).is_some());
        assert_eq!(keys.len(), 3);
    }
}
