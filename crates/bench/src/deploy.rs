//! `rask-bench deploy`: how fast the cluster managers react, beside Dask's in the same
//! invocation (benches/compare/dask_deploy.py).
//!
//! - adapt: a LocalCluster of worker processes adapting between 0 and `--maximum`
//!   receives a burst of `--tasks` tasks sleeping `--seconds` each: from submitting to
//!   `--maximum` workers joined, to every result, and from the last result back to 0.
//! - slurm (needs root, slurm-wlm and munge): a single-node Slurm is started for the
//!   run (benches/compare/slurm_local.sh); SlurmCluster (1 core, 1 GiB, 1 process per job)
//!   from scale(2) to 2 workers joined, and from scale(0) to 0 workers.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rask::adapt::Scalable;
use rask::{Arg, Client, LocalCluster};
use serde_json::Value as Json;

use crate::procs::{repo_root, sibling};
use crate::stats::median;
use crate::DeployArgs;

fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !cond()? {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// One adaptive burst: (to max, all results, back to zero), in seconds.
fn adapt_run(a: &DeployArgs) -> Result<[f64; 3]> {
    let cluster = LocalCluster::builder()
        .n_workers(0)
        .processes(true)
        .worker_binary(sibling("rask")?)
        .build()?;
    let adaptive = cluster.adapt(0, a.maximum)?;
    let client = Client::connect(&adaptive.cluster().address())?;
    let workers = |c: &Client| -> Result<usize> { Ok(c.scheduler_info()?.workers.len()) };
    let t0 = Instant::now();
    let futures = client.map(
        "sleep",
        (0..a.tasks).map(|i| [Arg::from(a.seconds), Arg::from(i as i64)]),
    )?;
    wait_until("the cluster to grow", Duration::from_secs(120), || {
        Ok(workers(&client)? >= a.maximum)
    })?;
    let up = t0.elapsed().as_secs_f64();
    for f in &futures {
        f.wait()?;
    }
    let done = t0.elapsed().as_secs_f64();
    drop(futures);
    let t1 = Instant::now();
    wait_until("the cluster to shrink", Duration::from_secs(120), || {
        Ok(workers(&client)? == 0)
    })?;
    let down = t1.elapsed().as_secs_f64();
    drop(client);
    drop(adaptive.stop());
    Ok([up, done, down])
}

/// One Slurm round: (scale(2) to 2 joined, scale(0) to none), in seconds.
fn slurm_run(conf: &str, logs: &std::path::Path) -> Result<[f64; 2]> {
    let mut job = rask::slurm::SlurmJob::new("", 1, 1 << 30);
    job.name = "rask-bench".into();
    job.rask_bin = sibling("rask")?.display().to_string();
    job.log_directory = Some(logs.display().to_string());
    job.walltime = "00:10:00".parse().map_err(anyhow::Error::msg)?;
    let mut cluster = rask::slurm::SlurmCluster::builder(job)
        .scheduler_host("127.0.0.1")
        .env("SLURM_CONF", conf)
        .build()?;
    let client = cluster.client()?;
    let t0 = Instant::now();
    cluster.scale(2)?;
    cluster.wait_for_workers(2, Duration::from_secs(120))?;
    let up = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    cluster.scale(0)?;
    wait_until(
        "the jobs' workers to leave",
        Duration::from_secs(120),
        || Ok(client.scheduler_info()?.workers.is_empty()),
    )?;
    let down = t1.elapsed().as_secs_f64();
    cluster.close()?;
    Ok([up, down])
}

/// A single-node Slurm for the run; stopped when dropped.
struct LocalSlurm {
    dir: std::path::PathBuf,
    conf: String,
}

impl LocalSlurm {
    fn start() -> Result<LocalSlurm> {
        let dir = std::env::temp_dir().join(format!("rask-bench-slurm-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let out = Command::new("bash")
            .arg(repo_root().join("benches/compare/slurm_local.sh"))
            .arg("start")
            .arg(&dir)
            .output()
            .context("running slurm_local.sh")?;
        if !out.status.success() {
            bail!(
                "cannot start a local Slurm: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let conf = String::from_utf8(out.stdout)?.trim().to_string();
        // A first job through the fresh daemons before anything is timed: Slurm's first
        // scheduling after start is slower than the ones after.
        let warm = Command::new("sbatch")
            .args(["--wait", "--parsable", "-o", "/dev/null", "--wrap", "true"])
            .env("SLURM_CONF", &conf)
            .status()
            .context("running sbatch")?;
        if !warm.success() {
            bail!("a first job through the local Slurm failed");
        }
        Ok(LocalSlurm { dir, conf })
    }
}

impl Drop for LocalSlurm {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo_root().join("benches/compare/slurm_local.sh"))
            .arg("stop")
            .arg(&self.dir)
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn dask(a: &DeployArgs, slurm: Option<&LocalSlurm>) -> Result<Json> {
    let py = crate::peers::compare_python()?;
    let out = std::env::temp_dir().join(format!("rask-bench-deploy-{}.json", std::process::id()));
    let mut cmd = Command::new(py);
    cmd.arg(repo_root().join("benches/compare/dask_deploy.py"))
        .args(["--runs", &a.runs.to_string()])
        .args(["--tasks", &a.tasks.to_string()])
        .args(["--seconds", &a.seconds.to_string()])
        .args(["--maximum", &a.maximum.to_string()])
        .arg("--json")
        .arg(&out);
    if let Some(s) = slurm {
        cmd.args(["--slurm-conf", &s.conf])
            .arg("--log-dir")
            .arg(s.dir.join("logs"));
    }
    eprintln!("running the same on Dask…");
    if !cmd.status().context("running dask_deploy.py")?.success() {
        bail!("dask_deploy.py failed");
    }
    let doc: Json = serde_json::from_str(&std::fs::read_to_string(&out)?)?;
    let _ = std::fs::remove_file(&out);
    Ok(doc)
}

fn med(runs: &[Vec<f64>], i: usize) -> f64 {
    let mut v: Vec<f64> = runs.iter().map(|r| r[i]).collect();
    median(&mut v)
}

fn peer_med(doc: &Json, section: &str, field: &str) -> Option<f64> {
    let mut v: Vec<f64> = doc[section]
        .as_array()?
        .iter()
        .filter_map(|r| r[field].as_f64())
        .collect();
    (!v.is_empty()).then(|| median(&mut v))
}

pub(crate) fn run(a: DeployArgs) -> Result<()> {
    let mut adapt = Vec::new();
    for _ in 0..a.runs.max(1) {
        adapt.push(adapt_run(&a)?.to_vec());
    }
    let slurm = if a.no_slurm {
        None
    } else {
        match LocalSlurm::start() {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("no Slurm figures: {e}");
                None
            }
        }
    };
    let mut slurm_runs = Vec::new();
    if let Some(s) = &slurm {
        for _ in 0..a.runs.max(1) {
            slurm_runs.push(slurm_run(&s.conf, &s.dir.join("logs"))?.to_vec());
        }
    }
    let peer = if a.out.no_peer {
        None
    } else {
        Some(dask(&a, slurm.as_ref())?)
    };
    drop(slurm);
    let p = |s: &str, f: &str| {
        peer.as_ref()
            .and_then(|d| peer_med(d, s, f))
            .map_or("—".to_string(), |v| format!("{v:.2}"))
    };
    println!(
        "adapt: 0 → {} workers (processes) for {} tasks of {} s; Slurm: single node, 1 core and 1 GiB per job; medians of {} runs",
        a.maximum, a.tasks, a.seconds, a.runs
    );
    println!("| step | Rask (s) | Dask (s) |");
    println!("|---|---:|---:|");
    println!(
        "| adapt: burst submitted → {} workers | {:.2} | {} |",
        a.maximum,
        med(&adapt, 0),
        p("adapt", "to_max_s")
    );
    println!(
        "| adapt: burst submitted → every result | {:.2} | {} |",
        med(&adapt, 1),
        p("adapt", "all_results_s")
    );
    println!(
        "| adapt: last result → 0 workers | {:.2} | {} |",
        med(&adapt, 2),
        p("adapt", "back_to_zero_s")
    );
    if !slurm_runs.is_empty() {
        println!(
            "| SlurmCluster: scale(2) → 2 workers joined | {:.2} | {} |",
            med(&slurm_runs, 0),
            p("slurm", "scale_2_s")
        );
        println!(
            "| SlurmCluster: scale(0) → 0 workers | {:.2} | {} |",
            med(&slurm_runs, 1),
            p("slurm", "scale_0_s")
        );
    }
    if let Some(path) = &a.out.json {
        let doc = serde_json::json!({
            "adapt": adapt,
            "slurm": slurm_runs,
            "peer": peer,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)?;
    }
    Ok(())
}
