//! How the worker processes of GPUs are started, by `cuda-worker` and by
//! `LocalCUDACluster` alike. A real GPU's worker sees only its GPU, named by UUID (NVML's
//! and CUDA's default indices may differ; a UUID names one GPU whatever the order), which
//! is then its CUDA device 0, and it runs on the CPUs close to the GPU: that is
//! [`GpuProcess`]. A GPU in MIG mode has one worker per MIG instance instead, which sees
//! only that instance (by its `MIG-…` UUID), uses the instance's memory, and exchanges
//! data with its peers through the host (no CUDA IPC, no NVLink between MIG instances).
//! Which devices get a worker, `CUDA_VISIBLE_DEVICES` considered, is [`visible_devices`].
//! `cuda-worker` plans one [`WorkerLaunch`] per device, real or simulated, from its
//! command line ([`CudaWorkerArgs`]) and the machine ([`Host`]): see [`plans`].
//!
//! This module plans; it starts nothing. Only [`plans`] (NVML) and [`Host::this`] look
//! at the machine; everything else is pure, and the tests drive it with a made-up
//! machine.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Parser;
use rask_device::discover::GpuInfo;
use rask_device::sim::{SimGpus, Topology};
use rask_worker::WorkerDevice;

#[cfg(test)]
mod tests;
mod visible;

pub use visible::{visible_devices, GpuTarget};

/// The worker process of one GPU or MIG instance.
#[derive(Clone, Debug, PartialEq)]
pub struct GpuProcess {
    /// What the worker drives: CUDA's device 0, the only device it sees.
    pub device: WorkerDevice,
    /// Set in the worker's environment: `CUDA_VISIBLE_DEVICES` (the GPU's or the MIG
    /// instance's UUID) and `CUDA_DEVICE_ORDER=PCI_BUS_ID`.
    pub env: Vec<(String, String)>,
    /// The CPUs the worker runs on (a MIG instance's are its GPU's); empty: wherever its
    /// launcher may.
    pub cpus: Vec<usize>,
    /// NVML indices of the GPUs it reaches over NVLink (`--nvlink-peers`).
    pub nvlink: Vec<u32>,
    /// Whether it may exchange device memory with same-host peers by CUDA IPC. When not
    /// (a MIG instance), its transport is tcp: every value it sends or receives goes
    /// through the host, and peers never lend it IPC handles.
    pub ipc: bool,
}

impl GpuProcess {
    /// The worker of `target`, with `memory_limit` bytes of device memory (default 80 %
    /// of the device's), on the CPUs near its GPU among `allowed` (see
    /// [`crate::affinity::near`]).
    pub fn new(target: &GpuTarget, memory_limit: Option<u64>, allowed: Option<&[usize]>) -> Self {
        GpuProcess {
            device: WorkerDevice::Cuda {
                index: 0,
                memory_limit,
            },
            env: vec![
                ("CUDA_VISIBLE_DEVICES".into(), target.uuid().to_string()),
                ("CUDA_DEVICE_ORDER".into(), "PCI_BUS_ID".into()),
            ],
            cpus: crate::affinity::near(&target.gpu.cpu_affinity, allowed),
            nvlink: target.nvlink_peers().to_vec(),
            ipc: target.ipc(),
        }
    }

    /// The transport its worker must use, if its own: tcp without CUDA IPC, else
    /// `asked` (the launcher's `--transport`, if any).
    pub fn transport(
        &self,
        asked: Option<rask_transport::TransportMode>,
    ) -> Option<rask_transport::TransportMode> {
        if self.ipc {
            asked
        } else {
            Some(rask_transport::TransportMode::Tcp)
        }
    }
}

