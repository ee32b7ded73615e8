//! Programs' workers: a worker asked to run a program (a client's, for its typed ops)
//! starts a worker of that program beside itself, with the same resources, and supervises
//! it, as Dask's nanny does its worker.
//!
//! The executable is kept once per host in a cache directory, named by the program's code
//! identity; a file lock makes the workers of one host fetch it once between them. What is
//! cached or received is checked before it runs: its code identity must be the program's
//! (a corrupt or substituted file is refused, and a cached one fetched again), and it must
//! be an executable for this machine. A program worker that cannot start, or keeps failing,
//! is reported to the scheduler with its exit status and the end of its error output; it
//! is not restarted in a loop.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rask_proto::msg::{ProgramInfo, ToScheduler};
use rask_transport::Sender;
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

/// Builds the command that starts a worker of the program at the given path (with this
/// worker's scheduler, resources and secret): the worker's command line knows how.
pub type LaunchFn = dyn Fn(&Path) -> std::process::Command + Send + Sync;

/// How a worker starts programs' workers.
#[derive(Clone)]
pub struct ProgramLauncher {
    /// Where executables are kept, one file per program.
    pub cache: PathBuf,
    /// The command that starts a worker of a program.
    pub command: Arc<LaunchFn>,
}

impl std::fmt::Debug for ProgramLauncher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProgramLauncher")
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl ProgramLauncher {
    /// The cache of this user: `$RASK_PROGRAM_CACHE`, else `$XDG_CACHE_HOME/rask/programs`,
    /// else `~/.cache/rask/programs` (the temporary directory without a home).
    pub fn default_cache() -> PathBuf {
        if let Some(d) = std::env::var_os("RASK_PROGRAM_CACHE").filter(|d| !d.is_empty()) {
            return PathBuf::from(d);
        }
        std::env::var_os("XDG_CACHE_HOME")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
            .unwrap_or_else(std::env::temp_dir)
            .join("rask")
            .join("programs")
    }
}

/// This build's operating system and CPU, as programs announce theirs.
pub fn this_platform() -> String {
    format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH)
}

/// A part of an executable on its way.
pub(crate) struct Part {
    pub(crate) offset: u64,
    pub(crate) size: u64,
    pub(crate) bytes: Bytes,
}

/// A program this worker runs a worker of.
pub(crate) struct Running {
    /// Parts of the executable, while it is being fetched.
    pub(crate) parts: mpsc::UnboundedSender<Part>,
    /// Dropped to stop the program's worker.
    pub(crate) _stop: oneshot::Sender<()>,
}

/// Starts supervising a worker of `program`; ends by itself when the program worker
/// cannot be run (reported to the scheduler) or when stopped.
pub(crate) fn start(
    program: ProgramInfo,
    launcher: ProgramLauncher,
    to_scheduler: Sender<ToScheduler>,
    worker: String,
) -> Running {
    let (parts, parts_rx) = mpsc::unbounded_channel();
    let (stop, stop_rx) = oneshot::channel();
    let label = format!("{} ({:016x})", program.name, program.code);
    tokio::spawn(tracing::Instrument::in_current_span(async move {
        let code = program.code;
        let outcome = supervise(
            &program,
            &launcher,
            &to_scheduler,
            parts_rx,
            &worker,
            stop_rx,
        )
        .await;
        if let Err(message) = outcome {
            warn!(program = %label, "{message}");
            let _ = to_scheduler.send(ToScheduler::ProgramFailed { code, message });
        }
    }));
    Running { parts, _stop: stop }
}

/// Failures in a row after which a program's worker is given up on, and the window
/// they must fall in.
const MAX_FAILURES: usize = 3;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// How long a program's worker asked to stop may take to leave.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// How long a fetch may go without a part arriving.
const FETCH_IDLE: Duration = Duration::from_secs(120);

/// Starts `cmd`, trying again for a moment while the file is "busy": a thread of this
/// process that forked while the copy was being written holds a writable descriptor of it
/// until its own exec, and the kernel refuses to run a file open for writing.
async fn spawn_retrying_busy(
    cmd: &mut tokio::process::Command,
) -> std::io::Result<tokio::process::Child> {
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 20 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(5 * tries)).await;
            }
            other => return other,
        }
    }
}

