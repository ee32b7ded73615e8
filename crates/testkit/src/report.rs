//! What a run measured: the scheduler core's CPU time, the makespan against its lower
//! bound, bytes moved against the locality oracle, the faults and recomputations, and
//! the trace's hash; as one markdown table row.

/// The figures of one run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// Workers at the start.
    pub workers: u32,
    /// Threads per worker.
    pub threads_per_worker: u32,
    /// Tasks in the graph.
    pub tasks: u64,
    /// Events taken.
    pub events: u64,
    /// Inputs the scheduler core handled (messages, workers joining and lost, …).
    pub stimuli: u64,
    /// CPU time of the scheduler core's calls (graph submission, every stimulus and
    /// taking its actions; not `validate()`), in nanoseconds of the thread's CPU clock.
    pub scheduler_ns: u64,
    /// Wall time spent in the worker cores' calls, all workers together (ns).
    pub worker_core_ns: u64,
    /// Virtual time at which the last wanted key was reported in memory (µs).
    pub makespan_us: u64,
    /// The longest path of nominal durations (µs).
    pub critical_path_us: u64,
    /// Every task's nominal duration, summed (µs).
    pub work_us: u64,
    /// The makespan no schedule beats (communication aside): the critical path at the
    /// fastest worker's speed, or the work over every thread of the starting workers at
    /// its worker's speed (µs).
    pub lower_bound_us: u64,
    /// Bytes of values sent between workers (dependencies and retirement copies).
    pub bytes_moved: u64,
    /// Bytes sent by the worker that sent the most (a hot holder's link is the
    /// bottleneck when this is far above `bytes_moved / workers`).
    pub max_sent_bytes: u64,
    /// The locality oracle ([`Graph::locality_oracle_bytes`](crate::Graph::locality_oracle_bytes)).
    pub oracle_bytes: u64,
    /// Virtual time threads spent running ops, all runs counted (µs).
    pub busy_us: u64,
    /// Runs of ops that ended on a live worker (cancelled ones included).
    pub executions: u64,
    /// Runs beyond one per task: recomputations after losses, and runs cancelled.
    pub extra_runs: u64,
    /// Tasks moved by work stealing.
    pub steals: u64,
    /// Workers placement weighed, in all ([`SchedulerCore::workers_weighed`]): its
    /// work, bounded per decision whatever the cluster's size.
    ///
    /// [`SchedulerCore::workers_weighed`]: rask_scheduler_core::SchedulerCore::workers_weighed
    pub weighed: u64,
    /// Workers that joined (the starting ones included).
    pub joins: u32,
    /// Retirements a client asked for.
    pub retire_requests: u32,
    /// Workers that asked to close gracefully.
    pub leaves: u32,
    /// Workers the scheduler reported retired.
    pub retired: u32,
    /// Workers the scheduler closed.
    pub closed: u32,
    /// Workers that died.
    pub deaths: u32,
    /// Checkpoints at which every core was validated.
    pub checkpoints: u32,
    /// Hash of the whole trace: every event with its virtual time and every action of
    /// the scheduler core, in order.
    pub trace_hash: u64,
    /// Wall time of the run (ms).
    pub wall_ms: u64,
}

impl Report {
    /// Scheduler core CPU per task (µs).
    pub fn scheduler_us_per_task(&self) -> f64 {
        self.scheduler_ns as f64 / 1e3 / self.tasks.max(1) as f64
    }

    /// Workers placement weighed per task.
    pub fn weighed_per_task(&self) -> f64 {
        self.weighed as f64 / self.tasks.max(1) as f64
    }

    /// Makespan over its lower bound.
    pub fn makespan_ratio(&self) -> f64 {
        self.makespan_us as f64 / self.lower_bound_us.max(1) as f64
    }

    /// Bytes moved over the locality oracle.
    pub fn bytes_ratio(&self) -> f64 {
        self.bytes_moved as f64 / self.oracle_bytes.max(1) as f64
    }

    /// The share of the starting threads' time spent running ops until the makespan.
    pub fn utilization(&self) -> f64 {
        let threads = f64::from(self.workers.max(1) * self.threads_per_worker.max(1));
        self.busy_us as f64 / (self.makespan_us.max(1) as f64 * threads)
    }

    /// The header of [`Report::markdown_row`]'s table.
    pub fn markdown_header() -> &'static str {
        "| workers | tasks | scheduler CPU µs/task | worker cores µs/task (wall) | makespan (s) | lower bound (s) | makespan / bound | threads busy | bytes moved (GB) | oracle (GB) | moved / oracle | steals | extra runs | workers weighed / task | wall (s) |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    }

    /// The run as one row of a markdown table.
    pub fn markdown_row(&self) -> String {
        format!(
            "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} % | {:.1} | {:.1} | {:.2} | {} | {} | {:.1} | {:.1} |",
            self.workers,
            self.tasks,
            self.scheduler_us_per_task(),
            self.worker_core_ns as f64 / 1e3 / self.tasks.max(1) as f64,
            self.makespan_us as f64 / 1e6,
            self.lower_bound_us as f64 / 1e6,
            self.makespan_ratio(),
            100.0 * self.utilization(),
            self.bytes_moved as f64 / 1e9,
            self.oracle_bytes as f64 / 1e9,
            self.bytes_ratio(),
            self.steals,
            self.extra_runs,
            self.weighed_per_task(),
            self.wall_ms as f64 / 1e3,
        )
    }
}
