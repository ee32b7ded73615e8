//! [`KeyIndex`]: from a task's key to its id, holding only ids.
//!
//! Each task keeps its key (`Task::key`); a map from key to id would hold every key a
//! second time (a 16-byte pointer beside the 8-byte id, per slot of a table that is up
//! to half empty). The index holds ids alone and reads keys from the tasks: 8 bytes and
//! a control byte per slot. It must be told of every task put in or taken out of the
//! slab, and finds a key only while its task is in the slab.
//!
//! A map's keys (`{prefix}-{n}`) are kept apart, by number ([`MapKeys`]): a hash table
//! would miss the processor's caches twice a key (its slot, then the task holding the
//! key's text), the slots of one map's keys being unrelated. A key is in one place only:
//! its block's slot, or the table. The table may hold keys of a block's form that came
//! before the block (a graph's): it is looked at for a key the block lacks only if it
//! holds some key of that prefix, counted by the prefix's hash.

use std::hash::BuildHasher;

use hashbrown::HashTable;
use rask_proto::map_keys::{MapKeys, Taken};
use rask_proto::msg::{map_key, split_map_key as split};
use rask_proto::TaskId;
use rustc_hash::{FxBuildHasher, FxHashMap};

use crate::slab::Slab;
use crate::state::Task;

pub(crate) fn hash(key: &str) -> u64 {
    FxBuildHasher.hash_one(key)
}

/// Task ids by their tasks' keys.
#[derive(Debug, Default)]
pub(crate) struct KeyIndex {
    table: HashTable<TaskId>,
    /// Maps' keys, by number.
    blocks: MapKeys<TaskId>,
    /// Keys of the form `{prefix}-{n}` in the table, by the prefix's hash (prefixes with
    /// none are absent).
    prefixed: FxHashMap<u64, u32>,
}

impl KeyIndex {
    /// Keeps the keys `{prefix}-{first}`, `{prefix}-{first + 1}`, … indexed from now on in
    /// a block, unless one is open for `prefix` already: a map's, whose first new task is
    /// indexed next.
    pub(crate) fn open_block(&mut self, prefix: &str, first: u64) {
        self.blocks.open(prefix, first);
    }

    /// A number from which on no key `{prefix}-{n}` is indexed, if the index can tell
    /// without looking each up: the table holds no key of that form, and a block of
    /// `prefix` holds none past its slots.
    pub(crate) fn unheld_from(&self, prefix: &str) -> Option<u64> {
        if self.table_has(prefix) {
            return None;
        }
        match self.blocks.span(prefix) {
            None => Some(0),
            Some((first, slots)) => first.checked_add(slots as u64),
        }
    }

    /// Whether the table may hold a key of `prefix`.
    pub(crate) fn table_has(&self, prefix: &str) -> bool {
        !self.prefixed.is_empty() && self.prefixed.contains_key(&hash(prefix))
    }

    /// The id of the task with `key`.
    pub(crate) fn get(&self, key: &str, tasks: &Slab<Task>) -> Option<TaskId> {
        if !self.blocks.no_blocks() {
            if let Some((prefix, n)) = split(key) {
                return self.get_numbered(prefix, n, key, tasks);
            }
        }
        self.find(key, tasks)
    }

    /// The id of the task with key `key`, which is `{prefix}-{n}`.
    pub(crate) fn get_numbered(
        &self,
        prefix: &str,
        n: u64,
        key: &str,
        tasks: &Slab<Task>,
    ) -> Option<TaskId> {
        if let Some(id) = self.blocks.get(prefix, n) {
            return Some(*id);
        }
        if self.blocks.reaches(prefix, n) && !self.table_has(prefix) {
            return None;
        }
        self.find(key, tasks)
    }

    /// The id of the task with key `{prefix}-{n}`, the key written out only if the table
    /// may hold it.
    pub(crate) fn get_map(&self, prefix: &str, n: u64, tasks: &Slab<Task>) -> Option<TaskId> {
        if let Some(id) = self.blocks.get(prefix, n) {
            return Some(*id);
        }
        // Every key of that form in the table is counted by its prefix.
        if !self.table_has(prefix) {
            return None;
        }
        self.find(&map_key(prefix, n), tasks)
    }

