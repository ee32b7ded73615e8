//! Maps: one op over many arguments, added as the graph of their tasks would be, without a
//! key, an op name or a wanted key to read, hash and look up for each task.

use std::sync::Arc;

use rask_proto::msg::push_map_key;
use rask_proto::{ClientId, TaskId};

use crate::api::{GraphError, NewMap};
use crate::core::SchedulerCore;
use crate::state::TaskExtra;
use crate::story::Why;
use crate::TaskState;

impl SchedulerCore {
    /// A client submitted a map: the same as [`SchedulerCore::on_update_graph`] with the
    /// graph of [`NewMap::into_graph`], its tasks created in order. On error nothing
    /// changes.
    pub fn on_map(&mut self, client: ClientId, map: NewMap) -> Result<(), GraphError> {
        self.begin(Why::UpdateGraph, None);
        let created = self.add_map(client, map)?;
        self.settle_graph(created);
        Ok(())
    }

    /// Adds a map's new tasks and `client`'s wants, and sets them waiting; returns the
    /// tasks created (see [`SchedulerCore::add_graph`]).
    fn add_map(&mut self, client: ClientId, map: NewMap) -> Result<Vec<TaskId>, GraphError> {
        self.check_map(client, &map)?;
        let NewMap {
            prefix,
            first,
            op,
            args,
            resources,
            code,
        } = map;
        let op = self.op_id(&op);
        let resources = self.resource_ids(&resources);
        let mut key = String::with_capacity(prefix.len() + 21);
        // Every key of a map has the same prefix (its last word, a number, is never part
        // of one: see `key_prefix`), found once.
        let mut prefix_id = None;
        let mut created = Vec::with_capacity(args.len());
        let mut released = Vec::new();
        // Keys past those of the prefix indexed (a client's new map, and each next part
        // of it) are not known: not looked up (a map's numbers do not repeat).
        let unheld_from = self.keys.unheld_from(&prefix);
        for (i, (args, bufs)) in args.into_iter().enumerate() {
            key.clear();
            let n = first + i as u64;
            push_map_key(&mut key, &prefix, n);
            let known = match unheld_from {
                Some(from) if n >= from => None,
                _ => self.keys.get_numbered(&prefix, n, &key, &self.tasks),
            };
            if let Some(t) = known {
                // A key already known keeps its task, as in a graph.
                if self.want(client, t) {
                    released.push(t);
                }
                continue;
            }
            if created.is_empty() {
                // The map's keys are indexed by number (see `keys`).
                self.keys.open_block(&prefix, n);
            }
            let group = *prefix_id.get_or_insert_with(|| self.prefix_id(&key, op));
            let extra = TaskExtra::of(bufs, resources.clone(), code);
            let task = self.new_task(
                Arc::from(key.as_str()),
                op,
                group,
                args.into_packed(),
                [].into(),
                extra,
            );
            let id = self.tasks.next_id();
            self.put_new(id, false, i, task, Some((&prefix, n)));
            created.push(id);
            self.want(client, id);
        }
        // Wanted tasks start waiting (a task of a map reads no other).
        for t in created.iter().chain(&released) {
            self.recs.push_back((*t, TaskState::Waiting));
        }
        Ok(created)
    }

    /// Refuses a map as [`SchedulerCore::check_graph`] would refuse its graph.
    fn check_map(&self, client: ClientId, map: &NewMap) -> Result<(), GraphError> {
        if !self.clients.contains_key(&client) {
            return Err(GraphError::UnknownClient(client));
        }
        map.check_numbers()?;
        let count = map.args.len();
        // Tasks already known are kept as they are, and not checked.
        let known = |i: usize| self.keys.get(&map.key(i), &self.tasks).is_some();
        // A program's own ops (those with a code) are known to its workers alone.
        if let Some(reg) = self.registry.as_ref().filter(|_| map.code.is_none()) {
            if !reg.contains(&map.op) {
                if let Some(i) = (0..count).find(|&i| !known(i)) {
                    return Err(GraphError::UnknownOp {
                        key: map.key(i),
                        op: map.op.clone(),
                    });
                }
            }
        }
        for (i, (args, bufs)) in map.args.iter().enumerate() {
            let max_ref = args.max_ref();
            if max_ref > 0 && !known(i) {
                return Err(GraphError::BadReference {
                    key: map.key(i),
                    index: (max_ref - 1) as u32,
                    count: 0,
                });
            }
            let max_buf = args.max_buf();
            if max_buf > bufs.len() as u64 && !known(i) {
                return Err(GraphError::BadBuffer {
                    key: map.key(i),
                    index: (max_buf - 1) as u32,
                    count: bufs.len(),
                });
            }
        }
        Ok(())
    }
}
