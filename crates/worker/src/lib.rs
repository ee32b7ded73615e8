//! The worker server: connects to the scheduler, runs tasks on executor threads, keeps
//! their outputs in a data store, serves that data to peers and clients, and fetches
//! dependencies directly from the peers that hold them.
//!
//! One task owns the [`WorkerCore`] and the store's bookkeeping; executor threads only
//! run ops; connection tasks only read, decode and forward. Decisions (what to fetch, what
//! to run next, what to drop) belong in the core.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rask_kernels::Registry;
use rask_proto::msg::{
    ComputeMsg, DataItem, HeartbeatMsg, Hello, HelloReply, PeerMsg, Resource, Role, ToScheduler,
    ToWorker, WorkerHello,
};
use rask_proto::{Datum, TaskId, Value, WorkerId, PROTOCOL_VERSION, RASK_VERSION};
use rask_transport::{
    connect, reply_hello, spawn_writer, Batch, ConnConfig, FrameReader, Sender, TransportError,
};
use rask_worker_core::{Instruction, WorkerCore};
use rustc_hash::FxHashMap;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// Worker settings.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// `tcp://host:port` of the scheduler.
    pub scheduler: String,
    pub name: String,
    /// Tasks run at once (executor threads).
    pub nthreads: u32,
    /// Bytes of memory this worker may use (reported to the scheduler).
    pub memory_limit: u64,
    /// Where to serve data to peers and clients; port 0 picks one.
    pub listen: String,
    pub resources: Vec<Resource>,
    pub conn: ConnConfig,
    pub registry: Registry,
    pub heartbeat_interval: Duration,
}

impl WorkerConfig {
    /// Defaults for a worker of `scheduler`: one thread per core, all of memory,
    /// the built-in ops.
    pub fn new(scheduler: impl Into<String>) -> Self {
        WorkerConfig {
            scheduler: scheduler.into(),
            name: format!("worker-{}", std::process::id()),
            nthreads: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            memory_limit: total_memory(),
            listen: "127.0.0.1:0".into(),
            resources: Vec::new(),
            conn: ConnConfig::default(),
            registry: Registry::builtin(),
            heartbeat_interval: Duration::from_secs(1),
        }
    }
}

/// Errors that stop a worker.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot reach the scheduler at {addr}: {source}")]
    Connect {
        addr: String,
        source: TransportError,
    },
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("lost the scheduler connection: {0}")]
    SchedulerLost(String),
}

/// What the main loop reacts to.
enum Event {
    FromScheduler(Batch<ToWorker>),
    SchedulerGone(Option<String>),
    /// Results of one or more jobs, in completion order.
    Executed(Vec<Executed>),
    Fetched {
        from: WorkerId,
        req: u64,
        values: Vec<(TaskId, Value)>,
        missing: Vec<TaskId>,
    },
    LinkDown {
        from: WorkerId,
        error: String,
    },
}

/// One job's outcome.
struct Executed {
    task: TaskId,
    op: String,
    result: Result<Value, String>,
    duration_us: u64,
}

/// Results are handed back in batches: a thread that finds more jobs queued keeps going
/// and reports when the queue is empty, when a batch is large, or when results have
/// waited long enough — one wake-up of the main loop per batch instead of per task.
const RESULT_BATCH: usize = 256;
const RESULT_DELAY: Duration = Duration::from_micros(500);

fn executor_loop(
    registry: &Registry,
    jobs: &crossbeam_channel::Receiver<Job>,
    events: &mpsc::UnboundedSender<Event>,
) {
    while let Ok(first) = jobs.recv() {
        let batch_start = Instant::now();
        let mut done = vec![run_job(registry, first)];
        while done.len() < RESULT_BATCH && batch_start.elapsed() < RESULT_DELAY {
            match jobs.try_recv() {
                Ok(job) => done.push(run_job(registry, job)),
                Err(_) => break,
            }
        }
        if events.send(Event::Executed(done)).is_err() {
            return;
        }
    }
}

