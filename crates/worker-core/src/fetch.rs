//! Dependencies from peers: fetching them, what arrived and what could not be fetched,
//! and the replicas a retiring worker's values ask for.

use rask_proto::msg::{DepLoc, ToScheduler};
use rask_proto::{TaskId, WorkerId};
use rustc_hash::FxHashMap;

use crate::{Fetch, Instruction, State, WorkerCore};

impl WorkerCore {
    /// The scheduler asks this worker to keep copies of these values (another worker
    /// retires): each is fetched from its holders unless already here, and kept as owned
    /// data until freed. The scheduler hears which arrived
    /// ([`ToScheduler::ReplicasAcquired`]) and which could not be fetched
    /// ([`ToScheduler::ReplicaMissing`]).
    pub fn on_acquire_replicas(&mut self, values: Vec<DepLoc>) {
        let mut here = Vec::new();
        let mut requests: FxHashMap<WorkerId, Vec<TaskId>> = FxHashMap::default();
        for d in values {
            if self.owned.contains(&d.task) {
                here.push(d.task);
            } else if self.cached.contains_key(&d.task) {
                // Fetched for local tasks already: kept now until freed.
                self.make_owned(d.task);
                here.push(d.task);
            } else if let Some(f) = self.fetching.get_mut(&d.task) {
                f.replica = Some(d.holders);
            } else if let Some(&from) = d.holders.first() {
                self.fetching.insert(
                    d.task,
                    Fetch {
                        tried: vec![from],
                        waiters: Vec::new(),
                        replica: Some(d.holders),
                    },
                );
                requests.entry(from).or_default().push(d.task);
            } else {
                self.out
                    .push(Instruction::Send(ToScheduler::ReplicaMissing {
                        task: d.task,
                        holder: WorkerId(u32::MAX),
                    }));
            }
        }
        let mut requests: Vec<_> = requests.into_iter().collect();
        requests.sort_unstable_by_key(|(w, _)| *w);
        for (from, tasks) in requests {
            self.out.push(Instruction::Fetch { from, tasks });
        }
        if !here.is_empty() {
            self.out
                .push(Instruction::Send(ToScheduler::ReplicasAcquired {
                    tasks: here,
                }));
        }
    }

    /// Whether a copy of `task` is being fetched (a copy that arrives for a task not
    /// fetched is not wanted: the worker drops it rather than storing it).
    pub fn fetching(&self, task: TaskId) -> bool {
        self.fetching.contains_key(&task)
    }

    /// A fetch from `from` returned: `got` are now in the store (those still being
    /// fetched: a copy of another was not stored), `missing` the peer lacked.
    pub fn on_fetched(&mut self, from: WorkerId, got: &[TaskId], missing: &[TaskId]) {
        let mut kept = Vec::new();
        for t in got {
            // Nobody waits any more (cancelled meanwhile, or computed here): the worker
            // did not store the copy ([`WorkerCore::fetching`]), nothing to drop.
            let Some(f) = self.fetching.remove(t) else {
                continue;
            };
            let mut live = 0;
            for w in f.waiters {
                if let Some(task) = self.tasks.get_mut(&w) {
                    live += 1;
                    task.fetch_us = self.now_us.saturating_sub(task.assigned_us);
                    task.missing -= 1;
                    if task.missing == 0 && task.state == State::Fetching {
                        task.state = State::Ready;
                        self.ready.insert((task.priority, w));
                    }
                }
            }
            if f.replica.is_some() {
                self.make_owned(*t);
                if live > 0 {
                    *self.uses.entry(*t).or_default() += live;
                }
                kept.push(*t);
            } else if live == 0 {
                self.out.push(Instruction::Discard { task: *t });
            } else {
                self.cached.insert(*t, live);
            }
        }
        if !kept.is_empty() {
            self.out
                .push(Instruction::Send(ToScheduler::ReplicasAcquired {
                    tasks: kept,
                }));
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
        // Try the next holder any waiter, or the scheduler's request for a copy, knows of.
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
            .chain(f.replica.iter().flatten().copied())
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
        if f.replica.is_some() {
            self.out
                .push(Instruction::Send(ToScheduler::ReplicaMissing {
                    task: dep,
                    holder: from,
                }));
        }
        for w in f.waiters {
            if self.tasks.contains_key(&dep) && self.tasks.contains_key(&w) {
                // The input is computed here now (the scheduler gave it to this worker
                // after this fetch was asked for): wait for it here.
                self.local_waiters.entry(dep).or_default().push(w);
            } else if self.tasks.contains_key(&w) {
                self.out.push(Instruction::Send(ToScheduler::MissingData {
                    task: w,
                    dep,
                    holder: from,
                }));
                self.remove_task(w);
            }
        }
    }
}
