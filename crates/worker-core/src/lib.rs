//! The worker as a sans-IO state machine: events in ([`WorkerCore`]'s `on_*` methods),
//! [`Instruction`]s out, in order.
//!
//! It decides what to fetch from which peer, what to run next (by priority, up to the
//! number of threads), what to report to the scheduler and what data to drop. It holds no
//! data itself (the worker server's store does) and must not do I/O or read a clock.
//!
//! Data on a worker is of two kinds: *owned* — outputs of tasks computed here, which the
//! scheduler knows about and frees explicitly — and *cached* — dependencies fetched from
//! peers, kept while a local task still needs them.

pub mod spill;

use std::collections::BTreeSet;

use rask_proto::msg::{DepLoc, ToScheduler};
use rask_proto::{TaskId, WorkerId};
use rustc_hash::{FxHashMap, FxHashSet};

/// What the worker server must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Instruction {
    /// Fetch these tasks' data from a peer, in one request.
    Fetch { from: WorkerId, tasks: Vec<TaskId> },
    /// Run a task: every input is in the local store.
    Execute { task: TaskId },
    /// Tell the scheduler.
    Send(ToScheduler),
    /// Drop a task's data from the local store.
    Discard { task: TaskId },
    /// Forget the compute request of a task that will not run (its op and arguments).
    Drop { task: TaskId },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Some inputs are still being fetched.
    Fetching,
    Ready,
    Executing,
    /// Freed by the scheduler while executing: its result is discarded.
    Cancelled,
}

#[derive(Debug)]
struct Task {
    priority: u64,
    deps: Vec<DepLoc>,
    /// Inputs not yet in the local store.
    missing: u32,
    state: State,
}

#[derive(Debug, Default)]
struct Fetch {
    /// Peers tried so far, in order; the last is the one in flight.
    tried: Vec<WorkerId>,
    /// Local tasks waiting for this input.
    waiters: Vec<TaskId>,
}

/// The worker's bookkeeping. See the crate docs.
#[derive(Debug)]
pub struct WorkerCore {
    nthreads: usize,
    tasks: FxHashMap<TaskId, Task>,
    ready: BTreeSet<(u64, TaskId)>,
    executing: usize,
    /// Outputs computed here, known to the scheduler.
    owned: FxHashSet<TaskId>,
    /// Fetched inputs and how many local tasks still need each.
    cached: FxHashMap<TaskId, u32>,
    fetching: FxHashMap<TaskId, Fetch>,
    /// Tasks assigned here waiting for the output of another task assigned here.
    local_waiters: FxHashMap<TaskId, Vec<TaskId>>,
    out: Vec<Instruction>,
    /// No task starts while paused (memory above the pause threshold).
    paused: bool,
}

impl WorkerCore {
    /// A worker running up to `nthreads` tasks at once.
    pub fn new(nthreads: usize) -> Self {
        WorkerCore {
            nthreads: nthreads.max(1),
            tasks: FxHashMap::default(),
            ready: BTreeSet::new(),
            executing: 0,
            owned: FxHashSet::default(),
            cached: FxHashMap::default(),
            fetching: FxHashMap::default(),
            local_waiters: FxHashMap::default(),
            out: Vec::new(),
            paused: false,
        }
    }

    /// The instructions produced since the last call, in order.
    pub fn take(&mut self) -> Vec<Instruction> {
        std::mem::take(&mut self.out)
    }

    /// Whether a task's data is in the local store.
    pub fn has_data(&self, t: TaskId) -> bool {
        self.owned.contains(&t) || self.cached.contains_key(&t)
    }

    /// Tasks assigned and not finished.
    pub fn assigned(&self) -> usize {
        self.tasks.len()
    }

    /// Tasks running now.
    pub fn executing(&self) -> usize {
        self.executing
    }

    /// Outputs held for the scheduler.
    pub fn owned(&self) -> usize {
        self.owned.len()
    }

