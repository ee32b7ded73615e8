//! Work stealing, on Dask's model: when a worker has threads free and nothing waits on
//! the scheduler, a task that another worker holds queued (assigned, not yet started) is
//! asked back from it, if moving the task's inputs to the idle worker costs less than the
//! wait it saves. The victim answers whether it released the task (it had not started)
//! or keeps it (it runs already): only a released task is given to the thief, so no task
//! runs twice. While asked, the task stays the victim's.

use rask_proto::{TaskId, WorkerId};

use crate::api::Action;
use crate::core::SchedulerCore;
use crate::story::Why;
use crate::TaskState;

/// A steal asked of a victim and not yet answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Steal {
    pub(crate) victim: WorkerId,
    pub(crate) thief: WorkerId,
    /// The run asked about.
    pub(crate) run: u8,
}

/// Steals asked in one step, at most (one per free thread found, bounded).
const MAX_STEALS_PER_STEP: usize = 64;

/// After a look for a task to steal found none, the next look waits this long (the
/// core's clock), as Dask balances every 100 ms rather than at every event: a graph that
/// keeps a worker idle by its shape (a chain, with its tasks sent ahead to one worker)
/// would otherwise pay a look at every task. A worker joining looks at once.
pub(crate) const STEAL_QUIET_US: u64 = 10_000;

impl SchedulerCore {
    /// Asks back tasks queued on busy workers for workers with free threads, while each
    /// move pays: run at the end of every stimulus that frees a thread or adds a worker.
    pub(crate) fn steal_step(&mut self) {
        if !self.cfg.work_stealing
            || self.hold
            || !self.queued.is_empty()
            || self.now_us < self.steal_quiet_until
        {
            return;
        }
        for _ in 0..MAX_STEALS_PER_STEP {
            self.refresh_index_if_read();
            let Some(thief) = self.idle_worker() else {
                return;
            };
            let Some((victim, t)) = self.steal_candidate(thief) else {
                self.steal_quiet_until = self.now_us.saturating_add(STEAL_QUIET_US);
                return;
            };
            let run = self.tasks[&t].run;
            self.steals.insert(t, Steal { victim, thief, run });
            self.workers
                .get_mut(&thief)
                .expect("invariant: the thief exists")
                .stealing_in += 1;
            self.reindex(thief);
            self.counters.steal_requests += 1;
            self.actions.push(Action::Steal {
                worker: victim,
                task: t,
                run: u32::from(run),
            });
        }
    }

    /// A worker with a thread that neither runs a task nor has one on its way, the one
    /// with the least work first.
    pub(crate) fn idle_worker(&self) -> Option<WorkerId> {
        if self.places_by_index() {
            return self.idle.first().map(|&(_, id)| id);
        }
        // What the index would say, filed now.
        self.workers
            .iter()
            .filter(|(_, w)| !w.retiring && w.idle())
            .map(|(id, w)| (w.occupancy_us, *id))
            .min()
            .map(|(_, id)| id)
    }

    /// The task to ask back for `thief`: on the worker with the most work per thread
    /// that has tasks queued beyond its threads, the one it would start last, among
    /// those ready to run (inputs in memory), not asked already, that `thief` can run,
    /// that no task assigned with it waits on, and whose move pays: its inputs reach the
    /// thief and it runs there sooner than the victim would start it.
    fn steal_candidate(&self, thief: WorkerId) -> Option<(WorkerId, TaskId)> {
        let to = &self.workers[&thief];
        let mut victims: Vec<(u64, WorkerId)> = self
            .workers
            .iter()
            .filter(|(id, w)| **id != thief && w.processing.len() > w.spec.nthreads.max(1) as usize)
            .map(|(id, w)| (w.occupancy_us / u64::from(w.spec.nthreads.max(1)), *id))
            .collect();
        victims.sort_unstable_by(|a, b| b.cmp(a));
        for (wait_us, victim) in victims {
            let from = &self.workers[&victim];
            let best = from
                .processing
                .iter()
                .filter_map(|t| {
                    let task = &self.tasks[t];
                    if task.waiting_on > 0
                        || self.steals.contains_key(t)
                        || !to.fits(task.resources(), task.code())
                        || !to.has_capacity(&self.cfg, task.resources())
                    {
                        return None;
                    }
                    // A task sent ahead to the victim waits there for this one's value.
                    let awaited = task.dependents.iter().any(|d| {
                        let dt = &self.tasks[d];
                        dt.state == TaskState::Processing && dt.processing_on == Some(victim)
                    });
                    if awaited {
                        return None;
                    }
                    let moved: f64 = task
                        .deps
                        .iter()
                        .map(|d| &self.tasks[d])
                        .filter(|d| !d.who_has.contains(&thief))
                        .map(|d| d.nbytes as f64)
                        .sum();
                    let transfer_us = moved / self.cfg.bandwidth * 1e6;
                    let pays = transfer_us + f64::from(task.est_us) < wait_us as f64;
                    pays.then_some((task.priority, *t))
                })
                .max();
            if let Some((_, t)) = best {
                return Some((victim, t));
            }
        }
        None
    }

    /// A victim's answer to a steal of `t` (its run `run`): released (it had not started
    /// there), the task goes to the thief, or wherever fits best if the thief cannot take
    /// it now; kept, nothing changes. An answer about a run or a task the scheduler has
    /// moved on from is dropped.
    pub fn on_steal_response(&mut self, victim: WorkerId, t: TaskId, run: u32, released: bool) {
        self.begin(Why::Stolen, Some(victim));
        let current = self.tasks.get(&t).is_some_and(|task| {
            task.state == TaskState::Processing
                && task.processing_on == Some(victim)
                && u32::from(task.run) == run
        });
        let Some(steal) = self.steals.get(&t).copied() else {
            return;
        };
        if !current || steal.victim != victim {
            return;
        }
        self.forget_steal(t);
        if !released {
            self.steal_step();
            return;
        }
        self.counters.steals += 1;
        self.release_slot(t);
        let thief_takes = self.workers.get(&steal.thief).is_some_and(|w| {
            let task = &self.tasks[&t];
            w.fits(task.resources(), task.code()) && w.takes_tasks(&self.cfg, task.resources())
        });
        if thief_takes {
            self.assign(t, steal.thief);
        } else {
            // Back to the scheduler: placed again as any ready task.
            self.set_state(t, TaskState::Released);
            self.recs.push_back((t, TaskState::Waiting));
        }
        self.run();
        self.fill_slots();
        self.steal_step();
        self.retire_step();
    }

    /// Drops the steal of `t` in flight, if any (answered, or the task left its victim).
    pub(crate) fn forget_steal(&mut self, t: TaskId) {
        if let Some(s) = self.steals.remove(&t) {
            if let Some(w) = self.workers.get_mut(&s.thief) {
                w.stealing_in -= 1;
                self.reindex(s.thief);
            }
        }
    }
}
