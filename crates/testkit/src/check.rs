//! The checks of a run: `validate()` of every core at checkpoints, the accounting at the
//! end (every wanted key in memory on the workers the scheduler names, with exactly the
//! value computed independently from the graph; every task run; nothing still
//! running), and after the client releases its keys, nothing left anywhere. When a run
//! is stuck, [`Sim::stuck_detail`] says which tasks and what happened to them.

use std::fmt::Write as _;

use rask_scheduler_core::TaskState;

use crate::sim::{Sim, CLIENT};
use crate::SimError;

/// Transitions shown per stuck task.
const STORY_LINES: usize = 8;

impl Sim {
    /// Checks every invariant of the scheduler core (it panics naming the first broken
    /// one) and of each live worker core.
    pub(crate) fn checkpoint(&mut self) -> Result<(), SimError> {
        self.report.checkpoints += 1;
        self.core.validate();
        for w in self.workers.iter().flatten() {
            w.core.validate().map_err(|e| SimError::Broken {
                what: format!("worker core of {}: {e}", w.id),
            })?;
        }
        Ok(())
    }

    /// The end of the run: every wanted key is in memory, every holder the scheduler
    /// names holds exactly the expected value, every task ran, nothing is still running.
    pub(crate) fn check_results(&mut self) -> Result<(), SimError> {
        let mut wanted: Vec<u32> = self.wanted.values().copied().collect();
        wanted.sort_unstable();
        for i in wanted {
            let key = self.graph.key(i);
            let state = self.core.state(&key);
            if state != TaskState::Memory {
                return Err(SimError::Lost {
                    key,
                    state: state.name(),
                    detail: self.stuck_detail(),
                });
            }
            let t = self
                .core
                .task_id(&key)
                .expect("invariant: in memory, so known");
            let holders = self.core.who_has(&key);
            if holders.is_empty() {
                return Err(SimError::Broken {
                    what: format!("{key} in memory with no holder"),
                });
            }
            for h in holders {
                let held = self
                    .workers
                    .get(h.0 as usize)
                    .and_then(|w| w.as_ref())
                    .and_then(|w| w.store.get(&t));
                let Some(v) = held else {
                    return Err(SimError::Broken {
                        what: format!("{key} counted on {h}, which does not hold it"),
                    });
                };
                let want = self.expected[i as usize];
                if v.value != want {
                    return Err(SimError::WrongValue {
                        key,
                        got: v.value,
                        want,
                    });
                }
            }
        }
        if let Some(i) = self.runs.iter().position(|&r| r == 0) {
            let key = self.graph.key(i as u32);
            return Err(SimError::NotRun {
                key: key.clone(),
                state: self.core.state(&key).name(),
            });
        }
        let info = self.core.info();
        for (state, n) in info.tasks_by_state {
            let busy = ["waiting", "queued", "no-worker", "processing", "erred"];
            if n > 0 && busy.contains(&state) {
                return Err(SimError::Broken {
                    what: format!("{n} tasks still {state} after every wanted key arrived"),
                });
            }
        }
        self.report.makespan_us = self.last_in_memory;
        self.report.steals = info.counters.steals;
        self.report.extra_runs = self.report.executions - self.graph.len() as u64;
        self.report.trace_hash = self.trace.0;
        Ok(())
    }

    /// The client releases every key it holds.
    pub(crate) fn release_all(&mut self) -> Result<(), SimError> {
        let mut wanted: Vec<u32> = self.wanted.values().copied().collect();
        wanted.sort_unstable();
        let keys: Vec<String> = wanted.iter().map(|&i| self.graph.key(i)).collect();
        let ns = self.report.scheduler_ns;
        self.scheduler(|core| core.on_release_keys(CLIENT, &keys))?;
        self.report.scheduler_ns = ns;
        Ok(())
    }

    /// After the release: the scheduler forgot every task, no worker holds or runs
    /// anything.
    pub(crate) fn check_left_behind(&self) -> Result<(), SimError> {
        if self.core.task_count() > 0 {
            return Err(SimError::LeftBehind {
                what: format!("the scheduler still has {} tasks", self.core.task_count()),
            });
        }
        for w in self.workers.iter().flatten() {
            if !w.store.is_empty() || w.core.assigned() > 0 {
                return Err(SimError::LeftBehind {
                    what: format!(
                        "{} holds {} values and has {} tasks assigned",
                        w.id,
                        w.store.len(),
                        w.core.assigned()
                    ),
                });
            }
        }
        Ok(())
    }

    /// The wanted keys not in memory (the first three), and the first task that never
    /// ran: each with its state and its last transitions.
    pub(crate) fn stuck_detail(&self) -> String {
        let mut out = String::new();
        let mut missing: Vec<u32> = self
            .wanted
            .values()
            .copied()
            .filter(|&i| self.core.state(&self.graph.key(i)) != TaskState::Memory)
            .collect();
        missing.sort_unstable();
        let _ = write!(out, "{} wanted keys not in memory", missing.len());
        // Tasks a worker was given and never reported: the first three, in graph order.
        let processing = (0..self.graph.len() as u32)
            .filter(|&i| self.core.state(&self.graph.key(i)) == TaskState::Processing)
            .take(3);
        let never = self.runs.iter().position(|&r| r == 0).map(|i| i as u32);
        let never_count = self.runs.iter().filter(|&&r| r == 0).count();
        let _ = write!(out, "; {never_count} tasks never ran");
        for i in missing
            .iter()
            .copied()
            .take(3)
            .chain(processing)
            .chain(never)
        {
            let key = self.graph.key(i);
            let state = self.core.state(&key);
            let _ = write!(out, "\n  {key}: {}", state.name());
            if let Some(w) = self
                .core
                .task_id(&key)
                .and_then(|t| self.core.processing_on(t))
            {
                let _ = write!(out, " on w{}", w.0);
            }
            let story = self.core.story(&key);
            for s in story.iter().skip(story.len().saturating_sub(STORY_LINES)) {
                let _ = write!(
                    out,
                    "\n    {} -> {} ({}, {}, t={} µs)",
                    s.from.name(),
                    s.to.name(),
                    s.why,
                    s.worker
                        .map_or_else(|| "-".to_string(), |w| format!("w{}", w.0)),
                    s.time_us
                );
            }
        }
        out
    }
}
