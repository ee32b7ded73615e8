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
use rask_kernels::{Accelerator, OutputAlloc, OutputBuf, Registry};
use rask_proto::msg::{
    ComputeMsg, DataItem, HeartbeatMsg, Hello, PeerAddr, Resource, Role, ToScheduler, ToWorker,
    WorkerHello,
};
use rask_proto::{Datum, IpcBuffer, TaskId, Value, WorkerId, PROTOCOL_VERSION, RASK_VERSION};
use rask_transport::shm::Arena;
use rask_transport::{
    connect, spawn_writer, Batch, ConnConfig, FrameReader, Link, Sender, TransportError,
    TransportMode,
};
use rask_worker_core::spill::{Spill, SpillLimits, Tier};
use rask_worker_core::{Instruction, WorkerCore};
use rustc_hash::FxHashMap;
use tokio::net::TcpListener;
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
    /// Which transports data may take to peers.
    pub transport: TransportMode,
    /// The device this worker drives (one worker per GPU, as in dask-cuda).
    pub device: WorkerDevice,
    /// GPUs of this host that this worker's GPU reaches over NVLink.
    pub nvlink: Vec<u32>,
    /// The worker is alone in its process (`rask worker`): its memory thresholds count
    /// the process's private heap too, and past the terminate threshold it stops (its
    /// supervisor starts a fresh one). In a process shared with other workers or with a
    /// program, the process's memory is not this worker's: only its values count, and it
    /// never stops itself.
    pub own_process: bool,
}

/// The device a worker drives.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum WorkerDevice {
    /// CPU only.
    #[default]
    Host,
    /// A simulated GPU with `memory` bytes: its memory is a memfd arena that same-host
    /// peers map, its kernels run on the CPU.
    Sim { index: u32, memory: u64 },
    /// A CUDA GPU (device memory limit: `memory_limit`, default 80 % of the GPU's).
    Cuda {
        index: u32,
        memory_limit: Option<u64>,
    },
}

impl WorkerDevice {
    /// The device, without its memory.
    pub fn device(&self) -> rask_device::Device {
        match self {
            WorkerDevice::Host => rask_device::Device::Host,
            WorkerDevice::Sim { index, .. } => rask_device::Device::Sim(*index),
            WorkerDevice::Cuda { index, .. } => rask_device::Device::Cuda(*index),
        }
    }

    /// `host`, `sim:N` or `cuda:N`.
    pub fn label(&self) -> String {
        self.device().to_string()
    }

    /// The GPU index, if a GPU: the index in this process (a CUDA ordinal counts only the
    /// GPUs `CUDA_VISIBLE_DEVICES` shows it).
    pub fn gpu(&self) -> Option<u32> {
        match self {
            WorkerDevice::Host => None,
            WorkerDevice::Sim { index, .. } | WorkerDevice::Cuda { index, .. } => Some(*index),
        }
    }

    /// The GPU's index on its host (NVML's, in PCI bus order), which NVLink peers and the
    /// scheduler's placement refer to: a CUDA worker that sees one GPU as `cuda:0` through
    /// `CUDA_VISIBLE_DEVICES` is another GPU of the host than its neighbour's `cuda:0`.
    pub fn host_gpu(&self) -> Option<u32> {
        match self {
            WorkerDevice::Cuda { index, .. } => {
                let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
                Some(host_gpu_index(visible.as_deref(), *index, || {
                    rask_device::discover::gpus()
                        .map(|g| g.into_iter().map(|g| (g.index, g.uuid)).collect())
                        .unwrap_or_default()
                }))
            }
            d => d.gpu(),
        }
    }
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
            transport: TransportMode::Auto,
            device: WorkerDevice::Host,
            nvlink: Vec::new(),
            own_process: false,
        }
    }
}

/// The host's index of CUDA ordinal `ordinal` under `CUDA_VISIBLE_DEVICES` = `visible`:
/// its entry by number (in PCI bus order, as workers are started), or by UUID looked up
/// among the host's GPUs (`(index, uuid)`, asked only then); the ordinal itself when
/// nothing restricts or names it.
fn host_gpu_index(
    visible: Option<&str>,
    ordinal: u32,
    gpus: impl FnOnce() -> Vec<(u32, String)>,
) -> u32 {
    let Some(entry) = visible.and_then(|v| v.split(',').nth(ordinal as usize)) else {
        return ordinal;
    };
    let entry = entry.trim();
    if let Ok(i) = entry.parse() {
        return i;
    }
    gpus()
        .into_iter()
        // CUDA takes a UUID or a prefix of one (`GPU-8a2f`).
        .find(|(_, uuid)| entry.starts_with("GPU-") && uuid.starts_with(entry))
        .map_or(ordinal, |(i, _)| i)
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
    #[error("device {device}: {source}")]
    Device {
        device: String,
        source: rask_device::DeviceError,
    },
    #[error(
        "memory: the process holds {used} bytes, past {:.0}% of the worker's limit of {limit} bytes",
        fraction * 100.0
    )]
    Memory {
        used: u64,
        limit: u64,
        fraction: f64,
    },
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
    /// Values lent from a peer's device could not be imported into ours: fetch them again
    /// through the host.
    ImportFailed {
        from: WorkerId,
        tasks: Vec<TaskId>,
        error: String,
    },
}

/// One job's outcome.
struct Executed {
    task: TaskId,
    op: String,
    /// The value, and whether the device's kernels computed it.
    result: Result<(Value, bool), String>,
    duration_us: u64,
    /// Inputs brought back to the device for the job, for the store.
    unspilled: Vec<(TaskId, Value)>,
}

/// Results are handed back in batches: a thread that finds more jobs queued keeps going
/// and reports when the queue is empty, when a batch is large, or when results have
/// waited long enough — one wake-up of the main loop per batch instead of per task.
const RESULT_BATCH: usize = 256;
const RESULT_DELAY: Duration = Duration::from_micros(500);

fn executor_loop(
    ex: &Exec,
    jobs: &crossbeam_channel::Receiver<Job>,
    events: &mpsc::UnboundedSender<Event>,
) {
    while let Ok(first) = jobs.recv() {
        let batch_start = Instant::now();
        let mut done = vec![run_job(ex, first)];
        while done.len() < RESULT_BATCH && batch_start.elapsed() < RESULT_DELAY {
            match jobs.try_recv() {
                Ok(job) => done.push(run_job(ex, job)),
                Err(_) => break,
            }
        }
        if events.send(Event::Executed(done)).is_err() {
            return;
        }
    }
}

/// What runs ops: the registry, where outputs go, and the device that runs ops with a
/// device plan (a CUDA GPU, or a simulated GPU's CPU twins).
#[derive(Clone)]
struct Exec {
    registry: Registry,
    alloc: Option<Arc<dyn OutputAlloc>>,
    device: Option<Arc<dyn Accelerator>>,
}

