//! The scheduler server: accepts client and worker connections, does the handshake
//! (versions and op registries), decodes batches and hands them to the
//! [`SchedulerCore`], and routes the core's actions to the connections' writers.
//!
//! One task owns the core; connection tasks only read, decode and forward. Everything
//! readable is handled per wake-up, and each connection's writer batches what queued
//! meanwhile into one frame. Scheduling decisions belong in the core, not here.

#![forbid(unsafe_code)]

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use rask_proto::msg::{
    Hello, Holder, RegistryInfo, Role, SchedulerInfoMsg, TaskError, ToClient, ToScheduler,
    ToWorker, WhoHasEntry, WorkerInfoMsg,
};
use rask_proto::{ClientId, TaskId, WorkerId, RASK_VERSION};
use rask_scheduler_core::{Action, CoreConfig, NewTask, SchedulerCore, WorkerSpec};
use rask_transport::{spawn_writer, Batch, ConnConfig, FrameReader, Sender, TransportError};
use rustc_hash::FxHashMap;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

/// Scheduler settings.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    pub conn: ConnConfig,
    pub core: CoreConfig,
    /// A worker silent for this long (workers heartbeat every second) is presumed dead:
    /// its connection is closed and its work rescheduled.
    pub worker_ttl: std::time::Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            conn: ConnConfig::default(),
            core: CoreConfig::default(),
            worker_ttl: std::time::Duration::from_secs(60),
        }
    }
}

/// Errors that stop the scheduler.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Who sent a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Peer {
    Client(ClientId),
    Worker(WorkerId),
}

/// What connection tasks tell the main loop.
enum Event {
    /// A peer said hello; the main loop answers through `reply`.
    Hello {
        hello: Box<Hello>,
        reply: oneshot::Sender<Result<Joined, String>>,
    },
    /// The sender of a joined peer, registered before its reader starts.
    Writer {
        peer: Peer,
        client: Option<Sender<ToClient>>,
        worker: Option<Sender<ToWorker>>,
    },
    /// A batch read from a peer, with the share of the peer's unread budget it holds
    /// until handled.
    Batch(Peer, Batch<ToScheduler>, tokio::sync::OwnedSemaphorePermit),
    Left(Peer, Option<String>),
}

/// The main loop's answer to a hello.
struct Joined {
    peer: Peer,
}

struct WorkerConn {
    tx: Option<Sender<ToWorker>>,
    addr: String,
    shm_addr: String,
    transport: String,
    device: String,
    device_name: String,
    device_memory_limit: u64,
    pid: u32,
    spec: WorkerSpec,
    heartbeat: Option<rask_proto::msg::HeartbeatMsg>,
}

/// A graph arriving in parts (see [`rask_proto::msg::UpdateGraphMsg::more`]).
#[derive(Default)]
struct Partial {
    tasks: Vec<NewTask>,
    wanted: Vec<String>,
    /// Why the graph will be refused when its last part arrives.
    error: Option<String>,
}

/// The scheduler's state outside the core: connections, names, the cluster's registry.
struct Server {
    core: SchedulerCore,
    address: String,
    clients: FxHashMap<ClientId, Option<Sender<ToClient>>>,
    workers: FxHashMap<WorkerId, WorkerConn>,
    next_client: u32,
    next_worker: u32,
    /// The ops of the cluster's workers (all alike), while any is connected.
    registry: Option<ClusterOps>,
    /// Graphs whose last part has not arrived, by client.
    partial: FxHashMap<ClientId, Partial>,
}

