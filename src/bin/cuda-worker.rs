//! `cuda-worker SCHEDULER`: one `rask worker` per GPU of this machine, like dask-cuda's
//! `dask cuda worker`. GPUs are found through NVML; each worker process sees only its GPU
//! (`CUDA_VISIBLE_DEVICES` by UUID, `CUDA_DEVICE_ORDER=PCI_BUS_ID`) and runs on the CPUs
//! close to it. With `--sim-gpus N[:MEMORY]` the GPUs are simulated instead. The workers
//! are supervised: one that dies is restarted; SIGTERM or SIGINT stops them all.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Parser;
use rask_device::sim::{parse_bytes, SimGpus, Topology};

/// Options like dask-cuda's `dask cuda worker`.
#[derive(Parser, Debug)]
#[command(name = "cuda-worker", version, about)]
struct Args {
    /// The scheduler, tcp://host:port.
    scheduler: String,
    /// Run N simulated GPUs (with MEMORY each, default 1 GiB) instead of real ones.
    #[arg(long)]
    sim_gpus: Option<String>,
    /// Which simulated GPUs are NVLink peers: none, all, pairs, or links like 0-1,2-3.
    #[arg(long, default_value = "none")]
    nvlink: String,
    /// Device memory each worker may use (default: 80 % of its GPU's; a simulated GPU's
    /// capacity from --sim-gpus).
    #[arg(long)]
    device_memory_limit: Option<String>,
    /// Host memory of each worker (default: the machine's memory divided among them).
    #[arg(long)]
    memory_limit: Option<String>,
    /// Tasks each worker runs at once.
    #[arg(long, default_value_t = 1)]
    nthreads: u32,
    /// Name prefix of the workers (default: the host name); worker i is PREFIX-gpuI.
    #[arg(long)]
    name: Option<String>,
    /// Resources every worker offers besides `gpu=1`, NAME=AMOUNT.
    #[arg(long)]
    resources: Vec<String>,
    /// The cluster's shared secret (default: $RASK_AUTH_FILE or $RASK_AUTH_SECRET).
    #[arg(long)]
    auth_file: Option<PathBuf>,
    /// How workers move data: auto, tcp or shm.
    #[arg(long)]
    transport: Option<String>,
    /// Restarts allowed per worker before giving up on it.
    #[arg(long, default_value_t = 5)]
    max_restarts: u32,
}

