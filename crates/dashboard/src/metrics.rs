//! Prometheus metrics (text format 0.0.4) from a [`Snapshot`]: Dask's names where the
//! meaning is the same (`dask_scheduler_workers`, `dask_scheduler_tasks{state}`, …), so
//! dashboards and alerts written for Dask read Rask's; `rask_*` for what Dask lacks (device
//! memory, bytes received by link, bytes spilled by tier).

use std::fmt::Write;

use crate::snapshot::{Snapshot, WorkerRow, WorkerSnapshot};

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A family's samples: labels and value.
type Samples = Vec<(Vec<(&'static str, String)>, f64)>;

/// Metrics text, one family at a time.
struct Text(String);

impl Text {
    fn family(&mut self, name: &str, kind: &str, help: &str, samples: Samples) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            self.0.push_str(name);
            if !labels.is_empty() {
                self.0.push('{');
                for (i, (k, v)) in labels.iter().enumerate() {
                    if i > 0 {
                        self.0.push(',');
                    }
                    let _ = write!(self.0, "{k}=\"{}\"", escape(v));
                }
                self.0.push('}');
            }
            let _ = writeln!(self.0, " {}", number(value));
        }
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help, vec![(Vec::new(), value)]);
    }
}

/// A label value escaped as the format asks (backslash, double quote, newline).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A sample value: integers without a fraction.
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Dask's worker states as the scheduler sees them: `idle` (nothing to do), `saturated`
/// (at least one task per thread), `partially_saturated` otherwise.
fn worker_state(w: &WorkerRow) -> &'static str {
    match w.processing {
        0 => "idle",
        p if p >= w.threads.max(1) => "saturated",
        _ => "partially_saturated",
    }
}

/// The scheduler's metrics.
pub fn scheduler(s: &Snapshot) -> String {
    let mut t = Text(String::new());
    t.one(
        "dask_scheduler_clients",
        "gauge",
        "Clients connected.",
        s.clients as f64,
    );
    let states = ["idle", "partially_saturated", "saturated"];
    t.family(
        "dask_scheduler_workers",
        "gauge",
        "Workers connected, by state.",
        states
            .iter()
            .map(|st| {
                let n = s.workers.iter().filter(|w| worker_state(w) == *st).count();
                (vec![("state", st.to_string())], n as f64)
            })
            .collect(),
    );
    t.one(
        "dask_scheduler_workers_added_total",
        "counter",
        "Workers that joined since the scheduler started.",
        s.workers_added as f64,
    );
    t.one(
        "dask_scheduler_workers_removed_total",
        "counter",
        "Workers that left since the scheduler started.",
        s.workers_removed as f64,
    );
    t.family(
        "dask_scheduler_tasks",
        "gauge",
        "Tasks, by state.",
        s.tasks
            .iter()
            .map(|(st, n)| (vec![("state", st.clone())], *n as f64))
            .collect(),
    );
    t.one(
        "rask_scheduler_tasks_completed_total",
        "counter",
        "Tasks finished since the scheduler started.",
        s.tasks_completed as f64,
    );
    let prefix = |p: &str| vec![("task_prefix_name", p.to_string())];
    t.family(
        "dask_scheduler_tasks_compute_seconds_total",
        "counter",
        "Seconds tasks computed, by task prefix.",
        s.prefixes
            .iter()
            .map(|p| (prefix(&p.prefix), p.compute_s))
            .collect(),
    );
    t.family(
        "dask_scheduler_tasks_output_bytes",
        "gauge",
        "Bytes of task outputs, by task prefix.",
        s.prefixes
            .iter()
            .map(|p| (prefix(&p.prefix), p.output_bytes as f64))
            .collect(),
    );
    t.family(
        "rask_scheduler_prefix_tasks",
        "gauge",
        "Tasks of each prefix now, by state.",
        s.prefixes
            .iter()
            .flat_map(|p| {
                [
                    ("waiting", p.waiting),
                    ("processing", p.processing),
                    ("memory", p.memory),
                    ("erred", p.erred),
                ]
                .map(|(st, n)| {
                    let mut l = prefix(&p.prefix);
                    l.push(("state", st.to_string()));
                    (l, n as f64)
                })
            })
            .collect(),
    );
    workers(&mut t, &s.workers);
    t.0
}

