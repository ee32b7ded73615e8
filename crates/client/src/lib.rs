//! The client: connects to a scheduler, submits tasks and graphs, and gathers results
//! directly from the workers that hold them (never through the scheduler).
//!
//! A [`Client`] owns a small runtime thread for its connections, so it works the same from
//! plain threads (blocking methods: [`Future::result`], [`Client::gather`]) and from async
//! code (the `*_async` methods and `.await` on a [`Future`]). When the last handle to a
//! key's future is dropped, the client tells the scheduler, which frees the data.
//!
//! This crate must not contain scheduler or worker code: in-process clusters live in the
//! `rask` facade crate.

mod graph;

use std::collections::{HashMap, HashSet};
use std::future::IntoFuture;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rask_proto::msg::{
    Hello, Holder, PeerMsg, RegistryInfo, Role, SchedulerInfoMsg, TaskError, TaskSpec, ToClient,
    ToScheduler, UpdateGraphMsg,
};
use rask_proto::{TaskId, Value, PROTOCOL_VERSION, RASK_VERSION};
use rask_transport::{connect, Batch, ConnConfig, Link, Sender};
use tokio::sync::{oneshot, watch};

pub use graph::{Arg, Graph};
pub use rask_proto::msg::{Resource, WorkerInfoMsg};

/// Errors seen by client users.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClientError {
    /// The task (or a task it depends on) failed.
    #[error("task {key:?} failed: op {op:?} in task {cause:?}: {message}")]
    Task {
        /// The key waited on.
        key: String,
        /// The task that failed (the key itself, or one upstream).
        cause: String,
        op: String,
        message: String,
    },
    #[error("graph refused: {0}")]
    Rejected(String),
    #[error("unknown op {op:?}: not registered in this client (known: {known})")]
    UnknownOp { op: String, known: String },
    #[error("cannot connect to {addr}: {message}")]
    Connect { addr: String, message: String },
    #[error("lost the scheduler: {0}")]
    Disconnected(String),
    #[error("could not fetch {key:?}: {message}")]
    Fetch { key: String, message: String },
    #[error("expected {expected}, got {got}")]
    Type {
        expected: &'static str,
        got: &'static str,
    },
    #[error("{0}")]
    Other(String),
}

/// Options for [`Client::connect_with`].
#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    /// Client name, shown in the scheduler's logs.
    pub name: Option<String>,
    /// The ops this program knows; sent in the handshake and checked at submit.
    pub registry: Option<RegistryInfo>,
    pub conn: ConnConfig,
    /// How results are gathered from workers (default: `RASK_TRANSPORT`, else auto:
    /// inproc from workers in this process, shm on this host, tcp otherwise).
    pub transport: Option<rask_transport::TransportMode>,
}

/// The state of a key, as the scheduler last told it.
#[derive(Clone, Debug, PartialEq)]
enum Status {
    Pending,
    Memory {
        task: TaskId,
        holders: Vec<Holder>,
        /// The value itself, when it came with the news (small results).
        value: Option<Value>,
    },
    Erred(TaskError),
    Lost(String),
}

struct KeyEntry {
    /// Live [`Future`] handles for the key.
    refs: usize,
    status: watch::Sender<Status>,
}

type DataReply = Result<(Vec<(TaskId, Value)>, Vec<TaskId>), String>;

/// A data connection to one worker.
struct DataLink {
    tx: Sender<PeerMsg>,
    pending: Arc<Mutex<HashMap<u64, oneshot::Sender<DataReply>>>>,
}

#[derive(Default)]
struct State {
    keys: HashMap<Arc<str>, KeyEntry>,
    requests: HashMap<u64, oneshot::Sender<ToClient>>,
    links: HashMap<String, DataLink>,
    /// Set when the scheduler connection is gone.
    closed: Option<String>,
}

struct Inner {
    handle: tokio::runtime::Handle,
    /// Stops the runtime thread when dropped.
    _stop: oneshot::Sender<()>,
    id: u32,
    scheduler: String,
    to_scheduler: Sender<ToScheduler>,
    ops: Option<HashSet<String>>,
    conn: ConnConfig,
    state: Mutex<State>,
    next: AtomicU64,
    transport: rask_transport::TransportMode,
    host_id: String,
}

