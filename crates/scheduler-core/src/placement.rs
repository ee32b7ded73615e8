//! The read-only cost model: which worker a ready task should go to (data it lacks and
//! the link it would come over, occupancy, resources, device memory), and which worker
//! a task may be sent ahead to. Retiring workers are never chosen.

use rask_proto::{TaskId, WorkerId};

use crate::core::SchedulerCore;
use crate::TaskState;

pub(crate) enum Placement {
    Worker(WorkerId),
    NoSlot,
    NoFit,
}

impl SchedulerCore {
    /// Where a waiting task can be sent ahead of its inputs: the worker running every
    /// input not yet in memory, if it has room. The task then starts there the moment its
    /// last input is done — no round trip through the scheduler per link of a chain.
    pub(crate) fn preassign_target(&self, t: TaskId) -> Option<WorkerId> {
        let task = &self.tasks[&t];
        let mut target = None;
        for d in task.deps.iter() {
            let dt = &self.tasks[d];
            match dt.state {
                TaskState::Memory => {}
                TaskState::Processing if dt.waiting_on == 0 || target.is_some() => {
                    let w = dt.processing_on?;
                    if target.is_some_and(|x| x != w) {
                        return None;
                    }
                    target = Some(w);
                }
                TaskState::Processing => target = Some(dt.processing_on?),
                _ => return None,
            }
        }
        let w = target?;
        let worker = self.workers.get(&w)?;
        let resources = task.resources();
        (worker.fits(resources, task.code()) && worker.takes_tasks(&self.cfg, resources))
            .then_some(w)
    }

    pub(crate) fn decide_worker(&self, t: TaskId) -> Placement {
        let task = &self.tasks[&t];
        let resources = task.resources();
        // The output, guessed as large as the inputs (for the full-GPU penalty below).
        let out: u64 = task.deps.iter().map(|d| self.tasks[d].nbytes).sum();
        let mut best: Option<(f64, WorkerId)> = None;
        let mut any_fit = false;
        for (id, w) in &self.workers {
            // A retiring worker takes no new task.
            if w.retiring || !w.fits(resources, task.code()) {
                continue;
            }
            any_fit = true;
            if !w.has_capacity(&self.cfg, resources) {
                continue;
            }
            // Bytes to move, each weighted by the cheapest link from a holder.
            let mut missing: f64 = task
                .deps
                .iter()
                .map(|d| &self.tasks[d])
                .filter(|d| !d.who_has.contains(id))
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
            // On a GPU whose memory is full, the output pushes as many bytes off the
            // device to the host, over PCIe.
            if w.spec.device_spill_at > 0 {
                let over = (w.device_used + out).saturating_sub(w.spec.device_spill_at);
                missing += over as f64 * 0.5;
            }
            let cost = w.occupancy_us as f64 / w.spec.nthreads.max(1) as f64
                + missing / self.cfg.bandwidth * 1e6;
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
}
