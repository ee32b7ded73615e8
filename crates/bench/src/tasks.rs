//! `rask-bench tasks`: task throughput, round trips, dependent graphs, cluster start, and
//! the memory a client holds per future and a scheduler per task, on a cluster of worker
//! processes over TCP. It measures and collects figures; the report prints them.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rask::{Arg, Client, Graph, LocalCluster};

use crate::peers::run_dask;
use crate::procs::{
    rss_of, scheduler_process, scheduler_process_with, sibling, tcp_ping_pong_us, worker_processes,
    ClusterCpu, KillOnDrop,
};
use crate::report::{report, write_json};
use crate::stats::{check, median, percentile, rate_figure, Figure};
use crate::tls::BenchCerts;
use crate::TasksArgs;

/// Runs the chosen workloads, then prints their figures with Dask's beside them.
pub(crate) fn run(a: TasksArgs) -> Result<()> {
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
            let mut b = LocalCluster::builder()
                .n_workers(2)
                .threads_per_worker(1)
                .processes(true);
            if a.dashboard {
                b = b.dashboard("127.0.0.1:0");
            }
            let cluster = b.build()?;
            let addr = cluster.scheduler_address().to_string();
            (Some(cluster), Client::connect(&addr)?)
        }
    };
    client.wait_for_workers(1)?;
    let _polling = match a.dashboard {
        true => Some(crate::watch::Poller::start(
            &client.scheduler_info()?.dashboard,
        )?),
        false => None,
    };

    // The CPU time of the cluster's processes, where all run on this host.
    // Read once what came before has settled: an echo goes after the releases the client
    // sent and the frees the scheduler sent on, so the scheduler has done with the last
    // run's tasks (and the worker the echo passes, with theirs) when it returns.
    let cpu = ClusterCpu::of(&client)?;
    let cpu_now = || -> Result<Option<[f64; 3]>> {
        client.echo(1)?;
        Ok(cpu.as_ref().and_then(ClusterCpu::seconds))
    };
    // Microseconds per item, for this process, the scheduler's and the workers'.
    let cpu_us_per = |before: Option<[f64; 3]>, count: usize| -> Result<Option<[f64; 3]>> {
        let after = cpu_now()?;
        let per = |b: [f64; 3], a: [f64; 3]| [0, 1, 2].map(|i| (a[i] - b[i]) * 1e6 / count as f64);
        Ok(before.zip(after).map(|(b, a)| per(b, a)))
    };

    // (a) independent trivial tasks.
    for (name, n) in [
        ("independent_10000", 10_000usize),
        ("independent_100000", 100_000),
    ] {
        if !want(name) {
            continue;
        }
        let mut rates = Vec::new();
        let before = cpu_now()?;
        for _ in 0..runs {
            let t = Instant::now();
            let fs = client.map("inc", (0..n as i64).map(|i| [Arg::from(i)]))?;
            let vals = client.gather(&fs)?;
            let dt = t.elapsed().as_secs_f64();
            check(vals.len() == n, "gathered every result")?;
            drop(fs);
            rates.push(n as f64 / dt);
        }
        let mut f = rate_figure(name, "tasks_per_s", rates);
        if let Some([here, scheduler, workers]) = cpu_us_per(before, n * runs)? {
            f.fields.extend([
                ("cpu_us_per_task", here + scheduler + workers),
                ("cpu_us_here", here),
                ("cpu_us_scheduler", scheduler),
                ("cpu_us_workers", workers),
            ]);
        }
        figures.push(f);
    }

    // (a') the message-flow ceiling of the same path: empty messages through the same
    // processes and sockets (client → scheduler → worker → scheduler → client), batched
    // as the connections batch them, with no scheduling; independent tasks as a fraction
    // of it.
    if want("message_ceiling_10000") {
        let n = 10_000u64;
        let mut rates = Vec::new();
        // What the workloads before left to do (the releases of their futures, said
        // just before) is done first: an echo comes back after the client's earlier
        // messages were handled.
        client.echo(1)?;
        let before = cpu_now()?;
        for _ in 0..runs {
            let dt = client.echo(n)?.as_secs_f64();
            rates.push(n as f64 / dt);
        }
        let mut f = rate_figure("message_ceiling_10000", "messages_per_s", rates);
        let per_message = cpu_us_per(before, n as usize * runs)?.map(|c| c.iter().sum::<f64>());
        f.fields
            .extend(per_message.map(|c| ("cpu_us_per_message", c)));
        let tasks = figures.iter().find(|f| f.workload == "independent_10000");
        let field = |name| {
            tasks?
                .fields
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| *v)
        };
        if let Some(rate) = field("tasks_per_s") {
            f.fields
                .push(("independent_10000_fraction", rate / f.fields[0].1));
        }
        // The same fraction in CPU time: a message's over a task's.
        if let (Some(message), Some(task)) = (per_message, field("cpu_us_per_task")) {
            f.fields
                .push(("independent_10000_cpu_fraction", message / task));
        }
        figures.push(f);
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

    // (b') round trips and independent tasks over TLS, beside the same over plaintext.
    if a.tls && (want("round_trip_1000_tls") || want("round_trip_1000")) {
        figures.extend(tls_beside_plain(runs)?);
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
            let (g, root, n) = tree_graph(&format!("tree{run}"), 10_000, "add");
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

    // (e) a skewed graph, work stealing off and on.
    if want("skewed_20") {
        figures.extend(skewed(runs)?);
    }

    figures.extend(crate::typed::run(&client, runs, &want)?);
    crate::typed::compare(&mut figures);

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
        run_dask(runs, a.peer_full, &a.only)
            .map_err(|e| eprintln!("dask: {e:#}"))
            .ok()
    };
    report(&figures, peer.as_ref(), a.out.markdown);
    if let Some(path) = &a.out.json {
        write_json(path, &figures, peer.as_ref())?;
    }
    Ok(())
}

