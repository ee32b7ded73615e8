//! The report of `rask-bench tasks`: one row per figure with Dask's beside it (a Markdown
//! table or plain columns), the round-trip floor, and the JSON document. It prints what
//! was measured; it measures nothing.

use std::path::Path;

use anyhow::Result;
use serde_json::{json, Value as Json};

use crate::stats::Figure;

/// Dask's value of `field` for `workload`, if its run has one. Dask's scheduler-memory
/// workload holds 100,000 tasks rather than a million; its per-task figure stands beside
/// ours.
fn peer_field(peer: Option<&Json>, workload: &str, field: &str) -> Option<f64> {
    let workload = if workload == "scheduler_memory_1000000" {
        "scheduler_memory_100000"
    } else {
        workload
    };
    peer?["results"]
        .as_array()?
        .iter()
        .find(|r| r["workload"] == workload)?[field]
        .as_f64()
}

/// Prints one row per figure (the floor's own fields aside) with Dask's value and Rask's
/// advantage, as a Markdown table or plain columns, then the round-trip floor if it was
/// measured.
pub(crate) fn report(figures: &[Figure], peer: Option<&Json>, markdown: bool) {
    let mut rows = Vec::new();
    for f in figures {
        for (field, v) in &f.fields {
            if matches!(
                *field,
                "tasks" | "floor_us" | "floor_unpinned_us" | "ratio_to_floor"
            ) {
                continue;
            }
            let theirs = peer_field(peer, f.workload, field);
            let better_low = matches!(
                *field,
                "seconds"
                    | "median_us"
                    | "p99_us"
                    | "bytes_per_task"
                    | "cpu_us_per_task"
                    | "cpu_us_here"
                    | "cpu_us_scheduler"
                    | "cpu_us_workers"
                    | "cpu_us_per_message"
            );
            let ratio = theirs.map(|t| if better_low { t / v } else { v / t });
            rows.push((f.workload, *field, *v, theirs, ratio));
        }
    }
    let field = |name: &str| {
        figures
            .iter()
            .find(|f| f.workload == "round_trip_1000")
            .and_then(|f| f.fields.iter().find(|(k, _)| *k == name).map(|(_, v)| *v))
    };
    let floor = field("floor_us");
    let unpinned = field("floor_unpinned_us").unwrap_or(f64::NAN);
    let fmt = |v: f64| {
        if v >= 100.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.3}")
        }
    };
    if markdown {
        println!("| workload | figure | rask | dask | rask advantage |");
        println!("|---|---|---:|---:|---:|");
        for (w, f, v, t, r) in &rows {
            println!(
                "| {w} | {f} | {} | {} | {} |",
                fmt(*v),
                t.map_or("—".into(), fmt),
                r.map_or("—".into(), |r| format!("{r:.1}×"))
            );
        }
    } else {
        println!(
            "{:<26} {:<15} {:>14} {:>14} {:>10}",
            "workload", "figure", "rask", "dask", "advantage"
        );
        for (w, f, v, t, r) in &rows {
            println!(
                "{w:<26} {f:<15} {:>14} {:>14} {:>10}",
                fmt(*v),
                t.map_or("-".into(), fmt),
                r.map_or("-".into(), |r| format!("{r:.1}x"))
            );
        }
    }
    if let Some(floor) = floor {
        let med = rows
            .iter()
            .find(|r| r.0 == "round_trip_1000" && r.1 == "median_us")
            .map(|r| r.2)
            .unwrap_or(0.0);
        println!(
            "round-trip floor (two blocking loopback TCP ping-pongs, ends pinned to different cores, measured now): {floor:.1} µs; rask median = {:.2}× the floor",
            med / floor
        );
        println!(
            "(the same ping-pongs unpinned, where the kernel may run both ends on one core: {unpinned:.1} µs; rask median = {:.2}× that)",
            med / unpinned
        );
    }
}

/// Writes every figure, with the cluster's configuration and Dask's document, as JSON to
/// `path`.
pub(crate) fn write_json(path: &Path, figures: &[Figure], peer: Option<&Json>) -> Result<()> {
    let ours: Vec<Json> = figures
        .iter()
        .map(|f| {
            let mut o = serde_json::Map::new();
            o.insert("workload".into(), json!(f.workload));
            for (k, v) in &f.fields {
                o.insert((*k).into(), json!(v));
            }
            o.insert("runs".into(), json!(f.runs));
            Json::Object(o)
        })
        .collect();
    let doc = json!({
        "rask": { "version": rask_proto::RASK_VERSION, "config": { "n_workers": 2, "threads_per_worker": 1, "processes": true, "transport": "tcp" }, "results": ours },
        "dask": peer,
    });
    std::fs::write(path, serde_json::to_string_pretty(&doc)?)?;
    Ok(())
}
