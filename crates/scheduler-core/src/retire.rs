//! Graceful retirement, as Dask's `retire_workers` with the Active Memory Manager's
//! `RetireWorker` policy: a retiring worker gets no new task (placement skips it), the
//! tasks it runs finish, and each value held only by retiring workers is copied to a
//! running worker that runs the value's code and has memory for it. Once its tasks are
//! done and everything it holds has a copy on a running worker, it is closed and removed
//! with nothing to recompute. A worker whose data no running worker can take is not
//! retired: it runs again (or, when it asked to leave itself, it is closed all the same
//! and what only it held is recomputed where needed).
//!
//! Progress is checked at the end of each stimulus, and only when something a
//! retirement waits on changed (`retire_dirty`): with no retirement under way this costs
//! one branch per stimulus.

use std::sync::Arc;

use rask_proto::msg::DepLoc;
use rask_proto::{ClientId, TaskId, WorkerId};

use crate::api::Action;
use crate::core::SchedulerCore;
use crate::state::Retirement;
use crate::story::Why;

/// Where a retiring worker stands.
#[derive(Debug, PartialEq, Eq)]
enum Progress {
    /// Its tasks are running, or copies of its values are on their way.
    Waiting,
    /// Nothing runs on it and each value it holds has a copy on a running worker.
    Done,
    /// A value only retiring workers hold cannot go anywhere.
    Stuck,
}

impl SchedulerCore {
    /// A client asks to retire these workers (ids not registered, and repeats, are
    /// ignored). When each has closed, been refused or died, [`Action::Retired`] tells
    /// the client (`req` echoed) which of them retired.
    pub fn on_retire_workers(&mut self, client: ClientId, req: u64, workers: &[WorkerId]) {
        self.begin(Why::RetireWorkers, None);
        self.start_retirement(Some((client, req)), workers);
    }

    /// A worker asks to be retired (its lifetime is over): as for
    /// [`SchedulerCore::on_retire_workers`], except that when no other worker can take
    /// its data it is closed all the same, and what only it held is recomputed where
    /// needed.
    pub fn on_close_gracefully(&mut self, worker: WorkerId) {
        self.begin(Why::CloseGracefully, Some(worker));
        self.start_retirement(None, &[worker]);
    }

    /// A worker now holds copies of these values, fetched as
    /// [`Action::AcquireReplica`] asked; reports of copies no longer wanted are ignored
    /// (the worker was told to drop them).
    pub fn on_replicas_acquired(&mut self, worker: WorkerId, tasks: &[TaskId]) {
        self.begin(Why::ReplicasAcquired, Some(worker));
        for t in tasks {
            if self.replicas.get(t) != Some(&worker) {
                continue;
            }
            self.replicas.remove(t);
            let task = self
                .tasks
                .get_mut(t)
                .expect("invariant: a value being copied is in memory");
            task.who_has.push(worker);
            let nbytes = task.nbytes;
            let w = self
                .workers
                .get_mut(&worker)
                .expect("invariant: a copy's recipient is registered");
            w.incoming -= nbytes;
            w.has_what.add(worker, *t, &self.tasks);
            w.nbytes += nbytes;
            self.retire_dirty = true;
        }
        self.retire_step();
    }

    /// A worker could not fetch a copy of `t`'s value: `holder`, the last it tried, does
    /// not have it (or could not be reached) and is no longer counted as holding it; a
    /// value no one holds any more is recomputed if needed. The retirement then looks
    /// for another copy.
    pub fn on_replica_missing(&mut self, worker: WorkerId, t: TaskId, holder: WorkerId) {
        self.begin(Why::ReplicaMissing, Some(worker));
        if self.replicas.get(&t) != Some(&worker) {
            return;
        }
        self.replicas.remove(&t);
        let nbytes = self.tasks[&t].nbytes;
        self.workers
            .get_mut(&worker)
            .expect("invariant: a copy's recipient is registered")
            .incoming -= nbytes;
        self.retire_dirty = true;
        self.drop_holder(t, holder);
        self.run();
        self.fill_slots();
        self.retire_step();
    }

    /// Whether a worker is registered and retiring.
    pub fn is_retiring(&self, w: WorkerId) -> bool {
        self.workers.get(&w).is_some_and(|w| w.retiring)
    }

    fn start_retirement(&mut self, asker: Option<(ClientId, u64)>, workers: &[WorkerId]) {
        let mut pending = Vec::new();
        for w in workers {
            if pending.contains(w) {
                continue;
            }
            if let Some(worker) = self.workers.get_mut(w) {
                worker.retiring = true;
                pending.push(*w);
                self.reindex(*w);
            }
        }
        self.retirements.push(Retirement {
            asker,
            pending,
            retired: Vec::new(),
        });
        self.finish_retirements();
        self.retire_dirty = true;
        self.retire_step();
    }

