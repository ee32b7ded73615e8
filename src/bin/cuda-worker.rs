//! `cuda-worker SCHEDULER`: one `rask worker` per GPU of this machine, like dask-cuda's
//! `dask cuda worker`. GPUs are found through NVML; each worker process sees only its GPU
//! (`CUDA_VISIBLE_DEVICES` by UUID, `CUDA_DEVICE_ORDER=PCI_BUS_ID`) and runs on the CPUs
//! close to it. With `--sim-gpus N[:MEMORY]` the GPUs are simulated instead. The workers
//! are supervised: one that dies is restarted; SIGTERM or SIGINT stops them all.
//!
//! This program parses, plans, starts and supervises; what each worker is started with
//! is planned in `rask::gpu_process`, where it is tested.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Parser;
use rask::gpu_process::{plans, CudaWorkerArgs, Host};

/// The command line with what the configuration gives `[cuda-worker]`.
fn configured_args() -> Result<Vec<std::ffi::OsString>> {
    let files = rask::config::Files::load().map_err(anyhow::Error::msg)?;
    let env = |k: &str| std::env::var(k).ok();
    rask::config::apply(
        &<CudaWorkerArgs as clap::CommandFactory>::command(),
        &[],
        "cuda-worker",
        std::env::args_os().collect(),
        &files,
        &env,
    )
    .map_err(anyhow::Error::msg)
}

fn main() -> ExitCode {
    let argv = match configured_args() {
        Ok(a) => a,
        Err(e) => {
            rask::errln!("cuda-worker: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let args = CudaWorkerArgs::parse_from(argv);
    rask::cli::init_logging("info", args.log_format);
    match run(args) {
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

/// Plans the workers, starts them, and supervises them until SIGTERM or SIGINT, or until
/// every worker has been given up on.
fn run(a: CudaWorkerArgs) -> Result<ExitCode> {
    let plans = plans(&a, &Host::this())?;
    let bin = rask_binary()?;
    rask::supervise::run(
        rask::supervise::Supervisor::CudaWorker,
        bin,
        plans,
        a.max_restarts,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))
}