fn run_job(registry: &Registry, job: Job) -> Executed {
    let start = Instant::now();
    let result = registry.call(&job.op, &job.args).map_err(|e| match e {
        rask_kernels::KernelError::Failed { message, .. } => message,
        e => e.to_string(),
    });
    Executed {
        task: job.task,
        op: job.op,
        result,
        duration_us: start.elapsed().as_micros() as u64,
    }
}

/// Ops whose measured average is below this run inline on the event loop.
const INLINE_MAX_US: f64 = 20.0;
/// The most time one wake-up of the event loop spends running ops inline.
const INLINE_BUDGET: Duration = Duration::from_millis(2);

/// A job for an executor thread.
struct Job {
    task: TaskId,
    op: String,
    args: Value,
}

/// Task outputs and fetched inputs, shared with the data server.
type Store = Arc<Mutex<FxHashMap<TaskId, Value>>>;

/// A worker connected to its scheduler, ready to run.
pub struct Worker {
    cfg: WorkerConfig,
    id: WorkerId,
    listen_addr: String,
    listener: TcpListener,
    reader: FrameReader,
    to_scheduler: Sender<ToScheduler>,
}

impl Worker {
    /// Binds the data listener and joins the scheduler (handshake included).
    pub async fn connect(cfg: WorkerConfig) -> Result<Worker, WorkerError> {
        let listener = rask_transport::listen(&cfg.listen).await?;
        let listen_addr = rask_transport::listener_addr(&listener)?;
        let hello = Hello {
            protocol: PROTOCOL_VERSION,
            schema: rask_proto::PROTOCOL_SCHEMA,
            rask_version: RASK_VERSION.into(),
            role: Role::Worker,
            name: cfg.name.clone(),
            host_id: rask_transport::host_id(),
            pid: std::process::id(),
            nonce: [0; 32],
            registry: Some(cfg.registry.info()),
            worker: Some(WorkerHello {
                listen_addr: listen_addr.clone(),
                nthreads: cfg.nthreads,
                memory_limit: cfg.memory_limit,
                resources: cfg.resources.clone(),
            }),
        };
        let (reader, w, id) = connect(&cfg.scheduler, &hello, cfg.conn.clone())
            .await
            .map_err(|source| WorkerError::Connect {
                addr: cfg.scheduler.clone(),
                source,
            })?;
        Ok(Worker {
            id: WorkerId(id),
            listen_addr,
            listener,
            reader,
            to_scheduler: spawn_writer(w),
            cfg,
        })
    }

    /// The id the scheduler gave this worker.
    pub fn id(&self) -> WorkerId {
        self.id
    }

    /// Where this worker serves data.
    pub fn listen_addr(&self) -> &str {
        &self.listen_addr
    }

    /// Runs until the scheduler closes the connection or `shutdown` completes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), WorkerError> {
        let Worker {
            cfg,
            id,
            listen_addr: _,
            listener,
            mut reader,
            to_scheduler,
        } = self;
        let store: Store = Arc::default();
        let (events, mut rx) = mpsc::unbounded_channel::<Event>();

        // Scheduler reader.
        let ev = events.clone();
        tokio::spawn(async move {
            let reason = loop {
                match reader.read_batch::<ToWorker>().await {
                    Ok(Some(b)) => {
                        if ev.send(Event::FromScheduler(b)).is_err() {
                            return;
                        }
                    }
                    Ok(None) => break None,
                    Err(e) => break Some(e.to_string()),
                }
            };
            let _ = ev.send(Event::SchedulerGone(reason));
        });

        // Data server.
        let data_server = tokio::spawn(serve_data(listener, cfg.conn.clone(), store.clone()));

