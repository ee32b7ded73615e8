//! Worker settings: the config, the device it drives, its GPU's index on the host, and
//! the spill limits that follow from them.

use std::time::Duration;

use rask_kernels::Registry;
use rask_proto::msg::{Hello, Resource, Role, WorkerHello};
use rask_transport::{ConnConfig, TransportMode};
use rask_worker_core::spill::SpillLimits;

use crate::sysmem::total_memory;

/// Worker settings.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// `tcp://host:port` of the scheduler.
    pub scheduler: String,
    /// The worker's name in logs and `scheduler_info` (default `worker-PID`).
    pub name: String,
    /// Tasks run at once (executor threads).
    pub nthreads: u32,
    /// Bytes of memory this worker may use (reported to the scheduler).
    pub memory_limit: u64,
    /// Where to serve data to peers and clients; port 0 picks one.
    pub listen: String,
    /// The address peers and clients are told to reach it at, `host[:port]` (behind
    /// NAT, in a container); `None`: the listening address, or when that is every
    /// interface, this host's address on the route to the scheduler.
    pub contact: Option<String>,
    /// Resources offered to tasks; `memory`, and for a GPU `gpu`, its device name and
    /// `device_memory`, are added unless given here.
    pub resources: Vec<Resource>,
    /// Limits, timeouts and the shared secret of its connections.
    pub conn: ConnConfig,
    /// The ops it runs; must match the cluster's other workers.
    pub registry: Registry,
    /// How often it reports its state to the scheduler (and checks its memory).
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
    /// How to start programs' workers when the scheduler asks (a client's typed ops need
    /// its program); `None`: this worker does not run programs.
    pub programs: Option<crate::programs::ProgramLauncher>,
    /// After this long (from when it joins its scheduler), the worker asks the scheduler
    /// to retire it gracefully, as Dask's `--lifetime` does for batch jobs' walltimes: it
    /// gets no new tasks, its data moves to other workers, then the scheduler closes it.
    /// A stagger, if wanted, is already in the value. `None`: it stays.
    pub lifetime: Option<Duration>,
    /// Called with each heartbeat's figures, on the worker's loop (keep it short): what a
    /// metrics endpoint of the worker's own serves.
    pub on_heartbeat: Option<HeartbeatHook>,
    /// Where the worker serves its own `/metrics` (`http://host:port`), told to the
    /// scheduler for its dashboard; empty: nowhere.
    pub dashboard: String,
    /// When the scheduler's connection is lost, how long to keep trying to join it again
    /// (keeping the values held, which the scheduler takes back unless stale); `None`:
    /// stop at once.
    pub reconnect: Option<Duration>,
}

/// See [`WorkerConfig::on_heartbeat`].
#[derive(Clone)]
pub struct HeartbeatHook(pub std::sync::Arc<dyn Fn(&rask_proto::msg::HeartbeatMsg) + Send + Sync>);

impl std::fmt::Debug for HeartbeatHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HeartbeatHook(..)")
    }
}

/// The device a worker drives.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum WorkerDevice {
    /// CPU only.
    #[default]
    Host,
    /// A simulated GPU with `memory` bytes: its memory is a memfd arena that same-host
    /// peers map, its kernels run on the CPU.
    Sim {
        /// Which simulated GPU (`sim:N`).
        index: u32,
        /// Its capacity in bytes.
        memory: u64,
    },
    /// A CUDA GPU (device memory limit: `memory_limit`, default 80 % of the GPU's memory
    /// free when it is opened).
    Cuda {
        /// The CUDA ordinal in this process (as `CUDA_VISIBLE_DEVICES` numbers them).
        index: u32,
        /// Device memory this worker may use, in bytes.
        memory_limit: Option<u64>,
    },
}

impl WorkerDevice {
    /// The device, without its memory.
    pub fn device(&self) -> rask_proto::DeviceLoc {
        match self {
            WorkerDevice::Host => rask_proto::DeviceLoc::HOST,
            WorkerDevice::Sim { index, .. } => rask_proto::DeviceLoc::sim(*index),
            WorkerDevice::Cuda { index, .. } => rask_proto::DeviceLoc::cuda(*index),
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
                    // A MIG instance is on its GPU: its UUID names the GPU's index.
                    rask_device::discover::gpus()
                        .map(|gpus| {
                            gpus.into_iter()
                                .flat_map(|g| {
                                    let index = g.index;
                                    std::iter::once((index, g.uuid))
                                        .chain(g.mig.into_iter().map(move |m| (index, m.uuid)))
                                })
                                .collect()
                        })
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
            contact: None,
            resources: Vec::new(),
            conn: ConnConfig::default(),
            registry: Registry::builtin(),
            heartbeat_interval: Duration::from_secs(1),
            transport: TransportMode::Auto,
            device: WorkerDevice::Host,
            nvlink: Vec::new(),
            own_process: false,
            programs: None,
            lifetime: None,
            on_heartbeat: None,
            dashboard: String::new(),
            reconnect: None,
        }
    }
}