    /// The scheduler assigned a task.
    pub fn on_compute(&mut self, task: TaskId, priority: u64, deps: Vec<DepLoc>) {
        self.add_compute(task, priority, deps);
        self.schedule();
    }

    /// The scheduler assigned several tasks at once: the most urgent of them run first.
    pub fn on_compute_batch(
        &mut self,
        batch: impl IntoIterator<Item = (TaskId, u64, Vec<DepLoc>)>,
    ) {
        for (task, priority, deps) in batch {
            self.add_compute(task, priority, deps);
        }
        self.schedule();
    }

    fn add_compute(&mut self, task: TaskId, priority: u64, deps: Vec<DepLoc>) {
        if self.tasks.contains_key(&task) || self.owned.contains(&task) {
            return; // duplicate assignment: already running or done
        }
        // An input that is neither here, nor on its way, nor computed here, and that no
        // peer holds: the scheduler will recompute it. Report at once, before taking any
        // hold on the other inputs (a hold taken here would never be released).
        if let Some(d) = deps.iter().find(|d| {
            d.holders.is_empty()
                && !self.owned.contains(&d.task)
                && !self.cached.contains_key(&d.task)
                && !self.tasks.contains_key(&d.task)
                && !self.fetching.contains_key(&d.task)
        }) {
            self.out.push(Instruction::Send(ToScheduler::MissingData {
                task,
                dep: d.task,
                holder: WorkerId(u32::MAX),
            }));
            self.out.push(Instruction::Drop { task });
            return;
        }
        let mut missing = 0;
        let mut requests: FxHashMap<WorkerId, Vec<TaskId>> = FxHashMap::default();
        for d in &deps {
            if self.owned.contains(&d.task) {
                continue;
            }
            if let Some(n) = self.cached.get_mut(&d.task) {
                *n += 1;
                continue;
            }
            missing += 1;
            if self.tasks.contains_key(&d.task) {
                // Sent ahead of its input, which runs here: wait for it locally.
                self.local_waiters.entry(d.task).or_default().push(task);
                continue;
            }
            match self.fetching.get_mut(&d.task) {
                Some(f) => f.waiters.push(task),
                None => {
                    let from = *d
                        .holders
                        .first()
                        .expect("invariant: inputs without holders refused above");
                    self.fetching.insert(
                        d.task,
                        Fetch {
                            tried: vec![from],
                            waiters: vec![task],
                        },
                    );
                    requests.entry(from).or_default().push(d.task);
                }
            }
        }
        let mut requests: Vec<_> = requests.into_iter().collect();
        requests.sort_unstable_by_key(|(w, _)| *w);
        for (from, tasks) in requests {
            self.out.push(Instruction::Fetch { from, tasks });
        }
        let state = if missing == 0 {
            State::Ready
        } else {
            State::Fetching
        };
        if state == State::Ready {
            self.ready.insert((priority, task));
        }
        self.tasks.insert(
            task,
            Task {
                priority,
                deps,
                missing,
                state,
            },
        );
    }

    /// A fetch from `from` returned: `got` are now in the store, `missing` the peer lacked.
    pub fn on_fetched(&mut self, from: WorkerId, got: &[TaskId], missing: &[TaskId]) {
        for t in got {
            let Some(f) = self.fetching.remove(t) else {
                // Nobody waits any more (cancelled meanwhile).
                self.out.push(Instruction::Discard { task: *t });
                continue;
            };
            let mut live = 0;
            for w in f.waiters {
                if let Some(task) = self.tasks.get_mut(&w) {
                    live += 1;
                    task.missing -= 1;
                    if task.missing == 0 && task.state == State::Fetching {
                        task.state = State::Ready;
                        self.ready.insert((task.priority, w));
                    }
                }
            }
            if live == 0 {
                self.out.push(Instruction::Discard { task: *t });
            } else {
                self.cached.insert(*t, live);
            }
        }
        for t in missing {
            self.fetch_failed(from, *t);
        }
        self.schedule();
    }