        // Executor threads.
        let (jobs, job_rx) = crossbeam_channel::unbounded::<Job>();
        let mut threads = Vec::new();
        for i in 0..cfg.nthreads.max(1) {
            let job_rx = job_rx.clone();
            let ev = events.clone();
            let registry = cfg.registry.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("rask-exec-{i}"))
                    .spawn(move || executor_loop(&registry, &job_rx, &ev))
                    .expect("spawning an executor thread"),
            );
        }

        let mut state = State {
            id,
            cfg: cfg.clone(),
            core: WorkerCore::new(cfg.nthreads as usize),
            store,
            specs: FxHashMap::default(),
            peers: FxHashMap::default(),
            links: FxHashMap::default(),
            outstanding: FxHashMap::default(),
            next_req: 0,
            to_scheduler,
            jobs,
            events: events.clone(),
            report: Default::default(),
            op_us: FxHashMap::default(),
            inline_until: Instant::now(),
        };
        let interval = cfg.heartbeat_interval;
        // The main loop runs as a spawned task (see the scheduler for why: waking a task
        // is cheaper than waking the runtime's `block_on` future).
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let main = tokio::spawn(async move {
            let mut heartbeat = tokio::time::interval(interval);
            heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut batch = Vec::new();
            let result = loop {
                tokio::select! {
                    biased;
                    n = rx.recv_many(&mut batch, 4096) => {
                        if n == 0 {
                            break Ok(());
                        }
                        let mut stop = None;
                        for ev in batch.drain(..) {
                            if let Some(r) = state.on_event(ev) {
                                stop = Some(r);
                                break;
                            }
                        }
                        state.drive();
                        if let Some(r) = stop {
                            break r;
                        }
                    }
                    _ = heartbeat.tick() => state.heartbeat(),
                    _ = &mut stop_rx => break Ok(()),
                }
            };
            // Dropping the state closes the job queue: executor threads finish their
            // current op and exit (a long op is not interrupted).
            drop(state);
            result
        });
        drop(events);
        tokio::pin!(main);
        let result = tokio::select! {
            r = &mut main => r,
            _ = shutdown => {
                let _ = stop_tx.send(());
                main.await
            }
        };
        data_server.abort();
        drop(threads);
        result.unwrap_or_else(|e| {
            Err(WorkerError::SchedulerLost(format!(
                "worker loop failed: {e}"
            )))
        })
    }
}

/// The main loop's state.
struct State {
    id: WorkerId,
    cfg: WorkerConfig,
    core: WorkerCore,
    store: Store,
    /// Compute requests not yet run: op, args and their buffers, deps in order.
    specs: FxHashMap<TaskId, (ComputeMsg, Vec<Bytes>)>,
    /// Peer workers' data addresses.
    peers: FxHashMap<WorkerId, String>,
    /// Open data connections to peers.
    links: FxHashMap<WorkerId, Sender<PeerMsg>>,
    /// Fetch requests in flight: (peer, request id) → tasks.
    outstanding: FxHashMap<(WorkerId, u64), Vec<TaskId>>,
    next_req: u64,
    to_scheduler: Sender<ToScheduler>,
    jobs: crossbeam_channel::Sender<Job>,
    events: mpsc::UnboundedSender<Event>,
    /// Tasks whose small result the scheduler wants reported inline.
    report: rustc_hash::FxHashSet<TaskId>,
    /// Measured average duration of each op, in µs.
    op_us: FxHashMap<String, f64>,
    /// Inline execution stops at this instant (per wake-up budget).
    inline_until: Instant,
}

