//! [`Client`]: connecting, submitting tasks and graphs (in parts within the frame
//! target), asking the scheduler.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rask_proto::msg::{Hello, Holder, Role, SchedulerInfoMsg, TaskSpec, ToClient, ToScheduler};
use rask_proto::Value;
use rask_transport::{connect, ConnConfig, Sender};
use tokio::sync::oneshot;

use crate::future::{as_is, Future};
use crate::gather::gather;
use crate::graph::split_graph;
pub use crate::options::{ClientOptions, ProgramSource};
use crate::runtime::block_on;
use crate::runtime::on_runtime;
use crate::runtime::start_runtime;
use crate::runtime::Spin;
use crate::state::read_scheduler;
use crate::state::State;
use crate::typed::Submit;
use crate::ClientError;
use crate::Graph;

/// The most tasks of a [`Client::map`] sent in one submission.
pub const MAP_CHUNK: usize = 1024;

/// The fewest tasks of a submission encoded on the caller's thread (see
/// `Client::send_submission`).
pub(crate) const ENCODE_HERE_FROM: usize = 64;

pub(crate) struct Inner {
    pub(crate) handle: tokio::runtime::Handle,
    /// Stops the runtime thread when dropped.
    pub(crate) _stop: oneshot::Sender<()>,
    /// The id the scheduler gave this client (another after connecting again to a
    /// scheduler that did not keep it).
    pub(crate) id: std::sync::atomic::AtomicU32,
    pub(crate) scheduler: String,
    /// The scheduler's connection (replaced when connecting again).
    pub(crate) to_scheduler: Mutex<Sender<ToScheduler>>,
    /// The hello this client connects with.
    pub(crate) hello: Hello,
    /// See [`ClientOptions::reconnect`].
    pub(crate) reconnect: std::time::Duration,
    /// While connecting again: what is sent meanwhile, for the new connection.
    pub(crate) pending: Mutex<Option<rask_transport::PendingWriter<ToScheduler>>>,
    pub(crate) ops: Option<HashSet<String>>,
    pub(crate) conn: ConnConfig,
    pub(crate) state: Mutex<State>,
    pub(crate) next: AtomicU64,
    pub(crate) transport: rask_transport::TransportMode,
    pub(crate) host_id: String,
    pub(crate) program: Option<ProgramSource>,
    /// See [`ClientOptions::spin`].
    pub(crate) spin: Spin,
    /// Keys whose last future was dropped, not yet said to the scheduler: said together
    /// in one message.
    pub(crate) releasing: Mutex<crate::release::Releasing>,
}

impl Inner {
    pub(crate) fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("client state lock")
    }

    /// The scheduler's connection, now: keys released and not yet said are said first,
    /// so that whatever is sent next comes after them.
    pub(crate) fn sender(&self) -> Sender<ToScheduler> {
        let to = self.to_scheduler.lock().expect("sender lock").clone();
        let mut releasing = self.releasing.lock().expect("releasing lock");
        if !releasing.is_empty() {
            for m in releasing.take() {
                let _ = to.send(m);
            }
        }
        to
    }

    /// The client's id, now.
    pub(crate) fn id(&self) -> u32 {
        self.id.load(Ordering::Relaxed)
    }

    /// Runs `fut` on the client's runtime and waits for it on this thread.
    pub(crate) fn block<T: Send + 'static>(
        &self,
        fut: impl std::future::Future<Output = Result<T, ClientError>> + Send + 'static,
    ) -> Result<T, ClientError> {
        block_on(&self.handle, &self.spin, fut)
    }
}

