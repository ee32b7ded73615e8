//! The core's bookkeeping checked against itself: every wait a task counts is held by
//! exactly one entry (among the waiters of a task assigned here, of one that was, or of a
//! fetch), every input it does not wait for is here, and the counts of the cache, of
//! owned values read, and of the running tasks add up. Tests and the fuzz target call it
//! after every step.

use rask_proto::TaskId;
use rustc_hash::FxHashMap;

use crate::{State, WorkerCore};

impl WorkerCore {
    /// `Err` names the first rule broken and the tasks it concerns.
    pub fn validate(&self) -> Result<(), String> {
        let mut holds: FxHashMap<TaskId, u32> = FxHashMap::default();
        let mut uses: FxHashMap<TaskId, u32> = FxHashMap::default();
        let mut running = 0;
        for (&id, t) in &self.tasks {
            let mut inputs: FxHashMap<TaskId, u32> = FxHashMap::default();
            for d in &t.deps {
                *inputs.entry(d.task).or_default() += 1;
            }
            let mut waits = 0;
            for (&d, &times) in &inputs {
                let count = |ws: &[TaskId]| ws.iter().filter(|w| **w == id).count() as u32;
                let local = self.local_waiters.get(&d).map_or(0, |ws| count(ws));
                let fetched = self.fetching.get(&d).map_or(0, |f| count(&f.waiters));
                let orphaned = self.orphans.get(&d).map_or(0, |ws| count(ws));
                if local > 0 && !self.tasks.contains_key(&d) {
                    return Err(format!(
                        "{id:?} waits for {d:?} to run here, and no such task is here"
                    ));
                }
                if orphaned > 0 && self.tasks.contains_key(&d) {
                    return Err(format!(
                        "{id:?} waits for {d:?} to be assigned here again, and it is"
                    ));
                }
                match local + fetched + orphaned {
                    0 if self.owned.contains(&d) => *uses.entry(d).or_default() += times,
                    0 if self.cached.contains_key(&d) => *holds.entry(d).or_default() += times,
                    0 => {
                        return Err(format!(
                            "{id:?} needs {d:?}, which is neither here nor waited for"
                        ))
                    }
                    n if n == times => waits += n,
                    n => {
                        return Err(format!(
                            "{id:?} waits {n} times for {d:?}, an input it has {times} times"
                        ))
                    }
                }
            }
            if waits != t.missing {
                return Err(format!(
                    "{id:?} counts {} inputs missing, and waits for {waits}",
                    t.missing
                ));
            }
            let ready = self.ready.contains(&(t.priority, id));
            let fits = match t.state {
                State::Fetching => t.missing > 0 && !ready,
                State::Ready => t.missing == 0 && ready,
                State::Executing | State::Cancelled => {
                    running += 1;
                    t.missing == 0 && !ready
                }
            };
            if !fits {
                return Err(format!(
                    "{id:?} is {:?} with {} inputs missing (among the ready: {ready})",
                    t.state, t.missing
                ));
            }
        }
        if running != self.executing {
            return Err(format!(
                "{} tasks run, {running} are running or cancelled",
                self.executing
            ));
        }
        self.ready.check()?;
        if let Some((_, t)) = self.ready.iter().find(|(_, t)| !self.tasks.contains_key(t)) {
            return Err(format!("{t:?} is ready and not assigned here"));
        }
        let fetch_waits: Vec<_> = self.fetching.iter().map(|(d, f)| (d, &f.waiters)).collect();
        for (d, ws) in self
            .local_waiters
            .iter()
            .chain(&self.orphans)
            .chain(fetch_waits)
        {
            if let Some(w) = ws.iter().find(|w| !self.tasks.contains_key(w)) {
                return Err(format!("{w:?} waits for {d:?} and is not assigned here"));
            }
        }
        for (what, counted, found) in [("cached", &self.cached, holds), ("used", &self.uses, uses)]
        {
            for (d, &n) in counted {
                let held = found.get(d).copied().unwrap_or(0);
                if held != n {
                    return Err(format!("{d:?} is {what} by {n} tasks, and {held} read it"));
                }
            }
            if let Some((d, n)) = found.iter().find(|(d, _)| !counted.contains_key(d)) {
                return Err(format!("{n} tasks read {d:?}, which is not counted {what}"));
            }
        }
        if let Some(d) = self.cached.keys().find(|d| self.owned.contains(d)) {
            return Err(format!("{d:?} is both owned and cached"));
        }
        if let Some(d) = self.uses.keys().find(|d| !self.owned.contains(d)) {
            return Err(format!("{d:?} is counted used and not owned"));
        }
        Ok(())
    }
}
