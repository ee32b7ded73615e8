//! Coming back: a scheduler restored from its journal (its tasks at their old ids, no
//! task placed until its workers are back), and workers that rejoin — after a partition
//! or a scheduler restart — telling what they hold, so that results that survived are
//! not recomputed and no stale value is ever taken for a key computed again meanwhile.

use rask_proto::{ClientId, TaskId, WorkerId};
use rustc_hash::FxHashMap;

use crate::api::{Action, GraphError, NewTask};
use crate::core::SchedulerCore;
use crate::state::state_index;
use crate::story::Why;
use crate::TaskState;

/// How far generations jump at a restore: ids issued after it are above any issued before
/// it, even one whose record was lost with the journal's unwritten tail (if no slot was
/// reused this many times in that tail). 4,096 restores fit in the 32-bit generation.
pub const RESTORE_GENERATIONS: u32 = 1 << 20;

/// Every task with its id, and the keys each client holds: see
/// [`SchedulerCore::export`].
pub type Export = (Vec<(TaskId, NewTask)>, Vec<(ClientId, Vec<String>)>);

/// Tasks created, failed and forgotten since last taken: what a journal records.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    /// (index in the submitted graph, id), in creation order.
    pub(crate) created: Vec<(u32, TaskId)>,
    /// Tasks that failed themselves (not those failing with an input), with the message.
    pub(crate) erred: Vec<(TaskId, String)>,
    pub(crate) forgotten: Vec<TaskId>,
}

impl SchedulerCore {
    /// Starts (or stops) recording which tasks are created and forgotten, for a journal
    /// ([`SchedulerCore::take_changes`]).
    pub fn record_changes(&mut self, on: bool) {
        self.changes = on.then(Changes::default);
    }

    /// The tasks created since the last call — each as its index in the graph that
    /// submitted it and the id it was given, in creation order (inputs first) — and the
    /// tasks forgotten, in order; empty unless recording.
    pub fn take_changes(&mut self) -> (Vec<(u32, TaskId)>, Vec<TaskId>) {
        match &mut self.changes {
            Some(c) => (
                std::mem::take(&mut c.created),
                std::mem::take(&mut c.forgotten),
            ),
            None => (Vec::new(), Vec::new()),
        }
    }

    /// The tasks that failed themselves since the last call (a worker said so, or no
    /// worker can run them), each with its message, in order; empty unless recording.
    /// Those failing with an input are not among them: they fail again with it.
    pub fn take_erred(&mut self) -> Vec<(TaskId, String)> {
        self.changes
            .as_mut()
            .map_or_else(Vec::new, |c| std::mem::take(&mut c.erred))
    }

    /// Puts back a task's failure from the journal (see [`SchedulerCore::take_erred`]): it
    /// is erred again with `message`, as are the tasks that read it, instead of running
    /// again. A task no longer known, or with an outcome already, is left as it is.
    pub fn restore_erred(&mut self, t: TaskId, message: String) {
        self.begin(Why::Restored, None);
        let Some(task) = self.tasks.get(&t) else {
            return;
        };
        if !matches!(
            task.state,
            TaskState::Released | TaskState::Waiting | TaskState::Queued | TaskState::NoWorker
        ) {
            return;
        }
        let op = self.ops[task.op as usize].name.to_string();
        let task = self.tasks.get_mut(&t).expect("invariant: checked above");
        task.extra().error = Some(std::sync::Arc::new(crate::TaskFailure {
            key: task.key.to_string(),
            op,
            message,
        }));
        self.recs.push_back((t, TaskState::Erred));
        self.run();
    }

    /// Puts back a graph from the journal, and what each holder (a client, or a
    /// dataset's holder) wants of it: as [`SchedulerCore::on_update_graph`] once per
    /// holder, each new task at the id `ids` gives its key (one whose slot is taken gets a
    /// new id). Every holder's keys are held before any task is found wanted by no one:
    /// a task only the last holder wants is kept. With no holder, nothing is kept. On
    /// error the restore is not to be used.
    pub fn restore_graph(
        &mut self,
        tasks: Vec<NewTask>,
        holders: &[(ClientId, Vec<String>)],
        ids: &FxHashMap<String, TaskId>,
    ) -> Result<(), GraphError> {
        let Some(((first, wanted), rest)) = holders.split_first() else {
            return Ok(());
        };
        self.begin(Why::Restored, None);
        let created = self.add_graph(*first, tasks, wanted, Some(ids))?;
        for (holder, wanted) in rest {
            self.add_graph(*holder, Vec::new(), wanted, None)?;
        }
        self.settle_graph(created);
        Ok(())
    }

    /// A client that connected again asks for the keys it holds futures for: each it did
    /// not hold here is held again (as a graph's wanted keys are), and each with an
    /// outcome (in memory, erred) is told again — what was told while it was away was
    /// lost with its connection.
    pub fn on_resubscribe(&mut self, client: ClientId, keys: &[String]) -> Result<(), GraphError> {
        let held: Vec<TaskId> = keys
            .iter()
            .filter_map(|k| self.keys.get(k, &self.tasks))
            .filter(|t| self.tasks[t].who_wants.contains(&client))
            .collect();
        self.on_update_graph(client, Vec::new(), keys)?;
        for t in held {
            self.tell_outcome(client, t);
        }
        Ok(())
    }

