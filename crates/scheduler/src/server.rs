//! The main loop's state outside the core: connections, workers' addresses, graphs
//! arriving in parts, and each peer's messages handed to the core (its actions are
//! routed in `route`, what observers see is built in `observe`).

use bytes::Bytes;
use rask_proto::msg::{
    map_key, run_keys, Holder, KeyRun, ToClient, ToScheduler, ToWorker, WhoHasEntry,
    MAX_RELEASE_RUN_KEYS,
};
use rask_proto::{ClientId, WorkerId};
use rask_scheduler_core::{NewMap, NewTask, SchedulerCore, WorkerSpec};
use rask_transport::{Batch, Sender};
use rustc_hash::{FxHashMap, FxHashSet};
use tracing::{debug, error, info, warn};

use crate::conn::Event;
use crate::conn::Peer;
use crate::observe::unix_us;
use crate::programs::{ClientProgram, ProgramMap};
use crate::registry::Base;

pub(crate) struct WorkerConn {
    pub(crate) tx: Option<Sender<ToWorker>>,
    pub(crate) addr: String,
    pub(crate) shm_addr: String,
    pub(crate) transport: String,
    pub(crate) device: String,
    pub(crate) device_name: String,
    pub(crate) device_memory_limit: u64,
    pub(crate) pid: u32,
    pub(crate) spec: WorkerSpec,
    pub(crate) heartbeat: Option<rask_proto::msg::HeartbeatMsg>,
    /// When it joined or last sent a heartbeat.
    pub(crate) last_seen: std::time::Instant,
    /// The code it runs (its program).
    pub(crate) code: u64,
    /// Whether it starts programs' workers when asked.
    pub(crate) runs_programs: bool,
    /// See [`rask_proto::msg::WorkerHello::dashboard`].
    pub(crate) dashboard: String,
    /// Bytes and microseconds it received, by peer and link, so far.
    pub(crate) received_from: FxHashMap<(WorkerId, String), (u64, u64)>,
}

/// A graph arriving in parts (see [`rask_proto::msg::UpdateGraphMsg::more`]).
#[derive(Default)]
pub(crate) struct Partial {
    pub(crate) tasks: Vec<NewTask>,
    pub(crate) wanted: Vec<String>,
    /// Why the graph will be refused when its last part arrives.
    pub(crate) error: Option<String>,
}

/// A client's connection: its writer (none until it is up), and the workers it was told
/// of (news names holders by id; a worker is told once per connection).
#[derive(Default)]
pub(crate) struct ClientConn {
    pub(crate) tx: Option<Sender<ToClient>>,
    pub(crate) told: FxHashSet<WorkerId>,
}

/// The scheduler's state outside the core: connections, names, the cluster's registry.
pub(crate) struct Server {
    pub(crate) core: SchedulerCore,
    /// The journal, clients kept after losing their connection, rejoining workers.
    pub(crate) recovery: crate::recovery::Recovery,
    pub(crate) address: String,
    pub(crate) clients: FxHashMap<ClientId, ClientConn>,
    pub(crate) workers: FxHashMap<WorkerId, WorkerConn>,
    pub(crate) next_client: u32,
    pub(crate) next_worker: u32,
    /// The ops and code of the cluster's base workers, while any is connected.
    pub(crate) base: Option<Base>,
    /// Programs of clients with typed ops, by code.
    pub(crate) programs: ProgramMap,
    /// The programs of connected clients.
    pub(crate) client_programs: FxHashMap<ClientId, ClientProgram>,
    /// Counts program uses (for keeping the recently used).
    pub(crate) clock: u64,
    /// Graphs whose last part has not arrived, by client.
    pub(crate) partial: FxHashMap<ClientId, Partial>,
    /// Answers to `RetireWorkers` waiting for the workers retired to leave.
    pub(crate) retire_replies: Vec<RetireReply>,
    /// A client asked the cluster to shut down, and why.
    pub(crate) shutdown_requested: Option<String>,
    /// When it started, in microseconds since the Unix epoch.
    pub(crate) started_us: u64,
    /// This host's identity ([`rask_transport::host_id`]), said in the scheduler's info.
    pub(crate) host_id: String,
    /// The dashboard's address, empty without one.
    pub(crate) dashboard: String,
    /// The published datasets.
    pub(crate) datasets: crate::datasets::Datasets,
    /// The vector of actions routed last, emptied, for the core to fill next (see
    /// [`SchedulerCore::swap_actions`]).
    pub(crate) spare_actions: Vec<rask_scheduler_core::Action>,
    /// How many messages each connection had in the last batch routed (its next list's
    /// room).
    pub(crate) outbox_sizes: crate::route::OutboxSizes,
}

