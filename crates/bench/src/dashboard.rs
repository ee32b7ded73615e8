//! `rask-bench dashboard`: what an open dashboard page costs, and what a page costs with a
//! large graph. Rounds alternate a graph of N independent tasks computed with no page open
//! and with a headless Chromium showing `/status` (live, polling as a person's browser
//! does); then, with the N tasks held by the scheduler, each page is loaded for a few
//! seconds of its own time and its redraws counted and timed by the page itself.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use rask::{Arg, Client, LocalCluster};

use crate::stats::{check, median};
use crate::watch::{get, host_of};
use crate::DashboardArgs;

/// A headless Chromium showing one page until dropped (its process group is killed).
struct Page {
    child: std::process::Child,
    profile: std::path::PathBuf,
}

impl Page {
    fn open(url: &str) -> Result<Page> {
        let profile = std::env::temp_dir().join(format!(
            "rask-bench-page-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        let child = Command::new("chromium")
            .args(["--headless", "--no-sandbox", "--disable-gpu"])
            .arg("--remote-debugging-port=0")
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("starting chromium (Debian's chromium package)")?;
        Ok(Page { child, profile })
    }
}

impl Page {
    /// CPU seconds the browser's processes (its process group) used so far.
    fn cpu_seconds(&self) -> f64 {
        let group = self.child.id();
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return f64::NAN;
        };
        procs
            .flatten()
            .filter_map(|p| std::fs::read_to_string(p.path().join("stat")).ok())
            .filter_map(|stat| crate::procs::parse_stat(&stat))
            .filter(|&(g, _)| g == group)
            .map(|(_, s)| s)
            .sum()
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        // The browser and every process it started.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Requests the dashboard served so far (its `rask_dashboard_requests_total`, summed).
fn requests(host: &str) -> Result<f64> {
    let metrics = get(host, "/metrics")?;
    Ok(metrics
        .lines()
        .filter(|l| l.starts_with("rask_dashboard_requests_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// One page loaded with `budget_ms` of its own (virtual) time: the real seconds it took
/// (its scripts' work is real time: the virtual clock stands still while they run), the
/// redraws the page recorded on its body, and the size of what it drew (its DOM).
struct Load {
    seconds: f64,
    draws: f64,
    dom_bytes: usize,
}

fn load(url: &str, budget_ms: u64) -> Result<Load> {
    let t = Instant::now();
    let out = Command::new("timeout")
        .args([
            "120",
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
        ])
        .arg(format!("--virtual-time-budget={budget_ms}"))
        .args(["--dump-dom", url])
        .output()
        .context("running chromium")?;
    let seconds = t.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("chromium on {url}: {}", out.status);
    }
    let dom = String::from_utf8_lossy(&out.stdout);
    let attr = |name: &str| -> f64 {
        dom.split(&format!("{name}=\""))
            .nth(1)
            .and_then(|r| r.split('"').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    };
    Ok(Load {
        seconds,
        draws: attr("data-draws"),
        dom_bytes: dom.len(),
    })
}

/// N independent tasks, computed and gathered: tasks per second.
fn independent(client: &Client, n: usize) -> Result<(f64, Vec<rask::Future>)> {
    let t = Instant::now();
    let fs = client.map("inc", (0..n as i64).map(|i| [Arg::from(i)]))?;
    let vals = client.gather(&fs)?;
    let dt = t.elapsed().as_secs_f64();
    check(vals.len() == n, "gathered every result")?;
    Ok((n as f64 / dt, fs))
}

pub(crate) fn run(a: DashboardArgs) -> Result<()> {
    let cluster = LocalCluster::builder()
        .n_workers(2)
        .threads_per_worker(1)
        .processes(true)
        .dashboard("127.0.0.1:0")
        .build()?;
    let client = Client::connect(cluster.scheduler_address())?;
    client.wait_for_workers(2)?;
    let base = client
        .scheduler_info()?
        .dashboard
        .strip_suffix("/status")
        .context("the cluster serves no dashboard")?
        .to_string();
    let host = host_of(&base)?;
    let (mut closed, mut blank, mut open) = (Vec::new(), Vec::new(), Vec::new());
    let (mut asked, mut cpu_blank, mut cpu_open) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..a.runs.max(1) {
        let (rate, fs) = independent(&client, a.tasks)?;
        closed.push(rate);
        drop(fs);
        // The browser alone, on an empty page: what a browser costs this host.
        let page = Page::open("about:blank")?;
        let (rate, fs) = independent(&client, a.tasks)?;
        cpu_blank.push(page.cpu_seconds());
        drop(page);
        blank.push(rate);
        drop(fs);
        let page = Page::open(&format!("{base}/status"))?;
        let before = requests(&host)?;
        let (rate, fs) = independent(&client, a.tasks)?;
        let after = requests(&host)?;
        cpu_open.push(page.cpu_seconds());
        drop(page);
        open.push(rate);
        // The scrape of /metrics read before counts itself.
        asked.push(after - before - 1.0);
        drop(fs);
    }
    let n = a.tasks;
    let m = |v: &Vec<f64>| median(&mut v.clone());
    println!(
        "| {n} independent tasks, median of {} | tasks/s | browser CPU s per round |",
        closed.len()
    );
    println!("|---|---|---|");
    println!("| no browser | {:.0} | |", m(&closed));
    println!(
        "| headless Chromium on about:blank | {:.0} | {:.2} |",
        m(&blank),
        m(&cpu_blank)
    );
    println!(
        "| headless Chromium on /status ({} requests per round) | {:.0} | {:.2} |",
        m(&asked),
        m(&open),
        m(&cpu_open)
    );
    println!("rounds: no browser {closed:.0?}; about:blank {blank:.0?}; /status {open:.0?}");

    // The pages with N tasks held.
    let (_, held) = independent(&client, n)?;
    println!();
    println!(
        "| page, {n} tasks held, {} ms of its time | real seconds | redraws | DOM (KiB) |",
        a.budget_ms
    );
    println!("|---|---|---|---|");
    let blank = load("about:blank", a.budget_ms)?;
    println!(
        "| about:blank (the browser alone) | {:.2} | | |",
        blank.seconds
    );
    for page in ["status", "workers", "devices", "graph"] {
        let l = load(&format!("{base}/{page}"), a.budget_ms)?;
        check(l.draws >= 1.0, "the page drew")?;
        println!(
            "| /{page} | {:.2} | {} | {:.0} |",
            l.seconds,
            l.draws,
            l.dom_bytes as f64 / 1024.0
        );
    }
    drop(held);
    Ok(())
}