/// Runs a scheduler on a bound listener until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    cfg: SchedulerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), SchedulerError> {
    let address = rask_transport::listener_addr(&listener)?;
    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
    let mut server = Server {
        core: SchedulerCore::new(cfg.core.clone()),
        address,
        clients: FxHashMap::default(),
        workers: FxHashMap::default(),
        next_client: 1,
        next_worker: 0,
        registry: None,
        partial: FxHashMap::default(),
    };
    let conn_cfg = cfg.conn;
    let worker_ttl = cfg.worker_ttl;
    let accept = async {
        loop {
            match listener.accept().await {
                Ok((stream, peer_addr)) => {
                    debug!(%peer_addr, "connection");
                    let conn =
                        handle_conn(stream, peer_addr, conn_cfg.clone(), worker_ttl, tx.clone());
                    let span = tracing::info_span!("conn", peer = %peer_addr);
                    tokio::spawn(tracing::Instrument::instrument(conn, span));
                }
                Err(e) => warn!("accept failed: {e}"),
            }
        }
    };
    // The main loop runs as a spawned task, not inside the caller's future: waking a
    // task is a queue push, while waking a current-thread runtime's `block_on` future goes
    // through the I/O driver (an eventfd write per wake-up).
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let main = tokio::spawn(async move {
        let mut events = Vec::new();
        loop {
            tokio::select! {
                biased;
                n = rx.recv_many(&mut events, 4096) => {
                    if n == 0 {
                        break;
                    }
                    for ev in events.drain(..) {
                        server.on_event(ev);
                    }
                    server.flush();
                }
                _ = &mut stop_rx => break,
            }
        }
        for w in server.workers.values() {
            if let Some(tx) = &w.tx {
                let _ = tx.send(ToWorker::Close {
                    reason: "scheduler shutting down".into(),
                });
            }
        }
    });
    tokio::select! {
        _ = accept => {}
        _ = shutdown => info!("scheduler shutting down"),
    }
    let _ = stop_tx.send(());
    let _ = main.await;
    Ok(())
}

/// Bytes of frames one connection may have read that the main loop has not handled yet;
/// past this, the connection is not read until the main loop catches up.
const UNREAD_MAX: usize = 64 << 20;

async fn handle_conn(
    stream: TcpStream,
    peer_addr: std::net::SocketAddr,
    cfg: ConnConfig,
    worker_ttl: std::time::Duration,
    events: mpsc::UnboundedSender<Event>,
) {
    let _ = stream.set_nodelay(true);
    let (r, mut w) = stream.into_split();
    let mut reader = FrameReader::new(r, cfg.clone());
    let hello = match rask_transport::accept(&mut reader, &mut w, &cfg).await {
        Ok(h) => h,
        Err(e) => {
            warn!(peer = %peer_addr, "handshake failed: {e}");
            rask_transport::refuse_after(&mut w, &e).await;
            return;
        }
    };
    let (reply_tx, reply_rx) = oneshot::channel();
    let role = hello.role.clone();
    let name = hello.name.clone();
    if events
        .send(Event::Hello {
            hello: Box::new(hello),
            reply: reply_tx,
        })
        .is_err()
    {
        return;
    }
    let Ok(answer) = reply_rx.await else { return };
    let peer = match answer {
        Ok(j) => j.peer,
        Err(reason) => {
            warn!(peer = %peer_addr, "refused {role:?} {name:?}: {reason}");
            let _ = rask_transport::refuse(&mut w, &reason).await;
            return;
        }
    };
    let id = match peer {
        Peer::Client(c) => c.0,
        Peer::Worker(w) => w.0,
    };
    if let Err(e) = rask_transport::welcome(&mut w, &reader, id).await {
        let _ = events.send(Event::Left(peer, Some(e.to_string())));
        return;
    }
    let writer = match peer {
        Peer::Client(_) => Event::Writer {
            peer,
            client: Some(spawn_writer(w)),
            worker: None,
        },
        Peer::Worker(_) => Event::Writer {
            peer,
            client: None,
            worker: Some(spawn_writer(w)),
        },
    };
    if events.send(writer).is_err() {
        return;
    }
    let unread = Arc::new(tokio::sync::Semaphore::new(UNREAD_MAX));
    let reason = loop {
        let next = match peer {
            Peer::Worker(_) => {
                match tokio::time::timeout(worker_ttl, reader.read_batch::<ToScheduler>()).await {
                    Ok(r) => r,
                    Err(_) => break Some(format!("silent for {worker_ttl:?}: presumed dead")),
                }
            }
            Peer::Client(_) => reader.read_batch::<ToScheduler>().await,
        };
        match next {
            Ok(Some(batch)) => {
                let share = batch.frame_bytes.min(UNREAD_MAX as u64) as u32;
                let Ok(held) = unread.clone().acquire_many_owned(share).await else {
                    return;
                };
                if events.send(Event::Batch(peer, batch, held)).is_err() {
                    return;
                }
            }
            Ok(None) => break None,
            Err(e) => break Some(e.to_string()),
        }
    };
    let failed = reason.is_some();
    let _ = events.send(Event::Left(peer, reason));
    if failed {
        // The peer is told why (by its writer); keep its bytes from resetting that.
        rask_transport::drain(reader.get_mut(), std::time::Duration::from_secs(2)).await;
    }
}

