//! The dashboard of a cluster as large as Rask serves: a million tasks in 1,000 prefixes
//! (the scheduler's cap), 1,000 workers, 10,000 pairs of workers in the link matrix, a
//! task stream giving 1,000 fresh entries on every poll, a graph too large to draw.
//! Headless Chromium loads each page for several polls; the tests assert that the pages
//! drew, and that what they drew is bounded whatever the cluster's size. Screenshots go to
//! `target/dashboard/load-*.png`.

mod common;

use std::sync::Arc;

use common::{cannot_run, count, dom_after, draw_ms, draws, have, http_get, promtool, serve};
use rask_dashboard::{
    BoxFuture, Graph, GraphNode, LinkRow, PrefixRow, Snapshot, Source, StoryEntry, StreamEntry,
    WorkerRow,
};

const MIB: u64 = 1 << 20;
const WORKERS: u64 = 1000;
const PREFIXES: u64 = 1000;
const LINKS: u64 = 10_000;
const TASKS: u64 = 1_000_000;

/// Virtual time for several polls (the pages poll every second).
const BUDGET_MS: u32 = 6000;

/// A large cluster: one snapshot built once, a stream without end, a given graph.
struct Large {
    snapshot: Snapshot,
    graph: Graph,
}

fn worker(i: u64) -> WorkerRow {
    WorkerRow {
        name: format!("worker-{i}"),
        address: format!("tcp://10.0.{}.{}:40000", i / 250, i % 250),
        host: format!("node{}", i / 8),
        device: format!("cuda:{}", i % 8),
        device_name: "NVIDIA H200".into(),
        threads: 4,
        processing: i % 9,
        memory: (i % 50) * 100 * MIB,
        memory_limit: 64 << 30,
        device_memory: (i % 140) << 30,
        device_memory_limit: 141 << 30,
        utilization: i.is_multiple_of(2).then_some((i % 100) as f64),
        dashboard: format!("http://node{}:9000", i / 8),
        transport: "auto".into(),
        received: vec![("nvlink".into(), i * MIB), ("tcp".into(), i)],
        last_seen_s: 0.5,
        ..Default::default()
    }
}

/// The workers that exchange most: each sends to each other one of them.
const BUSY: u64 = 16;

/// Pair `k`: the first 240 between the BUSY workers (2 GiB and more each), the others
/// from each of the other workers to one of its next ten (up to 1,000 MiB); largest first.
fn links() -> Vec<LinkRow> {
    let within = BUSY * (BUSY - 1);
    let rest = WORKERS - BUSY;
    let mut rows: Vec<LinkRow> = (0..LINKS)
        .map(|k| {
            let (from, to, mib) = if k < within {
                let from = k / (BUSY - 1);
                (from, (from + 1 + k % (BUSY - 1)) % BUSY, 2048 + k)
            } else {
                let from = k % rest;
                let to = BUSY + (from + 1 + k / rest) % rest;
                (BUSY + from, to, (k * 7919) % 1000 + 1)
            };
            LinkRow {
                from: format!("worker-{from}"),
                to: format!("worker-{to}"),
                link: ["nvlink", "pcie", "tcp"][(k % 3) as usize].into(),
                bytes: mib * MIB,
                seconds: 0.01 + (k % 100) as f64 * 0.001,
            }
        })
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.bytes));
    rows
}

impl Large {
    fn new() -> Large {
        let per = TASKS / PREFIXES;
        let prefixes = (0..PREFIXES)
            .map(|i| PrefixRow {
                prefix: format!("op-{i}"),
                waiting: per - per * 6 / 10 - 8,
                processing: 8,
                memory: per * 6 / 10,
                compute_s: 12.5,
                output_bytes: 64 * MIB,
                ..Default::default()
            })
            .collect();
        let snapshot = Snapshot {
            address: "tcp://10.0.0.1:8786".into(),
            version: "0.1.0".into(),
            uptime_s: 0.0,
            clients: 3,
            workers: (0..WORKERS).map(worker).collect(),
            tasks: vec![
                ("waiting".into(), TASKS * 4 / 10 - 8000),
                ("processing".into(), 8000),
                ("memory".into(), TASKS * 6 / 10),
            ],
            prefixes,
            tasks_completed: 600_000,
            workers_added: WORKERS,
            workers_removed: 0,
            links: links(),
        };
        Large {
            snapshot,
            graph: Graph {
                total: TASKS,
                ..Default::default()
            },
        }
    }
}

