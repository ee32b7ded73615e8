//! The dashboard as a person sees it: headless Chromium loads each page from a dashboard
//! serving a small made-up cluster, lets its scripts run, and the tests assert on the DOM
//! they built; `promtool` checks the metrics. (A cluster a million tasks large: load.rs;
//! the pages against a real cluster: the facade's tests/dashboard.rs.) Screenshots go to
//! `target/dashboard/` for people to look at.

mod common;

use std::sync::Arc;

use common::{attr, cannot_run, count, dom, draws, have, http_get, promtool, serve, tag_with};
use rask_dashboard::{
    BoxFuture, Graph, GraphNode, LinkRow, Snapshot, Source, StoryEntry, StreamEntry, WorkerRow,
};
use std::time::Duration;

struct Cluster;

const MIB: u64 = 1 << 20;

fn worker(i: u64) -> WorkerRow {
    WorkerRow {
        name: format!("worker-{i}"),
        address: format!("tcp://127.0.0.1:4000{i}"),
        host: "node1".into(),
        device: format!("sim:{i}"),
        device_name: "simulated GPU".into(),
        threads: 1,
        processing: i,
        memory: (i + 1) * 10 * MIB,
        memory_limit: 100 * MIB,
        spilled_host: 2 * MIB,
        spilled_disk: MIB,
        device_memory: (3 + i) * MIB,
        device_memory_limit: 8 * MIB,
        // worker-0 knows its GPU's utilization and serves its own metrics; worker-1 says
        // something that is no web address.
        utilization: (i == 0).then_some(42.0),
        dashboard: if i == 0 {
            "http://127.0.0.1:9101".into()
        } else {
            "javascript:alert(1)".into()
        },
        transport: "auto".into(),
        received: vec![("nvlink".into(), 64 * MIB), ("tcp".into(), MIB)],
        last_seen_s: 0.4,
    }
}

fn link(from: u64, to: u64, link: &str, bytes: u64, seconds: f64) -> LinkRow {
    LinkRow {
        from: format!("worker-{from}"),
        to: format!("worker-{to}"),
        link: link.into(),
        bytes,
        seconds,
    }
}

/// Entry `c` of the stream: 38 is a spill, 39 a transfer, the others computing.
fn entry(c: u64) -> StreamEntry {
    let at = 20.0 + c as f64 * 0.2;
    let mut e = StreamEntry {
        cursor: c,
        key: format!("matmul-{c}"),
        prefix: "array.matmul".into(),
        worker: format!("worker-{}", c % 2),
        start_s: at,
        stop_s: at + 0.1,
        kind: "compute".into(),
        ..Default::default()
    };
    if c == 38 {
        (e.key, e.kind, e.detail, e.nbytes) = (
            "matmul-5".into(),
            "spill".into(),
            "device->host".into(),
            8 * MIB,
        );
        e.stop_s = at + 0.003;
    }
    if c == 39 {
        (e.key, e.kind, e.peer, e.detail, e.nbytes) = (
            "matmul-12".into(),
            "transfer".into(),
            "worker-0".into(),
            "nvlink".into(),
            4 * MIB,
        );
        e.stop_s = at + 0.012;
    }
    e
}

/// Six tasks: two loads, an add of both, a mul of one, their sum, and a save.
fn graph() -> Graph {
    let node = |key: &str, state: &str, worker: &str| GraphNode {
        key: key.into(),
        prefix: key.split('-').next().unwrap().into(),
        state: state.into(),
        worker: worker.into(),
    };
    Graph {
        total: 6,
        nodes: vec![
            node("load-0", "memory", "worker-0"),
            node("load-1", "memory", "worker-1"),
            node("add-0", "processing", "worker-0"),
            node("mul-0", "queued", ""),
            node("sum", "waiting", ""),
            node("save", "waiting", ""),
        ],
        edges: vec![(0, 2), (1, 2), (1, 3), (2, 4), (3, 4), (4, 5)],
    }
}

/// Seconds since the first sample, and tasks done by then (at a rate that varies).
fn clock() -> (f64, u64) {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let t = START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_secs_f64();
    (t, 100 + (300.0 * t + 60.0 * (4.0 * t).sin()) as u64)
}