impl State {
    /// Handles one event; `Some` stops the worker with that result.
    fn on_event(&mut self, ev: Event) -> Option<Result<(), WorkerError>> {
        match ev {
            Event::FromScheduler(Batch { msgs, bufs }) => {
                let mut computes = Vec::new();
                for m in msgs {
                    match m {
                        ToWorker::Compute(mut c) => match c.args.localize(&bufs) {
                            Ok(own) => {
                                computes.push((c.task, c.priority, c.deps.clone()));
                                if c.report_value {
                                    self.report.insert(c.task);
                                }
                                self.specs.insert(c.task, (c, own));
                            }
                            Err(e) => {
                                let message = format!("malformed task arguments: {e}");
                                let _ = self.to_scheduler.send(ToScheduler::TaskErred(
                                    rask_proto::msg::TaskErredMsg {
                                        task: c.task,
                                        message,
                                    },
                                ));
                            }
                        },
                        ToWorker::Free { tasks } => {
                            if !computes.is_empty() {
                                self.core.on_compute_batch(computes.drain(..));
                            }
                            for t in tasks {
                                self.core.on_free(t);
                            }
                        }
                        ToWorker::Peers { peers } => {
                            for p in peers {
                                self.peers.insert(p.worker, p.addr);
                            }
                        }
                        ToWorker::PeerGone { worker } => {
                            self.peers.remove(&worker);
                            self.links.remove(&worker);
                        }
                        ToWorker::Close { reason } => {
                            info!("scheduler asked to close: {reason}");
                            return Some(Ok(()));
                        }
                    }
                }
                if !computes.is_empty() {
                    self.core.on_compute_batch(computes);
                }
            }
            Event::SchedulerGone(reason) => {
                let reason = reason.unwrap_or_else(|| "closed".into());
                return Some(Err(WorkerError::SchedulerLost(reason)));
            }
            Event::Executed(done) => self.on_executed(done),
            Event::Fetched {
                from,
                req,
                values,
                missing,
            } => {
                self.outstanding.remove(&(from, req));
                let got: Vec<TaskId> = values.iter().map(|(t, _)| *t).collect();
                {
                    let mut store = self.store.lock().expect("store lock");
                    for (t, v) in values {
                        store.insert(t, v);
                    }
                }
                self.core.on_fetched(from, &got, &missing);
            }
            Event::LinkDown { from, error } => {
                debug!(peer = from.0, "data link down: {error}");
                self.links.remove(&from);
                let failed: Vec<(WorkerId, u64)> = self
                    .outstanding
                    .keys()
                    .filter(|(w, _)| *w == from)
                    .copied()
                    .collect();
                for k in failed {
                    let tasks = self
                        .outstanding
                        .remove(&k)
                        .expect("invariant: key just listed");
                    self.core.on_fetch_failed(from, &tasks);
                }
            }
        }
        None
    }

    /// Carries out the core's instructions until it has none.
    fn drive(&mut self) {
        self.inline_until = Instant::now() + INLINE_BUDGET;
        loop {
            let out = self.core.take();
            if out.is_empty() {
                return;
            }
            for i in out {
                match i {
                    Instruction::Fetch { from, tasks } => self.fetch(from, tasks),
                    Instruction::Execute { task } => self.execute(task),
                    Instruction::Send(mut m) => {
                        match &mut m {
                            ToScheduler::TaskFinished(f) if self.report.remove(&f.task) => {
                                let store = self.store.lock().expect("store lock");
                                f.value = store.get(&f.task).and_then(inline_datum);
                            }
                            ToScheduler::TaskFinished(f) => {
                                self.report.remove(&f.task);
                            }
                            ToScheduler::TaskErred(e) => {
                                self.report.remove(&e.task);
                            }
                            ToScheduler::MissingData { task, .. } => {
                                self.report.remove(task);
                            }
                            _ => {}
                        }
                        let _ = self.to_scheduler.send(m);
                    }
                    Instruction::Discard { task } => {
                        self.store.lock().expect("store lock").remove(&task);
                    }
                    Instruction::Drop { task } => {
                        self.specs.remove(&task);
                        self.report.remove(&task);
                    }
                }
            }
        }
    }

    fn fetch(&mut self, from: WorkerId, tasks: Vec<TaskId>) {
        let link = match self.links.get(&from) {
            Some(l) if !l.is_closed() => l.clone(),
            _ => {
                let Some(addr) = self.peers.get(&from).cloned() else {
                    self.core.on_fetch_failed(from, &tasks);
                    return;
                };
                let link = open_link(self.id, from, addr, &self.cfg, self.events.clone());
                self.links.insert(from, link.clone());
                link
            }
        };
        let req = self.next_req;
        self.next_req += 1;
        if link
            .send(PeerMsg::GetData {
                req,
                tasks: tasks.clone(),
            })
            .is_err()
        {
            self.links.remove(&from);
            self.core.on_fetch_failed(from, &tasks);
            return;
        }
        self.outstanding.insert((from, req), tasks);
    }

