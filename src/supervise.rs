//! Worker processes started and watched by one process, as Dask's nanny does: `rask
//! worker --nworkers N` and `cuda-worker` (one per GPU). A worker that fails is started
//! again, up to a number of restarts (one closed cleanly by its scheduler is not); SIGTERM or SIGINT stops them all (SIGTERM, then
//! SIGKILL after a grace period); none outlives its supervisor, even one killed by
//! SIGKILL (they get SIGTERM from the kernel).

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// One worker process to run.
#[derive(Clone, Debug, PartialEq)]
pub struct Launch {
    /// The worker, in the supervisor's messages.
    pub label: String,
    /// The program's arguments.
    pub args: Vec<OsString>,
    /// Set in the worker's environment, on top of the supervisor's own.
    pub env: Vec<(String, String)>,
    /// The CPUs it runs on; empty: wherever the supervisor may.
    pub cpus: Vec<usize>,
}

/// Which program supervises: its messages are logged under its name (`rask.worker`,
/// `rask.cuda-worker`), as its start-up lines are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Supervisor {
    /// `rask worker --nworkers N`.
    Worker,
    /// `cuda-worker`.
    CudaWorker,
}

/// Logs at `$level` under the target of `$who`, a [`Supervisor`].
macro_rules! said {
    ($who:expr, $level:ident, $($t:tt)*) => {
        match $who {
            Supervisor::Worker => tracing::$level!(target: "rask.worker", $($t)*),
            Supervisor::CudaWorker => tracing::$level!(target: "rask.cuda-worker", $($t)*),
        }
    };
}

/// How long stopped workers may take to leave before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

fn start(program: &PathBuf, l: &Launch) -> std::io::Result<tokio::process::Child> {
    let mut cmd = std::process::Command::new(program);
    cmd.args(&l.args)
        .envs(l.env.iter().cloned())
        .stdin(std::process::Stdio::null());
    crate::affinity::pin(&mut cmd, &l.cpus);
    stop_with_supervisor(&mut cmd);
    tokio::process::Command::from(cmd).spawn()
}

/// Makes `cmd`'s process receive SIGTERM when this one ends, however it ends (SIGKILL
/// included): a worker never outlives its supervisor.
fn stop_with_supervisor(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    let supervisor = rustix::process::getpid();
    // SAFETY: prctl(PR_SET_PDEATHSIG) and getppid are async-signal-safe; nothing else
    // runs in the child between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM))
                .map_err(std::io::Error::from)?;
            // The supervisor may have ended before the signal was asked for.
            if rustix::process::getppid() != Some(supervisor) {
                return Err(std::io::Error::other("the supervisor has ended"));
            }
            Ok(())
        });
    }
}

/// Runs `program` once per launch and supervises them until SIGTERM or SIGINT, or until
/// every worker has been given up on (after `max_restarts` restarts each). `who` names
/// the supervisor in its messages.
pub fn run(
    who: Supervisor,
    program: PathBuf,
    launches: Vec<Launch>,
    max_restarts: u32,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let (exited_tx, mut exited) = tokio::sync::mpsc::unbounded_channel();
        let n = launches.len();
        let mut pids: HashMap<usize, u32> = HashMap::new();
        let mut restarts = vec![0u32; n];
        let spawn = |i: usize, pids: &mut HashMap<usize, u32>| -> std::io::Result<()> {
            let mut child = start(&program, &launches[i])?;
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
        let mut outcome: Result<ExitCode, Box<dyn std::error::Error>> = Ok(ExitCode::SUCCESS);
        for (i, l) in launches.iter().enumerate() {
            if let Err(e) = spawn(i, &mut pids) {
                outcome = Err(format!(
                    "starting {} for {}: {e}",
                    program.display(),
                    l.label
                )
                .into());
                break;
            }
            said!(who, info, "started the worker of {}", l.label);
        }
        while outcome.is_ok() {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                Some((i, status)) = exited.recv() => {
                    pids.remove(&i);
                    let label = &launches[i].label;
                    // One that finished cleanly was closed by its scheduler (retired, the
                    // cluster shut down): it is not started again.
                    if status.as_ref().is_ok_and(|s| s.success()) {
                        said!(who, info, "the worker of {label} finished");
                        if pids.is_empty() {
                            return Ok(ExitCode::SUCCESS);
                        }
                        continue;
                    }
                    let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                    if restarts[i] >= max_restarts {
                        said!(who, error, "the worker of {label} exited ({status}) after {} restarts; giving up on it", restarts[i]);
                        if pids.is_empty() {
                            return Ok(ExitCode::FAILURE);
                        }
                        continue;
                    }
                    restarts[i] += 1;
                    said!(who, warn, "the worker of {label} exited ({status}); restarting it");
                    if let Err(e) = spawn(i, &mut pids) {
                        said!(who, error, "cannot restart the worker of {label}: {e}; giving up on it");
                        if pids.is_empty() {
                            return Ok(ExitCode::FAILURE);
                        }
                    }
                }
            }
        }
        said!(who, info, "stopping {} workers", pids.len());
        let signal_all = |pids: &HashMap<usize, u32>, sig| {
            for pid in pids.values() {
                if let Some(p) = rustix::process::Pid::from_raw(*pid as i32) {
                    let _ = rustix::process::kill_process(p, sig);
                }
            }
        };
        signal_all(&pids, rustix::process::Signal::TERM);
        let deadline = tokio::time::Instant::now() + STOP_GRACE;
        while !pids.is_empty() {
            match tokio::time::timeout_at(deadline, exited.recv()).await {
                Ok(Some((i, _))) => {
                    pids.remove(&i);
                }
                _ => {
                    signal_all(&pids, rustix::process::Signal::KILL);
                    break;
                }
            }
        }
        outcome
    })
}
