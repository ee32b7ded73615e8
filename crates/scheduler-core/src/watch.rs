//! What workers report of their transfers and spills, recorded in the task stream beside
//! the computations, and the task graph as the dashboard's graph view draws it. Neither
//! changes the cluster's state.

use std::sync::Arc;

use rask_proto::{TaskId, WorkerId};
use rustc_hash::FxHashMap;

use crate::core::SchedulerCore;
use crate::observe::{StreamKind, StreamRecord};
use crate::TaskState;

/// A transfer or a spill a worker reported, on the scheduler's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Activity {
    /// The task whose value moved.
    pub task: TaskId,
    /// A transfer (from whom, over what) or a spill (where to).
    pub kind: StreamKind,
    /// When it started and ended.
    pub start_us: u64,
    /// See [`Activity::start_us`].
    pub stop_us: u64,
    /// Bytes moved.
    pub nbytes: u64,
}

/// The task graph, for drawing it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GraphView {
    /// The tasks.
    pub nodes: Vec<GraphNode>,
    /// `(i, j)`: `nodes[j]` depends on `nodes[i]`.
    pub edges: Vec<(u32, u32)>,
}

/// One task of a [`GraphView`].
#[derive(Clone, Debug, PartialEq)]
pub struct GraphNode {
    /// The task.
    pub task: TaskId,
    /// Its key.
    pub key: Arc<str>,
    /// Its prefix.
    pub prefix: Arc<str>,
    /// Its state.
    pub state: TaskState,
    /// The worker running it or (the first) holding its value.
    pub worker: Option<WorkerId>,
}

impl SchedulerCore {
    /// Records what `worker` reported of its transfers and spills in the task stream
    /// (of tasks the scheduler still knows; the others are skipped).
    pub fn on_activity(&mut self, worker: WorkerId, records: &[Activity]) {
        for a in records {
            if matches!(a.kind, StreamKind::Compute) {
                continue;
            }
            let Some(task) = self.tasks.get(&a.task) else {
                continue;
            };
            self.stream.push(StreamRecord {
                seq: 0,
                task: a.task,
                key: task.key.clone(),
                prefix: task.prefix,
                worker,
                start_us: a.start_us.min(a.stop_us),
                stop_us: a.stop_us,
                nbytes: a.nbytes,
                kind: a.kind,
            });
        }
    }

    /// The task graph, if it has at most `limit` tasks (`None` otherwise: a graph too
    /// large to draw costs no more than counting it).
    pub fn graph_view(&self, limit: usize) -> Option<GraphView> {
        if self.tasks.len() > limit {
            return None;
        }
        let mut index = FxHashMap::default();
        let mut nodes = Vec::with_capacity(self.tasks.len());
        for (id, t) in self.tasks.iter() {
            index.insert(id, nodes.len() as u32);
            nodes.push(GraphNode {
                task: id,
                key: t.key.clone(),
                prefix: self.prefixes[t.prefix as usize].name.clone(),
                state: t.state,
                worker: t
                    .processing_on
                    .or_else(|| t.who_has.as_slice().first().copied()),
            });
        }
        let mut edges = Vec::new();
        for (id, t) in self.tasks.iter() {
            let j = index[&id];
            edges.extend(t.deps.iter().filter_map(|d| index.get(d)).map(|&i| (i, j)));
        }
        Some(GraphView { nodes, edges })
    }
}
