//! The processes and probes around the benchmarks: `rask` programs started beside this
//! one (killed when dropped), memory probes of a process and of this one's heap, CPU
//! pinning, and the echo server with the loopback ping-pong that gives the round-trip
//! floor. It runs no workload and prints no figure.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::stats::median;

/// Pins the calling thread to `cpu`.
fn pin_to_cpu(cpu: usize) -> Result<()> {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set).with_context(|| format!("pinning to CPU {cpu}"))
}

/// Serves one connection: echoes each byte back. Prints its port first.
pub(crate) fn echo_server() -> Result<()> {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    println!("{}", listener.local_addr()?.port());
    std::io::stdout().flush()?;
    let (mut s, _) = listener.accept()?;
    s.set_nodelay(true)?;
    let mut b = [0u8; 1];
    while s.read(&mut b)? == 1 {
        s.write_all(&b)?;
    }
    Ok(())
}

/// Median round trip of a 1-byte blocking ping-pong over loopback TCP with another
/// process (this program's `echo-server`), as a client and a scheduler would do it. With
/// `cross_core`, the two ends are pinned to different CPUs (the case of two busy
/// processes); without, the kernel may put both on one core, which is much cheaper.
pub(crate) fn tcp_ping_pong_us(n: usize, cross_core: bool) -> Result<f64> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cross_core && cpus >= 2 {
        return std::thread::spawn(move || {
            pin_to_cpu(0)?;
            ping_pong(n, Some(1))
        })
        .join()
        .map_err(|_| anyhow::anyhow!("ping-pong thread panicked"))?;
    }
    ping_pong(n, None)
}

/// Median round trip of `n` 1-byte ping-pongs with an echo server of its own, pinned to
/// `server_cpu` if given.
fn ping_pong(n: usize, server_cpu: Option<usize>) -> Result<f64> {
    use std::io::{BufRead, Read, Write};
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("echo-server");
    if let Some(c) = server_cpu {
        rask::affinity::pin(&mut cmd, &[c]);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the echo server")?;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().context("echo stdout")?).read_line(&mut line)?;
    let port: u16 = line.trim().parse().context("echo server port")?;
    let _guard = KillOnDrop(child);
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port))?;
    c.set_nodelay(true)?;
    let mut b = [7u8; 1];
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        c.write_all(&b)?;
        c.read_exact(&mut b)?;
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok(median(&mut times))
}

/// Starts `rask scheduler` on a free port; returns it and its address.
pub(crate) fn scheduler_process() -> Result<(KillOnDrop, String)> {
    scheduler_process_with(&[])
}

/// [`scheduler_process`] with `extra` options (TLS; a `--port` of its own).
pub(crate) fn scheduler_process_with(extra: &[String]) -> Result<(KillOnDrop, String)> {
    spawn_scheduler(extra, None)
}

/// [`scheduler_process_with`], its log (at `info`) written to `log`.
pub(crate) fn scheduler_process_logged(
    extra: &[String],
    log: &Path,
) -> Result<(KillOnDrop, String)> {
    spawn_scheduler(extra, Some(log))
}

fn spawn_scheduler(extra: &[String], log: Option<&Path>) -> Result<(KillOnDrop, String)> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let bin = sibling("rask")?;
    let file = std::env::temp_dir().join(format!(
        "rask-bench-sched-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_file(&file);
    let mut cmd = Command::new(&bin);
    cmd.args(["scheduler", "--scheduler-file"]).arg(&file);
    if !extra.iter().any(|a| a == "--port") {
        cmd.args(["--port", "0"]);
    }
    cmd.args(extra).stdin(Stdio::null());
    match log {
        Some(path) => cmd
            .env("RASK_LOG", "info")
            .stderr(std::fs::File::create(path).context("the scheduler's log")?),
        None => cmd.env("RASK_LOG", "error").stderr(Stdio::null()),
    };
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let proc = KillOnDrop(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        let s = std::fs::read_to_string(&file).unwrap_or_default();
        if !s.trim().is_empty() {
            break s.trim().to_string();
        }
        if Instant::now() > deadline {
            bail!("the scheduler did not start");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let _ = std::fs::remove_file(&file);
    Ok((proc, addr))
}

/// `rask worker` processes named `names` for the scheduler at `addr`, one thread each,
/// with `extra` options.
pub(crate) fn worker_processes(
    addr: &str,
    names: &[&str],
    extra: &[&str],
) -> Result<Vec<KillOnDrop>> {
    let bin = sibling("rask")?;
    names
        .iter()
        .map(|name| {
            Command::new(&bin)
                .args(["worker", addr, "--nthreads", "1", "--name", name])
                .args(extra)
                .env("RASK_LOG", "error")
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map(KillOnDrop)
                .with_context(|| format!("starting {}", bin.display()))
        })
        .collect()
}

/// A child process, killed and reaped when dropped: a benchmark that fails half-way
/// leaves no scheduler or worker behind.
pub(crate) struct KillOnDrop(pub(crate) Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Resident memory of process `pid`, in bytes (`VmRSS`).
pub(crate) fn rss_of(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .context("VmRSS")?;
    Ok(kb * 1024)
}

/// The program `name` next to this one, built into the same directory.
pub(crate) fn sibling(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let p = exe.parent().context("exe dir")?.join(name);
    if !p.is_file() {
        bail!(
            "{} not found: build the workspace (cargo build --release)",
            p.display()
        );
    }
    Ok(p)
}

/// The repository, whose `benches/compare` holds the peers' scripts.
pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}
