//! The same seed gives the same run, event for event; another seed another run. Runs of
//! moderate size with every fault knob turned, so that recomputation, retirement and
//! stealing are in the trace.

use rask_testkit::{lower_bound_us, Faults, Graph, Report, Shape, Sim, SimConfig};

fn run(seed: u64) -> Report {
    let graph = Graph::generate(Shape::Mix { tasks: 20_000 }, seed);
    let mut cfg = SimConfig {
        seed,
        workers: 40,
        jitter_us: 50,
        validate_every: 2_000,
        ..SimConfig::default()
    };
    let bound = lower_bound_us(&cfg, &graph);
    cfg.faults = Faults::spread(3, bound / 10, bound * 7 / 10);
    Sim::new(cfg, graph).run().expect("the run's checks pass")
}

#[test]
fn the_same_seed_gives_the_same_trace_and_another_seed_another() {
    let first = run(11);
    let mut second = run(11);
    let other = run(12);
    assert!(
        first.deaths > 0 && first.retired > 0 && first.joins > 40,
        "{first:?}"
    );
    assert!(first.checkpoints > 5, "{first:?}");
    // Wall times differ; everything else is the same.
    second.wall_ms = first.wall_ms;
    second.scheduler_ns = first.scheduler_ns;
    second.worker_core_ns = first.worker_core_ns;
    assert_eq!(first, second);
    assert_ne!(first.trace_hash, other.trace_hash);
    assert_ne!(first.makespan_us, other.makespan_us);
}