    /// Advances every retirement: asks for the copies still missing, closes the workers
    /// that are done, refuses those whose data cannot go anywhere. Runs at the end of
    /// every stimulus that changes what a retirement waits on.
    pub(crate) fn retire_step(&mut self) {
        while self.retire_dirty {
            self.retire_dirty = false;
            let mut retiring: Vec<WorkerId> = self
                .retirements
                .iter()
                .flat_map(|r| r.pending.iter().copied())
                .collect();
            retiring.sort_unstable();
            retiring.dedup();
            for w in retiring {
                match self.retire_progress(w) {
                    Progress::Waiting => {}
                    Progress::Done => self.close_retired(w),
                    Progress::Stuck => self.refuse_retirement(w),
                }
            }
        }
    }

    /// Asks for copies of the values only retiring workers hold (one at a time per
    /// value), and says whether `w` can close.
    fn retire_progress(&mut self, w: WorkerId) -> Progress {
        let worker = &self.workers[&w];
        let mut waiting = !worker.processing.is_empty();
        for t in worker.has_what.current(w, &self.tasks) {
            if self.tasks[&t]
                .who_has
                .into_iter()
                .any(|h| !self.workers[h].retiring)
            {
                continue;
            }
            waiting = true;
            if self.replicas.contains_key(&t) {
                continue;
            }
            let Some(r) = self.replica_target(t) else {
                return Progress::Stuck;
            };
            let task = &self.tasks[&t];
            let dep = DepLoc {
                task: t,
                nbytes: task.nbytes,
                holders: task.who_has.to_vec(),
            };
            self.replicas.insert(t, r);
            self.workers
                .get_mut(&r)
                .expect("invariant: just chosen")
                .incoming += dep.nbytes;
            self.actions.push(Action::AcquireReplica { worker: r, dep });
        }
        if waiting {
            Progress::Waiting
        } else {
            Progress::Done
        }
    }

    /// The worker to keep a copy of `t`'s value: running, of the value's code, with room
    /// for it under its memory limit (0: no limit known) besides what it holds and what
    /// is on its way to it; the one holding least, then the lowest id.
    fn replica_target(&self, t: TaskId) -> Option<WorkerId> {
        let task = &self.tasks[&t];
        let (code, nbytes) = (task.code(), task.nbytes);
        self.workers
            .iter()
            .filter(|(_, w)| !w.retiring && w.fits(&[], code))
            .filter(|(_, w)| {
                w.spec.memory_limit == 0 || w.nbytes + w.incoming + nbytes <= w.spec.memory_limit
            })
            .min_by_key(|(id, w)| (w.nbytes + w.incoming, **id))
            .map(|(id, _)| *id)
    }

    /// Closes a retired worker: each value it held keeps its other holders (clients are
    /// told them, as they fetch from the holders they know), nothing is recomputed.
    fn close_retired(&mut self, w: WorkerId) {
        let name = self.workers[&w].name.clone();
        self.remove_worker(w, false);
        self.actions.push(Action::CloseWorker { worker: w });
        self.resolve_retiring(w, Some(name));
    }

    /// No running worker can take a value only `w` (and other retiring workers) hold: `w`
    /// is not retired. It runs again, unless it asked to leave itself: then it is closed
    /// all the same.
    fn refuse_retirement(&mut self, w: WorkerId) {
        let leaves = self
            .retirements
            .iter()
            .any(|r| r.asker.is_none() && r.pending.contains(&w));
        if leaves {
            self.remove_worker(w, false);
            self.actions.push(Action::CloseWorker { worker: w });
        } else {
            self.workers
                .get_mut(&w)
                .expect("invariant: a retiring worker is registered")
                .retiring = false;
            self.reindex(w);
            self.worker_available();
        }
        self.resolve_retiring(w, None);
        // A running worker again can hold the values of the other retiring workers.
        self.retire_dirty = true;
    }

    /// `w` closed (`Some(name)`), was refused or was lost: the retirements waiting on it
    /// note it, and those waiting on nothing else finish.
    pub(crate) fn resolve_retiring(&mut self, w: WorkerId, retired: Option<Arc<str>>) {
        for r in &mut self.retirements {
            if let Some(i) = r.pending.iter().position(|x| *x == w) {
                r.pending.remove(i);
                if let Some(name) = &retired {
                    r.retired.push((w, name.clone()));
                }
            }
        }
        self.finish_retirements();
    }

    fn finish_retirements(&mut self) {
        let mut i = 0;
        while i < self.retirements.len() {
            if !self.retirements[i].pending.is_empty() {
                i += 1;
                continue;
            }
            let r = self.retirements.remove(i);
            if let Some((client, req)) = r.asker {
                self.actions.push(Action::Retired {
                    client,
                    req,
                    workers: r.retired,
                });
            }
        }
    }
}
