//! Every external input, one `on_*` method each: clients and workers joining and
//! leaving, graphs submitted, keys released, tasks finished or failed, data missing,
//! device memory reported. Each runs the transitions it causes to a fixed point.

use std::sync::Arc;

use rask_proto::msg::Resource;
use rask_proto::{ClientId, TaskId, WorkerId};
use rustc_hash::FxHashMap;

use crate::api::Action;
use crate::api::GraphError;
use crate::api::NewTask;
use crate::api::TaskFailure;
use crate::api::WorkerSpec;
use crate::api::MAX_FETCH_US;
use crate::core::SchedulerCore;
use crate::few::Few;
use crate::graph::DepRef;
use crate::observe::{StreamKind, StreamRecord};
use crate::state::state_index;
use crate::state::Task;
use crate::state::TaskExtra;
use crate::state::Worker;
use crate::story::Why;
use crate::TaskState;
use rask_proto::packed::Packed;

/// Names of the workers gone kept, most recent last, so that the task stream names the
/// worker that ran a task after it left.
pub(crate) const DEPARTED_NAMES: usize = 1024;

impl SchedulerCore {
    /// A client connected.
    pub fn on_client_joined(&mut self, client: ClientId) {
        self.begin(Why::ClientJoined, None);
        self.clients.entry(client).or_default();
    }

    /// A client disconnected: everything it wanted is released.
    pub fn on_client_left(&mut self, client: ClientId) {
        self.begin(Why::ClientLeft, None);
        let Some(wants) = self.clients.remove(&client) else {
            return;
        };
        // Each task at most once, and only those still wanted: the list may name others.
        for t in wants.list.iter() {
            if let Some(task) = self.tasks.get_mut(&t) {
                if task.who_wants.contains(&client) {
                    task.who_wants.retain(|c| *c != client);
                    self.check_release(t);
                }
            }
        }
        self.run();
        self.retire_step();
    }

    /// A worker reports its device memory in use (placement avoids pushing a full
    /// device's values out when a peer has room).
    pub fn on_device_memory(&mut self, id: WorkerId, used: u64) {
        if let Some(w) = self.workers.get_mut(&id) {
            w.device_used = used;
        }
    }

    /// A worker joined.
    pub fn on_worker_joined(&mut self, id: WorkerId, spec: WorkerSpec) {
        self.begin(Why::WorkerJoined, Some(id));
        self.counters.workers_added += 1;
        // A new thief: look for work to steal for it at once.
        self.steal_quiet_until = 0;
        let resources = spec
            .resources
            .iter()
            .map(|r| (self.resource_id(&r.name), r.amount))
            .collect();
        let host = (!spec.host_id.is_empty()).then(|| self.host_id(&spec.host_id));
        self.workers.insert(id, Worker::new(spec, host, resources));
        self.reindex(id);
        self.worker_available();
        self.retire_step();
    }

    /// A worker can take tasks (it joined, or stopped retiring): tasks no worker could
    /// run may fit now, and queued ones may start.
    pub(crate) fn worker_available(&mut self) {
        let stuck: Vec<TaskId> = self.no_worker.iter().map(|(_, t)| t).collect();
        for t in stuck {
            self.place_ready(t);
        }
        self.run();
        self.fill_slots();
    }

    /// A worker says why it is about to die (its device failed for good): when it is
    /// lost, a task that errs for having killed too many workers names this cause.
    pub fn on_worker_failing(&mut self, id: WorkerId, why: &str) {
        if let Some(w) = self.workers.get_mut(&id) {
            w.failure = Some(why.into());
        }
    }

    /// A worker left or died: its running tasks are rescheduled, data only it held is
    /// recomputed if still needed, and a task that was running on `allowed_failures`
    /// dying workers errs. A worker lost while retiring has not retired.
    pub fn on_worker_lost(&mut self, id: WorkerId) {
        self.begin(Why::WorkerLost, Some(id));
        if self.remove_worker(id, true) {
            self.resolve_retiring(id, None);
        }
        self.retire_step();
    }