impl Source for Cluster {
    fn snapshot(&self) -> BoxFuture<'_, Result<Snapshot, String>> {
        let (t, done) = clock();
        Box::pin(async move {
            Ok(Snapshot {
                address: "tcp://127.0.0.1:8786".into(),
                uptime_s: 30.0 + t,
                clients: 1,
                workers: vec![worker(0), worker(1)],
                tasks: vec![("memory".into(), 90), ("processing".into(), 10)],
                prefixes: vec![rask_dashboard::PrefixRow {
                    prefix: "array.matmul".into(),
                    memory: 90,
                    processing: 10,
                    ..Default::default()
                }],
                tasks_completed: done,
                links: vec![
                    link(0, 1, "nvlink", 64 * MIB, 0.5),
                    link(1, 0, "tcp", MIB, 0.25),
                ],
                ..Default::default()
            })
        })
    }

    fn task_stream(
        &self,
        since: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<StreamEntry>, String>> {
        Box::pin(async move { Ok((since + 1..=40).take(limit).map(entry).collect()) })
    }

    fn graph(&self, _limit: usize) -> BoxFuture<'_, Result<Graph, String>> {
        Box::pin(async move { Ok(graph()) })
    }

    fn story(&self, key: String) -> BoxFuture<'_, Result<Vec<StoryEntry>, String>> {
        Box::pin(async move {
            Ok(vec![
                StoryEntry {
                    at_s: 1.0,
                    from: "released".into(),
                    to: "waiting".into(),
                    why: format!("{key} submitted"),
                    worker: String::new(),
                },
                StoryEntry {
                    at_s: 1.5,
                    from: "processing".into(),
                    to: "memory".into(),
                    why: "task-finished".into(),
                    worker: "worker-1".into(),
                },
            ])
        })
    }
}

fn check_workers(workers: &str) {
    for i in 0..2 {
        let row = format!("data-address=\"tcp://127.0.0.1:4000{i}\"");
        assert!(workers.contains(&row), "no row {row} in\n{workers}");
    }
    assert!(workers.contains("10.0 MiB / 100.0 MiB"), "{workers}");
    assert!(workers.contains("nvlink 64.0 MiB"), "{workers}");
    // The name links to the worker's own metrics where it serves them over http, only there.
    let a = tag_with(workers, "class=\"worker-link\"");
    assert_eq!(attr(a, "href"), "http://127.0.0.1:9101/metrics");
    assert!(workers.contains(">worker-0</a>"), "{workers}");
    assert_eq!(count(workers, "worker-link"), 1, "{workers}");
    assert!(!workers.contains("javascript:"), "{workers}");
}

fn check_devices(devices: &str) {
    assert!(
        devices.contains("data-device=\"sim:1\" data-used=\"4194304\" data-limit=\"8388608\""),
        "{devices}"
    );
    assert!(devices.contains("4.0 MiB of 8.0 MiB"), "{devices}");
    assert_eq!(
        attr(tag_with(devices, "data-utilization="), "data-utilization"),
        "42"
    );
    assert!(devices.contains("42 % busy"), "{devices}");
    assert!(devices.contains("utilization unknown"), "{devices}");
    // The matrix: two pairs, the diagonal empty.
    assert_eq!(count(devices, "matrix-cell\""), 2, "{devices}");
    assert_eq!(count(devices, "matrix-cell empty"), 2, "{devices}");
    let cell = tag_with(devices, "data-from=\"worker-0\" data-to=\"worker-1\"");
    assert_eq!(attr(cell, "data-bytes"), (64 * MIB).to_string());
    assert_eq!(attr(cell, "data-link"), "nvlink");
    assert_eq!(attr(cell, "data-rate"), (128 * MIB).to_string());
    for text in ["64.0 MiB", "128.0 MiB/s", "1.0 MiB", "4.0 MiB/s"] {
        assert!(
            devices.contains(&format!(">{text}</div>")),
            "no {text} in\n{devices}"
        );
    }
    assert!(
        !devices.contains("left out"),
        "nothing is left out of two workers"
    );
    // Totals per class: nvlink 64 MiB received by each of the two workers.
    assert!(
        devices.contains("data-link=\"nvlink\"><td>nvlink</td><td>128.0 MiB</td>"),
        "{devices}"
    );
}

fn check_status(status: &str) {
    assert!(
        status.contains("data-key=\"matmul-40\""),
        "no task-stream entry in\n{status}"
    );
    assert!(status.contains("data-prefix=\"array.matmul\""), "{status}");
    assert!(status.contains("array.matmul: 90 / 100"), "{status}");
    assert!(draws(status) >= 2, "a poll redraws the page");
    assert!(status.contains("data-draw-ms=\""), "{status}");
    // At most one rectangle per entry, however many polls.
    assert_eq!(count(status, "task-rect"), 40);
    assert_eq!(count(status, "task-rect kind-transfer"), 1);
    assert_eq!(count(status, "task-rect kind-spill"), 1);
    let transfer = tag_with(status, "class=\"task-rect kind-transfer\"");
    assert_eq!(attr(transfer, "fill"), "#e5484d");
    assert_eq!(
        attr(transfer, "data-worker"),
        "worker-1",
        "drawn on the receiver's row"
    );
    assert!(
        status.contains("<title>matmul-12: 4.0 MiB from worker-0 over nvlink, 12 ms</title>"),
        "{status}"
    );
    let spill = tag_with(status, "class=\"task-rect kind-spill\"");
    assert_eq!(attr(spill, "fill"), "#f59e0b");
    assert!(
        status.contains("<title>matmul-5: spill device-&gt;host 8.0 MiB, 3.0 ms</title>"),
        "{status}"
    );
    let compute = tag_with(status, "data-key=\"matmul-40\"");
    assert!(attr(compute, "fill").starts_with("hsl("), "{compute}");
}