/// Per-worker families, as the scheduler hears of its workers.
fn workers(t: &mut Text, ws: &[WorkerRow]) {
    let w = |w: &WorkerRow| vec![("worker", w.name.clone())];
    t.family(
        "rask_worker_processing_tasks",
        "gauge",
        "Tasks running or queued on each worker.",
        ws.iter().map(|x| (w(x), x.processing as f64)).collect(),
    );
    t.family(
        "rask_worker_memory_bytes",
        "gauge",
        "Bytes each worker holds, by where: held in host memory, spilled to host (from a device), spilled to disk.",
        ws.iter()
            .flat_map(|x| {
                [
                    ("held", x.memory),
                    ("spilled_host", x.spilled_host),
                    ("spilled_disk", x.spilled_disk),
                ]
                .map(|(kind, v)| {
                    let mut l = w(x);
                    l.push(("type", kind.to_string()));
                    (l, v as f64)
                })
            })
            .collect(),
    );
    let devices: Vec<&WorkerRow> = ws.iter().filter(|x| x.device != "host").collect();
    t.family(
        "rask_device_memory_bytes",
        "gauge",
        "Device memory of each worker's GPU (CUDA or simulated): in use and its limit.",
        devices
            .iter()
            .flat_map(|x| {
                [("used", x.device_memory), ("limit", x.device_memory_limit)].map(|(k, v)| {
                    let mut l = w(x);
                    l.push(("device", x.device.clone()));
                    l.push(("type", k.to_string()));
                    (l, v as f64)
                })
            })
            .collect(),
    );
    t.family(
        "rask_worker_received_bytes_total",
        "counter",
        "Bytes each worker received from its peers, by link class (nvlink, pcie, shm, tcp, local).",
        ws.iter()
            .flat_map(|x| {
                x.received.iter().map(move |(link, n)| {
                    let mut l = w(x);
                    l.push(("link", link.clone()));
                    (l, *n as f64)
                })
            })
            .collect(),
    );
    t.family(
        "rask_worker_last_seen_seconds",
        "gauge",
        "Seconds since each worker's last heartbeat.",
        ws.iter().map(|x| (w(x), x.last_seen_s)).collect(),
    );
}

