//! The workers by load: an index that lets placement look at a few workers instead of
//! all of them, so that a decision costs the same with 10 workers or 1,000.
//!
//! Every running (not retiring) worker is in [`SchedulerCore::by_load`] under its work
//! per thread; [`SchedulerCore::free_workers`] counts those that take a task now, and
//! [`SchedulerCore::idle`] holds, by work, those with a thread that neither runs a task
//! nor has one on its way (stealing's thieves). Whatever changes a worker's work, tasks,
//! steals on their way to it or retiring must call [`SchedulerCore::reindex`] (or
//! [`SchedulerCore::unindex`] before the worker goes).
//! This module only keeps the index; the choices are `placement`'s and `steal`'s.

use rask_proto::WorkerId;

use crate::api::CoreConfig;
use crate::core::SchedulerCore;
use crate::state::Worker;

/// Workers, least loaded first, that placement weighs beside the holders of a task's
/// inputs.
pub(crate) const LEAST_LOADED: usize = 8;

/// Entries of the index looked through for them, at most.
pub(crate) const LOAD_SCAN: usize = 64;

/// How a worker is filed in the index, as it was when filed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Indexed {
    /// Its work per thread: its key in `by_load`.
    pub(crate) load: u64,
    /// Its work: its key in `idle`.
    pub(crate) occupancy: u64,
    /// It takes a task now (counted in `free_workers`).
    pub(crate) free: bool,
    /// A thread of it neither runs a task nor has one on its way (in `idle`).
    pub(crate) idle: bool,
}

impl Indexed {
    fn of(w: &Worker, cfg: &CoreConfig) -> Self {
        let threads = w.spec.nthreads.max(1);
        Indexed {
            load: w.occupancy_us / u64::from(threads),
            occupancy: w.occupancy_us,
            free: w.has_capacity(cfg, &[]),
            idle: w.processing.len() + (w.stealing_in as usize) < threads as usize,
        }
    }
}

impl SchedulerCore {
    /// Puts worker `id` in the index as it is now (out of it if retiring or gone).
    pub(crate) fn reindex(&mut self, id: WorkerId) {
        self.unindex(id);
        let Some(w) = self.workers.get_mut(&id) else {
            return;
        };
        if w.retiring {
            return;
        }
        let entry = Indexed::of(w, &self.cfg);
        self.by_load.insert((entry.load, id));
        self.free_workers += usize::from(entry.free);
        if entry.idle {
            self.idle.insert((entry.occupancy, id));
        }
        w.indexed = Some(entry);
    }

    /// Takes worker `id` out of the index.
    pub(crate) fn unindex(&mut self, id: WorkerId) {
        let Some(w) = self.workers.get_mut(&id) else {
            return;
        };
        if let Some(entry) = w.indexed.take() {
            self.by_load.remove(&(entry.load, id));
            self.free_workers -= usize::from(entry.free);
            if entry.idle {
                self.idle.remove(&(entry.occupancy, id));
            }
        }
    }

    /// Running workers, least work per thread first (ties by id), at most
    /// [`LOAD_SCAN`] of them.
    pub(crate) fn least_loaded(&self) -> impl Iterator<Item = WorkerId> + '_ {
        self.by_load.iter().take(LOAD_SCAN).map(|&(_, id)| id)
    }

    /// Checks the index against the workers (for `validate`).
    pub(crate) fn check_load_index(&self) {
        let mut free = 0;
        let mut running = 0;
        let mut idle = 0;
        for (id, w) in &self.workers {
            if w.retiring {
                assert_eq!(w.indexed, None, "retiring {id} indexed");
                continue;
            }
            running += 1;
            let entry = Indexed::of(w, &self.cfg);
            assert_eq!(w.indexed, Some(entry), "load index of {id}");
            assert!(
                self.by_load.contains(&(entry.load, *id)),
                "{id} in the load index"
            );
            free += usize::from(entry.free);
            if entry.idle {
                assert!(self.idle.contains(&(entry.occupancy, *id)), "{id} idle");
                idle += 1;
            }
        }
        assert_eq!(self.by_load.len(), running, "load index size");
        assert_eq!(self.free_workers, free, "workers taking tasks");
        assert_eq!(self.idle.len(), idle, "idle workers");
    }
}