/// How to start the worker of one GPU.
struct Plan {
    label: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    cpus: Vec<usize>,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cuda-worker: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn plans(a: &Args) -> Result<Vec<Plan>> {
    let device_limit = a
        .device_memory_limit
        .as_deref()
        .map(parse_bytes)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    if let Some(spec) = &a.sim_gpus {
        let (n, memory) = SimGpus::parse_spec(spec).map_err(anyhow::Error::msg)?;
        let topology = Topology::parse(&a.nvlink, n).map_err(anyhow::Error::msg)?;
        let memory = device_limit.unwrap_or(memory);
        eprintln!(
            "rask.cuda-worker - INFO - {n} simulated GPUs, {:.2} GiB each, NVLink: {}",
            memory as f64 / (1u64 << 30) as f64,
            match topology.describe() {
                d if d.is_empty() => "none".to_string(),
                d => d,
            }
        );
        return Ok((0..n)
            .map(|i| {
                let device = rask_worker::WorkerDevice::Sim { index: i, memory };
                let args = rask::cli::device_args(&device, &topology.peers(i, n));
                Plan {
                    label: format!("sim:{i}"),
                    args,
                    env: Vec::new(),
                    cpus: Vec::new(),
                }
            })
            .collect());
    }
    let gpus = match rask_device::discover::gpus() {
        Ok(g) => g,
        Err(e) => bail!(
            "{e}. There is no GPU to serve here; run simulated GPUs with --sim-gpus N[:MEMORY]"
        ),
    };
    Ok(gpus
        .into_iter()
        .map(|g| {
            eprintln!(
                "rask.cuda-worker - INFO - GPU {}: {} ({}, {:.2} GiB, PCI {})",
                g.index,
                g.name,
                g.uuid,
                g.memory_total as f64 / (1u64 << 30) as f64,
                g.pci_bus_id
            );
            let limit = device_limit.unwrap_or(g.memory_total / 10 * 8);
            // The worker sees only its GPU, as device 0.
            let device = rask_worker::WorkerDevice::Cuda {
                index: 0,
                memory_limit: Some(limit),
            };
            let args = rask::cli::device_args(&device, &g.nvlink_peers);
            Plan {
                label: format!("cuda:{} ({})", g.index, g.name),
                args,
                env: vec![
                    ("CUDA_VISIBLE_DEVICES".into(), g.uuid.clone()),
                    ("CUDA_DEVICE_ORDER".into(), "PCI_BUS_ID".into()),
                ],
                cpus: g.cpu_affinity,
            }
        })
        .collect())
}

/// The `rask` program next to this one (or `$RASK_WORKER_BIN`).
fn rask_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("RASK_WORKER_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let p = exe.with_file_name("rask");
    if !p.exists() {
        bail!("cannot find the rask program next to {}", exe.display());
    }
    Ok(p)
}

fn spawn(a: &Args, bin: &PathBuf, i: usize, n: usize, p: &Plan) -> Result<tokio::process::Child> {
    let prefix = a.name.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "cuda-worker".into())
    });
    let memory = match &a.memory_limit {
        Some(m) => parse_bytes(m).map_err(anyhow::Error::msg)?,
        None => rask_worker::total_memory() / n as u64,
    };
    let mut cmd = tokio::process::Command::new(bin);
    cmd.arg("worker")
        .arg(&a.scheduler)
        .args(["--nthreads", &a.nthreads.to_string()])
        .args(["--name", &format!("{prefix}-gpu{i}")])
        .args(["--memory-limit", &memory.to_string()])
        .args(&p.args)
        .envs(p.env.iter().cloned())
        .stdin(std::process::Stdio::null());
    for r in &a.resources {
        cmd.args(["--resources", r]);
    }
    if let Some(f) = &a.auth_file {
        cmd.arg("--auth-file").arg(f);
    }
    if let Some(t) = &a.transport {
        cmd.args(["--transport", t]);
    }
    if !p.cpus.is_empty() {
        let mut set = rustix::thread::CpuSet::new();
        for &c in &p.cpus {
            set.set(c);
        }
        // SAFETY: sched_setaffinity is async-signal-safe; nothing else runs in the child
        // between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                rustix::thread::sched_setaffinity(None, &set).map_err(std::io::Error::from)
            });
        }
    }
    cmd.spawn()
        .with_context(|| format!("starting {} for {}", bin.display(), p.label))
}

fn run(a: Args) -> Result<ExitCode> {
    let plans = plans(&a)?;
    let bin = rask_binary()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let (exited_tx, mut exited) = tokio::sync::mpsc::unbounded_channel();
        let n = plans.len();
        let mut pids: HashMap<usize, u32> = HashMap::new();
        let mut restarts = vec![0u32; n];
        let start = |i: usize, pids: &mut HashMap<usize, u32>| -> Result<()> {
            let mut child = spawn(&a, &bin, i, n, &plans[i])?;
            if let Some(pid) = child.id() {
                pids.insert(i, pid);
            }
            let tx = exited_tx.clone();
            tokio::spawn(async move {
                let status = child.wait().await;
                let _ = tx.send((i, status));
            });
            Ok(())
        };
        for (i, plan) in plans.iter().enumerate() {
            start(i, &mut pids)?;
            eprintln!(
                "rask.cuda-worker - INFO - started the worker of {}",
                plan.label
            );
        }
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                Some((i, status)) = exited.recv() => {
                    pids.remove(&i);
                    let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                    if restarts[i] >= a.max_restarts {
                        eprintln!("rask.cuda-worker - ERROR - the worker of {} exited ({status}) after {} restarts; giving up on it", plans[i].label, restarts[i]);
                        if pids.is_empty() {
                            return Ok(ExitCode::FAILURE);
                        }
                        continue;
                    }
                    restarts[i] += 1;
                    eprintln!("rask.cuda-worker - WARNING - the worker of {} exited ({status}); restarting it", plans[i].label);
                    start(i, &mut pids)?;
                }
            }
        }
        // Stop every worker: SIGTERM, then SIGKILL what is still running after 10 s.
        eprintln!("rask.cuda-worker - INFO - stopping {} workers", pids.len());
        for pid in pids.values() {
            if let Some(p) = rustix::process::Pid::from_raw(*pid as i32) {
                let _ = rustix::process::kill_process(p, rustix::process::Signal::TERM);
            }
        }
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while !pids.is_empty() {
            match tokio::time::timeout_at(deadline, exited.recv()).await {
                Ok(Some((i, _))) => {
                    pids.remove(&i);
                }
                _ => {
                    for pid in pids.values() {
                        if let Some(p) = rustix::process::Pid::from_raw(*pid as i32) {
                            let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
                        }
                    }
                    break;
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
