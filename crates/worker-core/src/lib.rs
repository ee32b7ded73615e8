//! The worker as a sans-IO state machine: events in ([`WorkerCore`]'s `on_*` methods),
//! [`Instruction`]s out, in order.
//!
//! It decides what to fetch from which peer, what to run next (by priority, up to the
//! number of threads), what to report to the scheduler and what data to drop. It holds no
//! data itself (the worker server's store does) and must not do I/O or read a clock.
//!
//! Data on a worker is of two kinds: *owned* — outputs of tasks computed here, which the
//! scheduler knows about and frees explicitly — and *cached* — dependencies fetched from
//! peers, kept while a local task still needs them. An owned value the scheduler frees
//! while tasks assigned here still read it becomes cached for them, as Dask's worker
//! keeps a freed key its waiting dependents need.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod fetch;
mod holds;
mod inline;
mod ready;
pub mod spill;
mod validate;

pub use inline::{OpTimes, INLINE_MAX_US};

use rask_proto::msg::{DepLoc, ToScheduler};
use rask_proto::{IdMap, IdSet, TaskId, WorkerId};
use rustc_hash::FxHashMap;

/// What the worker server must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Instruction {
    /// Fetch these tasks' data from a peer, in one request.
    Fetch {
        /// The peer to ask (the next holder not yet tried).
        from: WorkerId,
        /// The values wanted from it.
        tasks: Vec<TaskId>,
    },
    /// Run a task: every input is in the local store. `inline`: its op is measured to
    /// take microseconds, so running it in place costs less than handing it to a thread
    /// (two cross-thread wake-ups); the worker may still hand it over (to bound how long
    /// one wake-up runs ops).
    Execute {
        /// The task.
        task: TaskId,
        /// Run it on the calling thread rather than an executor thread.
        inline: bool,
    },
    /// Tell the scheduler a task finished; `with_value`: the scheduler asked for its value
    /// (a client waits on it), which goes with the news when it is small.
    Finished {
        /// The task.
        task: TaskId,
        /// Its result's size ([`Finished::nbytes`]).
        nbytes: u64,
        /// How long its op ran, in microseconds.
        duration_us: u64,
        /// Send the value with the news if it is small.
        with_value: bool,
        /// The run reported ([`Assigned::run`]).
        run: u32,
        /// How long it waited for inputs fetched from peers: from its assignment here
        /// to the arrival of the last of them, on the clock given to
        /// [`WorkerCore::set_now`] (0 when none was fetched).
        fetch_us: u64,
    },
    /// Tell the scheduler.
    Send(ToScheduler),
    /// Drop a task's data from the local store.
    Discard {
        /// The task whose value goes.
        task: TaskId,
    },
    /// Forget the compute request of a task that will not run (its op and arguments).
    Drop {
        /// The task.
        task: TaskId,
    },
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
    /// The op, as [`OpTimes`] numbers it.
    op: u32,
    /// The scheduler asked for the result's value inline.
    report: bool,
    /// The assignment being run (its report names it).
    run: u32,
    /// Assigned again while its cancelled run still runs: taken up when that run ends.
    again: Option<Box<Again>>,
    /// Inputs not yet in the local store.
    missing: u32,
    state: State,
    /// When it was assigned here (see [`WorkerCore::set_now`]).
    assigned_us: u64,
    /// From `assigned_us` to the arrival of the last input fetched for it so far.
    fetch_us: u64,
}

#[derive(Debug, Default)]
struct Fetch {
    /// Peers tried so far, in order; the last is the one in flight.
    tried: Vec<WorkerId>,
    /// Local tasks waiting for this input.
    waiters: Vec<TaskId>,
    /// The scheduler asked for a copy to keep ([`WorkerCore::on_acquire_replicas`]): the
    /// value's holders. Once here the value is owned, as an output computed here.
    replica: Option<Vec<WorkerId>>,
}