fn run_job(ex: &Exec, job: Job) -> Executed {
    let start = Instant::now();
    let (args, unspilled) = match job.args {
        Args::Ready(v) => (Ok(v), Vec::new()),
        Args::Unspill {
            datum,
            bufs,
            mut deps,
            upload,
        } => unspill_inputs(ex, &datum, &bufs, &mut deps, &upload),
    };
    let result = args.and_then(|args| {
        ex.registry
            .call_on(&job.op, &args, ex.alloc.as_ref(), ex.device.as_deref())
            .map_err(|e| match e {
                rask_kernels::KernelError::Failed { message, .. } => message,
                e => e.to_string(),
            })
    });
    Executed {
        task: job.task,
        op: job.op,
        result,
        duration_us: start.elapsed().as_micros() as u64,
        unspilled,
    }
}

/// Uploads the inputs `upload` names (indices into `deps`) to the device, on this
/// executor thread (a GPU's upload waits for the GPU: never on the event loop), and
/// builds the job's arguments from them. A value the device cannot take stays where it
/// is; the job runs either way.
fn unspill_inputs(
    ex: &Exec,
    datum: &Datum,
    bufs: &[Bytes],
    deps: &mut [Value],
    upload: &[(usize, TaskId)],
) -> (Result<Value, String>, Vec<(TaskId, Value)>) {
    let mut unspilled = Vec::new();
    if let Some(device) = &ex.device {
        for &(i, task) in upload {
            match device.upload(&deps[i]) {
                Some(Ok(on_device)) => {
                    deps[i] = on_device.clone();
                    unspilled.push((task, on_device));
                }
                Some(Err(e)) => warn!(
                    task = task.0,
                    "cannot bring a value back to the device: {e}"
                ),
                None => {}
            }
        }
    }
    let refs: Vec<&Value> = deps.iter().collect();
    let args = datum.to_value(bufs, &refs).map_err(|e| e.to_string());
    (args, unspilled)
}

/// Ops whose measured average is below this run inline on the event loop.
const INLINE_MAX_US: f64 = 20.0;
/// The most time one wake-up of the event loop spends running ops inline.
const INLINE_BUDGET: Duration = Duration::from_millis(2);

/// A job for an executor thread.
struct Job {
    task: TaskId,
    op: String,
    args: Args,
}

/// A job's arguments: built, or to be built on the executor thread once some inputs are
/// back on the device.
enum Args {
    Ready(Value),
    Unspill {
        datum: Datum,
        bufs: Vec<Bytes>,
        deps: Vec<Value>,
        /// Inputs to upload first: index in `deps`, task.
        upload: Vec<(usize, TaskId)>,
    },
}

/// Task outputs and fetched inputs, shared with the data server.
type Store = Arc<Mutex<FxHashMap<TaskId, Value>>>;

/// The device that runs ops with device plans: a simulated GPU runs them with the
/// kernels' CPU twins, outputs left in its memory (`arena`, accounted in `pool`); a CUDA
/// GPU with its kernels (NVRTC and cuBLAS needed), or, when it cannot, every op runs on
/// the CPU (said once, at start).
fn open_accelerator(
    device: &WorkerDevice,
    arena: &Arena,
    pool: Option<&Arc<rask_device::MemoryPool>>,
) -> Option<Arc<dyn Accelerator>> {
    match device {
        WorkerDevice::Host => None,
        WorkerDevice::Sim { .. } => {
            let memory = Arc::new(ArenaAlloc {
                arena: arena.clone(),
                device: pool.cloned(),
                min_len: 0,
            });
            Some(Arc::new(rask_kernels::plan::HostPlans::new(
                device.label(),
                memory,
            )))
        }
        WorkerDevice::Cuda { index, .. } => {
            let pool = pool?.clone();
            match rask_kernels::gpu::GpuThread::spawn(*index, pool) {
                Ok(gpu) => {
                    info!(
                        "cuda:{index} {} ({}): array ops run on the GPU, their outputs stay in its memory",
                        gpu.name(),
                        gpu.arch()
                    );
                    Some(Arc::new(gpu))
                }
                Err(e) => {
                    warn!("cuda:{index}: array ops run on the CPU: {e}");
                    None
                }
            }
        }
    }
}

/// The spilling thresholds of a worker's device. A CUDA GPU's limit is already where
/// spilling starts (dask-cuda's `--device-memory-limit`, by default 80 % of the GPU's
/// memory); a simulated GPU's is its whole memory, spilled from 80 % of it alike.
fn spill_limits(device: &WorkerDevice, device_limit: Option<u64>, host: u64) -> SpillLimits {
    let mut limits = SpillLimits::new(device_limit, host);
    if matches!(device, WorkerDevice::Cuda { .. }) {
        limits.device_target = 1.0;
    }
    limits
}

/// Ops' large outputs go to the worker's shared-memory arena, so same-host peers read
/// them in place. On a simulated GPU the arena is the GPU's memory, and each output is
/// accounted against its capacity.
struct ArenaAlloc {
    arena: Arena,
    device: Option<Arc<rask_device::MemoryPool>>,
    /// Smaller outputs go to the heap (`None`).
    min_len: usize,
}

impl OutputAlloc for ArenaAlloc {
    fn alloc(&self, len: usize) -> Option<Box<dyn OutputBuf>> {
        if len < self.min_len {
            return None;
        }
        let reservation = match &self.device {
            Some(pool) => match pool.reserve(len as u64) {
                Ok(r) => Some(r),
                Err(e) => {
                    debug!("{e}; the output stays on the host");
                    return None;
                }
            },
            None => None,
        };
        match self.arena.alloc(len) {
            Ok(region) => Some(Box::new(ArenaBuf {
                region,
                reservation,
            })),
            Err(e) => {
                warn!("shared-memory arena cannot grow ({e}); using the heap");
                None
            }
        }
    }
}

struct ArenaBuf {
    region: rask_transport::shm::Region,
    reservation: Option<rask_device::Reservation>,
}

impl AsRef<[u8]> for ArenaBuf {
    fn as_ref(&self) -> &[u8] {
        self.region.as_ref()
    }
}

impl OutputBuf for ArenaBuf {
    fn bytes_mut(&mut self) -> &mut [u8] {
        self.region.as_mut_slice()
    }
    fn freeze(self: Box<Self>) -> Bytes {
        if self.reservation.is_none() {
            return self.region.freeze();
        }
        // The device memory stays accounted for as long as the bytes live.
        Bytes::from_owner(*self)
    }
}

