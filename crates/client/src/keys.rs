//! The keys a client holds, each with its entry: a map's keys by number
//! ([`MapKeys`]: a look-up of a large hash table misses the processor's caches, and a
//! map's keys, used mostly in order, sit side by side there), any other key in a hash
//! table. A key is in one place only: its block's slot, or the table (a key held before
//! its map's block opened stays in the table).

use std::sync::Arc;

use rask_proto::map_keys::{BlockMut, MapKeys, Taken};
use rask_proto::msg::{map_key, split_map_key as split};
use rustc_hash::FxHashMap as HashMap;

use crate::state::KeyEntry;

/// A key's entry taken out, with its prefix and number if of a map's form.
pub(crate) type Released<'k> = (KeyEntry, Option<(&'k str, u64)>);

#[derive(Default)]
pub(crate) struct Keys {
    table: HashMap<Arc<str>, KeyEntry>,
    /// Maps' keys, by number.
    blocks: MapKeys<KeyEntry>,
}

impl Keys {
    /// Keys held.
    pub(crate) fn len(&self) -> usize {
        self.table.len() + self.blocks.len()
    }

    /// Where `key` is kept if it is a map's key within reach of a block.
    fn numbered<'k>(&self, key: &'k str) -> Option<(&'k str, u64)> {
        if self.blocks.no_blocks() {
            return None;
        }
        split(key)
    }

    /// Where `key` is kept if it is a map's key within reach of a block; `number`: the
    /// key's number, if known to be `{prefix}-{number}` (not read from the text).
    fn place<'k>(&self, key: &'k str, number: Option<u64>) -> Option<(&'k str, u64)> {
        match number {
            Some(n) if !self.blocks.no_blocks() => Some((map_prefix(key, n), n)),
            _ => self.numbered(key),
        }
    }

    /// `key`'s entry, if held.
    pub(crate) fn get(&self, key: &str) -> Option<&KeyEntry> {
        self.get_at(key, None)
    }

    /// `key`'s entry, if held; `number` as for [`Keys::release`].
    pub(crate) fn get_at(&self, key: &str, number: Option<u64>) -> Option<&KeyEntry> {
        if let Some((prefix, n)) = self.place(key, number) {
            if let Some(e) = self.blocks.get(prefix, n) {
                return Some(e);
            }
        }
        self.table.get(key)
    }

    /// `key`'s entry, if held.
    pub(crate) fn get_mut(&mut self, key: &str) -> Option<&mut KeyEntry> {
        if let Some((prefix, n)) = self.numbered(key) {
            if let Some(e) = self.blocks.get_mut(prefix, n) {
                return Some(e);
            }
        }
        self.table.get_mut(key)
    }

    /// Gives `f` the entry of each key `{prefix}-{n}` named in `items` that is held, with
    /// its item (a key's text written out only if no block holds it; the block found
    /// once for all).
    pub(crate) fn each_numbered<X>(
        &mut self,
        prefix: &str,
        items: impl IntoIterator<Item = (u64, X)>,
        mut f: impl FnMut(X, &mut KeyEntry),
    ) {
        let mut block = self.blocks.block_mut(prefix);
        for (n, x) in items {
            let e = match block.as_mut().and_then(|b| b.get_mut(n)) {
                Some(e) => Some(e),
                None if self.table.is_empty() => None,
                None => self.table.get_mut(map_key(prefix, n).as_str()),
            };
            if let Some(e) = e {
                f(x, e);
            }
        }
    }

    /// Room for `n` more keys in the table.
    pub(crate) fn reserve(&mut self, n: usize) {
        self.table.reserve(n);
    }

    /// One handle more on `key`, whose entry is made (pending) if it was not held.
    pub(crate) fn hold(&mut self, key: &Arc<str>) {
        let numbered = self.numbered(key);
        self.hold_at(key, numbered);
    }

    /// [`Keys::hold`], `key` being `{prefix}-{n}` of `numbered` if that is given (split
    /// once, by the caller).
    fn hold_at(&mut self, key: &Arc<str>, numbered: Option<(&str, u64)>) {
        let (mut block, n) = match numbered {
            Some((prefix, n)) => (self.blocks.block_mut(prefix), n),
            None => (None, 0),
        };
        hold_in(&mut self.table, block.as_mut(), key, n);
    }

    /// One handle each on a map's keys `keys`, numbered from `first` (its new keys kept
    /// in its block, opened if it is not).
    pub(crate) fn hold_map(&mut self, prefix: &str, first: u64, keys: &[Arc<str>]) {
        self.blocks.open(prefix, first);
        // The block found once for all.
        let mut block = self.blocks.block_mut(prefix);
        for (n, key) in (first..).zip(keys) {
            hold_in(&mut self.table, block.as_mut(), key, n);
        }
        // Every key held before (in the table): the block holds nothing.
        self.blocks.close_if_empty(prefix);
    }

    /// One handle fewer on `key`: its entry, taken out, if that was the last, with the
    /// key's prefix and number if it has a map's form and a block may hold it. `number`:
    /// the key's number, if known to be `{prefix}-{number}` (not read from the text).
    pub(crate) fn release<'k>(
        &mut self,
        key: &'k str,
        number: Option<u64>,
    ) -> Option<Released<'k>> {
        let numbered = self.place(key, number);
        if let Some((prefix, n)) = numbered {
            let last = |e: &mut KeyEntry| {
                e.refs -= 1;
                e.refs == 0
            };
            match self.blocks.take_if(prefix, n, last) {
                Some(Taken::Kept) => return None,
                Some(Taken::Taken { value, spilled }) => {
                    // A block left sparse: its keys go to the table.
                    for (n, e) in spilled {
                        self.table.insert(map_key(prefix, n).into(), e);
                    }
                    return Some((value, numbered));
                }
                None => {}
            }
        }
        let e = self.table.get_mut(key)?;
        e.refs -= 1;
        if e.refs > 0 {
            return None;
        }
        self.table.remove(key).map(|e| (e, numbered))
    }

    /// Every entry.
    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut KeyEntry> {
        self.table.values_mut().chain(self.blocks.values_mut())
    }

    /// Every key's name.
    pub(crate) fn names(&self) -> Vec<String> {
        let table = self.table.keys().map(|k| k.to_string());
        let blocks = self.blocks.iter().map(|(p, n, _)| map_key(p, n));
        table.chain(blocks).collect()
    }
}

