//! Coming back, on the scheduler's side: the journal written as the cluster runs and read
//! at start ([`restore`]); clients that lost their connection kept for a grace period and
//! resumed under their id; workers that join again telling what they hold; placement
//! held after a restore until the workers the journal knew are back (or the grace period
//! is over).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rask_proto::msg::ToClient;
use rask_proto::{ClientId, TaskId, WorkerId};
use rask_scheduler_core::NewTask;
use rustc_hash::{FxHashMap, FxHashSet};
use tracing::{info, warn};

use crate::journal::{self, Framed, JournalConfig, JournalTask, JournalWriter, Record};
use crate::server::Server;

/// What the scheduler keeps for coming back.
#[derive(Default)]
pub(crate) struct Recovery {
    pub(crate) journal: Option<JournalWriter>,
    /// How long a client or a restored worker has to come back.
    pub(crate) grace: Duration,
    /// Clients whose connection was lost (or restored from the journal), and when they
    /// are given up.
    pub(crate) suspended: FxHashMap<ClientId, Instant>,
    /// After a restore: the workers not back yet, by name, and when placement stops
    /// waiting for them.
    pub(crate) awaited: FxHashSet<String>,
    pub(crate) hold_until: Option<Instant>,
    /// Workers that joined again and have not finished telling what they hold.
    pub(crate) holding: FxHashMap<WorkerId, Vec<(TaskId, u64)>>,
    /// Tasks restored from the journal, and values workers gave back (for the report).
    pub(crate) restored: usize,
    pub(crate) taken_back: usize,
    /// When the restore ended.
    pub(crate) restored_at: Option<Instant>,
}

fn to_journal(t: NewTask) -> JournalTask {
    JournalTask {
        key: t.key,
        op: t.op,
        args: t.args,
        bufs: t.bufs,
        deps: t.deps,
        resources: t.resources,
        code: t.code,
    }
}

fn from_journal(t: JournalTask) -> NewTask {
    NewTask {
        key: t.key,
        op: t.op,
        args: t.args,
        bufs: t.bufs,
        deps: t.deps,
        resources: t.resources,
        code: t.code,
    }
}

/// What the journal's records add up to.
#[derive(Default)]
struct Model {
    /// Live tasks by id, with the order they were created in.
    tasks: FxHashMap<u64, (u64, JournalTask)>,
    /// Live tasks that failed, by id, with the message.
    erred: BTreeMap<u64, String>,
    created: u64,
    /// The tasks of the last graph, until its `Created` record takes them.
    graph: Vec<Option<JournalTask>>,
    clients: BTreeMap<u32, (String, FxHashSet<String>)>,
    /// Published datasets: the id holding their keys, and the keys.
    datasets: BTreeMap<String, (u32, Vec<String>)>,
    workers: BTreeMap<u32, String>,
    next_client: u32,
    next_worker: u32,
}

impl Model {
    fn apply(&mut self, r: Record) {
        match r {
            Record::Graph(ts) => self.graph = ts.into_iter().map(Some).collect(),
            Record::Created(ids) => {
                for (i, id) in ids {
                    if let Some(t) = self.graph.get_mut(i as usize).and_then(Option::take) {
                        self.created += 1;
                        self.tasks.insert(id, (self.created, t));
                    }
                }
            }
            Record::Forgotten(ids) => {
                for id in ids {
                    self.tasks.remove(&id);
                    self.erred.remove(&id);
                }
            }
            Record::Erred(failed) => {
                for (id, message) in failed {
                    if self.tasks.contains_key(&id) {
                        self.erred.insert(id, message);
                    }
                }
            }
            Record::ClientJoined { id, name } => {
                self.next_client = self.next_client.max(id + 1);
                self.clients.insert(id, (name, FxHashSet::default()));
            }
            Record::ClientLeft(id) => {
                self.clients.remove(&id);
            }
            Record::Wants { client, keys } => {
                if let Some((_, wants)) = self.clients.get_mut(&client) {
                    wants.extend(keys);
                }
            }
            Record::Releases { client, keys } => {
                if let Some((_, wants)) = self.clients.get_mut(&client) {
                    for k in &keys {
                        wants.remove(k);
                    }
                }
            }
            Record::WorkerJoined { id, name } => {
                self.next_worker = self.next_worker.max(id + 1);
                self.workers.insert(id, name);
            }
            Record::WorkerLeft(id) => {
                self.workers.remove(&id);
            }
            Record::Floor(_) => {}
            Record::Published { name, client, keys } => {
                self.next_client = self.next_client.max(client + 1);
                self.datasets.insert(name, (client, keys));
            }
            Record::Unpublished(name) => {
                self.datasets.remove(&name);
            }
        }
    }
}