/// A connection to a Rask scheduler. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
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
        block_on(&handle, &Spin::new(std::time::Duration::ZERO), fut)
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
    pub(crate) async fn join(
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
        hello.program = opts.program.as_ref().map(|p| p.info.clone());
        let mut conn = opts.conn;
        if let Some(t) = crate::options::seconds_from_env("RASK_CONNECT_TIMEOUT", false)? {
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
        let reconnect = match opts.reconnect {
            Some(d) => d,
            None => crate::options::seconds_from_env("RASK_RECONNECT", true)?
                .unwrap_or(crate::options::DEFAULT_RECONNECT),
        };
        let spin = match opts.spin {
            Some(d) => d,
            None => {
                crate::options::seconds_from_env("RASK_CLIENT_SPIN", true)?.unwrap_or_else(|| {
                    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
                    crate::options::default_spin(cpus)
                })
            }
        };
        let inner = Arc::new(Inner {
            handle: handle.clone(),
            _stop: stop,
            id: std::sync::atomic::AtomicU32::new(id),
            scheduler: addr,
            to_scheduler: Mutex::new(to_scheduler),
            hello,
            reconnect,
            pending: Mutex::new(None),
            ops: opts
                .registry
                .map(|r| r.ops.into_iter().map(|o| o.name).collect()),
            conn,
            state: Mutex::default(),
            next: AtomicU64::new(0),
            transport,
            host_id: rask_transport::host_id(),
            program: opts.program,
            spin: Spin::new(spin),
            releasing: Mutex::default(),
        });
        handle.spawn(read_scheduler(reader, Arc::downgrade(&inner)));
        Ok(Client { inner })
    }

    /// The scheduler's address.
    pub fn scheduler_address(&self) -> &str {
        &self.inner.scheduler
    }

    /// Runs `op` on the cluster with these arguments: a dynamic op by name with [`Arg`](crate::Arg)s
    /// (its future a `Future<Value>`), or a typed op (`#[rask::op]`) with a tuple of its
    /// argument types, futures of them standing for values (its future a `Future` of its
    /// output). Futures among the arguments are dependencies.
    pub fn submit<O: Submit<A>, A>(
        &self,
        op: O,
        args: A,
    ) -> Result<Future<O::Output>, ClientError> {
        let name = op.name();
        let key = self.fresh_name(name);
        let (args, keep) = op.prepare(args)?;
        let mut g = Graph::new();
        g.task(&key, name, args);
        let mut futs = self.compute_as(&g, &[key.as_str()], op.decoder())?;
        // Only now may the futures among the arguments go (their keys were held).
        drop(keep);
        Ok(futs.pop().expect("invariant: one output"))
    }

    /// Submits a graph and returns futures for `outputs` (keys of the graph, or keys of
    /// futures this client holds). A graph too large for one frame goes in parts, which
    /// the scheduler takes (or refuses) as one.
    pub fn compute(&self, graph: &Graph, outputs: &[&str]) -> Result<Vec<Future>, ClientError> {
        self.compute_as(graph, outputs, as_is)
    }

    /// [`Client::compute`], the outputs' values decoded by `decode`.
    fn compute_as<T>(
        &self,
        graph: &Graph,
        outputs: &[&str],
        decode: fn(Value) -> Result<T, String>,
    ) -> Result<Vec<Future<T>>, ClientError> {
        self.check_ops(graph.ops())?;
        let mut bufs: Vec<Bytes> = Vec::new();
        let tasks: Vec<TaskSpec> = graph
            .specs(&mut bufs)
            .map_err(|e| ClientError::Rejected(e.to_string()))?;
        let outputs: Vec<Arc<str>> = outputs.iter().map(|k| Arc::from(*k)).collect();
        self.submit_specs(tasks, &bufs, &outputs, decode)
    }

    /// Refuses ops the cluster does not know, when this client knows which it does.
    pub(crate) fn check_ops<'a>(
        &self,
        mut used: impl Iterator<Item = &'a str>,
    ) -> Result<(), ClientError> {
        if let Some(ops) = &self.inner.ops {
            if let Some(op) = used.find(|op| !ops.contains(*op)) {
                let mut known: Vec<&String> = ops.iter().collect();
                known.sort();
                return Err(ClientError::UnknownOp {
                    op: op.to_string(),
                    known: format!("{known:?}"),
                });
            }
        }
        Ok(())
    }

    /// Sends tasks in wire form (their byte payloads in `bufs`), holding futures for
    /// `outputs`, in as many parts as their size needs.
    pub(crate) fn submit_specs<T>(
        &self,
        tasks: Vec<TaskSpec>,
        bufs: &[Bytes],
        outputs: &[Arc<str>],
        decode: fn(Value) -> Result<T, String>,
    ) -> Result<Vec<Future<T>>, ClientError> {
        let parts =
            split_graph(tasks, outputs, bufs).map_err(|e| ClientError::Rejected(e.to_string()))?;
        let futures = self.hold_all(outputs, None, decode)?;
        for (msg, bufs) in parts {
            let many = msg.tasks.len() >= ENCODE_HERE_FROM;
            self.send_submission(ToScheduler::UpdateGraph(msg), bufs, many)?;
        }
        Ok(futures)
    }

    /// Sends a graph's part or a map. One of many tasks is encoded here, on the caller's
    /// thread, where its tasks were made: the runtime's thread only writes it, and does not
    /// free its strings and lists, made on another thread (which costs several times as
    /// much). One of a few tasks is queued as a message, to go in the same frame as what
    /// is queued with it (the releases said first): an encoded frame goes on its own, and
    /// a frame more costs the scheduler a read more on the round trip of a `submit`.
    pub(crate) fn send_submission(
        &self,
        m: ToScheduler,
        bufs: Vec<Bytes>,
        many: bool,
    ) -> Result<(), ClientError> {
        let to = self.inner.sender();
        let sent = match many {
            true => to.send_encoded(vec![(m, bufs)]),
            false => to.send_with(m, bufs),
        };
        sent.map_err(|e| ClientError::Disconnected(e.to_string()))
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

    /// A name no other task of this client's has: `op`'s short name, the client's id and
    /// a number (a `submit`'s key, a `map`'s keys' common part).
    pub(crate) fn fresh_name(&self, op: &str) -> String {
        format!(
            "{}-{:x}-{}",
            short(op),
            self.inner.id(),
            self.inner.next.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Takes a new handle on each of `keys` (a map's numbered from `map.1`, when `map`
    /// names its prefix), unless the scheduler connection is gone.
    pub(crate) fn hold_all<T>(
        &self,
        keys: &[Arc<str>],
        map: Option<(&str, u64)>,
        decode: fn(Value) -> Result<T, String>,
    ) -> Result<Vec<Future<T>>, ClientError> {
        let mut st = self.inner.state();
        if let Some(reason) = &st.closed {
            return Err(ClientError::Disconnected(reason.clone()));
        }
        match map {
            Some((prefix, first)) => st.keys.hold_map(prefix, first, keys),
            None => {
                st.keys.reserve(keys.len());
                keys.iter().for_each(|k| st.keys.hold(k));
            }
        }
        let first = map.map(|(_, first)| first);
        let future = |(i, key): (usize, &Arc<str>)| Future {
            key: key.clone(),
            number: first.map(|f| f + i as u64),
            client: self.clone(),
            decode,
        };
        Ok(keys.iter().enumerate().map(future).collect())
    }

    /// The values of these futures, fetched from the workers holding them; blocks.
    pub fn gather<T>(&self, futures: &[Future<T>]) -> Result<Vec<T>, ClientError> {
        let (keys, numbers) = keys_of(futures);
        let values = self
            .inner
            .block(gather(self.inner.clone(), keys, numbers))?;
        decode_all(futures, values)
    }

    /// The values of these futures; awaitable from any async runtime.
    pub async fn gather_async<T>(&self, futures: &[Future<T>]) -> Result<Vec<T>, ClientError> {
        let (keys, numbers) = keys_of(futures);
        let gathering = gather(self.inner.clone(), keys, numbers);
        let values = on_runtime(&self.inner.handle, gathering).await?;
        decode_all(futures, values)
    }

    /// Where each key's data lives: key → worker addresses.
    pub fn who_has<T>(
        &self,
        futures: &[Future<T>],
    ) -> Result<HashMap<String, Vec<String>>, ClientError> {
        let reply = self.inner.block(self.request(who_has_req(futures)));
        who_has_from(reply?, |h| h.addr)
    }

    /// [`Client::who_has`], awaitable from any async runtime.
    pub async fn who_has_async<T>(
        &self,
        futures: &[Future<T>],
    ) -> Result<HashMap<String, Vec<String>>, ClientError> {
        let reply = on_runtime(&self.inner.handle, self.request(who_has_req(futures))).await;
        who_has_from(reply?, |h| h.addr)
    }

    /// Where each key's data lives, with the device: key → (worker address, device)
    /// pairs, the device being `host`, `sim:N` or `cuda:N`.
    pub fn who_has_devices<T>(
        &self,
        futures: &[Future<T>],
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
    pub(crate) fn request(
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
                .sender()
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

    pub(crate) fn release(&self, key: &Arc<str>, number: Option<u64>) {
        let mut st = self.inner.state();
        // The key's entry, if that was its last handle.
        let Some((e, numbered)) = st.keys.release(key, number) else {
            return;
        };
        if e.waited {
            // Whoever waited on it learns it is gone.
            st.waiters.remove(key);
        }
        if st.closed.is_none() {
            // Said with the next message, or by a task on the runtime (at once, or a
            // moment later when keys come one after another): the futures of a whole
            // graph dropped together go in a few messages, not one each (see `release`).
            let mut releasing = self.inner.releasing.lock().expect("releasing lock");
            if releasing.push(key, numbered) {
                let delay = releasing.delay(std::time::Instant::now());
                let inner = self.inner.clone();
                self.inner.handle.spawn(async move {
                    if let Some(d) = delay {
                        tokio::time::sleep(d).await;
                    }
                    let now = std::time::Instant::now();
                    inner
                        .releasing
                        .lock()
                        .expect("releasing lock")
                        .unschedule(now);
                    inner.sender();
                });
            }
        }
    }

    /// Number of keys this client holds futures for.
    pub fn held_keys(&self) -> usize {
        self.inner.state().keys.len()
    }
}

/// The keys of `futures`, and the number of each made by a map.
fn keys_of<T>(futures: &[Future<T>]) -> (Vec<Arc<str>>, Vec<Option<u64>>) {
    let keys = futures.iter().map(|f| f.key.clone()).collect();
    (keys, futures.iter().map(|f| f.number).collect())
}

/// The values of `futures` (in order), each decoded as its future says.
fn decode_all<T>(futures: &[Future<T>], values: Vec<Value>) -> Result<Vec<T>, ClientError> {
    // Made at its size: collected from an iterator of results, the list would grow by
    // doubling (a result's iterator does not say its length).
    let mut out = Vec::with_capacity(futures.len());
    for (f, v) in futures.iter().zip(values) {
        out.push(f.decode(v)?);
    }
    Ok(out)
}

/// An op's name without its module path, for keys (`pi::hits` → `hits`).
pub(crate) fn short(op: &str) -> &str {
    op.rsplit("::").next().unwrap_or(op)
}

pub(crate) fn who_has_req<T>(futures: &[Future<T>]) -> impl FnOnce(u64) -> ToScheduler {
    let keys = futures.iter().map(|f| f.key.to_string()).collect();
    move |req| ToScheduler::WhoHas { req, keys }
}

pub(crate) fn who_has_from<T>(
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

pub(crate) fn info_from(reply: ToClient) -> Result<SchedulerInfoMsg, ClientError> {
    match reply {
        ToClient::InfoReply { info, .. } => Ok(*info),
        other => Err(ClientError::Other(format!("unexpected reply {other:?}"))),
    }
}
