//! Prometheus metrics (text format 0.0.4) from a [`Snapshot`]: Dask's names where the
//! meaning is the same (`dask_scheduler_workers`, `dask_scheduler_tasks{state}`, …), so
//! dashboards and alerts written for Dask read Rask's; `rask_*` for what Dask lacks (device
//! memory, bytes received by link, bytes spilled by tier, GPU utilization, the dashboard's
//! own requests).
//!
//! Label values come from a bounded set (states, link classes, workers, prefixes capped by
//! the scheduler, the dashboard's routes): nothing is labelled per pair of workers or per
//! task.

use std::fmt::Write;

use std::collections::BTreeMap;

use crate::snapshot::{LinkRow, Snapshot, WorkerRow, WorkerSnapshot};

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
    links(&mut t, &s.links);
    workers(&mut t, &s.workers);
    t.0
}

/// Bytes and seconds of transfers by link class, summed over the pairs of workers.
fn links(t: &mut Text, rows: &[LinkRow]) {
    let mut by_link: BTreeMap<&str, (u64, f64)> = BTreeMap::new();
    for r in rows {
        let sum = by_link.entry(&r.link).or_default();
        sum.0 += r.bytes;
        sum.1 += r.seconds;
    }
    let link = |l: &str| vec![("link", l.to_string())];
    t.family(
        "rask_scheduler_link_bytes_total",
        "counter",
        "Bytes workers received from each other, by link class (nvlink, pcie, shm, tcp, local).",
        by_link
            .iter()
            .map(|(l, (b, _))| (link(l), *b as f64))
            .collect(),
    );
    t.family(
        "rask_scheduler_link_seconds_total",
        "counter",
        "Seconds transfers between workers took (request to arrival, summed), by link class.",
        by_link.iter().map(|(l, (_, s))| (link(l), *s)).collect(),
    );
}

/// The `rask_dashboard_requests_total` family: requests served, by route.
pub fn dashboard_requests(counts: &[(&str, u64)]) -> String {
    let mut t = Text(String::new());
    t.family(
        "rask_dashboard_requests_total",
        "counter",
        "Requests the dashboard served, by route.",
        counts
            .iter()
            .map(|(route, n)| (vec![("route", route.to_string())], *n as f64))
            .collect(),
    );
    t.0
}

/// A GPU's utilization in percent as a ratio in 0..=1.
fn ratio(percent: f64) -> f64 {
    (percent / 100.0).clamp(0.0, 1.0)
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
        "rask_device_utilization_ratio",
        "gauge",
        "How busy each worker's GPU was over its last heartbeat (0 to 1), where known.",
        ws.iter()
            .filter_map(|x| Some((w(x), ratio(x.utilization?))))
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
    t.family(
        "rask_worker_transfer_seconds_total",
        "counter",
        "Seconds spent receiving from peers (request to arrival, summed), by link class.",
        w.transfer_seconds
            .iter()
            .map(|(l, s)| (vec![("link", l.clone())], *s))
            .collect(),
    );
    if let Some(u) = w.utilization {
        t.one(
            "rask_device_utilization_ratio",
            "gauge",
            "How busy this worker's GPU was over its last heartbeat (0 to 1).",
            ratio(u),
        );
    }
    t.0
}

#[cfg(test)]
mod tests;