    /// A fetch from `from` failed as a whole (peer dead or unreachable).
    pub fn on_fetch_failed(&mut self, from: WorkerId, tasks: &[TaskId]) {
        for t in tasks {
            self.fetch_failed(from, *t);
        }
        self.schedule();
    }

    fn fetch_failed(&mut self, from: WorkerId, dep: TaskId) {
        let Some(f) = self.fetching.get_mut(&dep) else {
            return;
        };
        // Try the next holder any waiter knows of.
        let holders: Vec<WorkerId> = f
            .waiters
            .iter()
            .filter_map(|w| self.tasks.get(w))
            .flat_map(|t| {
                t.deps
                    .iter()
                    .filter(|d| d.task == dep)
                    .flat_map(|d| d.holders.iter().copied())
            })
            .collect();
        if let Some(next) = holders.into_iter().find(|h| !f.tried.contains(h)) {
            f.tried.push(next);
            self.out.push(Instruction::Fetch {
                from: next,
                tasks: vec![dep],
            });
            return;
        }
        let f = self
            .fetching
            .remove(&dep)
            .expect("invariant: checked above");
        for w in f.waiters {
            if self.tasks.contains_key(&w) {
                self.out.push(Instruction::Send(ToScheduler::MissingData {
                    task: w,
                    dep,
                    holder: from,
                }));
                self.remove_task(w);
            }
        }
    }

    /// A task's op returned a value (now in the store) or an error.
    pub fn on_executed(&mut self, task: TaskId, result: Result<(u64, u64), String>) {
        let Some(t) = self.tasks.get(&task) else {
            return;
        };
        let cancelled = t.state == State::Cancelled;
        let waiters = self.local_waiters.remove(&task).unwrap_or_default();
        self.executing -= 1;
        self.remove_task(task);
        match result {
            _ if cancelled => self.out.push(Instruction::Discard { task }),
            Ok((nbytes, duration_us)) => {
                self.owned.insert(task);
                for w in waiters {
                    if let Some(t) = self.tasks.get_mut(&w) {
                        t.missing -= 1;
                        if t.missing == 0 && t.state == State::Fetching {
                            t.state = State::Ready;
                            self.ready.insert((t.priority, w));
                        }
                    }
                }
                self.out.push(Instruction::Send(ToScheduler::TaskFinished(
                    rask_proto::msg::TaskFinishedMsg {
                        task,
                        nbytes,
                        duration_us,
                        value: None,
                    },
                )));
            }
            Err(message) => {
                // Local waiters stay until the scheduler frees them.
                self.out.push(Instruction::Send(ToScheduler::TaskErred(
                    rask_proto::msg::TaskErredMsg { task, message },
                )));
            }
        }
        self.schedule();
    }

    /// The scheduler freed a task: drop its data, or cancel it.
    pub fn on_free(&mut self, task: TaskId) {
        if self.owned.remove(&task) {
            self.out.push(Instruction::Discard { task });
        }
        match self.tasks.get_mut(&task).map(|t| t.state) {
            Some(State::Executing) => {
                self.tasks.get_mut(&task).expect("invariant").state = State::Cancelled
            }
            Some(State::Cancelled) | None => {}
            Some(_) => self.remove_task(task),
        }
        self.schedule();
    }

    /// Removes a task that will not run (or has run), releasing its inputs.
    fn remove_task(&mut self, task: TaskId) {
        let Some(t) = self.tasks.remove(&task) else {
            return;
        };
        self.ready.remove(&(t.priority, task));
        if t.state != State::Executing && t.state != State::Cancelled {
            self.out.push(Instruction::Drop { task });
        }
        for d in &t.deps {
            if let Some(n) = self.cached.get_mut(&d.task) {
                *n -= 1;
                if *n == 0 {
                    self.cached.remove(&d.task);
                    self.out.push(Instruction::Discard { task: d.task });
                }
            } else if let Some(f) = self.fetching.get_mut(&d.task) {
                f.waiters.retain(|w| *w != task);
            } else if let Some(ws) = self.local_waiters.get_mut(&d.task) {
                ws.retain(|w| *w != task);
            }
        }
        self.local_waiters.remove(&task);
    }