/// Options like dask-cuda's `dask cuda worker`.
#[derive(Parser, Debug)]
#[command(name = "cuda-worker", version, about)]
pub struct CudaWorkerArgs {
    /// The scheduler, tcp://host:port.
    pub scheduler: String,
    /// Run N simulated GPUs (with MEMORY each, default 1 GiB) instead of real ones.
    #[arg(long)]
    pub sim_gpus: Option<String>,
    /// Which simulated GPUs are NVLink peers: none, all, pairs, or links like 0-1,2-3.
    #[arg(long, default_value = "none")]
    pub nvlink: String,
    /// Device memory each worker may use: bytes (e.g. 30GiB), or a plain number up to 1
    /// for that fraction of its GPU's memory, or of its MIG instance's (default: 0.8; a
    /// simulated GPU's capacity from --sim-gpus).
    #[arg(long)]
    pub device_memory_limit: Option<Limit>,
    /// Host memory of each worker: bytes, or a plain number up to 1 for that fraction of
    /// the machine's memory (default: the machine's memory divided among the workers).
    #[arg(long)]
    pub memory_limit: Option<Limit>,
    /// Tasks each worker runs at once.
    #[arg(long, default_value_t = 1)]
    pub nthreads: u32,
    /// Name prefix of the workers (default: the host name); GPU i's worker is
    /// PREFIX-gpuI, that of its MIG instance j PREFIX-gpuI-migJ.
    #[arg(long)]
    pub name: Option<String>,
    /// Resources every worker offers besides `gpu=1`, NAME=AMOUNT.
    #[arg(long)]
    pub resources: Vec<String>,
    /// The cluster's shared secret (default: $RASK_AUTH_FILE or $RASK_AUTH_SECRET).
    #[arg(long)]
    pub auth_file: Option<PathBuf>,
    /// TLS for every worker's connections (see the TLS options; passed on to each).
    #[command(flatten)]
    pub tls: crate::cli::TlsArgs,
    /// How workers move data: auto, tcp or shm (the workers of MIG instances always use
    /// tcp: CUDA IPC is not supported between MIG instances).
    #[arg(long)]
    pub transport: Option<rask_transport::TransportMode>,
    /// The address the workers listen on (default 127.0.0.1; 0.0.0.0 for every
    /// interface, each worker then telling peers its host's address on the route to the
    /// scheduler).
    #[arg(long, conflicts_with = "interface")]
    pub host: Option<String>,
    /// The workers listen on this network interface's address (eth0, ib0).
    #[arg(long)]
    pub interface: Option<String>,
    /// The host peers should use to reach the workers (behind NAT, in a container); each
    /// keeps its own port.
    #[arg(long)]
    pub contact_address: Option<String>,
    /// Seconds each worker keeps trying to reach the scheduler before giving up.
    #[arg(long)]
    pub death_timeout: Option<f64>,
    /// Restarts allowed per worker before giving up on it.
    #[arg(long, default_value_t = 5)]
    pub max_restarts: u32,
    /// How log lines are written, by this program and its workers: text (as Dask's) or
    /// json (one object per line).
    #[arg(long, value_enum, default_value_t)]
    pub log_format: crate::cli::LogFormat,
}

/// A memory limit as given on the command line: bytes (`30GiB`), a plain number up to 1
/// for that fraction (as in dask-cuda: `--device-memory-limit 0.8`), or `auto`.
pub use rask_proto::units::MemoryLimit as Limit;

/// What planning needs to know of this machine: read once by [`Host::this`], given by
/// the tests.
pub struct Host {
    /// Worker names start with it unless `--name` is given.
    name: String,
    /// Host memory in bytes: divided among the workers unless `--memory-limit` is given,
    /// and what a fractional `--memory-limit` is a fraction of.
    memory: u64,
    /// The CPUs this process may run on, if known: a worker runs on the CPUs close to
    /// its GPU among these, so that cuda-worker started under `taskset` or in a cpuset
    /// keeps its workers inside it (and `sched_setaffinity` is never asked for CPUs
    /// outside the cpuset, which it refuses).
    cpus: Option<Vec<usize>>,
    /// `CUDA_VISIBLE_DEVICES` as this process was given it: only those GPUs get a
    /// worker (a Slurm job or a Kubernetes pod is given some of the node's GPUs).
    visible: Option<String>,
}

impl Host {
    /// This machine, as this process sees it.
    pub fn this() -> Host {
        let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "cuda-worker".into());
        let cpus = crate::affinity::allowed();
        Host {
            name,
            memory: rask_worker::available_memory(),
            cpus,
            visible: std::env::var("CUDA_VISIBLE_DEVICES").ok(),
        }
    }
}