    /// Removes a worker (`false` if unknown): its running tasks go back to the scheduler
    /// (each charged with its death if `blame`), the copies on their way to it are
    /// dropped, and data only it held is recomputed if still needed.
    pub(crate) fn remove_worker(&mut self, id: WorkerId, blame: bool) -> bool {
        self.unindex(id);
        let Some(w) = self.workers.remove(&id) else {
            return false;
        };
        self.counters.workers_removed += 1;
        if self.departed.len() == DEPARTED_NAMES {
            self.departed.pop_front();
        }
        self.departed.push_back((id, w.name.clone()));
        self.replicas.retain(|_, r| *r != id);
        // Values it held, or was fetching a copy of, may now be held by retiring workers
        // only (workers leave seldom: no finer test is worth it).
        self.retire_dirty = true;
        let mut processing: Vec<TaskId> = w.processing.into_iter().collect();
        processing.sort_unstable();
        for t in processing {
            let allowed = self.cfg.allowed_failures;
            let task = self
                .tasks
                .get_mut(&t)
                .expect("invariant: processing task exists");
            // A pre-assigned task still waiting for its local input was not running, and a
            // task on a worker that left on request was not killed by it: neither is held
            // against the task.
            if task.waiting_on > 0 || !blame {
                self.recs.push_back((t, TaskState::Released));
                continue;
            }
            task.suspicious = task.suspicious.saturating_add(1);
            task.extra().killed_on.push(w.name.clone());
            if u32::from(task.suspicious) >= allowed {
                let killed = task.extra().killed_on.join(", ");
                let mut message = format!(
                    "killed worker: the task was running on {} workers that died ({killed})",
                    task.suspicious
                );
                if let Some(why) = &w.failure {
                    message.push_str(&format!("; the last: {why}"));
                }
                let error = TaskFailure {
                    key: task.key.to_string(),
                    op: self.ops[task.op as usize].name.to_string(),
                    message,
                };
                task.extra().error = Some(Arc::new(error));
                self.recs.push_back((t, TaskState::Erred));
            } else {
                self.recs.push_back((t, TaskState::Released));
            }
        }
        for t in w.has_what.current(id, &self.tasks) {
            let task = self.tasks.get_mut(&t).expect("invariant: held task exists");
            task.who_has.retain(|x| *x != id);
            if task.who_has.is_empty() {
                self.recs.push_back((t, TaskState::Released));
            } else {
                // Clients fetch from the holders they were told of: tell them the others.
                self.notify_memory(t, None);
            }
        }
        self.run();
        if self.workers.is_empty() {
            let queued: Vec<TaskId> = self.queued.iter().map(|(_, t)| t).collect();
            for t in queued {
                self.place_ready(t);
            }
        }
        self.fill_slots();
        true
    }

    /// Whether a worker's report of run `run` of `t` ([`ComputeMsg::run`]) is stale: `t`
    /// was freed on that worker and assigned again since the worker sent it, and the
    /// report must not be taken for the current run (nor answered with a free, which
    /// would cancel the current run). The caller drops stale reports before they reach
    /// [`SchedulerCore::on_task_finished`] or [`SchedulerCore::on_task_erred`].
    ///
    /// [`ComputeMsg::run`]: rask_proto::msg::ComputeMsg::run
    pub fn is_stale_run(&self, t: TaskId, run: u32) -> bool {
        self.tasks
            .get(&t)
            .is_some_and(|task| u32::from(task.run) != run)
    }

    /// A client submitted a graph. `wanted` are the keys it holds futures for (they may
    /// name tasks submitted before). On error nothing changes.
    pub fn on_update_graph(
        &mut self,
        client: ClientId,
        tasks: Vec<NewTask>,
        wanted: &[String],
    ) -> Result<(), GraphError> {
        self.begin(Why::UpdateGraph, None);
        self.update_graph(client, tasks, wanted, None)
    }

