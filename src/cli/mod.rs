//! The command lines of `rask scheduler` and `rask worker` (the worker's is shared by
//! custom worker binaries: a program with its own ops becomes a worker with
//! `rask::cli::worker_main(my_registry())`), and what every command uses: output lines,
//! device and resource options, the secret, logging, signals.
//!
//! - `logging`: the level, the format (`--log-format text|json`), no colour in files.
//! - `scheduler`: its options and running it.
//! - `worker_args`: the worker's options and the rules that read them.
//! - `worker`: running one worker or several, joining and joining again, programs'
//!   workers.
//! - `tls_args`: the TLS options shared by the commands.

use std::error::Error;
use std::io::Write;

use rask_proto::msg::Resource;
pub use rask_worker::WorkerDevice;

mod logging;
mod scheduler;
mod tls_args;
mod worker;
mod worker_args;
mod worker_metrics;

pub use logging::{init_logging, LogFormat};
pub use scheduler::{run_scheduler, run_scheduler_until_shutdown, SchedulerArgs};
pub use tls_args::{Needs, TlsArgs};
pub use worker::{program_launcher, read_scheduler_file, run_worker, worker_main};
pub use worker_args::{nworkers, staggered_lifetime, WorkerArgs};

/// Writes a line of a command's output to stdout. A reader that went away (`rask info |
/// head -1`) ends the program quietly, as it does any Unix tool; it never panics.
pub fn out_line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        let _ = writeln!(std::io::stderr(), "cannot write the output: {e}");
        std::process::exit(1);
    }
}

/// Writes a line to stderr (a command's error when logging is not set up, lines relayed
/// from other processes); a closed stderr is not a reason to stop a scheduler or a
/// worker. Start-up lines are log events instead (see [`init_logging`]).
pub fn err_line(args: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr().lock(), "{args}");
}

/// `println!` for command output: see [`out_line`].
#[macro_export]
macro_rules! outln {
    ($($t:tt)*) => { $crate::cli::out_line(format_args!($($t)*)) };
}

/// `eprintln!` that never panics: see [`err_line`].
#[macro_export]
macro_rules! errln {
    ($($t:tt)*) => { $crate::cli::err_line(format_args!($($t)*)) };
}

/// The `rask worker` options for `device` and its NVLink peers: the inverse of
/// [`parse_device`] plus `--nvlink-peers`.
pub fn device_args(device: &rask_worker::WorkerDevice, nvlink: &[u32]) -> Vec<String> {
    let mut args = match device {
        rask_worker::WorkerDevice::Host => return Vec::new(),
        rask_worker::WorkerDevice::Sim { memory, .. } => {
            vec!["--device-memory-limit".into(), memory.to_string()]
        }
        rask_worker::WorkerDevice::Cuda { memory_limit, .. } => memory_limit
            .map(|m| vec!["--device-memory-limit".into(), m.to_string()])
            .unwrap_or_default(),
    };
    args.extend(["--device".into(), device.label()]);
    if !nvlink.is_empty() {
        let peers: Vec<String> = nvlink.iter().map(u32::to_string).collect();
        args.extend(["--nvlink-peers".into(), peers.join(",")]);
    }
    args
}

/// Parses `--device` and `--device-memory-limit`: bytes, a fraction of the GPU's memory
/// (for a simulated GPU, of the default capacity), or `auto` (a simulated GPU's default
/// capacity, 80 % of a CUDA GPU's memory), read as everywhere else.
pub fn parse_device(
    device: &str,
    memory: Option<&str>,
) -> Result<rask_worker::WorkerDevice, Box<dyn Error>> {
    use rask_proto::units::MemoryLimit;
    let memory = memory
        .map(|m| {
            m.parse::<MemoryLimit>()
                .map_err(|e| format!("--device-memory-limit {e}"))
        })
        .transpose()?;
    let device = device.parse::<rask_proto::DeviceLoc>()?;
    let index = device.index;
    Ok(match device.kind {
        rask_proto::DeviceKind::Host => rask_worker::WorkerDevice::Host,
        rask_proto::DeviceKind::Sim => rask_worker::WorkerDevice::Sim {
            index,
            memory: memory
                .unwrap_or(MemoryLimit::Auto)
                .of(rask_device::sim::DEFAULT_SIM_MEMORY),
        },
        rask_proto::DeviceKind::Cuda => rask_worker::WorkerDevice::Cuda {
            index,
            memory_limit: match memory {
                None | Some(MemoryLimit::Auto) => None,
                Some(MemoryLimit::Bytes(b)) => Some(b),
                Some(f @ MemoryLimit::Fraction(_)) => {
                    Some(f.of(rask_device::cuda::total_memory(index)?))
                }
            },
        },
    })
}

/// A positive, finite number of seconds given for `option`.
pub fn seconds(option: &str, s: f64) -> Result<std::time::Duration, String> {
    if s.is_finite() && s > 0.0 {
        Ok(std::time::Duration::from_secs_f64(s))
    } else {
        Err(format!(
            "{option} {s}: expected a positive number of seconds"
        ))
    }
}

/// The secret from `--auth-file`, else from the environment.
pub fn secret(
    auth_file: Option<&std::path::Path>,
) -> Result<Option<rask_transport::Secret>, Box<dyn Error>> {
    Ok(match auth_file {
        Some(p) => Some(rask_transport::Secret::from_file(p)?),
        None => rask_transport::Secret::from_env()?,
    })
}

/// Parses `NAME=AMOUNT` resource specs (comma-separated or repeated).
pub fn parse_resources(specs: &[String]) -> Result<Vec<Resource>, String> {
    specs
        .iter()
        .flat_map(|s| s.split(','))
        .filter(|s| !s.is_empty())
        .map(|s| {
            let (name, amount) = s
                .split_once('=')
                .ok_or_else(|| format!("resource {s:?}: expected NAME=AMOUNT"))?;
            let amount: f64 = amount
                .parse()
                .map_err(|_| format!("resource {s:?}: bad amount"))?;
            Ok(Resource {
                name: name.trim().into(),
                amount,
            })
        })
        .collect()
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
#[cfg(test)]
mod tests;