/// Unused arena memory kept mapped for reuse, and how many heartbeats a segment must stay
/// unused before it is unmapped.
const ARENA_KEEP_FREE: u64 = rask_transport::shm::DEFAULT_SEGMENT;
const ARENA_IDLE_ROUNDS: u32 = 3;

/// Where same-host peers reach a worker's shared memory.
struct ShmServer {
    listener: tokio::net::UnixListener,
    addr: String,
}

/// A worker connected to its scheduler, ready to run.
pub struct Worker {
    cfg: WorkerConfig,
    id: WorkerId,
    listen_addr: String,
    listener: TcpListener,
    shm: Option<ShmServer>,
    /// Where ops' outputs and received payloads live (memfd segments, mapped once).
    arena: Arena,
    /// Device memory accounting (a GPU worker's).
    device_pool: Option<Arc<rask_device::MemoryPool>>,
    /// The CUDA GPU, kept open while the worker runs.
    _cuda: Option<rask_device::cuda::CudaDevice>,
    /// Runs ops that have device plans (GPU workers).
    accel: Option<Arc<dyn Accelerator>>,
    /// The GPU's index on its host.
    host_gpu: Option<u32>,
    /// Spilling thresholds.
    limits: SpillLimits,
    reader: FrameReader,
    to_scheduler: Sender<ToScheduler>,
}

impl Worker {
    /// Binds the data listener and joins the scheduler (handshake included).
    pub async fn connect(cfg: WorkerConfig) -> Result<Worker, WorkerError> {
        let listener = rask_transport::listen(&cfg.listen).await?;
        let listen_addr = rask_transport::listener_addr(&listener)?;
        let shm = match cfg.transport {
            TransportMode::Tcp => None,
            _ => match rask_transport::listen_unix() {
                Ok((listener, addr)) => Some(ShmServer { listener, addr }),
                Err(e) => {
                    warn!("no shared memory for peers ({e}); data goes over tcp");
                    None
                }
            },
        };
        let shm_addr = shm.as_ref().map(|s| s.addr.clone()).unwrap_or_default();
        let device_err = |source| WorkerError::Device {
            device: cfg.device.label(),
            source,
        };
        let (device_pool, cuda) = match &cfg.device {
            WorkerDevice::Host => (None, None),
            WorkerDevice::Sim { index, memory } => (
                Some(rask_device::MemoryPool::new(
                    rask_device::Device::Sim(*index),
                    *memory,
                )),
                None,
            ),
            WorkerDevice::Cuda {
                index,
                memory_limit,
            } => {
                let d = rask_device::cuda::CudaDevice::open(*index, *memory_limit)
                    .map_err(device_err)?;
                (Some(d.pool().clone()), Some(d))
            }
        };
        let arena = Arena::new(rask_transport::shm::DEFAULT_SEGMENT);
        let accel = open_accelerator(&cfg.device, &arena, device_pool.as_ref());
        let host_gpu = cfg.device.host_gpu();
        let limits = spill_limits(
            &cfg.device,
            device_pool.as_ref().map(|p| p.limit()),
            cfg.memory_limit,
        );
        // The device as the cluster knows it: a CUDA GPU by its host index (every worker
        // of cuda-worker sees its own GPU as cuda:0).
        let device_name = match (&cfg.device, host_gpu) {
            (WorkerDevice::Cuda { .. }, Some(i)) => format!("cuda:{i}"),
            (d, _) => d.label(),
        };
        let mut resources = cfg.resources.clone();
        // A GPU worker offers `gpu = 1`, and its device by name (`sim:2 = 1`) so that a
        // task can ask for one GPU in particular.
        // Every worker offers its memory limit as `memory` (bytes), a GPU worker its
        // device memory as `device_memory`: a task that declares how much it needs holds
        // that much while it runs, and goes only where it fits.
        let mut offer = vec![("memory".to_string(), cfg.memory_limit as f64)];
        if cfg.device.gpu().is_some() {
            offer.push(("gpu".into(), 1.0));
            offer.push((device_name.clone(), 1.0));
            if let Some(p) = &device_pool {
                offer.push(("device_memory".into(), p.limit() as f64));
            }
        }
        for (name, amount) in offer {
            if !resources.iter().any(|r| r.name == name) {
                resources.push(Resource { name, amount });
            }
        }
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
                shm_addr,
                transport: cfg.transport.to_string(),
                device: device_name,
                device_name: match &cfg.device {
                    WorkerDevice::Host => String::new(),
                    WorkerDevice::Sim { .. } => {
                        "simulated GPU (host memory, kernels run on the CPU)".into()
                    }
                    WorkerDevice::Cuda { .. } => cuda
                        .as_ref()
                        .map_or_else(String::new, |c| c.name().to_string()),
                },
                gpu: host_gpu,
                nvlink: cfg.nvlink.clone(),
                device_memory_limit: device_pool.as_ref().map_or(0, |p| p.limit()),
                device_spill_at: limits.device_spill_at().unwrap_or(0),
                nthreads: cfg.nthreads,
                memory_limit: cfg.memory_limit,
                resources,
                code: tokio::task::spawn_blocking(rask_kernels::code_identity)
                    .await
                    .unwrap_or(0),
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
            shm,
            arena,
            device_pool,
            _cuda: cuda,
            accel,
            host_gpu,
            limits,
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

    /// Where same-host peers reach this worker's shared memory, if it offers it.
    pub fn shm_addr(&self) -> Option<&str> {
        self.shm.as_ref().map(|s| s.addr.as_str())
    }

    /// Runs until the scheduler closes the connection or `shutdown` completes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), WorkerError> {
        let Worker {
            cfg,
            id,
            listen_addr,
            listener,
            shm,
            arena,
            device_pool,
            _cuda,
            accel,
            host_gpu,
            limits,
            mut reader,
            to_scheduler,
        } = self;
        // Large task arguments from the scheduler arrive in the arena too, so they can be
        // lent to same-host peers without a copy.
        reader.set_arena(Some(arena.clone()));
        let store: Store = Arc::default();
        // Peers in this process take the store's values directly.
        let endpoint = {
            let store = store.clone();
            Arc::new(rask_transport::inproc::DataEndpoint::new(move |tasks| {
                stored(&store, tasks)
            }))
        };
        let _inproc = (cfg.transport == TransportMode::Auto)
            .then(|| rask_transport::inproc::register(&listen_addr, &endpoint));
        let (retire_tx, _) = tokio::sync::broadcast::channel::<Vec<u32>>(1024);
        // What peers and clients are answered: one lookup for every data connection.
        let lookup: rask_transport::data::LookupFn = {
            let store = store.clone();
            Arc::new(move |tasks, into_device| lookup_data(&store, tasks, into_device))
        };
        let shm_server = shm.map(|s| {
            tokio::spawn(rask_transport::data::serve_unix(
                s.listener,
                cfg.conn.clone(),
                arena.clone(),
                retire_tx.clone(),
                lookup.clone(),
            ))
        });
        // Ops on the CPU write their outputs to the arena: on a simulated GPU that is the
        // GPU's memory; a CUDA GPU's memory holds only its kernels' outputs.
        let alloc: Option<Arc<dyn OutputAlloc>> = Some(Arc::new(ArenaAlloc {
            arena: arena.clone(),
            device: match cfg.device {
                WorkerDevice::Sim { .. } => device_pool.clone(),
                _ => None,
            },
            min_len: rask_transport::shm::INLINE_MAX,
        }));
        let exec = Exec {
            registry: cfg.registry.clone(),
            alloc,
            device: accel,
        };
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
        let data_server = tokio::spawn(rask_transport::data::serve_tcp(
            listener,
            cfg.conn.clone(),
            lookup,
        ));

        // Executor threads.
        let (jobs, job_rx) = crossbeam_channel::unbounded::<Job>();
        let mut threads = Vec::new();
        for i in 0..cfg.nthreads.max(1) {
            let job_rx = job_rx.clone();
            let ev = events.clone();
            let exec = exec.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("rask-exec-{i}"))
                    .spawn(move || executor_loop(&exec, &job_rx, &ev))
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
            no_ipc: Default::default(),
            unspilling: Default::default(),
            outstanding: FxHashMap::default(),
            next_req: 0,
            to_scheduler,
            jobs,
            events: events.clone(),
            report: Default::default(),
            op_us: FxHashMap::default(),
            inline_until: Instant::now(),
            exec,
            arena,
            retire_tx,
            host_id: rask_transport::host_id(),
            device_label: cfg.device.label(),
            host_gpu,
            spill: Spill::new(limits),
            spilled: Default::default(),
            ran: [0; 2],
            host_arena: Arena::new(rask_transport::shm::DEFAULT_SEGMENT),
            spill_dir: std::env::temp_dir(),
            private_heap: 0,
            device_pool,
            received: Default::default(),
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
                    _ = heartbeat.tick() => {
                        if let Some(e) = state.heartbeat() {
                            break Err(e);
                        }
                    }
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
        if let Some(s) = shm_server {
            s.abort();
        }
        drop(threads);
        result.unwrap_or_else(|e| {
            Err(WorkerError::SchedulerLost(format!(
                "worker loop failed: {e}"
            )))
        })
    }
}