/// The host's index of CUDA ordinal `ordinal` under `CUDA_VISIBLE_DEVICES` = `visible`:
/// its entry by number (in PCI bus order, as workers are started), or by UUID looked up
/// among the host's GPUs and MIG instances (`(index of the GPU, uuid)`, asked only then);
/// the ordinal itself when nothing restricts or names it.
pub(crate) fn host_gpu_index(
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
        // CUDA takes a UUID or a prefix of one (`GPU-8a2f`, `MIG-5f0c`).
        .find(|(_, uuid)| {
            (entry.starts_with("GPU-") || entry.starts_with("MIG-")) && uuid.starts_with(entry)
        })
        .map_or(ordinal, |(i, _)| i)
}

/// The spilling thresholds of a worker's device. A CUDA GPU's limit is already where
/// spilling starts (dask-cuda's `--device-memory-limit`, by default 80 % of the GPU's free
/// memory); a simulated GPU's is its whole memory, spilled from 80 % of it alike.
pub(crate) fn spill_limits(
    device: &WorkerDevice,
    device_limit: Option<u64>,
    host: u64,
) -> SpillLimits {
    let mut limits = SpillLimits::new(device_limit, host);
    if matches!(device, WorkerDevice::Cuda { .. }) {
        limits.device_target = 1.0;
    }
    limits
}

/// What a worker knows about itself once its device and listeners are open, for its
/// hello.
pub(crate) struct Joining<'a> {
    pub(crate) listen_addr: String,
    pub(crate) shm_addr: String,
    pub(crate) host_gpu: Option<u32>,
    /// Device memory the worker may use, if it drives a GPU.
    pub(crate) device_limit: Option<u64>,
    /// A CUDA GPU's product name.
    pub(crate) device_product: Option<String>,
    pub(crate) limits: &'a SpillLimits,
    pub(crate) code: u64,
    /// It joins again holding values (see [`rask_proto::msg::WorkerHello::holds`]).
    pub(crate) holds: bool,
}

impl WorkerConfig {
    /// The device as the cluster knows it: a CUDA GPU by its host index (every worker of
    /// cuda-worker sees its own GPU as cuda:0).
    fn cluster_device(&self, host_gpu: Option<u32>) -> String {
        match (&self.device, host_gpu) {
            (WorkerDevice::Cuda { .. }, Some(i)) => format!("cuda:{i}"),
            (d, _) => d.label(),
        }
    }

    /// The resources this worker offers: the configured ones, its memory limit as
    /// `memory` (bytes), and on a GPU `gpu = 1`, its device by name (`sim:2 = 1`, so that
    /// a task can ask for one GPU in particular) and its device memory as
    /// `device_memory`. A task that declares how much it needs holds that much while it
    /// runs, and goes only where it fits.
    pub(crate) fn offer(&self, host_gpu: Option<u32>, device_limit: Option<u64>) -> Vec<Resource> {
        let mut resources = self.resources.clone();
        let mut offer = vec![("memory".to_string(), self.memory_limit as f64)];
        if self.device.gpu().is_some() {
            offer.push(("gpu".into(), 1.0));
            offer.push((self.cluster_device(host_gpu), 1.0));
            if let Some(limit) = device_limit {
                offer.push(("device_memory".into(), limit as f64));
            }
        }
        for (name, amount) in offer {
            if !resources.iter().any(|r| r.name == name) {
                resources.push(Resource { name, amount });
            }
        }
        resources
    }

    /// The worker's hello to the scheduler.
    pub(crate) fn hello(&self, j: Joining<'_>) -> Hello {
        let mut hello = Hello::new(Role::Worker, self.name.clone(), rask_transport::host_id());
        hello.registry = Some(self.registry.info());
        hello.worker = Some(WorkerHello {
            listen_addr: j.listen_addr,
            shm_addr: j.shm_addr,
            transport: self.transport.to_string(),
            device: self.cluster_device(j.host_gpu),
            device_name: match &self.device {
                WorkerDevice::Host => String::new(),
                WorkerDevice::Sim { .. } => {
                    "simulated GPU (host memory, kernels run on the CPU)".into()
                }
                WorkerDevice::Cuda { .. } => j.device_product.unwrap_or_default(),
            },
            gpu: j.host_gpu,
            nvlink: self.nvlink.clone(),
            device_memory_limit: j.device_limit.unwrap_or(0),
            device_spill_at: j.limits.device_spill_at().unwrap_or(0),
            nthreads: self.nthreads,
            memory_limit: self.memory_limit,
            resources: self.offer(j.host_gpu, j.device_limit),
            code: j.code,
            runs_programs: self.programs.is_some(),
            dashboard: self.dashboard.clone(),
            holds: j.holds,
        });
        hello
    }
}
