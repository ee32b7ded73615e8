//! The simulation's checks can fail: a worker that loses one report, or returns one
//! wrong value, and a run that cannot end within its event budget, each fail the run
//! with a message naming the task.

use rask_testkit::{Graph, Sabotage, Shape, Sim, SimConfig, SimError};

fn graph() -> Graph {
    Graph::generate(Shape::Mix { tasks: 5_000 }, 5)
}

fn cfg(sabotage: Sabotage) -> SimConfig {
    SimConfig {
        workers: 20,
        validate_every: 500,
        sabotage,
        ..SimConfig::default()
    }
}

#[test]
fn an_untouched_run_passes() {
    let r = Sim::new(cfg(Sabotage::default()), graph()).run().unwrap();
    assert_eq!(r.tasks, 5_000);
    assert_eq!(r.executions, 5_000);
    assert!(r.makespan_us >= r.lower_bound_us);
}

#[test]
fn a_result_a_worker_drops_leaves_its_task_stuck_and_named() {
    let g = graph();
    let dropped = g.inputs(g.wanted[0])[0];
    let key = g.key(dropped);
    let err = Sim::new(
        cfg(Sabotage {
            drop_result_of: Some(dropped),
            ..Sabotage::default()
        }),
        g,
    )
    .run()
    .unwrap_err();
    let SimError::Lost { detail, .. } = &err else {
        panic!("expected a lost key, got {err}");
    };
    assert!(
        detail.contains(&format!("{key}: processing")),
        "the dropped task is not named: {err}"
    );
}

#[test]
fn a_wrong_result_is_caught_with_its_key() {
    let g = graph();
    let corrupted = g.wanted[0] - 1;
    let key = g.key(corrupted);
    let err = Sim::new(
        cfg(Sabotage {
            corrupt_result_of: Some(corrupted),
            ..Sabotage::default()
        }),
        g,
    )
    .run()
    .unwrap_err();
    match err {
        SimError::WrongValue { key: k, got, want } => {
            assert_eq!(k, key);
            assert_eq!(got ^ 1, want);
        }
        other => panic!("expected a wrong value, got {other}"),
    }
}

#[test]
fn a_run_past_its_event_budget_fails_naming_the_unfinished_keys() {
    let err = Sim::new(
        SimConfig {
            max_events: Some(1_000),
            ..cfg(Sabotage::default())
        },
        graph(),
    )
    .run()
    .unwrap_err();
    let SimError::Budget { events, detail, .. } = &err else {
        panic!("expected the budget to run out, got {err}");
    };
    assert_eq!(*events, 1_000);
    assert!(detail.contains("wanted keys not in memory"), "{err}");
    assert!(detail.contains(": processing on w"), "{err}");
}