/// A connection to a Rask scheduler. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// A handle to a task's result. Dropping the last handle of a key releases it.
pub struct Future {
    key: Arc<str>,
    client: Client,
}

impl Client {
    /// Connects to a scheduler at `tcp://host:port`.
    pub fn connect(addr: &str) -> Result<Client, ClientError> {
        Client::connect_with(addr, ClientOptions::default())
    }

    /// Connects with options (registry, name, limits).
    pub fn connect_with(addr: &str, opts: ClientOptions) -> Result<Client, ClientError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ClientError::Other(format!("cannot start the client runtime: {e}")))?;
        let handle = rt.handle().clone();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("rask-client".into())
            .spawn(move || {
                rt.block_on(async {
                    let _ = stop_rx.await;
                });
            })
            .map_err(|e| ClientError::Other(format!("cannot start the client thread: {e}")))?;
        let hello = Hello {
            protocol: PROTOCOL_VERSION,
            schema: rask_proto::PROTOCOL_SCHEMA,
            rask_version: RASK_VERSION.into(),
            role: Role::Client,
            name: opts
                .name
                .clone()
                .unwrap_or_else(|| format!("client-{}", std::process::id())),
            host_id: rask_transport::host_id(),
            pid: std::process::id(),
            nonce: [0; 32],
            registry: opts.registry.clone(),
            worker: None,
        };
        let conn = opts.conn;
        let transport = match opts.transport {
            Some(t) => t,
            None => rask_transport::TransportMode::from_env()
                .map_err(ClientError::Other)?
                .unwrap_or_default(),
        };
        let conn_for_connect = conn.clone();
        let addr_owned = addr.to_string();
        let (reader, w, id) = handle
            .block_on(async move { connect(&addr_owned, &hello, conn_for_connect).await })
            .map_err(|e| ClientError::Connect {
                addr: addr.into(),
                message: e.to_string(),
            })?;
        let to_scheduler =
            handle.block_on(async { rask_transport::spawn_writer::<ToScheduler, _>(w) });
        let inner = Arc::new(Inner {
            handle: handle.clone(),
            _stop: stop_tx,
            id,
            scheduler: addr.into(),
            to_scheduler,
            ops: opts.registry.map(|r| r.ops.into_iter().collect()),
            conn,
            state: Mutex::default(),
            next: AtomicU64::new(0),
            transport,
            host_id: rask_transport::host_id(),
        });
        let weak = Arc::downgrade(&inner);
        handle.spawn(read_scheduler(reader, weak));
        Ok(Client { inner })
    }

    /// The scheduler's address.
    pub fn scheduler_address(&self) -> &str {
        &self.inner.scheduler
    }

    /// Runs `op` on the cluster with these arguments; futures among them are dependencies.
    pub fn submit(
        &self,
        op: &str,
        args: impl IntoIterator<Item = Arg>,
    ) -> Result<Future, ClientError> {
        let key = format!(
            "{op}-{:x}-{}",
            self.inner.id,
            self.inner.next.fetch_add(1, Ordering::Relaxed)
        );
        let mut g = Graph::new();
        g.task(&key, op, args);
        let mut futs = self.compute(&g, &[key.as_str()])?;
        Ok(futs.pop().expect("invariant: one output"))
    }

    /// Runs `op` once per item (each item is the argument list of one task), as one
    /// submission.
    pub fn map<I, A>(&self, op: &str, items: I) -> Result<Vec<Future>, ClientError>
    where
        I: IntoIterator<Item = A>,
        A: IntoIterator<Item = Arg>,
    {
        let prefix = format!(
            "{op}-{:x}-{}",
            self.inner.id,
            self.inner.next.fetch_add(1, Ordering::Relaxed)
        );
        let mut g = Graph::new();
        let mut keys = Vec::new();
        for (i, args) in items.into_iter().enumerate() {
            let key = format!("{prefix}-{i}");
            g.task(&key, op, args);
            keys.push(key);
        }
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        self.compute(&g, &keys)
    }

    /// Submits a graph and returns futures for `outputs` (keys of the graph, or keys of
    /// futures this client holds).
    pub fn compute(&self, graph: &Graph, outputs: &[&str]) -> Result<Vec<Future>, ClientError> {
        if let Some(ops) = &self.inner.ops {
            if let Some(op) = graph.ops().find(|op| !ops.contains(*op)) {
                let mut known: Vec<&String> = ops.iter().collect();
                known.sort();
                return Err(ClientError::UnknownOp {
                    op: op.to_string(),
                    known: format!("{known:?}"),
                });
            }
        }
        let mut bufs: Vec<Bytes> = Vec::new();
        let tasks: Vec<TaskSpec> = graph
            .specs(&mut bufs)
            .map_err(|e| ClientError::Rejected(e.to_string()))?;
        let wanted: Vec<String> = outputs.iter().map(|s| s.to_string()).collect();
        let futures = {
            let mut st = self.inner.state.lock().expect("client state lock");
            if let Some(reason) = &st.closed {
                return Err(ClientError::Disconnected(reason.clone()));
            }
            outputs
                .iter()
                .map(|k| self.hold(&mut st, k))
                .collect::<Vec<_>>()
        };
        self.inner
            .to_scheduler
            .send_with(
                ToScheduler::UpdateGraph(UpdateGraphMsg { tasks, wanted }),
                bufs,
            )
            .map_err(|e| ClientError::Disconnected(e.to_string()))?;
        Ok(futures)
    }

    /// The dict-style form: runs a graph and returns the values of `outputs`.
    pub fn get(&self, graph: &Graph, outputs: &[&str]) -> Result<Vec<Value>, ClientError> {
        let futs = self.compute(graph, outputs)?;
        self.gather(&futs)
    }

    /// Takes a new handle on a key (creating its entry if needed).
    fn hold(&self, st: &mut State, key: &str) -> Future {
        let key: Arc<str> = match st.keys.get_key_value(key) {
            Some((k, _)) => k.clone(),
            None => key.into(),
        };
        st.keys
            .entry(key.clone())
            .or_insert_with(|| KeyEntry {
                refs: 0,
                status: watch::channel(Status::Pending).0,
            })
            .refs += 1;
        Future {
            key,
            client: self.clone(),
        }
    }

    /// The values of these futures, fetched from the workers holding them; blocks.
    pub fn gather(&self, futures: &[Future]) -> Result<Vec<Value>, ClientError> {
        let keys: Vec<Arc<str>> = futures.iter().map(|f| f.key.clone()).collect();
        let inner = self.inner.clone();
        self.inner.handle.block_on(gather(inner, keys))
    }

    /// The values of these futures; awaitable from any async runtime.
    pub async fn gather_async(&self, futures: &[Future]) -> Result<Vec<Value>, ClientError> {
        let keys: Vec<Arc<str>> = futures.iter().map(|f| f.key.clone()).collect();
        let inner = self.inner.clone();
        self.inner
            .handle
            .spawn(gather(inner, keys))
            .await
            .map_err(|e| ClientError::Other(e.to_string()))?
    }

    /// Where each key's data lives: key → worker addresses.
    pub fn who_has(&self, futures: &[Future]) -> Result<HashMap<String, Vec<String>>, ClientError> {
        self.who_has_as(futures, |h| h.addr)
    }

    /// Where each key's data lives, with the device: key → (worker address, device)
    /// pairs, the device being `host`, `sim:N` or `cuda:N`.
    pub fn who_has_devices(
        &self,
        futures: &[Future],
    ) -> Result<HashMap<String, Vec<(String, String)>>, ClientError> {
        self.who_has_as(futures, |h| (h.addr, h.device))
    }

    /// Asks the scheduler who holds each key; each holder is reported as `holder` maps it.
    fn who_has_as<T>(
        &self,
        futures: &[Future],
        holder: impl Fn(Holder) -> T,
    ) -> Result<HashMap<String, Vec<T>>, ClientError> {
        let keys = futures.iter().map(|f| f.key.to_string()).collect();
        match self.request(|req| ToScheduler::WhoHas { req, keys })? {
            ToClient::WhoHasReply { entries, .. } => Ok(entries
                .into_iter()
                .map(|e| (e.key, e.holders.into_iter().map(&holder).collect()))
                .collect()),
            other => Err(ClientError::Other(format!("unexpected reply {other:?}"))),
        }
    }

    /// The scheduler's view: workers (resources, load), task counts by state, clients.
    pub fn scheduler_info(&self) -> Result<SchedulerInfoMsg, ClientError> {
        match self.request(|req| ToScheduler::Info { req })? {
            ToClient::InfoReply { info, .. } => Ok(info),
            other => Err(ClientError::Other(format!("unexpected reply {other:?}"))),
        }
    }

    /// Blocks until the scheduler has at least `n` workers.
    pub fn wait_for_workers(&self, n: usize) -> Result<(), ClientError> {
        let mut delay = std::time::Duration::from_millis(1);
        loop {
            if self.scheduler_info()?.workers.len() >= n {
                return Ok(());
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(std::time::Duration::from_millis(50));
        }
    }

    fn request(&self, make: impl FnOnce(u64) -> ToScheduler) -> Result<ToClient, ClientError> {
        let req = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut st = self.inner.state.lock().expect("client state lock");
            if let Some(reason) = &st.closed {
                return Err(ClientError::Disconnected(reason.clone()));
            }
            st.requests.insert(req, tx);
        }
        self.inner
            .to_scheduler
            .send(make(req))
            .map_err(|e| ClientError::Disconnected(e.to_string()))?;
        self.inner.handle.block_on(rx).map_err(|_| {
            ClientError::Disconnected("connection closed while waiting for a reply".into())
        })
    }

    fn release(&self, key: &Arc<str>) {
        let mut st = self.inner.state.lock().expect("client state lock");
        let Some(e) = st.keys.get_mut(key) else {
            return;
        };
        e.refs -= 1;
        if e.refs == 0 {
            st.keys.remove(key);
            if st.closed.is_none() {
                let _ = self.inner.to_scheduler.send(ToScheduler::ReleaseKeys {
                    keys: vec![key.to_string()],
                });
            }
        }
    }

    /// Number of keys this client holds futures for.
    pub fn held_keys(&self) -> usize {
        self.inner
            .state
            .lock()
            .expect("client state lock")
            .keys
            .len()
    }
}

