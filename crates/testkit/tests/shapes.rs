//! Each graph shape alone, through every fault knob: exact values, every task run,
//! nothing left behind (the checks of `Sim::run`), with checkpoints along the way.

use rask_testkit::{lower_bound_us, Faults, Graph, Report, Shape, Sim, SimConfig};

fn run(shape: &str, tasks: u32, workers: u32) -> Report {
    let graph = Graph::generate(Shape::named(shape, tasks).unwrap(), 3);
    let mut cfg = SimConfig {
        seed: 3,
        workers,
        threads_per_worker: 3,
        validate_every: 1_000,
        ..SimConfig::default()
    };
    let bound = lower_bound_us(&cfg, &graph);
    cfg.faults = Faults::spread(2, bound / 10, bound * 7 / 10);
    let r = Sim::new(cfg, graph)
        .run()
        .unwrap_or_else(|e| panic!("{shape}: {e}"));
    assert_eq!(r.deaths, 2, "{shape}: {r:?}");
    assert_eq!(r.leaves + r.retire_requests, 4, "{shape}: {r:?}");
    assert!(r.makespan_us >= r.lower_bound_us, "{shape}: {r:?}");
    r
}

#[test]
fn a_map_reduce_tree_survives_faults() {
    let r = run("mapreduce", 20_000, 30);
    assert_eq!(r.tasks, 17_500 + 2_188 + 274 + 35 + 5 + 1);
}

#[test]
fn a_blocked_matmul_survives_faults() {
    let r = run("matmul", 8_000, 30);
    // n = k = 20: 400 + 400 blocks, 8,000 products, 400 sums.
    assert_eq!(r.tasks, 9_200);
    assert!(r.bytes_moved > 0);
}

#[test]
fn a_random_dag_survives_faults() {
    let r = run("random", 20_000, 30);
    assert_eq!(r.tasks, 20_000);
}

#[test]
fn faults_at_a_rate_leave_every_result_exact() {
    let graph = Graph::generate(Shape::named("random", 20_000).unwrap(), 8);
    let mut cfg = SimConfig {
        seed: 8,
        workers: 30,
        validate_every: 1_000,
        ..SimConfig::default()
    };
    let bound = lower_bound_us(&cfg, &graph);
    cfg.faults = Faults::at_rate(25.0, bound / 10, bound * 7 / 10, 8);
    let planned = cfg.faults.deaths.len() as u32;
    assert!(planned >= 3, "{:?}", cfg.faults);
    let r = Sim::new(cfg, graph).run().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.deaths, planned, "{r:?}");
}
