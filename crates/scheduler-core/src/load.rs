//! The workers by load: an index that lets placement look at a few workers instead of
//! all of them, so that a decision costs the same with 10 workers or 1,000.
//!
//! Every running (not retiring) worker is in [`SchedulerCore::by_load`] under its work
//! per thread; [`SchedulerCore::free_workers`] counts those that take a task now, and
//! [`SchedulerCore::idle`] holds, by work, those with a thread that neither runs a task
//! nor has one on its way (stealing's thieves). Whatever changes a worker's work, tasks,
//! steals on their way to it or retiring must call [`SchedulerCore::reindex`] (or
//! [`SchedulerCore::unindex`] before the worker goes).
//!
//! `reindex` keeps the count at once but only marks the worker to be filed again in the
//! two sets; [`SchedulerCore::refresh_index`], called before they are read (placement,
//! stealing), files the marked ones. A slot given back and taken again before the next
//! read, as when a task ends and the next queued one starts on the same worker, then costs
//! one filing instead of two. A cluster small enough for placement and stealing to weigh
//! every worker never reads the index, nor files it
//! ([`SchedulerCore::refresh_index_if_read`]).
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
    /// A thread of it neither runs a task nor has one on its way (in `idle`).
    pub(crate) idle: bool,
}

impl Indexed {
    fn of(w: &Worker) -> Self {
        let threads = w.spec.nthreads.max(1);
        Indexed {
            load: w.occupancy_us / u64::from(threads),
            occupancy: w.occupancy_us,
            idle: w.idle(),
        }
    }
}

/// Whether a worker takes a task now (counted in `free_workers`).
fn takes_now(w: &Worker, cfg: &CoreConfig) -> bool {
    !w.retiring && w.has_capacity(cfg, &[])
}

impl SchedulerCore {
    /// Counts worker `id` among those taking tasks if it does now, and marks it to be
    /// filed again, as it will be then, before the index is next read. (The count is
    /// kept at once: filling slots reads it after every task it places.)
    #[inline]
    pub(crate) fn reindex(&mut self, id: WorkerId) {
        let Some(w) = self.workers.get_mut(&id) else {
            return;
        };
        let free = takes_now(w, &self.cfg);
        if free != w.free {
            w.free = free;
            match free {
                true => self.free_workers += 1,
                false => self.free_workers -= 1,
            }
        }
        if !w.stale {
            w.stale = true;
            self.stale.push(id);
        }
    }

    /// Files the workers marked by [`reindex`](Self::reindex) as they are now: called
    /// before the index is read.
    #[inline]
    pub(crate) fn refresh_index(&mut self) {
        if self.stale.is_empty() {
            return;
        }
        let mut stale = std::mem::take(&mut self.stale);
        for id in stale.drain(..) {
            self.file(id);
        }
        // Its room is kept for the next marks.
        self.stale = stale;
    }

    /// [`refresh_index`](Self::refresh_index) where the index is read: in a cluster of
    /// more than [`LEAST_LOADED`] workers. A smaller one is placed, and its idle worker
    /// found for stealing, by weighing every worker, the index unread (and filed only if
    /// the cluster grows): each task's filings (two removals and two insertions in sorted
    /// sets) are spared where the index would not spare a look at any worker.
    #[inline]
    pub(crate) fn refresh_index_if_read(&mut self) {
        if self.places_by_index() {
            self.refresh_index();
        }
    }

    /// Whether placement and stealing read the index (more than [`LEAST_LOADED`]
    /// workers) rather than weigh every worker.
    #[inline]
    pub(crate) fn places_by_index(&self) -> bool {
        self.workers.len() > LEAST_LOADED
    }

    /// Puts worker `id` in the index as it is now (out of it if retiring or gone).
    fn file(&mut self, id: WorkerId) {
        self.unfile(id);
        let Some(w) = self.workers.get_mut(&id) else {
            return;
        };
        w.stale = false;
        if w.retiring {
            return;
        }
        let entry = Indexed::of(w);
        self.by_load.insert((entry.load, id));
        if entry.idle {
            self.idle.insert((entry.occupancy, id));
        }
        w.indexed = Some(entry);
    }

    /// Takes worker `id` out of the index and out of the count of those taking tasks.
    pub(crate) fn unindex(&mut self, id: WorkerId) {
        let Some(w) = self.workers.get_mut(&id) else {
            return;
        };
        if std::mem::take(&mut w.free) {
            self.free_workers -= 1;
        }
        self.unfile(id);
    }

    /// Takes worker `id` out of the index.
    fn unfile(&mut self, id: WorkerId) {
        let Some(w) = self.workers.get_mut(&id) else {
            return;
        };
        if let Some(entry) = w.indexed.take() {
            self.by_load.remove(&(entry.load, id));
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

    /// Checks the index against the workers (for `validate`): each worker is filed as it
    /// is now, or marked to be filed again; the index holds what the filings say.
    pub(crate) fn check_load_index(&self) {
        let mut free = 0;
        let mut running = 0;
        let mut idle = 0;
        for (id, w) in &self.workers {
            assert_eq!(
                w.stale,
                self.stale.contains(id),
                "{id} marked to be filed again in one place only"
            );
            // Said again here, not by `takes_now`: the check stands apart from what it checks.
            let takes = !w.retiring && w.has_capacity(&self.cfg, &[]);
            assert_eq!(w.free, takes, "{id} counted as taking tasks");
            free += usize::from(w.free);
            if !w.stale {
                let now = (!w.retiring).then(|| Indexed::of(w));
                assert_eq!(w.indexed, now, "load index of {id}");
            }
            let Some(entry) = w.indexed else {
                continue;
            };
            running += 1;
            assert!(
                self.by_load.contains(&(entry.load, *id)),
                "{id} in the load index"
            );
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

#[cfg(test)]
mod tests;