impl Server {
    fn on_event(&mut self, ev: Event) {
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
                    if let Some(slot) = self.clients.get_mut(&c) {
                        *slot = client;
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
            Event::Left(peer, reason) => self.on_left(peer, reason),
        }
    }

    fn on_hello(&mut self, h: Hello) -> Result<Joined, String> {
        rask_proto::msg::check_versions(&h, "the scheduler")?;
        match h.role {
            Role::Client => {
                if let (Some(theirs), Some(ours)) = (&h.registry, &self.registry) {
                    ours.admits_client(&h, theirs)?;
                }
                let id = ClientId(self.next_client);
                self.next_client += 1;
                self.clients.insert(id, None);
                self.core.on_client_joined(id);
                info!(client = id.0, name = %h.name, "client joined");
                Ok(Joined {
                    peer: Peer::Client(id),
                })
            }
            Role::Worker => {
                let (Some(wh), Some(reg)) = (&h.worker, &h.registry) else {
                    return Err("a worker's hello must describe the worker and its ops".into());
                };
                match &self.registry {
                    Some(ours) => ours.admits_worker(&h, reg, wh.code)?,
                    None => {
                        self.core
                            .set_registry(Some(reg.ops.iter().map(|o| o.name.clone())));
                        info!(ops = reg.ops.len(), code = %format_args!("{:016x}", wh.code), "the cluster's ops are those of worker {:?}", h.name);
                        self.registry = Some(ClusterOps {
                            info: reg.clone(),
                            code: wh.code,
                        });
                    }
                }
                let Some(wh) = h.worker else {
                    unreachable!("checked above")
                };
                let id = WorkerId(self.next_worker);
                self.next_worker += 1;
                let spec = WorkerSpec {
                    name: h.name.clone(),
                    addr: wh.listen_addr.clone(),
                    host_id: h.host_id.clone(),
                    nthreads: wh.nthreads,
                    memory_limit: wh.memory_limit,
                    resources: wh.resources,
                    gpu: wh.gpu,
                    nvlink: wh.nvlink.clone(),
                    device_spill_at: wh.device_spill_at,
                };
                info!(worker = id.0, name = %h.name, addr = %wh.listen_addr, nthreads = wh.nthreads, transport = %wh.transport, shm = !wh.shm_addr.is_empty(), "worker joined");
                self.workers.insert(
                    id,
                    WorkerConn {
                        tx: None,
                        addr: wh.listen_addr,
                        shm_addr: wh.shm_addr,
                        transport: wh.transport,
                        device: wh.device,
                        device_name: wh.device_name,
                        device_memory_limit: wh.device_memory_limit,
                        pid: h.pid,
                        spec,
                        heartbeat: None,
                    },
                );
                Ok(Joined {
                    peer: Peer::Worker(id),
                })
            }
            Role::Peer => {
                Err("the scheduler does not serve data: connect as a client or a worker".into())
            }
        }
    }

