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

/// One block of a [`MapKeys`], found ([`MapKeys::block_mut`]); it stays open while held
/// (nothing is taken out through it).
pub struct BlockMut<'a, T> {
    block: &'a mut Block<T>,
    /// The [`MapKeys`]' count of values held.
    len: &'a mut usize,
}

impl<T> BlockMut<'_, T> {
    /// The value of the block's key `n`, if held.
    pub fn get_mut(&mut self, n: u64) -> Option<&mut T> {
        self.block.get_mut(n)
    }

    /// Holds `value` as the block's key `n`, which it must not hold yet; gives the value
    /// back if the key is out of the block's reach.
    pub fn insert(&mut self, n: u64, value: T) -> Result<(), T> {
        let b = &mut *self.block;
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
        *self.len += 1;
        Ok(())
    }
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

    /// The value of key `n`, if held.
    fn get_mut(&mut self, n: u64) -> Option<&mut T> {
        let i = self.index(n)?;
        self.slots.get_mut(i)?.as_mut()
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
        self.blocks[at].get_mut(n)
    }

    /// Holds `value` as key `n` of `prefix`, which it must not hold yet; gives the value
    /// back if the key is out of reach.
    pub fn insert(&mut self, prefix: &str, n: u64, value: T) -> Result<(), T> {
        match self.block_mut(prefix) {
            Some(mut b) => b.insert(n, value),
            None => Err(value),
        }
    }

    /// `prefix`'s block, found once for many keys of it (a map's chunk, its news): what
    /// [`MapKeys::get_mut`] and [`MapKeys::insert`] do, without finding the block again
    /// for each key. `None` if no block of `prefix` is open.
    pub fn block_mut(&mut self, prefix: &str) -> Option<BlockMut<'_, T>> {
        let at = self.find(prefix)?;
        Some(BlockMut {
            block: &mut self.blocks[at],
            len: &mut self.len,
        })
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
mod tests;