/// A scheduler process and two worker processes (`rask worker --nworkers 2 --nthreads 1
/// --transport tcp`), with `tls`'s certificates if given, and a client whose fetches go
/// over tcp too: every hop on a socket, in TLS or not. The workers stop first.
fn process_cluster(
    tls: Option<&BenchCerts>,
    scheduler_args: &[&str],
) -> Result<(Vec<KillOnDrop>, Client)> {
    let bin = sibling("rask")?;
    let tls_args = tls.map(BenchCerts::args).unwrap_or_default();
    let mut args = tls_args.clone();
    args.extend(scheduler_args.iter().map(|a| a.to_string()));
    let (scheduler, addr) = scheduler_process_with(&args)?;
    let workers = Command::new(&bin)
        .args(["worker", &addr, "--nworkers", "2", "--nthreads", "1"])
        .args(["--transport", "tcp", "--quiet", "--no-dashboard"])
        .args(&tls_args)
        .env("RASK_LOG", "error")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let procs = vec![KillOnDrop(workers), scheduler];
    let opts = rask::ClientOptions {
        transport: Some("tcp".parse().map_err(anyhow::Error::msg)?),
        ..rask::ClientOptions::default()
    };
    let client = match tls {
        Some(certs) => certs.client(&addr, opts)?,
        None => Client::connect_with(&addr, opts)?,
    };
    client.wait_for_workers(2)?;
    Ok((procs, client))
}

/// A graph where placement guesses wrong: twenty `sleep` tasks of an op no worker has
/// run yet, 100 ms and 1 ms in turn (durations 100× apart). All are placed before any
/// has run, alternately, so every long one lands on one worker. Each run on two fresh
/// clusters of a scheduler process and two workers of one thread, stealing off, then on:
/// the seconds to every result, and the ideal (the work split evenly).
fn skewed(runs: usize) -> Result<Vec<Figure>> {
    const N: usize = 20;
    let secs = |i: usize| if i.is_multiple_of(2) { 0.1 } else { 0.001 };
    let ideal: f64 = (0..N).map(secs).sum::<f64>() / 2.0;
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        for (args, out) in [(&["--no-work-stealing"][..], &mut off), (&[][..], &mut on)] {
            let (_procs, client) = process_cluster(None, args)?;
            let t = Instant::now();
            let fs = client.map("sleep", (0..N).map(|i| [Arg::from(secs(i))]))?;
            let vals = client.gather(&fs)?;
            out.push(t.elapsed().as_secs_f64());
            check(vals.len() == N, "gathered every result")?;
        }
    }
    let mut off = rate_figure("skewed_20_no_stealing", "seconds", off);
    off.fields.push(("ideal_seconds", ideal));
    let mut on = rate_figure("skewed_20", "seconds", on);
    on.fields.push(("ideal_seconds", ideal));
    Ok(vec![off, on])
}

