//! A worker's queue covers the time its tasks wait for inputs from peers: each report
//! of such a wait moves the worker's moving average of them, and the worker is sent
//! that much more work ahead per thread than the queue target. `validate()` after every
//! step (the load index files a worker by whether it takes tasks).

mod common;

use common::{op_task, worker_with, C};
use rask_proto::{TaskId, WorkerId};
use rask_scheduler_core::{Action, CoreConfig, SchedulerCore, MAX_FETCH_US};

const A: WorkerId = WorkerId(0);

/// Tasks of 1 ms (as far as the core knows) and a queue target of 5 ms per thread.
fn config() -> CoreConfig {
    CoreConfig {
        default_duration_us: 1_000,
        queue_target_us: 5_000,
        work_stealing: false,
        ..CoreConfig::default()
    }
}

fn computes(actions: &[Action]) -> Vec<TaskId> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Compute { worker, msg, .. } if *worker == A => Some(msg.task),
            _ => None,
        })
        .collect()
}

/// A core with one single-threaded worker and `n` independent tasks; the tasks it was
/// given.
fn one_worker(n: usize) -> (SchedulerCore, Vec<TaskId>) {
    let mut s = SchedulerCore::new(config());
    s.on_client_joined(C);
    s.on_worker_joined(A, worker_with("a", 1));
    let keys: Vec<String> = (0..n).map(|i| format!("t{i}")).collect();
    s.on_update_graph(
        C,
        keys.iter().map(|k| op_task(k, "op", &[])).collect(),
        &keys,
    )
    .unwrap();
    s.validate();
    let given = computes(&s.take_actions());
    (s, given)
}

#[test]
fn reported_waits_for_inputs_deepen_the_workers_queue_by_their_moving_average() {
    let (mut s, given) = one_worker(100);
    // 5 ms ahead: five tasks of 1 ms.
    assert_eq!(given.len(), 5);
    // The first waited 10 ms for its inputs: the average is 2 ms (a fifth of it), so 7
    // ms ahead: 4 ms are left, three more go.
    s.on_task_finished(A, given[0], 8, 1_000, 10_000, None);
    s.validate();
    let more = computes(&s.take_actions());
    assert_eq!(more.len(), 3, "{more:?}");
    assert_eq!(s.info().workers[0].fetch_us, 2_000);
    // One with no wait: the average falls to 1.6 ms, 6.6 ms ahead; 6 ms are left, one
    // more goes.
    s.on_task_finished(A, given[1], 8, 1_000, 0, None);
    s.validate();
    assert_eq!(computes(&s.take_actions()).len(), 1);
    // Waits of 0 bring the queue back towards the target, the average decaying by a
    // fifth each time: with 6 ms left after each finish, 6.28 and 6.02 ms ahead take one
    // more each, 5.82 ms none.
    for (t, average_us, more) in [(2, 1_280, 1), (3, 1_024, 1), (4, 819, 0)] {
        s.on_task_finished(A, given[t], 8, 1_000, 0, None);
        s.validate();
        assert_eq!(
            computes(&s.take_actions()).len(),
            more,
            "at {average_us} µs"
        );
        assert_eq!(s.info().workers[0].fetch_us, average_us);
    }
}

#[test]
fn a_wait_past_the_cap_counts_as_the_cap_and_overflows_nothing() {
    let (mut s, given) = one_worker(1_000);
    assert_eq!(given.len(), 5);
    s.on_task_finished(A, given[0], 8, 1_000, u64::MAX, None);
    s.validate();
    // A fifth of the cap, 2 s, ahead: 2,005 tasks of 1 ms would fit; the 995 left go.
    let more = computes(&s.take_actions());
    assert_eq!(more.len(), 995);
    assert_eq!(s.info().workers[0].fetch_us, MAX_FETCH_US / 5);
    // And again: the average stays within the cap.
    s.on_task_finished(A, given[1], 8, 1_000, u64::MAX, None);
    s.validate();
    assert_eq!(
        s.info().workers[0].fetch_us,
        (4 * (MAX_FETCH_US / 5) + MAX_FETCH_US) / 5
    );
}

#[test]
fn a_stale_report_moves_nothing() {
    let (mut s, given) = one_worker(100);
    s.on_task_finished(A, given[0], 8, 1_000, 0, None);
    assert_eq!(computes(&s.take_actions()).len(), 1);
    // Reported again (a late duplicate): not the task's current run, no wait counted.
    s.on_task_finished(A, given[0], 8, 1_000, 1_000_000, None);
    s.validate();
    assert!(computes(&s.take_actions()).is_empty());
    // The next finish frees room for one task, as at the target alone (counted, the
    // wait would have sent some 160 more).
    s.on_task_finished(A, given[1], 8, 1_000, 0, None);
    s.validate();
    assert_eq!(computes(&s.take_actions()).len(), 1);
}