async fn supervise(
    program: &ProgramInfo,
    launcher: &ProgramLauncher,
    to_scheduler: &Sender<ToScheduler>,
    parts: mpsc::UnboundedReceiver<Part>,
    worker: &str,
    mut stop: oneshot::Receiver<()>,
) -> Result<(), String> {
    let here = this_platform();
    if program.platform != here {
        return Err(format!(
            "the program is built for {}, this worker's host is {here}",
            program.platform
        ));
    }
    let path = tokio::select! {
        p = obtain(program, &launcher.cache, to_scheduler, parts) => p?,
        _ = &mut stop => return Ok(()),
    };
    let mut failures: VecDeque<Instant> = VecDeque::new();
    loop {
        let mut cmd = tokio::process::Command::from((launcher.command)(&path));
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = spawn_retrying_busy(&mut cmd)
            .await
            .map_err(|e| format!("cannot start {}: {e}", path.display()))?;
        info!(program = %program.name, pid = child.id().unwrap_or(0), "started a worker of the program");
        // Its standard input stays open while it should run: it stops when this worker
        // goes, however this worker goes.
        let stdin = child.stdin.take();
        let tail = tokio::spawn(stderr_tail(child.stderr.take(), program.name.clone()));
        let status = tokio::select! {
            s = child.wait() => s.map_err(|e| format!("waiting for the program's worker: {e}"))?,
            _ = &mut stop => {
                // Asked to stop: its input closes and it leaves the cluster; one that does
                // not within the grace period is killed.
                drop(stdin);
                if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_err() {
                    warn!(program = %program.name, "the program's worker did not stop within {} s: killing it", STOP_GRACE.as_secs());
                    let _ = child.kill().await;
                }
                return Ok(());
            }
        };
        let tail = tail.await.unwrap_or_default();
        if status.success() {
            info!(program = %program.name, "the program's worker stopped");
            return Ok(());
        }
        let why = format!(
            "its worker on {worker} exited with {status}{}",
            if tail.is_empty() {
                String::new()
            } else {
                format!(": {}", tail.trim_end())
            }
        );
        // The loader could not run it (a missing library, another machine): it will not
        // do better next time.
        if matches!(status.code(), Some(126 | 127)) {
            return Err(why);
        }
        let now = Instant::now();
        failures.push_back(now);
        while failures
            .front()
            .is_some_and(|t| now.duration_since(*t) > FAILURE_WINDOW)
        {
            failures.pop_front();
        }
        if failures.len() >= MAX_FAILURES {
            return Err(format!(
                "{why} ({MAX_FAILURES} failures within {} s; not restarted again)",
                FAILURE_WINDOW.as_secs()
            ));
        }
        warn!(program = %program.name, "{why}; starting it again");
        tokio::time::sleep(Duration::from_millis(500 * failures.len() as u64)).await;
    }
}

/// The end of a program worker's error output (its lines also go to this worker's log).
async fn stderr_tail(stderr: Option<tokio::process::ChildStderr>, name: String) -> String {
    const KEEP: usize = 2048;
    let Some(mut stderr) = stderr else {
        return String::new();
    };
    let mut tail: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = stderr.read(&mut buf).await {
        if n == 0 {
            break;
        }
        for line in String::from_utf8_lossy(&buf[..n]).lines() {
            if !line.trim().is_empty() {
                info!(program = %name, "{line}");
            }
        }
        tail.extend_from_slice(&buf[..n]);
        if tail.len() > KEEP {
            tail.drain(..tail.len() - KEEP);
        }
    }
    String::from_utf8_lossy(&tail).into_owned()
}