    /// Pauses (or resumes) starting tasks; running ones finish.
    pub fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
        if !paused {
            self.schedule();
        }
    }

    pub fn paused(&self) -> bool {
        self.paused
    }

    fn schedule(&mut self) {
        while self.executing < self.nthreads && !self.paused {
            let Some((_, t)) = self.ready.pop_first() else {
                break;
            };
            self.tasks
                .get_mut(&t)
                .expect("invariant: ready task exists")
                .state = State::Executing;
            self.executing += 1;
            self.out.push(Instruction::Execute { task: t });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(t: u64, holders: &[u32]) -> DepLoc {
        DepLoc {
            task: TaskId(t),
            nbytes: 8,
            holders: holders.iter().map(|h| WorkerId(*h)).collect(),
        }
    }

    fn finished(t: u64, nbytes: u64, duration_us: u64) -> Instruction {
        Instruction::Send(ToScheduler::TaskFinished(
            rask_proto::msg::TaskFinishedMsg {
                task: TaskId(t),
                nbytes,
                duration_us,
                value: None,
            },
        ))
    }

    #[test]
    fn runs_by_priority_up_to_nthreads() {
        let mut w = WorkerCore::new(2);
        w.on_compute_batch([
            (TaskId(1), 5, vec![]),
            (TaskId(2), 1, vec![]),
            (TaskId(3), 0, vec![]),
        ]);
        assert_eq!(
            w.take(),
            vec![
                Instruction::Execute { task: TaskId(3) },
                Instruction::Execute { task: TaskId(2) }
            ]
        );
        w.on_executed(TaskId(3), Ok((8, 3)));
        let out = w.take();
        assert!(
            matches!(&out[0], Instruction::Send(ToScheduler::TaskFinished(m)) if m.task == TaskId(3))
        );
        assert_eq!(out[1], Instruction::Execute { task: TaskId(1) });
    }

    #[test]
    fn paused_no_task_starts_and_running_ones_finish_then_resuming_starts_them() {
        let mut w = WorkerCore::new(1);
        w.on_compute_batch([(TaskId(1), 0, vec![]), (TaskId(2), 1, vec![])]);
        assert_eq!(w.take(), vec![Instruction::Execute { task: TaskId(1) }]);
        assert!(!w.paused());
        w.set_paused(true);
        assert!(w.paused());
        w.on_compute_batch([(TaskId(3), 2, vec![])]);
        w.on_executed(TaskId(1), Ok((8, 3)));
        let out = w.take();
        assert_eq!(out.len(), 1, "only the finished task is reported: {out:?}");
        assert!(
            matches!(&out[0], Instruction::Send(ToScheduler::TaskFinished(m)) if m.task == TaskId(1))
        );
        assert_eq!(w.executing(), 0);
        w.set_paused(false);
        assert!(!w.paused());
        assert_eq!(w.take(), vec![Instruction::Execute { task: TaskId(2) }]);
    }

    #[test]
    fn fetches_batched_per_peer_and_discards_inputs_after_use() {
        let mut w = WorkerCore::new(1);
        w.on_compute(
            TaskId(10),
            0,
            vec![dep(1, &[7]), dep(2, &[7]), dep(3, &[8])],
        );
        assert_eq!(
            w.take(),
            vec![
                Instruction::Fetch {
                    from: WorkerId(7),
                    tasks: vec![TaskId(1), TaskId(2)]
                },
                Instruction::Fetch {
                    from: WorkerId(8),
                    tasks: vec![TaskId(3)]
                },
            ]
        );
        w.on_fetched(WorkerId(7), &[TaskId(1), TaskId(2)], &[]);
        assert_eq!(w.take(), vec![]);
        w.on_fetched(WorkerId(8), &[TaskId(3)], &[]);
        assert_eq!(w.take(), vec![Instruction::Execute { task: TaskId(10) }]);
        w.on_executed(TaskId(10), Ok((8, 1)));
        let out = w.take();
        for t in [1, 2, 3] {
            assert!(
                out.contains(&Instruction::Discard { task: TaskId(t) }),
                "{out:?}"
            );
        }
        assert!(w.has_data(TaskId(10)));
        w.on_free(TaskId(10));
        assert_eq!(w.take(), vec![Instruction::Discard { task: TaskId(10) }]);
    }

    #[test]
    fn failed_fetch_tries_next_holder_then_reports_missing() {
        let mut w = WorkerCore::new(1);
        w.on_compute(TaskId(10), 0, vec![dep(1, &[7, 8])]);
        w.take();
        w.on_fetch_failed(WorkerId(7), &[TaskId(1)]);
        assert_eq!(
            w.take(),
            vec![Instruction::Fetch {
                from: WorkerId(8),
                tasks: vec![TaskId(1)]
            }]
        );
        w.on_fetched(WorkerId(8), &[], &[TaskId(1)]);
        let out = w.take();
        assert_eq!(
            out[0],
            Instruction::Send(ToScheduler::MissingData {
                task: TaskId(10),
                dep: TaskId(1),
                holder: WorkerId(8)
            })
        );
        assert_eq!(w.assigned(), 0);
    }

    #[test]
    fn cancelled_while_executing_discards_the_result() {
        let mut w = WorkerCore::new(1);
        w.on_compute(TaskId(1), 0, vec![]);
        w.take();
        w.on_free(TaskId(1));
        assert_eq!(w.take(), vec![]);
        w.on_executed(TaskId(1), Ok((8, 1)));
        assert_eq!(w.take(), vec![Instruction::Discard { task: TaskId(1) }]);
        assert!(!w.has_data(TaskId(1)));
    }

    #[test]
    fn a_task_sent_ahead_waits_for_its_local_input() {
        let mut w = WorkerCore::new(1);
        w.on_compute_batch([(TaskId(1), 0, vec![]), (TaskId(2), 1, vec![dep(1, &[])])]);
        assert_eq!(w.take(), vec![Instruction::Execute { task: TaskId(1) }]);
        w.on_executed(TaskId(1), Ok((8, 1)));
        let out = w.take();
        assert!(
            matches!(&out[0], Instruction::Send(ToScheduler::TaskFinished(m)) if m.task == TaskId(1))
        );
        assert_eq!(out[1], Instruction::Execute { task: TaskId(2) });
        // If the input fails, the waiter stays until the scheduler frees it.
        w.on_compute_batch([(TaskId(3), 0, vec![]), (TaskId(4), 1, vec![dep(3, &[])])]);
        w.take();
        w.on_executed(TaskId(2), Ok((8, 1)));
        w.take();
        w.on_executed(TaskId(3), Err("boom".into()));
        assert!(!w.take().contains(&Instruction::Execute { task: TaskId(4) }));
        w.on_free(TaskId(4));
        assert_eq!(w.take(), vec![Instruction::Drop { task: TaskId(4) }]);
        assert_eq!(w.assigned(), 0);
    }

    #[test]
    fn a_task_with_two_local_inputs_starts_only_after_both_are_done() {
        let mut w = WorkerCore::new(2);
        w.on_compute_batch([
            (TaskId(1), 0, vec![]),
            (TaskId(2), 1, vec![]),
            (TaskId(3), 2, vec![dep(1, &[]), dep(2, &[])]),
        ]);
        assert_eq!(
            w.take(),
            vec![
                Instruction::Execute { task: TaskId(1) },
                Instruction::Execute { task: TaskId(2) }
            ]
        );
        w.on_executed(TaskId(1), Ok((8, 1)));
        assert_eq!(w.take(), vec![finished(1, 8, 1)]);
        assert_eq!(w.executing(), 1);
        w.on_executed(TaskId(2), Ok((8, 1)));
        assert_eq!(
            w.take(),
            vec![finished(2, 8, 1), Instruction::Execute { task: TaskId(3) }]
        );
    }

    #[test]
    fn freeing_one_of_two_tasks_waiting_on_a_fetch_leaves_the_other_waiting() {
        let mut w = WorkerCore::new(1);
        w.on_compute_batch([
            (TaskId(10), 0, vec![dep(1, &[7])]),
            (TaskId(11), 1, vec![dep(1, &[7])]),
        ]);
        assert_eq!(
            w.take(),
            vec![Instruction::Fetch {
                from: WorkerId(7),
                tasks: vec![TaskId(1)]
            }]
        );
        w.on_free(TaskId(10));
        assert_eq!(w.take(), vec![Instruction::Drop { task: TaskId(10) }]);
        w.on_fetched(WorkerId(7), &[TaskId(1)], &[]);
        assert_eq!(w.take(), vec![Instruction::Execute { task: TaskId(11) }]);
        assert!(w.has_data(TaskId(1)));
        w.on_executed(TaskId(11), Ok((8, 1)));
        assert_eq!(
            w.take(),
            vec![Instruction::Discard { task: TaskId(1) }, finished(11, 8, 1)]
        );
        assert!(!w.has_data(TaskId(1)));
    }

    #[test]
    fn freeing_one_of_two_tasks_waiting_on_a_local_input_leaves_the_other_waiting() {
        let mut w = WorkerCore::new(1);
        w.on_compute_batch([
            (TaskId(1), 0, vec![]),
            (TaskId(2), 1, vec![dep(1, &[])]),
            (TaskId(3), 2, vec![dep(1, &[])]),
        ]);
        assert_eq!(w.take(), vec![Instruction::Execute { task: TaskId(1) }]);
        w.on_free(TaskId(2));
        assert_eq!(w.take(), vec![Instruction::Drop { task: TaskId(2) }]);
        w.on_executed(TaskId(1), Ok((8, 1)));
        assert_eq!(
            w.take(),
            vec![finished(1, 8, 1), Instruction::Execute { task: TaskId(3) }]
        );
        assert_eq!(w.assigned(), 1);
    }

    #[test]
    fn a_task_refused_for_an_input_no_one_holds_leaves_no_fetch_behind() {
        let mut w = WorkerCore::new(1);
        w.on_compute(TaskId(10), 0, vec![dep(1, &[7]), dep(2, &[])]);
        assert_eq!(
            w.take(),
            vec![
                Instruction::Send(ToScheduler::MissingData {
                    task: TaskId(10),
                    dep: TaskId(2),
                    holder: WorkerId(u32::MAX)
                }),
                Instruction::Drop { task: TaskId(10) }
            ]
        );
        assert_eq!(w.assigned(), 0);
        // The next task reading the first input fetches it.
        w.on_compute(TaskId(11), 0, vec![dep(1, &[7])]);
        assert_eq!(
            w.take(),
            vec![Instruction::Fetch {
                from: WorkerId(7),
                tasks: vec![TaskId(1)]
            }]
        );
        w.on_fetched(WorkerId(7), &[TaskId(1)], &[]);
        assert_eq!(w.take(), vec![Instruction::Execute { task: TaskId(11) }]);
    }

    #[test]
    fn a_task_refused_for_an_input_no_one_holds_takes_no_hold_on_a_local_input() {
        let mut w = WorkerCore::new(1);
        w.on_compute(TaskId(1), 0, vec![]);
        assert_eq!(w.take(), vec![Instruction::Execute { task: TaskId(1) }]);
        w.on_compute(TaskId(10), 1, vec![dep(1, &[]), dep(2, &[])]);
        assert_eq!(
            w.take(),
            vec![
                Instruction::Send(ToScheduler::MissingData {
                    task: TaskId(10),
                    dep: TaskId(2),
                    holder: WorkerId(u32::MAX)
                }),
                Instruction::Drop { task: TaskId(10) }
            ]
        );
        // Sent again once the input is recomputed elsewhere: it waits for both inputs.
        w.on_compute(TaskId(10), 1, vec![dep(1, &[]), dep(2, &[7])]);
        assert_eq!(
            w.take(),
            vec![Instruction::Fetch {
                from: WorkerId(7),
                tasks: vec![TaskId(2)]
            }]
        );
        w.on_executed(TaskId(1), Ok((8, 1)));
        assert_eq!(w.take(), vec![finished(1, 8, 1)]);
        w.on_fetched(WorkerId(7), &[TaskId(2)], &[]);
        assert_eq!(w.take(), vec![Instruction::Execute { task: TaskId(10) }]);
    }

    #[test]
    fn a_task_refused_for_an_input_no_one_holds_takes_no_hold_on_a_cached_input() {
        let mut w = WorkerCore::new(1);
        w.on_compute(TaskId(10), 0, vec![dep(1, &[7]), dep(2, &[8])]);
        w.take();
        w.on_fetched(WorkerId(7), &[TaskId(1)], &[]);
        assert_eq!(w.take(), vec![]);
        assert!(w.has_data(TaskId(1)));
        w.on_compute(TaskId(11), 1, vec![dep(1, &[7]), dep(3, &[])]);
        assert_eq!(
            w.take(),
            vec![
                Instruction::Send(ToScheduler::MissingData {
                    task: TaskId(11),
                    dep: TaskId(3),
                    holder: WorkerId(u32::MAX)
                }),
                Instruction::Drop { task: TaskId(11) }
            ]
        );
        w.on_fetched(WorkerId(8), &[TaskId(2)], &[]);
        assert_eq!(w.take(), vec![Instruction::Execute { task: TaskId(10) }]);
        // Task 10 was the last reader of both inputs.
        w.on_executed(TaskId(10), Ok((8, 1)));
        assert_eq!(
            w.take(),
            vec![
                Instruction::Discard { task: TaskId(1) },
                Instruction::Discard { task: TaskId(2) },
                finished(10, 8, 1)
            ]
        );
        assert!(!w.has_data(TaskId(1)));
    }

    #[test]
    fn a_task_assigned_again_while_running_or_after_it_finished_is_ignored() {
        let mut w = WorkerCore::new(2);
        w.on_compute(TaskId(1), 0, vec![]);
        assert_eq!(w.take(), vec![Instruction::Execute { task: TaskId(1) }]);
        w.on_compute(TaskId(1), 0, vec![]);
        assert_eq!(w.take(), vec![]);
        assert_eq!((w.assigned(), w.executing(), w.owned()), (1, 1, 0));
        w.on_executed(TaskId(1), Ok((8, 1)));
        assert_eq!(w.take(), vec![finished(1, 8, 1)]);
        assert_eq!((w.assigned(), w.executing(), w.owned()), (0, 0, 1));
        w.on_compute(TaskId(1), 0, vec![]);
        assert_eq!(w.take(), vec![]);
        assert_eq!((w.assigned(), w.executing(), w.owned()), (0, 0, 1));
    }

    #[test]
    fn errors_are_reported() {
        let mut w = WorkerCore::new(1);
        w.on_compute(TaskId(1), 0, vec![]);
        w.take();
        w.on_executed(TaskId(1), Err("boom".into()));
        assert_eq!(
            w.take(),
            vec![Instruction::Send(ToScheduler::TaskErred(
                rask_proto::msg::TaskErredMsg {
                    task: TaskId(1),
                    message: "boom".into()
                }
            ))]
        );
    }
}

#[cfg(test)]
mod props {
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
                    Instruction::Execute { task } => {
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
                    Instruction::Send(ToScheduler::TaskFinished(m)) => {
                        self.finished.insert(m.task);
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
                            let done = m.running.remove(t as usize % m.running.len());
                            m.store.insert(done);
                            core.on_executed(done, Ok((8, 1)));
                        }
                    }
                    _ => core.on_free(task),
                }
                m.apply(&mut core, nthreads)?;
                prop_assert_eq!(core.executing(), m.running.len());
            }
        }
    }
}