    /// [`SchedulerCore::on_update_graph`], its new tasks taking the ids of `ids` (by key)
    /// when given (a graph restored from the journal).
    pub(crate) fn update_graph(
        &mut self,
        client: ClientId,
        tasks: Vec<NewTask>,
        wanted: &[String],
        ids: Option<&FxHashMap<String, TaskId>>,
    ) -> Result<(), GraphError> {
        let created = self.add_graph(client, tasks, wanted, ids)?;
        self.settle_graph(created);
        Ok(())
    }

    /// Adds a graph's new tasks and `client`'s wants, and sets the wanted ones waiting;
    /// returns the tasks created. Nothing is dropped or run yet: see
    /// [`SchedulerCore::settle_graph`].
    pub(crate) fn add_graph(
        &mut self,
        client: ClientId,
        tasks: Vec<NewTask>,
        wanted: &[String],
        ids: Option<&FxHashMap<String, TaskId>>,
    ) -> Result<Vec<TaskId>, GraphError> {
        if !self.clients.contains_key(&client) {
            return Err(GraphError::UnknownClient(client));
        }
        let checked = self.check_graph(&tasks, wanted)?;
        // Each task's id, known or new, by its index in the graph.
        let mut ids_at = checked.known;
        let mut slots: Vec<Option<NewTask>> = tasks.into_iter().map(Some).collect();
        let mut created = Vec::new();
        for i in checked.order {
            let nt = slots[i].take().expect("invariant: each index once");
            if ids_at[i].is_some() {
                continue;
            }
            let explicit = ids
                .and_then(|m| m.get(&nt.key))
                .copied()
                .filter(|id| self.tasks.slot_free(*id));
            let id = explicit.unwrap_or_else(|| self.tasks.next_id());
            let deps: Box<[TaskId]> = checked.deps
                [checked.deps_start[i]..checked.deps_start[i + 1]]
                .iter()
                .map(|d| match *d {
                    DepRef::Known(id) => id,
                    DepRef::At(j) => ids_at[j].expect("invariant: a dependency is added first"),
                })
                .collect();
            for d in deps.iter() {
                self.tasks
                    .get_mut(d)
                    .expect("invariant: dep exists")
                    .dependents
                    .push(id);
            }
            let op = self.op_id(&nt.op);
            let prefix = self.prefix_id(&nt.key, op);
            let resources = self.resource_ids(&nt.resources);
            let extra = TaskExtra::of(nt.bufs, resources, nt.code);
            let task = self.new_task(
                nt.key.into(),
                op,
                prefix,
                Packed::new(&nt.args),
                deps,
                extra,
            );
            self.put_new(id, explicit.is_some(), i, task, None);
            ids_at[i] = Some(id);
            created.push(id);
        }
        let mut touched = Vec::new();
        for (key, at) in wanted.iter().zip(checked.wanted_at) {
            let found = match at {
                Some(i) => ids_at[i],
                None => self.keys.get(key, &self.tasks),
            };
            if let Some(t) = found.filter(|t| self.want(client, *t)) {
                touched.push(t);
            }
        }
        // Wanted tasks start waiting; that makes their released dependencies needed, and
        // they follow, down to the roots.
        for t in created.iter().chain(&touched) {
            if !self.tasks[t].who_wants.is_empty() {
                self.recs.push_back((*t, TaskState::Waiting));
            }
        }
        Ok(created)
    }

    /// The ids of resources, with their amounts.
    pub(crate) fn resource_ids(&mut self, resources: &[Resource]) -> Vec<(u32, f64)> {
        resources
            .iter()
            .map(|r| (self.resource_id(&r.name), r.amount))
            .collect()
    }

