//! The workers by load: an index that lets placement look at a few workers instead of
//! all of them, so that a decision costs the same with 10 workers or 1,000.
//!
//! Every running (not retiring) worker is in [`SchedulerCore::by_load`] under its work
//! per thread, and [`SchedulerCore::free_workers`] counts those that take a task now.
//! Whatever changes a worker's work, threads in use or retiring must call
//! [`SchedulerCore::reindex`] (or [`SchedulerCore::unindex`] before the worker goes).
//! This module only keeps the index; the choices are `placement`'s and `steal`'s.

use rask_proto::WorkerId;

use crate::core::SchedulerCore;

/// Workers, least loaded first, that placement weighs beside the holders of a task's
/// inputs.
pub(crate) const LEAST_LOADED: usize = 8;

/// Entries of the index looked through for them, at most.
pub(crate) const LOAD_SCAN: usize = 64;

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
        let key = w.occupancy_us / u64::from(w.spec.nthreads.max(1));
        let free = w.has_capacity(&self.cfg, &[]);
        self.by_load.insert((key, id));
        self.free_workers += usize::from(free);
        w.indexed = Some((key, free));
    }

    /// Takes worker `id` out of the index.
    pub(crate) fn unindex(&mut self, id: WorkerId) {
        let Some(w) = self.workers.get_mut(&id) else {
            return;
        };
        if let Some((key, free)) = w.indexed.take() {
            self.by_load.remove(&(key, id));
            self.free_workers -= usize::from(free);
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
        for (id, w) in &self.workers {
            if w.retiring {
                assert_eq!(w.indexed, None, "retiring {id} indexed");
                continue;
            }
            running += 1;
            let key = w.occupancy_us / u64::from(w.spec.nthreads.max(1));
            let takes = w.has_capacity(&self.cfg, &[]);
            assert_eq!(w.indexed, Some((key, takes)), "load index of {id}");
            assert!(self.by_load.contains(&(key, *id)), "{id} in the load index");
            free += usize::from(takes);
        }
        assert_eq!(self.by_load.len(), running, "load index size");
        assert_eq!(self.free_workers, free, "workers taking tasks");
    }
}