impl Future {
    /// The task's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Blocks until the result is available and fetches it from the worker holding it.
    pub fn result(&self) -> Result<Value, ClientError> {
        let mut v = self.client.gather(std::slice::from_ref(self))?;
        Ok(v.pop().expect("invariant: one value"))
    }

    /// The result, awaitable from any async runtime.
    pub async fn result_async(&self) -> Result<Value, ClientError> {
        let mut v = self.client.gather_async(std::slice::from_ref(self)).await?;
        Ok(v.pop().expect("invariant: one value"))
    }

    /// Waits until the task is done (in memory or failed) without fetching its value.
    pub fn wait(&self) -> Result<(), ClientError> {
        let inner = self.client.inner.clone();
        let key = self.key.clone();
        self.client
            .inner
            .handle
            .block_on(async move { wait_status(&inner, &key).await.map(|_| ()) })
    }

    /// Whether the task has finished (successfully or not).
    pub fn done(&self) -> bool {
        let st = self.client.inner.state.lock().expect("client state lock");
        st.keys
            .get(&self.key)
            .is_some_and(|e| *e.status.borrow() != Status::Pending)
    }
}

impl Clone for Future {
    fn clone(&self) -> Self {
        let mut st = self.client.inner.state.lock().expect("client state lock");
        if let Some(e) = st.keys.get_mut(&self.key) {
            e.refs += 1;
        }
        Future {
            key: self.key.clone(),
            client: self.client.clone(),
        }
    }
}