/// An answer to a client's `RetireWorkers`, sent once the workers retired have left.
pub(crate) struct RetireReply {
    pub(crate) client: ClientId,
    pub(crate) req: u64,
    /// The names of the workers retired, in the order they closed.
    pub(crate) names: Vec<String>,
    /// Those whose connections are still open.
    pub(crate) waiting: Vec<WorkerId>,
}

impl Server {
    /// A scheduler at `address` with no client or worker yet (`dashboard`: its
    /// dashboard's address, empty without one).
    pub(crate) fn new(core: SchedulerCore, address: String, dashboard: String) -> Server {
        Server {
            core,
            address,
            clients: FxHashMap::default(),
            workers: FxHashMap::default(),
            next_client: 1,
            next_worker: 0,
            base: None,
            programs: FxHashMap::default(),
            client_programs: FxHashMap::default(),
            clock: 0,
            partial: FxHashMap::default(),
            spare_actions: Vec::new(),
            outbox_sizes: Default::default(),
            retire_replies: Vec::new(),
            shutdown_requested: None,
            started_us: unix_us(),
            host_id: rask_transport::host_id(),
            dashboard,
            recovery: Default::default(),
            datasets: Default::default(),
        }
    }

    /// Tells every client the scheduler is going, with why (so that none tries to
    /// connect again).
    pub(crate) fn close_clients(&mut self, why: &str) {
        for tx in self.clients.values().filter_map(|c| c.tx.as_ref()) {
            let _ = tx.send(ToClient::Closing {
                reason: why.to_string(),
            });
        }
    }

    /// Tells every worker to close, with why.
    pub(crate) fn close_workers(&mut self, why: &str) {
        for w in self.workers.values() {
            if let Some(tx) = &w.tx {
                let _ = tx.send(ToWorker::Close {
                    reason: why.to_string(),
                });
            }
        }
    }

