//! Property tests: random event sequences against a model of the worker server.

use std::collections::{HashMap, HashSet};

use proptest::prelude::*;

use super::*;

/// A model of the worker server around the core: a store, fetches in flight, jobs
/// running. Checks that the core never runs a task without its inputs, never runs more
/// than `nthreads` at once, and never discards data a waiting task still needs.
#[derive(Default)]
struct Model {
    store: HashSet<TaskId>,
    inflight: Vec<(WorkerId, Vec<TaskId>)>,
    running: Vec<TaskId>,
    deps: HashMap<TaskId, Vec<TaskId>>,
    finished: HashSet<TaskId>,
    dropped: HashSet<TaskId>,
}

impl Model {
    fn apply(&mut self, core: &mut WorkerCore, nthreads: usize) -> Result<(), TestCaseError> {
        for i in core.take() {
            match i {
                Instruction::Fetch { from, tasks } => self.inflight.push((from, tasks)),
                Instruction::Execute { task, .. } => {
                    for d in &self.deps[&task] {
                        prop_assert!(
                            self.store.contains(d),
                            "task {task:?} runs without input {d:?}"
                        );
                    }
                    self.running.push(task);
                    prop_assert!(
                        self.running.len() <= nthreads,
                        "more than {nthreads} running"
                    );
                }
                Instruction::Finished { task, .. } => {
                    self.finished.insert(task);
                }
                Instruction::Send(ToScheduler::MissingData { task, .. }) => {
                    self.dropped.insert(task);
                }
                Instruction::Send(_) => {}
                Instruction::Discard { task } => {
                    self.store.remove(&task);
                }
                Instruction::Drop { task } => {
                    self.dropped.insert(task);
                }
            }
        }
        Ok(())
    }
}

proptest! {
    #[test]
    fn random_events_keep_the_worker_consistent(
        nthreads in 1usize..4,
        ops in proptest::collection::vec((0u8..6, 0u64..30, proptest::collection::vec(100u64..110, 0..3)), 1..200),
    ) {
        let mut core = WorkerCore::new(nthreads);
        let mut m = Model::default();
        for (kind, t, deps) in ops {
            let task = TaskId(t);
            match kind {
                0 | 1 => {
                    if m.deps.contains_key(&task) { continue; }
                    let deps: Vec<TaskId> = deps.into_iter().map(TaskId).collect::<HashSet<_>>().into_iter().collect();
                    m.deps.insert(task, deps.clone());
                    let locs = deps.iter().map(|d| DepLoc { task: *d, nbytes: 8, holders: vec![WorkerId(1), WorkerId(2)] }).collect();
                    core.on_compute(task, t, locs);
                }
                2 => {
                    if let Some((from, tasks)) = m.inflight.pop() {
                        // The peer has the even-numbered inputs.
                        let (got, missing): (Vec<TaskId>, Vec<TaskId>) = tasks.iter().partition(|x| x.0 % 2 == 0);
                        for g in &got { m.store.insert(*g); }
                        core.on_fetched(from, &got, &missing);
                    }
                }
                3 => {
                    if let Some((from, tasks)) = m.inflight.pop() {
                        core.on_fetch_failed(from, &tasks);
                    }
                }
                4 => {
                    if !m.running.is_empty() {
                        let ended = m.running.remove(t as usize % m.running.len());
                        m.store.insert(ended);
                        core.on_executed(ended, 1, done(8));
                    }
                }
                _ => core.on_free(task),
            }
            m.apply(&mut core, nthreads)?;
            prop_assert_eq!(core.executing(), m.running.len());
        }
    }
}
