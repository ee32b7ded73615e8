//! The client: connects to a scheduler, submits tasks and graphs, and gathers results
//! directly from the workers that hold them (never through the scheduler).
//!
//! A [`Client`] owns a small runtime thread for its connections, so it works the same from
//! plain threads, from inside any async runtime, and from async code: every blocking
//! method ([`Future::result`], [`Client::gather`], [`Client::scheduler_info`], …) has an
//! `*_async` twin, and a [`Future`] can be awaited. Blocking methods called on a thread
//! that runs an async runtime block that thread (on a multi-threaded tokio runtime, through
//! `block_in_place`) but never panic. When the last handle to a key's future is dropped,
//! the client tells the scheduler, which frees the data.
//!
//! What the client keeps per held key is small (its name, a few words of state, the value
//! itself when it came inline): a million futures cost well under 300 bytes each.
//! Submissions too large for one frame go in parts that the scheduler takes as one graph.
//!
//! This crate must not contain scheduler or worker code: in-process clusters live in the
//! `rask` facade crate.

#![forbid(unsafe_code)]

mod graph;

use std::collections::{HashMap, HashSet};
use std::future::IntoFuture;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rask_proto::msg::{
    Hello, Holder, RegistryInfo, Role, SchedulerInfoMsg, TaskError, TaskSpec, ToClient,
    ToScheduler, UpdateGraphMsg,
};
use rask_proto::{TaskId, Value, WorkerId};
use rask_transport::{connect, Batch, ConnConfig, Sender};
use tokio::sync::oneshot;

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
    /// The client's own runtime thread could not be started or has stopped.
    #[error("the client runtime: {0}")]
    Runtime(String),
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
    /// Connection settings; `conn.handshake_timeout` bounds connecting (default 10 s,
    /// `RASK_CONNECT_TIMEOUT` in seconds overrides it).
    pub conn: ConnConfig,
    /// How results are gathered from workers (default: `RASK_TRANSPORT`, else auto:
    /// inproc from workers in this process, shm on this host, tcp otherwise).
    pub transport: Option<rask_transport::TransportMode>,
}

/// The state of a key, as the scheduler last told it. Kept small: a client may hold
/// millions of keys.
#[derive(Clone, Debug, PartialEq)]
enum Status {
    Pending,
    Memory {
        task: TaskId,
        /// The worker to fetch it from (see [`State::workers`]), if any holds it.
        holder: Option<WorkerId>,
        /// The value itself, when it came with the news (small results).
        value: Option<Box<Value>>,
    },
    /// Failed; shared by every key one rejection or failure reaches.
    Erred(Arc<TaskError>),
    /// The scheduler connection ended first ([`State::closed`] says why).
    Lost,
}

struct KeyEntry {
    /// Live [`Future`] handles for the key.
    refs: u32,
    status: Status,
}

type DataReply = Result<(Vec<(TaskId, Value)>, Vec<TaskId>), String>;

/// A data link to one worker, and the requests waiting for its replies.
struct DataLink {
    link: rask_transport::data::DataLink,
    pending: Pending,
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<DataReply>>>>;

#[derive(Default)]
struct State {
    keys: HashMap<Arc<str>, KeyEntry>,
    /// Where workers that hold keys can be reached, by id (each key names only its
    /// holder's id).
    workers: HashMap<WorkerId, Holder>,
    /// Tasks waiting for a key's status to change; only keys someone waits on have
    /// an entry.
    waiters: HashMap<Arc<str>, Vec<oneshot::Sender<()>>>,
    requests: HashMap<u64, oneshot::Sender<ToClient>>,
    links: HashMap<String, DataLink>,
    /// Set when the scheduler connection is gone: why.
    closed: Option<String>,
}

impl State {
    /// Sets a held key's status and wakes whoever waits on it.
    fn set_status(&mut self, key: &str, status: Status) {
        if let Some(e) = self.keys.get_mut(key) {
            e.status = status;
            if let Some(ws) = self.waiters.remove(key) {
                ws.into_iter().for_each(|w| {
                    let _ = w.send(());
                });
            }
        }
    }
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

impl Inner {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("client state lock")
    }

