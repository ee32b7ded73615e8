//! The benchmark harness. `rask-bench tasks` measures task throughput, round trips,
//! dependent graphs, cluster start and scheduler memory per task on a cluster of worker
//! processes over TCP, and runs the same workloads on Dask in the same invocation;
//! `rask-bench p2p` measures transfers between workers, `rask-bench array` blocked-array
//! expressions, each with its peers beside it.
//!
//! # Layout
//!
//! This file is the command line only: options and dispatch, no measuring. One module
//! per benchmark family measures and prints its figures: `tasks`, `p2p` (with
//! `p2p::sim` for simulated GPUs) and `array`. They share `stats` (figures, medians,
//! percentiles), `procs` (the processes started beside this one, memory probes, CPU
//! pinning, the round-trip floor), `peers` (the Dask, numpy, UCX and iperf3 scripts) and
//! `report` (the tasks table and JSON). `dashboard` measures an open dashboard page (with
//! `watch`, the poller of `tasks --dashboard`).

// The options' doc comments are their --help text, where `N[:MEMORY]` is a usage
// pattern, not a link.
#![allow(rustdoc::broken_intra_doc_links)]

/// mimalloc, as in the `rask` binary (see `alloc`). BENCHMARKS.md ("The client's
/// allocator") has the figures with glibc's allocator beside it; a client program
/// chooses its own.
#[global_allocator]
static GLOBAL: alloc::Counting = alloc::Counting;

mod alloc;
mod array;
mod dashboard;
mod deploy;
mod p2p;
mod peers;
mod procs;
mod recovery;
mod report;
mod ship;
mod stats;
mod tasks;
mod tls;
mod typed;
mod watch;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "rask-bench", about = "Rask's benchmark harness")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Task throughput, round trips, dependent graphs, cluster start, scheduler memory.
    Tasks(TasksArgs),
    /// Worker-to-worker transfer bandwidth, with memcpy, UCX, iperf3 and Dask beside it.
    P2p(P2pArgs),
    /// Blocked-array operations, with dask.array and numpy beside them.
    Array(ArrayArgs),
    /// Shipping this program to stock workers: connect to first result, bytes sent.
    Ship(ShipArgs),
    /// Cluster managers: adaptive scaling's reaction to a burst, SlurmCluster's scale,
    /// beside Dask's LocalCluster.adapt and dask-jobqueue.
    Deploy(DeployArgs),
    /// What an open dashboard page costs the scheduler, and what a page costs the browser
    /// with a million tasks held (headless Chromium).
    Dashboard(DashboardArgs),
    /// A scheduler killed mid-graph and restarted from its journal: restore time, time
    /// to every result, tasks computed again.
    Recovery(RecoveryArgs),
    /// Echo bytes on a loopback port (the peer process of the round-trip floor).
    #[command(hide = true)]
    EchoServer,
}

/// How every benchmark reports.
#[derive(clap::Args)]
struct Output {
    /// Write every figure as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Print Markdown tables.
    #[arg(long)]
    markdown: bool,
    /// Skip the peers measured beside Rask (Dask, numpy, memcpy, UCX, iperf3).
    #[arg(long)]
    no_peer: bool,
}

#[derive(clap::Args)]
struct TasksArgs {
    /// Use a running scheduler (with its workers) instead of starting a cluster.
    #[arg(long)]
    scheduler: Option<String>,
    /// Runs per workload (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    #[command(flatten)]
    out: Output,
    /// Run Dask's 100,000-task workload too (slow: minutes).
    #[arg(long)]
    peer_full: bool,
    /// Tasks in the scheduler-memory graph and futures in the client-memory workload.
    #[arg(long, default_value_t = 1_000_000)]
    memory_tasks: usize,
    /// Only these workloads (comma-separated names, e.g. round_trip_1000,chain_5000).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Serve the dashboard and poll it throughout, as ten open status pages would (its
    /// status, task stream and metrics, every 100 ms): what watching costs the scheduler.
    #[arg(long)]
    dashboard: bool,
    /// Round trips over TLS beside the same over plaintext (`round_trip_1000_tls` and
    /// `round_trip_1000_plain`): two clusters of a scheduler process and two worker
    /// processes, every hop over tcp, their runs alternating.
    #[arg(long)]
    tls: bool,
}

