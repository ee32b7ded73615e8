//! The scale test: 1,000 workers run a 1,000,000-task graph (a map-reduce tree, a blocked
//! matrix product and a random DAG, submitted as three graphs) while 20 workers join,
//! 20 are retired and 20 die; every core is validated at checkpoints and at the end,
//! every wanted key's value is checked exactly, every task ran, and nothing is left once
//! the keys are released.

use rask_testkit::{lower_bound_us, Faults, Graph, Shape, Sim, SimConfig};

#[test]
fn a_thousand_workers_run_a_million_tasks_through_faults() {
    let graph = Graph::generate(Shape::Mix { tasks: 1_000_000 }, 2026);
    assert_eq!(graph.len(), 1_000_000);
    let mut cfg = SimConfig {
        seed: 2026,
        workers: 1_000,
        validate_every: 200_000,
        ..SimConfig::default()
    };
    let bound = lower_bound_us(&cfg, &graph);
    cfg.faults = Faults::spread(20, bound / 10, bound * 7 / 10);
    let r = Sim::new(cfg, graph).run().unwrap_or_else(|e| panic!("{e}"));
    println!(
        "{}\n{}",
        rask_testkit::Report::markdown_header(),
        r.markdown_row()
    );
    println!("{r:?}");
    assert_eq!(r.tasks, 1_000_000);
    assert_eq!(r.joins, 1_020);
    assert_eq!(r.deaths, 20);
    assert_eq!(r.retire_requests, 20);
    assert_eq!(r.leaves, 20);
    assert!(r.retired > 0, "no retirement completed: {r:?}");
    assert!(r.checkpoints >= 5, "{r:?}");
    assert!(r.executions >= r.tasks);
    assert!(r.makespan_us >= r.lower_bound_us);
    // Placement weighs the holders of a task's inputs and the least loaded workers (at
    // most 16 + 8 a decision), not all 1,000: about 6 a task measured.
    assert!(
        r.weighed_per_task() < 24.0,
        "placement weighed {:.1} workers a task",
        r.weighed_per_task()
    );
}
