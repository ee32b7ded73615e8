//! The fault knobs at work: workers joining, retiring at a client's request, leaving at
//! their own and dying (their connection lost), at virtual times; which worker is drawn
//! from the seed. The scheduler core decides what each means for the tasks; this only
//! makes it happen.

use rask_proto::WorkerId;
use rask_scheduler_core::WorkerSpec;

use crate::sim::{Event, Sim, CLIENT};
use crate::worker::SimWorker;
use crate::SimError;

impl Sim {
    /// A new worker joins (its id is the next unused one).
    pub(crate) fn join(&mut self) {
        let id = WorkerId(self.workers.len() as u32);
        let spread = self.cfg.speed_spread;
        let speed = 1.0 - spread + 2.0 * spread * self.rng.unit();
        let nthreads = self.cfg.threads_per_worker;
        self.workers.push(Some(SimWorker::new(id, nthreads, speed)));
        self.died_at.push(u64::MAX);
        self.down_last.push(0);
        self.up_last.push(0);
        self.live.insert(id.0);
        let spec = WorkerSpec {
            name: format!("w{}", id.0),
            addr: format!("sim://w{}", id.0),
            host_id: format!("h{}", id.0),
            nthreads,
            memory_limit: 1 << 40,
            resources: Vec::new(),
            gpu: None,
            nvlink: Vec::new(),
            device_spill_at: 0,
            code: 0,
            base: true,
        };
        self.report.joins += 1;
        // The scheduler's stimulus cannot fail to route: nothing it sends is refused.
        let _ = self.scheduler(|core| core.on_worker_joined(id, spec));
    }

    /// A live worker, drawn from the seed, among those neither retiring nor leaving
    /// fewer than two running workers.
    fn pick_running(&mut self) -> Option<WorkerId> {
        let running: Vec<u32> = self
            .live
            .iter()
            .copied()
            .filter(|w| !self.core.is_retiring(WorkerId(*w)) && self.core.has_worker(WorkerId(*w)))
            .collect();
        if running.len() <= 2 {
            return None;
        }
        Some(WorkerId(
            running[self.rng.below(running.len() as u64) as usize],
        ))
    }

    pub(crate) fn retire_one(&mut self) -> Result<(), SimError> {
        let Some(w) = self.pick_running() else {
            return Ok(());
        };
        self.report.retire_requests += 1;
        let req = self.next_req;
        self.next_req += 1;
        self.scheduler(|core| core.on_retire_workers(CLIENT, req, &[w]))
    }

    /// A running worker asks to close gracefully (its lifetime is over): the scheduler
    /// hands its data over if it can and closes it either way.
    pub(crate) fn leave_one(&mut self) -> Result<(), SimError> {
        let Some(w) = self.pick_running() else {
            return Ok(());
        };
        self.report.leaves += 1;
        self.scheduler(|core| core.on_close_gracefully(w))
    }

    /// A worker dies: it stops at once; the scheduler sees its connection close after
    /// the messages it had sent.
    pub(crate) fn die_one(&mut self) {
        let Some(w) = self.pick_running() else {
            return;
        };
        self.remove(w);
        self.report.deaths += 1;
        let at = self.link(w, false);
        self.queue.push(at, Event::WorkerLost(w));
    }

    pub(crate) fn remove(&mut self, w: WorkerId) {
        self.workers[w.0 as usize] = None;
        self.died_at[w.0 as usize] = self.queue.now();
        self.live.remove(&w.0);
    }
}
