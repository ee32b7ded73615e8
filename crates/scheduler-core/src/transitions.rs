//! The transitions between task states: one exhaustive `match (from, to)` and a handler
//! per pair, and the release of what is no longer needed. Ready tasks are placed by
//! `dispatch`.

use rask_proto::packed::Packed;
use rask_proto::{ClientId, TaskId, WorkerId};

use crate::api::Action;
use crate::core::SchedulerCore;
use crate::state::is_active;
use crate::state::state_index;
use crate::story::Entry;
use crate::TaskState;

impl SchedulerCore {
    /// Runs the recommended transitions to a fixed point. Data no one needs is released
    /// last, once the rest has settled: a task that went back to waiting may need it again
    /// (it is then kept, not recomputed).
    pub(crate) fn run(&mut self) {
        loop {
            while let Some((t, to)) = self.recs.pop_front() {
                self.transition(t, to);
            }
            let Some(t) = self.unneeded.pop_front() else {
                return;
            };
            self.transition(t, TaskState::Released);
        }
    }

    pub(crate) fn transition(&mut self, t: TaskId, to: TaskState) {
        let Some(task) = self.tasks.get(&t) else {
            return;
        };
        use TaskState::*;
        match (task.state, to) {
            (Released, Waiting) => self.released_to_waiting(t),
            (Released, Erred) | (Waiting, Erred) | (Processing, Erred) => {
                self.transition_to_erred(t)
            }
            // No worker will ever run it (its code cannot be started anywhere), or its
            // failure comes back from the journal.
            (Queued | NoWorker, Erred) => self.transition_to_erred(t),
            (Released, Forgotten) | (Erred, Forgotten) => self.transition_to_forgotten(t),
            (Memory, Forgotten) => {
                self.memory_to_released(t);
                self.transition_to_forgotten(t);
            }
            (Waiting, Processing) => self.waiting_to_processing(t),
            (Waiting, Released) => self.waiting_to_released(t),
            (Queued, Released) | (NoWorker, Released) => self.ready_to_released(t),
            (Processing, Released) => self.processing_to_released(t),
            // Recommended while no one needed it, needed again since (a task that lost
            // another input went back to waiting): the data stays.
            (Memory, Released) if !task.who_has.is_empty() && self.needed(t) => {}
            (Memory, Released) => self.memory_to_released(t),
            // Stale recommendations: the task moved on since; nothing to do.
            (Released, Released | Processing | Queued | NoWorker | Memory)
            | (Waiting, Waiting | Queued | NoWorker | Memory | Forgotten)
            | (Queued | NoWorker, Waiting | Queued | NoWorker | Processing | Memory | Forgotten)
            | (Processing, Waiting | Queued | NoWorker | Processing | Memory | Forgotten)
            | (Memory, Waiting | Queued | NoWorker | Processing | Memory | Erred)
            | (Erred, Waiting | Queued | NoWorker | Processing | Memory | Erred | Released)
            | (_, Forgotten) => {}
            (Forgotten, _) => unreachable!("invariant: forgotten tasks are not stored"),
        }
    }

    pub(crate) fn set_state(&mut self, t: TaskId, to: TaskState) {
        let task = self.tasks.get_mut(&t).expect("invariant: task exists");
        let from = task.state;
        task.state = to;
        // The ready sets hold exactly the tasks in their states: kept here, the one way in
        // and out of those states.
        if from != to {
            let entry = (task.priority, t);
            match from {
                TaskState::Queued => self.queued.remove(&entry),
                TaskState::NoWorker => self.no_worker.remove(&entry),
                _ => true,
            };
            match to {
                TaskState::Queued => self.queued.insert(entry),
                TaskState::NoWorker => self.no_worker.insert(entry),
                _ => true,
            };
        }
        if (from == TaskState::NoWorker) != (to == TaskState::NoWorker) {
            if let Some(code) = task.code() {
                let n = self.no_worker_codes.entry(code).or_default();
                if to == TaskState::NoWorker {
                    *n += 1;
                } else {
                    *n -= 1;
                    if *n == 0 {
                        self.no_worker_codes.remove(&code);
                    }
                }
            }
        }
        self.counts[state_index(from)] -= 1;
        self.counts[state_index(to)] += 1;
        let p = &mut self.prefixes[task.prefix as usize];
        p.current[state_index(from)] -= 1;
        p.current[state_index(to)] += 1;
        p.totals[state_index(to)] += 1;
        if is_active(from) != is_active(to) {
            for i in 0..task.deps.len() {
                let d = self.tasks[&t].deps[i];
                let dt = self.tasks.get_mut(&d).expect("invariant: dep exists");
                if is_active(to) {
                    dt.waiters += 1;
                } else {
                    dt.waiters -= 1;
                }
            }
        }
        if self.log.enabled() {
            let task = &self.tasks[&t];
            let worker = task
                .processing_on
                .or_else(|| task.who_has.as_slice().first().copied())
                .or(self.stim_worker);
            self.log.record(Entry::new(
                t,
                from,
                to,
                self.stimulus,
                self.why,
                worker,
                self.now_us,
            ));
        }
    }

