//! Checks of a submitted graph before anything changes: unknown ops, dependencies and
//! keys, duplicate keys, cycles, references; its tasks in topological order.

use rask_proto::TaskId;
use rustc_hash::FxHashMap;

use crate::api::GraphError;
use crate::api::NewTask;
use crate::core::SchedulerCore;

/// A graph found sound by [`SchedulerCore::check_graph`], with what the check learned of
/// it, so that adding it looks up no key twice.
pub(crate) struct Checked {
    /// Its tasks' indices, in topological order.
    pub(crate) order: Vec<usize>,
    /// Per task, the id of the task the scheduler already has under its key (kept as it
    /// is), if any.
    pub(crate) known: Vec<Option<TaskId>>,
    /// Per wanted key, the index of the graph's task with that key, if it has one (else
    /// the scheduler already has it).
    pub(crate) wanted_at: Vec<Option<usize>>,
    /// The dependencies of the tasks not known, in the order of the tasks and of their
    /// deps: task `i`'s are `deps[deps_start[i]..deps_start[i + 1]]` (none for a known
    /// task).
    pub(crate) deps: Vec<DepRef>,
    pub(crate) deps_start: Vec<usize>,
}

/// A dependency of a submitted task.
#[derive(Clone, Copy)]
pub(crate) enum DepRef {
    /// A task the scheduler has.
    Known(TaskId),
    /// The graph's task at this index (added before its dependents).
    At(usize),
}

impl SchedulerCore {
    /// Validates a graph and the keys wanted from it; returns its tasks in topological
    /// order, and which of them and of the wanted keys the scheduler knows already.
    pub(crate) fn check_graph(
        &self,
        tasks: &[NewTask],
        wanted: &[String],
    ) -> Result<Checked, GraphError> {
        let mut index: FxHashMap<&str, usize> = FxHashMap::default();
        index.reserve(tasks.len());
        for (i, t) in tasks.iter().enumerate() {
            if index.insert(t.key.as_str(), i).is_some() {
                return Err(GraphError::DuplicateKey { key: t.key.clone() });
            }
        }
        let mut wanted_at = Vec::with_capacity(wanted.len());
        for key in wanted {
            let at = index.get(key.as_str()).copied();
            if at.is_none() && self.keys.get(key, &self.tasks).is_none() {
                return Err(GraphError::UnknownKey { key: key.clone() });
            }
            wanted_at.push(at);
        }
        let known: Vec<Option<TaskId>> = tasks
            .iter()
            .map(|t| self.keys.get(&t.key, &self.tasks))
            .collect();
        let mut indegree = vec![0u32; tasks.len()];
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); tasks.len()];
        let mut deps = Vec::new();
        let mut deps_start = Vec::with_capacity(tasks.len() + 1);
        for (i, t) in tasks.iter().enumerate() {
            deps_start.push(deps.len());
            if known[i].is_some() {
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
            let max_buf = t.args.max_buf();
            if max_buf > t.bufs.len() as u64 {
                return Err(GraphError::BadBuffer {
                    key: t.key.clone(),
                    index: (max_buf - 1) as u32,
                    count: t.bufs.len(),
                });
            }
            for d in &t.deps {
                if let Some(id) = self.keys.get(d, &self.tasks) {
                    deps.push(DepRef::Known(id));
                    continue;
                }
                match index.get(d.as_str()) {
                    Some(&j) => {
                        indegree[i] += 1;
                        dependents[j].push(i);
                        deps.push(DepRef::At(j));
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
        deps_start.push(deps.len());
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
        Ok(Checked {
            order,
            known,
            wanted_at,
            deps,
            deps_start,
        })
    }
}
