//! What tasks assigned here hold and wait for: their inputs' holds (owned values read,
//! fetched values cached), waits left behind by an input that is no longer assigned here,
//! and a task's removal, which gives all of them back.

use rask_proto::TaskId;

use crate::{Instruction, State, WorkerCore};

impl WorkerCore {
    /// The task is no longer assigned here: dropped, or cancelled while it runs (its
    /// result will be dropped), with any assignment waiting for that run.
    pub(crate) fn unassign(&mut self, task: TaskId) {
        let Some(t) = self.tasks.get_mut(&task) else {
            return;
        };
        match t.state {
            State::Executing => t.state = State::Cancelled,
            State::Cancelled => {
                if t.again.take().is_some() {
                    self.out.push(Instruction::Drop { task });
                }
            }
            _ => self.remove_task(task),
        }
    }

    /// Removes a task that will not run (or has run), releasing its inputs.
    pub(crate) fn remove_task(&mut self, task: TaskId) {
        let Some(t) = self.tasks.remove(&task) else {
            return;
        };
        // Only a ready task is in the ready set (a running one, the most often removed,
        // left it when it started).
        if t.state == State::Ready {
            self.ready.remove(&(t.priority, task));
        }
        if t.state != State::Executing && t.state != State::Cancelled {
            self.out.push(Instruction::Drop { task });
        }
        // Each input it still lacked holds one entry for it: among the waiters of the
        // input's task here, or of its fetch (an input can be both, when a task assigned
        // here is also being fetched); an input it had holds one count of the cache.
        for d in &t.deps {
            if let Some(ws) = self.local_waiters.get_mut(&d.task) {
                if let Some(i) = ws.iter().position(|w| *w == task) {
                    ws.remove(i);
                    continue;
                }
            }
            if let Some(ws) = self.orphans.get_mut(&d.task) {
                if let Some(i) = ws.iter().position(|w| *w == task) {
                    ws.remove(i);
                    if ws.is_empty() {
                        self.orphans.remove(&d.task);
                    }
                    continue;
                }
            }
            if let Some(f) = self.fetching.get_mut(&d.task) {
                if let Some(i) = f.waiters.iter().position(|w| *w == task) {
                    f.waiters.remove(i);
                    continue;
                }
            }
            self.release(d.task);
        }
        if let Some(ws) = self.local_waiters.remove(&task) {
            self.orphan(task, ws);
        }
    }

    /// A task assigned here reads `input`, if it is here: `true` when it is.
    pub(crate) fn hold(&mut self, input: TaskId) -> bool {
        if self.owned.contains(&input) {
            *self.uses.entry(input).or_default() += 1;
        } else if let Some(n) = self.cached.get_mut(&input) {
            *n += 1;
        } else {
            return false;
        }
        true
    }

    /// A task that read `input` (here) is done with it: a cached value no task reads any
    /// more is dropped.
    pub(crate) fn release(&mut self, input: TaskId) {
        if let Some(n) = self.uses.get_mut(&input) {
            *n -= 1;
            if *n == 0 {
                self.uses.remove(&input);
            }
        } else if let Some(n) = self.cached.get_mut(&input) {
            *n -= 1;
            if *n == 0 {
                self.cached.remove(&input);
                self.out.push(Instruction::Discard { task: input });
            }
        }
    }

    /// `value` is held for the scheduler from now on (computed here, or a copy it asked
    /// for): the tasks that read it as a cached input read it as an owned one.
    pub(crate) fn make_owned(&mut self, value: TaskId) {
        if let Some(n) = self.cached.remove(&value) {
            *self.uses.entry(value).or_default() += n;
        }
        self.owned.insert(value);
    }

    /// `waiters` wait for `task`, which is no longer assigned here.
    pub(crate) fn orphan(&mut self, task: TaskId, waiters: Vec<TaskId>) {
        if !waiters.is_empty() {
            self.orphans.entry(task).or_default().extend(waiters);
        }
    }
}