impl Drop for Future {
    fn drop(&mut self) {
        self.client.release(&self.key);
    }
}

impl std::fmt::Debug for Future {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Future({:?})", self.key)
    }
}

impl<'a> IntoFuture for &'a Future {
    type Output = Result<Value, ClientError>;
    type IntoFuture = Pin<Box<dyn std::future::Future<Output = Self::Output> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.result_async())
    }
}

/// Reads the scheduler connection and updates key states and pending requests.
async fn read_scheduler(mut reader: rask_transport::FrameReader, inner: std::sync::Weak<Inner>) {
    let reason = loop {
        match reader.read_batch::<ToClient>().await {
            Ok(Some(Batch { msgs, .. })) => {
                let Some(inner) = inner.upgrade() else { return };
                let mut st = inner.state.lock().expect("client state lock");
                for m in msgs {
                    on_message(&mut st, m);
                }
            }
            Ok(None) => break "the scheduler closed the connection".to_string(),
            Err(e) => break e.to_string(),
        }
    };
    let Some(inner) = inner.upgrade() else { return };
    let mut st = inner.state.lock().expect("client state lock");
    st.closed = Some(reason.clone());
    st.requests.clear();
    for e in st.keys.values() {
        e.status.send_if_modified(|s| {
            if *s == Status::Pending {
                *s = Status::Lost(reason.clone());
                true
            } else {
                false
            }
        });
    }
}