/// Restores `server` from the journal of `cfg` (nothing to restore from a new one) and
/// opens it for appending, compacted to what was restored.
pub(crate) fn restore(server: &mut Server, cfg: &JournalConfig) -> Result<(), String> {
    let started = Instant::now();
    let (records, valid) = journal::read(&cfg.path)?;
    let found = records.len();
    let mut m = Model::default();
    for r in records {
        m.apply(r);
    }
    let rec = &mut server.recovery;
    rec.grace = cfg.grace;
    let now = Instant::now();
    server.next_client = server.next_client.max(m.next_client);
    server.next_worker = server.next_worker.max(m.next_worker);
    for id in m.clients.keys() {
        server.core.on_client_joined(ClientId(*id));
        server
            .recovery
            .suspended
            .insert(ClientId(*id), now + cfg.grace);
    }
    let mut tasks: Vec<(u64, (u64, JournalTask))> = m.tasks.into_iter().collect();
    tasks.sort_by_key(|(_, (order, _))| *order);
    let tasks = tasks.into_iter().map(|(id, (_, t))| (id, t));
    let restored = tasks.len();
    let (ids, tasks): (FxHashMap<String, TaskId>, Vec<NewTask>) = tasks
        .into_iter()
        .map(|(id, t)| ((t.key.clone(), TaskId(id)), from_journal(t)))
        .unzip();
    // What each client and each dataset holds, all held before a task is found unwanted.
    for (id, _) in m.datasets.values() {
        server.core.on_client_joined(ClientId(*id));
    }
    let holders: Vec<(ClientId, Vec<String>)> = m
        .clients
        .iter()
        .map(|(c, (_, wants))| (ClientId(*c), wants.iter().cloned().collect()))
        .chain(
            m.datasets
                .values()
                .map(|(c, keys)| (ClientId(*c), keys.clone())),
        )
        .collect();
    server
        .core
        .restore_graph(tasks, &holders, &ids)
        .map_err(|e| {
            format!(
                "journal {}: cannot restore its graph: {e}",
                cfg.path.display()
            )
        })?;
    server.datasets = std::mem::take(&mut m.datasets)
        .into_iter()
        .map(|(name, (c, keys))| (name, (ClientId(c), keys)))
        .collect();
    // Failed before: failed again (with what reads them), not run again.
    for (id, message) in std::mem::take(&mut m.erred) {
        server.core.restore_erred(TaskId(id), message);
    }
    server.core.restored();
    let _ = server.core.take_actions();
    let rec = &mut server.recovery;
    rec.restored = server.core.task_count();
    if found > 0 {
        rec.awaited = m.workers.values().cloned().collect();
        if !rec.awaited.is_empty() {
            server.core.hold_placement(true);
            rec.hold_until = Some(now + cfg.grace);
        }
    }
    server.core.record_changes(true);
    let mut writer = JournalWriter::open(&cfg.path, valid, cfg.fsync)
        .map_err(|e| format!("journal {}: {e}", cfg.path.display()))?;
    let names: Vec<(u32, String)> = m
        .clients
        .iter()
        .map(|(c, (n, _))| (*c, n.clone()))
        .collect();
    let mut state = server.journal_state(&names);
    state.extend(m.workers.iter().map(|(id, name)| Record::WorkerJoined {
        id: *id,
        name: name.clone(),
    }));
    writer
        .rewrite(&state)
        .map_err(|e| format!("journal {}: {e}", cfg.path.display()))?;
    let rec = &mut server.recovery;
    rec.journal = Some(writer);
    if found > 0 {
        info!(
            "restored from the journal {} in {:.3} s: {} tasks ({} recorded), {} clients; waiting up to {:.0} s for {} workers to come back",
            cfg.path.display(),
            started.elapsed().as_secs_f64(),
            rec.restored,
            restored,
            m.clients.len(),
            cfg.grace.as_secs_f64(),
            rec.awaited.len()
        );
        rec.restored_at = Some(Instant::now());
    }
    Ok(())
}

