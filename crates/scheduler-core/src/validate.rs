//! `validate()`: every invariant of the core's state, checked after each stimulus in
//! tests.

use rask_proto::{ClientId, TaskId, WorkerId};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::core::SchedulerCore;
use crate::state::is_active;
use crate::state::lookup;
use crate::state::state_index;
use crate::TaskState;

impl SchedulerCore {
    /// Checks every invariant; panics naming the first broken one. Run after every
    /// stimulus in tests.
    pub fn validate(&self) {
        let mut counts = [0u64; 8];
        let mut by_prefix = vec![[0u64; 8]; self.prefixes.len()];
        // What each client's list names (it may name more than the client wants).
        let listed: FxHashMap<ClientId, FxHashSet<TaskId>> = self
            .clients
            .iter()
            .map(|(c, w)| (*c, w.list.iter().collect()))
            .collect();
        // What each worker's list names (it may name more than the worker holds).
        let held: FxHashMap<WorkerId, FxHashSet<TaskId>> = self
            .workers
            .iter()
            .map(|(w, x)| (*w, x.has_what.list.iter().collect()))
            .collect();
        for (id, t) in self.tasks.iter() {
            counts[state_index(t.state)] += 1;
            by_prefix[t.prefix as usize][state_index(t.state)] += 1;
            assert_eq!(
                self.keys.get(&t.key, &self.tasks),
                Some(id),
                "key map of {}",
                t.key
            );
            let deps_in_memory = t
                .deps
                .iter()
                .filter(|d| self.tasks[d].state == TaskState::Memory)
                .count();
            match t.state {
                TaskState::Waiting => {
                    assert_eq!(
                        t.waiting_on as usize,
                        t.deps.len() - deps_in_memory,
                        "waiting_on of {}",
                        t.key
                    );
                    assert!(t.waiting_on > 0, "{} waiting on nothing", t.key);
                }
                TaskState::Processing => {
                    assert_eq!(
                        t.waiting_on as usize,
                        t.deps.len() - deps_in_memory,
                        "waiting_on of {}",
                        t.key
                    );
                    for d in t.deps.iter() {
                        let dt = &self.tasks[d];
                        assert!(
                            dt.state == TaskState::Memory
                                || (dt.state == TaskState::Processing
                                    && dt.processing_on == t.processing_on),
                            "{} pre-assigned but its input {} is {:?} elsewhere",
                            t.key,
                            dt.key,
                            dt.state
                        );
                    }
                }
                TaskState::Queued | TaskState::NoWorker => {
                    assert_eq!(
                        deps_in_memory,
                        t.deps.len(),
                        "{} ready without its inputs",
                        t.key
                    );
                }
                _ => assert_eq!(t.waiting_on, 0, "waiting_on of {}", t.key),
            }
            assert_eq!(
                t.state == TaskState::Queued,
                self.queued.contains(&(t.priority, id)),
                "queue of {}",
                t.key
            );
            assert_eq!(
                t.state == TaskState::NoWorker,
                self.no_worker.contains(&(t.priority, id)),
                "no-worker of {}",
                t.key
            );
            assert_eq!(
                t.state == TaskState::Memory,
                !t.who_has.is_empty(),
                "who_has of {} in {:?}",
                t.key,
                t.state
            );
            for w in &t.who_has {
                assert!(
                    held.get(w).is_some_and(|l| l.contains(&id)),
                    "has_what of {w} lacks {} (or the worker is unknown)",
                    t.key
                );
            }
            assert_eq!(
                t.state == TaskState::Processing,
                t.processing_on.is_some(),
                "processing_on of {}",
                t.key
            );
            if let Some(w) = t.processing_on {
                assert!(
                    self.workers[&w].processing.contains(&id),
                    "processing of {w} lacks {}",
                    t.key
                );
            }
            if t.state == TaskState::Erred {
                assert!(t.error().is_some(), "{} erred without error", t.key);
            }
            let waiters = t
                .dependents
                .iter()
                .filter(|d| is_active(self.tasks[d].state))
                .count();
            assert_eq!(t.waiters as usize, waiters, "waiters of {}", t.key);
            for d in t.dependents.iter() {
                assert!(
                    self.tasks[d].deps.contains(&id),
                    "dependents/deps of {}",
                    t.key
                );
            }
            for d in t.deps.iter() {
                assert!(
                    self.tasks[d].dependents.contains(&id),
                    "deps/dependents of {}",
                    t.key
                );
            }
            for c in &t.who_wants {
                assert!(
                    listed.get(c).is_some_and(|l| l.contains(&id)),
                    "wants of client {c} lack {} (or the client is unknown)",
                    t.key
                );
            }
            if t.state == TaskState::Memory && t.who_wants.is_empty() {
                assert!(t.waiters > 0, "{} holds data no one needs", t.key);
            }
            if is_active(t.state) {
                assert!(
                    !t.who_wants.is_empty() || t.waiters > 0,
                    "{} runs for no one",
                    t.key
                );
            }
            assert!(
                !self.unreferenced(id) || is_active(t.state),
                "{} should be forgotten",
                t.key
            );
        }
        for s in TaskState::ALL {
            assert_eq!(
                counts[state_index(s)],
                self.counts[state_index(s)],
                "count of {}",
                s.name()
            );
        }
        for (p, counts) in self.prefixes.iter().zip(&by_prefix) {
            assert_eq!(&p.current, counts, "counts of prefix {}", p.name);
        }
        // A steal in flight: its task still the victim's, at the run asked about; each
        // worker counts those coming to it.
        let mut incoming: FxHashMap<WorkerId, u32> = FxHashMap::default();
        for (t, st) in &self.steals {
            let task = &self.tasks[t];
            assert!(
                task.state == TaskState::Processing
                    && task.processing_on == Some(st.victim)
                    && task.run == st.run,
                "steal of {} from worker {} no longer stands",
                task.key,
                st.victim
            );
            *incoming.entry(st.thief).or_default() += 1;
        }
        for (id, w) in &self.workers {
            assert_eq!(
                w.stealing_in,
                incoming.get(id).copied().unwrap_or(0),
                "steals on their way to worker {id}"
            );
        }
        assert_eq!(
            self.prefix_ids.len(),
            self.prefixes.len(),
            "prefix map size"
        );
        assert!(
            self.stream.len() <= self.cfg.stream_capacity,
            "task stream bound"
        );
        assert!(
            self.log.len() <= self.cfg.log_capacity,
            "transition log bound"
        );
        assert_eq!(self.keys.len(), self.tasks.len(), "key map size");
        self.keys.check(&self.tasks);
        self.queued.check();
        self.check_load_index();
        self.no_worker.check();
        assert_eq!(
            self.queued.len() as u64,
            self.counts[state_index(TaskState::Queued)],
            "queued set size"
        );
        assert_eq!(
            self.no_worker.len() as u64,
            self.counts[state_index(TaskState::NoWorker)],
            "no-worker set size"
        );
        let mut codes: FxHashMap<u64, u32> = FxHashMap::default();
        for (_, t) in self.no_worker.iter() {
            if let Some(code) = self.tasks[&t].code() {
                *codes.entry(code).or_default() += 1;
            }
        }
        assert_eq!(codes, self.no_worker_codes, "no-worker tasks by code");
        for (id, w) in &self.workers {
            let mut occupancy = 0;
            for t in &w.processing {
                let task = &self.tasks[t];
                assert_eq!(task.processing_on, Some(*id), "processing on {id}");
                occupancy += task.est_us as u64;
            }
            assert_eq!(occupancy, w.occupancy_us, "occupancy of {id}");
            // Each value once in `who_has`, so the count of those naming the worker is
            // the count kept.
            let holds = w.has_what.current(*id, &self.tasks);
            assert_eq!(holds.len(), w.has_what.count(), "values held by {id}");
            let nbytes: u64 = holds.iter().map(|t| self.tasks[t].nbytes).sum();
            assert_eq!(nbytes, w.nbytes, "nbytes of {id}");
            assert!(
                w.has_what.list.len() <= w.has_what.list.bound(),
                "the values listed as held by {id} outgrew their bound: {} > {}",
                w.has_what.list.len(),
                w.has_what.list.bound()
            );
            assert_eq!(
                w.host,
                self.host_ids.get(&w.spec.host_id).copied(),
                "interned host of {id}"
            );
            for (r, used) in &w.used {
                let expect: f64 = w
                    .processing
                    .iter()
                    .map(|t| lookup(self.tasks[t].resources(), *r))
                    .sum();
                assert!((expect - used).abs() < 1e-6, "resource {r} used on {id}");
            }
        }
        let mut incoming: FxHashMap<WorkerId, u64> = FxHashMap::default();
        for (t, r) in &self.replicas {
            let task = &self.tasks[t];
            assert_eq!(
                task.state,
                TaskState::Memory,
                "a copy of {} on its way while it is {:?}",
                task.key,
                task.state
            );
            assert!(
                self.workers.contains_key(r),
                "a copy of {} on its way to unregistered {r}",
                task.key
            );
            assert!(
                !task.who_has.contains(r),
                "a copy of {} on its way to its holder {r}",
                task.key
            );
            *incoming.entry(*r).or_default() += task.nbytes;
        }
        for (id, w) in &self.workers {
            assert_eq!(
                incoming.get(id).copied().unwrap_or(0),
                w.incoming,
                "incoming bytes of {id}"
            );
            assert_eq!(
                w.retiring,
                self.retirements.iter().any(|r| r.pending.contains(id)),
                "retiring flag of {id}"
            );
        }
        for r in &self.retirements {
            assert!(!r.pending.is_empty(), "a finished retirement is kept");
            for w in &r.pending {
                assert!(
                    self.workers.contains_key(w),
                    "retirement waits on unregistered {w}"
                );
            }
        }
        assert!(!self.retire_dirty, "retirements left unchecked");
        for (c, wants) in &self.clients {
            assert!(
                wants.list.len() <= wants.list.bound(),
                "the wants of client {c} outgrew their bound: {} > {}",
                wants.list.len(),
                wants.list.bound()
            );
        }
    }
}