/// `n` sequential submit-to-result round trips; their latencies in µs added to `lat`.
fn round_trips(client: &Client, n: i64, lat: &mut Vec<f64>) -> Result<()> {
    for i in 0..n {
        let t = Instant::now();
        let v: i64 = client.submit("inc", [Arg::from(i)])?.result_as()?;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
        check(v == i + 1, "round trip result")?;
    }
    Ok(())
}

/// 10,000 independent tasks submitted and gathered; tasks per second.
fn independent(client: &Client) -> Result<f64> {
    let n = 10_000usize;
    let t = Instant::now();
    let fs = client.map("inc", (0..n as i64).map(|i| [Arg::from(i)]))?;
    let vals = client.gather(&fs)?;
    let dt = t.elapsed().as_secs_f64();
    check(vals.len() == n, "gathered every result")?;
    Ok(n as f64 / dt)
}

/// Round trips and independent tasks on two clusters alike but for TLS
/// ([`process_cluster`]), their runs alternating so that both see the same machine.
fn tls_beside_plain(runs: usize) -> Result<Vec<Figure>> {
    let certs = BenchCerts::new()?;
    let (_plain_procs, plain) = process_cluster(None, &[])?;
    let (_tls_procs, tls) = process_cluster(Some(&certs), &[])?;
    // Warm-up: connections to the workers, first allocations.
    for c in [&plain, &tls] {
        round_trips(c, 100, &mut Vec::new())?;
        independent(c)?;
    }
    let (mut lat_plain, mut lat_tls) = (Vec::new(), Vec::new());
    let (mut rate_plain, mut rate_tls) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        round_trips(&plain, 1000, &mut lat_plain)?;
        round_trips(&tls, 1000, &mut lat_tls)?;
        rate_plain.push(independent(&plain)?);
        rate_tls.push(independent(&tls)?);
    }
    let (mp, mt) = (median(&mut lat_plain), median(&mut lat_tls));
    let (rp, rt) = (
        median(&mut rate_plain.clone()),
        median(&mut rate_tls.clone()),
    );
    Ok(vec![
        Figure {
            workload: "round_trip_1000_plain",
            fields: vec![
                ("median_us", mp),
                ("p99_us", percentile(&mut lat_plain, 0.99)),
            ],
            runs: vec![mp],
        },
        Figure {
            workload: "round_trip_1000_tls",
            fields: vec![
                ("median_us", mt),
                ("p99_us", percentile(&mut lat_tls, 0.99)),
                ("tls_over_plain", mt / mp),
            ],
            runs: vec![mt],
        },
        rate_figure("independent_10000_plain", "tasks_per_s", rate_plain),
        {
            let mut f = rate_figure("independent_10000_tls", "tasks_per_s", rate_tls);
            f.fields.push(("tls_over_plain", rt / rp));
            f
        },
    ])
}

/// A binary tree of `op`s (adding two values) over `leaves` leaves holding 0..leaves;
/// returns (graph, root, tasks).
pub(crate) fn tree_graph(prefix: &str, leaves: usize, op: &str) -> (Graph, String, usize) {
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
                // An odd one out is added to 0: every task takes two arguments.
                let args: Vec<Arg> = match pair {
                    [a, b] => vec![Arg::key(a.clone()), Arg::key(b.clone())],
                    [a] => vec![Arg::key(a.clone()), Arg::from(0)],
                    _ => unreachable!("chunks of two"),
                };
                g.task(&k, op, args);
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
    let _workers = worker_processes(&addr, &["w1", "w2"], &[])?;
    let client = Client::connect(&addr)?;
    client.wait_for_workers(2)?;
    crate::alloc::count_from_now();
    let fs = client.map("inc", (0..n as i64).map(|i| [Arg::from(i)]))?;
    let vals = client.gather(&fs)?;
    check(
        vals.len() == n && vals[n - 1] == rask::Value::Int(n as i64),
        "gathered every result",
    )?;
    drop(vals);
    let per_future = crate::alloc::bytes_since().max(0) as f64 / n as f64;
    check(client.held_keys() == n, "every key held")?;
    Ok(per_future)
}
