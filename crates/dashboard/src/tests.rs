use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// A scheduler stand-in: a fixed snapshot, a stream of 5,000 entries, one story, a given
/// graph; counts how often it is sampled and records the graph limit asked for.
struct Fake {
    sampled: AtomicUsize,
    graph: Graph,
    graph_limit: AtomicUsize,
}

impl Source for Fake {
    fn snapshot(&self) -> BoxFuture<'_, Result<Snapshot, String>> {
        self.sampled.fetch_add(1, Ordering::SeqCst);
        Box::pin(async {
            Ok(Snapshot {
                address: "tcp://127.0.0.1:8786".into(),
                clients: 2,
                workers: vec![WorkerRow {
                    name: "w-0".into(),
                    address: "tcp://127.0.0.1:40001".into(),
                    device: "sim:0".into(),
                    threads: 1,
                    ..Default::default()
                }],
                tasks: vec![("memory".into(), 7)],
                ..Default::default()
            })
        })
    }

    fn task_stream(
        &self,
        since: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<StreamEntry>, String>> {
        Box::pin(async move {
            // Returns more than asked: the server must still bound what it sends.
            Ok((since + 1..=5000)
                .take(limit + 10)
                .map(|c| StreamEntry {
                    cursor: c,
                    key: format!("inc-{c}"),
                    kind: "compute".into(),
                    ..Default::default()
                })
                .collect())
        })
    }

    fn graph(&self, limit: usize) -> BoxFuture<'_, Result<Graph, String>> {
        self.graph_limit.store(limit, Ordering::SeqCst);
        Box::pin(async move { Ok(self.graph.clone()) })
    }

    fn story(&self, key: String) -> BoxFuture<'_, Result<Vec<StoryEntry>, String>> {
        Box::pin(async move {
            if key == "boom" {
                return Err("no such key".into());
            }
            Ok(vec![StoryEntry {
                from: "waiting".into(),
                to: "processing".into(),
                why: format!("{key} ready"),
                ..Default::default()
            }])
        })
    }
}

async fn start() -> (String, Arc<Fake>) {
    start_sampled(SAMPLE).await
}

async fn start_sampled(every: Duration) -> (String, Arc<Fake>) {
    start_with(every, Graph::default()).await
}

async fn start_with(every: Duration, graph: Graph) -> (String, Arc<Fake>) {
    let fake = Arc::new(Fake {
        sampled: AtomicUsize::new(0),
        graph,
        graph_limit: AtomicUsize::new(0),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let app = router_sampled(fake.clone(), every);
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, fake)
}

/// GET `path`: the status code, the content type and the body.
async fn get(addr: &str, path: &str) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    let ctype = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_string)
        })
        .unwrap_or_default();
    (code, ctype, body.to_string())
}

#[tokio::test]
async fn pages_api_health_and_metrics_are_served() {
    let (addr, _) = start().await;
    assert_eq!(get(&addr, "/health").await.2, "ok");
    let (code, ctype, body) = get(&addr, "/metrics").await;
    assert_eq!(code, 200);
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    assert!(body.contains("\ndask_scheduler_clients 2\n"), "{body}");
    assert!(
        body.contains("dask_scheduler_tasks{state=\"memory\"} 7"),
        "{body}"
    );
    let (_, ctype, body) = get(&addr, "/api/v1/status").await;
    assert_eq!(ctype, "application/json");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["workers"][0]["address"], "tcp://127.0.0.1:40001");
    assert_eq!(v["tasks"][0], serde_json::json!(["memory", 7]));
    let (_, _, body) = get(&addr, "/api/v1/get_workers").await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()[0]["name"],
        "w-0"
    );
    for page in ["/status", "/workers", "/devices", "/graph", "/task?key=x"] {
        let (code, ctype, body) = get(&addr, page).await;
        assert_eq!(code, 200, "{page}");
        assert!(ctype.starts_with("text/html"), "{page}: {ctype}");
        // The shell loads every asset, in order: the helpers first.
        let at = |a: &str| body.find(a).unwrap_or_else(|| panic!("{page} lacks {a}"));
        assert!(
            at("/assets/dashboard.js") < at("/assets/graph.js"),
            "{page}"
        );
        assert!(
            body.contains("href=\"/graph\""),
            "{page}: no link to the graph"
        );
    }
    for (asset, needs) in [
        ("/assets/dashboard.js", "/api/v1/status"),
        ("/assets/status.js", "/api/v1/task_stream"),
        ("/assets/cluster.js", "PAGES.devices"),
        ("/assets/graph.js", "/api/v1/graph"),
    ] {
        let (code, ctype, body) = get(&addr, asset).await;
        assert_eq!((code, ctype.starts_with("text/javascript")), (200, true));
        assert!(body.contains(needs), "{asset} lacks {needs}");
    }
    let (code, ctype, _) = get(&addr, "/assets/dashboard.css").await;
    assert_eq!((code, ctype.as_str()), (200, "text/css; charset=utf-8"));
    assert_eq!(get(&addr, "/nowhere").await.0, 404);
}

