//! A deterministic simulated cluster for testing and measuring the scheduler at a scale
//! no machine here can run: both pure cores (the real [`SchedulerCore`] and one real
//! [`WorkerCore`] per worker), a virtual clock, links with latency, jitter and
//! bandwidth, and fault knobs (workers joining, retiring and dying mid-run).
//!
//! ```no_run
//! use rask_testkit::{Faults, Graph, Shape, Sim, SimConfig};
//!
//! let graph = Graph::generate(Shape::Mix { tasks: 100_000 }, 7);
//! let cfg = SimConfig { workers: 100, faults: Faults::spread(2, 10_000, 500_000), ..SimConfig::default() };
//! let report = Sim::new(cfg, graph).run().expect("every key computed exactly");
//! println!("{}", report.markdown_row());
//! ```
//!
//! A run is a function of its configuration and graph: the same seed gives the same
//! trace ([`Report::trace_hash`]). Every task's op returns a hash of its index and its
//! inputs' values ([`task_value`]), so a run's results are checked exactly against
//! values computed from the graph alone, also after workers die and tasks are
//! recomputed. Each run is bounded by an event budget: a run that stops making progress
//! fails naming the stuck tasks and their stories rather than hanging.
//!
//! This crate is used as a dev-dependency (and by its benchmark binary, `rask-sim`);
//! nothing in the cluster depends on it.
//!
//! [`SchedulerCore`]: rask_scheduler_core::SchedulerCore
//! [`WorkerCore`]: rask_worker_core::WorkerCore

#![warn(missing_docs)]

mod check;
mod config;
mod cpu;
mod faults;
mod graph;
mod queue;
mod report;
mod rng;
mod sim;
mod worker;

pub use config::{lower_bound_us, Faults, SimConfig};
pub use cpu::thread_cpu_ns;
pub use graph::{Graph, Shape};
pub use queue::EventQueue;
pub use report::Report;
pub use rng::{mix, task_value, Rng, TraceHash};
pub use sim::Sim;
pub use worker::Sabotage;

/// Why a simulated run failed.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A worker reported a task's value, or holds a wanted key's value, different from
    /// the one computed from the graph.
    #[error("{key}: value {got:#x}, expected {want:#x}")]
    WrongValue {
        /// The task's key.
        key: String,
        /// The value reported or held.
        got: u64,
        /// The value computed from the graph.
        want: u64,
    },
    /// A wanted key is not in memory at the end.
    #[error("{key} is {state} at the end, not in memory\n{detail}")]
    Lost {
        /// The key.
        key: String,
        /// Its state.
        state: &'static str,
        /// The stuck tasks and their stories.
        detail: String,
    },
    /// A task never ran to its end on a live worker.
    #[error("{key} never ran (it is {state})")]
    NotRun {
        /// The key.
        key: String,
        /// Its state.
        state: &'static str,
    },
    /// A key failed.
    #[error("{key} failed: {message}")]
    Erred {
        /// The key.
        key: String,
        /// The failure.
        message: String,
    },
    /// The run took more events than its budget.
    #[error("no end after {events} events (virtual time {time_us} µs): {detail}")]
    Budget {
        /// The budget.
        events: u64,
        /// Virtual time reached.
        time_us: u64,
        /// The stuck tasks and their stories.
        detail: String,
    },
    /// Something is left after every key was released.
    #[error("left behind after the release: {what}")]
    LeftBehind {
        /// What.
        what: String,
    },
    /// The scheduler core refused the graph.
    #[error("the graph was refused: {0}")]
    Graph(#[from] rask_scheduler_core::GraphError),
    /// A core broke a promise the servers rely on (or its `validate()` failed).
    #[error("broken: {what}")]
    Broken {
        /// What.
        what: String,
    },
}
