//! (x @ x.T).sum() on a random 4096 × 4096 f32 array in 1024 × 1024 chunks, on a local
//! cluster (CPU workers), printing the result and the GFLOP/s of the whole computation.
//!
//!     cargo run --release --example matmul [-- N CHUNK]

use std::time::Instant;

use rask::array::{Array, DType};
use rask::Client;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().map_or(Ok(4096), |s| s.parse())?;
    let chunk: u64 = args.next().map_or(Ok(1024), |s| s.parse())?;
    let client = Client::new()?;
    let x = Array::random_uniform(&[n, n], &[chunk, chunk], DType::F32, 42, 0.0, 1.0)?;
    let total = x.matmul(&x.t()?)?.sum(8);
    let tasks = total.graph().len();
    let t = Instant::now();
    let v = client.compute_array::<f32>(&total)?;
    let secs = t.elapsed().as_secs_f64();
    let sum = v.iter().next().copied().unwrap_or_default();
    let flops = 2.0 * (n as f64).powi(3);
    println!(
        "(x @ x.T).sum() for x: {n}×{n} f32 in {chunk}×{chunk} chunks ({tasks} tasks): {sum:.6e}"
    );
    println!(
        "{secs:.3} s, {:.1} GFLOP/s (matmul flops only)",
        flops / secs / 1e9
    );
    // E[x_ij x_kj] = 1/3 on the diagonal, 1/4 elsewhere: the expected sum, as a check.
    let expect = n as f64 * n as f64 * n as f64 / 4.0 + n as f64 * n as f64 * (1.0 / 3.0 - 0.25);
    println!("expected about {expect:.6e} for uniform [0, 1) entries");
    Ok(())
}