    fn find(&self, key: &str, tasks: &Slab<Task>) -> Option<TaskId> {
        self.table
            .find(hash(key), |id| key_of(tasks, *id) == key)
            .copied()
    }

    /// Indexes task `id`, already in `tasks`, whose key no other indexed task has.
    pub(crate) fn insert(&mut self, id: TaskId, tasks: &Slab<Task>) {
        let key = key_of(tasks, id);
        match split(key) {
            Some((prefix, n)) => self.insert_numbered(id, prefix, n, tasks),
            None => self.put_in_table(id, key, tasks),
        }
    }

    /// [`KeyIndex::insert`] of a task whose key is `{prefix}-{n}`, known to the caller
    /// (its key is not read again).
    pub(crate) fn insert_numbered(&mut self, id: TaskId, prefix: &str, n: u64, tasks: &Slab<Task>) {
        debug_assert_eq!(split(key_of(tasks, id)), Some((prefix, n)));
        if self.blocks.insert(prefix, n, id).is_ok() {
            return;
        }
        *self.prefixed.entry(hash(prefix)).or_default() += 1;
        self.put_in_table(id, key_of(tasks, id), tasks);
    }

    fn put_in_table(&mut self, id: TaskId, key: &str, tasks: &Slab<Task>) {
        self.table
            .insert_unique(hash(key), id, |other| hash(key_of(tasks, *other)));
    }

    /// Forgets task `id`, whose key is `key` (the task may have left the slab already;
    /// the others indexed are in it).
    pub(crate) fn remove(&mut self, id: TaskId, key: &str, tasks: &Slab<Task>) {
        let split = split(key);
        if let Some((prefix, n)) = split {
            if let Some(Taken::Taken { spilled, .. }) =
                self.blocks.take_if(prefix, n, |other| *other == id)
            {
                // A block left sparse: its keys go to the table.
                for (_, id) in spilled {
                    *self.prefixed.entry(hash(prefix)).or_default() += 1;
                    self.put_in_table(id, key_of(tasks, id), tasks);
                }
                return;
            }
        }
        if let Ok(e) = self.table.find_entry(hash(key), |other| *other == id) {
            e.remove();
            if let Some((prefix, _)) = split {
                let h = hash(prefix);
                let left = self.prefixed.get_mut(&h).expect("invariant: counted");
                *left -= 1;
                if *left == 0 {
                    self.prefixed.remove(&h);
                }
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.table.len() + self.blocks.len()
    }

    /// Keys held in maps' blocks (the rest are in the table).
    #[cfg(test)]
    pub(crate) fn in_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Checks the blocks and the counts (for `validate`; each task's own key is checked
    /// there).
    pub(crate) fn check(&self, tasks: &Slab<Task>) {
        self.blocks.check();
        for (prefix, n, id) in self.blocks.iter() {
            assert_eq!(key_of(tasks, *id), map_key(prefix, n), "block slot of {id}");
        }
        let mut prefixed: FxHashMap<u64, u32> = FxHashMap::default();
        for id in self.table.iter() {
            if let Some((prefix, _)) = split(key_of(tasks, *id)) {
                *prefixed.entry(hash(prefix)).or_default() += 1;
            }
        }
        assert_eq!(
            self.prefixed, prefixed,
            "keys of a block's form in the table"
        );
    }
}

fn key_of(tasks: &Slab<Task>, id: TaskId) -> &str {
    &tasks
        .get(&id)
        .expect("invariant: indexed tasks are stored")
        .key
}

#[cfg(test)]
mod tests {
    use crate::api::CoreConfig;
    use crate::core::SchedulerCore;

    /// `check` finds a count of the table's keys of a block's form that the table does not
    /// bear out.
    #[test]
    #[should_panic(expected = "keys of a block's form in the table")]
    fn check_finds_a_count_of_prefixed_keys_the_table_lacks() {
        let mut s = SchedulerCore::new(CoreConfig::default());
        s.keys.check(&s.tasks);
        s.keys.prefixed.insert(super::hash("x"), 1);
        s.keys.check(&s.tasks);
    }
}