/// The worker's bookkeeping. See the crate docs.
#[derive(Debug)]
pub struct WorkerCore {
    nthreads: usize,
    tasks: IdMap<TaskId, Task>,
    ready: ready::ReadySet,
    executing: usize,
    /// Outputs computed here, known to the scheduler.
    owned: IdSet<TaskId>,
    /// Fetched inputs and how many local tasks still need each.
    cached: IdMap<TaskId, u32>,
    /// Owned values and how many tasks assigned here read them (none: not listed).
    uses: IdMap<TaskId, u32>,
    fetching: IdMap<TaskId, Fetch>,
    /// Tasks assigned here waiting for the output of another task assigned here.
    local_waiters: IdMap<TaskId, Vec<TaskId>>,
    /// Tasks that waited for a task assigned here which is not any more (freed, erred, or
    /// its run cancelled): they wait for it to be assigned here again, or to be freed.
    orphans: IdMap<TaskId, Vec<TaskId>>,
    out: Vec<Instruction>,
    /// No task starts while paused (memory above the pause threshold).
    paused: bool,
    /// How long each op takes: what runs inline.
    ops: OpTimes,
    /// Tasks run, on the CPU and by the device's kernels.
    ran: [u64; 2],
    /// The caller's clock, as last set (microseconds).
    now_us: u64,
}

/// A task the scheduler assigned.
#[derive(Clone, Debug)]
pub struct Assigned<'a> {
    /// The task.
    pub task: TaskId,
    /// Lower runs first.
    pub priority: u64,
    /// Its inputs and where each can be fetched if not held here.
    pub deps: Vec<DepLoc>,
    /// Its op's name, by which the core learns how long the op takes (and so whether
    /// it runs inline).
    pub op: &'a str,
    /// A client waits on the result: report it inline when small.
    pub report_value: bool,
    /// The scheduler's count of the task's assignments, carried back by its report.
    pub run: u32,
}

impl<'a> Assigned<'a> {
    /// The assignment a compute message from the scheduler makes.
    pub fn of(c: &'a rask_proto::msg::ComputeMsg) -> Self {
        Assigned {
            task: c.task,
            priority: c.priority,
            deps: c.deps.clone(),
            op: &c.op,
            report_value: c.report_value,
            run: c.run,
        }
    }
}

/// An assignment waiting for a cancelled run of its task to end.
#[derive(Debug)]
struct Again {
    priority: u64,
    deps: Vec<DepLoc>,
    op: u32,
    report: bool,
    run: u32,
}

/// What a task's op produced (the value itself is in the worker's store).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Finished {
    /// The result's approximate size in memory (`Value::nbytes`).
    pub nbytes: u64,
    /// It ran by the device's kernels (else on the CPU).
    pub on_device: bool,
}

impl WorkerCore {
    /// A worker running up to `nthreads` tasks at once.
    pub fn new(nthreads: usize) -> Self {
        WorkerCore {
            nthreads: nthreads.max(1),
            tasks: Default::default(),
            ready: ready::ReadySet::default(),
            executing: 0,
            owned: Default::default(),
            cached: Default::default(),
            uses: Default::default(),
            fetching: Default::default(),
            local_waiters: Default::default(),
            orphans: Default::default(),
            out: Vec::new(),
            paused: false,
            ops: OpTimes::default(),
            ran: [0; 2],
            now_us: 0,
        }
    }

    /// Sets the clock that a task's wait for its inputs is measured on (the core reads
    /// no clock itself); call it before handling inputs. Never set, every wait is 0.
    pub fn set_now(&mut self, now_us: u64) {
        self.now_us = now_us;
    }

    /// Tasks run so far, on the CPU (`[0]`) and by the device's kernels (`[1]`).
    pub fn ran(&self) -> [u64; 2] {
        self.ran
    }

    /// How long each op takes, as measured here.
    pub fn op_times(&self) -> &OpTimes {
        &self.ops
    }

    /// The instructions produced since the last call, in order.
    pub fn take(&mut self) -> Vec<Instruction> {
        let mut out = Vec::new();
        self.take_into(&mut out);
        out
    }