#[derive(clap::Args)]
struct DashboardArgs {
    /// Independent tasks per round, and held while the pages are loaded.
    #[arg(long, default_value_t = 1_000_000)]
    tasks: usize,
    /// Rounds of each (no page, page open), alternating.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Milliseconds of a page's own (virtual) time when it is loaded with the tasks held.
    #[arg(long, default_value_t = 5_000)]
    budget_ms: u64,
}

#[derive(clap::Args)]
struct RecoveryArgs {
    /// Independent tasks in the graph (each result held by the client).
    #[arg(long, default_value_t = 100_000)]
    tasks: usize,
    /// Runs (the medians are reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// The share of the graph done when the scheduler is killed.
    #[arg(long, default_value_t = 0.5)]
    at: f64,
}

#[derive(clap::Args)]
struct ShipArgs {
    /// Stock workers on this host.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Rounds of the three cases.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    #[command(flatten)]
    out: Output,
}

#[derive(clap::Args)]
struct DeployArgs {
    /// Rounds of each measurement.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Tasks in the burst.
    #[arg(long, default_value_t = 40)]
    tasks: usize,
    /// Seconds each task of the burst sleeps.
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
    /// Most workers while adapting.
    #[arg(long, default_value_t = 4)]
    maximum: usize,
    /// Skip the Slurm figures.
    #[arg(long)]
    no_slurm: bool,
    #[command(flatten)]
    out: Output,
}

#[derive(clap::Args)]
struct ArrayArgs {
    /// transpose_sum: (x + x.T).sum(); dot: (x @ x.T).sum(); dot_general: (x @ y).sum()
    /// with y an independent random array; sum: x.sum(); elementwise:
    /// (x * 2 + x * x - x / 3).sum().
    #[arg(long, default_value = "dot")]
    op: String,
    /// The array is size × size.
    #[arg(long, default_value_t = 4096)]
    size: u64,
    /// Chunks are chunk × chunk.
    #[arg(long, default_value_t = 1024)]
    chunk: u64,
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Use this scheduler's workers instead of starting 2 worker processes × 1 thread.
    #[arg(long)]
    scheduler: Option<String>,
    /// Timed runs after a warm-up; medians reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    #[command(flatten)]
    out: Output,
    /// Run on N simulated GPUs (N[:MEMORY], one worker process each) instead of 2 CPU
    /// workers; chunk tasks then ask for a GPU.
    #[arg(long)]
    sim_gpus: Option<String>,
}

#[derive(clap::Args)]
struct P2pArgs {
    /// Use this scheduler's workers instead of starting a cluster: two of them must
    /// offer the resources `on-a` and `on-b` (`rask worker … --resources on-a=1`); their
    /// own transport settings apply and `--transport` only labels the figures.
    #[arg(long)]
    scheduler: Option<String>,
    /// Transport between the workers: inproc (two workers in this process), shm, tcp
    /// (worker processes), or all.
    #[arg(long, default_value = "all")]
    transport: String,
    /// Payload sizes, e.g. 1MiB,16MiB,256MiB,1GiB.
    #[arg(long, default_value = "1MiB,16MiB,256MiB,1GiB", value_delimiter = ',')]
    sizes: Vec<String>,
    /// Timed transfers per size (after one warm-up); medians and quartiles reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    #[command(flatten)]
    out: Output,
    /// Instead of the transports: N simulated GPUs (N[:MEMORY], one worker process each),
    /// their device-to-device bandwidth matrix, and spill throughput.
    #[arg(long)]
    sim_gpus: Option<String>,
    /// NVLink topology of the simulated GPUs: none, all, pairs or links like 0-1,2-3.
    #[arg(long, default_value = "pairs")]
    nvlink: String,
    /// Measure tcp over TLS too (`tcp+tls`, beside plain `tcp` in the same run): a
    /// cluster whose processes all have certificates of one CA (made with openssl).
    #[arg(long)]
    tls: bool,
}

fn main() -> Result<()> {
    // The clusters this program starts run its typed ops on worker processes of itself.
    rask::worker_entry();
    match Cli::parse().cmd {
        Cmd::Tasks(a) => tasks::run(a),
        Cmd::P2p(a) => p2p::run(a),
        Cmd::Array(a) => array::run(a),
        Cmd::Ship(a) => ship::run(a),
        Cmd::Deploy(a) => deploy::run(a),
        Cmd::Dashboard(a) => dashboard::run(a),
        Cmd::Recovery(a) => recovery::run(a),
        Cmd::EchoServer => procs::echo_server(),
    }
}
