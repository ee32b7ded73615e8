//! The dashboard of a real cluster, as a person and a scraper see it: `rask scheduler`
//! with two `rask worker --device sim:N` processes holding values on their simulated
//! GPUs; headless Chromium loads the pages and the test asserts on the DOM their scripts
//! built (worker rows by address, device memory as `scheduler_info` reports it, a
//! task-stream entry and the story of a task this test ran); `promtool` checks the
//! metrics, with exact values. Screenshots go to `target/dashboard/cluster-*.png`.

mod common;

use std::process::Command;

use common::{cannot_run, connect_retrying, eventually, scheduler, within, worker_with, DEADLINE};
use rask::{Arg, Graph};

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

/// The DOM of `url` after its scripts ran (Chromium killed after 90 s: a hang fails).
fn dom(url: &str) -> String {
    let out = chromium()
        .args(["--dump-dom", url])
        .output()
        .expect("running chromium");
    assert!(out.status.success(), "chromium on {url}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn screenshot(url: &str, name: &str) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("cluster-{name}.png"));
    let out = chromium()
        .arg("--window-size=1280,900")
        .arg(format!("--screenshot={}", file.display()))
        .arg(url)
        .output()
        .expect("running chromium");
    assert!(out.status.success(), "{out:?}");
}

/// The body of a GET of `url` (`http://HOST:PORT/PATH`).
fn http_get(url: &str) -> String {
    let out = common::plain_http_get(url);
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{url}: {head}");
    body.to_string()
}

/// The sum of a metric's samples (all label sets).
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn the_dashboard_shows_the_cluster_it_serves() {
    if !common::have("chromium") || !common::have("promtool") {
        return cannot_run("needs chromium and promtool (ci/setup-daemons.sh installs them)");
    }
    within(DEADLINE, || {
        let (_scheduler, addr) = scheduler(&["--dashboard-address", "127.0.0.1:0"]);
        // gpu-a serves its own metrics too, on a port free a moment ago.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let own = format!("127.0.0.1:{port}");
        let _a = worker_with(
            &[],
            &addr,
            "gpu-a",
            &["--device", "sim:0", "--dashboard-address", &own],
        );
        let _b = worker_with(&[], &addr, "gpu-b", &["--device", "sim:1"]);
        let c = connect_retrying(&addr);
        c.wait_for_workers(2).unwrap();
        // A 4 MiB value held on each simulated GPU.
        let mut g = Graph::new();
        for (key, gpu) in [("held-a", "sim:0"), ("held-b", "sim:1")] {
            g.task(key, "bytes", [Arg::from(4i64 << 20), Arg::from(7)])
                .resources(&[(gpu, 1.0)]);
        }
        // Read on gpu-b: held-a travels from gpu-a.
        g.task("sum-a", "checksum", [Arg::key("held-a")])
            .resources(&[("sim:1", 1.0)]);
        let held = c.compute(&g, &["held-a", "held-b", "sum-a"]).unwrap();
        for f in &held {
            f.wait().unwrap();
        }
        eventually("each GPU's heartbeat counts its value", || {
            let info = c.scheduler_info().unwrap();
            info.workers.len() == 2 && info.workers.iter().all(|w| w.device_memory_used >= 4 << 20)
        });
        let info = c.scheduler_info().unwrap();
        let base = info
            .dashboard
            .strip_suffix("/status")
            .unwrap_or_else(|| panic!("no dashboard in {info:?}"))
            .to_string();

        let workers = dom(&format!("{base}/workers"));
        for w in &info.workers {
            let row = format!("data-address=\"{}\"", w.addr);
            assert!(workers.contains(&row), "no {row} in\n{workers}");
        }
        let devices = dom(&format!("{base}/devices"));
        for w in &info.workers {
            let row = format!(
                "data-device=\"{}\" data-used=\"{}\" data-limit=\"{}\"",
                w.device, w.device_memory_used, w.device_memory_limit
            );
            assert!(devices.contains(&row), "no {row} in\n{devices}");
        }
        eventually("gpu-b reports what it received from gpu-a", || {
            c.scheduler_info()
                .unwrap()
                .workers
                .iter()
                .any(|w| w.name == "gpu-b" && !w.received_from.is_empty())
        });
        let devices = dom(&format!("{base}/devices"));
        assert!(
            devices.contains("class=\"matrix-cell\" data-from=\"gpu-a\" data-to=\"gpu-b\""),
            "no gpu-a to gpu-b cell in\n{devices}"
        );
        let graph = dom(&format!("{base}/graph"));
        assert_eq!(graph.matches("class=\"graph-node").count(), 3, "{graph}");
        assert_eq!(graph.matches("class=\"graph-edge\"").count(), 1, "{graph}");
        let status = dom(&format!("{base}/status"));
        assert!(
            status.contains("task-rect kind-transfer\" data-key=\"held-a\" data-worker=\"gpu-b\""),
            "no transfer of held-a to gpu-b in\n{status}"
        );
        for key in ["held-a", "held-b"] {
            assert!(
                status.contains(&format!("data-key=\"{key}\"")),
                "no {key} in\n{status}"
            );
        }
        let task = dom(&format!("{base}/task?key=held-a"));
        assert!(task.matches("class=\"story-row\"").count() >= 3, "{task}");
        assert!(
            task.contains("task-finished") && task.contains("gpu-a"),
            "{task}"
        );
        let workers_page = dom(&format!("{base}/workers"));
        let b_url = &info
            .workers
            .iter()
            .find(|w| w.name == "gpu-b")
            .unwrap()
            .dashboard;
        assert!(
            workers_page.contains(&format!("href=\"{b_url}/metrics\"")),
            "no link to gpu-b's metrics in\n{workers_page}"
        );

        let metrics = http_get(&format!("{base}/metrics"));
        let mut promtool = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .output_with(&metrics);
        assert!(promtool.status.success(), "{promtool:?}\n{metrics}");
        promtool.stdout.clear();
        assert_eq!(
            metric_sum(&metrics, "dask_scheduler_workers"),
            2.0,
            "{metrics}"
        );
        assert!(
            metrics.contains("\ndask_scheduler_tasks{state=\"memory\"} 3\n"),
            "{metrics}"
        );
        assert!(
            metrics.contains("\ndask_scheduler_clients 1\n"),
            "{metrics}"
        );

        // The worker's own metrics, from its last heartbeat.
        let a = info.workers.iter().find(|w| w.name == "gpu-a").unwrap();
        let used = format!(
            "\nrask_device_memory_bytes{{device=\"sim:0\",type=\"used\"}} {}\n",
            a.device_memory_used
        );
        let mut own_metrics = String::new();
        eventually("gpu-a's metrics show its value on its GPU", || {
            own_metrics = http_get(&format!("http://{own}/metrics"));
            own_metrics.contains(&used)
                && own_metrics.contains("\ndask_worker_tasks{state=\"memory\"} 1\n")
        });
        let promtool = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .output_with(&own_metrics);
        assert!(promtool.status.success(), "{promtool:?}\n{own_metrics}");
        assert!(
            own_metrics.contains("\ndask_worker_threads 1\n"),
            "{own_metrics}"
        );

        // Each worker told the scheduler where its own metrics are: gpu-a where it was
        // asked to serve them, gpu-b on a free port (the default).
        assert_eq!(a.dashboard, format!("http://{own}"));
        let b = info.workers.iter().find(|w| w.name == "gpu-b").unwrap();
        assert!(b.dashboard.starts_with("http://127.0.0.1:"), "{b:?}");
        assert_ne!(b.dashboard, a.dashboard);
        let b_metrics = http_get(&format!("{}/metrics", b.dashboard));
        assert!(
            b_metrics.contains(
                "
dask_worker_threads 1
"
            ),
            "{b_metrics}"
        );

        for page in ["status", "workers", "devices", "graph"] {
            screenshot(&format!("{base}/{page}"), page);
        }
        drop(held);
    });
}

/// Runs a command with `input` on its standard input.
trait OutputWith {
    fn output_with(&mut self, input: &str) -> std::process::Output;
}

impl OutputWith for Command {
    fn output_with(&mut self, input: &str) -> std::process::Output {
        use std::io::Write;
        let mut child = self
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }
}