/// A peer worker as this worker reaches it.
#[derive(Clone)]
struct Peer {
    addr: PeerAddr,
    link: Link,
    class: &'static str,
}

/// The main loop's state.
struct State {
    id: WorkerId,
    cfg: WorkerConfig,
    core: WorkerCore,
    store: Store,
    /// Compute requests not yet run: op, args and their buffers, deps in order.
    specs: FxHashMap<TaskId, (ComputeMsg, Vec<Bytes>)>,
    /// Peer workers' data addresses and identities, and how data moves from each.
    peers: FxHashMap<WorkerId, Peer>,
    /// Open data connections to peers.
    links: FxHashMap<WorkerId, rask_transport::data::DataLink>,
    /// Peers whose device memory this worker's device could not import.
    no_ipc: rustc_hash::FxHashSet<WorkerId>,
    /// Values being brought back to the device by a job.
    unspilling: rustc_hash::FxHashSet<TaskId>,
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
    /// How ops run: outputs to the shared-memory arena, device plans on the device.
    exec: Exec,
    arena: Arena,
    /// Segments the arena unmapped, for the shared-memory connections to announce.
    retire_tx: tokio::sync::broadcast::Sender<Vec<u32>>,
    host_id: String,
    /// This worker's device (`sim:N`, `cuda:N`, `host`).
    device_label: String,
    /// The GPU's index on its host (what peers' NVLink lists name).
    host_gpu: Option<u32>,
    device_pool: Option<Arc<rask_device::MemoryPool>>,
    /// Bytes received from peers, by link class.
    received: std::collections::BTreeMap<&'static str, u64>,
    spill: Spill,
    /// Host memory for values spilled from the device.
    host_arena: Arena,
    /// Bytes spilled, by direction.
    spilled: std::collections::BTreeMap<&'static str, u64>,
    /// Tasks run on the CPU and by the device's kernels.
    ran: [u64; 2],
    /// Where values spilled to disk go, in files without names.
    spill_dir: std::path::PathBuf,
    /// The process's private memory at the last heartbeat (its own process only).
    private_heap: u64,
}

