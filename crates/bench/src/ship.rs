//! `rask-bench ship`: the cost of shipping a program to a cluster of stock workers. A
//! `rask scheduler` and stock `rask worker`s start with an empty program cache; this
//! program connects and waits for the first result of one of its typed ops, which needs
//! it sent (client → scheduler → one worker per host) and started as workers. Then the
//! same with the executable kept by the scheduler and cached on the host, and on a new
//! cluster whose host has it cached.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rask::Client;

use crate::procs::{scheduler_process, sibling, KillOnDrop};
use crate::ShipArgs;

/// One measured start.
struct Start {
    case: &'static str,
    seconds: f64,
    uploaded: u64,
    downloaded: u64,
}

pub(crate) fn run(a: ShipArgs) -> Result<()> {
    let cache = std::env::temp_dir().join(format!("rask-bench-ship-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let size = std::fs::metadata("/proc/self/exe")?.len();
    let mut starts = Vec::new();
    for _ in 0..a.runs.max(1) {
        let _ = std::fs::remove_dir_all(&cache);
        let cluster = Cluster::start(a.workers, &cache)?;
        starts.push(cluster.first_result("not cached anywhere", size)?);
        starts.push(cluster.first_result("kept by the scheduler, cached on the host", size)?);
        drop(cluster);
        let cluster = Cluster::start(a.workers, &cache)?;
        starts.push(cluster.first_result("new cluster, cached on the host", size)?);
    }
    let _ = std::fs::remove_dir_all(&cache);
    println!(
        "program: this executable, {:.1} MB; {} stock workers on this host",
        size as f64 / 1e6,
        a.workers
    );
    if a.out.markdown {
        println!("| case | connect → first result (s) | bytes uploaded | bytes sent to workers |");
        println!("|---|---:|---:|---:|");
    }
    for s in &starts {
        if a.out.markdown {
            println!(
                "| {} | {:.3} | {} | {} |",
                s.case, s.seconds, s.uploaded, s.downloaded
            );
        } else {
            println!(
                "{:<45} {:>8.3} s  uploaded {:>11} B  sent to workers {:>11} B",
                s.case, s.seconds, s.uploaded, s.downloaded
            );
        }
    }
    Ok(())
}

/// A scheduler and stock workers sharing one program cache.
struct Cluster {
    addr: String,
    _scheduler: KillOnDrop,
    _workers: Vec<KillOnDrop>,
}

impl Cluster {
    fn start(n: usize, cache: &std::path::Path) -> Result<Cluster> {
        let (scheduler, addr) = scheduler_process()?;
        let rask = sibling("rask")?;
        let mut workers = Vec::new();
        for i in 0..n {
            let child = Command::new(&rask)
                .args([
                    "worker",
                    &addr,
                    "--nthreads",
                    "1",
                    "--name",
                    &format!("w{i}"),
                ])
                .env("RASK_PROGRAM_CACHE", cache)
                .env("RASK_LOG", "error")
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("starting {}", rask.display()))?;
            workers.push(KillOnDrop(child));
        }
        // A client without typed ops waits for the workers (outside the timing).
        let plain = Client::connect_with_registry(&addr, &rask::Registry::builtin())?;
        plain.wait_for_workers(n)?;
        Ok(Cluster {
            addr,
            _scheduler: scheduler,
            _workers: workers,
        })
    }

    /// Connects as this program and times its first typed result; then waits until the
    /// program's workers have stopped.
    fn first_result(&self, case: &'static str, size: u64) -> Result<Start> {
        let plain = Client::connect_with_registry(&self.addr, &rask::Registry::builtin())?;
        let before = shipped(&plain)?;
        let t = Instant::now();
        let client = Client::connect(&self.addr)?;
        let v = client.submit(crate::typed::inc, (41,))?.result()?;
        let seconds = t.elapsed().as_secs_f64();
        if v != 42 {
            bail!("the typed op answered {v}");
        }
        drop(client);
        let after = shipped(&plain)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while plain
            .scheduler_info()?
            .workers
            .iter()
            .any(|w| w.name.contains('/'))
        {
            if Instant::now() > deadline {
                bail!("the program's workers did not stop");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Start {
            case,
            seconds,
            uploaded: (after.0 - before.0) * size,
            downloaded: (after.1 - before.1) * size,
        })
    }
}

/// Uploads and downloads of programs so far.
fn shipped(c: &Client) -> Result<(u64, u64)> {
    let info = c.scheduler_info()?;
    Ok(info.programs.iter().fold((0, 0), |(u, d), p| {
        (u + p.uploads as u64, d + p.downloads as u64)
    }))
}