    fn execute(&mut self, task: TaskId) {
        let Some((spec, bufs)) = self.specs.remove(&task) else {
            self.core
                .on_executed(task, Err("internal: task spec missing".into()));
            return;
        };
        let args = {
            let store = self.store.lock().expect("store lock");
            let deps: Option<Vec<&Value>> = spec.deps.iter().map(|d| store.get(&d.task)).collect();
            match deps {
                Some(deps) => spec.args.to_value(&bufs, &deps).map_err(|e| e.to_string()),
                None => Err("internal: an input is not in the store".into()),
            }
        };
        let args = match args {
            Ok(a) => a,
            Err(message) => {
                self.core.on_executed(task, Err(message));
                return;
            }
        };
        let job = Job {
            task,
            op: spec.op,
            args,
        };
        let fast = self
            .op_us
            .get(&job.op)
            .is_some_and(|us| *us < INLINE_MAX_US);
        if fast && Instant::now() < self.inline_until {
            // A op measured to take microseconds runs here: handing it to a thread would
            // cost more (two cross-thread wake-ups) than running it.
            let done = run_job(&self.cfg.registry, job);
            self.on_executed(vec![done]);
        } else if self.jobs.send(job).is_err() {
            self.core.on_executed(task, Err("executor stopped".into()));
        }
    }

    fn on_executed(&mut self, done: Vec<Executed>) {
        let mut store = self.store.lock().expect("store lock");
        for Executed {
            task,
            op,
            result,
            duration_us,
        } in done
        {
            let avg = self.op_us.entry(op).or_insert(duration_us as f64);
            *avg = 0.8 * *avg + 0.2 * duration_us as f64;
            match result {
                Ok(value) => {
                    let nbytes = value.nbytes();
                    store.insert(task, value);
                    self.core.on_executed(task, Ok((nbytes, duration_us)));
                }
                Err(message) => self.core.on_executed(task, Err(message)),
            }
        }
    }

    fn heartbeat(&mut self) {
        let (stored_keys, stored_bytes) = {
            let store = self.store.lock().expect("store lock");
            (store.len() as u64, store.values().map(Value::nbytes).sum())
        };
        let _ = self.to_scheduler.send(ToScheduler::Heartbeat(HeartbeatMsg {
            stored_bytes,
            stored_keys,
            executing: self.core.executing() as u32,
            rss_bytes: rss_bytes(),
        }));
    }
}

/// Opens a data connection to a peer; requests queue until it is up.
fn open_link(
    me: WorkerId,
    peer: WorkerId,
    addr: String,
    cfg: &WorkerConfig,
    events: mpsc::UnboundedSender<Event>,
) -> Sender<PeerMsg> {
    let (tx, pending) = rask_transport::channel::<PeerMsg>();
    let hello = peer_hello(&format!("worker-{}", me.0));
    let conn = cfg.conn.clone();
    tokio::spawn(async move {
        let (mut reader, w) = match connect(&addr, &hello, conn).await {
            Ok((r, w, _)) => (r, w),
            Err(e) => {
                let _ = events.send(Event::LinkDown {
                    from: peer,
                    error: e.to_string(),
                });
                return;
            }
        };
        pending.start(w);
        let error = loop {
            match reader.read_batch::<PeerMsg>().await {
                Ok(Some(Batch { msgs, bufs })) => {
                    for m in msgs {
                        if let PeerMsg::Data {
                            req,
                            items,
                            missing,
                        } = m
                        {
                            let mut values = Vec::with_capacity(items.len());
                            let mut bad = Vec::new();
                            for it in items {
                                match it.value.to_value(&bufs, &[]) {
                                    Ok(v) => values.push((it.task, v)),
                                    Err(_) => bad.push(it.task),
                                }
                            }
                            let missing = missing.into_iter().chain(bad).collect();
                            if events
                                .send(Event::Fetched {
                                    from: peer,
                                    req,
                                    values,
                                    missing,
                                })
                                .is_err()
                            {
                                return;
                            }
                        }
                    }
                }
                Ok(None) => break "closed".to_string(),
                Err(e) => break e.to_string(),
            }
        };
        let _ = events.send(Event::LinkDown { from: peer, error });
    });
    tx
}