    pub(crate) fn released_to_waiting(&mut self, t: TaskId) {
        if !self.needed(t) {
            return;
        }
        let task = &self.tasks[&t];
        let mut waiting_on = 0;
        let mut to_start = Vec::new();
        for d in task.deps.iter() {
            let dt = &self.tasks[d];
            match dt.state {
                TaskState::Memory => {}
                TaskState::Erred => {
                    let error = dt.error().expect("invariant: erred has error").clone();
                    self.tasks.get_mut(&t).expect("invariant").extra().error = Some(error);
                    self.recs.push_back((t, TaskState::Erred));
                    return;
                }
                TaskState::Released => {
                    waiting_on += 1;
                    to_start.push(*d);
                }
                _ => waiting_on += 1,
            }
        }
        self.tasks.get_mut(&t).expect("invariant").waiting_on = waiting_on;
        self.set_state(t, TaskState::Waiting);
        for d in to_start {
            self.recs.push_back((d, TaskState::Waiting));
        }
        if waiting_on == 0 {
            self.recs.push_back((t, TaskState::Processing));
        }
    }

    pub(crate) fn waiting_to_processing(&mut self, t: TaskId) {
        if self.tasks[&t].waiting_on == 0 {
            self.place_ready(t);
        } else if let Some(w) = self.preassign_target(t) {
            self.assign(t, w);
        }
    }

    pub(crate) fn waiting_to_released(&mut self, t: TaskId) {
        self.tasks.get_mut(&t).expect("invariant").waiting_on = 0;
        self.set_state(t, TaskState::Released);
        self.after_release(t);
    }

    pub(crate) fn ready_to_released(&mut self, t: TaskId) {
        self.set_state(t, TaskState::Released);
        self.after_release(t);
    }

    pub(crate) fn processing_to_released(&mut self, t: TaskId) {
        let w = self.tasks[&t].processing_on;
        self.release_slot(t);
        self.tasks.get_mut(&t).expect("invariant").waiting_on = 0;
        if let Some(w) = w.filter(|w| self.workers.contains_key(w)) {
            self.actions.push(Action::Free { worker: w, task: t });
        }
        self.set_state(t, TaskState::Released);
        self.release_preassigned(t);
        self.after_release(t);
    }

    /// Dependents sent ahead to wait for `t` cannot get it now: back to the scheduler.
    /// (`t` was not in memory, so a dependent processing is one sent ahead: it waits on
    /// `t`, as `validate` checks.)
    pub(crate) fn release_preassigned(&mut self, t: TaskId) {
        for &d in self.tasks[&t].dependents.as_slice() {
            if self.tasks[&d].state == TaskState::Processing {
                self.recs.push_back((d, TaskState::Released));
            }
        }
    }