    /// Ends a restore: no id issued from now on equals one issued before it (see
    /// [`RESTORE_GENERATIONS`]).
    pub fn restored(&mut self) {
        let floor = self
            .tasks
            .max_generation()
            .saturating_add(RESTORE_GENERATIONS);
        self.tasks.set_floor(floor);
    }

    /// Holds every task back from workers (`true`), or lets them be placed again.
    pub fn hold_placement(&mut self, hold: bool) {
        if self.hold == hold {
            return;
        }
        self.hold = hold;
        if !hold {
            self.begin(Why::Restored, None);
            self.worker_available();
        }
    }

    /// Whether tasks are held back from workers.
    pub fn placement_held(&self) -> bool {
        self.hold
    }

    /// A worker that joined again says which values it holds (task, bytes). Each is
    /// taken as that task's result when the task is not in memory elsewhere and not
    /// running elsewhere: it is then in memory on `worker`, as if it had just finished
    /// there. The others are stale (the task was forgotten, failed, or computed again
    /// meanwhile): the worker is told to drop them.
    pub fn on_worker_holds(&mut self, worker: WorkerId, held: &[(TaskId, u64)]) {
        self.begin(Why::WorkerHolds, Some(worker));
        if !self.workers.contains_key(&worker) {
            return;
        }
        for &(t, nbytes) in held {
            // Counted as a finished task's size is (see `on_task_finished`).
            let nbytes = nbytes.min(crate::api::MAX_REPORTED_BYTES);
            if !self.take_held(worker, t, nbytes) {
                self.actions.push(Action::Free { worker, task: t });
            }
        }
        self.run();
        self.fill_slots();
        self.retire_step();
    }

    /// `t`'s value on `worker` taken as its result (see [`SchedulerCore::on_worker_holds`]);
    /// `false` when it is stale.
    fn take_held(&mut self, worker: WorkerId, t: TaskId, nbytes: u64) -> bool {
        let Some(task) = self.tasks.get(&t) else {
            return false;
        };
        match task.state {
            TaskState::Memory => return task.who_has.contains(&worker),
            TaskState::Processing if task.processing_on == Some(worker) => {
                self.release_slot(t);
            }
            TaskState::Released | TaskState::Waiting | TaskState::Queued | TaskState::NoWorker => {}
            TaskState::Processing | TaskState::Erred | TaskState::Forgotten => return false,
        }
        self.tasks
            .get_mut(&t)
            .expect("invariant: checked above")
            .waiting_on = 0;
        self.put_in_memory(t, worker, nbytes, None);
        true
    }

    /// Every task as it was submitted, with its id, in id order; and the keys each client
    /// holds futures for: what a journal is compacted to.
    pub fn export(&self) -> Export {
        let resource_names: FxHashMap<u32, &str> = self
            .resource_ids
            .iter()
            .map(|(n, id)| (*id, n.as_str()))
            .collect();
        let tasks = self
            .tasks
            .iter()
            .map(|(id, t)| {
                let extra = t.extra.as_deref();
                let nt = NewTask {
                    key: t.key.to_string(),
                    op: self.ops[t.op as usize].name.to_string(),
                    args: t.args.unpack(),
                    bufs: extra.map_or_else(Vec::new, |e| e.bufs.clone()),
                    deps: t
                        .deps
                        .iter()
                        .map(|d| self.tasks[d].key.to_string())
                        .collect(),
                    resources: extra.map_or_else(Vec::new, |e| {
                        e.resources
                            .iter()
                            .map(|(r, amount)| rask_proto::msg::Resource {
                                name: resource_names.get(r).copied().unwrap_or("").to_string(),
                                amount: *amount,
                            })
                            .collect()
                    }),
                    code: extra.and_then(|e| e.code),
                };
                (id, nt)
            })
            .collect();
        let mut wants: Vec<(ClientId, Vec<String>)> = self
            .clients
            .iter()
            .map(|(c, ts)| {
                let mut keys: Vec<String> = ts
                    .wanted(*c, &self.tasks)
                    .iter()
                    .map(|t| self.tasks[t].key.to_string())
                    .collect();
                keys.sort();
                (*c, keys)
            })
            .collect();
        wants.sort_by_key(|(c, _)| *c);
        (tasks, wants)
    }

    /// Every task erred by a failure of its own, with the message: what a compacted
    /// journal keeps of failures.
    pub fn export_erred(&self) -> Vec<(TaskId, String)> {
        let mut out: Vec<(TaskId, String)> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.state == TaskState::Erred)
            .filter_map(|(id, t)| {
                t.error()
                    .filter(|e| *e.key == *t.key)
                    .map(|e| (id, e.message.clone()))
            })
            .collect();
        out.sort_by_key(|(id, _)| *id);
        out
    }

    /// Tasks in a state, for tests and checks.
    pub fn count(&self, state: TaskState) -> u64 {
        self.counts[state_index(state)]
    }
}
