//! `rask-bench p2p`: worker-to-worker transfer bandwidth over each transport (inproc, shm,
//! tcp), with memcpy, UCX, iperf3 and Dask from the same invocation beside it; with
//! `--sim-gpus`, the simulated GPUs' matrix of `sim` instead. The timing of one transfer
//! is `transfer_runs`, shared by both.

mod sim;

use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use rask::{Arg, Client, Graph};
use serde_json::json;

use crate::peers::run_p2p_peers;
use crate::procs::{scheduler_process_with, sibling, KillOnDrop};
use crate::stats::{check, mean_std, median, percentile};
use crate::tls::BenchCerts;
use crate::P2pArgs;
use sim::p2p_sim;

/// Bytes of a size given as `16MiB`, `1GiB` or a plain number.
fn parse_size(s: &str) -> Result<u64> {
    rask_device::sim::parse_bytes(s).map_err(anyhow::Error::msg)
}

/// A size as the figures print it: `16 MiB` when it is a whole number of a unit.
fn human(n: u64) -> String {
    match n {
        n if n >= 1 << 30 && n % (1 << 30) == 0 => format!("{} GiB", n >> 30),
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} B"),
    }
}

/// Starts `rask scheduler` and two workers named a and b, each offering a resource of its
/// own name so tasks can be pinned to it: worker processes for tcp and shm, threads of this
/// process for inproc.
fn p2p_cluster(transport: &str, tls: Option<&BenchCerts>) -> Result<(Vec<KillOnDrop>, String)> {
    let bin = sibling("rask")?;
    let tls_args = tls.map(BenchCerts::args).unwrap_or_default();
    let (sched, addr) = scheduler_process_with(&tls_args)?;
    let mut procs = vec![sched];
    for name in ["a", "b"] {
        if transport == "inproc" {
            let args = rask::cli::WorkerArgs {
                name: Some(name.into()),
                resources: vec![format!("on-{name}=1")],
                quiet: true,
                transport: Some("auto".parse().map_err(anyhow::Error::msg)?),
                ..rask::cli::WorkerArgs::new(addr.clone())
            };
            // Ends when the scheduler goes away.
            std::thread::spawn(move || {
                let _ = rask::cli::run_worker(args, rask::Registry::builtin());
            });
            continue;
        }
        let w = Command::new(&bin)
            .args([
                "worker",
                &addr,
                "--nthreads",
                "1",
                "--quiet",
                "--name",
                name,
            ])
            .args(["--transport", transport, "--resources"])
            .arg(format!("on-{name}=1"))
            .args(&tls_args)
            .env("RASK_LOG", "error")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        procs.push(KillOnDrop(w));
    }
    Ok((procs, addr))
}

/// One transport's figures for one size.
struct P2pRow {
    transport: String,
    size: u64,
    /// GB/s of each timed run.
    bws: Vec<f64>,
    /// Transfer time of each run, µs.
    transfer_us: Vec<f64>,
    /// Wall clock of the consuming task on the receiver, s.
    walls: Vec<f64>,
}

