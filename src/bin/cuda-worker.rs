//! `cuda-worker SCHEDULER`: one `rask worker` per GPU of this machine, like dask-cuda's
//! `dask cuda worker`. GPUs are found through NVML; each worker process sees only its GPU
//! (`CUDA_VISIBLE_DEVICES` by UUID, `CUDA_DEVICE_ORDER=PCI_BUS_ID`) and runs on the CPUs
//! close to it. With `--sim-gpus N[:MEMORY]` the GPUs are simulated instead. The workers
//! are supervised: one that dies is restarted; SIGTERM or SIGINT stops them all.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Parser;
use rask::gpu_process::GpuProcess;
use rask_device::discover::GpuInfo;
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
    /// Device memory each worker may use: bytes (e.g. 30GiB), or a plain number up to 1
    /// for that fraction of its GPU's memory (default: 0.8; a simulated GPU's capacity
    /// from --sim-gpus).
    #[arg(long, value_parser = Limit::parse)]
    device_memory_limit: Option<Limit>,
    /// Host memory of each worker: bytes, or a plain number up to 1 for that fraction of
    /// the machine's memory (default: the machine's memory divided among the workers).
    #[arg(long, value_parser = Limit::parse)]
    memory_limit: Option<Limit>,
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
    transport: Option<rask_transport::TransportMode>,
    /// Restarts allowed per worker before giving up on it.
    #[arg(long, default_value_t = 5)]
    max_restarts: u32,
}

/// A memory limit as given on the command line. A plain number up to 1 is a fraction,
/// as in dask-cuda (`--device-memory-limit 0.8`): read as bytes it would be a limit of
/// 0 or 1 byte, which nobody means.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Limit {
    Bytes(u64),
    Fraction(f64),
}

impl Limit {
    fn parse(s: &str) -> Result<Limit, String> {
        if let Ok(v) = s.trim().parse::<f64>() {
            if v > 0.0 && v <= 1.0 {
                return Ok(Limit::Fraction(v));
            }
        }
        match parse_bytes(s)? {
            0 => Err(format!("{s:?}: a limit of 0 bytes leaves nothing to use")),
            b => Ok(Limit::Bytes(b)),
        }
    }

    /// The limit in bytes, for memory of `total` bytes.
    fn of(self, total: u64) -> u64 {
        match self {
            Limit::Bytes(b) => b,
            Limit::Fraction(f) => (total as f64 * f) as u64,
        }
    }
}

/// What planning needs to know of this machine: read once by [`Host::this`], given by
/// the tests.
struct Host {
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
}

impl Host {
    fn this() -> Host {
        let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "cuda-worker".into());
        let cpus = rask::affinity::allowed();
        Host {
            name,
            memory: rask_worker::total_memory(),
            cpus,
        }
    }
}

