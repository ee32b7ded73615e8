//! The benchmark harness. `rask-bench tasks` measures task throughput, round trips,
//! dependent graphs, cluster start and scheduler memory per task on a cluster of worker
//! processes over TCP, and runs the same workloads on Dask in the same invocation.

mod peers;
mod procs;
mod report;
mod stats;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use rask::{Arg, Client, Graph, LocalCluster};
use serde_json::json;

use peers::{run_dask, run_dask_array, run_p2p_peers};
use procs::{
    echo_server, heap_in_use, rss_of, scheduler_process, sibling, tcp_ping_pong_us, KillOnDrop,
};
use report::{report, write_json};
use stats::{check, mean_std, median, percentile, rate_figure, Figure};

#[derive(Parser)]
#[command(name = "rask-bench", about = "Rask's benchmark harness")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Task throughput, round trips, dependent graphs, cluster start, scheduler memory.
    Tasks(TasksArgs),
    /// Worker-to-worker transfer bandwidth, with memcpy, UCX, iperf3 and Dask beside it.
    P2p(P2pArgs),
    /// Blocked-array operations, with dask.array and numpy beside them.
    Array(ArrayArgs),
    /// Echo bytes on a loopback port (the peer process of the round-trip floor).
    #[command(hide = true)]
    EchoServer,
}

/// How every benchmark reports.
#[derive(clap::Args)]
struct Output {
    /// Write every figure as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Print Markdown tables.
    #[arg(long)]
    markdown: bool,
    /// Skip the peers measured beside Rask (Dask, numpy, memcpy, UCX, iperf3).
    #[arg(long)]
    no_peer: bool,
}

#[derive(clap::Args)]
struct TasksArgs {
    /// Use a running scheduler (with its workers) instead of starting a cluster.
    #[arg(long)]
    scheduler: Option<String>,
    /// Runs per workload (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    #[command(flatten)]
    out: Output,
    /// Run Dask's 100,000-task workload too (slow: minutes).
    #[arg(long)]
    peer_full: bool,
    /// Tasks in the scheduler-memory graph and futures in the client-memory workload.
    #[arg(long, default_value_t = 1_000_000)]
    memory_tasks: usize,
    /// Only these workloads (comma-separated names, e.g. round_trip_1000,chain_5000).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

#[derive(clap::Args)]
struct ArrayArgs {
    /// transpose_sum: (x + x.T).sum(); dot: (x @ x.T).sum(); sum: x.sum();
    /// elementwise: (x * 2 + x * x - x / 3).sum().
    #[arg(long, default_value = "dot")]
    op: String,
    /// The array is size × size.
    #[arg(long, default_value_t = 4096)]
    size: u64,
    /// Chunks are chunk × chunk.
    #[arg(long, default_value_t = 1024)]
    chunk: u64,
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Use this scheduler's workers instead of starting 2 worker processes × 1 thread.
    #[arg(long)]
    scheduler: Option<String>,
    /// Timed runs after a warm-up; medians reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    #[command(flatten)]
    out: Output,
    /// Run on N simulated GPUs (N[:MEMORY], one worker process each) instead of 2 CPU
    /// workers; chunk tasks then ask for a GPU.
    #[arg(long)]
    sim_gpus: Option<String>,
}

#[derive(clap::Args)]
struct P2pArgs {
    /// Use this scheduler's workers instead of starting a cluster: two of them must
    /// offer the resources `on-a` and `on-b` (`rask worker … --resources on-a=1`); their
    /// own transport settings apply and `--transport` only labels the figures.
    #[arg(long)]
    scheduler: Option<String>,
    /// Transport between the workers: inproc (two workers in this process), shm, tcp
    /// (worker processes), or all.
    #[arg(long, default_value = "all")]
    transport: String,
    /// Payload sizes, e.g. 1MiB,16MiB,256MiB,1GiB.
    #[arg(long, default_value = "1MiB,16MiB,256MiB,1GiB", value_delimiter = ',')]
    sizes: Vec<String>,
    /// Timed transfers per size (after one warm-up); medians and quartiles reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    #[command(flatten)]
    out: Output,
    /// Instead of the transports: N simulated GPUs (N[:MEMORY], one worker process each),
    /// their device-to-device bandwidth matrix, and spill throughput.
    #[arg(long)]
    sim_gpus: Option<String>,
    /// NVLink topology of the simulated GPUs: none, all, pairs or links like 0-1,2-3.
    #[arg(long, default_value = "pairs")]
    nvlink: String,
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Tasks(a) => tasks(a),
        Cmd::P2p(a) => p2p(a),
        Cmd::Array(a) => array_bench(a),
        Cmd::EchoServer => echo_server(),
    }
}

