//! Independent trivial tasks on a local cluster of worker processes: a quick throughput
//! probe (the full benchmark is `rask-bench tasks`).

use std::time::Instant;

use rask::{Arg, Client, LocalCluster};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: i64 = std::env::args().nth(1).map_or(Ok(100_000), |s| s.parse())?;
    let cluster = LocalCluster::builder()
        .n_workers(2)
        .processes(true)
        .build()?;
    let client = Client::for_cluster(cluster)?;
    for _ in 0..3 {
        let t = Instant::now();
        let fs = client.map("inc", (0..n).map(|i| [Arg::from(i)]))?;
        let vals = client.gather(&fs)?;
        let dt = t.elapsed().as_secs_f64();
        assert_eq!(vals.len() as i64, n);
        println!(
            "{n} tasks in {:.1} ms: {:.0} tasks/s",
            dt * 1e3,
            n as f64 / dt
        );
    }
    Ok(())
}