    /// A task to add, released, with the next priority (see [`SchedulerCore::put_new`]).
    pub(crate) fn new_task(
        &self,
        key: Arc<str>,
        op: u32,
        prefix: u32,
        args: Packed,
        deps: Box<[TaskId]>,
        extra: Option<Box<TaskExtra>>,
    ) -> Task {
        Task {
            key,
            op,
            prefix,
            args,
            deps,
            dependents: Few::default(),
            state: TaskState::Released,
            waiting_on: 0,
            waiters: 0,
            who_has: Few::default(),
            processing_on: None,
            est_us: 0,
            nbytes: 0,
            who_wants: Few::default(),
            priority: self.next_priority,
            suspicious: 0,
            run: 0,
            extra,
        }
    }

    /// Adds `task` (from [`SchedulerCore::new_task`]) as `id` — an id from
    /// `Slab::next_id`, or one given (`explicit`) — the `index`th task of the graph that
    /// submitted it: indexes its key and counts it.
    /// `numbered`: the task's key is `{prefix}-{n}` of a map, these two (else its key is
    /// read).
    pub(crate) fn put_new(
        &mut self,
        id: TaskId,
        explicit: bool,
        index: usize,
        task: Task,
        numbered: Option<(&str, u64)>,
    ) {
        if let Some(c) = &mut self.changes {
            c.created.push((index as u32, id));
        }
        let prefix = task.prefix;
        if explicit {
            self.tasks.insert_at(id, task);
        } else {
            self.tasks.insert(id, task);
        }
        match numbered {
            Some((prefix, n)) => self.keys.insert_numbered(id, prefix, n, &self.tasks),
            None => self.keys.insert(id, &self.tasks),
        }
        self.next_priority += 1;
        self.counts[state_index(TaskState::Released)] += 1;
        let p = &mut self.prefixes[prefix as usize];
        p.current[state_index(TaskState::Released)] += 1;
        p.totals[state_index(TaskState::Released)] += 1;
    }

    /// Ends adding graphs: tasks `created` but wanted by no one and read by no one are
    /// dropped at once, and what is ready runs.
    pub(crate) fn settle_graph(&mut self, created: Vec<TaskId>) {
        for t in created {
            self.check_release(t);
        }
        self.run();
        self.retire_step();
    }

    /// A worker finished a task, whose op ran `duration_us` after waiting `fetch_us` for
    /// inputs from peers. Stale reports (the task was cancelled or moved) make the
    /// worker drop the result.
    pub fn on_task_finished(
        &mut self,
        worker: WorkerId,
        t: TaskId,
        nbytes: u64,
        duration_us: u64,
        fetch_us: u64,
        value: Option<Packed>,
    ) {
        self.begin(Why::TaskFinished, Some(worker));
        let current = self.tasks.get(&t).is_some_and(|task| {
            task.state == TaskState::Processing
                && task.processing_on == Some(worker)
                && task.waiting_on == 0
        });
        if !current {
            if self.workers.contains_key(&worker) {
                self.actions.push(Action::Free { worker, task: t });
            }
            return;
        }
        // A size is the worker's estimate: counted at most MAX_REPORTED_BYTES, so that
        // sums over a worker's values and over a task's inputs stay within a u64.
        let nbytes = nbytes.min(crate::api::MAX_REPORTED_BYTES);
        let task = self.tasks.get_mut(&t).expect("invariant: checked above");
        let stat = &mut self.ops[task.op as usize];
        stat.avg_us = Some(match stat.avg_us {
            None => duration_us as f64,
            Some(avg) => 0.8 * avg + 0.2 * duration_us as f64,
        });
        task.nbytes = nbytes;
        self.counters.tasks_completed += 1;
        let p = &mut self.prefixes[task.prefix as usize];
        p.compute_us = p.compute_us.saturating_add(duration_us);
        p.output_bytes = p.output_bytes.saturating_add(nbytes);
        self.stream.push(StreamRecord {
            seq: 0,
            task: t,
            key: task.key.clone(),
            prefix: task.prefix,
            worker,
            start_us: self.now_us.saturating_sub(duration_us),
            stop_us: self.now_us,
            nbytes,
            kind: StreamKind::Compute,
        });
        if let Some(w) = self.workers.get_mut(&worker) {
            // Counted in its queue from now on (re-filed by `release_slot` below).
            w.fetch_us = (4 * w.fetch_us + fetch_us.min(MAX_FETCH_US)) / 5;
        }
        self.release_slot(t);
        self.put_in_memory(t, worker, nbytes, value);
        self.run();
        self.fill_slots();
        self.retire_step();
    }

