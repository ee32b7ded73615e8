//! A whole cluster in one Slurm job step, as dask-jobqueue's `SLURMRunner`: every rank
//! runs this program; rank 0 becomes the scheduler, ranks 2 and up workers, rank 1 goes
//! on as the client below.
//!
//! ```text
//! cargo build --release --example slurm_runner
//! sbatch -n 4 --wrap 'srun target/release/examples/slurm_runner'
//! ```

/// The square of `x`, on a worker rank.
#[rask::op]
fn square(x: u64) -> u64 {
    x * x
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runner = rask::slurm::SlurmRunner::start()?;
    let client = runner.client();
    client.wait_for_workers(rask::slurm::SlurmRunner::expected_workers())?;
    let squares = client.map(square, (0..100u64).map(|i| (i,)))?;
    let mut total = 0;
    for f in &squares {
        total += f.result()?;
    }
    let workers = client.scheduler_info()?.workers.len();
    println!("workers = {workers}, sum of squares = {total}");
    runner.close()?;
    Ok(())
}