/// How to start the worker of one GPU: its label is the GPU, its arguments the `rask
/// worker` command line without the program.
pub use crate::supervise::Launch as WorkerLaunch;

/// Why the workers of this machine cannot be planned. Found before any worker starts, so
/// that a bad option fails cuda-worker once rather than every worker, restart after
/// restart.
#[derive(Debug)]
pub enum LaunchError {
    /// An option that does not parse (`--sim-gpus`, `--nvlink`, `--resources`), with its
    /// parser's message.
    BadOption(String),
    /// There is no real GPU to serve: NVML is absent, fails, or reports none.
    NoGpu(rask_device::DeviceError),
}

impl std::fmt::Display for LaunchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LaunchError::BadOption(m) => f.write_str(m),
            LaunchError::NoGpu(e) => write!(
                f,
                "{e}. There is no GPU to serve here; run simulated GPUs with --sim-gpus N[:MEMORY]"
            ),
        }
    }
}

// No `source`: the message already says the cause, which a chain would print twice.
impl std::error::Error for LaunchError {}

/// The plans for this machine: its simulated GPUs, or the real ones found through NVML.
pub fn plans(a: &CudaWorkerArgs, host: &Host) -> Result<Vec<WorkerLaunch>, LaunchError> {
    plans_of(a, host, rask_device::discover::gpus)
}

/// [`plans`], with the machine's GPUs found by `discover` (NVML, or the tests' own).
fn plans_of(
    a: &CudaWorkerArgs,
    host: &Host,
    discover: impl FnOnce() -> Result<Vec<GpuInfo>, rask_device::DeviceError>,
) -> Result<Vec<WorkerLaunch>, LaunchError> {
    if let Some(spec) = &a.sim_gpus {
        let (n, memory) = SimGpus::parse_spec(spec).map_err(LaunchError::BadOption)?;
        let topology = Topology::parse(&a.nvlink, n).map_err(LaunchError::BadOption)?;
        let plans = sim_plans(a, n, memory, &topology, host)?;
        tracing::info!(
            target: "rask.cuda-worker",
            "{n} simulated GPUs, {:.2} GiB each, NVLink: {}",
            a.device_memory_limit.map_or(memory, |l| l.of(memory)) as f64 / (1u64 << 30) as f64,
            topology.label()
        );
        return Ok(plans);
    }
    let gpus = discover().map_err(LaunchError::NoGpu)?;
    let targets = visible_devices(gpus, host.visible.as_deref())?;
    let plans = gpu_plans(a, &targets, host)?;
    for (t, p) in targets.iter().zip(&plans) {
        let g = &t.gpu;
        tracing::info!(
            target: "rask.cuda-worker",
            "GPU {}{}: {} ({}, {:.2} GiB, PCI {}, CPUs {})",
            g.index,
            t.mig
                .as_ref()
                .map_or(String::new(), |m| format!(" MIG {}", m.index)),
            g.name,
            t.uuid(),
            t.memory_total() as f64 / (1u64 << 30) as f64,
            g.pci_bus_id,
            match p.cpus.as_slice() {
                [] => "any".to_string(),
                cpus => cpu_list(cpus),
            }
        );
    }
    if targets.iter().any(|t| !t.ipc()) {
        tracing::info!(
            target: "rask.cuda-worker",
            "MIG instances: their workers use --transport tcp \
             (CUDA IPC and peer access are not supported between MIG instances); \
             their values go through the host"
        );
    }
    Ok(plans)
}

/// One worker per real GPU or MIG instance. Each sees only its device, chosen by UUID
/// (CUDA's and NVML's indices may differ, and a UUID names one device whatever the
/// order), as its device 0, and runs on the CPUs close to its GPU.
fn gpu_plans(
    a: &CudaWorkerArgs,
    targets: &[GpuTarget],
    host: &Host,
) -> Result<Vec<WorkerLaunch>, LaunchError> {
    let common = Common::new(a, targets.len(), host)?;
    Ok(targets
        .iter()
        .map(|t| {
            // Without a limit the worker takes 80 % of what is free when it opens its
            // GPU (not of the total: another process's memory is not ours).
            let limit = a.device_memory_limit.map(|l| l.of(t.memory_total()));
            let p = GpuProcess::new(t, limit, host.cpus.as_deref());
            WorkerLaunch {
                label: t.label(),
                args: common.command(
                    a,
                    &t.name_suffix(),
                    &p.device,
                    &p.nvlink,
                    p.transport(a.transport),
                ),
                env: p.env,
                cpus: p.cpus,
            }
        })
        .collect())
}

