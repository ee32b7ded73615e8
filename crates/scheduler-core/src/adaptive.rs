//! How many workers the cluster should have, and which to retire: Dask's
//! `adaptive_target` and `workers_to_close`, read-only queries a cluster manager polls
//! (about once a second). Retiring workers are on their way out: they count neither as
//! workers nor as candidates.

use std::sync::Arc;
use std::time::Duration;

use rask_proto::{TaskId, WorkerId};

use crate::core::SchedulerCore;
use crate::state::Worker;

/// Queued and no-worker tasks whose durations are summed; the sum is scaled up to all of
/// them (Dask samples as many).
const SAMPLE: usize = 100;

/// Past this share of the workers' memory limits in use, the cluster should double.
const MEMORY_HIGH: f64 = 0.6;

/// With no target given, workers are retired only while those left have memory for this
/// many times the data stored (Dask's `memory_ratio`).
const MEMORY_RATIO: u64 = 2;

impl SchedulerCore {
    /// The number of workers the cluster should have (Dask's rule): enough that the work
    /// assigned and waiting — each task counted by its op's measured mean duration, an op
    /// never measured by [`CoreConfig::unknown_duration_us`](crate::CoreConfig) — takes
    /// about `target_duration`, but no more cores than there are tasks ready or running,
    /// in workers of the current average size; at least one while tasks wait and there is
    /// no worker; twice the workers when more than 60 % of their memory holds data. Below
    /// the current count, the current count less the workers
    /// [`SchedulerCore::workers_to_close`] picks.
    pub fn adaptive_target(&self, target_duration: Duration) -> usize {
        let running: Vec<&Worker> = self.workers.values().filter(|w| !w.retiring).collect();
        let n = running.len();
        let waiting = self.queued.len() + self.no_worker.len();
        let sample: Vec<TaskId> = self
            .queued
            .iter()
            .chain(self.no_worker.iter())
            .take(SAMPLE)
            .map(|(_, t)| t)
            .collect();
        let mut waiting_us: f64 = sample.iter().map(|t| self.mean_duration_us(*t)).sum();
        if waiting > sample.len() {
            waiting_us *= waiting as f64 / sample.len() as f64;
        }
        let mut assigned = 0;
        let mut assigned_us = 0.0;
        for w in self.workers.values() {
            assigned += w.processing.len();
            assigned_us += w
                .processing
                .iter()
                .map(|t| self.mean_duration_us(*t))
                .sum::<f64>();
        }
        let target_us = (target_duration.as_secs_f64() * 1e6).max(1.0);
        // Cores: the work over the target duration, but no more than there are tasks.
        let mut cpu = ((assigned_us + waiting_us) / target_us).ceil() as usize;
        cpu = cpu.min(waiting + assigned);
        // Workers of the current average size.
        let threads: u64 = running.iter().map(|w| u64::from(w.spec.nthreads)).sum();
        if threads > 0 {
            cpu = (cpu as f64 * n as f64 / threads as f64).ceil() as usize;
        }
        if waiting > 0 && n == 0 {
            cpu = cpu.max(1);
        }
        let limit: u64 = running.iter().map(|w| w.spec.memory_limit).sum();
        let used: u64 = running.iter().map(|w| w.nbytes).sum();
        let memory = if limit > 0 && used as f64 > MEMORY_HIGH * limit as f64 {
            2 * n
        } else {
            0
        };
        let target = cpu.max(memory);
        if target >= n {
            target
        } else {
            n - self.workers_to_close(None).len()
        }
    }

    /// The workers to retire (names, best first; retiring workers are not counted): idle
    /// ones first, holding the least data first. With a `target`, as many as bring the
    /// workers down to it. Without one (what [`SchedulerCore::adaptive_target`] uses),
    /// idle workers only, as long as the workers left have memory for twice the data
    /// stored.
    pub fn workers_to_close(&self, target: Option<usize>) -> Vec<Arc<str>> {
        let mut running: Vec<(&WorkerId, &Worker)> =
            self.workers.iter().filter(|(_, w)| !w.retiring).collect();
        running.sort_by_key(|(id, w)| (!w.processing.is_empty(), w.nbytes, **id));
        let mut limit: u64 = running.iter().map(|(_, w)| w.spec.memory_limit).sum();
        let stored: u64 = running.iter().map(|(_, w)| w.nbytes).sum();
        let mut left = running.len();
        let mut close = Vec::new();
        for (_, w) in running {
            limit -= w.spec.memory_limit;
            let ok = match target {
                Some(target) => left > target,
                None => w.processing.is_empty() && limit >= MEMORY_RATIO.saturating_mul(stored),
            };
            if !ok {
                break;
            }
            close.push(w.name.clone());
            left -= 1;
        }
        close
    }

    /// A task's expected duration: its op's measured mean, or the default for an op
    /// never measured.
    fn mean_duration_us(&self, t: TaskId) -> f64 {
        self.ops[self.tasks[&t].op as usize]
            .avg_us
            .unwrap_or(self.cfg.unknown_duration_us as f64)
    }
}
