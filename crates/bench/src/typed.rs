//! The task workloads again with typed ops (`#[rask::op]`, `u64 → u64`), on the same
//! cluster in the same run: what a program's own functions cost beside the built-in
//! `Value` ops (encoding, decoding, the same scheduling).

use std::time::Instant;

use anyhow::Result;
use rask::{Arg, Client, Graph};

use crate::stats::{check, median, percentile, rate_figure, Figure};

/// `inc`, typed.
#[rask::op]
pub(crate) fn inc(x: u64) -> u64 {
    x + 1
}

/// `add`, typed.
#[rask::op]
fn add(a: u64, b: u64) -> u64 {
    a + b
}

/// Runs the typed workloads that `want` names.
pub(crate) fn run(
    client: &Client,
    runs: usize,
    want: &dyn Fn(&str) -> bool,
) -> Result<Vec<Figure>> {
    let mut figures = Vec::new();
    for (name, n) in [
        ("typed_independent_10000", 10_000u64),
        ("typed_independent_100000", 100_000),
    ] {
        if !want(name) {
            continue;
        }
        let mut rates = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            let fs = client.map(inc, (0..n).map(|i| (i,)))?;
            let vals: Vec<u64> = client.gather(&fs)?;
            let dt = t.elapsed().as_secs_f64();
            check(
                vals.len() as u64 == n && vals[7] == 8,
                "gathered every result",
            )?;
            drop(fs);
            rates.push(n as f64 / dt);
        }
        figures.push(rate_figure(name, "tasks_per_s", rates));
    }
    if want("typed_round_trip_1000") {
        let mut lat = Vec::new();
        for _ in 0..runs {
            for i in 0..1000u64 {
                let t = Instant::now();
                let v = client.submit(inc, (i,))?.result()?;
                lat.push(t.elapsed().as_secs_f64() * 1e6);
                check(v == i + 1, "round trip result")?;
            }
        }
        let med = median(&mut lat);
        figures.push(Figure {
            workload: "typed_round_trip_1000",
            fields: vec![("median_us", med), ("p99_us", percentile(&mut lat, 0.99))],
            runs: vec![med],
        });
    }
    if want("typed_chain_5000") {
        let mut rates = Vec::new();
        for run in 0..runs {
            let mut g = Graph::new();
            let p = format!("tchain{run}");
            g.value(&format!("{p}-0"), 0);
            for i in 1..5000 {
                g.task(
                    &format!("{p}-{i}"),
                    inc.name(),
                    [Arg::key(format!("{p}-{}", i - 1))],
                );
            }
            let t = Instant::now();
            let out = client.get(&g, &[&format!("{p}-4999")])?;
            rates.push(5000.0 / t.elapsed().as_secs_f64());
            check(out == vec![rask::Value::Int(4999)], "chain result")?;
        }
        figures.push(rate_figure("typed_chain_5000", "tasks_per_s", rates));
    }
    if want("typed_tree_10000") {
        let mut rates = Vec::new();
        for run in 0..runs {
            let (g, root, n) = crate::tasks::tree_graph(&format!("ttree{run}"), 10_000, add.name());
            let t = Instant::now();
            let out = client.get(&g, &[&root])?;
            rates.push(n as f64 / t.elapsed().as_secs_f64());
            check(
                out == vec![rask::Value::Int((0..10_000i64).sum())],
                "tree result",
            )?;
        }
        figures.push(rate_figure("typed_tree_10000", "tasks_per_s", rates));
    }
    Ok(figures)
}

/// Adds to each typed figure its ratio to the same workload with `Value` ops.
pub(crate) fn compare(figures: &mut [Figure]) {
    let value_of = |figures: &[Figure], w: &str, field: &str| {
        figures
            .iter()
            .find(|f| f.workload == w)
            .and_then(|f| f.fields.iter().find(|(k, _)| *k == field).map(|(_, v)| *v))
    };
    let pairs: Vec<(usize, f64)> = figures
        .iter()
        .enumerate()
        .filter_map(|(i, f)| {
            let plain = f.workload.strip_prefix("typed_")?;
            let (field, typed) = f.fields.first().copied()?;
            let value = value_of(figures, plain, field)?;
            // Rates: higher is better; latencies: lower is better.
            let ratio = if field == "tasks_per_s" {
                typed / value
            } else {
                value / typed
            };
            Some((i, ratio))
        })
        .collect();
    for (i, r) in pairs {
        figures[i].fields.push(("vs_value_ops", r));
    }
}