    /// [`WorkerCore::take`] into `into` (cleared first), whose room the core keeps for
    /// the instructions to come: a caller that passes the same list each time allocates
    /// none per instruction.
    pub fn take_into(&mut self, into: &mut Vec<Instruction>) {
        // The unit tests check the bookkeeping at every step they look at.
        #[cfg(test)]
        if let Err(e) = self.validate() {
            panic!("worker core: {e}");
        }
        into.clear();
        std::mem::swap(&mut self.out, into);
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

    /// The scheduler assigned a task (of an unnamed op, its value not asked for).
    pub fn on_compute(&mut self, task: TaskId, priority: u64, deps: Vec<DepLoc>) {
        self.on_assigned([Assigned {
            task,
            priority,
            deps,
            op: "",
            report_value: false,
            run: 0,
        }]);
    }

    /// The scheduler assigned several tasks at once: the most urgent of them run first.
    pub fn on_compute_batch(
        &mut self,
        batch: impl IntoIterator<Item = (TaskId, u64, Vec<DepLoc>)>,
    ) {
        self.on_assigned(batch.into_iter().map(|(task, priority, deps)| Assigned {
            task,
            priority,
            deps,
            op: "",
            report_value: false,
            run: 0,
        }));
    }

    /// The scheduler assigned tasks, with their ops: the most urgent of them run first.
    pub fn on_assigned<'a>(&mut self, batch: impl IntoIterator<Item = Assigned<'a>>) {
        for a in batch {
            let op = self.ops.id(a.op);
            self.add_compute(a.task, a.priority, a.deps, op, a.report_value, a.run);
        }
        self.schedule();
    }