/// The program's executable on this host: the cached copy if it is the program, else
/// fetched from the scheduler (one worker of the host fetches; the others wait for it).
async fn obtain(
    program: &ProgramInfo,
    cache: &Path,
    to_scheduler: &Sender<ToScheduler>,
    mut parts: mpsc::UnboundedReceiver<Part>,
) -> Result<PathBuf, String> {
    std::fs::create_dir_all(cache)
        .map_err(|e| format!("cannot create the program cache {}: {e}", cache.display()))?;
    let path = cache.join(format!("{:016x}", program.code));
    let lock_path = cache.join(format!("{:016x}.lock", program.code));
    let lock = tokio::task::spawn_blocking(move || lock_file(&lock_path))
        .await
        .map_err(|e| e.to_string())??;
    if path.exists() {
        match check(&path, program.code) {
            Ok(()) => {
                info!(program = %program.name, path = %path.display(), "using the cached executable");
                return Ok(path);
            }
            Err(e) => {
                warn!(path = %path.display(), "the cached executable is not the program ({e}); fetching it again");
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    to_scheduler
        .send(ToScheduler::GetProgram { code: program.code })
        .map_err(|_| "the scheduler is gone".to_string())?;
    let tmp = cache.join(format!(".{:016x}.{}", program.code, std::process::id()));
    let result = receive(&tmp, program, &mut parts).await;
    let result = result.and_then(|()| {
        check(&tmp, program.code)
            .map_err(|e| format!("the executable received is not the program: {e}"))
    });
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, &path).map_err(|e| format!("cannot keep {}: {e}", path.display()))?;
    drop(lock);
    info!(program = %program.name, bytes = program.size, path = %path.display(), "received the program's executable");
    Ok(path)
}

/// Writes the parts of the executable to `tmp`, in order, as they come.
async fn receive(
    tmp: &Path,
    program: &ProgramInfo,
    parts: &mut mpsc::UnboundedReceiver<Part>,
) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o755)
        .open(tmp)
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    let mut file = Some(file);
    let mut got = 0u64;
    while got < program.size {
        let part = match tokio::time::timeout(FETCH_IDLE, parts.recv()).await {
            Ok(Some(p)) => p,
            Ok(None) => return Err("the fetch was cancelled".into()),
            Err(_) => {
                return Err(format!(
                    "no part of the executable for {} s ({got} of {} bytes received)",
                    FETCH_IDLE.as_secs(),
                    program.size
                ))
            }
        };
        if part.size != program.size || part.offset != got {
            return Err(format!(
                "a part of {} bytes at {} of {} where byte {got} of {} was due",
                part.bytes.len(),
                part.offset,
                part.size,
                program.size
            ));
        }
        if part.bytes.is_empty() {
            return Err(format!("an empty part at byte {got} of {}", program.size));
        }
        got += part.bytes.len() as u64;
        let last = got == program.size;
        // Written off the worker's loop: a part is megabytes.
        let mut f = file
            .take()
            .expect("invariant: the file is back after each part");
        let (f, r) = tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let r = f
                .write_all(&part.bytes)
                .and_then(|()| if last { f.sync_all() } else { Ok(()) });
            (f, r)
        })
        .await
        .map_err(|e| e.to_string())?;
        r.map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        file = Some(f);
    }
    Ok(())
}

/// Whether the file at `path` is the program `code` and runs on this machine.
fn check(path: &Path, code: u64) -> Result<(), String> {
    let machine = |p: &Path| -> Result<u16, String> {
        let mut head = [0u8; 20];
        let f = std::fs::File::open(p).map_err(|e| format!("{}: {e}", p.display()))?;
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut head, 0)
            .map_err(|e| format!("{}: {e}", p.display()))?;
        if &head[..4] != b"\x7fELF" {
            return Err(format!("{} is not an executable (ELF) file", p.display()));
        }
        Ok(u16::from_le_bytes([head[18], head[19]]))
    };
    let theirs = machine(path)?;
    let ours = machine(Path::new("/proc/self/exe"))?;
    if theirs != ours {
        return Err(format!(
            "it is built for another machine (ELF machine {theirs}, this host's is {ours})"
        ));
    }
    let id = rask_kernels::code_identity_of(path).map_err(|e| e.to_string())?;
    if id != code {
        return Err(format!(
            "its code is {id:016x}, the program's is {code:016x} (a corrupt or substituted file)"
        ));
    }
    Ok(())
}

/// Takes the cache's lock of one program (blocking until the worker holding it is done).
fn lock_file(path: &Path) -> Result<std::fs::File, String> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| format!("cannot lock {}: {e}", path.display()))?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_not_an_executable_is_refused_with_its_name() {
        let dir = std::env::temp_dir().join(format!("rask-programs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("garbage");
        std::fs::write(&p, b"#!/bin/sh\necho not a program\n").unwrap();
        let e = check(&p, 1).unwrap_err();
        assert!(
            e.contains("not an executable (ELF)") && e.contains("garbage"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_executable_of_other_code_is_refused_naming_both_codes() {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let id = rask_kernels::code_identity_of(&exe).unwrap();
        assert_eq!(check(&exe, id), Ok(()));
        let e = check(&exe, id ^ 1).unwrap_err();
        assert!(
            e.contains(&format!("{id:016x}")) && e.contains(&format!("{:016x}", id ^ 1)),
            "{e}"
        );
    }

    #[test]
    fn an_executable_for_another_machine_is_refused() {
        let dir = std::env::temp_dir().join(format!("rask-machine-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("other");
        let mut bytes = std::fs::read("/proc/self/exe").unwrap();
        // e_machine 183: AArch64 (or 62, x86-64, on an AArch64 host).
        let other: u16 = if u16::from_le_bytes([bytes[18], bytes[19]]) == 183 {
            62
        } else {
            183
        };
        bytes[18..20].copy_from_slice(&other.to_le_bytes());
        std::fs::write(&p, &bytes).unwrap();
        let e = check(&p, 1).unwrap_err();
        assert!(
            e.contains("another machine") && e.contains(&other.to_string()),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