    /// Called once the worker's writer exists: tell it its peers, tell them about it, and
    /// only then let the core place work on it.
    fn announce_worker(&mut self, id: WorkerId) {
        let peers: Vec<_> = self
            .workers
            .iter()
            .map(|(w, c)| rask_proto::msg::PeerAddr {
                worker: *w,
                addr: c.addr.clone(),
                shm_addr: c.shm_addr.clone(),
                host_id: c.spec.host_id.clone(),
                pid: c.pid,
                gpu: c.spec.gpu,
            })
            .collect();
        let me = peers
            .iter()
            .find(|p| p.worker == id)
            .cloned()
            .expect("invariant: just inserted");
        for (w, c) in &self.workers {
            let Some(tx) = &c.tx else { continue };
            let msg = if *w == id {
                ToWorker::Peers {
                    peers: peers.clone(),
                }
            } else {
                ToWorker::Peers {
                    peers: vec![me.clone()],
                }
            };
            let _ = tx.send(msg);
        }
        let spec = self.workers[&id].spec.clone();
        self.core.on_worker_joined(id, spec);
    }

    fn on_left(&mut self, peer: Peer, reason: Option<String>) {
        match peer {
            Peer::Client(c) => {
                self.partial.remove(&c);
                if let Some(tx) = self.clients.remove(&c) {
                    match reason {
                        Some(r) => {
                            warn!(client = c.0, "client connection closed: {r}");
                            // The client learns why (its writer sends what is queued before
                            // it stops), rather than seeing the connection drop.
                            if let Some(tx) = tx {
                                let _ = tx.send(ToClient::Closing { reason: r });
                            }
                        }
                        None => info!(client = c.0, "client left"),
                    }
                    self.core.on_client_left(c);
                }
            }
            Peer::Worker(w) => {
                if let Some(conn) = self.workers.remove(&w) {
                    match reason {
                        Some(r) => {
                            warn!(worker = w.0, name = %conn.spec.name, "worker connection closed: {r}");
                            if let Some(tx) = &conn.tx {
                                let _ = tx.send(ToWorker::Close { reason: r });
                            }
                        }
                        None => info!(worker = w.0, name = %conn.spec.name, "worker left"),
                    }
                    if self.core.has_worker(w) {
                        self.core.on_worker_lost(w);
                    }
                    if self.workers.is_empty() && self.registry.take().is_some() {
                        // The cluster's data lived on its workers: none is left that code
                        // of another build could be mixed with.
                        self.core.set_registry(None::<std::iter::Empty<String>>);
                        info!("no worker left: the next worker to join defines the cluster's ops");
                    }
                    for c in self.workers.values() {
                        if let Some(tx) = &c.tx {
                            let _ = tx.send(ToWorker::PeerGone { worker: w });
                        }
                    }
                }
            }
        }
    }

    fn on_batch(&mut self, peer: Peer, batch: Batch<ToScheduler>) {
        let Batch { msgs, bufs, .. } = batch;
        for m in msgs {
            match (peer, m) {
                (Peer::Client(c), ToScheduler::UpdateGraph(g)) => self.on_update_graph(c, g, &bufs),
                (Peer::Client(c), ToScheduler::ReleaseKeys { keys }) => {
                    self.core.on_release_keys(c, &keys)
                }
                (Peer::Client(c), ToScheduler::WhoHas { req, keys }) => {
                    let entries = keys
                        .into_iter()
                        .map(|key| {
                            let holders = self.holders(&self.core.who_has(&key));
                            WhoHasEntry { key, holders }
                        })
                        .collect();
                    self.to_client(c, ToClient::WhoHasReply { req, entries });
                }
                (Peer::Client(c), ToScheduler::Info { req }) => {
                    let info = self.info();
                    self.to_client(c, ToClient::InfoReply { req, info });
                }
                (Peer::Worker(w), ToScheduler::TaskFinished(f)) => {
                    self.core
                        .on_task_finished(w, f.task, f.nbytes, f.duration_us, f.value)
                }
                (Peer::Worker(w), ToScheduler::TaskErred(e)) => {
                    self.core.on_task_erred(w, e.task, e.message)
                }
                (Peer::Worker(w), ToScheduler::MissingData { task, dep, holder }) => {
                    self.core.on_missing_data(w, task, dep, holder)
                }
                (Peer::Worker(w), ToScheduler::Heartbeat(hb)) => {
                    self.core.on_device_memory(w, hb.device_memory_used);
                    if let Some(conn) = self.workers.get_mut(&w) {
                        conn.heartbeat = Some(hb);
                    }
                }
                (peer, m) => warn!(?peer, "ignoring a message not meant for this role: {m:?}"),
            }
        }
    }