/// The x of the node of `key`.
fn cx(graph: &str, key: &str) -> f64 {
    attr(tag_with(graph, &format!("data-key=\"{key}\"")), "cx")
        .parse()
        .unwrap()
}

fn check_graph(graph: &str) {
    assert_eq!(count(graph, "graph-node"), 6, "{graph}");
    assert_eq!(count(graph, "graph-edge\""), 6, "{graph}");
    assert!(graph.contains("6 tasks, 6 dependencies"), "{graph}");
    let sum = tag_with(graph, "data-key=\"sum\"");
    assert_eq!(attr(sum, "class"), "graph-node state-waiting");
    assert!(
        graph.contains("<title>add-0\nprocessing on worker-0</title>"),
        "{graph}"
    );
    // Layers by longest path from a root, left to right.
    let layers = [["load-0", "load-1"], ["add-0", "mul-0"]];
    for [a, b] in layers {
        assert_eq!(cx(graph, a), cx(graph, b), "{a} and {b} share a layer");
    }
    let order = ["load-0", "add-0", "sum", "save"].map(|k| cx(graph, k));
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
}

#[test]
fn the_pages_draw_the_cluster_they_are_given() {
    if !have("chromium") {
        return cannot_run("no chromium (apt-get install chromium)");
    }
    // Sampled on every poll: the clock moves between polls, and tasks per second with it.
    let addr = common::serve_sampled(Arc::new(Cluster), Duration::ZERO);
    check_workers(&dom(&format!("http://{addr}/workers")));
    let filtered = dom(&format!("http://{addr}/workers?filter=40001"));
    assert_eq!(count(&filtered, "worker-row"), 1, "{filtered}");
    assert!(filtered.contains("data-name=\"worker-1\""), "{filtered}");
    let none = dom(&format!("http://{addr}/workers?filter=gpu-9"));
    assert_eq!(count(&none, "worker-row"), 0, "{none}");
    assert!(none.contains("no worker matches “gpu-9”"), "{none}");
    check_devices(&dom(&format!("http://{addr}/devices")));
    check_status(&dom(&format!("http://{addr}/status")));
    check_graph(&dom(&format!("http://{addr}/graph")));

    let task = dom(&format!("http://{addr}/task?key=matmul-7"));
    assert!(task.contains("matmul-7 submitted"), "{task}");
    assert_eq!(task.matches("class=\"story-row\"").count(), 2, "{task}");

    for page in ["status", "workers", "devices", "graph"] {
        common::screenshot(&format!("http://{addr}/{page}"), page, 900);
    }
}

#[test]
fn promtool_finds_the_metrics_valid() {
    if !have("promtool") {
        return cannot_run("no promtool (apt-get install prometheus)");
    }
    let addr = serve(Arc::new(Cluster));
    let body = http_get(&addr, "/metrics");
    promtool(&body);
    for line in [
        "dask_scheduler_workers{state=\"idle\"} 1",
        "rask_scheduler_link_bytes_total{link=\"nvlink\"} 67108864",
        "rask_scheduler_link_seconds_total{link=\"tcp\"} 0.25",
        "rask_device_utilization_ratio{worker=\"worker-0\"} 0.42",
        "rask_dashboard_requests_total{route=\"metrics\"} 1",
    ] {
        assert!(body.lines().any(|l| l == line), "no {line} in\n{body}");
    }
    let worker = rask_dashboard::metrics::worker(&rask_dashboard::WorkerSnapshot {
        name: "w".into(),
        threads: 2,
        tasks: vec![("executing".into(), 1)],
        managed: 10,
        unmanaged: 5,
        spilled: vec![("device->host".into(), 3)],
        device: "sim:0".into(),
        device_memory: 1,
        device_memory_limit: 2,
        received: vec![("shm".into(), 4)],
        transfer_seconds: vec![("shm".into(), 0.5)],
        utilization: Some(12.5),
    });
    promtool(&worker);
    assert!(
        worker.contains("\nrask_device_utilization_ratio 0.125\n"),
        "{worker}"
    );
}