#[tokio::test]
async fn the_task_stream_is_read_by_cursor_and_bounded() {
    let (addr, _) = start().await;
    let read = |body: String| serde_json::from_str::<Vec<serde_json::Value>>(&body).unwrap();
    let all = read(get(&addr, "/api/v1/task_stream?since=0").await.2);
    assert_eq!(all.len(), STREAM_LIMIT);
    let huge = read(
        get(&addr, "/api/v1/task_stream?since=0&limit=100000")
            .await
            .2,
    );
    assert_eq!(huge.len(), STREAM_LIMIT, "a client cannot ask for more");
    let next = read(
        get(&addr, "/api/v1/task_stream?since=4990&limit=50")
            .await
            .2,
    );
    assert_eq!(next.len(), 10);
    assert_eq!(next[0]["cursor"], 4991);
    assert_eq!(next[0]["key"], "inc-4991");
    assert_eq!(get(&addr, "/api/v1/task_stream?since=x").await.0, 400);
}

#[tokio::test]
async fn a_story_is_served_and_an_error_said() {
    let (addr, _) = start().await;
    let (_, _, body) = get(&addr, "/api/v1/story?key=inc-1").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v[0]["why"], "inc-1 ready");
    let (code, _, body) = get(&addr, "/api/v1/story?key=boom").await;
    assert_eq!((code, body.as_str()), (503, "no such key"));
    assert_eq!(get(&addr, "/api/v1/story").await.0, 400, "a key is needed");
}

#[tokio::test]
async fn pages_and_scrapers_share_one_sample() {
    // A period longer than the test: every request shares the first sample.
    let (addr, fake) = start_sampled(Duration::from_secs(3600)).await;
    let polls: Vec<_> = (0..20)
        .map(|i| {
            let addr = addr.clone();
            let path = if i % 2 == 0 {
                "/api/v1/status"
            } else {
                "/metrics"
            };
            tokio::spawn(async move { get(&addr, path).await.0 })
        })
        .collect();
    for p in polls {
        assert_eq!(p.await.unwrap(), 200);
    }
    // Twenty requests within one sampling period: the scheduler was asked once.
    assert_eq!(fake.sampled.load(Ordering::SeqCst), 1);
    // A period of zero samples every time.
    let (addr, fake) = start_sampled(Duration::ZERO).await;
    for _ in 0..3 {
        assert_eq!(get(&addr, "/metrics").await.0, 200);
    }
    assert_eq!(fake.sampled.load(Ordering::SeqCst), 3);
}

/// A diamond: a -> b, a -> c, b -> d, c -> d.
fn diamond() -> Graph {
    let node = |key: &str, state: &str| GraphNode {
        key: key.into(),
        prefix: key.into(),
        state: state.into(),
        worker: "w-0".into(),
    };
    Graph {
        total: 4,
        nodes: vec![
            node("a", "memory"),
            node("b", "processing"),
            node("c", "waiting"),
            node("d", "waiting"),
        ],
        edges: vec![(0, 1), (0, 2), (1, 3), (2, 3)],
    }
}