/// `runs` timed transfers (after one warm-up: connections, first mapping of the arena) of
/// a fresh `size`-byte payload made where the resource `src` is and read where `dst` is.
/// Returns each run's (transfer, wall) in seconds: wall is the submit-to-result time of a
/// task reading the payload on `dst`; transfer is wall less the same task's time on
/// `src`, which costs everything but the transfer. `tag` names the run's keys.
fn transfer_runs(
    client: &Client,
    size: u64,
    runs: usize,
    src: &str,
    dst: &str,
    tag: &str,
) -> Result<Vec<(f64, f64)>> {
    // Time of a `len` task reading `x` where `resource` is, from submit to result.
    let time_len = |x: &rask::Future, resource: &str, key: String| -> Result<f64> {
        let mut g = Graph::new();
        g.task(&key, "len", [Arg::from(x)])
            .resources(&[(resource, 1.0)]);
        let t = Instant::now();
        let out = client.get(&g, &[&key])?;
        let dt = t.elapsed().as_secs_f64();
        check(out.len() == 1, "len result")?;
        Ok(dt)
    };
    let mut times = Vec::with_capacity(runs);
    for run in 0..=runs {
        let mut g = Graph::new();
        let key = format!("{tag}-{run}");
        g.task(&key, "bytes", [Arg::from(size as i64), Arg::from(7)])
            .resources(&[(src, 1.0)]);
        let x = client
            .compute(&g, &[&key])?
            .pop()
            .context("payload future")?;
        x.wait()?;
        let local = time_len(&x, src, format!("len-{key}-a"))?;
        let remote = time_len(&x, dst, format!("len-{key}-b"))?;
        if run > 0 {
            times.push(((remote - local).max(1e-6), remote));
        }
    }
    Ok(times)
}

/// Transfers on one cluster: a fresh payload made on worker a each run, read on b. With
/// `tls`, every process of the cluster (and the client) uses TLS, and the rows are
/// labelled `TRANSPORT+tls`.
fn p2p_transport(
    transport: &str,
    scheduler: Option<&str>,
    sizes: &[u64],
    runs: usize,
    tls: Option<&BenchCerts>,
) -> Result<Vec<P2pRow>> {
    let (mut procs, addr) = match scheduler {
        Some(s) => (Vec::new(), s.to_string()),
        None => p2p_cluster(transport, tls)?,
    };
    // Workers stop before the scheduler, so they do not report its loss.
    procs.reverse();
    let client = match tls {
        Some(certs) => certs.client(&addr, rask::ClientOptions::default())?,
        None => Client::connect(&addr)?,
    };
    client.wait_for_workers(2)?;
    let label = match tls {
        Some(_) => format!("{transport}+tls"),
        None => transport.to_string(),
    };
    let mut rows = Vec::new();
    for &size in sizes {
        let mut row = P2pRow {
            transport: label.clone(),
            size,
            bws: Vec::new(),
            transfer_us: Vec::new(),
            walls: Vec::new(),
        };
        let tag = format!("payload-{size}");
        for (transfer, remote) in transfer_runs(&client, size, runs, "on-a", "on-b", &tag)? {
            row.walls.push(remote);
            row.transfer_us.push(transfer * 1e6);
            row.bws.push(size as f64 / transfer / 1e9);
        }
        rows.push(row);
    }
    Ok(rows)
}