impl State {
    /// Handles one event; `Some` stops the worker with that result.
    fn on_event(&mut self, ev: Event) -> Option<Result<(), WorkerError>> {
        match ev {
            Event::FromScheduler(Batch { msgs, bufs, .. }) => {
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
                            // Carried out now: a compute of the same task later in this
                            // batch (the scheduler gave it back) must find its spec.
                            self.drive();
                        }
                        ToWorker::Peers { peers } => {
                            for p in peers {
                                let peer = self.peer(p);
                                self.peers.insert(peer.addr.worker, peer);
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
                let class = self.link_class(from);
                let mut received = 0;
                for (t, v) in &values {
                    let nbytes = v.nbytes();
                    received += nbytes;
                    self.track(*t, v, nbytes);
                }
                *self.received.entry(class).or_default() += received;
                let got: Vec<TaskId> = values.iter().map(|(t, _)| *t).collect();
                {
                    let mut store = self.store.lock().expect("store lock");
                    for (t, v) in values {
                        store.insert(t, v);
                    }
                }
                self.core.on_fetched(from, &got, &missing);
            }
            Event::ImportFailed { from, tasks, error } => {
                if self.no_ipc.insert(from) {
                    warn!(
                        peer = from.0,
                        "cannot import device memory of worker {}: {error}; its values come through the host",
                        from.0
                    );
                }
                self.fetch(from, tasks);
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

    /// Tells the spilling policy about a stored value and where it lives: on the device
    /// when its bytes are in device memory (a device kernel's output, or on a simulated
    /// GPU any op's output, which lands in the GPU's arena).
    fn track(&mut self, task: TaskId, v: &Value, nbytes: u64) {
        if !Spill::tracks(nbytes) {
            // Not worth spilling: no need to find out where it lives.
            self.spill.remove(task);
            return;
        }
        let sim = matches!(self.cfg.device, WorkerDevice::Sim { .. });
        let in_device_arena = |b: &Bytes| sim && self.arena.locate(b).is_some();
        // A value of another GPU of this process (fetched from it in place) is not in
        // this device's memory: spilling it here would free nothing.
        let here = |x: &Value| matches!(x, Value::Device(d) if d.device() == self.device_label);
        let tier = match v {
            v if v.any_leaf(&here) => Tier::Device,
            Value::Bytes(b) if in_device_arena(b) => Tier::Device,
            _ => Tier::Host,
        };
        self.spill.add(task, tier, nbytes);
    }

    /// Moves values down a tier as the policy says: device → host (a copy to the heap, the
    /// device memory is given back) and host → disk (written to a file that is then mapped
    /// and unlinked: the pages come back from disk when read, and the space is returned
    /// when the value is dropped).
    fn spill_now(&mut self) {
        let device_used = self.device_pool.as_ref().map_or(0, |p| p.used());
        let plan = self.spill.plan(device_used, self.process_memory());
        if plan.is_empty() {
            return;
        }
        for (task, to) in plan {
            // Taken out of the store (clones share the bytes): the copies below — from a
            // GPU's memory, to a file — must not hold it. Only the event loop, which runs
            // this, writes the store: the value is still there to replace afterwards.
            let Some(v) = self.store.lock().expect("store lock").get(&task).cloned() else {
                self.spill.remove(task);
                continue;
            };
            let mut part = 0;
            let mut put = |b: &[u8]| match to {
                // Into host memory that stays mapped and is reused: a fresh heap buffer
                // would pay a page fault per 4 KiB on first touch.
                Tier::Host => self.host_arena.copy_in(b).map_err(|e| e.to_string()),
                Tier::Disk => {
                    part += 1;
                    // The name is used only where the file system cannot make unnamed
                    // files, and only until the file is unlinked, at once.
                    let pid = std::process::id();
                    let name = format!("rask-spill-{pid}-{}-{}-{part}.bin", self.id.0, task.0);
                    rask_device::spill::to_file(&self.spill_dir, &name, b)
                        .map_err(|e| format!("{}: {e}", self.spill_dir.display()))
                }
                Tier::Device => Err("values are not spilled up".into()),
            };
            match move_payloads(&v, &mut put) {
                Ok((nv, nb)) => {
                    let from = self.spill.tier(task);
                    let label = match (from, to) {
                        (Some(Tier::Device), Tier::Host) => "device->host",
                        (Some(Tier::Device), Tier::Disk) => "device->disk",
                        _ => "host->disk",
                    };
                    *self.spilled.entry(label).or_default() += nb;
                    self.store.lock().expect("store lock").insert(task, nv);
                    self.spill.moved(task, to);
                }
                Err(e) => {
                    warn!(task = task.0, "cannot spill: {e}");
                    // Stop trying this one: keep it where it is.
                    self.spill.remove(task);
                }
            }
        }
    }

    /// Carries out the core's instructions until it has none.
    fn drive(&mut self) {
        self.inline_until = Instant::now() + INLINE_BUDGET;
        self.spill_now();
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
                        self.spill.remove(task);
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
        let req = self.next_req;
        self.next_req += 1;
        let link = match self.links.get(&from) {
            Some(l) if !l.is_closed() => l.clone(),
            _ => {
                let Some(peer) = self.peers.get(&from).cloned() else {
                    self.core.on_fetch_failed(from, &tasks);
                    return;
                };
                let link = self.open_link(from, &peer);
                self.links.insert(from, link.clone());
                link
            }
        };
        // Over shared memory, bytes in a peer GPU's memory come by CUDA IPC straight into
        // ours (tcp peers answer with host bytes whatever we ask).
        let into_device = self.imports() && !self.no_ipc.contains(&from);
        match link.get(req, tasks.clone(), into_device) {
            Ok(Some(now)) => {
                // A peer in this process: its values' buffers are shared, not copied.
                self.outstanding.insert((from, req), Vec::new());
                let _ = self.events.send(Event::Fetched {
                    from,
                    req,
                    values: now.values,
                    missing: now.missing,
                });
            }
            Ok(None) => {
                self.outstanding.insert((from, req), tasks);
            }
            Err(_) => {
                self.links.remove(&from);
                self.core.on_fetch_failed(from, &tasks);
            }
        }
    }

    /// Whether this worker's device imports bytes lent from a peer's device.
    fn imports(&self) -> bool {
        self.exec.device.as_ref().is_some_and(|a| a.imports())
    }

    /// This worker's device, if it imports bytes lent from a peer's device.
    fn importer(&self) -> Option<Arc<dyn Accelerator>> {
        self.exec.device.clone().filter(|a| a.imports())
    }

    fn execute(&mut self, task: TaskId) {
        let Some((spec, bufs)) = self.specs.remove(&task) else {
            self.core
                .on_executed(task, Err("internal: task spec missing".into()));
            return;
        };
        for d in &spec.deps {
            self.spill.touch(d.task);
        }
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
        let args = self.unspill_for(&spec, bufs, args);
        let unspilling = matches!(args, Args::Unspill { .. });
        let job = Job {
            task,
            op: spec.op,
            args,
        };
        let fast = self
            .op_us
            .get(&job.op)
            .is_some_and(|us| *us < INLINE_MAX_US);
        if fast && !unspilling && Instant::now() < self.inline_until {
            // A op measured to take microseconds runs here: handing it to a thread would
            // cost more (two cross-thread wake-ups) than running it.
            let done = run_job(&self.exec, job);
            self.on_executed(vec![done]);
        } else if self.jobs.send(job).is_err() {
            self.core.on_executed(task, Err("executor stopped".into()));
        }
    }

    /// Inputs spilled from the device go back to it when the task runs by the device's
    /// kernels (while the device has room below its spilling target): the job then
    /// uploads them on its executor thread and builds its arguments there
    /// ([`Args::Unspill`]); the store takes the uploaded values when the job is done.
    fn unspill_for(&mut self, spec: &ComputeMsg, bufs: Vec<Bytes>, args: Value) -> Args {
        let used = self.device_pool.as_ref().map_or(0, |p| p.used());
        let wanted = |s: &Self, t: TaskId, planned: u64| {
            !s.unspilling.contains(&t) && s.spill.unspill(t, used + planned)
        };
        if !spec.deps.iter().any(|d| wanted(self, d.task, 0)) {
            return Args::Ready(args);
        }
        let Some(device) = self.exec.device.clone() else {
            return Args::Ready(args);
        };
        let list = match &args {
            Value::List(l) => l.as_slice(),
            v => std::slice::from_ref(v),
        };
        if !device.runs(&self.exec.registry, &spec.op, list) {
            return Args::Ready(args);
        }
        let deps: Option<Vec<Value>> = {
            let store = self.store.lock().expect("store lock");
            spec.deps
                .iter()
                .map(|d| store.get(&d.task).cloned())
                .collect()
        };
        let Some(deps) = deps else {
            return Args::Ready(args);
        };
        let mut upload = Vec::new();
        let mut planned = 0;
        for (i, d) in spec.deps.iter().enumerate() {
            if wanted(self, d.task, planned) {
                planned += deps[i].nbytes();
                upload.push((i, d.task));
                self.unspilling.insert(d.task);
            }
        }
        Args::Unspill {
            datum: spec.args.clone(),
            bufs,
            deps,
            upload,
        }
    }

    fn on_executed(&mut self, done: Vec<Executed>) {
        let store = self.store.clone();
        let mut store = store.lock().expect("store lock");
        for Executed {
            task,
            op,
            result,
            duration_us,
            unspilled,
        } in done
        {
            for (t, v) in unspilled {
                self.unspilling.remove(&t);
                // Only if the value is still stored and not already back on the device.
                let label = match self.spill.tier(t) {
                    Some(Tier::Disk) => "disk->device",
                    Some(Tier::Host) => "host->device",
                    _ => continue,
                };
                if let Some(slot) = store.get_mut(&t) {
                    *self.spilled.entry(label).or_default() += v.device_bytes();
                    *slot = v;
                    self.spill.moved(t, Tier::Device);
                }
            }
            let avg = self.op_us.entry(op).or_insert(duration_us as f64);
            *avg = 0.8 * *avg + 0.2 * duration_us as f64;
            match result {
                Ok((value, on_device)) => {
                    self.ran[on_device as usize] += 1;
                    let nbytes = value.nbytes();
                    self.track(task, &value, nbytes);
                    store.insert(task, value);
                    self.core.on_executed(task, Ok((nbytes, duration_us)));
                }
                Err(message) => self.core.on_executed(task, Err(message)),
            }
        }
    }

    /// A peer as this worker reaches it: the transport its data takes, and the class of
    /// the link — `local` (same process), `nvlink`, `pcie` (GPUs through the host), `shm`
    /// (CPU workers of one host) or `tcp`. Decided once, when the peer is announced.
    fn peer(&self, addr: PeerAddr) -> Peer {
        let link = self.cfg.transport.select(
            (&self.host_id, std::process::id()),
            (&addr.host_id, addr.pid),
            !addr.shm_addr.is_empty(),
        );
        let class = match (link, self.host_gpu, addr.gpu) {
            (Link::Inproc, ..) => "local",
            (Link::Tcp, ..) => "tcp",
            (Link::Shm, Some(_), Some(g)) if self.cfg.nvlink.contains(&g) => "nvlink",
            (Link::Shm, None, None) => "shm",
            (Link::Shm, ..) => "pcie",
        };
        Peer { addr, link, class }
    }

    /// The class of the link data from `peer` takes (see [`State::peer`]).
    fn link_class(&self, peer: WorkerId) -> &'static str {
        self.peers.get(&peer).map_or("tcp", |p| p.class)
    }

    /// The process's memory as the thresholds see it: at least the values held on the
    /// host, and at least the process's private heap (which holds the values that are not
    /// in shared memory, and the memory of ops while they run). Memory shared with peers
    /// and a simulated GPU's memory are not counted.
    fn process_memory(&self) -> u64 {
        self.spill.used(Tier::Host).max(self.private_heap)
    }

    /// Reports to the scheduler, applies the pause threshold; an error when the worker
    /// must stop (past the terminate threshold).
    fn heartbeat(&mut self) -> Option<WorkerError> {
        if self.cfg.own_process {
            self.private_heap = private_heap_bytes();
        }
        let used = self.process_memory();
        if self.cfg.own_process && self.spill.should_terminate(used) {
            let limits = self.spill.limits();
            let e = WorkerError::Memory {
                used,
                limit: limits.host,
                fraction: limits.terminate,
            };
            tracing::error!("{e}: stopping");
            return Some(e);
        }
        let pause = self.spill.should_pause(used);
        if pause != self.core.paused() {
            if pause {
                warn!(
                    "{:.0} MiB in use ({:.0} MiB of values on the host), above {:.0}% of the limit: pausing",
                    used as f64 / (1u64 << 20) as f64,
                    self.spill.used(Tier::Host) as f64 / (1u64 << 20) as f64,
                    self.spill.limits().pause * 100.0
                );
            } else {
                info!("memory back below the pause threshold: resuming");
            }
            self.core.set_paused(pause);
            self.drive();
        }
        self.host_arena.trim(ARENA_KEEP_FREE, ARENA_IDLE_ROUNDS);
        let gone = self.arena.trim(ARENA_KEEP_FREE, ARENA_IDLE_ROUNDS);
        if !gone.is_empty() {
            debug!(segments = ?gone, "arena shrank");
            let _ = self.retire_tx.send(gone);
        }
        let (stored_keys, stored_bytes) = {
            let store = self.store.lock().expect("store lock");
            (store.len() as u64, store.values().map(Value::nbytes).sum())
        };
        let _ = self.to_scheduler.send(ToScheduler::Heartbeat(HeartbeatMsg {
            stored_bytes,
            stored_keys,
            executing: self.core.executing() as u32,
            rss_bytes: rss_bytes(),
            device_memory_used: self.device_pool.as_ref().map_or(0, |p| p.used()),
            device_to_host: self.exec.device.as_ref().map_or(0, |d| d.downloaded()),
            spilled: self
                .spilled
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            ran: [("cpu", self.ran[0]), ("device", self.ran[1])]
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .map(|(k, n)| (k.to_string(), n))
                .collect(),
            received: self
                .received
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
        }));
        None
    }
}

impl State {
    /// Opens a data link to a peer (requests queue until it is up); its replies come back
    /// as `Fetched` events.
    fn open_link(&self, peer: WorkerId, to: &Peer) -> rask_transport::data::DataLink {
        let sink = LinkSink {
            peer,
            import: self.importer(),
            events: self.events.clone(),
        };
        let holder = rask_transport::data::HolderAddr {
            tcp: &to.addr.addr,
            shm: &to.addr.shm_addr,
        };
        let hello = peer_hello(&format!("worker-{}", self.id.0));
        let (link, kind) = rask_transport::data::DataLink::open(
            to.link,
            holder,
            hello,
            self.cfg.conn.clone(),
            Some(self.arena.clone()),
            sink,
        );
        info!(peer = peer.0, "data link to worker {} over {kind}", peer.0);
        link
    }
}

/// Where a data link's replies go: values lent from the peer's device are imported into
/// this worker's device first (on a blocking thread); those that fail to import are
/// fetched again through the host.
struct LinkSink {
    peer: WorkerId,
    import: Option<Arc<dyn Accelerator>>,
    events: mpsc::UnboundedSender<Event>,
}

impl rask_transport::data::ReplySink for LinkSink {
    async fn reply(&mut self, r: rask_transport::data::Reply) -> bool {
        let mut values = r.values;
        if values.iter().any(|(_, v)| lent(v)) {
            let (imported, failed) = import_values(self.import.clone(), values).await;
            values = imported;
            if let Some((tasks, error)) = failed {
                let ev = Event::ImportFailed {
                    from: self.peer,
                    tasks,
                    error,
                };
                if self.events.send(ev).is_err() {
                    return false;
                }
            }
        }
        let ev = Event::Fetched {
            from: self.peer,
            req: r.req,
            values,
            missing: r.missing,
        };
        self.events.send(ev).is_ok()
    }

    fn down(self, error: String) {
        let _ = self.events.send(Event::LinkDown {
            from: self.peer,
            error,
        });
    }
}

/// `values` with the bytes lent from a peer's device imported into this worker's device,
/// on a blocking thread (the copies wait for the GPU); those that failed, and why.
async fn import_values(
    import: Option<Arc<dyn Accelerator>>,
    values: Vec<(TaskId, Value)>,
) -> (Vec<(TaskId, Value)>, Option<(Vec<TaskId>, String)>) {
    let Some(acc) = import else {
        let (failed, kept): (Vec<_>, Vec<_>) = values.into_iter().partition(|(_, v)| lent(v));
        let tasks = failed.into_iter().map(|(t, _)| t).collect();
        let error = "this worker's device does not import a peer's device memory".to_string();
        return (kept, Some((tasks, error)));
    };
    let all: Vec<TaskId> = values.iter().map(|(t, _)| *t).collect();
    let run = move || {
        let mut ok = Vec::with_capacity(values.len());
        let mut failed = Vec::new();
        let mut error = None;
        for (t, v) in values {
            if !lent(&v) {
                ok.push((t, v));
                continue;
            }
            // The loan is released as the lent value is dropped, after the copy.
            match rask_kernels::import_lent(&*acc, &v) {
                Ok(v) => ok.push((t, v)),
                Err(e) => {
                    failed.push(t);
                    error.get_or_insert(e);
                }
            }
        }
        (ok, error.map(|e| (failed, e)))
    };
    match tokio::task::spawn_blocking(run).await {
        Ok(r) => r,
        Err(e) => (Vec::new(), Some((all, format!("importing stopped: {e}")))),
    }
}

/// A copy of `v` with each byte payload (in host or device memory) moved by `put`, and
/// the bytes moved.
fn move_payloads(
    v: &Value,
    put: &mut dyn FnMut(&[u8]) -> Result<Bytes, String>,
) -> Result<(Value, u64), String> {
    Ok(match v {
        Value::Bytes(b) => (Value::Bytes(put(b)?), b.len() as u64),
        Value::Device(d) => {
            let host = d.data().to_host()?;
            (Value::Bytes(put(&host)?), host.len() as u64)
        }
        Value::List(l) => {
            let mut total = 0;
            let mut out = Vec::with_capacity(l.len());
            for x in l {
                let (x, n) = move_payloads(x, put)?;
                total += n;
                out.push(x);
            }
            (Value::List(out), total)
        }
        v => (v.clone(), 0),
    })
}

/// The stored values of `tasks` (clones: they share the bytes), and the tasks not stored.
fn stored(store: &Store, tasks: &[TaskId]) -> (Vec<(TaskId, Value)>, Vec<TaskId>) {
    let store = store.lock().expect("store lock");
    let mut values = Vec::with_capacity(tasks.len());
    let mut missing = Vec::new();
    for t in tasks {
        match store.get(t) {
            Some(v) => values.push((*t, v.clone())),
            None => missing.push(*t),
        }
    }
    (values, missing)
}

/// The stored values of `tasks` in wire form, their buffers appended to one list by
/// `to_datum`, and the tasks not stored (or whose bytes on a device cannot be read: the
/// scheduler then finds them elsewhere or recomputes them). The values are taken out of
/// the store first: bringing one from a GPU's memory to the host must not hold it.
fn lookup_with<B>(
    store: &Store,
    tasks: &[TaskId],
    mut to_datum: impl FnMut(&Value, &mut Vec<B>) -> Result<Datum, rask_proto::ProtoError>,
) -> (Vec<DataItem>, Vec<B>, Vec<TaskId>) {
    let (found, mut missing) = stored(store, tasks);
    let mut bufs = Vec::new();
    let mut items = Vec::with_capacity(found.len());
    for (t, v) in found {
        let before = bufs.len();
        match to_datum(&v, &mut bufs) {
            Ok(value) => items.push(DataItem { task: t, value }),
            Err(e) => {
                warn!(task = t.0, "cannot send a value: {e}");
                bufs.truncate(before);
                missing.push(t);
            }
        }
    }
    (items, bufs, missing)
}

/// A lookup for a same-host peer: bytes in a device's memory stay there when the
/// requester imports them `into_device`; else they come to the host.
fn lookup_data(
    store: &Store,
    tasks: Vec<TaskId>,
    into_device: bool,
) -> rask_transport::data::Lookup {
    lookup_with(store, &tasks, |v, bufs| v.to_datum_lent(bufs, into_device))
}

/// Whether a value holds bytes lent from a peer's device, not yet imported.
fn lent(v: &Value) -> bool {
    v.any_leaf(&|x| matches!(x, Value::Device(d) if d.downcast::<IpcBuffer>().is_some()))
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

/// The largest result reported inline with its completion.
const INLINE_VALUE_MAX: u64 = 1024;

/// A result's wire form if it is small and has no byte payload.
fn inline_datum(v: &Value) -> Option<Datum> {
    let bytes = |x: &Value| matches!(x, Value::Bytes(_) | Value::Device(_));
    if v.nbytes() > INLINE_VALUE_MAX || v.any_leaf(&bytes) {
        return None;
    }
    v.to_datum(&mut Vec::new()).ok()
}

/// Total memory of the machine, in bytes (0 if unknown).
pub fn total_memory() -> u64 {
    proc_kib("/proc/meminfo", "MemTotal:") * 1024
}

/// A `Field:  N kB` line of a /proc file, in KiB (0 if unknown).
fn proc_kib(path: &str, field: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// This process's private resident memory (`RssAnon`: heap, stacks; not shared memory
/// or mapped files), in bytes (0 if unknown).
pub fn private_heap_bytes() -> u64 {
    proc_kib("/proc/self/status", "RssAnon:") * 1024
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

#[cfg(test)]
mod tests {
    use super::*;
    use rask_proto::{DeviceBytes, DeviceData, IpcExport, Payload};

    #[test]
    fn a_cuda_worker_names_its_gpu_by_the_hosts_index() {
        let host = || {
            vec![
                (0, "GPU-aaaa".to_string()),
                (1, "GPU-bbbb".to_string()),
                (2, "GPU-cccc".to_string()),
            ]
        };
        let none = || -> Vec<(u32, String)> { panic!("NVML asked without need") };
        assert_eq!(host_gpu_index(None, 1, none), 1);
        assert_eq!(host_gpu_index(Some("3"), 0, none), 3);
        assert_eq!(host_gpu_index(Some("2,0"), 1, none), 0);
        assert_eq!(host_gpu_index(Some("GPU-cccc"), 0, host), 2);
        assert_eq!(host_gpu_index(Some("GPU-aaaa, GPU-bbbb"), 1, host), 1);
        assert_eq!(host_gpu_index(Some("GPU-cc"), 0, host), 2);
        assert_eq!(host_gpu_index(Some("MIG-cccc"), 0, host), 0);
        // A UUID this host does not have, or an ordinal past the list: the ordinal.
        assert_eq!(host_gpu_index(Some("GPU-zzzz"), 0, host), 0);
        assert_eq!(host_gpu_index(Some("1"), 4, none), 4);
    }

    /// Memory of a test device that lends by IPC handle (its first byte) and counts trips
    /// to the host.
    struct TestGpu(Bytes, Arc<std::sync::atomic::AtomicUsize>);

    impl DeviceData for TestGpu {
        fn device(&self) -> &str {
            "cuda:0"
        }
        fn len(&self) -> usize {
            self.0.len()
        }
        fn to_host(&self) -> Result<Bytes, String> {
            self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(self.0.clone())
        }
        fn ipc_export(&self) -> Option<Result<IpcExport, String>> {
            Some(Ok(IpcExport {
                handle: vec![self.0[0]],
                offset: 0,
            }))
        }
        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
    }

    /// Imports a lent buffer as host bytes `[handle; len]`; handle 0 cannot be opened.
    struct Importer;

    impl Accelerator for Importer {
        fn try_run(&self, _: &Registry, _: &str, _: &[Value]) -> Option<Result<Value, String>> {
            None
        }
        fn imports(&self) -> bool {
            true
        }
        fn import(&self, b: &IpcBuffer) -> Result<Value, String> {
            match b.export.handle[0] {
                0 => Err("cannot open handle 0".into()),
                h => Ok(Value::Bytes(Bytes::from(vec![h; b.len as usize]))),
            }
        }
    }

    fn on_gpu(byte: u8, len: usize, trips: &Arc<std::sync::atomic::AtomicUsize>) -> Value {
        Value::Device(DeviceBytes::new(TestGpu(
            Bytes::from(vec![byte; len]),
            trips.clone(),
        )))
    }

    #[test]
    fn a_cuda_gpu_spills_at_its_limit_and_a_simulated_one_at_80_percent_of_its_memory() {
        let cuda = WorkerDevice::Cuda {
            index: 0,
            memory_limit: None,
        };
        let sim = WorkerDevice::Sim {
            index: 0,
            memory: 100,
        };
        let target = |d: &WorkerDevice| {
            let l = spill_limits(d, Some(100), 1000);
            (l.device.unwrap() as f64 * l.device_target) as u64
        };
        assert_eq!(target(&cuda), 100);
        assert_eq!(target(&sim), 80);
        assert_eq!(
            spill_limits(&WorkerDevice::Host, None, 1000).host_target,
            0.6
        );
    }

    #[test]
    fn a_lookup_lends_device_bytes_only_to_a_device_that_imports_them() {
        let trips = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let store: Store = Arc::default();
        {
            let mut s = store.lock().unwrap();
            let host = Value::Bytes(Bytes::from_static(b"host"));
            s.insert(TaskId(1), Value::List(vec![host, on_gpu(7, 8, &trips)]));
            s.insert(TaskId(2), on_gpu(9, 3, &trips));
        }
        let tasks = vec![TaskId(1), TaskId(2), TaskId(3)];
        let trips_now = || trips.load(std::sync::atomic::Ordering::Relaxed);
        for into_device in [true, false] {
            let before = trips_now();
            let (items, bufs, missing) = lookup_data(&store, tasks.clone(), into_device);
            // Lent, the device bytes stay on the device; for the host, both come over.
            assert_eq!(trips_now() - before, if into_device { 0 } else { 2 });
            assert_eq!(missing, vec![TaskId(3)]);
            assert_eq!(bufs.len(), 3);
            assert_eq!(
                bufs.iter()
                    .filter(|p| matches!(p, Payload::Device(_)))
                    .count(),
                if into_device { 2 } else { 0 }
            );
            let host = |i: usize| bufs[i].to_host().unwrap();
            let want: [&[u8]; 3] = [b"host", &[7; 8], &[9; 3]];
            for (i, w) in want.iter().enumerate() {
                assert_eq!(&host(i)[..], *w, "buffer {i}");
            }
            // Each item refers to its own buffers.
            let got: Vec<Value> = items
                .iter()
                .map(|it| {
                    it.value
                        .to_value_from(&bufs, &[])
                        .unwrap()
                        .to_host()
                        .unwrap()
                })
                .collect();
            let stored = store.lock().unwrap();
            assert_eq!(got[0], stored[&TaskId(1)].to_host().unwrap());
            assert_eq!(got[1], stored[&TaskId(2)].to_host().unwrap());
        }
    }

    #[test]
    fn lent_values_are_imported_and_those_that_fail_are_named() {
        let lent_buf = |h: u8, len: u64| {
            Value::Device(DeviceBytes::new(IpcBuffer {
                device: "cuda:0 of a peer".into(),
                export: IpcExport {
                    handle: vec![h],
                    offset: 0,
                },
                len,
                loan: None,
            }))
        };
        let values = vec![
            (TaskId(1), Value::List(vec![Value::Int(1), lent_buf(5, 4)])),
            (TaskId(2), Value::Int(2)),
            (TaskId(3), lent_buf(0, 4)),
        ];
        assert!(lent(&values[0].1) && !lent(&values[1].1) && lent(&values[2].1));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let acc: Arc<dyn Accelerator> = Arc::new(Importer);
        let (ok, failed) = rt.block_on(import_values(Some(acc), values.clone()));
        assert_eq!(
            ok,
            vec![
                (
                    TaskId(1),
                    Value::List(vec![Value::Int(1), Value::Bytes(Bytes::from(vec![5u8; 4]))])
                ),
                (TaskId(2), Value::Int(2)),
            ]
        );
        let (tasks, error) = failed.unwrap();
        assert_eq!(tasks, vec![TaskId(3)]);
        assert!(error.contains("handle 0"), "{error}");
        // A worker whose device does not import asks for all of them again.
        let (ok, failed) = rt.block_on(import_values(None, values));
        assert_eq!(ok, vec![(TaskId(2), Value::Int(2))]);
        assert_eq!(failed.unwrap().0, vec![TaskId(1), TaskId(3)]);
    }
}
