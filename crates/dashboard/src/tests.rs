use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// A scheduler stand-in: a fixed snapshot, a stream of 5,000 entries, one story; counts
/// how often it is sampled.
struct Fake {
    sampled: AtomicUsize,
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

    fn graph(&self, _limit: usize) -> BoxFuture<'_, Result<crate::Graph, String>> {
        Box::pin(async move { Ok(crate::Graph::default()) })
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
    let fake = Arc::new(Fake {
        sampled: AtomicUsize::new(0),
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
    for page in ["/status", "/workers", "/devices", "/task?key=x"] {
        let (code, ctype, body) = get(&addr, page).await;
        assert_eq!(code, 200, "{page}");
        assert!(ctype.starts_with("text/html"), "{page}: {ctype}");
        assert!(body.contains("/assets/dashboard.js"), "{page}");
    }
    let (code, ctype, body) = get(&addr, "/assets/dashboard.js").await;
    assert_eq!((code, ctype.starts_with("text/javascript")), (200, true));
    assert!(body.contains("/api/v1/status"));
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