impl Server {
    /// The live state as journal records: clients (with `names`), tasks, what each
    /// client holds, the generation floor.
    pub(crate) fn journal_state(&self, names: &[(u32, String)]) -> Vec<Record> {
        let (tasks, wants) = self.core.export();
        let name_of = |c: u32| {
            names
                .iter()
                .find(|(id, _)| *id == c)
                .map_or_else(|| format!("client-{c}"), |(_, n)| n.clone())
        };
        // Datasets' holders are not clients: their records follow the tasks.
        let wants: Vec<(ClientId, Vec<String>)> = wants
            .into_iter()
            .filter(|(c, _)| !self.is_dataset_holder(*c))
            .collect();
        let mut out: Vec<Record> = wants
            .iter()
            .map(|(c, _)| Record::ClientJoined {
                id: c.0,
                name: name_of(c.0),
            })
            .collect();
        // Inputs before what reads them: in id order within a generation is not enough
        // after slot reuse, so the core sorts them again when restoring.
        for part in tasks.chunks(10_000) {
            out.push(Record::Graph(
                part.iter().map(|(_, t)| to_journal(t.clone())).collect(),
            ));
            out.push(Record::Created(
                (0..).zip(part).map(|(i, (id, _))| (i, id.0)).collect(),
            ));
        }
        out.extend(
            self.datasets
                .iter()
                .map(|(name, (c, keys))| Record::Published {
                    name: name.clone(),
                    client: c.0,
                    keys: keys.clone(),
                }),
        );
        let erred = self.core.export_erred();
        if !erred.is_empty() {
            out.push(Record::Erred(
                erred.into_iter().map(|(t, m)| (t.0, m)).collect(),
            ));
        }
        out.extend(
            wants
                .into_iter()
                .filter(|(_, k)| !k.is_empty())
                .map(|(c, keys)| Record::Wants { client: c.0, keys }),
        );
        out
    }

    /// Appends a record to the journal, if there is one. A journal that cannot be
    /// written is said and closed: the scheduler goes on without it.
    pub(crate) fn journal(&mut self, r: &Record) {
        if self.recovery.journal.is_some() {
            self.journal_framed(&Framed::new(r));
        }
    }

    fn journal_framed(&mut self, r: &Framed) {
        if let Some(j) = &mut self.recovery.journal {
            if let Err(e) = j.append_framed(r) {
                warn!("the journal cannot be written ({e}): going on without it");
                self.recovery.journal = None;
                self.core.record_changes(false);
            }
        }
    }

    /// A graph's tasks encoded as the journal keeps them, before the core takes them
    /// (moved into the record and back: nothing is copied but the encoding); `None`
    /// without a journal.
    pub(crate) fn encode_graph(&self, tasks: Vec<NewTask>) -> (Vec<NewTask>, Option<Framed>) {
        if self.recovery.journal.is_none() {
            return (tasks, None);
        }
        let record = Record::Graph(tasks.into_iter().map(to_journal).collect());
        let framed = Framed::new(&record);
        let Record::Graph(tasks) = record else {
            unreachable!("just built")
        };
        (tasks.into_iter().map(from_journal).collect(), Some(framed))
    }

    /// A graph the core took: its tasks (`graph`, from [`Server::encode_graph`]) if any
    /// was created, which were and their ids, and the keys the client holds, journaled.
    pub(crate) fn journal_graph(&mut self, c: ClientId, graph: &Framed, wanted: &[String]) {
        let (created, forgotten) = self.core.take_changes();
        if !created.is_empty() {
            self.journal_framed(graph);
            self.journal(&Record::Created(
                created.iter().map(|(i, id)| (*i, id.0)).collect(),
            ));
        }
        if !wanted.is_empty() {
            self.journal(&Record::Wants {
                client: c.0,
                keys: wanted.to_vec(),
            });
        }
        if !forgotten.is_empty() {
            self.journal(&Record::Forgotten(forgotten.iter().map(|t| t.0).collect()));
        }
    }

    /// The end of a round of the loop: tasks forgotten journaled, the journal handed to
    /// the OS when due (now if `now`; to the disk by its policy), compacted when it has
    /// grown.
    pub(crate) fn journal_round(&mut self, now: bool) {
        match &self.recovery.journal {
            Some(j) if now || j.due() => {}
            _ => return,
        }
        // Failures and forgotten ids wait for the flush: a record a round would cost more
        // than the round, and ids are never issued twice, so their place in the file is
        // free (a failure recorded after its task's forgetting is dropped on restore).
        let erred = self.core.take_erred();
        if !erred.is_empty() {
            self.journal(&Record::Erred(
                erred.into_iter().map(|(t, m)| (t.0, m)).collect(),
            ));
        }
        let (_, forgotten) = self.core.take_changes();
        if !forgotten.is_empty() {
            self.journal(&Record::Forgotten(forgotten.iter().map(|t| t.0).collect()));
        }
        let Some(j) = &mut self.recovery.journal else {
            return;
        };
        let flushed = j.flush();
        if let Err(e) = flushed {
            warn!("the journal cannot be written ({e}): going on without it");
            self.recovery.journal = None;
            self.core.record_changes(false);
            return;
        }
        if j.wants_compaction() {
            let names: Vec<(u32, String)> = Vec::new();
            let mut state = self.journal_state(&names);
            state.extend(self.workers.iter().map(|(id, c)| Record::WorkerJoined {
                id: id.0,
                name: c.spec.name.clone(),
            }));
            let before = self.recovery.journal.as_ref().map_or(0, |j| j.len());
            if let Some(j) = &mut self.recovery.journal {
                match j.rewrite(&state) {
                    Ok(()) => info!("journal compacted: {} → {} bytes", before, j.len()),
                    Err(e) => warn!("the journal could not be compacted: {e}"),
                }
            }
        }
    }