    fn add_compute(
        &mut self,
        task: TaskId,
        priority: u64,
        deps: Vec<DepLoc>,
        op: u32,
        report: bool,
        run: u32,
    ) {
        if let Some(t) = self.tasks.get_mut(&task) {
            if t.state == State::Cancelled {
                // Freed while running, then assigned again: a new run, taken up when the
                // cancelled one ends. The run in progress does not count for it: the
                // scheduler may have given its inputs out again, and counts them as
                // coming (its report would come before theirs, and be refused).
                t.again = Some(Box::new(Again {
                    priority,
                    deps,
                    op,
                    report,
                    run,
                }));
            } else {
                // A duplicate assignment: its report names the latest.
                t.run = run;
            }
            return;
        }
        if self.owned.contains(&task) {
            return; // duplicate assignment: done
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
            if self.hold(d.task) {
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
                            replica: None,
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
        // Tasks left waiting when it was here before wait for this run.
        if let Some(ws) = self.orphans.remove(&task) {
            self.local_waiters.entry(task).or_default().extend(ws);
        }
        self.tasks.insert(
            task,
            Task {
                priority,
                deps,
                op,
                report,
                run,
                again: None,
                missing,
                state,
                assigned_us: self.now_us,
                fetch_us: 0,
            },
        );
    }

    /// A task's op ran for `duration_us` and returned a value (now in the store) or an
    /// error.
    pub fn on_executed(
        &mut self,
        task: TaskId,
        duration_us: u64,
        result: Result<Finished, String>,
    ) {
        let Some(t) = self.tasks.get_mut(&task) else {
            return;
        };
        let (cancelled, report, run, fetch_us) =
            (t.state == State::Cancelled, t.report, t.run, t.fetch_us);
        let again = t.again.take();
        self.ops.observe(t.op, duration_us);
        let waiters = self.local_waiters.remove(&task).unwrap_or_default();
        self.executing -= 1;
        self.remove_task(task);
        match result {
            _ if cancelled => {
                self.orphan(task, waiters);
                self.out.push(Instruction::Discard { task });
                if let Some(a) = again {
                    self.add_compute(task, a.priority, a.deps, a.op, a.report, a.run);
                }
            }
            Ok(Finished { nbytes, on_device }) => {
                self.ran[on_device as usize] += 1;
                self.make_owned(task);
                // A copy of it still being fetched (asked for before the scheduler gave
                // the task to this worker) is not waited for: its waiters have it here.
                let fetched_for = self
                    .fetching
                    .remove(&task)
                    .map_or_else(Vec::new, |f| f.waiters);
                for w in waiters.into_iter().chain(fetched_for) {
                    if let Some(t) = self.tasks.get_mut(&w) {
                        *self.uses.entry(task).or_default() += 1;
                        t.missing -= 1;
                        if t.missing == 0 && t.state == State::Fetching {
                            t.state = State::Ready;
                            self.ready.insert((t.priority, w));
                        }
                    }
                }
                self.out.push(Instruction::Finished {
                    task,
                    nbytes,
                    duration_us,
                    with_value: report,
                    run,
                    fetch_us,
                });
            }
            Err(message) => {
                // Local waiters stay until the scheduler frees them.
                self.orphan(task, waiters);
                self.out.push(Instruction::Send(ToScheduler::TaskErred(
                    rask_proto::msg::TaskErredMsg { task, message, run },
                )));
            }
        }
        self.schedule();
    }

    /// The scheduler freed a task: drop its data, or cancel it (or the copy of it being
    /// fetched).
    pub fn on_free(&mut self, task: TaskId) {
        if self.owned.remove(&task) {
            match self.uses.remove(&task) {
                // Tasks assigned here read it still: kept for them.
                Some(n) => *self.cached.entry(task).or_default() += n,
                None => self.out.push(Instruction::Discard { task }),
            }
        }
        if let Some(f) = self.fetching.get_mut(&task) {
            if f.replica.take().is_some() && f.waiters.is_empty() {
                // Its value, when it comes, is dropped.
                self.fetching.remove(&task);
            }
        }
        self.unassign(task);
        self.schedule();
    }

    /// Work stealing: the scheduler would give `task` (its run `run`) to another worker.
    /// Released (`true`) if that run has not started here and no task here waits for its
    /// value; kept otherwise — it runs (or ran) here, and its report stands.
    pub fn on_steal(&mut self, task: TaskId, run: u32) -> bool {
        let releasable = self.tasks.get(&task).is_some_and(|t| {
            t.run == run && matches!(t.state, State::Fetching | State::Ready) && t.again.is_none()
        }) && self.local_waiters.get(&task).is_none_or(|ws| ws.is_empty());
        if releasable {
            self.unassign(task);
            self.schedule();
        }
        releasable
    }

    /// The worker joined its scheduler again as a new member (after a partition, or a
    /// scheduler restart): nothing it was assigned stands. Tasks not started are dropped,
    /// running ones are cancelled (their results dropped), fetches are abandoned, and
    /// every value held here — computed or fetched — is owned, to be reported: the
    /// values held, sorted.
    pub fn on_rejoined(&mut self) -> Vec<TaskId> {
        // Fetched inputs are values held here like any other.
        let cached: Vec<TaskId> = self.cached.keys().copied().collect();
        for t in cached {
            self.make_owned(t);
        }
        self.fetching.clear();
        let mut tasks: Vec<TaskId> = self.tasks.keys().copied().collect();
        tasks.sort_unstable();
        for t in tasks {
            self.unassign(t);
        }
        self.local_waiters.clear();
        self.orphans.clear();
        let mut held: Vec<TaskId> = self.owned.iter().copied().collect();
        held.sort_unstable();
        held
    }

    /// Pauses (or resumes) starting tasks; running ones finish.
    pub fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
        if !paused {
            self.schedule();
        }
    }

    /// Whether new tasks are held back (see [`WorkerCore::set_paused`]).
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
            let op = self.tasks[&t].op;
            self.out.push(Instruction::Execute {
                task: t,
                inline: self.ops.fast(op),
            });
        }
    }
}

#[cfg(test)]
mod tests;