    /// A part of a graph (or a whole one, `more` unset): parts are gathered until the
    /// last, and the graph is then taken as a whole or refused as a whole.
    fn on_update_graph(&mut self, c: ClientId, g: rask_proto::msg::UpdateGraphMsg, bufs: &[Bytes]) {
        let part = self.partial.entry(c).or_default();
        for mut t in g.tasks {
            if part.error.is_some() {
                continue;
            }
            match t.args.localize(bufs) {
                Ok(own) => part.tasks.push(NewTask {
                    key: t.key,
                    op: t.op,
                    args: t.args,
                    bufs: own,
                    deps: t.deps,
                    resources: t.resources,
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
        let outcome = match error {
            Some(e) => Err(e),
            None => self
                .core
                .on_update_graph(c, tasks, &wanted)
                .map_err(|e| e.to_string()),
        };
        if let Err(message) = outcome {
            // The client waits on the keys it wants (its futures), and only on those.
            self.to_client(
                c,
                ToClient::GraphRejected {
                    keys: wanted,
                    message,
                },
            );
        }
    }

    fn to_client(&self, c: ClientId, m: ToClient) {
        if let Some(Some(tx)) = self.clients.get(&c) {
            let _ = tx.send(m);
        }
    }

    fn holders(&self, workers: &[WorkerId]) -> Vec<Holder> {
        workers
            .iter()
            .filter_map(|w| {
                self.workers.get(w).map(|c| Holder {
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

    fn info(&self) -> SchedulerInfoMsg {
        let core = self.core.info();
        let workers = core
            .workers
            .iter()
            .filter_map(|wi| {
                let c = self.workers.get(&wi.id)?;
                // Until the first heartbeat: no use, no traffic.
                let hb = c.heartbeat.as_ref();
                Some(WorkerInfoMsg {
                    id: wi.id,
                    name: c.spec.name.clone(),
                    addr: c.addr.clone(),
                    host_id: c.spec.host_id.clone(),
                    pid: c.pid,
                    shm_addr: c.shm_addr.clone(),
                    transport: c.transport.clone(),
                    device: c.device.clone(),
                    device_name: c.device_name.clone(),
                    device_memory_limit: c.device_memory_limit,
                    device_memory_used: hb.map_or(0, |h| h.device_memory_used),
                    device_to_host: hb.map_or(0, |h| h.device_to_host),
                    received: hb.map_or_else(Vec::new, |h| h.received.clone()),
                    spilled: hb.map_or_else(Vec::new, |h| h.spilled.clone()),
                    ran: hb.map_or_else(Vec::new, |h| h.ran.clone()),
                    nthreads: c.spec.nthreads,
                    memory_limit: c.spec.memory_limit,
                    resources: c.spec.resources.clone(),
                    processing: wi.processing,
                    stored_keys: wi.stored_keys,
                    stored_bytes: wi.stored_bytes,
                })
            })
            .collect();
        SchedulerInfoMsg {
            address: self.address.clone(),
            rask_version: RASK_VERSION.into(),
            workers,
            tasks_by_state: core
                .tasks_by_state
                .iter()
                .map(|(n, c)| (n.to_string(), *c))
                .collect(),
            clients: core.clients,
        }
    }

    /// Routes the core's actions; frees to one worker coalesce into one message, sent
    /// before any later compute to that worker (a task freed and given back to the same
    /// worker in one step must arrive in that order).
    fn flush(&mut self) {
        let mut frees: FxHashMap<WorkerId, Vec<TaskId>> = FxHashMap::default();
        for a in self.core.take_actions() {
            match a {
                Action::Compute { worker, msg, bufs } => {
                    if let Some(WorkerConn { tx: Some(tx), .. }) = self.workers.get(&worker) {
                        if let Some(tasks) = frees.remove(&worker) {
                            let _ = tx.send(ToWorker::Free { tasks });
                        }
                        let _ = tx.send_with(ToWorker::Compute(msg), bufs);
                    }
                }
                Action::Free { worker, task } => frees.entry(worker).or_default().push(task),
                Action::KeyInMemory {
                    client,
                    key,
                    task,
                    nbytes,
                    holders,
                    value,
                } => {
                    let holders = self.holders(&holders);
                    self.to_client(
                        client,
                        ToClient::KeyInMemory {
                            key: key.to_string(),
                            task,
                            nbytes,
                            holders,
                            value,
                        },
                    );
                }
                Action::KeyErred { client, key, error } => {
                    let error = error_msg(&error);
                    self.to_client(
                        client,
                        ToClient::KeyErred {
                            key: key.to_string(),
                            error,
                        },
                    );
                }
            }
        }
        for (w, tasks) in frees {
            if let Some(WorkerConn { tx: Some(tx), .. }) = self.workers.get(&w) {
                let _ = tx.send(ToWorker::Free { tasks });
            }
        }
    }
}

fn error_msg(e: &Arc<rask_scheduler_core::TaskFailure>) -> TaskError {
    TaskError {
        key: e.key.clone(),
        op: e.op.clone(),
        message: e.message.clone(),
    }
}

/// The ops and code of a cluster's workers.
struct ClusterOps {
    info: RegistryInfo,
    code: u64,
}

impl ClusterOps {
    /// A worker must have the same ops, versions and code as the cluster's workers.
    fn admits_worker(&self, h: &Hello, theirs: &RegistryInfo, code: u64) -> Result<(), String> {
        if theirs.fingerprint != self.info.fingerprint {
            return Err(self.mismatch(h, theirs));
        }
        if code != self.code {
            return Err(format!(
                "code mismatch: worker {:?} runs other code (build {code:016x}) than the cluster's workers (build {:016x}) for the same ops and versions: a changed or stale binary; start every worker of a cluster from one build",
                h.name, self.code
            ));
        }
        Ok(())
    }

    /// A client may know fewer or more ops than the workers, but those it shares with
    /// them must be the same versions.
    fn admits_client(&self, h: &Hello, theirs: &RegistryInfo) -> Result<(), String> {
        let ours: FxHashMap<&str, u64> = self
            .info
            .ops
            .iter()
            .map(|o| (o.name.as_str(), o.version))
            .collect();
        let differ: Vec<&str> = theirs
            .ops
            .iter()
            .filter(|o| ours.get(o.name.as_str()).is_some_and(|v| *v != o.version))
            .map(|o| o.name.as_str())
            .collect();
        if differ.is_empty() {
            return Ok(());
        }
        Err(format!(
            "op version mismatch: client {:?} has other versions than the cluster's workers of the ops {differ:?}",
            h.name
        ))
    }

    fn mismatch(&self, h: &Hello, theirs: &RegistryInfo) -> String {
        let names =
            |r: &RegistryInfo| -> Vec<String> { r.ops.iter().map(|o| o.name.clone()).collect() };
        let (ours_n, theirs_n) = (names(&self.info), names(theirs));
        let only_theirs: Vec<&String> = theirs_n.iter().filter(|o| !ours_n.contains(o)).collect();
        let only_ours: Vec<&String> = ours_n.iter().filter(|o| !theirs_n.contains(o)).collect();
        let other_versions: Vec<&str> = theirs
            .ops
            .iter()
            .filter(|o| {
                self.info
                    .ops
                    .iter()
                    .any(|x| x.name == o.name && x.version != o.version)
            })
            .map(|o| o.name.as_str())
            .collect();
        format!(
            "op registry mismatch: worker {:?} has registry {:016x}, the cluster's workers have {:016x}; ops only on this worker: {:?}; ops only on the cluster's workers: {:?}; ops in other versions: {:?}",
            h.name, theirs.fingerprint, self.info.fingerprint, only_theirs, only_ours, other_versions
        )
    }
}
