//! `rask-sim`: runs the simulated cluster at several sizes and prints a markdown table of
//! the scheduler core's CPU per task, the makespan against its lower bound and the bytes
//! moved against the locality oracle. Every run is also checked (exact values, nothing
//! lost); a failed check fails the command.

use anyhow::{bail, Context};
use clap::Parser;
use rask_testkit::{Faults, Graph, Shape, Sim, SimConfig};

/// Simulated runs of the scheduler at scale.
#[derive(Parser)]
#[command(name = "rask-sim")]
struct Args {
    /// Worker counts to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
    workers: Vec<u32>,
    /// Tasks in the graph.
    #[arg(long, default_value_t = 1_000_000)]
    tasks: u32,
    /// The graph's shape: mix, mapreduce, matmul or random.
    #[arg(long, default_value = "mix")]
    shape: String,
    /// Threads per worker.
    #[arg(long, default_value_t = 2)]
    threads: u32,
    /// Seed of the graph and of the run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// One-way link latency (µs).
    #[arg(long, default_value_t = 100)]
    latency_us: u64,
    /// Worker-to-worker bandwidth (bytes/s).
    #[arg(long, default_value_t = 1.25e9)]
    bandwidth: f64,
    /// Workers joining, retiring, leaving and dying during each run (each spread over 10–70 % of
    /// the run's lower bound).
    #[arg(long, default_value_t = 0)]
    faults: u32,
    /// The scheduler core's queue target per thread (µs of estimated work sent ahead);
    /// the core's default if not given.
    #[arg(long)]
    queue_target_us: Option<u64>,
    /// Validate every core after this many scheduler stimuli (0: at the end only).
    #[arg(long, default_value_t = 0)]
    validate_every: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let Some(shape) = Shape::named(&args.shape, args.tasks) else {
        bail!(
            "unknown shape {:?} (mix, mapreduce, matmul, random)",
            args.shape
        );
    };
    let graph = Graph::generate(shape, args.seed);
    eprintln!(
        "graph: {} tasks ({}), {} wanted keys",
        graph.len(),
        args.shape,
        graph.wanted.len()
    );
    println!("{}", rask_testkit::Report::markdown_header());
    for &workers in &args.workers {
        let mut cfg = SimConfig {
            seed: args.seed,
            workers,
            threads_per_worker: args.threads,
            latency_us: args.latency_us,
            bandwidth: args.bandwidth,
            validate_every: args.validate_every,
            ..SimConfig::default()
        };
        if let Some(q) = args.queue_target_us {
            cfg.core.queue_target_us = q;
        }
        if args.faults > 0 {
            let bound = rask_testkit::lower_bound_us(&cfg, &graph);
            let n = args.faults;
            cfg.faults = Faults::spread(n, bound / 10, bound * 7 / 10);
        }
        let report = Sim::new(cfg, graph.clone())
            .run()
            .with_context(|| format!("the run with {workers} workers failed its checks"))?;
        println!("{}", report.markdown_row());
        eprintln!(
            "  {workers} workers: {} events, {} stimuli, {} executions, {} deaths, {} retired, \
             busiest sender {:.1} GB, critical path {:.2} s, trace {:016x}",
            report.events,
            report.stimuli,
            report.executions,
            report.deaths,
            report.retired,
            report.max_sent_bytes as f64 / 1e9,
            report.critical_path_us as f64 / 1e6,
            report.trace_hash
        );
    }
    Ok(())
}
