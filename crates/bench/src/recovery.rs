//! `rask-bench recovery`: a scheduler killed (SIGKILL) in the middle of a graph of
//! independent tasks and started again on its port from its journal, beside the same
//! graph run with no kill. Reports how long the restore took (read the journal, put the
//! tasks back, rewrite it: the scheduler's own figure), how long until the workers were
//! back and tasks placed again, how long from the restart until the client had every
//! result, and how many tasks were computed after the restart against those left at the
//! kill.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rask::{Arg, Client, ClientOptions, Value};

use crate::procs::{scheduler_process_logged, worker_processes};
use crate::stats::{check, median};
use crate::RecoveryArgs;

/// One run's figures, in seconds but for the counts.
struct Trial {
    alone: f64,
    restore: f64,
    placing: f64,
    results: f64,
    left: u64,
    computed_after: u64,
    journal_bytes: u64,
}

pub(crate) fn run(a: RecoveryArgs) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("rask-bench-recovery-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut trials = Vec::new();
    for n in 0..a.runs {
        let t = trial(&dir, n, a.tasks, a.at)?;
        println!(
            "run {n}: graph alone {:.2} s; restore {:.3} s, placing again {:.3} s after it, every result {:.2} s after the restart; {} tasks left at the kill, {} computed after it; journal {} bytes",
            t.alone, t.restore, t.placing, t.results, t.left, t.computed_after, t.journal_bytes
        );
        trials.push(t);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let med = |f: fn(&Trial) -> f64| median(&mut trials.iter().map(f).collect::<Vec<_>>());
    println!();
    println!(
        "| {} independent tasks, killed at {:.0} % | median of {} |",
        a.tasks,
        a.at * 100.0,
        a.runs
    );
    println!("|---|---|");
    println!("| the graph alone, no kill (s) | {:.2} |", med(|t| t.alone));
    println!(
        "| restore: journal read, tasks put back, journal rewritten (s) | {:.3} |",
        med(|t| t.restore)
    );
    println!(
        "| workers back, tasks placed again, after the restore (s) | {:.3} |",
        med(|t| t.placing)
    );
    println!(
        "| restart to every result at the client (s) | {:.2} |",
        med(|t| t.results)
    );
    println!(
        "| tasks left at the kill / computed after it | {:.0} / {:.0} |",
        med(|t| t.left as f64),
        med(|t| t.computed_after as f64)
    );
    println!(
        "| journal (bytes) | {:.0} |",
        med(|t| t.journal_bytes as f64)
    );
    Ok(())
}

fn trial(dir: &Path, n: usize, tasks: usize, at: f64) -> Result<Trial> {
    let journal = dir.join(format!("journal-{n}"));
    let log = |what: &str| dir.join(format!("{what}-{n}.log"));
    let args = |port: &str| -> Vec<String> {
        [
            "--journal",
            &journal.display().to_string(),
            "--journal-fsync",
            "1",
            "--port",
            port,
            "--no-dashboard",
        ]
        .map(String::from)
        .to_vec()
    };
    let (sched, addr) = scheduler_process_logged(&args("0"), &log("first"))?;
    let port = addr.rsplit(':').next().context("a port")?.to_string();
    let _workers = worker_processes(&addr, &["a", "b"], &["--death-timeout", "60"])?;
    let client = Client::connect_with(
        &addr,
        ClientOptions {
            reconnect: Some(Duration::from_secs(60)),
            ..ClientOptions::default()
        },
    )?;
    client.wait_for_workers(2)?;
    // The graph alone, then again (new keys) with the kill.
    let alone = {
        let t = Instant::now();
        let fs = client.map("inc", (0..tasks as i64).map(|i| [Arg::from(i)]))?;
        let vals = client.gather(&fs)?;
        check(vals.len() == tasks, "the graph alone: every result")?;
        t.elapsed().as_secs_f64()
    };
    let fs = client.map(
        "add",
        (0..tasks as i64).map(|i| [Arg::from(i), Arg::from(1)]),
    )?;
    let base = client.scheduler_info()?.tasks_completed;
    let goal = base + (tasks as f64 * at) as u64;
    let done = loop {
        let d = client.scheduler_info()?.tasks_completed;
        if d >= goal {
            break d - base;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    drop(sched);
    let restart = Instant::now();
    let (_sched, _) = scheduler_process_logged(&args(&port), &log("second"))?;
    let vals = client.gather(&fs)?;
    let results = restart.elapsed().as_secs_f64();
    check(
        vals.iter()
            .enumerate()
            .all(|(i, v)| *v == Value::Int(i as i64 + 1)),
        "every result exact after the restart",
    )?;
    let computed_after = client.scheduler_info()?.tasks_completed;
    let second = std::fs::read_to_string(log("second"))?;
    Ok(Trial {
        alone,
        restore: seconds_in(&second, "restored from the journal", " in ")?,
        placing: seconds_in(&second, "placing tasks again", ", ")?,
        results,
        left: tasks as u64 - done,
        computed_after,
        journal_bytes: std::fs::metadata(&journal)?.len(),
    })
}

/// The seconds a log line containing `what` gives after `before` (`… in 0.123 s …`).
fn seconds_in(log: &str, what: &str, before: &str) -> Result<f64> {
    let Some(line) = log.lines().find(|l| l.contains(what)) else {
        bail!("the scheduler did not log {what:?}");
    };
    let rest = &line[line.find(what).expect("found") + what.len()..];
    rest.split(before)
        .skip(1)
        .find_map(|s| s.split(" s").next()?.trim().parse().ok())
        .with_context(|| format!("no seconds in {line:?}"))
}
