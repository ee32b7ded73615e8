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

/// From the text of `/proc/PID/stat`: the process's group, and the CPU seconds (user and
/// system) it has used so far.
pub(crate) fn parse_stat(stat: &str) -> Option<(u32, f64)> {
    // After the command's closing parenthesis: state, ppid, pgrp, … utime (12th field
    // after it), stime (13th), in clock ticks.
    let (_, rest) = stat.rsplit_once(')')?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let group = f.get(2)?.parse().ok()?;
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some((
        group,
        ticks as f64 / rustix::param::clock_ticks_per_second() as f64,
    ))
}

/// The CPU seconds a process of this host has used so far, to the nanosecond: the sum over
/// its threads of the time each ran (`/proc/PID/task/TID/schedstat`; threads that ended
/// are not counted). `None` if it cannot be read.
pub(crate) fn cpu_seconds_of(pid: u32) -> Option<f64> {
    let mut ns = 0u64;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        // A thread that ended since the listing has no file left: it is skipped.
        if let Ok(stat) = std::fs::read_to_string(t.path().join("schedstat")) {
            ns += stat.split_whitespace().next()?.parse::<u64>().ok()?;
        }
    }
    Some(ns as f64 / 1e9)
}

/// The processes of a cluster, all on this host: this one (the client, and the scheduler
/// and workers when they run in it), the scheduler's and the workers' own. The CPU time
/// they use over a workload, per task, is steadier than the workload's rate: on a host
/// with fewer cores than processes, the rate is that time shared out, plus whatever else
/// the host runs meanwhile.
pub(crate) struct ClusterCpu {
    /// This process; the scheduler's (unless it runs in this one); the workers' (those
    /// not in either).
    groups: [Vec<u32>; 3],
}

impl ClusterCpu {
    /// The cluster `client` is connected to; `None` when a process of it runs on another
    /// host (its time cannot be read here).
    pub(crate) fn of(client: &rask::Client) -> Result<Option<Self>> {
        let info = client.scheduler_info()?;
        let here = rask_transport::host_id();
        let mut groups = [vec![std::process::id()], Vec::new(), Vec::new()];
        let others = std::iter::once((1, &info.host_id, info.pid))
            .chain(info.workers.iter().map(|w| (2, &w.host_id, w.pid)));
        for (group, host, pid) in others {
            if *host != here {
                return Ok(None);
            }
            if !groups.iter().any(|g| g.contains(&pid)) {
                groups[group].push(pid);
            }
        }
        Ok(Some(ClusterCpu { groups }))
    }

    /// The CPU seconds used so far by this process, the scheduler's and the workers'.
    pub(crate) fn seconds(&self) -> Option<[f64; 3]> {
        let mut out = [0.0; 3];
        for (o, g) in out.iter_mut().zip(&self.groups) {
            *o = g.iter().map(|&p| cpu_seconds_of(p)).sum::<Option<f64>>()?;
        }
        Some(out)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_gives_the_group_and_the_cpu_time() {
        // A command with spaces and a parenthesis, as `comm` may be.
        let stat = "4242 (a (b) c) S 1 777 777 0 -1 4194560 10 0 0 0 250 50 0 0 20 0 1 0";
        let ticks = rustix::param::clock_ticks_per_second() as f64;
        assert_eq!(parse_stat(stat), Some((777, 300.0 / ticks)));
        assert_eq!(parse_stat("4242 (x) S 1"), None);
        assert_eq!(parse_stat("no parenthesis"), None);
    }

    #[test]
    fn this_process_cpu_time_grows_as_it_works() {
        let before = cpu_seconds_of(std::process::id()).expect("readable");
        let mut x = 0u64;
        let deadline = Instant::now() + Duration::from_secs(5);
        // Work until the time read has grown (a hang would fail at the deadline).
        loop {
            for i in 0..1_000_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            std::hint::black_box(x);
            if cpu_seconds_of(std::process::id()).expect("readable") > before {
                break;
            }
            assert!(Instant::now() < deadline, "no CPU time counted");
        }
        assert_eq!(cpu_seconds_of(u32::MAX), None);
    }
}
