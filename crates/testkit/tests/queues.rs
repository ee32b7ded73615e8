//! Placement measured on the virtual clock (the same for a seed on any host): a worker
//! whose tasks wait on transfers from peers is sent enough work ahead that its threads
//! keep busy meanwhile.

use rask_testkit::{Graph, Shape, Sim, SimConfig};

#[test]
fn a_matmul_whose_tasks_wait_on_their_inputs_keeps_the_threads_busy() {
    // 100 workers, 1 MiB blocks: every product fetches two blocks from peers that send
    // one transfer at a time. At the queue target alone (5 ms of work per thread ahead)
    // the run took 2.64 times its lower bound, the threads busy 38 % of it.
    let graph = Graph::generate(Shape::named("matmul", 20_000).unwrap(), 1);
    let cfg = SimConfig {
        seed: 1,
        workers: 100,
        ..SimConfig::default()
    };
    let r = Sim::new(cfg, graph).run().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.tasks, 21_870);
    assert!(r.makespan_ratio() < 1.6, "makespan over its bound: {r:?}");
    assert!(r.utilization() > 0.6, "threads busy: {r:?}");
}