/// One worker per simulated GPU of `memory` bytes (`--device-memory-limit` replaces it).
fn sim_plans(
    a: &CudaWorkerArgs,
    n: u32,
    memory: u64,
    topology: &Topology,
    host: &Host,
) -> Result<Vec<WorkerLaunch>, LaunchError> {
    let common = Common::new(a, n as usize, host)?;
    let memory = a.device_memory_limit.map_or(memory, |l| l.of(memory));
    Ok((0..n)
        .map(|i| {
            let device = WorkerDevice::Sim { index: i, memory };
            WorkerLaunch {
                label: format!("sim:{i}"),
                args: common.command(
                    a,
                    &format!("gpu{i}"),
                    &device,
                    &topology.peers(i, n),
                    a.transport,
                ),
                env: Vec::new(),
                cpus: Vec::new(),
            }
        })
        .collect())
}

/// What every worker's command line shares, worked out (and checked) before any starts,
/// so that a bad option fails cuda-worker rather than every worker, restart after
/// restart.
struct Common {
    prefix: String,
    memory: u64,
}

impl Common {
    fn new(a: &CudaWorkerArgs, n: usize, host: &Host) -> Result<Common, LaunchError> {
        crate::cli::parse_resources(&a.resources).map_err(LaunchError::BadOption)?;
        Ok(Common {
            prefix: a.name.clone().unwrap_or_else(|| host.name.clone()),
            // `auto` (the default) shares the machine's (or container's) memory out;
            // a fraction is of all of it, as in Dask.
            memory: match a.memory_limit {
                None | Some(Limit::Auto) => host.memory / n.max(1) as u64,
                Some(l) => l.of(host.memory),
            },
        })
    }

    /// `worker SCHEDULER …` for the device named `suffix` (`gpu3`, `gpu0-mig1`) of this
    /// machine, driven as `device`, its data moved by `transport`.
    fn command(
        &self,
        a: &CudaWorkerArgs,
        suffix: &str,
        device: &WorkerDevice,
        nvlink: &[u32],
        transport: Option<rask_transport::TransportMode>,
    ) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["worker".into(), a.scheduler.clone().into()];
        let mut push = |k: &str, v: String| args.extend([k.into(), v.into()]);
        push("--nthreads", a.nthreads.to_string());
        push("--name", format!("{}-{suffix}", self.prefix));
        push("--memory-limit", self.memory.to_string());
        for r in &a.resources {
            push("--resources", r.clone());
        }
        if let Some(t) = transport {
            push("--transport", t.to_string());
        }
        if let Some(h) = &a.host {
            push("--host", h.clone());
        }
        if let Some(i) = &a.interface {
            push("--interface", i.clone());
        }
        if let Some(c) = &a.contact_address {
            push("--contact-address", c.clone());
        }
        if let Some(t) = a.death_timeout {
            push("--death-timeout", t.to_string());
        }
        if let Some(f) = &a.auth_file {
            args.extend(["--auth-file".into(), f.clone().into_os_string()]);
        }
        args.extend(a.tls.to_args());
        if a.log_format != crate::cli::LogFormat::default() {
            args.extend(["--log-format".into(), a.log_format.to_string().into()]);
        }
        args.extend(
            crate::cli::device_args(device, nvlink)
                .into_iter()
                .map(OsString::from),
        );
        args
    }
}

/// CPU ids as ranges, e.g. `0-7,16-23`.
fn cpu_list(cpus: &[usize]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            cpus[i].to_string()
        } else {
            format!("{}-{}", cpus[i], cpus[j])
        });
        i = j + 1;
    }
    out.join(",")
}
