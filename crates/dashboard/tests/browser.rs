//! The dashboard as a person sees it: headless Chromium loads each page from a dashboard
//! serving a made-up cluster, lets its scripts run, and the tests assert on the DOM they
//! built; `promtool` checks the metrics. (The pages against a real cluster: the facade's
//! tests/dashboard.rs.) Screenshots go to `target/dashboard/` for people to look at.
//!
//! Chromium and promtool come from Debian (`ci/setup-daemons.sh` installs them); without
//! them these tests say they cannot run, and fail instead when RASK_REQUIRE_DAEMONS is set.

use std::process::Command;
use std::sync::Arc;

use rask_dashboard::{BoxFuture, Snapshot, Source, StoryEntry, StreamEntry, WorkerRow};

struct Cluster;

const MIB: u64 = 1 << 20;

impl Source for Cluster {
    fn snapshot(&self) -> BoxFuture<'_, Result<Snapshot, String>> {
        let worker = |i: u64, device: &str| WorkerRow {
            name: format!("worker-{i}"),
            address: format!("tcp://127.0.0.1:4000{i}"),
            host: "node1".into(),
            device: device.into(),
            device_name: "simulated GPU".into(),
            threads: 1,
            processing: i,
            memory: (i + 1) * 10 * MIB,
            memory_limit: 100 * MIB,
            spilled_host: 2 * MIB,
            spilled_disk: MIB,
            device_memory: (3 + i) * MIB,
            device_memory_limit: 8 * MIB,
            transport: "auto".into(),
            received: vec![("nvlink".into(), 64 * MIB), ("tcp".into(), MIB)],
            last_seen_s: 0.4,
            ..Default::default()
        };
        Box::pin(async move {
            Ok(Snapshot {
                address: "tcp://127.0.0.1:8786".into(),
                uptime_s: 30.0,
                clients: 1,
                workers: vec![worker(0, "sim:0"), worker(1, "sim:1")],
                tasks: vec![("memory".into(), 90), ("processing".into(), 10)],
                prefixes: vec![rask_dashboard::PrefixRow {
                    prefix: "array.matmul".into(),
                    memory: 90,
                    processing: 10,
                    ..Default::default()
                }],
                tasks_completed: 100,
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
            Ok((since + 1..=40)
                .take(limit)
                .map(|c| StreamEntry {
                    cursor: c,
                    key: format!("matmul-{c}"),
                    prefix: "array.matmul".into(),
                    worker: format!("worker-{}", c % 2),
                    start_s: 20.0 + c as f64 * 0.2,
                    stop_s: 20.1 + c as f64 * 0.2,
                    kind: "compute".into(),
                    ..Default::default()
                })
                .collect())
        })
    }

    fn graph(&self, _limit: usize) -> BoxFuture<'_, Result<rask_dashboard::Graph, String>> {
        Box::pin(async move { Ok(rask_dashboard::Graph::default()) })
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

/// Serves the made-up cluster on a thread of its own; its address.
fn serve() -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap().to_string()).unwrap();
            rask_dashboard::serve(l, Arc::new(Cluster)).await;
        });
    });
    rx.recv().unwrap()
}

fn cannot_run(reason: &str) {
    if std::env::var_os("RASK_REQUIRE_DAEMONS").is_some() {
        panic!("cannot run (RASK_REQUIRE_DAEMONS is set): {reason}");
    }
    println!("SKIPPED: {reason}");
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Headless Chromium letting a page's scripts run 4 s of virtual time, killed after 90 s
/// of real time (a hang fails the test).
fn chromium() -> Command {
    let mut c = Command::new("timeout");
    c.args([
        "90",
        "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
    ])
    .arg("--virtual-time-budget=4000");
    c
}

/// The DOM of `url` after its scripts ran for a few seconds of virtual time (Chromium
/// killed after 90 s of real time: a hang fails the test).
pub fn dom(url: &str) -> String {
    let out = chromium()
        .args(["--dump-dom", url])
        .output()
        .expect("running chromium");
    assert!(
        out.status.success(),
        "chromium failed on {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A screenshot of `url` at `target/dashboard/NAME.png`.
fn screenshot(url: &str, name: &str) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{name}.png"));
    let _ = std::fs::remove_file(&file);
    let out = chromium()
        .arg("--window-size=1280,900")
        .arg(format!("--screenshot={}", file.display()))
        .arg(url)
        .output()
        .expect("running chromium");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::metadata(&file).unwrap().len() > 10_000,
        "an empty screenshot"
    );
}

#[test]
fn the_pages_draw_the_cluster_they_are_given() {
    if !have("chromium") {
        return cannot_run("no chromium (apt-get install chromium)");
    }
    let addr = serve();
    let workers = dom(&format!("http://{addr}/workers"));
    for i in 0..2 {
        let row = format!("data-address=\"tcp://127.0.0.1:4000{i}\"");
        assert!(workers.contains(&row), "no row {row} in\n{workers}");
    }
    assert!(workers.contains("13.0 MiB / 100.0 MiB") || workers.contains("10.0 MiB / 100.0 MiB"));
    assert!(workers.contains("nvlink 64.0 MiB"), "{workers}");

    let devices = dom(&format!("http://{addr}/devices"));
    assert!(
        devices.contains("data-device=\"sim:1\" data-used=\"4194304\" data-limit=\"8388608\""),
        "{devices}"
    );
    assert!(devices.contains("4.0 MiB of 8.0 MiB"), "{devices}");

    let status = dom(&format!("http://{addr}/status"));
    assert!(
        status.contains("data-key=\"matmul-40\""),
        "no task-stream entry in\n{status}"
    );
    assert!(status.contains("data-prefix=\"array.matmul\""), "{status}");
    assert!(status.contains("array.matmul: 90 / 100"), "{status}");
    assert!(
        status.contains("data-ready=\"yes\""),
        "the page never drew: {status}"
    );
    // At most one rectangle per entry, however many polls.
    assert_eq!(status.matches("class=\"task-rect").count(), 40);

    let task = dom(&format!("http://{addr}/task?key=matmul-7"));
    assert!(task.contains("matmul-7 submitted"), "{task}");
    assert_eq!(task.matches("class=\"story-row\"").count(), 2, "{task}");

    for page in ["status", "workers", "devices"] {
        screenshot(&format!("http://{addr}/{page}"), page);
    }
}

#[test]
fn promtool_finds_the_metrics_valid() {
    if !have("promtool") {
        return cannot_run("no promtool (apt-get install prometheus)");
    }
    let addr = serve();
    let body = http_get(&addr, "/metrics");
    promtool(&body);
    assert!(
        body.contains("\ndask_scheduler_workers{state=\"idle\"} 1\n"),
        "{body}"
    );
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
    });
    promtool(&worker);
}

/// `promtool check metrics` finds `body` valid (its lint included).
fn promtool(body: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The body of a GET.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n").unwrap().1.to_string()
}