fn on_message(st: &mut State, m: ToClient) {
    match m {
        ToClient::KeyInMemory {
            key,
            task,
            holders,
            value,
            ..
        } => {
            if let Some(e) = st.keys.get(key.as_str()) {
                let value = value.and_then(|d| d.to_value(&[], &[]).ok());
                e.status.send_replace(Status::Memory {
                    task,
                    holders,
                    value,
                });
            }
        }
        ToClient::KeyErred { key, error } => {
            if let Some(e) = st.keys.get(key.as_str()) {
                e.status.send_replace(Status::Erred(error));
            }
        }
        ToClient::GraphRejected { keys, message } => {
            for k in keys {
                if let Some(e) = st.keys.get(k.as_str()) {
                    e.status.send_replace(Status::Erred(TaskError {
                        key: String::new(),
                        op: String::new(),
                        message: message.clone(),
                    }));
                }
            }
        }
        reply @ (ToClient::WhoHasReply { .. } | ToClient::InfoReply { .. }) => {
            let req = match &reply {
                ToClient::WhoHasReply { req, .. } | ToClient::InfoReply { req, .. } => *req,
                _ => unreachable!(),
            };
            if let Some(tx) = st.requests.remove(&req) {
                let _ = tx.send(reply);
            }
        }
    }
}

/// Waits for a key to leave `Pending`; returns its status.
async fn wait_status(inner: &Inner, key: &Arc<str>) -> Result<Status, ClientError> {
    let mut rx = {
        let st = inner.state.lock().expect("client state lock");
        match st.keys.get(key) {
            Some(e) => e.status.subscribe(),
            None => {
                return Err(ClientError::Other(format!(
                    "key {key:?} is not held by this client"
                )))
            }
        }
    };
    let status = rx
        .wait_for(|s| *s != Status::Pending)
        .await
        .map_err(|_| ClientError::Other(format!("key {key:?} was released while waiting")))?
        .clone();
    match status {
        Status::Erred(e) if e.key.is_empty() => Err(ClientError::Rejected(e.message)),
        Status::Erred(e) => Err(ClientError::Task {
            key: key.to_string(),
            cause: e.key,
            op: e.op,
            message: e.message,
        }),
        Status::Lost(reason) => Err(ClientError::Disconnected(reason)),
        s => Ok(s),
    }
}