    pub(crate) fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Hello { hello, reply } => {
                let _ = reply.send(self.on_hello(*hello));
            }
            Event::Writer {
                peer,
                client,
                worker,
            } => match peer {
                Peer::Client(c) => {
                    if let Some(conn) = self.clients.get_mut(&c) {
                        conn.tx = client;
                    }
                }
                Peer::Worker(w) => {
                    if let Some(conn) = self.workers.get_mut(&w) {
                        conn.tx = worker;
                        self.announce_worker(w);
                    }
                }
            },
            Event::Batch(peer, batch, _unread) => self.on_batch(peer, batch),
            Event::Left(peer, reason, lost) => self.on_left(peer, reason, lost),
            Event::Observe(ask) => self.on_ask(ask),
        }
    }

    pub(crate) fn on_batch(&mut self, peer: Peer, batch: Batch<ToScheduler>) {
        let Batch { msgs, bufs, .. } = batch;
        for m in msgs {
            match (peer, m) {
                (Peer::Client(c), ToScheduler::UpdateGraph(g)) => self.on_update_graph(c, g, &bufs),
                (Peer::Client(c), ToScheduler::Map(m)) => self.on_map(c, *m, &bufs),
                (Peer::Client(c), ToScheduler::ReleaseKeys { keys }) => {
                    self.core.on_release_keys(c, &keys);
                    if self.recovery.journal.is_some() {
                        self.journal(&crate::journal::Record::Releases { client: c.0, keys });
                    }
                }
                (Peer::Client(c), ToScheduler::ReleaseMapKeys { runs }) => {
                    self.on_release_runs(c, runs)
                }
                (Peer::Client(c), ToScheduler::Resubscribe { keys }) => {
                    self.on_resubscribe(c, keys)
                }
                (Peer::Worker(w), ToScheduler::Holding { tasks, last }) => {
                    self.on_holding(w, tasks, last)
                }
                (Peer::Client(c), ToScheduler::WhoHas { req, keys }) => {
                    let entries = keys
                        .into_iter()
                        .map(|key| {
                            let holders = holders_of(&self.workers, &self.core.who_has(&key));
                            WhoHasEntry { key, holders }
                        })
                        .collect();
                    self.to_client(c, ToClient::WhoHasReply { req, entries });
                }
                (Peer::Client(c), ToScheduler::Info { req }) => {
                    let info = self.info();
                    self.to_client(
                        c,
                        ToClient::InfoReply {
                            req,
                            info: Box::new(info),
                        },
                    );
                }
                (Peer::Worker(w), ToScheduler::TaskFinished(f)) => {
                    if self.core.is_stale_run(f.task, f.run) {
                        debug!(worker = w.0, task = %f.task, run = f.run, "a stale report dropped");
                    } else {
                        self.core.on_task_finished(
                            w,
                            f.task,
                            f.nbytes,
                            f.duration_us,
                            f.fetch_us,
                            f.value,
                        )
                    }
                }
                (Peer::Worker(w), ToScheduler::TaskErred(e)) => {
                    if self.core.is_stale_run(e.task, e.run) {
                        debug!(worker = w.0, task = %e.task, run = e.run, "a stale report dropped");
                    } else {
                        self.core.on_task_erred(w, e.task, e.message)
                    }
                }
                (
                    Peer::Worker(w),
                    ToScheduler::StealResponse {
                        task,
                        run,
                        released,
                    },
                ) => self.core.on_steal_response(w, task, run, released),
                (Peer::Worker(w), ToScheduler::MissingData { task, dep, holder }) => {
                    self.core.on_missing_data(w, task, dep, holder)
                }
                (
                    Peer::Client(c),
                    ToScheduler::ProgramPart {
                        code,
                        offset,
                        size,
                        buf,
                    },
                ) => self.on_program_part(c, code, offset, size, bufs.get(buf as usize)),
                (Peer::Client(c), ToScheduler::ProgramFailed { code, message }) => {
                    self.on_program_failed(None, format!("client {}", c.0), code, message)
                }
                (Peer::Worker(w), ToScheduler::GetProgram { code }) => self.on_get_program(w, code),
                (Peer::Worker(w), ToScheduler::ProgramFailed { code, message }) => {
                    let name = self
                        .workers
                        .get(&w)
                        .map_or_else(|| format!("worker {}", w.0), |c| c.spec.name.clone());
                    self.on_program_failed(Some(w), name, code, message)
                }
                (Peer::Client(c), ToScheduler::Shutdown { reason }) => {
                    info!(
                        client = c.0,
                        "a client asks the cluster to shut down: {reason}"
                    );
                    self.shutdown_requested =
                        Some(format!("client {} asked to shut down: {reason}", c.0));
                }
                (Peer::Client(c), ToScheduler::RetireWorkers { req, names }) => {
                    self.on_retire_workers(c, req, &names)
                }
                (
                    Peer::Client(c),
                    ToScheduler::AdaptiveTarget {
                        req,
                        target_duration_us,
                    },
                ) => {
                    let target = self
                        .core
                        .adaptive_target(std::time::Duration::from_micros(target_duration_us));
                    let target = target as u64;
                    self.to_client(c, ToClient::AdaptiveTargetReply { req, target });
                }
                (Peer::Client(c), ToScheduler::GetTaskStream { req, since, limit }) => {
                    self.on_get_task_stream(c, req, since, limit)
                }
                (Peer::Client(c), ToScheduler::Story { req, key }) => self.on_story(c, req, &key),
                (Peer::Client(c), ToScheduler::Datasets { req, op }) => {
                    self.on_datasets(c, req, op)
                }
                (Peer::Client(c), ToScheduler::WorkersToClose { req, target }) => {
                    let target = usize::try_from(target).unwrap_or(usize::MAX);
                    let names = self
                        .core
                        .workers_to_close(Some(target))
                        .iter()
                        .map(|n| n.to_string())
                        .collect();
                    self.to_client(c, ToClient::WorkersToCloseReply { req, names });
                }
                (Peer::Worker(w), ToScheduler::CloseGracefully { reason }) => {
                    if self.core.has_worker(w) {
                        info!(worker = w.0, "worker asks to retire: {reason}");
                        self.core.on_close_gracefully(w);
                    }
                }
                (Peer::Worker(w), ToScheduler::DeviceLost { message }) => {
                    let name = self.workers.get(&w).map(|c| c.spec.name.clone());
                    error!(worker = w.0, name = ?name, "worker leaves: {message}");
                    self.core.on_worker_failing(w, &message);
                }
                (Peer::Worker(w), ToScheduler::ReplicasAcquired { tasks }) => {
                    self.core.on_replicas_acquired(w, &tasks)
                }
                (Peer::Worker(w), ToScheduler::ReplicaMissing { task, holder }) => {
                    self.core.on_replica_missing(w, task, holder)
                }
                (Peer::Worker(w), ToScheduler::Heartbeat(hb)) => self.on_heartbeat(w, *hb),
                (Peer::Client(c), ToScheduler::Echo { seq, .. }) => self.on_echo(c, seq),
                (Peer::Worker(_), ToScheduler::Echo { client, seq }) => {
                    self.to_client(ClientId(client), ToClient::Echo { seq })
                }
                (peer, m) => warn!(?peer, "ignoring a message not meant for this role: {m:?}"),
            }
        }
    }

    /// A part of a graph (or a whole one, `more` unset): parts are gathered until the
    /// last, and the graph is then taken as a whole or refused as a whole.
    pub(crate) fn on_update_graph(
        &mut self,
        c: ClientId,
        g: rask_proto::msg::UpdateGraphMsg,
        bufs: &[Bytes],
    ) {
        let part = self.partial.entry(c).or_default();
        let program = self.client_programs.get(&c);
        part.tasks.reserve(g.tasks.len());
        for mut t in g.tasks {
            if part.error.is_some() {
                continue;
            }
            // The client's typed ops run on workers of its program only.
            let code = program.filter(|p| p.ops.contains(&t.op)).map(|p| p.code);
            match t.args.localize(bufs) {
                Ok(own) => part.tasks.push(NewTask {
                    key: t.key,
                    op: t.op,
                    args: t.args,
                    bufs: own,
                    deps: t.deps,
                    resources: t.resources,
                    code,
                }),
                Err(e) => part.error = Some(format!("task {:?}: {e}", t.key)),
            }
        }
        part.wanted.extend(g.wanted);
        if g.more {
            return;
        }
        let Partial {
            tasks,
            wanted,
            error,
        } = self.partial.remove(&c).expect("invariant: just inserted");
        match error {
            Some(e) => self.graph_taken(c, Err(e), || wanted),
            None => self.take_graph(c, tasks, wanted),
        }
    }

    /// A whole graph to add (journaled first, with a journal).
    fn take_graph(&mut self, c: ClientId, tasks: Vec<NewTask>, wanted: Vec<String>) {
        let (tasks, journaled) = self.encode_graph(tasks);
        let outcome = self
            .core
            .on_update_graph(c, tasks, &wanted)
            .map_err(|e| e.to_string());
        if let (Some(graph), true) = (journaled, outcome.is_ok()) {
            self.journal_graph(c, &graph, &wanted);
        }
        self.graph_taken(c, outcome, || wanted);
    }

    /// A client's map: taken (or refused) as a whole, as the graph of its tasks would be.
    /// With a journal it goes as that graph, which the journal records.
    pub(crate) fn on_map(&mut self, c: ClientId, m: rask_proto::msg::MapMsg, bufs: &[Bytes]) {
        let (count, first) = (m.args.len(), m.first);
        let prefix = m.prefix.clone();
        let keys = move || {
            (0..count as u64)
                .map(|i| rask_proto::msg::map_key(&prefix, first.wrapping_add(i)))
                .collect::<Vec<String>>()
        };
        let code = self
            .client_programs
            .get(&c)
            .filter(|p| p.ops.contains(&m.op))
            .map(|p| p.code);
        let mut args = Vec::with_capacity(count);
        for (i, mut a) in m.args.into_iter().enumerate() {
            match a.localize(bufs) {
                Ok(own) => args.push((a, own)),
                Err(e) => {
                    let key = rask_proto::msg::map_key(&m.prefix, first.wrapping_add(i as u64));
                    let outcome = Err(format!("task {key:?}: {e}"));
                    return self.graph_taken(c, outcome, keys);
                }
            }
        }
        let map = NewMap {
            prefix: m.prefix,
            first,
            op: m.op,
            args,
            resources: m.resources,
            code,
        };
        if self.recovery.journal.is_some() {
            // Its keys must not wrap around, as the core checks of a map.
            if let Err(e) = map.check_numbers() {
                return self.graph_taken(c, Err(e.to_string()), keys);
            }
            let (tasks, wanted) = map.into_graph();
            return self.take_graph(c, tasks, wanted);
        }
        let outcome = self.core.on_map(c, map).map_err(|e| e.to_string());
        self.graph_taken(c, outcome, keys);
    }

    /// A client released a map's keys, in runs; a message naming more than
    /// [`MAX_RELEASE_RUN_KEYS`] keys is refused whole (the keys stay held).
    fn on_release_runs(&mut self, c: ClientId, runs: Vec<KeyRun>) {
        let count = run_keys(&runs);
        if count > MAX_RELEASE_RUN_KEYS {
            warn!(
                client = c.0,
                count, "refusing a release of more keys than one message may name"
            );
            return;
        }
        self.core.on_release_runs(c, &runs);
        if self.recovery.journal.is_some() {
            let keys = runs
                .iter()
                .flat_map(|r| r.numbers().map(|n| map_key(&r.prefix, n)))
                .collect();
            self.journal(&crate::journal::Record::Releases { client: c.0, keys });
        }
    }

    /// Ends a graph's (or map's) submission: the client's program starts if it was taken;
    /// if refused, the client hears why for each of the keys it wants.
    fn graph_taken(
        &mut self,
        c: ClientId,
        outcome: Result<(), String>,
        wanted: impl FnOnce() -> Vec<String>,
    ) {
        if outcome.is_ok() {
            if let Some(code) = self.client_programs.get(&c).map(|p| p.code) {
                self.start_program(code);
            }
        }
        if let Err(message) = outcome {
            // The client waits on the keys it wants (its futures), and only on those.
            self.to_client(
                c,
                ToClient::GraphRejected {
                    keys: wanted(),
                    message,
                },
            );
        }
    }

    /// A client asks to retire workers by name (or data address); names of no worker
    /// here are ignored.
    pub(crate) fn on_retire_workers(&mut self, c: ClientId, req: u64, names: &[String]) {
        let mut ids: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(w, conn)| {
                self.core.has_worker(**w)
                    && names
                        .iter()
                        .any(|n| *n == conn.spec.name || *n == conn.addr)
            })
            .map(|(w, _)| *w)
            .collect();
        ids.sort_unstable();
        info!(client = c.0, "retiring workers {names:?}");
        self.core.on_retire_workers(c, req, &ids);
    }

    /// A worker the core closed has left: answers waiting only on it go out.
    pub(crate) fn retired_worker_left(&mut self, w: WorkerId) {
        for r in &mut self.retire_replies {
            r.waiting.retain(|x| *x != w);
        }
        let (done, waiting): (Vec<RetireReply>, Vec<RetireReply>) =
            std::mem::take(&mut self.retire_replies)
                .into_iter()
                .partition(|r| r.waiting.is_empty());
        self.retire_replies = waiting;
        for r in done {
            self.to_client(
                r.client,
                ToClient::RetireWorkersReply {
                    req: r.req,
                    retired: r.names,
                },
            );
        }
    }

    /// A client's echo: passed to a worker (in turn by its number), which sends it back;
    /// straight back with no worker.
    fn on_echo(&self, c: ClientId, seq: u64) {
        let connected = self.workers.iter().filter(|(_, w)| w.tx.is_some());
        let n = connected.clone().count();
        match connected
            .map(|(id, _)| *id)
            .nth((seq % n.max(1) as u64) as usize)
        {
            Some(w) => self.to_worker(w, ToWorker::Echo { client: c.0, seq }),
            None => self.to_client(c, ToClient::Echo { seq }),
        }
    }

    pub(crate) fn to_client(&self, c: ClientId, m: ToClient) {
        if let Some(ClientConn { tx: Some(tx), .. }) = self.clients.get(&c) {
            let _ = tx.send(m);
        }
    }
}

/// Where each of `workers` that is connected can be reached.
pub(crate) fn holders_of(
    conns: &FxHashMap<WorkerId, WorkerConn>,
    workers: &[WorkerId],
) -> Vec<Holder> {
    workers
        .iter()
        .filter_map(|w| {
            conns.get(w).map(|c| Holder {
                worker: *w,
                addr: c.addr.clone(),
                shm_addr: c.shm_addr.clone(),
                host_id: c.spec.host_id.clone(),
                pid: c.pid,
                device: c.device.clone(),
            })
        })
        .collect()
}