/// How to start the worker of one GPU.
#[derive(Clone, Debug, PartialEq)]
struct WorkerLaunch {
    /// The GPU, in cuda-worker's own messages.
    label: String,
    /// The `rask worker` command line, without the program.
    args: Vec<OsString>,
    /// Set in the worker's environment, on top of cuda-worker's own.
    env: Vec<(String, String)>,
    /// The CPUs the worker runs on; empty: wherever cuda-worker may.
    cpus: Vec<usize>,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(code) => code,
        Err(e) => {
            rask::errln!("cuda-worker: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The plans for this machine: its simulated GPUs, or the real ones found through NVML.
fn plans(a: &Args, host: &Host) -> Result<Vec<WorkerLaunch>> {
    if let Some(spec) = &a.sim_gpus {
        let (n, memory) = SimGpus::parse_spec(spec).map_err(anyhow::Error::msg)?;
        let topology = Topology::parse(&a.nvlink, n).map_err(anyhow::Error::msg)?;
        let plans = sim_plans(a, n, memory, &topology, host)?;
        rask::errln!(
            "rask.cuda-worker - INFO - {n} simulated GPUs, {:.2} GiB each, NVLink: {}",
            a.device_memory_limit.map_or(memory, |l| l.of(memory)) as f64 / (1u64 << 30) as f64,
            topology.label()
        );
        return Ok(plans);
    }
    let gpus = match rask_device::discover::gpus() {
        Ok(g) => g,
        Err(e) => bail!(
            "{e}. There is no GPU to serve here; run simulated GPUs with --sim-gpus N[:MEMORY]"
        ),
    };
    let plans = gpu_plans(a, &gpus, host)?;
    for (g, p) in gpus.iter().zip(&plans) {
        rask::errln!(
            "rask.cuda-worker - INFO - GPU {}: {} ({}, {:.2} GiB, PCI {}, CPUs {})",
            g.index,
            g.name,
            g.uuid,
            g.memory_total as f64 / (1u64 << 30) as f64,
            g.pci_bus_id,
            match p.cpus.as_slice() {
                [] => "any".to_string(),
                cpus => cpu_list(cpus),
            }
        );
    }
    Ok(plans)
}

/// One worker per real GPU. Each sees only its GPU, chosen by UUID (CUDA's and NVML's
/// indices may differ, and a UUID names one GPU whatever the order), as its device 0,
/// and runs on the CPUs close to it.
fn gpu_plans(a: &Args, gpus: &[GpuInfo], host: &Host) -> Result<Vec<WorkerLaunch>> {
    let common = Common::new(a, gpus.len(), host)?;
    Ok(gpus
        .iter()
        .map(|g| {
            let limit = match a.device_memory_limit {
                Some(l) => l.of(g.memory_total),
                None => g.memory_total / 10 * 8,
            };
            let p = GpuProcess::new(g, Some(limit), host.cpus.as_deref());
            WorkerLaunch {
                label: format!("cuda:{} ({})", g.index, g.name),
                args: common.command(a, g.index, &p.device, &g.nvlink_peers),
                env: p.env,
                cpus: p.cpus,
            }
        })
        .collect())
}

/// One worker per simulated GPU of `memory` bytes (`--device-memory-limit` replaces it).
fn sim_plans(
    a: &Args,
    n: u32,
    memory: u64,
    topology: &Topology,
    host: &Host,
) -> Result<Vec<WorkerLaunch>> {
    let common = Common::new(a, n as usize, host)?;
    let memory = a.device_memory_limit.map_or(memory, |l| l.of(memory));
    Ok((0..n)
        .map(|i| {
            let device = rask_worker::WorkerDevice::Sim { index: i, memory };
            WorkerLaunch {
                label: format!("sim:{i}"),
                args: common.command(a, i, &device, &topology.peers(i, n)),
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
    fn new(a: &Args, n: usize, host: &Host) -> Result<Common> {
        rask::cli::parse_resources(&a.resources).map_err(anyhow::Error::msg)?;
        Ok(Common {
            prefix: a.name.clone().unwrap_or_else(|| host.name.clone()),
            memory: match a.memory_limit {
                Some(l) => l.of(host.memory),
                None => host.memory / n.max(1) as u64,
            },
        })
    }

    /// `worker SCHEDULER …` for GPU `i` of this machine, driven as `device`.
    fn command(
        &self,
        a: &Args,
        i: u32,
        device: &rask_worker::WorkerDevice,
        nvlink: &[u32],
    ) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["worker".into(), a.scheduler.clone().into()];
        let mut push = |k: &str, v: String| args.extend([k.into(), v.into()]);
        push("--nthreads", a.nthreads.to_string());
        push("--name", format!("{}-gpu{i}", self.prefix));
        push("--memory-limit", self.memory.to_string());
        for r in &a.resources {
            push("--resources", r.clone());
        }
        if let Some(t) = a.transport {
            push("--transport", t.to_string());
        }
        if let Some(f) = &a.auth_file {
            args.extend(["--auth-file".into(), f.clone().into_os_string()]);
        }
        args.extend(
            rask::cli::device_args(device, nvlink)
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

fn spawn(bin: &PathBuf, p: &WorkerLaunch) -> Result<tokio::process::Child> {
    let mut cmd = std::process::Command::new(bin);
    cmd.args(&p.args)
        .envs(p.env.iter().cloned())
        .stdin(std::process::Stdio::null());
    rask::affinity::pin(&mut cmd, &p.cpus);
    tokio::process::Command::from(cmd)
        .spawn()
        .with_context(|| format!("starting {} for {}", bin.display(), p.label))
}

fn run(a: Args) -> Result<ExitCode> {
    let plans = plans(&a, &Host::this())?;
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
            let mut child = spawn(&bin, &plans[i])?;
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
        // A worker that cannot start stops those already started: none outlives this.
        let mut outcome = Ok(ExitCode::SUCCESS);
        for (i, plan) in plans.iter().enumerate() {
            if let Err(e) = start(i, &mut pids) {
                outcome = Err(e);
                break;
            }
            rask::errln!(
                "rask.cuda-worker - INFO - started the worker of {}",
                plan.label
            );
        }
        while outcome.is_ok() {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                Some((i, status)) = exited.recv() => {
                    pids.remove(&i);
                    let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                    if restarts[i] >= a.max_restarts {
                        rask::errln!("rask.cuda-worker - ERROR - the worker of {} exited ({status}) after {} restarts; giving up on it", plans[i].label, restarts[i]);
                        if pids.is_empty() {
                            return Ok(ExitCode::FAILURE);
                        }
                        continue;
                    }
                    restarts[i] += 1;
                    rask::errln!("rask.cuda-worker - WARNING - the worker of {} exited ({status}); restarting it", plans[i].label);
                    if let Err(e) = start(i, &mut pids) {
                        rask::errln!("rask.cuda-worker - ERROR - cannot restart the worker of {}: {e:#}; giving up on it", plans[i].label);
                        if pids.is_empty() {
                            return Ok(ExitCode::FAILURE);
                        }
                    }
                }
            }
        }
        // Stop every worker: SIGTERM, then SIGKILL what is still running after 10 s.
        rask::errln!("rask.cuda-worker - INFO - stopping {} workers", pids.len());
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
        outcome
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn args(extra: &[&str]) -> Args {
        let argv = ["cuda-worker", "tcp://10.0.0.1:8786"];
        Args::try_parse_from(argv.iter().chain(extra)).unwrap()
    }

    /// A two-socket machine of 128 CPUs with 256 GiB; this process may use every CPU.
    fn host() -> Host {
        Host {
            name: "node7".into(),
            memory: 256 * GIB,
            cpus: Some((0..128).collect()),
        }
    }

    /// Two NVLinked GPUs of different sizes, one per socket: NVML's view of them.
    fn gpus() -> Vec<GpuInfo> {
        vec![
            GpuInfo {
                index: 0,
                name: "NVIDIA A100-SXM4-40GB".into(),
                uuid: "GPU-3c1f4a2e-8d1b-4b9e-a2c7-0f5e6d7c8b9a".into(),
                memory_total: 40 * GIB,
                pci_bus_id: "00000000:07:00.0".into(),
                nvlink_peers: vec![1],
                cpu_affinity: (0..64).collect(),
            },
            GpuInfo {
                index: 1,
                name: "NVIDIA A100-SXM4-80GB".into(),
                uuid: "GPU-b2d4e6f8-1a3c-4e5f-9b7d-2c4e6a8b0d1f".into(),
                memory_total: 80 * GIB,
                pci_bus_id: "00000000:87:00.0".into(),
                nvlink_peers: vec![0],
                cpu_affinity: (64..128).collect(),
            },
        ]
    }

    fn strs(p: &WorkerLaunch) -> Vec<&str> {
        p.args.iter().map(|a| a.to_str().unwrap()).collect()
    }

    fn gpu_env(uuid: &str) -> Vec<(String, String)> {
        vec![
            ("CUDA_VISIBLE_DEVICES".into(), uuid.into()),
            ("CUDA_DEVICE_ORDER".into(), "PCI_BUS_ID".into()),
        ]
    }

    #[test]
    fn each_gpu_gets_a_worker_matched_by_uuid_near_its_cpus_with_80_percent_of_its_memory() {
        let gpus = gpus();
        let plans = gpu_plans(&args(&[]), &gpus, &host()).unwrap();
        let expected = |i: usize, name: &str, memory: u64, device_limit: u64, peer: &str| {
            let args: Vec<OsString> = [
                "worker",
                "tcp://10.0.0.1:8786",
                "--nthreads",
                "1",
                "--name",
                name,
                "--memory-limit",
                &memory.to_string(),
                "--device-memory-limit",
                &device_limit.to_string(),
                // Each worker sees only its own GPU, so it is always CUDA's device 0.
                "--device",
                "cuda:0",
                "--nvlink-peers",
                peer,
            ]
            .map(OsString::from)
            .into();
            WorkerLaunch {
                label: format!("cuda:{i} ({})", gpus[i].name),
                args,
                env: gpu_env(&gpus[i].uuid),
                cpus: gpus[i].cpu_affinity.clone(),
            }
        };
        // Host memory is shared out evenly; device memory is 80 % of each GPU's own.
        assert_eq!(
            plans,
            vec![
                expected(0, "node7-gpu0", 128 * GIB, 32 * GIB, "1"),
                expected(1, "node7-gpu1", 128 * GIB, 64 * GIB, "0"),
            ]
        );
    }

    #[test]
    fn explicit_options_reach_every_worker() {
        let a = args(&[
            "--device-memory-limit",
            "30GiB",
            "--memory-limit",
            "64GiB",
            "--nthreads",
            "4",
            "--name",
            "gpunode",
            "--resources",
            "fast=2,disk=1",
            "--resources",
            "licence=1",
            "--transport",
            "tcp",
            "--auth-file",
            "/etc/rask/secret",
        ]);
        let plans = gpu_plans(&a, &gpus(), &host()).unwrap();
        let tail = |name: &'static str, peer: &'static str| {
            vec![
                "worker",
                "tcp://10.0.0.1:8786",
                "--nthreads",
                "4",
                "--name",
                name,
                "--memory-limit",
                "68719476736",
                "--resources",
                "fast=2,disk=1",
                "--resources",
                "licence=1",
                "--transport",
                "tcp",
                "--auth-file",
                "/etc/rask/secret",
                "--device-memory-limit",
                "32212254720",
                "--device",
                "cuda:0",
                "--nvlink-peers",
                peer,
            ]
        };
        assert_eq!(strs(&plans[0]), tail("gpunode-gpu0", "1"));
        assert_eq!(strs(&plans[1]), tail("gpunode-gpu1", "0"));
        assert_eq!(
            plans[1].env,
            gpu_env("GPU-b2d4e6f8-1a3c-4e5f-9b7d-2c4e6a8b0d1f")
        );
    }

    #[test]
    fn a_fractional_limit_is_of_each_gpus_memory_and_of_the_hosts() {
        let a = args(&["--device-memory-limit", "0.5", "--memory-limit", "0.25"]);
        let plans = gpu_plans(&a, &gpus(), &host()).unwrap();
        let limits: Vec<(&str, &str)> = plans
            .iter()
            .map(|p| {
                let s = strs(p);
                let after = |k: &str| s[s.iter().position(|a| *a == k).unwrap() + 1];
                (after("--memory-limit"), after("--device-memory-limit"))
            })
            .collect();
        // 64 GiB of host memory each; 20 GiB of the 40 GiB GPU, 40 GiB of the 80 GiB one.
        assert_eq!(
            limits,
            [
                ("68719476736", "21474836480"),
                ("68719476736", "42949672960")
            ]
        );
    }

    #[test]
    fn limits_are_bytes_or_fractions_up_to_one_and_never_zero() {
        assert_eq!(Limit::parse("0.8"), Ok(Limit::Fraction(0.8)));
        assert_eq!(Limit::parse("1"), Ok(Limit::Fraction(1.0)));
        assert_eq!(Limit::parse("2"), Ok(Limit::Bytes(2)));
        assert_eq!(Limit::parse("512MiB"), Ok(Limit::Bytes(512 << 20)));
        assert_eq!(Limit::parse("0.5GiB"), Ok(Limit::Bytes(512 << 20)));
        assert_eq!(Limit::Fraction(0.8).of(40 * GIB), 32 * GIB);
        assert_eq!(Limit::Bytes(7).of(40 * GIB), 7);
        assert!(Limit::parse("0").unwrap_err().contains("0 bytes"));
        assert!(Limit::parse("lots").is_err());
        // Refused by the command line, before anything starts.
        let argv = [
            "cuda-worker",
            "tcp://10.0.0.1:8786",
            "--device-memory-limit",
            "0",
        ];
        assert!(Args::try_parse_from(argv).is_err());
    }

    #[test]
    fn workers_stay_inside_the_cpus_this_process_was_given() {
        // Started under `taskset -c 8-15,64-71`: each worker keeps to its GPU's CPUs
        // among those, never the ones outside.
        let h = Host {
            cpus: Some((8..16).chain(64..72).collect()),
            ..host()
        };
        let plans = gpu_plans(&args(&[]), &gpus(), &h).unwrap();
        assert_eq!(plans[0].cpus, (8..16).collect::<Vec<_>>());
        assert_eq!(plans[1].cpus, (64..72).collect::<Vec<_>>());

        // None of GPU 1's CPUs is allowed: its worker is not pinned (pinning it there
        // would be refused, and the worker never started).
        let h = Host {
            cpus: Some((0..8).collect()),
            ..host()
        };
        let plans = gpu_plans(&args(&[]), &gpus(), &h).unwrap();
        assert_eq!(plans[0].cpus, (0..8).collect::<Vec<_>>());
        assert_eq!(plans[1].cpus, Vec::<usize>::new());
    }

    #[test]
    fn simulated_gpus_get_their_capacity_and_topology_without_cuda_settings() {
        let a = args(&["--sim-gpus", "2:64MiB", "--nvlink", "all", "--name", "t"]);
        let topology = Topology::parse("all", 2).unwrap();
        let plans = sim_plans(&a, 2, 64 << 20, &topology, &host()).unwrap();
        let expected = |i: &'static str, peer: &'static str| {
            let name = format!("t-gpu{i}");
            let device = format!("sim:{i}");
            let args: Vec<OsString> = [
                "worker",
                "tcp://10.0.0.1:8786",
                "--nthreads",
                "1",
                "--name",
                &name,
                "--memory-limit",
                "137438953472",
                "--device-memory-limit",
                "67108864",
                "--device",
                &device,
                "--nvlink-peers",
                peer,
            ]
            .map(OsString::from)
            .into();
            WorkerLaunch {
                label: device.clone(),
                args,
                env: Vec::new(),
                cpus: Vec::new(),
            }
        };
        assert_eq!(plans, vec![expected("0", "1"), expected("1", "0")]);

        let a = args(&["--sim-gpus", "2:64MiB", "--device-memory-limit", "0.5"]);
        let plans = sim_plans(&a, 2, 64 << 20, &Topology::none(), &host()).unwrap();
        assert_eq!(
            strs(&plans[1])[8..],
            ["--device-memory-limit", "33554432", "--device", "sim:1"]
        );
    }

    #[test]
    fn a_bad_resource_fails_planning_not_every_worker() {
        let err = gpu_plans(&args(&["--resources", "fast"]), &gpus(), &host()).unwrap_err();
        assert_eq!(err.to_string(), "resource \"fast\": expected NAME=AMOUNT");
    }

    #[test]
    fn cpu_lists_print_as_ranges() {
        assert_eq!(cpu_list(&[0, 1, 2, 3, 8, 10, 11]), "0-3,8,10-11");
        assert_eq!(cpu_list(&[5]), "5");
        assert_eq!(cpu_list(&[]), "");
    }
}