/// Fetches keys' values from their holders, one request per holder.
async fn gather(inner: Arc<Inner>, keys: Vec<Arc<str>>) -> Result<Vec<Value>, ClientError> {
    let mut out: Vec<Option<Value>> = vec![None; keys.len()];
    for attempt in 0..5 {
        let mut by_holder: HashMap<String, (Holder, Vec<(usize, TaskId)>)> = HashMap::new();
        for (i, key) in keys.iter().enumerate() {
            if out[i].is_some() {
                continue;
            }
            match wait_status(&inner, key).await? {
                Status::Memory { value: Some(v), .. } => out[i] = Some(v),
                Status::Memory {
                    task,
                    holders,
                    value: None,
                } => {
                    let Some(h) = holders.first() else {
                        return Err(ClientError::Fetch {
                            key: key.to_string(),
                            message: "no holder".into(),
                        });
                    };
                    by_holder
                        .entry(h.addr.clone())
                        .or_insert_with(|| (h.clone(), Vec::new()))
                        .1
                        .push((i, task));
                }
                s => unreachable!("wait_status returned {s:?}"),
            }
        }
        if by_holder.is_empty() {
            break;
        }
        let mut pending = Vec::new();
        for (addr, (holder, items)) in by_holder {
            let tasks: Vec<TaskId> = items.iter().map(|(_, t)| *t).collect();
            pending.push((addr, items, fetch(&inner, &holder, tasks)));
        }
        let mut missing_any = None;
        for (addr, items, reply) in pending {
            let reply = reply
                .await
                .unwrap_or_else(|_| Err("data connection closed".into()));
            match reply {
                Ok((values, missing)) => {
                    let mut by_task: HashMap<TaskId, Value> = values.into_iter().collect();
                    for (i, t) in items {
                        match by_task.remove(&t) {
                            Some(v) => out[i] = Some(v),
                            None => missing_any = Some((i, format!("{addr} no longer holds it"))),
                        }
                    }
                    let _ = missing;
                }
                Err(e) => {
                    // The holder died or went away: the scheduler will recompute the key.
                    inner
                        .state
                        .lock()
                        .expect("client state lock")
                        .links
                        .remove(&addr);
                    for (i, _) in items {
                        missing_any = Some((i, e.clone()));
                    }
                }
            }
        }
        if let Some((i, message)) = missing_any {
            if attempt == 4 {
                return Err(ClientError::Fetch {
                    key: keys[i].to_string(),
                    message,
                });
            }
            // Wait for the scheduler to report a new location (or an error).
            mark_pending_if_stale(&inner, &keys, &out).await;
        }
    }
    Ok(out
        .into_iter()
        .map(|v| v.expect("invariant: every key fetched"))
        .collect())
}

/// After a failed fetch: ask the scheduler where the keys live now and wait for news.
async fn mark_pending_if_stale(inner: &Arc<Inner>, keys: &[Arc<str>], out: &[Option<Value>]) {
    let missing: Vec<&Arc<str>> = keys
        .iter()
        .zip(out)
        .filter(|(_, v)| v.is_none())
        .map(|(k, _)| k)
        .collect();
    let mut rxs = Vec::new();
    {
        let st = inner.state.lock().expect("client state lock");
        for k in missing {
            if let Some(e) = st.keys.get(k) {
                let mut rx = e.status.subscribe();
                rx.mark_unchanged();
                rxs.push(rx);
            }
        }
    }
    // A new KeyInMemory (after recomputation) changes the status; bound the wait.
    for mut rx in rxs {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), rx.changed()).await;
    }
}