    /// No worker can ever run tasks of the code `code` (its program could not be started
    /// anywhere): the tasks waiting for a worker of that code fail with `message`.
    pub fn on_code_failed(&mut self, code: u64, message: &str) {
        self.begin(Why::CodeFailed, None);
        let stuck: Vec<TaskId> = self
            .no_worker
            .iter()
            .map(|(_, t)| t)
            .filter(|t| self.tasks[t].code() == Some(code))
            .collect();
        for t in stuck {
            let task = self
                .tasks
                .get_mut(&t)
                .expect("invariant: no-worker task exists");
            let op = self.ops[task.op as usize].name.to_string();
            task.extra().error = Some(Arc::new(TaskFailure {
                key: task.key.to_string(),
                op,
                message: message.to_string(),
            }));
            self.recs.push_back((t, TaskState::Erred));
        }
        self.run();
        self.retire_step();
    }

    /// Whether some task is waiting for a worker of the code `code`.
    pub fn waits_for_code(&self, code: u64) -> bool {
        self.no_worker_codes.contains_key(&code)
    }

    /// A worker reports that a task's op failed.
    pub fn on_task_erred(&mut self, worker: WorkerId, t: TaskId, message: String) {
        self.begin(Why::TaskErred, Some(worker));
        let Some(task) = self.tasks.get_mut(&t) else {
            return;
        };
        if task.state != TaskState::Processing || task.processing_on != Some(worker) {
            return;
        }
        let op = self.ops[task.op as usize].name.to_string();
        task.extra().error = Some(Arc::new(TaskFailure {
            key: task.key.to_string(),
            op,
            message,
        }));
        self.counters.tasks_erred += 1;
        self.recs.push_back((t, TaskState::Erred));
        self.run();
        self.fill_slots();
        self.retire_step();
    }

    /// A worker could not fetch `dep` from `holder` to run `t`: the holder no longer has
    /// it. The task goes back to waiting; the dependency is recomputed if no one has it.
    pub fn on_missing_data(&mut self, worker: WorkerId, t: TaskId, dep: TaskId, holder: WorkerId) {
        self.begin(Why::MissingData, Some(worker));
        self.drop_holder(dep, holder);
        if let Some(task) = self.tasks.get(&t) {
            if task.state == TaskState::Processing && task.processing_on == Some(worker) {
                self.recs.push_back((t, TaskState::Released));
            }
        }
        self.run();
        self.fill_slots();
        self.retire_step();
    }

    /// `holder` turned out not to have `dep`'s value: it is no longer counted as a
    /// holder, and a value no one holds any more is recomputed if needed.
    pub(crate) fn drop_holder(&mut self, dep: TaskId, holder: WorkerId) {
        let Some(d) = self.tasks.get_mut(&dep) else {
            return;
        };
        if !d.who_has.contains(&holder) {
            return;
        }
        d.who_has.retain(|x| *x != holder);
        let w = self
            .workers
            .get_mut(&holder)
            .expect("invariant: holders are registered");
        w.has_what.remove();
        w.nbytes -= d.nbytes;
        // The holder may be retiring, and now hold nothing more to wait on.
        self.retire_dirty = true;
        if d.who_has.is_empty() {
            self.recs.push_back((dep, TaskState::Released));
        }
    }
}