    /// Runs `fut` on the client's runtime and waits for it on this thread.
    fn block<T: Send + 'static>(
        &self,
        fut: impl std::future::Future<Output = Result<T, ClientError>> + Send + 'static,
    ) -> Result<T, ClientError> {
        block_on(&self.handle, fut)
    }
}

/// Runs `fut` on `handle`'s runtime and waits for it on this thread — from a plain thread
/// or from inside any async runtime (where `Handle::block_on` would panic).
fn block_on<T: Send + 'static>(
    handle: &tokio::runtime::Handle,
    fut: impl std::future::Future<Output = Result<T, ClientError>> + Send + 'static,
) -> Result<T, ClientError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    handle.spawn(async move {
        let _ = tx.send(fut.await);
    });
    let wait = move || {
        rx.recv()
            .unwrap_or_else(|_| Err(ClientError::Runtime("stopped while a call waited".into())))
    };
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(wait)
        }
        _ => wait(),
    }
}

/// Runs `fut` on `handle`'s runtime; awaitable from any runtime.
async fn on_runtime<T: Send + 'static>(
    handle: &tokio::runtime::Handle,
    fut: impl std::future::Future<Output = Result<T, ClientError>> + Send + 'static,
) -> Result<T, ClientError> {
    handle
        .spawn(fut)
        .await
        .map_err(|e| ClientError::Runtime(e.to_string()))?
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

/// The largest part of a graph sent in one message (by its size estimate): a large graph
/// goes in several, well inside the scheduler's frame limit.
const PART_TARGET: usize = 4 << 20;

/// The connect timeout from `RASK_CONNECT_TIMEOUT` (seconds), if set.
fn connect_timeout_from_env() -> Result<Option<std::time::Duration>, ClientError> {
    match std::env::var("RASK_CONNECT_TIMEOUT") {
        Ok(v) if !v.is_empty() => v
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(|s| Some(std::time::Duration::from_secs_f64(s)))
            .ok_or_else(|| {
                ClientError::Other(format!(
                    "RASK_CONNECT_TIMEOUT={v:?}: expected a positive number of seconds"
                ))
            }),
        _ => Ok(None),
    }
}

impl Client {
    /// Connects to a scheduler at `tcp://host:port`.
    pub fn connect(addr: &str) -> Result<Client, ClientError> {
        Client::connect_with(addr, ClientOptions::default())
    }

    /// Connects to a scheduler; awaitable from any async runtime.
    pub async fn connect_async(addr: &str) -> Result<Client, ClientError> {
        Client::connect_with_async(addr, ClientOptions::default()).await
    }

    /// Connects with options (registry, name, limits).
    pub fn connect_with(addr: &str, opts: ClientOptions) -> Result<Client, ClientError> {
        let (handle, stop) = start_runtime()?;
        let fut = Client::join(handle.clone(), stop, addr.to_string(), opts);
        block_on(&handle, fut)
    }

    /// Connects with options; awaitable from any async runtime.
    pub async fn connect_with_async(
        addr: &str,
        opts: ClientOptions,
    ) -> Result<Client, ClientError> {
        let (handle, stop) = start_runtime()?;
        let fut = Client::join(handle.clone(), stop, addr.to_string(), opts);
        on_runtime(&handle, fut).await
    }

    /// Connects on the client's runtime and starts reading the scheduler.
    async fn join(
        handle: tokio::runtime::Handle,
        stop: oneshot::Sender<()>,
        addr: String,
        opts: ClientOptions,
    ) -> Result<Client, ClientError> {
        let name = opts
            .name
            .clone()
            .unwrap_or_else(|| format!("client-{}", std::process::id()));
        let mut hello = Hello::new(Role::Client, name, rask_transport::host_id());
        hello.registry = opts.registry.clone();
        let mut conn = opts.conn;
        if let Some(t) = connect_timeout_from_env()? {
            conn.handshake_timeout = t;
        }
        let transport = match opts.transport {
            Some(t) => t,
            None => rask_transport::TransportMode::from_env()
                .map_err(ClientError::Other)?
                .unwrap_or_default(),
        };
        let (reader, w, id) =
            connect(&addr, &hello, conn.clone())
                .await
                .map_err(|e| ClientError::Connect {
                    addr: addr.clone(),
                    message: e.to_string(),
                })?;
        let to_scheduler = rask_transport::spawn_writer::<ToScheduler, _>(w);
        let inner = Arc::new(Inner {
            handle: handle.clone(),
            _stop: stop,
            id,
            scheduler: addr,
            to_scheduler,
            ops: opts
                .registry
                .map(|r| r.ops.into_iter().map(|o| o.name).collect()),
            conn,
            state: Mutex::default(),
            next: AtomicU64::new(0),
            transport,
            host_id: rask_transport::host_id(),
        });
        handle.spawn(read_scheduler(reader, Arc::downgrade(&inner)));
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
    /// futures this client holds). A graph too large for one frame goes in parts, which
    /// the scheduler takes (or refuses) as one.
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
        let parts =
            split_graph(tasks, outputs, &bufs).map_err(|e| ClientError::Rejected(e.to_string()))?;
        let futures = {
            let mut st = self.inner.state();
            if let Some(reason) = &st.closed {
                return Err(ClientError::Disconnected(reason.clone()));
            }
            outputs
                .iter()
                .map(|k| self.hold(&mut st, k))
                .collect::<Vec<_>>()
        };
        for (msg, bufs) in parts {
            self.inner
                .to_scheduler
                .send_with(ToScheduler::UpdateGraph(msg), bufs)
                .map_err(|e| ClientError::Disconnected(e.to_string()))?;
        }
        Ok(futures)
    }

    /// The dict-style form: runs a graph and returns the values of `outputs`.
    pub fn get(&self, graph: &Graph, outputs: &[&str]) -> Result<Vec<Value>, ClientError> {
        let futs = self.compute(graph, outputs)?;
        self.gather(&futs)
    }

    /// [`Client::get`], awaitable from any async runtime.
    pub async fn get_async(
        &self,
        graph: &Graph,
        outputs: &[&str],
    ) -> Result<Vec<Value>, ClientError> {
        let futs = self.compute(graph, outputs)?;
        self.gather_async(&futs).await
    }

    /// Takes a new handle on a key (creating its entry if needed).
    fn hold(&self, st: &mut State, key: &str) -> Future {
        let key: Arc<str> = match st.keys.get_key_value(key) {
            Some((k, _)) => k.clone(),
            None => key.into(),
        };
        st.keys
            .entry(key.clone())
            .or_insert(KeyEntry {
                refs: 0,
                status: Status::Pending,
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
        self.inner.block(gather(self.inner.clone(), keys))
    }

    /// The values of these futures; awaitable from any async runtime.
    pub async fn gather_async(&self, futures: &[Future]) -> Result<Vec<Value>, ClientError> {
        let keys: Vec<Arc<str>> = futures.iter().map(|f| f.key.clone()).collect();
        on_runtime(&self.inner.handle, gather(self.inner.clone(), keys)).await
    }

    /// Where each key's data lives: key → worker addresses.
    pub fn who_has(&self, futures: &[Future]) -> Result<HashMap<String, Vec<String>>, ClientError> {
        let reply = self.inner.block(self.request(who_has_req(futures)));
        who_has_from(reply?, |h| h.addr)
    }

    /// [`Client::who_has`], awaitable from any async runtime.
    pub async fn who_has_async(
        &self,
        futures: &[Future],
    ) -> Result<HashMap<String, Vec<String>>, ClientError> {
        let reply = on_runtime(&self.inner.handle, self.request(who_has_req(futures))).await;
        who_has_from(reply?, |h| h.addr)
    }

    /// Where each key's data lives, with the device: key → (worker address, device)
    /// pairs, the device being `host`, `sim:N` or `cuda:N`.
    pub fn who_has_devices(
        &self,
        futures: &[Future],
    ) -> Result<HashMap<String, Vec<(String, String)>>, ClientError> {
        let reply = self.inner.block(self.request(who_has_req(futures)));
        who_has_from(reply?, |h| (h.addr, h.device))
    }

    /// The scheduler's view: workers (resources, load), task counts by state, clients.
    pub fn scheduler_info(&self) -> Result<SchedulerInfoMsg, ClientError> {
        info_from(
            self.inner
                .block(self.request(|req| ToScheduler::Info { req }))?,
        )
    }

    /// [`Client::scheduler_info`], awaitable from any async runtime.
    pub async fn scheduler_info_async(&self) -> Result<SchedulerInfoMsg, ClientError> {
        let fut = self.request(|req| ToScheduler::Info { req });
        info_from(on_runtime(&self.inner.handle, fut).await?)
    }

    /// Blocks until the scheduler has at least `n` workers.
    pub fn wait_for_workers(&self, n: usize) -> Result<(), ClientError> {
        let c = self.clone();
        self.inner
            .block(async move { c.wait_for_workers_async(n).await })
    }

    /// Waits until the scheduler has at least `n` workers; awaitable from any runtime.
    pub async fn wait_for_workers_async(&self, n: usize) -> Result<(), ClientError> {
        let mut delay = std::time::Duration::from_millis(1);
        loop {
            if self.scheduler_info_async().await?.workers.len() >= n {
                return Ok(());
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(std::time::Duration::from_millis(50));
        }
    }

    /// Sends a request to the scheduler; the returned future (run on the client's runtime)
    /// waits for its reply.
    fn request(
        &self,
        make: impl FnOnce(u64) -> ToScheduler,
    ) -> impl std::future::Future<Output = Result<ToClient, ClientError>> + Send + 'static {
        let req = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let sent = (|| {
            let mut st = self.inner.state();
            if let Some(reason) = &st.closed {
                return Err(ClientError::Disconnected(reason.clone()));
            }
            st.requests.insert(req, tx);
            drop(st);
            self.inner
                .to_scheduler
                .send(make(req))
                .map_err(|e| ClientError::Disconnected(e.to_string()))
        })();
        let inner = self.inner.clone();
        async move {
            sent?;
            rx.await.map_err(|_| {
                ClientError::Disconnected(
                    inner
                        .state()
                        .closed
                        .clone()
                        .unwrap_or_else(|| "connection closed while waiting for a reply".into()),
                )
            })
        }
    }

    fn release(&self, key: &Arc<str>) {
        let mut st = self.inner.state();
        let Some(e) = st.keys.get_mut(key) else {
            return;
        };
        e.refs -= 1;
        if e.refs == 0 {
            st.keys.remove(key);
            // Whoever waited on it learns it is gone.
            st.waiters.remove(key);
            if st.closed.is_none() {
                let _ = self.inner.to_scheduler.send(ToScheduler::ReleaseKeys {
                    keys: vec![key.to_string()],
                });
            }
        }
    }

    /// Number of keys this client holds futures for.
    pub fn held_keys(&self) -> usize {
        self.inner.state().keys.len()
    }
}

/// Starts the client's runtime thread; returns its handle and what stops it when dropped.
fn start_runtime() -> Result<(tokio::runtime::Handle, oneshot::Sender<()>), ClientError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ClientError::Runtime(format!("cannot start the client runtime: {e}")))?;
    let handle = rt.handle().clone();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("rask-client".into())
        .spawn(move || {
            rt.block_on(async {
                let _ = stop_rx.await;
            });
        })
        .map_err(|e| ClientError::Runtime(format!("cannot start the client thread: {e}")))?;
    Ok((handle, stop_tx))
}

/// Splits a graph into messages of at most about [`PART_TARGET`] each (every one but the
/// last marked `more`), each with its own buffers.
fn split_graph(
    tasks: Vec<TaskSpec>,
    outputs: &[&str],
    bufs: &[Bytes],
) -> Result<Vec<(UpdateGraphMsg, Vec<Bytes>)>, rask_proto::ProtoError> {
    let mut parts = Vec::new();
    let mut part = UpdateGraphMsg {
        tasks: Vec::new(),
        wanted: Vec::new(),
        more: true,
    };
    let mut part_bufs = Vec::new();
    let mut size = 0;
    let flush = |part: &mut UpdateGraphMsg, part_bufs: &mut Vec<Bytes>, parts: &mut Vec<_>| {
        let full = std::mem::replace(
            part,
            UpdateGraphMsg {
                tasks: Vec::new(),
                wanted: Vec::new(),
                more: true,
            },
        );
        parts.push((full, std::mem::take(part_bufs)));
    };
    for mut t in tasks {
        let n = rask_proto::msg::task_wire_size(&t);
        if size + n > PART_TARGET && size > 0 {
            flush(&mut part, &mut part_bufs, &mut parts);
            size = 0;
        }
        size += n;
        if !bufs.is_empty() {
            let own = t.args.localize(bufs)?;
            t.args.globalize(&own, &mut part_bufs)?;
        }
        part.tasks.push(t);
    }
    for k in outputs {
        let n = k.len() + 16;
        if size + n > PART_TARGET && size > 0 {
            flush(&mut part, &mut part_bufs, &mut parts);
            size = 0;
        }
        size += n;
        part.wanted.push(k.to_string());
    }
    part.more = false;
    parts.push((part, part_bufs));
    Ok(parts)
}

fn who_has_req(futures: &[Future]) -> impl FnOnce(u64) -> ToScheduler {
    let keys = futures.iter().map(|f| f.key.to_string()).collect();
    move |req| ToScheduler::WhoHas { req, keys }
}

fn who_has_from<T>(
    reply: ToClient,
    holder: impl Fn(Holder) -> T,
) -> Result<HashMap<String, Vec<T>>, ClientError> {
    match reply {
        ToClient::WhoHasReply { entries, .. } => Ok(entries
            .into_iter()
            .map(|e| (e.key, e.holders.into_iter().map(&holder).collect()))
            .collect()),
        other => Err(ClientError::Other(format!("unexpected reply {other:?}"))),
    }
}

fn info_from(reply: ToClient) -> Result<SchedulerInfoMsg, ClientError> {
    match reply {
        ToClient::InfoReply { info, .. } => Ok(info),
        other => Err(ClientError::Other(format!("unexpected reply {other:?}"))),
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
        let (inner, key) = (self.client.inner.clone(), self.key.clone());
        self.client
            .inner
            .block(async move { wait_status(&inner, &key).await.map(|_| ()) })
    }

    /// [`Future::wait`], awaitable from any async runtime.
    pub async fn wait_async(&self) -> Result<(), ClientError> {
        let (inner, key) = (self.client.inner.clone(), self.key.clone());
        let fut = async move { wait_status(&inner, &key).await.map(|_| ()) };
        on_runtime(&self.client.inner.handle, fut).await
    }

    /// Whether the task has finished (successfully or not).
    pub fn done(&self) -> bool {
        let st = self.client.inner.state();
        st.keys
            .get(&self.key)
            .is_some_and(|e| e.status != Status::Pending)
    }
}

impl Clone for Future {
    fn clone(&self) -> Self {
        let mut st = self.client.inner.state();
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
                let mut st = inner.state();
                for m in msgs {
                    on_message(&mut st, m);
                }
            }
            Ok(None) => break "the scheduler closed the connection".to_string(),
            Err(e) => break e.to_string(),
        }
    };
    let Some(inner) = inner.upgrade() else { return };
    let mut st = inner.state();
    // A reason the scheduler gave before closing says more than the end of the stream.
    let reason = st.closed.clone().unwrap_or(reason);
    st.closed = Some(reason);
    st.requests.clear();
    for e in st.keys.values_mut() {
        if e.status == Status::Pending {
            e.status = Status::Lost;
        }
    }
    // Every waiter wakes and finds the key lost (or released).
    st.waiters.clear();
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
            if !st.keys.contains_key(key.as_str()) {
                return;
            }
            let holder = holders.first().map(|h| h.worker);
            for h in holders {
                if st.workers.get(&h.worker) != Some(&h) {
                    st.workers.insert(h.worker, h);
                }
            }
            let value = value.and_then(|d| d.to_value(&[], &[]).ok()).map(Box::new);
            st.set_status(
                &key,
                Status::Memory {
                    task,
                    holder,
                    value,
                },
            );
        }
        ToClient::KeyErred { key, error } => st.set_status(&key, Status::Erred(Arc::new(error))),
        ToClient::GraphRejected { keys, message } => {
            let error = Arc::new(TaskError {
                key: String::new(),
                op: String::new(),
                message,
            });
            for k in keys {
                st.set_status(&k, Status::Erred(error.clone()));
            }
        }
        ToClient::Closing { reason } => {
            st.closed = Some(format!("the scheduler closed the connection: {reason}"));
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

/// A key's status once it is no longer pending, with its holder's address.
enum Ready {
    Value(Value),
    At(TaskId, Holder),
}

/// Waits for a key to leave `Pending`; returns where its value is.
async fn wait_status(inner: &Inner, key: &Arc<str>) -> Result<Ready, ClientError> {
    loop {
        let woken = {
            let mut st = inner.state();
            let Some(e) = st.keys.get(key) else {
                return Err(ClientError::Other(format!(
                    "key {key:?} is not held by this client (released)"
                )));
            };
            match &e.status {
                Status::Pending => {}
                Status::Memory { value: Some(v), .. } => return Ok(Ready::Value((**v).clone())),
                Status::Memory {
                    task,
                    holder: Some(w),
                    value: None,
                } => {
                    let h = st
                        .workers
                        .get(w)
                        .expect("invariant: holders are known")
                        .clone();
                    return Ok(Ready::At(*task, h));
                }
                Status::Memory { holder: None, .. } => {
                    return Err(ClientError::Fetch {
                        key: key.to_string(),
                        message: "no worker holds it".into(),
                    })
                }
                Status::Erred(e) if e.key.is_empty() => {
                    return Err(ClientError::Rejected(e.message.clone()))
                }
                Status::Erred(e) => {
                    return Err(ClientError::Task {
                        key: key.to_string(),
                        cause: e.key.clone(),
                        op: e.op.clone(),
                        message: e.message.clone(),
                    })
                }
                Status::Lost => {
                    return Err(ClientError::Disconnected(
                        st.closed.clone().unwrap_or_default(),
                    ))
                }
            }
            let (tx, rx) = oneshot::channel();
            st.waiters.entry(key.clone()).or_default().push(tx);
            rx
        };
        // Woken by a change, or by the waiter list being dropped (released, closed).
        let _ = woken.await;
    }
}

/// Waits (at most `limit` in all) for each of these keys' status to change, whatever it
/// is now.
async fn wait_changes<'a>(
    inner: &Inner,
    keys: impl Iterator<Item = &'a Arc<str>>,
    limit: std::time::Duration,
) {
    let rxs: Vec<_> = {
        let mut st = inner.state();
        let st = &mut *st;
        keys.filter(|k| st.keys.contains_key(*k))
            .map(|k| {
                let (tx, rx) = oneshot::channel();
                st.waiters.entry(k.clone()).or_default().push(tx);
                rx
            })
            .collect()
    };
    let deadline = tokio::time::Instant::now() + limit;
    for rx in rxs {
        let _ = tokio::time::timeout_at(deadline, rx).await;
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
                Ready::Value(v) => out[i] = Some(v),
                Ready::At(task, h) => {
                    by_holder
                        .entry(h.addr.clone())
                        .or_insert_with(|| (h, Vec::new()))
                        .1
                        .push((i, task));
                }
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
                Ok((values, _missing)) => {
                    let mut by_task: HashMap<TaskId, Value> = values.into_iter().collect();
                    for (i, t) in items {
                        match by_task.remove(&t) {
                            Some(v) => out[i] = Some(v),
                            None => missing_any = Some((i, format!("{addr} no longer holds it"))),
                        }
                    }
                }
                Err(e) => {
                    // The holder died or went away: the scheduler will recompute the key.
                    inner.state().links.remove(&addr);
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
            // Wait (bounded) for the scheduler to report a new location, or an error.
            let missing = keys.iter().zip(&out).filter(|(_, v)| v.is_none());
            wait_changes(
                &inner,
                missing.map(|(k, _)| k),
                std::time::Duration::from_secs(2),
            )
            .await;
        }
    }
    Ok(out
        .into_iter()
        .map(|v| v.expect("invariant: every key fetched"))
        .collect())
}