/// The hello of a data connection.
pub fn peer_hello(name: &str) -> Hello {
    Hello {
        protocol: PROTOCOL_VERSION,
        schema: rask_proto::PROTOCOL_SCHEMA,
        rask_version: RASK_VERSION.into(),
        role: Role::Peer,
        name: name.into(),
        host_id: rask_transport::host_id(),
        pid: std::process::id(),
        nonce: [0; 32],
        registry: None,
        worker: None,
    }
}

/// Serves `GetData` requests from peers and clients.
async fn serve_data(listener: TcpListener, cfg: ConnConfig, store: Store) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve_peer(stream, cfg.clone(), store.clone()));
            }
            Err(e) => warn!("data listener: {e}"),
        }
    }
}

async fn serve_peer(stream: TcpStream, cfg: ConnConfig, store: Store) {
    let _ = stream.set_nodelay(true);
    let (r, mut w) = stream.into_split();
    let mut reader = FrameReader::new(r, cfg.clone());
    let hello = match rask_transport::accept(&mut reader, &mut w, &cfg).await {
        Ok(h) => h,
        Err(e) => {
            warn!("data connection handshake failed: {e}");
            return;
        }
    };
    if let Err(reason) = rask_proto::msg::check_versions(&hello, "this worker") {
        let _ = reply_hello(&mut w, &HelloReply::Refused { reason }).await;
        return;
    }
    if reply_hello(
        &mut w,
        &HelloReply::Welcome {
            id: 0,
            rask_version: RASK_VERSION.into(),
        },
    )
    .await
    .is_err()
    {
        return;
    }
    let tx = spawn_writer::<PeerMsg, _>(w);
    loop {
        match reader.read_batch::<PeerMsg>().await {
            Ok(Some(batch)) => {
                for m in batch.msgs {
                    let PeerMsg::GetData { req, tasks } = m else {
                        continue;
                    };
                    let mut bufs = Vec::new();
                    let mut items = Vec::new();
                    let mut missing = Vec::new();
                    {
                        let store = store.lock().expect("store lock");
                        for t in tasks {
                            match store.get(&t) {
                                Some(v) => items.push(DataItem {
                                    task: t,
                                    value: v.to_datum(&mut bufs),
                                }),
                                None => missing.push(t),
                            }
                        }
                    }
                    if tx
                        .send_with(
                            PeerMsg::Data {
                                req,
                                items,
                                missing,
                            },
                            bufs,
                        )
                        .is_err()
                    {
                        return;
                    }
                }
            }
            Ok(None) => return,
            Err(e) => {
                warn!(peer = %hello.name, "data connection: {e}");
                return;
            }
        }
    }
}

/// The largest result reported inline with its completion.
const INLINE_VALUE_MAX: u64 = 1024;

/// A result's wire form if it is small and has no byte payload.
fn inline_datum(v: &Value) -> Option<Datum> {
    fn has_bytes(v: &Value) -> bool {
        match v {
            Value::Bytes(_) => true,
            Value::List(l) => l.iter().any(has_bytes),
            _ => false,
        }
    }
    if v.nbytes() > INLINE_VALUE_MAX || has_bytes(v) {
        return None;
    }
    Some(v.to_datum(&mut Vec::new()))
}

/// Total memory of the machine, in bytes (0 if unknown).
pub fn total_memory() -> u64 {
    meminfo_kib("MemTotal:") * 1024
}

fn meminfo_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// This process's resident memory, in bytes (0 if unknown).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}