/// Measures every chosen transport, or the simulated GPUs, and prints the figures with
/// the peers' beside them.
pub(crate) fn run(a: P2pArgs) -> Result<()> {
    if let Some(spec) = &a.sim_gpus {
        return p2p_sim(&a, spec);
    }
    let transports: Vec<&str> = match a.transport.as_str() {
        "all" if a.scheduler.is_some() => vec!["external"],
        "all" => vec!["inproc", "shm", "tcp"],
        t @ ("inproc" | "shm" | "tcp") => vec![t],
        t => bail!("unknown transport {t:?}: inproc, shm, tcp or all"),
    };
    let sizes: Vec<u64> = a
        .sizes
        .iter()
        .map(|s| parse_size(s))
        .collect::<Result<_>>()?;
    if a.tls && (a.scheduler.is_some() || !transports.contains(&"tcp")) {
        bail!("--tls measures tcp on clusters of its own: give --transport tcp or all, and no --scheduler");
    }
    let certs = a.tls.then(BenchCerts::new).transpose()?;
    let mut rows = Vec::new();
    for t in &transports {
        eprintln!("transport {t}…");
        rows.extend(p2p_transport(
            t,
            a.scheduler.as_deref(),
            &sizes,
            a.runs,
            None,
        )?);
        if *t == "tcp" {
            if let Some(certs) = &certs {
                eprintln!("transport tcp+tls…");
                rows.extend(p2p_transport(t, None, &sizes, a.runs, Some(certs))?);
            }
        }
    }
    let peers = if a.out.no_peer {
        None
    } else {
        run_p2p_peers(&a.sizes, a.runs)
            .map_err(|e| eprintln!("peers: {e:#}"))
            .ok()
    };
    let peer_at = |peer: &str, size: u64| -> Option<f64> {
        let p = peers.as_ref()?["peers"]
            .as_array()?
            .iter()
            .find(|p| p["peer"] == peer)?;
        let r = p["results"].as_array()?;
        r.iter()
            .find(|x| x["size"].as_u64() == Some(size) || x["size"].is_null())?["gb_per_s"]
            .as_f64()
    };
    println!(
        "Rask p2p benchmark: worker a -> worker b, {} timed run(s) per size after a warm-up",
        a.runs
    );
    println!("transfer = (submit-to-result time of a task reading the payload on b) - (the same on a); bandwidth = size / transfer; GB/s = 1e9 B/s");
    let cols = ["memcpy", "ucx_shm", "ucx_tcp", "iperf3", "dask"];
    if a.out.markdown {
        println!(
            "| transport | size | GB/s p25 | p50 | p75 | transfer µs p50 | wall (s) ± std | {} |",
            cols.join(" | ")
        );
        println!(
            "|---|---|---:|---:|---:|---:|---:|{}",
            cols.iter().map(|_| "---:|").collect::<String>()
        );
    } else {
        println!(
            "{:<9} {:<8} {:>9} {:>9} {:>9} {:>11} {:>18} {}",
            "transport",
            "size",
            "p25",
            "p50",
            "p75",
            "transfer_us",
            "wall ± std",
            cols.map(|c| format!("{c:>9}")).join(" ")
        );
    }
    let mut json_rows = Vec::new();
    for r in &rows {
        let mut bws = r.bws.clone();
        let (p25, p50, p75) = (
            percentile(&mut bws, 0.25),
            median(&mut bws),
            percentile(&mut bws, 0.75),
        );
        let t50 = median(&mut r.transfer_us.clone());
        let (mean, std) = mean_std(&r.walls);
        let hmean = r.bws.len() as f64 / r.bws.iter().map(|b| 1.0 / b).sum::<f64>();
        let peers: Vec<String> = cols
            .iter()
            .map(|c| peer_at(c, r.size).map_or("-".into(), |v| format!("{v:.2}")))
            .collect();
        if a.out.markdown {
            println!(
                "| {} | {} | {p25:.2} | {p50:.2} | {p75:.2} | {t50:.0} | {mean:.4} ± {std:.4} | {} |",
                r.transport,
                human(r.size),
                peers.join(" | ")
            );
        } else {
            println!(
                "{:<9} {:<8} {p25:>9.2} {p50:>9.2} {p75:>9.2} {t50:>11.0} {:>18} {}",
                r.transport,
                human(r.size),
                format!("{mean:.4} ± {std:.4}"),
                peers
                    .iter()
                    .map(|p| format!("{p:>9}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
        json_rows.push(json!({
            "transport": r.transport, "size": r.size, "sender": "a", "receiver": "b",
            "gb_per_s_p25": p25, "gb_per_s_p50": p50, "gb_per_s_p75": p75,
            "gb_per_s_hmean": hmean, "transfer_us_p50": t50,
            "wall_s_mean": mean, "wall_s_std": std,
            "gb_per_s_runs": r.bws, "transfer_us_runs": r.transfer_us,
        }));
    }
    if let Some(path) = &a.out.json {
        let doc = json!({
            "config": {"transports": transports, "sizes": sizes, "runs": a.runs,
                       "workers": "2 x 1 thread", "op": "bytes on a, len on b"},
            "rask": json_rows,
            "peers": peers,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)?;
    }
    Ok(())
}