/// A worker's own metrics (its `/metrics`).
pub fn worker(w: &WorkerSnapshot) -> String {
    let mut t = Text(String::new());
    t.one(
        "dask_worker_threads",
        "gauge",
        "Executor threads.",
        w.threads as f64,
    );
    t.family(
        "dask_worker_tasks",
        "gauge",
        "Tasks on this worker, by state.",
        w.tasks
            .iter()
            .map(|(st, n)| (vec![("state", st.clone())], *n as f64))
            .collect(),
    );
    let spilled: u64 = w
        .spilled
        .iter()
        .filter(|(d, _)| d.ends_with("disk"))
        .map(|(_, n)| n)
        .sum();
    t.family(
        "dask_worker_memory_bytes",
        "gauge",
        "Memory: values held (managed), the rest of the process (unmanaged), spilled to disk.",
        [
            ("managed", w.managed),
            ("unmanaged", w.unmanaged),
            ("spilled", spilled),
        ]
        .map(|(k, v)| (vec![("type", k.to_string())], v as f64))
        .into(),
    );
    t.family(
        "rask_worker_spilled_bytes_total",
        "counter",
        "Bytes moved between tiers, by direction (device->host, host->disk, and back).",
        w.spilled
            .iter()
            .map(|(d, n)| (vec![("direction", d.clone())], *n as f64))
            .collect(),
    );
    let device = if w.device == "host" {
        Vec::new()
    } else {
        [("used", w.device_memory), ("limit", w.device_memory_limit)]
            .map(|(k, v)| {
                (
                    vec![("device", w.device.clone()), ("type", k.to_string())],
                    v as f64,
                )
            })
            .into()
    };
    t.family(
        "rask_device_memory_bytes",
        "gauge",
        "Device memory of this worker's GPU (CUDA or simulated): in use and its limit.",
        device,
    );
    t.family(
        "rask_worker_received_bytes_total",
        "counter",
        "Bytes received from peers, by link class (nvlink, pcie, shm, tcp, local).",
        w.received
            .iter()
            .map(|(l, n)| (vec![("link", l.clone())], *n as f64))
            .collect(),
    );
    t.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::PrefixRow;

    pub(crate) fn sample() -> Snapshot {
        let worker = |name: &str, processing, device: &str| WorkerRow {
            name: name.into(),
            address: format!("tcp://127.0.0.1:{}", 9000 + name.len()),
            host: "node1".into(),
            device: device.into(),
            threads: 2,
            processing,
            memory: 1 << 20,
            spilled_host: 0,
            spilled_disk: 4096,
            device_memory: 3 << 20,
            device_memory_limit: 8 << 20,
            received: vec![("shm".into(), 100), ("nvlink".into(), 7)],
            ..Default::default()
        };
        Snapshot {
            clients: 1,
            workers: vec![
                worker("a", 0, "sim:0"),
                worker("b\"x", 1, "host"),
                worker("c", 5, "host"),
            ],
            tasks: vec![("memory".into(), 12), ("processing".into(), 3)],
            prefixes: vec![PrefixRow {
                prefix: "array.matmul".into(),
                memory: 12,
                processing: 3,
                compute_s: 1.5,
                output_bytes: 4096,
                ..Default::default()
            }],
            tasks_completed: 40,
            workers_added: 4,
            workers_removed: 1,
            ..Default::default()
        }
    }

    #[test]
    fn the_scheduler_speaks_dasks_names_with_the_values_of_the_snapshot() {
        let m = scheduler(&sample());
        let has = |line: &str| assert!(m.lines().any(|l| l == line), "no {line:?} in\n{m}");
        has("dask_scheduler_clients 1");
        has("dask_scheduler_workers{state=\"idle\"} 1");
        has("dask_scheduler_workers{state=\"partially_saturated\"} 1");
        has("dask_scheduler_workers{state=\"saturated\"} 1");
        has("dask_scheduler_workers_added_total 4");
        has("dask_scheduler_tasks{state=\"memory\"} 12");
        has("dask_scheduler_tasks_compute_seconds_total{task_prefix_name=\"array.matmul\"} 1.5");
        has(
            "rask_scheduler_prefix_tasks{task_prefix_name=\"array.matmul\",state=\"processing\"} 3",
        );
        has("rask_device_memory_bytes{worker=\"a\",device=\"sim:0\",type=\"limit\"} 8388608");
        has("rask_worker_received_bytes_total{worker=\"c\",link=\"nvlink\"} 7");
        // A quote in a name is escaped, not ending the label.
        has("rask_worker_processing_tasks{worker=\"b\\\"x\"} 1");
        // Every family says what it is before its samples.
        for l in m.lines().filter(|l| !l.starts_with('#')) {
            let name = l.split(['{', ' ']).next().unwrap();
            assert!(m.contains(&format!("# TYPE {name} ")), "{name}");
        }
    }

    #[test]
    fn a_worker_speaks_dasks_names_too() {
        let w = WorkerSnapshot {
            name: "w".into(),
            threads: 4,
            tasks: vec![("executing".into(), 2), ("memory".into(), 9)],
            managed: 100,
            unmanaged: 50,
            spilled: vec![("device->host".into(), 30), ("host->disk".into(), 20)],
            device: "cuda:0".into(),
            device_memory: 5,
            device_memory_limit: 8,
            received: vec![("nvlink".into(), 64)],
        };
        let m = worker(&w);
        for line in [
            "dask_worker_threads 4",
            "dask_worker_tasks{state=\"executing\"} 2",
            "dask_worker_memory_bytes{type=\"managed\"} 100",
            "dask_worker_memory_bytes{type=\"spilled\"} 20",
            "rask_worker_spilled_bytes_total{direction=\"device->host\"} 30",
            "rask_device_memory_bytes{device=\"cuda:0\",type=\"used\"} 5",
            "rask_worker_received_bytes_total{link=\"nvlink\"} 64",
        ] {
            assert!(m.lines().any(|l| l == line), "no {line:?} in\n{m}");
        }
        let host = worker(&WorkerSnapshot {
            device: "host".into(),
            ..w
        });
        assert!(!host.contains("rask_device_memory_bytes{"), "{host}");
    }

    #[test]
    fn values_print_as_prometheus_reads_them() {
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(-2.0), "-2");
        assert_eq!(escape("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
    }
}
