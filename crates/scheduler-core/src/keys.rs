//! [`KeyIndex`]: from a task's key to its id, holding only ids.
//!
//! Each task keeps its key (`Task::key`); a map from key to id would hold every key a
//! second time (a 16-byte pointer beside the 8-byte id, per slot of a table that is up
//! to half empty). The index holds ids alone and reads keys from the tasks: 8 bytes and
//! a control byte per slot. It must be told of every task put in or taken out of the
//! slab, and finds a key only while its task is in the slab.

use std::hash::BuildHasher;

use hashbrown::HashTable;
use rask_proto::TaskId;
use rustc_hash::FxBuildHasher;

use crate::slab::Slab;
use crate::state::Task;

pub(crate) fn hash(key: &str) -> u64 {
    FxBuildHasher.hash_one(key)
}

/// Task ids by their tasks' keys.
#[derive(Debug, Default)]
pub(crate) struct KeyIndex {
    table: HashTable<TaskId>,
}

impl KeyIndex {
    /// The id of the task with `key`.
    pub(crate) fn get(&self, key: &str, tasks: &Slab<Task>) -> Option<TaskId> {
        self.table
            .find(hash(key), |id| key_of(tasks, *id) == key)
            .copied()
    }

    /// Indexes task `id`, already in `tasks`, whose key no other indexed task has.
    pub(crate) fn insert(&mut self, id: TaskId, tasks: &Slab<Task>) {
        let h = hash(key_of(tasks, id));
        self.table
            .insert_unique(h, id, |other| hash(key_of(tasks, *other)));
    }

    /// Forgets task `id`, whose key is `key` (the task may have left the slab already).
    pub(crate) fn remove(&mut self, id: TaskId, key: &str) {
        if let Ok(e) = self.table.find_entry(hash(key), |other| *other == id) {
            e.remove();
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }
}

fn key_of(tasks: &Slab<Task>, id: TaskId) -> &str {
    &tasks
        .get(&id)
        .expect("invariant: indexed tasks are stored")
        .key
}