/// A reduction tree of exactly 2,000 tasks (the graph view's limit): 999 loads summed in
/// pairs, layer after layer, down to one; some in memory, some running, the rest waiting.
fn tree() -> Graph {
    let mut g = Graph::default();
    let mut layer: Vec<u32> = Vec::new();
    let add = |g: &mut Graph, key: String, parents: &[u32]| {
        let i = g.nodes.len() as u32;
        let state = ["memory", "memory", "processing", "waiting", "queued"][i as usize % 5];
        g.nodes.push(GraphNode {
            prefix: key.split('-').next().unwrap().into(),
            key,
            state: state.into(),
            worker: format!("worker-{}", i % 16),
        });
        g.edges.extend(parents.iter().map(|&p| (p, i)));
        i
    };
    for i in 0..999 {
        layer.push(add(&mut g, format!("load-{i}"), &[]));
    }
    let mut depth = 0;
    while layer.len() > 1 {
        depth += 1;
        layer = layer
            .chunks(2)
            .enumerate()
            .map(|(i, pair)| add(&mut g, format!("sum{depth}-{i}"), pair))
            .collect();
    }
    g.total = g.nodes.len() as u64;
    g
}

/// Entry `c`: fifty in a row on one worker, 4 ms apart; of ten, seven computing, two
/// transfers and a spill.
fn entry(c: u64) -> StreamEntry {
    let (kind, peer, detail) = match c % 10 {
        7 | 8 => (
            "transfer",
            format!("worker-{}", (c / 50 + 1) % WORKERS),
            "nvlink",
        ),
        9 => ("spill", String::new(), "device->host"),
        _ => ("compute", String::new(), ""),
    };
    StreamEntry {
        cursor: c,
        key: format!("op-{}-{c}", c % PREFIXES),
        prefix: format!("op-{}", c % PREFIXES),
        worker: format!("worker-{}", (c / 50) % WORKERS),
        start_s: c as f64 * 0.004,
        stop_s: c as f64 * 0.004 + 0.0035,
        kind: kind.into(),
        peer,
        detail: detail.into(),
        nbytes: 4 * MIB,
    }
}

impl Source for Large {
    fn snapshot(&self) -> BoxFuture<'_, Result<Snapshot, String>> {
        Box::pin(async move { Ok(self.snapshot.clone()) })
    }

    /// A full page of fresh entries, whatever the cursor.
    fn task_stream(
        &self,
        since: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<StreamEntry>, String>> {
        Box::pin(async move { Ok((since + 1..=since + limit as u64).map(entry).collect()) })
    }

    fn graph(&self, limit: usize) -> BoxFuture<'_, Result<Graph, String>> {
        assert_eq!(limit, rask_dashboard::GRAPH_LIMIT);
        Box::pin(async move { Ok(self.graph.clone()) })
    }

    fn story(&self, _key: String) -> BoxFuture<'_, Result<Vec<StoryEntry>, String>> {
        Box::pin(async move { Ok(Vec::new()) })
    }
}

/// The page at `path` after several polls; it drew at least twice and says how long its
/// last redraw took. (Not asserted: it depends on the machine; and under virtual time the
/// clock stands still while a script runs, so it reads 0 here. A benchmark reads it from a
/// browser running in real time.)
fn page(addr: &str, path: &str) -> String {
    let dom = dom_after(&format!("http://{addr}{path}"), BUDGET_MS);
    assert!(draws(&dom) >= 2, "{path} drew {} times", draws(&dom));
    assert!(draw_ms(&dom) >= 0.0, "{path}");
    dom
}

fn has(dom: &str, text: &str) {
    assert!(dom.contains(text), "no {text:?} in the page");
}

