//! `rask-bench array`: a blocked-array expression (`--op`) computed on the cluster, with
//! dask.array and numpy on the same expression beside it, as wall time and GFLOP/s.

use std::time::Instant;

use anyhow::{bail, Result};
use rask::{Client, LocalCluster};
use serde_json::json;

use crate::peers::run_dask_array;
use crate::stats::{mean_std, median};
use crate::ArrayArgs;

/// The expression `op` names, on `x` (and `y`, an independent array of x's shape),
/// summed to one value.
fn array_expr(
    op: &str,
    x: &rask::array::Array,
    y: &rask::array::Array,
) -> Result<rask::array::Array> {
    Ok(match op {
        "transpose_sum" => (x + &x.t()?).sum(8),
        "dot" => x.matmul(&x.t()?)?.sum(8),
        "dot_general" => x.matmul(y)?.sum(8),
        "sum" => x.sum(8),
        "elementwise" => (&(&(x * 2.0) + &(x * x)) - &(x / 3.0)).sum(8),
        other => bail!("unknown op {other:?}: transpose_sum, dot, dot_general, sum or elementwise"),
    })
}

/// What the numpy row computes: for dot, numpy's own `x @ x.T`, which it runs as SYRK
/// (half the products), for dot_general a general `x @ y`.
fn numpy_label(op: &str) -> &'static str {
    match op {
        "dot" => "numpy x @ x.T, one process (SYRK)",
        "dot_general" => "numpy x @ y, one process",
        _ => "numpy, one process",
    }
}

/// Computes the expression on the cluster after a warm-up, then prints its wall time and
/// GFLOP/s with dask.array's and numpy's beside them.
pub(crate) fn run(a: ArrayArgs) -> Result<()> {
    use rask::array::{Array, DType};
    let dtype: DType = a.dtype.parse().map_err(anyhow::Error::msg)?;
    let n = a.size;
    let flops = match a.op.as_str() {
        "dot" | "dot_general" => 2.0 * (n as f64).powi(3),
        "transpose_sum" => 2.0 * (n * n) as f64,
        "sum" => (n * n) as f64,
        _ => 6.0 * (n * n) as f64,
    };
    let (_cluster, client) = match (&a.scheduler, &a.sim_gpus) {
        (Some(addr), _) => (None, Client::connect(addr)?),
        (None, Some(spec)) => {
            let (n, memory) =
                rask_device::sim::SimGpus::parse_spec(spec).map_err(anyhow::Error::msg)?;
            let cluster = rask::LocalCUDACluster::sim(n, memory).build()?;
            let addr = cluster.scheduler_address().to_string();
            (Some(cluster), Client::connect(&addr)?)
        }
        (None, None) => {
            let cluster = LocalCluster::builder()
                .n_workers(2)
                .threads_per_worker(1)
                .processes(true)
                .build()?;
            let addr = cluster.scheduler_address().to_string();
            (Some(cluster), Client::connect(&addr)?)
        }
    };
    let workers = match &a.sim_gpus {
        Some(spec) => format!("{spec} simulated GPUs, one worker process each (SIMULATED: CPU ops on shared host memory)"),
        None => "2 worker processes × 1 thread".to_string(),
    };
    let mut times = Vec::new();
    let mut value = 0.0;
    for run in 0..=a.runs {
        let random =
            |seed: u64| Array::random_uniform(&[n, n], &[a.chunk, a.chunk], dtype, seed, 0.0, 1.0);
        let x = random(1 + run as u64)?;
        let y = random(1001 + run as u64)?;
        let e = array_expr(&a.op, &x, &y)?;
        let t = Instant::now();
        value = match dtype {
            DType::F32 => client
                .compute_array::<f32>(&e)?
                .iter()
                .next()
                .map_or(0.0, |v| *v as f64),
            _ => client
                .compute_array::<f64>(&e)?
                .iter()
                .next()
                .copied()
                .unwrap_or(0.0),
        };
        if run > 0 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    let med = median(&mut times.clone());
    let (_, std) = mean_std(&times);
    let peer = if a.out.no_peer {
        None
    } else {
        run_dask_array(&a)
            .map_err(|e| eprintln!("peers: {e:#}"))
            .ok()
    };
    let p = |k: &str| peer.as_ref().and_then(|j| j[k].as_f64());
    println!(
        "Rask array benchmark: {} on a {n}×{n} {} array in {}×{} chunks, {workers}, {} run(s) after a warm-up",
        a.op, a.dtype, a.chunk, a.chunk, a.runs
    );
    let rows = [
        ("rask", Some(med), Some(std)),
        (
            "dask.array + numpy (2 processes × 1 thread)",
            p("dask_seconds"),
            None,
        ),
        (numpy_label(&a.op), p("numpy_seconds"), None),
        (
            "numpy x @ y, one process (general GEMM)",
            p("numpy_general_seconds"),
            None,
        ),
    ];
    if a.out.markdown {
        println!("| system | wall (s) | GFLOP/s | rask advantage |");
        println!("|---|---:|---:|---:|");
    }
    for (name, secs, sd) in rows {
        let Some(secs) = secs else { continue };
        let gf = flops / secs / 1e9;
        let adv = secs / med;
        let wall = match sd {
            Some(sd) => format!("{secs:.3} ± {sd:.3}"),
            None => format!("{secs:.3}"),
        };
        if a.out.markdown {
            println!("| {name} | {wall} | {gf:.1} | {adv:.2}× |");
        } else {
            println!("{name:<46} {wall:>16} s {gf:>8.1} GFLOP/s  rask {adv:.2}×");
        }
    }
    if let Some(j) = &peer {
        println!(
            "numpy {} with {}, threads: {}",
            j["numpy_version"].as_str().unwrap_or("?"),
            j["blas"].as_str().unwrap_or("?"),
            j["numpy_threads"].as_str().unwrap_or("?")
        );
    }
    println!("rask result {value:.6e}");
    if let Some(path) = &a.out.json {
        let doc = json!({"config": {"op": a.op, "size": n, "chunk": a.chunk, "dtype": a.dtype,
                                    "runs": a.runs, "workers": workers},
                         "rask": {"seconds_median": med, "seconds_std": std, "runs": times,
                                  "gflop_per_s": flops / med / 1e9},
                         "peers": peer});
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)?;
    }
    Ok(())
}