/// Asks the worker holding `tasks` for them over a (cached) data link; a worker in this
/// process answers at once.
fn fetch(inner: &Arc<Inner>, holder: &Holder, tasks: Vec<TaskId>) -> oneshot::Receiver<DataReply> {
    let (tx, rx) = oneshot::channel();
    let req = inner.next.fetch_add(1, Ordering::Relaxed);
    let mut st = inner.state();
    let link = match st.links.get(&holder.addr) {
        Some(l) if !l.link.is_closed() => l,
        _ => {
            let opened = open_link(inner, holder);
            st.links.insert(holder.addr.clone(), opened);
            &st.links[&holder.addr]
        }
    };
    link.pending.lock().expect("link lock").insert(req, tx);
    // A program's values come to the host.
    match link.link.get(req, tasks, false) {
        Ok(Some(now)) => {
            if let Some(tx) = link.pending.lock().expect("link lock").remove(&req) {
                let _ = tx.send(Ok((now.values, now.missing)));
            }
        }
        Ok(None) => {}
        Err(e) => {
            if let Some(tx) = link.pending.lock().expect("link lock").remove(&req) {
                let _ = tx.send(Err(format!("{}: {e}", holder.addr)));
            }
            st.links.remove(&holder.addr);
        }
    }
    rx
}

