//! Single-thread GEMM throughput: the CPU GEMMs the chunk ops use (`gemm` for a · b,
//! `matrixmultiply` for a · bᵀ and the symmetric a · aᵀ), the other crate on each, and
//! numpy/OpenBLAS on one thread, on the same host in the same run.
//!
//! ```sh
//! cargo bench -p rask-kernels --bench gemm1 -- [n] [runs]
//! ```
//!
//! Each figure is the median of `runs` products (after one warm-up) of two n × n f32
//! matrices, row-major, as GFLOP/s counting 2n³. "NT" is `a · bᵀ` with `b` stored
//! untransposed (the transpose expressed by strides), the product a symmetric block
//! needs. The numpy side runs in the comparison venv (`RASK_COMPARE_PYTHON`, else
//! `benches/compare/setup_venv.sh`) with `OPENBLAS_NUM_THREADS=1`; without it the row is
//! left out, with the reason.

use std::process::Command;
use std::time::Instant;

use rask_kernels::chunk::Pod;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median seconds of `runs` calls of `f` after one warm-up.
fn timed(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

/// `c = a · b` (`nt`: `a · bᵀ`) by the `gemm` crate on one thread.
fn gemm_crate(n: usize, a: &[f32], b: &[f32], c: &mut [f32], nt: bool) {
    let (b_cs, b_rs) = if nt { (n as isize, 1) } else { (1, n as isize) };
    // SAFETY: three n × n buffers; the strides stay inside them.
    unsafe {
        gemm::gemm(
            n,
            n,
            n,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            n as isize,
            b.as_ptr(),
            b_cs,
            b_rs,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// `c = a · b` (`nt`: `a · bᵀ`, the transpose in the strides) by `matrixmultiply`.
fn matrixmultiply(n: usize, a: &[f32], b: &[f32], c: &mut [f32], nt: bool) {
    let (b_rs, b_cs) = if nt { (1, n as isize) } else { (n as isize, 1) };
    // SAFETY: three n × n buffers; the strides stay inside them.
    unsafe {
        matrixmultiply::sgemm(
            n,
            n,
            n,
            1.0,
            a.as_ptr(),
            n as isize,
            1,
            b.as_ptr(),
            b_rs,
            b_cs,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        )
    }
}

const NUMPY: &str = r#"
import sys, time, statistics, numpy as np
n, runs = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(1)
a = rng.random((n, n), dtype=np.float32); b = rng.random((n, n), dtype=np.float32)
def t(f):
    f(); ts = []
    for _ in range(runs):
        s = time.perf_counter(); f(); ts.append(time.perf_counter() - s)
    return statistics.median(ts)
cfg = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
print(t(lambda: a @ b), t(lambda: a @ b.T), t(lambda: a @ a.T), np.__version__, cfg.get("name"), cfg.get("version"))
"#;

fn python() -> Option<String> {
    if let Ok(p) = std::env::var("RASK_COMPARE_PYTHON") {
        return Some(p);
    }
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let out = Command::new("bash")
        .arg(format!("{root}/benches/compare/setup_venv.sh"))
        .output()
        .ok()?;
    let s = String::from_utf8(out.stdout).ok()?;
    Some(s.lines().last()?.trim().to_string())
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(1024);
    let runs = args.get(1).copied().unwrap_or(7);
    let flops = 2.0 * (n as f64).powi(3);
    let gf = |s: f64| flops / s / 1e9;
    let fill = |seed: u32| -> Vec<f32> {
        (0..n * n)
            .map(|i| ((i as u32).wrapping_mul(2654435761) ^ seed) as f32 / u32::MAX as f32)
            .collect()
    };
    let (a, b) = (fill(1), fill(2));
    let mut c = vec![0f32; n * n];
    println!("single-thread GEMM, {n}×{n}×{n} f32, median of {runs} after a warm-up");
    println!("| kernel | layout | s | GFLOP/s |");
    println!("|---|---|---:|---:|");
    let row = |name: &str, layout: &str, s: f64| {
        println!("| {name} | {layout} | {s:.4} | {:.1} |", gf(s));
    };
    let s = timed(runs, || f32::gemm(n, n, n, &a, &b, &mut c, false));
    row("rask Pod::gemm (gemm 0.19, x86-v4)", "a·b", s);
    let s = timed(runs, || matrixmultiply(n, &a, &b, &mut c, false));
    row("alternative: matrixmultiply 0.3", "a·b", s);
    let s = timed(runs, || f32::gemm_nt(n, n, n, &a, &b, &mut c, false));
    row("rask Pod::gemm_nt (matrixmultiply 0.3)", "a·bᵀ", s);
    let s = timed(runs, || gemm_crate(n, &a, &b, &mut c, true));
    row("alternative: gemm 0.19 (x86-v4)", "a·bᵀ", s);
    let s = timed(runs, || {
        f32::syrk(n, n, &a, &mut c, false);
        rask_kernels::chunk::mirror_upper(n, &mut c)
    });
    row(
        "rask Pod::syrk (matrixmultiply, a GEMM per 256-row panel)",
        "a·aᵀ (2n³ counted)",
        s,
    );
    let s = timed(runs, || matrixmultiply(n, &a, &a, &mut c, true));
    row("alternative: its full product", "a·aᵀ", s);
    let Some(py) = python() else {
        println!("(numpy left out: no comparison venv)");
        return;
    };
    let out = Command::new(&py)
        .args(["-c", NUMPY, &n.to_string(), &runs.to_string()])
        .env("OPENBLAS_NUM_THREADS", "1")
        .env("OMP_NUM_THREADS", "1")
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let s = String::from_utf8_lossy(&o.stdout);
            let f: Vec<&str> = s.split_whitespace().collect();
            let secs = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok());
            let blas = format!(
                "numpy {} ({} {}, 1 thread)",
                f.get(3).unwrap_or(&"?"),
                f.get(4).unwrap_or(&"?"),
                f.get(5).unwrap_or(&"?")
            );
            for (i, layout) in [(0, "a·b"), (1, "a·bᵀ"), (2, "a·aᵀ (SYRK; 2n³ counted)")] {
                if let Some(s) = secs(i) {
                    row(&blas, layout, s);
                }
            }
        }
        Ok(o) => println!(
            "(numpy left out: {})",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => println!("(numpy left out: {e})"),
    }
}
