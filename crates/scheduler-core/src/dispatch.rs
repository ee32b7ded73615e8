//! Placing ready tasks: on a worker with a free slot (the compute message and the slot's
//! accounting), in the queue, or in no-worker; giving a slot back; filling free slots
//! from the queue. Reads the cost model in `placement`, never the other way round.

use rask_proto::msg::{ComputeMsg, DepLoc};
use rask_proto::packed::TaskArgs;
use rask_proto::{TaskId, WorkerId};

use crate::api::Action;
use crate::core::SchedulerCore;
use crate::placement::Placement;
use crate::state::add_to;
use crate::TaskState;

impl SchedulerCore {
    /// Puts a ready task (waiting with all deps in memory, queued or no-worker) on the best
    /// worker with a free slot, or in the queue, or in no-worker.
    pub(crate) fn place_ready(&mut self, t: TaskId) {
        let placement = match self.hold {
            true => Placement::NoFit,
            false => {
                self.refresh_index_if_read();
                self.decide_worker(t)
            }
        };
        let target = match placement {
            Placement::Worker(w) => return self.assign(t, w),
            Placement::NoSlot => TaskState::Queued,
            Placement::NoFit => TaskState::NoWorker,
        };
        // `set_state` moves the task between the ready sets.
        if self.tasks[&t].state != target {
            self.set_state(t, target);
        }
    }

    pub(crate) fn assign(&mut self, t: TaskId, w: WorkerId) {
        let task = self
            .tasks
            .get_mut(&t)
            .expect("invariant: assigned tasks exist");
        task.run = task.run.wrapping_add(1);
        let task = &self.tasks[&t];
        let stat = &self.ops[task.op as usize];
        let est = stat
            .avg_us
            .map_or(self.cfg.default_duration_us, |a| a as u64)
            .clamp(1, u32::MAX as u64);
        let msg = ComputeMsg {
            task: t,
            // The op's name, shared: no copy a task.
            op: stat.name.clone().into(),
            // Written to the wire from the packed form: no datum built.
            args: TaskArgs::Packed(task.args.clone()),
            deps: task
                .deps
                .iter()
                .map(|d| {
                    let dt = &self.tasks[d];
                    DepLoc {
                        task: *d,
                        nbytes: dt.nbytes,
                        holders: dt.who_has.to_vec(),
                    }
                })
                .collect(),
            priority: task.priority,
            report_value: !task.who_wants.is_empty(),
            run: u32::from(task.run),
        };
        let bufs = task
            .extra
            .as_ref()
            .map_or_else(Vec::new, |e| e.bufs.clone());
        let resources = task.resources().to_vec();
        let worker = self
            .workers
            .get_mut(&w)
            .expect("invariant: chosen worker exists");
        worker.processing.insert(t);
        worker.occupancy_us += est;
        for (r, a) in resources {
            add_to(&mut worker.used, r, a);
        }
        self.reindex(w);
        let task = self.tasks.get_mut(&t).expect("invariant");
        task.processing_on = Some(w);
        task.est_us = est as u32;
        self.set_state(t, TaskState::Processing);
        self.actions.push(Action::Compute {
            worker: w,
            msg,
            bufs,
        });
        for &d in self.tasks[&t].dependents.as_slice() {
            if self.tasks[&d].state == TaskState::Waiting {
                self.recs.push_back((d, TaskState::Processing));
            }
        }
    }

    /// Undoes `assign`'s accounting; the task keeps its state.
    pub(crate) fn release_slot(&mut self, t: TaskId) {
        if !self.steals.is_empty() {
            self.forget_steal(t);
        }
        let task = self.tasks.get_mut(&t).expect("invariant");
        let Some(w) = task.processing_on.take() else {
            return;
        };
        let est = std::mem::take(&mut task.est_us) as u64;
        let resources = task.resources().to_vec();
        if let Some(worker) = self.workers.get_mut(&w) {
            worker.processing.remove(&t);
            worker.occupancy_us -= est;
            for (r, a) in resources {
                add_to(&mut worker.used, r, -a);
            }
            // A retiring worker closes once its tasks are done.
            self.retire_dirty |= worker.retiring;
            self.reindex(w);
        }
    }

    pub(crate) fn fill_slots(&mut self) {
        let mut skipped = 0;
        let mut cursor: Option<(u64, TaskId)> = None;
        loop {
            let next = match cursor {
                None => self.queued.first(),
                Some(c) => self.queued.after(&c),
            };
            let Some(entry) = next else { break };
            if self.free_workers == 0 {
                break;
            }
            let t = entry.1;
            self.place_ready(t);
            if self.tasks[&t].state == TaskState::Queued {
                // Its resources are busy everywhere; look past it, but not forever.
                skipped += 1;
                cursor = Some(entry);
                if skipped > 64 {
                    break;
                }
            }
        }
        self.run();
        self.steal_step();
    }
}