/// Resolves a link's waiting requests with its replies (or why it ended).
struct Waiters(Pending);

impl rask_transport::data::ReplySink for Waiters {
    async fn reply(&mut self, r: rask_transport::data::Reply) -> bool {
        if let Some(tx) = self.0.lock().expect("link lock").remove(&r.req) {
            let _ = tx.send(Ok((r.values, r.missing)));
        }
        true
    }

    fn down(self, error: String) {
        for (_, tx) in self.0.lock().expect("link lock").drain() {
            let _ = tx.send(Err(error.clone()));
        }
    }
}

fn open_link(inner: &Arc<Inner>, holder: &Holder) -> DataLink {
    let kind = inner.transport.select(
        (&inner.host_id, std::process::id()),
        (&holder.host_id, holder.pid),
        !holder.shm_addr.is_empty(),
    );
    let pending: Pending = Arc::default();
    let hello = Hello::new(
        Role::Peer,
        format!("client-{}", inner.id),
        inner.host_id.clone(),
    );
    let to = rask_transport::data::HolderAddr {
        tcp: &holder.addr,
        shm: &holder.shm_addr,
    };
    // Opened on the client's runtime: the link's connection task lives there.
    let _guard = inner.handle.enter();
    let (link, _) = rask_transport::data::DataLink::open(
        kind,
        to,
        hello,
        inner.conn.clone(),
        None,
        Waiters(pending.clone()),
    );
    DataLink { link, pending }
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