#[test]
fn a_million_task_cluster_draws_bounded_pages() {
    if !have("chromium") {
        return cannot_run("no chromium (apt-get install chromium)");
    }
    let addr = serve(Arc::new(Large::new()));

    let status = page(&addr, "/status");
    // Each poll brought 1,000 fresh entries: the last 1,000 are drawn, no more.
    assert_eq!(count(&status, "task-rect"), 1000);
    for kind in ["compute", "transfer", "spill"] {
        assert!(
            count(&status, &format!("task-rect kind-{kind}")) > 0,
            "{kind}"
        );
    }
    assert_eq!(count(&status, "bar-row prefix-row"), 50);
    has(&status, "and 950 more prefixes");
    has(
        &status,
        "and 976 more workers (those holding the most are shown)",
    );
    has(&status, "and 976 more workers (the busiest are shown)");

    let workers = page(&addr, "/workers");
    assert_eq!(count(&workers, "worker-row"), 200);
    has(&workers, "and 800 more workers (filter to find one)");
    has(&workers, "Workers (1,000)");

    let devices = page(&addr, "/devices");
    assert_eq!(count(&devices, "device-row"), 32);
    has(&devices, "and 968 more GPUs (the busiest are shown)");
    assert_eq!(count(&devices, "sender"), 16);
    assert_eq!(count(&devices, "receiver"), 16);
    // The busy workers: every pair among them drawn, the diagonal empty.
    assert_eq!(count(&devices, "matrix-cell\""), 240);
    assert_eq!(count(&devices, "matrix-cell empty"), 16);
    for i in 0..BUSY {
        has(&devices, &format!("<th class=\"receiver\">worker-{i}</th>"));
    }
    has(&devices, "the 16 workers with the most traffic of 1,000;");
    has(&devices, "9,760 of 10,000 pairs and 984 workers left out");

    let graph = page(&addr, "/graph");
    has(
        &graph,
        "1,000,000 tasks: the graph view draws graphs of up to 2,000 tasks",
    );
    assert_eq!(count(&graph, "graph-node"), 0);
    assert_eq!(count(&graph, "graph-edge"), 0);

    for name in ["status", "workers", "devices", "graph"] {
        common::screenshot(
            &format!("http://{addr}/{name}"),
            &format!("load-{name}"),
            1400,
        );
    }
}

#[test]
fn a_graph_at_the_limit_is_drawn_whole() {
    if !have("chromium") {
        return cannot_run("no chromium (apt-get install chromium)");
    }
    let graph = tree();
    assert_eq!(graph.nodes.len(), rask_dashboard::GRAPH_LIMIT);
    let edges = graph.edges.len();
    let addr = serve(Arc::new(Large {
        graph,
        ..Large::new()
    }));
    let dom = page(&addr, "/graph");
    assert_eq!(count(&dom, "graph-node"), 2000);
    assert_eq!(count(&dom, "graph-edge\""), edges);
    assert_eq!(edges, 1999, "a tree");
    has(&dom, "2,000 tasks, 1,999 dependencies");
    // Too many to label: the key is in each node's title.
    assert_eq!(count(&dom, "graph-label"), 0);
    has(&dom, "<title>sum10-0\n");
    common::screenshot(&format!("http://{addr}/graph"), "load-graph-2000", 900);
}

#[test]
fn a_million_task_cluster_has_lint_clean_bounded_metrics() {
    if !have("promtool") {
        return cannot_run("no promtool (apt-get install prometheus)");
    }
    let addr = serve(Arc::new(Large::new()));
    let body = http_get(&addr, "/metrics");
    promtool(&body);
    let samples = |name: &str| body.lines().filter(|l| l.starts_with(name)).count();
    // Summed by class: three samples for 10,000 pairs.
    assert_eq!(samples("rask_scheduler_link_bytes_total{"), 3);
    assert_eq!(samples("rask_scheduler_link_seconds_total{"), 3);
    assert_eq!(samples("rask_device_utilization_ratio{"), 500);
    assert_eq!(samples("rask_dashboard_requests_total{"), 11);
}