/// One handle more on `key`, whose entry is made (pending) if it was not held: in
/// `block` as its key `n`, if a block is given and reaches it, else in `table`. The table
/// (where a key held before its map's block opened stays) is looked at only if it holds
/// some key.
fn hold_in(
    table: &mut HashMap<Arc<str>, KeyEntry>,
    mut block: Option<&mut BlockMut<'_, KeyEntry>>,
    key: &Arc<str>,
    n: u64,
) {
    let held = match block.as_mut().and_then(|b| b.get_mut(n)) {
        Some(e) => Some(e),
        None if table.is_empty() => None,
        None => table.get_mut(&**key),
    };
    if let Some(e) = held {
        e.refs += 1;
        return;
    }
    let entry = match block {
        Some(b) => match b.insert(n, KeyEntry::new()) {
            Ok(()) => return,
            Err(entry) => entry,
        },
        None => KeyEntry::new(),
    };
    table.insert(key.clone(), entry);
}

/// The prefix of `key`, which is `{prefix}-{n}` as [`map_key`] writes it.
fn map_prefix(key: &str, n: u64) -> &str {
    let digits = n.checked_ilog10().map_or(1, |d| d as usize + 1);
    let prefix = &key[..key.len() - digits - 1];
    debug_assert_eq!(split(key), Some((prefix, n)), "a map key's number");
    prefix
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Arc<str> {
        s.into()
    }

    /// Keys held and released at random, maps' and others', answer as a plain table of
    /// counts does, whatever the order.
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
        for step in 0..20_000 {
            if rand(50) == 0 {
                // A map's chunk: some of its keys may be held already.
                let (prefix, first) = (["m-1", "m-2"][rand(2) as usize], rand(600));
                let names: Vec<Arc<str>> = (first..first + 1 + rand(100))
                    .map(|n| key(&map_key(prefix, n)))
                    .collect();
                keys.hold_map(prefix, first, &names);
                for n in &names {
                    *model.entry(n.to_string()).or_default() += 1;
                }
                continue;
            }
            let name = match rand(3) {
                0 => format!("m-1-{}", rand(600)),
                1 => format!("m-2-{}", rand(2000)),
                _ => format!("other-{}", rand(50)),
            };
            if rand(2) == 0 {
                if let Some(left) = model.get_mut(&name) {
                    *left -= 1;
                    // Released by name, or with its number known (as a map's future
                    // releases its key).
                    let number = split(&name).filter(|_| rand(2) == 0).map(|(_, n)| n);
                    let gone = keys.release(&name, number);
                    assert_eq!(gone.is_some(), *left == 0, "{name} at step {step}");
                    if *left == 0 {
                        model.remove(&name);
                    }
                }
            } else {
                keys.hold(&key(&name));
                *model.entry(name).or_default() += 1;
            }
            assert_eq!(keys.len(), model.len(), "step {step}");
        }
        for (name, refs) in &model {
            assert_eq!(keys.get(name).map(|e| e.refs), Some(*refs), "{name}");
            assert_eq!(keys.get_mut(name).map(|e| e.refs), Some(*refs), "{name}");
            // Found by its number too, if it has a map key's form.
            if let Some((p, n)) = split(name).filter(|(p, n)| map_key(p, *n) == *name) {
                let by_number = keys.get_at(name, Some(n)).map(|e| e.refs);
                assert_eq!(by_number, Some(*refs), "{name} as {p} {n}");
            }
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
    fn a_map_key_held_before_its_block_opened_stays_in_the_table() {
        let mut keys = Keys::default();
        let k = key("q-3");
        keys.hold(&k);
        let names: Vec<Arc<str>> = (0..5).map(|n| key(&map_key("q", n))).collect();
        keys.hold_map("q", 0, &names);
        assert_eq!(keys.table.get("q-3").map(|e| e.refs), Some(2));
        assert_eq!((keys.table.len(), keys.blocks.len()), (1, 4));
        assert!(keys.release(&k, None).is_none());
        assert!(keys.release(&k, None).is_some());
        assert_eq!(keys.len(), 4);
        // A map whose every key is held already leaves no block open.
        let mut keys = Keys::default();
        keys.hold(&k);
        keys.hold_map("q", 3, std::slice::from_ref(&k));
        assert!(keys.blocks.no_blocks());
        assert_eq!(keys.get("q-3").map(|e| e.refs), Some(2));
    }

    /// The news of a map's keys reaches each key held, in its block or in the table, and
    /// no other.
    #[test]
    fn news_of_a_maps_keys_reaches_each_held_wherever_it_is_kept() {
        let mut keys = Keys::default();
        keys.hold(&key("q-3"));
        let names: Vec<Arc<str>> = (0..5).map(|n| key(&map_key("q", n))).collect();
        keys.hold_map("q", 0, &names);
        keys.hold(&key("q-3"));
        let mut seen = Vec::new();
        let items = [0, 3, 4, 9, 3000].map(|n| (n, n));
        keys.each_numbered("q", items, |n, e| seen.push((n, e.refs)));
        assert_eq!(seen, [(0, 1), (3, 3), (4, 1)]);
        // With no block of the prefix open, a key kept in the table still hears.
        seen.clear();
        keys.each_numbered("r", [(3, 3)], |n, e| seen.push((n, e.refs)));
        assert!(seen.is_empty());
        keys.hold(&key("r-3"));
        keys.each_numbered("r", [(3, 3), (4, 4)], |n, e| seen.push((n, e.refs)));
        assert_eq!(seen, [(3, 1)]);
    }
}
