//! π by Monte Carlo: 1,000 tasks of a typed op, summed by another.
//!
//! ```text
//! cargo run --release --example pi                  # on an embedded local cluster
//! RASK_SCHEDULER_ADDRESS=tcp://host:8786 \
//!     cargo run --release --example pi              # on a running cluster: stock
//!                                                   # workers receive this program
//! cargo run --example pi -- 10000                   # fewer samples per task
//! ```

/// Samples `n` points of the unit square (a generator seeded by `seed`) and counts those
/// inside the quarter circle.
#[rask::op]
fn hits(seed: u64, n: u64) -> u64 {
    // SplitMix64: small, fast, good enough for sampling.
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let unit = |x: u64| (x >> 11) as f64 / (1u64 << 53) as f64;
    (0..n)
        .filter(|_| {
            let (x, y) = (unit(next()), unit(next()));
            x * x + y * y <= 1.0
        })
        .count() as u64
}

/// The sum of the counts.
#[rask::op]
fn total(counts: Vec<u64>) -> u64 {
    counts.iter().sum()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    rask::worker_entry();
    let samples: u64 = match std::env::args().nth(1) {
        Some(n) => n
            .parse()
            .map_err(|e| format!("samples per task {n:?}: {e}"))?,
        None => 1_000_000,
    };
    let tasks = 1_000u64;
    let client = rask::Client::new()?;
    let counts = client.map(hits, (0..tasks).map(|seed| (seed, samples)))?;
    let sum = client.submit(total, (counts,))?;
    let pi = 4.0 * sum.result()? as f64 / (tasks * samples) as f64;
    println!("pi = {pi:.6}");
    if (pi - std::f64::consts::PI).abs() > 0.01 {
        return Err(format!("pi = {pi} is off by more than 0.01").into());
    }
    Ok(())
}