async fn graph_reply(addr: &str) -> serde_json::Value {
    let (code, ctype, body) = get(addr, "/api/v1/graph").await;
    assert_eq!((code, ctype.as_str()), (200, "application/json"), "{body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test]
async fn a_small_graph_is_served_whole_with_the_limit() {
    let (addr, fake) = start_with(SAMPLE, diamond()).await;
    let v = graph_reply(&addr).await;
    assert_eq!(fake.graph_limit.load(Ordering::SeqCst), GRAPH_LIMIT);
    assert_eq!(v["limit"], 2000);
    assert_eq!(v["total"], 4);
    assert_eq!(v["nodes"][1]["key"], "b");
    assert_eq!(v["nodes"][1]["state"], "processing");
    assert_eq!(v["nodes"][3]["worker"], "w-0");
    assert_eq!(
        v["edges"],
        serde_json::json!([[0, 1], [0, 2], [1, 3], [2, 3]])
    );
}

#[tokio::test]
async fn a_large_graph_is_said_not_sent() {
    // A source that sends nodes anyway: the server does not pass them on.
    let mut big = diamond();
    big.total = 1_000_000;
    let (addr, _) = start_with(SAMPLE, big).await;
    let v = graph_reply(&addr).await;
    assert_eq!(v["total"], 1_000_000);
    assert_eq!(v["nodes"], serde_json::json!([]));
    assert_eq!(v["edges"], serde_json::json!([]));
}

#[test]
fn edges_to_missing_nodes_are_dropped() {
    let mut g = diamond();
    g.edges.extend([(3, 4), (9, 0), (2, 2)]);
    let g = bounded(g, GRAPH_LIMIT);
    assert_eq!(g.edges, vec![(0, 1), (0, 2), (1, 3), (2, 3)]);
    assert_eq!(g.nodes.len(), 4);
    // More nodes than the limit: none, whatever the total said.
    let g = bounded(diamond(), 3);
    assert_eq!((g.total, g.nodes.len(), g.edges.len()), (4, 0, 0));
}

/// The value of `rask_dashboard_requests_total{route="ROUTE"}` in `metrics`.
fn requests(metrics: &str, route: &str) -> u64 {
    let line = format!("rask_dashboard_requests_total{{route=\"{route}\"}} ");
    let found = metrics.lines().find_map(|l| l.strip_prefix(line.as_str()));
    found
        .unwrap_or_else(|| panic!("no {line} in\n{metrics}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn requests_are_counted_per_route() {
    let (addr, _) = start().await;
    for path in ["/status", "/status", "/status", "/graph", "/task?key=x"] {
        assert_eq!(get(&addr, path).await.0, 200, "{path}");
    }
    for path in [
        "/api/v1/graph",
        "/api/v1/graph",
        "/api/v1/status",
        "/api/v1/task_stream?since=0&limit=1",
        "/api/v1/story?key=boom",
        // Not counted: assets, health, unknown paths.
        "/assets/dashboard.js",
        "/health",
        "/nowhere",
    ] {
        get(&addr, path).await;
    }
    let first = get(&addr, "/metrics").await.2;
    for (route, n) in [
        ("status", 3),
        ("workers", 0),
        ("devices", 0),
        ("graph", 1),
        ("task", 1),
        ("api_status", 1),
        ("api_get_workers", 0),
        ("api_task_stream", 1),
        ("api_story", 1),
        ("api_graph", 2),
        // A scrape counts itself.
        ("metrics", 1),
    ] {
        assert_eq!(requests(&first, route), n, "{route}");
    }
    let samples = first
        .lines()
        .filter(|l| l.starts_with("rask_dashboard_requests_total{"))
        .count();
    assert_eq!(samples, 11, "one sample per route, no more:\n{first}");
    let second = get(&addr, "/metrics").await.2;
    assert_eq!(requests(&second, "metrics"), 2);
    assert_eq!(requests(&second, "status"), 3);
}
