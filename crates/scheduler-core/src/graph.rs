//! Checks of a submitted graph before anything changes: unknown ops, dependencies and
//! keys, duplicate keys, cycles, references; its tasks in topological order.

use rask_proto::Datum;
use rustc_hash::FxHashMap;

use crate::api::GraphError;
use crate::api::NewTask;
use crate::core::SchedulerCore;

/// The largest buffer index `d` refers to, plus one (0 if none).
pub(crate) fn max_buf(d: &Datum) -> u64 {
    match d {
        Datum::Buf(i) => u64::from(*i) + 1,
        Datum::List(l) => l.iter().map(max_buf).max().unwrap_or(0),
        _ => 0,
    }
}

impl SchedulerCore {
    /// Validates a graph and the keys wanted from it; returns the indices of its tasks in
    /// topological order.
    pub(crate) fn check_graph(
        &self,
        tasks: &[NewTask],
        wanted: &[String],
    ) -> Result<Vec<usize>, GraphError> {
        let mut index: FxHashMap<&str, usize> = FxHashMap::default();
        for (i, t) in tasks.iter().enumerate() {
            if index.insert(t.key.as_str(), i).is_some() {
                return Err(GraphError::DuplicateKey { key: t.key.clone() });
            }
        }
        if let Some(key) = wanted
            .iter()
            .find(|k| !index.contains_key(k.as_str()) && self.keys.get(k, &self.tasks).is_none())
        {
            return Err(GraphError::UnknownKey { key: key.clone() });
        }
        let mut indegree = vec![0u32; tasks.len()];
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); tasks.len()];
        for (i, t) in tasks.iter().enumerate() {
            if self.keys.get(&t.key, &self.tasks).is_some() {
                continue; // already known: kept as it is
            }
            // A program's own ops (those with a code) are known to its workers alone.
            if let Some(reg) = self.registry.as_ref().filter(|_| t.code.is_none()) {
                if !reg.contains(&t.op) {
                    return Err(GraphError::UnknownOp {
                        key: t.key.clone(),
                        op: t.op.clone(),
                    });
                }
            }
            let max_ref = t.args.max_ref();
            if max_ref > t.deps.len() as u64 {
                return Err(GraphError::BadReference {
                    key: t.key.clone(),
                    index: (max_ref - 1) as u32,
                    count: t.deps.len(),
                });
            }
            let max_buf = max_buf(&t.args);
            if max_buf > t.bufs.len() as u64 {
                return Err(GraphError::BadBuffer {
                    key: t.key.clone(),
                    index: (max_buf - 1) as u32,
                    count: t.bufs.len(),
                });
            }
            for d in &t.deps {
                if self.keys.get(d, &self.tasks).is_some() {
                    continue;
                }
                match index.get(d.as_str()) {
                    Some(&j) => {
                        indegree[i] += 1;
                        dependents[j].push(i);
                    }
                    None => {
                        return Err(GraphError::UnknownDependency {
                            key: t.key.clone(),
                            dep: d.clone(),
                        })
                    }
                }
            }
        }
        let mut order: Vec<usize> = (0..tasks.len()).filter(|&i| indegree[i] == 0).collect();
        let mut head = 0;
        while head < order.len() {
            let i = order[head];
            head += 1;
            for &j in &dependents[i] {
                indegree[j] -= 1;
                if indegree[j] == 0 {
                    order.push(j);
                }
            }
        }
        if order.len() < tasks.len() {
            let stuck = (0..tasks.len())
                .find(|&i| indegree[i] > 0)
                .expect("invariant: a cycle");
            return Err(GraphError::Cycle {
                key: tasks[stuck].key.clone(),
            });
        }
        Ok(order)
    }
}