fn tasks(a: TasksArgs) -> Result<()> {
    let runs = a.runs.max(1);
    let mut figures = Vec::new();
    let want = |w: &str| a.only.is_empty() || a.only.iter().any(|o| o == w);

    // (d) cluster start to ready: 2 worker processes.
    if want("cluster_start") {
        let mut starts = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            let cluster = LocalCluster::builder()
                .n_workers(2)
                .processes(true)
                .build()?;
            starts.push(t.elapsed().as_secs_f64());
            drop(cluster);
        }
        figures.push(rate_figure("cluster_start", "seconds", starts));
    }

    let (_cluster, client) = match &a.scheduler {
        Some(addr) => (None, Client::connect(addr)?),
        None => {
            let cluster = LocalCluster::builder()
                .n_workers(2)
                .threads_per_worker(1)
                .processes(true)
                .build()?;
            let addr = cluster.scheduler_address().to_string();
            (Some(cluster), Client::connect(&addr)?)
        }
    };
    client.wait_for_workers(1)?;

    // (a) independent trivial tasks.
    for (name, n) in [
        ("independent_10000", 10_000usize),
        ("independent_100000", 100_000),
    ] {
        if !want(name) {
            continue;
        }
        let mut rates = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            let fs = client.map("inc", (0..n as i64).map(|i| [Arg::from(i)]))?;
            let vals = client.gather(&fs)?;
            let dt = t.elapsed().as_secs_f64();
            check(vals.len() == n, "gathered every result")?;
            drop(fs);
            rates.push(n as f64 / dt);
        }
        figures.push(rate_figure(name, "tasks_per_s", rates));
    }

    // (b) sequential round trips, and the floor measured now: two blocking TCP ping-pongs.
    if want("round_trip_1000") {
        let mut lat = Vec::new();
        for _ in 0..runs {
            for i in 0..1000 {
                let t = Instant::now();
                let v: i64 = client.submit("inc", [Arg::from(i)])?.result_as()?;
                lat.push(t.elapsed().as_secs_f64() * 1e6);
                check(v == i + 1, "round trip result")?;
            }
        }
        let floor_us = 2.0 * tcp_ping_pong_us(2000, true)?;
        let same_core_us = 2.0 * tcp_ping_pong_us(2000, false)?;
        let med = median(&mut lat);
        figures.push(Figure {
            workload: "round_trip_1000",
            fields: vec![
                ("median_us", med),
                ("p99_us", percentile(&mut lat, 0.99)),
                ("floor_us", floor_us),
                ("floor_unpinned_us", same_core_us),
                ("ratio_to_floor", med / floor_us),
            ],
            runs: vec![med],
        });
    }

    // (c) a chain of 5,000 and a binary tree over 10,000 leaves, each one graph.
    if want("chain_5000") {
        let mut rates = Vec::new();
        for run in 0..runs {
            let mut g = Graph::new();
            let p = format!("chain{run}");
            g.value(&format!("{p}-0"), 0);
            for i in 1..5000 {
                g.task(
                    &format!("{p}-{i}"),
                    "inc",
                    [Arg::key(format!("{p}-{}", i - 1))],
                );
            }
            let t = Instant::now();
            let out = client.get(&g, &[&format!("{p}-4999")])?;
            rates.push(5000.0 / t.elapsed().as_secs_f64());
            check(out == vec![rask::Value::Int(4999)], "chain result")?;
        }
        figures.push(rate_figure("chain_5000", "tasks_per_s", rates));
    }
    if want("tree_10000") {
        let mut rates = Vec::new();
        let mut ntasks = 0;
        for run in 0..runs {
            let (g, root, n) = tree_graph(&format!("tree{run}"), 10_000);
            ntasks = n;
            let t = Instant::now();
            let out = client.get(&g, &[&root])?;
            rates.push(n as f64 / t.elapsed().as_secs_f64());
            check(
                out == vec![rask::Value::Int((0..10_000i64).sum())],
                "tree result",
            )?;
        }
        let mut f = rate_figure("tree_10000", "tasks_per_s", rates);
        f.fields.push(("tasks", ntasks as f64));
        figures.push(f);
    }

    // Client memory per held future: a million results held, each a small value that came
    // with its news (the heap this process holds, counted by the allocator, so memory
    // freed after the submission is not counted).
    if want("client_memory_1000000") {
        let n = a.memory_tasks;
        let per_future = client_memory_per_future(n)?;
        figures.push(Figure {
            workload: "client_memory_1000000",
            fields: vec![("bytes_per_future", per_future), ("futures", n as f64)],
            runs: vec![per_future],
        });
    }

    // Scheduler memory per task: a scheduler process holding a graph it cannot run yet.
    if want("scheduler_memory_1000000") {
        let per_task = scheduler_memory_per_task(a.memory_tasks)?;
        figures.push(Figure {
            workload: "scheduler_memory_1000000",
            fields: vec![
                ("bytes_per_task", per_task),
                ("tasks", a.memory_tasks as f64),
            ],
            runs: vec![per_task],
        });
    }

    let peer = if a.out.no_peer {
        None
    } else {
        run_dask(runs, a.peer_full)
            .map_err(|e| eprintln!("dask: {e:#}"))
            .ok()
    };
    report(&figures, peer.as_ref(), a.out.markdown);
    if let Some(path) = &a.out.json {
        write_json(path, &figures, peer.as_ref())?;
    }
    Ok(())
}