    pub(crate) fn memory_to_released(&mut self, t: TaskId) {
        let task = self.tasks.get_mut(&t).expect("invariant");
        let holders = std::mem::take(&mut task.who_has);
        let nbytes = task.nbytes;
        for &w in &holders {
            if let Some(worker) = self.workers.get_mut(&w) {
                worker.has_what.remove();
                worker.nbytes -= nbytes;
                // One value fewer for a retiring holder to wait on.
                self.retire_dirty |= worker.retiring;
                self.actions.push(Action::Free { worker: w, task: t });
            }
        }
        if !self.replicas.is_empty() {
            if let Some(r) = self.replicas.remove(&t) {
                // The copy on its way is not wanted any more: the worker drops it.
                let worker = self
                    .workers
                    .get_mut(&r)
                    .expect("invariant: a copy's recipient is registered");
                worker.incoming -= nbytes;
                self.actions.push(Action::Free { worker: r, task: t });
            }
        }
        self.set_state(t, TaskState::Released);
        // Dependents that counted on this data must wait for it again.
        for i in 0..self.tasks[&t].dependents.as_slice().len() {
            let d = self.tasks[&t].dependents.as_slice()[i];
            let dt = self.tasks.get_mut(&d).expect("invariant");
            match dt.state {
                TaskState::Waiting => dt.waiting_on += 1,
                TaskState::Queued | TaskState::NoWorker | TaskState::Processing => {
                    self.recs.push_back((d, TaskState::Released));
                }
                _ => {}
            }
        }
        self.after_release(t);
    }

    /// After a task became released: recompute it if needed, forget it if unreferenced,
    /// and let go of dependencies no one needs any more.
    pub(crate) fn after_release(&mut self, t: TaskId) {
        if self.needed(t) {
            self.recs.push_back((t, TaskState::Waiting));
        } else if self.unreferenced(t) {
            self.recs.push_back((t, TaskState::Forgotten));
        }
        let deps = self.tasks[&t].deps.clone();
        for d in deps.iter() {
            self.check_release(*d);
        }
    }

    pub(crate) fn transition_to_erred(&mut self, t: TaskId) {
        let on = self.tasks[&t].processing_on;
        self.release_slot(t);
        if let Some(w) = on.filter(|w| self.workers.contains_key(w)) {
            // Cancels it there (a no-op if the worker reported the failure itself).
            self.actions.push(Action::Free { worker: w, task: t });
        }
        let task = self.tasks.get_mut(&t).expect("invariant");
        task.waiting_on = 0;
        let error = task
            .error()
            .expect("invariant: error set before erring")
            .clone();
        self.set_state(t, TaskState::Erred);
        let task = &self.tasks[&t];
        if let Some(c) = &mut self.changes {
            // Its own failure, not an input's (that one is recorded with the input).
            if *error.key == *task.key {
                c.erred.push((t, error.message.clone()));
            }
        }
        for c in &task.who_wants {
            self.actions.push(Action::KeyErred {
                client: *c,
                key: task.key.clone(),
                error: error.clone(),
            });
        }
        let dependents = task.dependents.to_vec();
        let deps = task.deps.clone();
        for d in dependents {
            let dt = self.tasks.get_mut(&d).expect("invariant");
            if matches!(dt.state, TaskState::Waiting | TaskState::Released)
                || (dt.state == TaskState::Processing && dt.waiting_on > 0)
            {
                dt.extra().error = Some(error.clone());
                self.recs.push_back((d, TaskState::Erred));
            }
        }
        for d in deps.iter() {
            self.check_release(*d);
        }
        if self.unreferenced(t) {
            self.recs.push_back((t, TaskState::Forgotten));
        }
    }

    pub(crate) fn transition_to_forgotten(&mut self, t: TaskId) {
        if !self.unreferenced(t) {
            return;
        }
        let task = self.tasks.remove(&t).expect("invariant");
        if let Some(c) = &mut self.changes {
            c.forgotten.push(t);
        }
        self.counts[state_index(task.state)] -= 1;
        let p = &mut self.prefixes[task.prefix as usize];
        p.current[state_index(task.state)] -= 1;
        p.totals[state_index(TaskState::Forgotten)] += 1;
        self.keys.remove(t, &task.key, &self.tasks);
        self.log.record(Entry::new(
            t,
            task.state,
            TaskState::Forgotten,
            self.stimulus,
            self.why,
            self.stim_worker,
            self.now_us,
        ));
        if self.log.enabled() {
            self.log.forget(t, task.key.clone(), task.error().cloned());
        }
        for d in task.deps.iter() {
            let dt = self
                .tasks
                .get_mut(d)
                .expect("invariant: dep outlives dependent");
            dt.dependents.retain(|x| *x != t);
            self.check_release(*d);
        }
    }

