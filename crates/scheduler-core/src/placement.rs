//! The read-only cost model: which worker a ready task should go to (data it lacks and
//! the link it would come over, occupancy, resources, device memory), and which worker
//! a task may be sent ahead to. Retiring workers are never chosen.

use rask_proto::{TaskId, WorkerId};

use crate::core::SchedulerCore;
use crate::load::LEAST_LOADED;
use crate::state::{Task, Worker};
use crate::TaskState;

/// Holders of a task's inputs weighed in a large cluster, at most.
const HOLDERS: usize = 16;

pub(crate) enum Placement {
    Worker(WorkerId),
    NoSlot,
    NoFit,
}

impl SchedulerCore {
    /// Where a waiting task can be sent ahead of its inputs: the worker running every
    /// input not yet in memory, if it has room. The task then starts there the moment its
    /// last input is done — no round trip through the scheduler per link of a chain. Not
    /// while one of those inputs is being asked back from that worker (stolen, it would
    /// run elsewhere, and the task would wait there for a value never made there).
    pub(crate) fn preassign_target(&self, t: TaskId) -> Option<WorkerId> {
        let task = &self.tasks[&t];
        let mut target = None;
        for d in task.deps.iter() {
            let dt = &self.tasks[d];
            match dt.state {
                TaskState::Memory => {}
                TaskState::Processing if !self.steals.is_empty() && self.steals.contains_key(d) => {
                    return None
                }
                TaskState::Processing => {
                    let w = dt.processing_on?;
                    if target.is_some_and(|x| x != w) {
                        return None;
                    }
                    target = Some(w);
                }
                _ => return None,
            }
        }
        let w = target?;
        let worker = self.workers.get(&w)?;
        let resources = task.resources();
        (worker.fits(resources, task.code()) && worker.takes_tasks(&self.cfg, resources))
            .then_some(w)
    }

    /// Where a ready task should run: the worker that has room and would finish it
    /// first (its work per thread, plus moving the inputs it lacks over the cheapest
    /// link). In a cluster of more than [`LEAST_LOADED`] workers, a task that any worker
    /// may run weighs only the holders of its largest inputs and the least loaded
    /// workers, so that a decision costs the same with 1,000 workers as with 10; the
    /// others are weighed only when none of those has room.
    pub(crate) fn decide_worker(&self, t: TaskId) -> Placement {
        let task = &self.tasks[&t];
        let unrestricted = task.resources().is_empty() && task.code().is_none();
        if unrestricted && self.free_workers == 0 {
            // No running worker has a free slot.
            let any_fit = self
                .workers
                .values()
                .any(|w| !w.retiring && w.fits(&[], None));
            return if any_fit {
                Placement::NoSlot
            } else {
                Placement::NoFit
            };
        }
        if unrestricted && self.places_by_index() {
            let best = self
                .candidates(t)
                .into_iter()
                .filter_map(|id| {
                    let w = self.workers.get(&id)?;
                    let takes = !w.retiring && w.fits(&[], None) && w.has_capacity(&self.cfg, &[]);
                    takes.then(|| (self.cost(task, id, w), id))
                })
                .min_by(|a, b| a.partial_cmp(b).expect("invariant: costs are numbers"));
            if let Some((_, w)) = best {
                return Placement::Worker(w);
            }
        }
        let mut best: Option<(f64, WorkerId)> = None;
        let mut any_fit = false;
        for (id, w) in &self.workers {
            // A retiring worker takes no new task.
            if w.retiring || !w.fits(task.resources(), task.code()) {
                continue;
            }
            any_fit = true;
            if !w.has_capacity(&self.cfg, task.resources()) {
                continue;
            }
            let cost = self.cost(task, *id, w);
            if best.is_none_or(|(c, b)| (cost, *id) < (c, b)) {
                best = Some((cost, *id));
            }
        }
        match best {
            Some((_, w)) => Placement::Worker(w),
            None if any_fit => Placement::NoSlot,
            None => Placement::NoFit,
        }
    }

    /// How many workers placement has weighed (computed the cost of a task on), in all:
    /// the work of its decisions, which in a large cluster is bounded by the holders of
    /// a task's inputs and the least loaded workers, whatever the cluster's size.
    pub fn workers_weighed(&self) -> u64 {
        self.weighed.get()
    }

    /// The workers [`SchedulerCore::decide_worker`] weighs in a large cluster, each once:
    /// the holders of the task's largest inputs (at most [`HOLDERS`]), then the least
    /// loaded running workers that have room (at most [`LEAST_LOADED`]).
    fn candidates(&self, t: TaskId) -> Vec<WorkerId> {
        let task = &self.tasks[&t];
        let mut deps: Vec<(u64, TaskId)> = task
            .deps
            .iter()
            .map(|d| (self.tasks[d].nbytes, *d))
            .collect();
        deps.sort_unstable_by(|a, b| b.cmp(a));
        let mut out: Vec<WorkerId> = Vec::with_capacity(HOLDERS + LEAST_LOADED);
        'deps: for (_, d) in deps {
            for h in self.tasks[&d].who_has.iter() {
                if out.len() == HOLDERS {
                    break 'deps;
                }
                if !out.contains(h) {
                    out.push(*h);
                }
            }
        }
        let holders = out.len();
        for id in self.least_loaded() {
            if out.len() == holders + LEAST_LOADED {
                break;
            }
            let w = &self.workers[&id];
            if w.has_capacity(&self.cfg, &[]) && w.fits(&[], None) && !out.contains(&id) {
                out.push(id);
            }
        }
        out
    }

    /// When task `t` would finish on worker `id`, relative to the others: its work per
    /// thread plus the time to move the inputs it lacks (each over the cheapest link
    /// from a holder), plus, on a GPU whose memory is full, pushing the output off it.
    /// The caller checks that the worker takes the task now (not retiring, fit, room).
    fn cost(&self, task: &Task, id: WorkerId, w: &Worker) -> f64 {
        self.weighed.set(self.weighed.get() + 1);
        // Bytes to move, each weighted by the cheapest link from a holder.
        let mut missing: f64 = task
            .deps
            .iter()
            .map(|d| &self.tasks[d])
            .filter(|d| !d.who_has.contains(&id))
            .map(|d| {
                let cheapest = d
                    .who_has
                    .as_slice()
                    .iter()
                    .filter_map(|h| self.workers.get(h))
                    .map(|h| w.link_factor(h))
                    .fold(1.0, f64::min);
                d.nbytes as f64 * cheapest
            })
            .sum();
        // On a GPU whose memory is full, the output (guessed as large as the inputs)
        // pushes as many bytes off the device to the host, over PCIe.
        if w.spec.device_spill_at > 0 {
            let out: u64 = task.deps.iter().map(|d| self.tasks[d].nbytes).sum();
            let over = (w.device_used + out).saturating_sub(w.spec.device_spill_at);
            missing += over as f64 * 0.5;
        }
        w.occupancy_us as f64 / w.spec.nthreads.max(1) as f64 + missing / self.cfg.bandwidth * 1e6
    }
}