    /// Whether a client that lost its connection is kept for a while.
    pub(crate) fn keeps_clients(&self) -> bool {
        !self.recovery.grace.is_zero()
    }

    /// Gives up clients and workers that did not come back in time.
    pub(crate) fn recovery_tick(&mut self) {
        let now = Instant::now();
        let gone: Vec<ClientId> = self
            .recovery
            .suspended
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(c, _)| *c)
            .collect();
        for c in gone {
            self.recovery.suspended.remove(&c);
            info!(
                client = c.0,
                "the client did not come back: its keys are released"
            );
            self.core.on_client_left(c);
            self.journal(&Record::ClientLeft(c.0));
        }
        if self.recovery.hold_until.is_some_and(|t| t <= now) {
            let missing: Vec<String> = self.recovery.awaited.drain().collect();
            warn!("workers not back after the restore: {missing:?}; what only they held is computed again");
            self.release_hold();
        }
    }

    fn release_hold(&mut self) {
        self.recovery.hold_until = None;
        self.recovery.awaited.clear();
        if self.core.placement_held() {
            info!(
                "placing tasks again: {} values taken back from workers, {:.3} s after the restore",
                self.recovery.taken_back,
                self.recovery
                    .restored_at
                    .map_or(0.0, |t| t.elapsed().as_secs_f64())
            );
            self.core.hold_placement(false);
        }
    }

    /// A client connecting again as `id`: resumed if the scheduler still keeps it.
    pub(crate) fn resume_client(&mut self, id: u32) -> Option<ClientId> {
        let c = ClientId(id);
        self.recovery.suspended.remove(&c)?;
        info!(client = id, "client connected again");
        Some(c)
    }

    /// A client that connected again holds futures for `keys`: each one's state is told
    /// again, and those the scheduler does not know are lost.
    pub(crate) fn on_resubscribe(&mut self, c: ClientId, keys: Vec<String>) {
        let (known, lost): (Vec<String>, Vec<String>) = keys
            .into_iter()
            .partition(|k| self.core.task_id(k).is_some());
        if !known.is_empty() {
            if let Err(e) = self.core.on_resubscribe(c, &known) {
                warn!(client = c.0, "cannot resubscribe: {e}");
            }
            self.journal(&Record::Wants {
                client: c.0,
                keys: known,
            });
        }
        if !lost.is_empty() {
            self.to_client(
                c,
                ToClient::KeysLost {
                    keys: lost,
                    reason: "the scheduler does not know them (it restarted without them)".into(),
                },
            );
        }
    }

    /// Part of what a rejoining worker holds; on the last part it joins the core with
    /// them.
    pub(crate) fn on_holding(&mut self, w: WorkerId, tasks: Vec<(TaskId, u64)>, last: bool) {
        let Some(held) = self.recovery.holding.get_mut(&w) else {
            return;
        };
        held.extend(tasks);
        if !last {
            return;
        }
        let held = self.recovery.holding.remove(&w).unwrap_or_default();
        let Some(conn) = self.workers.get(&w) else {
            return;
        };
        let (spec, name) = (conn.spec.clone(), conn.spec.name.clone());
        self.core.on_worker_joined(w, spec);
        let before = self.core.count(rask_scheduler_core::TaskState::Memory);
        self.core.on_worker_holds(w, &held);
        let taken = self
            .core
            .count(rask_scheduler_core::TaskState::Memory)
            .saturating_sub(before) as usize;
        self.recovery.taken_back += taken;
        info!(worker = w.0, name = %name, "worker back with {} values: {} taken", held.len(), taken);
        self.worker_back(&name);
    }

    /// A worker named `name` is back: placement stops waiting once all are.
    pub(crate) fn worker_back(&mut self, name: &str) {
        if self.recovery.awaited.remove(name) && self.recovery.awaited.is_empty() {
            self.release_hold();
        }
    }
}

#[cfg(test)]
mod tests;