    /// Recommends what a task should become now that something it depended on changed.
    pub(crate) fn check_release(&mut self, t: TaskId) {
        let Some(task) = self.tasks.get(&t) else {
            return;
        };
        let needed = self.needed(t);
        let unreferenced = self.unreferenced(t);
        match task.state {
            TaskState::Memory | TaskState::Released | TaskState::Erred if unreferenced => {
                self.recs.push_back((t, TaskState::Forgotten))
            }
            TaskState::Memory if !needed => self.unneeded.push_back(t),
            TaskState::Waiting
            | TaskState::Queued
            | TaskState::NoWorker
            | TaskState::Processing
                if !needed =>
            {
                self.recs.push_back((t, TaskState::Released))
            }
            _ => {}
        }
    }

    pub(crate) fn needed(&self, t: TaskId) -> bool {
        let task = &self.tasks[&t];
        !task.who_wants.is_empty() || task.waiters > 0
    }

    pub(crate) fn unreferenced(&self, t: TaskId) -> bool {
        let task = &self.tasks[&t];
        task.who_wants.is_empty() && task.dependents.is_empty()
    }

    /// Tells `client` the outcome of `t` if it has one (in memory, or erred).
    pub(crate) fn tell_outcome(&mut self, client: ClientId, t: TaskId) {
        let task = &self.tasks[&t];
        match task.state {
            TaskState::Memory => self.actions.push(Action::KeyInMemory {
                client,
                key: task.key.clone(),
                task: t,
                nbytes: task.nbytes,
                holders: task.who_has.to_vec(),
                value: None,
            }),
            TaskState::Erred => self.actions.push(Action::KeyErred {
                client,
                key: task.key.clone(),
                error: task.error().expect("invariant: erred has error").clone(),
            }),
            _ => {}
        }
    }

    /// `t`'s value, `nbytes` long, is now in memory on `worker` (computed there, or held
    /// there when a scheduler restarts): records the holder, tells the clients, counts the
    /// dependents' waits down and lets inputs no longer needed go.
    pub(crate) fn put_in_memory(
        &mut self,
        t: TaskId,
        worker: WorkerId,
        nbytes: u64,
        value: Option<Packed>,
    ) {
        let task = self
            .tasks
            .get_mut(&t)
            .expect("invariant: checked by the caller");
        task.nbytes = nbytes;
        task.who_has.push(worker);
        let w = self
            .workers
            .get_mut(&worker)
            .expect("invariant: checked by the caller");
        w.has_what.add(worker, t, &self.tasks);
        w.nbytes += nbytes;
        self.set_state(t, TaskState::Memory);
        self.notify_memory(t, value);
        // Taken out and put back, not cloned: nothing below reads `t`'s own lists.
        let task = self.tasks.get_mut(&t).expect("invariant: checked above");
        let dependents = std::mem::take(&mut task.dependents);
        let deps = std::mem::take(&mut task.deps);
        // A dependent waiting or running counts this input among those it waits for
        // unless it was in memory already (validate()'s waiting_on): the guards keep a
        // count from wrapping should that ever not hold.
        for &d in &dependents {
            let dt = self.tasks.get_mut(&d).expect("invariant: dependent exists");
            match dt.state {
                TaskState::Waiting if dt.waiting_on > 0 => {
                    dt.waiting_on -= 1;
                    if dt.waiting_on == 0 {
                        self.recs.push_back((d, TaskState::Processing));
                    }
                }
                // Pre-assigned on its worker: it runs there as soon as the input is done.
                TaskState::Processing if dt.waiting_on > 0 => dt.waiting_on -= 1,
                _ => {}
            }
        }
        for &d in deps.iter() {
            self.check_release(d);
        }
        let task = self.tasks.get_mut(&t).expect("invariant: checked above");
        task.dependents = dependents;
        task.deps = deps;
        self.check_release(t);
    }

    pub(crate) fn notify_memory(&mut self, t: TaskId, mut value: Option<Packed>) {
        let task = &self.tasks[&t];
        let last = task.who_wants.as_slice().len().saturating_sub(1);
        for (i, c) in task.who_wants.iter().enumerate() {
            self.actions.push(Action::KeyInMemory {
                client: *c,
                key: task.key.clone(),
                task: t,
                nbytes: task.nbytes,
                holders: task.who_has.to_vec(),
                // Copied for all but the last client (most often the only one).
                value: if i == last {
                    value.take()
                } else {
                    value.clone()
                },
            });
        }
    }
}