/// Sends a GetData request to a worker over a (cached) data connection, or reads a worker
/// of this process directly.
fn fetch(inner: &Arc<Inner>, holder: &Holder, tasks: Vec<TaskId>) -> oneshot::Receiver<DataReply> {
    let (tx, rx) = oneshot::channel();
    let kind = inner.transport.select(
        (&inner.host_id, std::process::id()),
        (&holder.host_id, holder.pid),
        !holder.shm_addr.is_empty(),
    );
    if kind == Link::Inproc {
        if let Some(ep) =
            rask_transport::inproc::lookup::<rask_transport::inproc::DataEndpoint>(&holder.addr)
        {
            let _ = tx.send(Ok(ep.get(&tasks)));
            return rx;
        }
    }
    let kind = if kind == Link::Inproc {
        Link::Tcp
    } else {
        kind
    };
    let req = inner.next.fetch_add(1, Ordering::Relaxed);
    let mut st = inner.state.lock().expect("client state lock");
    let link = st
        .links
        .entry(holder.addr.clone())
        .or_insert_with(|| open_link(inner, holder, kind));
    link.pending.lock().expect("link lock").insert(req, tx);
    if link
        .tx
        .send(PeerMsg::GetData {
            req,
            tasks,
            // A program's values come to the host.
            into_device: false,
        })
        .is_err()
    {
        if let Some(tx) = link.pending.lock().expect("link lock").remove(&req) {
            let _ = tx.send(Err("data connection closed".into()));
        }
        st.links.remove(&holder.addr);
    }
    rx
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<DataReply>>>>;

fn open_link(inner: &Arc<Inner>, holder: &Holder, kind: Link) -> DataLink {
    let (tx, writer) = rask_transport::channel::<PeerMsg>();
    let pending: Pending = Arc::default();
    let hello = Hello {
        protocol: PROTOCOL_VERSION,
        schema: rask_proto::PROTOCOL_SCHEMA,
        rask_version: RASK_VERSION.into(),
        role: Role::Peer,
        name: format!("client-{}", inner.id),
        host_id: rask_transport::host_id(),
        pid: std::process::id(),
        nonce: [0; 32],
        registry: None,
        worker: None,
    };
    let addr = holder.addr.clone();
    let shm_addr = holder.shm_addr.clone();
    let conn = inner.conn.clone();
    let p = pending.clone();
    let releases = tx.clone();
    inner.handle.spawn(async move {
        let error = if kind == Link::Shm {
            match rask_transport::connect_unix(&shm_addr, &hello, conn).await {
                Ok((reader, w, _)) => {
                    writer.start(w);
                    // Gathered buffers stay the worker's memory until the program drops them.
                    let importer = rask_transport::shm::Importer::new(move |loan| {
                        let _ = releases.send(PeerMsg::Release { loans: vec![loan] });
                    });
                    read_replies(&addr, reader, Some(importer), |r| Some(r.fds()), &p).await
                }
                Err(e) => format!("cannot reach {addr} through shared memory ({shm_addr}): {e}"),
            }
        } else {
            drop(releases);
            match connect(&addr, &hello, conn).await {
                Ok((reader, w, _)) => {
                    writer.start(w);
                    read_replies(&addr, reader, None, |_| None, &p).await
                }
                Err(e) => format!("cannot reach {addr}: {e}"),
            }
        };
        for (_, tx) in p.lock().expect("link lock").drain() {
            let _ = tx.send(Err(error.clone()));
        }
    });
    DataLink { tx, pending }
}

/// Hands a data connection's replies to their waiters until it ends; returns why it ended.
async fn read_replies<R: tokio::io::AsyncRead + Unpin>(
    addr: &str,
    mut reader: rask_transport::FrameReader<R>,
    mut importer: Option<rask_transport::shm::Importer>,
    fds: fn(&mut R) -> Option<&mut std::collections::VecDeque<std::os::fd::OwnedFd>>,
    pending: &Pending,
) -> String {
    loop {
        let batch = match reader.read_batch::<PeerMsg>().await {
            Ok(Some(b)) => b,
            Ok(None) => return format!("{addr} closed the data connection"),
            Err(e) => return format!("{addr}: {e}"),
        };
        let replies =
            match rask_transport::shm::replies(batch, importer.as_mut(), fds(reader.get_mut())) {
                Ok(r) => r,
                Err(e) => return format!("{addr}: {e}"),
            };
        for r in replies {
            let reply = r
                .items
                .into_iter()
                .map(|it| it.value.to_value_from(&r.bufs, &[]).map(|v| (it.task, v)))
                .collect::<Result<Vec<_>, _>>()
                .map(|values| (values, r.missing))
                .map_err(|e| e.to_string());
            if let Some(tx) = pending.lock().expect("link lock").remove(&r.req) {
                let _ = tx.send(reply);
            }
        }
    }
}

/// Conversions from result values.
pub trait FromValue: Sized {
    fn from_value(v: Value) -> Result<Self, ClientError>;
}

macro_rules! from_value {
    ($($t:ty => $p:pat => $e:expr, $name:literal);* $(;)?) => {$(
        impl FromValue for $t {
            fn from_value(v: Value) -> Result<Self, ClientError> {
                match v {
                    $p => Ok($e),
                    other => Err(ClientError::Type { expected: $name, got: other.type_name() }),
                }
            }
        }
    )*};
}

from_value! {
    i64 => Value::Int(i) => i, "int";
    f64 => Value::Float(f) => f, "float";
    bool => Value::Bool(b) => b, "bool";
    String => Value::Str(s) => s, "str";
    Bytes => Value::Bytes(b) => b, "bytes";
    Vec<Value> => Value::List(l) => l, "list";
}

impl FromValue for Value {
    fn from_value(v: Value) -> Result<Self, ClientError> {
        Ok(v)
    }
}

impl Future {
    /// The result converted to `T` (blocking).
    pub fn result_as<T: FromValue>(&self) -> Result<T, ClientError> {
        T::from_value(self.result()?)
    }
}
