//! The metrics' text, line by line, from made-up snapshots.

use super::*;
use crate::snapshot::{LinkRow, PrefixRow};

fn sample() -> Snapshot {
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
        ]
        .into_iter()
        .map(|w| WorkerRow {
            utilization: (w.name == "a").then_some(42.5),
            ..w
        })
        .collect(),
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
        links: vec![
            link("a", "c", "nvlink", 3 << 20, 0.5),
            link("c", "a", "nvlink", 1 << 20, 0.25),
            link("a", "b\"x", "tcp", 1000, 2.0),
        ],
        ..Default::default()
    }
}

fn link(from: &str, to: &str, link: &str, bytes: u64, seconds: f64) -> LinkRow {
    LinkRow {
        from: from.into(),
        to: to.into(),
        link: link.into(),
        bytes,
        seconds,
    }
}

/// `m` has exactly `line` among its lines.
fn has(m: &str, line: &str) {
    assert!(m.lines().any(|l| l == line), "no {line:?} in\n{m}");
}

#[test]
fn the_scheduler_speaks_dasks_names_with_the_values_of_the_snapshot() {
    let m = scheduler(&sample());
    let has = |line: &str| has(&m, line);
    has("dask_scheduler_clients 1");
    has("dask_scheduler_workers{state=\"idle\"} 1");
    has("dask_scheduler_workers{state=\"partially_saturated\"} 1");
    has("dask_scheduler_workers{state=\"saturated\"} 1");
    has("dask_scheduler_workers_added_total 4");
    has("dask_scheduler_tasks{state=\"memory\"} 12");
    has("dask_scheduler_tasks_compute_seconds_total{task_prefix_name=\"array.matmul\"} 1.5");
    has("rask_scheduler_prefix_tasks{task_prefix_name=\"array.matmul\",state=\"processing\"} 3");
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
        transfer_seconds: vec![("nvlink".into(), 0.125), ("tcp".into(), 3.0)],
        utilization: Some(87.0),
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
        "rask_worker_transfer_seconds_total{link=\"nvlink\"} 0.125",
        "rask_worker_transfer_seconds_total{link=\"tcp\"} 3",
        "rask_device_utilization_ratio 0.87",
    ] {
        assert!(m.lines().any(|l| l == line), "no {line:?} in\n{m}");
    }
    let host = worker(&WorkerSnapshot {
        device: "host".into(),
        utilization: None,
        ..w
    });
    assert!(!host.contains("rask_device_memory_bytes{"), "{host}");
    // An unknown utilization is no sample (not a zero).
    assert!(!host.contains("rask_device_utilization_ratio"), "{host}");
}

#[test]
fn values_print_as_prometheus_reads_them() {
    assert_eq!(number(3.0), "3");
    assert_eq!(number(0.25), "0.25");
    assert_eq!(number(-2.0), "-2");
    assert_eq!(escape("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
}

#[test]
fn links_are_summed_by_class_not_by_pair() {
    let m = scheduler(&sample());
    has(
        &m,
        "rask_scheduler_link_bytes_total{link=\"nvlink\"} 4194304",
    );
    has(&m, "rask_scheduler_link_bytes_total{link=\"tcp\"} 1000");
    has(
        &m,
        "rask_scheduler_link_seconds_total{link=\"nvlink\"} 0.75",
    );
    has(&m, "rask_scheduler_link_seconds_total{link=\"tcp\"} 2");
    let samples = |name: &str| m.lines().filter(|l| l.starts_with(name)).count();
    // Two classes, whatever the number of pairs; no worker label.
    assert_eq!(samples("rask_scheduler_link_bytes_total{"), 2, "{m}");
    assert!(!m.contains("rask_scheduler_link_bytes_total{worker"), "{m}");
}

#[test]
fn utilization_is_a_ratio_for_the_workers_that_know_it() {
    let m = scheduler(&sample());
    has(&m, "rask_device_utilization_ratio{worker=\"a\"} 0.425");
    let samples = m
        .lines()
        .filter(|l| l.starts_with("rask_device_utilization_ratio{"))
        .count();
    assert_eq!(samples, 1, "only worker a knows its utilization:\n{m}");
    assert_eq!(ratio(150.0), 1.0);
    assert_eq!(ratio(-3.0), 0.0);
}

#[test]
fn requests_are_counted_by_route() {
    let m = dashboard_requests(&[("status", 3), ("api_graph", 0)]);
    assert_eq!(
        m,
        "# HELP rask_dashboard_requests_total Requests the dashboard served, by route.\n\
         # TYPE rask_dashboard_requests_total counter\n\
         rask_dashboard_requests_total{route=\"status\"} 3\n\
         rask_dashboard_requests_total{route=\"api_graph\"} 0\n"
    );
}