/// A binary tree of `add`s over `leaves` identity leaves; returns (graph, root, tasks).
fn tree_graph(prefix: &str, leaves: usize) -> (Graph, String, usize) {
    let mut g = Graph::new();
    let mut level: Vec<String> = (0..leaves)
        .map(|i| {
            let k = format!("{prefix}-l{i}");
            g.value(&k, i as i64);
            k
        })
        .collect();
    let mut n = leaves;
    let mut depth = 0;
    while level.len() > 1 {
        depth += 1;
        level = level
            .chunks(2)
            .enumerate()
            .map(|(i, pair)| {
                let k = format!("{prefix}-d{depth}-{i}");
                g.task(&k, "add", pair.iter().map(|p| Arg::key(p.clone())));
                n += 1;
                k
            })
            .collect();
    }
    (g, level.pop().expect("a root"), n)
}

/// Starts `rask scheduler` in its own process, submits `n` tasks it cannot run (no
/// workers), and reports its resident-memory growth per task.
fn scheduler_memory_per_task(n: usize) -> Result<f64> {
    let (mut proc, addr) = scheduler_process()?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let client = Client::connect(&addr)?;
    let pid = proc.0.id();
    let before = rss_of(pid)?;
    // Root tasks in chunks, like a client submitting a large graph in pieces.
    let mut held = Vec::new();
    let chunk = 100_000;
    let mut submitted = 0;
    while submitted < n {
        let m = chunk.min(n - submitted);
        held.extend(client.map(
            "inc",
            (submitted..submitted + m).map(|i| [Arg::from(i as i64)]),
        )?);
        submitted += m;
    }
    loop {
        let info = client.scheduler_info()?;
        let known: u64 = info.tasks_by_state.iter().map(|(_, c)| c).sum();
        if known as usize >= n {
            break;
        }
        if Instant::now() > deadline {
            bail!("the scheduler did not take the graph");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let after = rss_of(pid)?;
    drop(held);
    drop(client);
    let _ = proc.0.kill();
    Ok((after.saturating_sub(before)) as f64 / n as f64)
}

/// Heap this process (the client alone: scheduler and workers run in processes of their
/// own) holds per future once `n` results are in memory, each a small value that came
/// with its news.
fn client_memory_per_future(n: usize) -> Result<f64> {
    let (_scheduler, addr) = scheduler_process()?;
    let bin = sibling("rask")?;
    let _workers: Vec<KillOnDrop> = ["w1", "w2"]
        .into_iter()
        .map(|name| {
            Command::new(&bin)
                .args(["worker", &addr, "--nthreads", "1", "--name", name])
                .env("RASK_LOG", "error")
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map(KillOnDrop)
                .with_context(|| format!("starting {}", bin.display()))
        })
        .collect::<Result<_>>()?;
    let client = Client::connect(&addr)?;
    client.wait_for_workers(2)?;
    let before = heap_in_use();
    let fs = client.map("inc", (0..n as i64).map(|i| [Arg::from(i)]))?;
    let vals = client.gather(&fs)?;
    check(
        vals.len() == n && vals[n - 1] == rask::Value::Int(n as i64),
        "gathered every result",
    )?;
    drop(vals);
    let per_future = heap_in_use().saturating_sub(before) as f64 / n as f64;
    check(client.held_keys() == n, "every key held")?;
    Ok(per_future)
}

fn parse_size(s: &str) -> Result<u64> {
    rask_device::sim::parse_bytes(s).map_err(anyhow::Error::msg)
}

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
fn p2p_cluster(transport: &str) -> Result<(Vec<KillOnDrop>, String)> {
    let bin = sibling("rask")?;
    let (sched, addr) = scheduler_process()?;
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

/// Transfers on one cluster: a fresh payload made on worker a each run, read on b.
fn p2p_transport(
    transport: &str,
    scheduler: Option<&str>,
    sizes: &[u64],
    runs: usize,
) -> Result<Vec<P2pRow>> {
    let (mut procs, addr) = match scheduler {
        Some(s) => (Vec::new(), s.to_string()),
        None => p2p_cluster(transport)?,
    };
    // Workers stop before the scheduler, so they do not report its loss.
    procs.reverse();
    let client = Client::connect(&addr)?;
    client.wait_for_workers(2)?;
    let mut rows = Vec::new();
    for &size in sizes {
        let mut row = P2pRow {
            transport: transport.into(),
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

fn p2p(a: P2pArgs) -> Result<()> {
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
    let mut rows = Vec::new();
    for t in &transports {
        eprintln!("transport {t}…");
        rows.extend(p2p_transport(t, a.scheduler.as_deref(), &sizes, a.runs)?);
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

/// The device-to-device matrix of simulated GPUs (one worker process each), and how fast
/// values spill to the host and to disk, with memcpy and a plain file write beside them.
fn p2p_sim(a: &P2pArgs, spec: &str) -> Result<()> {
    use rask_device::sim::{SimGpus, Topology};
    let (n, memory) = SimGpus::parse_spec(spec).map_err(anyhow::Error::msg)?;
    let topology = Topology::parse(&a.nvlink, n).map_err(anyhow::Error::msg)?;
    let sizes: Vec<u64> = a
        .sizes
        .iter()
        .map(|s| parse_size(s))
        .collect::<Result<_>>()?;
    if let Some(&big) = sizes.iter().find(|&&s| s > memory) {
        bail!(
            "size {} does not fit a simulated GPU of {}",
            human(big),
            human(memory)
        );
    }
    let bin = sibling("rask")?;
    let (sched, addr) = scheduler_process()?;
    let mut procs = Vec::new();
    for i in 0..n {
        let device = rask::cli::WorkerDevice::Sim { index: i, memory };
        let mut cmd = Command::new(&bin);
        cmd.args(["worker", &addr, "--nthreads", "1", "--quiet"])
            .args(["--name", &format!("gpu{i}")])
            .args(rask::cli::device_args(&device, &topology.peers(i, n)))
            .env("RASK_LOG", "error")
            .stdin(Stdio::null())
            .stderr(Stdio::null());
        procs.push(KillOnDrop(cmd.spawn()?));
    }
    procs.push(sched);
    let client = Client::connect(&addr)?;
    client.wait_for_workers(n as usize)?;
    println!(
        "Rask p2p benchmark, {n} simulated GPUs ({} each, one worker process each, NVLink: {}); SIMULATED: device memory is host memory shared between processes, so these are same-host shared-memory figures labelled by the simulated link",
        human(memory),
        topology.label()
    );
    let mut json_rows = Vec::new();
    for &size in &sizes {
        println!(
            "\n{} — GB/s, median of {} runs (row: source GPU, column: destination; link in brackets)",
            human(size),
            a.runs
        );
        let header: Vec<String> = (0..n).map(|j| format!("sim:{j}")).collect();
        if a.out.markdown {
            println!("| from \\ to | {} |", header.join(" | "));
            println!(
                "|---|{}",
                header.iter().map(|_| "---:|").collect::<String>()
            );
        }
        for i in 0..n {
            let mut cells = Vec::new();
            for j in 0..n {
                if i == j {
                    cells.push("—".to_string());
                    continue;
                }
                let (src, dst) = (format!("sim:{i}"), format!("sim:{j}"));
                let tag = format!("p-{size}-{i}-{j}");
                let mut bws: Vec<f64> = transfer_runs(&client, size, a.runs, &src, &dst, &tag)?
                    .into_iter()
                    .map(|(transfer, _)| size as f64 / transfer / 1e9)
                    .collect();
                let (p25, p50, p75) = (
                    percentile(&mut bws, 0.25),
                    median(&mut bws),
                    percentile(&mut bws, 0.75),
                );
                let link = if topology.nvlink(i, j) {
                    "nvlink"
                } else {
                    "pcie"
                };
                cells.push(format!("{p50:.1} [{link}]"));
                json_rows.push(json!({"size": size, "from": i, "to": j, "link": link,
                    "gb_per_s_p25": p25, "gb_per_s_p50": p50, "gb_per_s_p75": p75,
                    "gb_per_s_runs": bws}));
            }
            if a.out.markdown {
                println!("| sim:{i} | {} |", cells.join(" | "));
            } else {
                println!(
                    "sim:{i}  {}",
                    cells.iter().map(|c| format!("{c:>16}")).collect::<String>()
                );
            }
        }
    }
    // The workers report what they received with their heartbeats (every second): wait
    // until two reports a heartbeat apart agree.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last: Vec<(String, Vec<(String, u64)>)> = Vec::new();
    let received = loop {
        let mut r: Vec<_> = client
            .scheduler_info()?
            .workers
            .into_iter()
            .map(|w| (w.device, w.received))
            .collect();
        r.sort();
        if (r == last && r.iter().all(|(_, v)| !v.is_empty())) || Instant::now() > deadline {
            break r;
        }
        last = r;
        std::thread::sleep(Duration::from_millis(1200));
    };
    println!("\nbytes received by link, as the workers count them: {received:?}");
    drop(client);
    drop(procs);

    // Spilling, measured on the mechanism the worker uses, next to its ceilings.
    let size = *sizes.iter().max().expect("at least one size");
    let spill = spill_throughput(size, a.runs)?;
    println!(
        "\nspill throughput, {} (GB/s, median of {} runs):",
        human(size),
        a.runs
    );
    for (name, v) in &spill {
        println!("  {name:<40} {v:>8.2}");
    }
    if let Some(path) = &a.out.json {
        let doc = json!({
            "config": {"sim_gpus": n, "memory": memory, "nvlink": topology.describe(),
                       "sizes": sizes, "runs": a.runs, "simulated": true},
            "matrix": json_rows,
            "spill": spill.iter().map(|(k, v)| json!({"what": k, "gb_per_s": v})).collect::<Vec<_>>(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)?;
    }
    Ok(())
}

/// GB/s of: device → host spill (a copy of a simulated GPU's buffer into the worker's
/// reused host pool, as the worker spills; warm after the first run), host → disk spill (written, mapped, unlinked), memcpy into a
/// buffer already touched, and a plain write of a file of the same size.
fn spill_throughput(size: u64, runs: usize) -> Result<Vec<(&'static str, f64)>> {
    use rask_device::sim::{SimGpus, Topology};
    use rask_device::{DType, Device, Devices};
    let devices =
        Devices::host(u64::MAX).with_sim(SimGpus::new(1, size.max(1 << 20), Topology::none()));
    let data = vec![7u8; size as usize];
    let on_gpu = devices.from_host(Device::Sim(0), DType::U8, &data)?;
    let gpu_bytes = on_gpu
        .host_bytes()
        .context("simulated memory is host-visible")?;
    let dir = std::env::temp_dir().join(format!("rask-bench-spill-{}", std::process::id()));
    let mut out: Vec<(&'static str, Vec<f64>)> = vec![
        ("device -> host (spill into the host pool)", vec![]),
        ("host -> disk (spill: write, map, unlink)", vec![]),
        ("memcpy into touched memory (ceiling)", vec![]),
        ("plain file write, no fsync (ceiling)", vec![]),
    ];
    let mut target = vec![1u8; size as usize];
    let pool = rask_device::arena::Arena::new(rask_device::arena::DEFAULT_SEGMENT);
    for run in 0..=runs {
        let t = Instant::now();
        let host = pool.copy_in(gpu_bytes)?;
        let a = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let disk = rask_device::spill::to_file(&dir, "bench.bin", &host)?;
        let b = t.elapsed().as_secs_f64();
        drop(disk);
        let t = Instant::now();
        target.copy_from_slice(gpu_bytes);
        let c = t.elapsed().as_secs_f64();
        let path = dir.join("plain.bin");
        let t = Instant::now();
        std::fs::write(&path, &host)?;
        let d = t.elapsed().as_secs_f64();
        std::fs::remove_file(&path)?;
        check(target[size as usize / 2] == 7, "memcpy result")?;
        if run > 0 {
            for (i, secs) in [a, b, c, d].into_iter().enumerate() {
                out[i].1.push(size as f64 / secs / 1e9);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(out
        .into_iter()
        .map(|(k, mut v)| (k, median(&mut v)))
        .collect())
}

fn array_expr(op: &str, x: &rask::array::Array) -> Result<rask::array::Array> {
    Ok(match op {
        "transpose_sum" => (x + &x.t()?).sum(8),
        "dot" => x.matmul(&x.t()?)?.sum(8),
        "sum" => x.sum(8),
        "elementwise" => (&(&(x * 2.0) + &(x * x)) - &(x / 3.0)).sum(8),
        other => bail!("unknown op {other:?}: transpose_sum, dot, sum or elementwise"),
    })
}

fn array_bench(a: ArrayArgs) -> Result<()> {
    use rask::array::{Array, DType};
    let dtype: DType = a.dtype.parse().map_err(anyhow::Error::msg)?;
    let n = a.size;
    let flops = match a.op.as_str() {
        "dot" => 2.0 * (n as f64).powi(3),
        "transpose_sum" => 2.0 * (n * n) as f64,
        "sum" => (n * n) as f64,
        _ => 6.0 * (n * n) as f64,
    };
    let (_cluster, client) = match (&a.scheduler, &a.sim_gpus) {
        (Some(addr), _) => (None, Client::connect(addr)?),
        (None, Some(spec)) => {
            let (n, memory) =
                rask_device::sim::SimGpus::parse_spec(spec).map_err(anyhow::Error::msg)?;
            let cluster = rask::LocalCUDACluster::sim(n, memory).build()?;
            let addr = cluster.scheduler_address().to_string();
            (Some(cluster), Client::connect(&addr)?)
        }
        (None, None) => {
            let cluster = LocalCluster::builder()
                .n_workers(2)
                .threads_per_worker(1)
                .processes(true)
                .build()?;
            let addr = cluster.scheduler_address().to_string();
            (Some(cluster), Client::connect(&addr)?)
        }
    };
    let workers = match &a.sim_gpus {
        Some(spec) => format!("{spec} simulated GPUs, one worker process each (SIMULATED: CPU ops on shared host memory)"),
        None => "2 worker processes × 1 thread".to_string(),
    };
    let mut times = Vec::new();
    let mut value = 0.0;
    for run in 0..=a.runs {
        let x = Array::random_uniform(
            &[n, n],
            &[a.chunk, a.chunk],
            dtype,
            1 + run as u64,
            0.0,
            1.0,
        )?;
        let e = array_expr(&a.op, &x)?;
        let t = Instant::now();
        value = match dtype {
            DType::F32 => client
                .compute_array::<f32>(&e)?
                .iter()
                .next()
                .map_or(0.0, |v| *v as f64),
            _ => client
                .compute_array::<f64>(&e)?
                .iter()
                .next()
                .copied()
                .unwrap_or(0.0),
        };
        if run > 0 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    let med = median(&mut times.clone());
    let (_, std) = mean_std(&times);
    let peer = if a.out.no_peer {
        None
    } else {
        run_dask_array(&a)
            .map_err(|e| eprintln!("peers: {e:#}"))
            .ok()
    };
    let p = |k: &str| peer.as_ref().and_then(|j| j[k].as_f64());
    println!(
        "Rask array benchmark: {} on a {n}×{n} {} array in {}×{} chunks, {workers}, {} run(s) after a warm-up",
        a.op, a.dtype, a.chunk, a.chunk, a.runs
    );
    let rows = [
        ("rask", Some(med), Some(std)),
        (
            "dask.array + numpy (2 processes × 1 thread)",
            p("dask_seconds"),
            None,
        ),
        ("numpy, one process", p("numpy_seconds"), None),
    ];
    if a.out.markdown {
        println!("| system | wall (s) | GFLOP/s | rask advantage |");
        println!("|---|---:|---:|---:|");
    }
    for (name, secs, sd) in rows {
        let Some(secs) = secs else { continue };
        let gf = flops / secs / 1e9;
        let adv = secs / med;
        let wall = match sd {
            Some(sd) => format!("{secs:.3} ± {sd:.3}"),
            None => format!("{secs:.3}"),
        };
        if a.out.markdown {
            println!("| {name} | {wall} | {gf:.1} | {adv:.2}× |");
        } else {
            println!("{name:<46} {wall:>16} s {gf:>8.1} GFLOP/s  rask {adv:.2}×");
        }
    }
    if let Some(j) = &peer {
        println!(
            "numpy {} with {}, threads: {}",
            j["numpy_version"].as_str().unwrap_or("?"),
            j["blas"].as_str().unwrap_or("?"),
            j["numpy_threads"].as_str().unwrap_or("?")
        );
    }
    println!("rask result {value:.6e}");
    if let Some(path) = &a.out.json {
        let doc = json!({"config": {"op": a.op, "size": n, "chunk": a.chunk, "dtype": a.dtype,
                                    "runs": a.runs, "workers": workers},
                         "rask": {"seconds_median": med, "seconds_std": std, "runs": times,
                                  "gflop_per_s": flops / med / 1e9},
                         "peers": peer});
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)?;
    }
    Ok(())
}
