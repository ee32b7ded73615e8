//! `cuda-worker SCHEDULER`: one `rask worker` per GPU of this machine, like dask-cuda's
//! `dask cuda worker`. GPUs are found through NVML; each worker process sees only its GPU
//! (`CUDA_VISIBLE_DEVICES` by UUID, `CUDA_DEVICE_ORDER=PCI_BUS_ID`) and runs on the CPUs
//! close to it. With `--sim-gpus N[:MEMORY]` the GPUs are simulated instead. The workers
//! are supervised: one that dies is restarted; SIGTERM or SIGINT stops them all.
//!
//! This program parses, plans, starts and supervises; what each worker is started with
//! is planned in `rask::gpu_process`, where it is tested.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Parser;
use rask::gpu_process::{plans, CudaWorkerArgs, Host, WorkerLaunch};

fn main() -> ExitCode {
    match run(CudaWorkerArgs::parse()) {
        Ok(code) => code,
        Err(e) => {
            rask::errln!("cuda-worker: {e:#}");
            ExitCode::FAILURE
        }
    }
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

/// Starts the worker `p` plans, pinned to its CPUs.
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

/// Plans the workers, starts them, and supervises them until SIGTERM or SIGINT, or until
/// every worker has been given up on.
fn run(a: CudaWorkerArgs) -> Result<ExitCode> {
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
