//! Work stealing: a worker with a free thread asks back a task queued on a busy one; the
//! task moves only if the victim released it (it had not started), so none runs twice;
//! an answer the scheduler has moved on from changes nothing; a move that does not pay,
//! or stealing turned off, asks nothing. `validate()` after every step.

mod common;

use common::{op_task, worker_with, C};
use rask_proto::{TaskId, WorkerId};
use rask_scheduler_core::{Action, CoreConfig, NewTask, SchedulerCore, TaskState, WorkerSpec};

const A: WorkerId = WorkerId(0);
const B: WorkerId = WorkerId(1);

fn task(key: &str, deps: &[&str]) -> NewTask {
    op_task(key, "slow", deps)
}

fn worker(name: &str) -> WorkerSpec {
    worker_with(name, 1)
}

/// Long tasks (1 s each, as far as the core knows) queued deep on each worker.
fn config(work_stealing: bool) -> CoreConfig {
    CoreConfig {
        default_duration_us: 1_000_000,
        queue_target_us: 100_000_000,
        work_stealing,
        ..CoreConfig::default()
    }
}

/// A core where worker A was given `n` independent tasks, then B joined idle; the
/// actions since B joined.
fn busy_a_idle_b(cfg: CoreConfig, n: usize) -> (SchedulerCore, Vec<Action>) {
    let mut s = SchedulerCore::new(cfg);
    s.on_client_joined(C);
    s.on_worker_joined(A, worker("a"));
    let keys: Vec<String> = (0..n).map(|i| format!("t{i}")).collect();
    s.on_update_graph(C, keys.iter().map(|k| task(k, &[])).collect(), &keys)
        .unwrap();
    s.validate();
    let given: Vec<Action> = s.take_actions();
    assert_eq!(computes(&given, A).len(), n, "every task queued on A");
    s.on_worker_joined(B, worker("b"));
    s.validate();
    let actions = s.take_actions();
    (s, actions)
}

fn computes(actions: &[Action], w: WorkerId) -> Vec<(TaskId, u32)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Compute { worker, msg, .. } if *worker == w => Some((msg.task, msg.run)),
            _ => None,
        })
        .collect()
}

fn steals(actions: &[Action]) -> Vec<(WorkerId, TaskId, u32)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Steal { worker, task, run } => Some((*worker, *task, *run)),
            _ => None,
        })
        .collect()
}

#[test]
fn an_idle_worker_gets_the_task_a_busy_one_would_start_last_once_released() {
    let (mut s, actions) = busy_a_idle_b(config(true), 4);
    let last = s.task_id("t3").unwrap();
    // One thread free on B: one task asked back, the one A would start last.
    assert_eq!(steals(&actions), vec![(A, last, 1)]);
    assert!(
        computes(&actions, B).is_empty(),
        "nothing moves before A answers"
    );
    assert_eq!(s.processing_on(last), Some(A), "still A's while asked");
    s.on_steal_response(A, last, 1, true);
    s.validate();
    let actions = s.take_actions();
    assert_eq!(computes(&actions, B), vec![(last, 2)], "a new run, on B");
    assert!(computes(&actions, A).is_empty());
    assert_eq!(s.processing_on(last), Some(B));
    assert_eq!(s.info().counters.steals, 1);
    // B finishes it; A's other tasks stay with A (B's thread is busy meanwhile).
    s.on_task_finished(B, last, 8, 1_000_000, 0, None);
    s.validate();
    assert_eq!(s.state("t3"), TaskState::Memory);
    let actions = s.take_actions();
    let next = s.task_id("t2").unwrap();
    assert_eq!(
        steals(&actions),
        vec![(A, next, 1)],
        "B idle again: the next one"
    );
}

#[test]
fn a_task_the_victim_started_stays_with_it() {
    let (mut s, actions) = busy_a_idle_b(config(true), 2);
    let (victim, t, run) = steals(&actions)[0];
    s.on_steal_response(victim, t, run, false);
    s.validate();
    let actions = s.take_actions();
    assert!(computes(&actions, B).is_empty());
    assert_eq!(s.processing_on(t), Some(A));
    // It finishes on A, once: taken as any result.
    s.on_task_finished(A, t, 8, 10, 0, None);
    s.validate();
    assert_eq!(s.who_has(s.key(t).unwrap().as_ref()), vec![A]);
}

#[test]
fn an_answer_the_scheduler_moved_on_from_changes_nothing() {
    let (mut s, actions) = busy_a_idle_b(config(true), 2);
    let (victim, t, run) = steals(&actions)[0];
    // A finished the task before the steal reached it (its answer says released,
    // wrongly or late): the result stands, nothing is given to B.
    s.on_task_finished(A, t, 8, 10, 0, None);
    s.validate();
    let _ = s.take_actions();
    s.on_steal_response(victim, t, run, true);
    s.validate();
    let actions = s.take_actions();
    assert!(computes(&actions, B).is_empty());
    let key = s.key(t).unwrap().to_string();
    assert_eq!(
        (s.state(&key), s.who_has(&key)),
        (TaskState::Memory, vec![A])
    );
    // An answer for another run, or from a worker that was not asked, is dropped too.
    s.on_steal_response(B, t, run, true);
    s.on_steal_response(A, t, run + 7, true);
    s.validate();
    assert!(s.take_actions().is_empty());
}

#[test]
fn a_thief_that_left_before_the_answer_leaves_the_task_to_the_best_worker() {
    let (mut s, actions) = busy_a_idle_b(config(true), 3);
    let (victim, t, run) = steals(&actions)[0];
    s.on_worker_lost(B);
    s.validate();
    let _ = s.take_actions();
    s.on_steal_response(victim, t, run, true);
    s.validate();
    let actions = s.take_actions();
    assert_eq!(
        computes(&actions, A),
        vec![(t, run + 1)],
        "back to A, a new run"
    );
}

#[test]
fn a_move_that_does_not_pay_is_not_asked() {
    // The input is huge and the link slow: moving it takes longer than waiting.
    let cfg = CoreConfig {
        bandwidth: 1e3,
        ..config(true)
    };
    let mut s = SchedulerCore::new(cfg);
    s.on_client_joined(C);
    s.on_worker_joined(A, worker("a"));
    s.on_update_graph(C, vec![task("big", &[])], &["big".to_string()])
        .unwrap();
    let big = s.task_id("big").unwrap();
    s.on_task_finished(A, big, 1 << 30, 10, 0, None);
    let readers: Vec<String> = (0..3).map(|i| format!("r{i}")).collect();
    s.on_update_graph(
        C,
        readers.iter().map(|k| task(k, &["big"])).collect(),
        &readers,
    )
    .unwrap();
    let _ = s.take_actions();
    s.on_worker_joined(B, worker("b"));
    s.validate();
    assert!(steals(&s.take_actions()).is_empty());
}

#[test]
fn with_stealing_off_nothing_is_asked() {
    let (s, actions) = busy_a_idle_b(config(false), 4);
    assert!(steals(&actions).is_empty());
    assert_eq!(s.info().counters.steal_requests, 0);
}

#[test]
fn nothing_is_asked_while_placement_is_held() {
    let mut s = SchedulerCore::new(config(true));
    s.on_client_joined(C);
    s.on_worker_joined(A, worker("a"));
    let keys: Vec<String> = (0..3).map(|i| format!("t{i}")).collect();
    s.on_update_graph(C, keys.iter().map(|k| task(k, &[])).collect(), &keys)
        .unwrap();
    let _ = s.take_actions();
    s.hold_placement(true);
    s.on_worker_joined(B, worker("b"));
    s.validate();
    assert!(steals(&s.take_actions()).is_empty(), "held");
    s.hold_placement(false);
    s.validate();
    assert_eq!(steals(&s.take_actions()).len(), 1, "let go");
    assert_eq!(s.info().counters.steal_requests, 1);
}

#[test]
fn a_worker_running_only_what_its_threads_run_is_no_victim() {
    let (_, actions) = busy_a_idle_b(config(true), 1);
    assert!(steals(&actions).is_empty(), "its one task runs already");
}

#[test]
fn a_worker_whose_threads_run_all_its_tasks_is_no_victim_whatever_their_lengths() {
    let mut s = SchedulerCore::new(config(true));
    s.on_client_joined(C);
    s.on_worker_joined(A, worker_with("a", 2));
    // The ops' durations, measured: "long" 10 s, "short" 0.1 s.
    for (key, op, us) in [("l0", "long", 10_000_000), ("s0", "short", 100_000)] {
        s.on_update_graph(C, vec![op_task(key, op, &[])], &[key.to_string()])
            .unwrap();
        let t = s.task_id(key).unwrap();
        assert_eq!(computes(&s.take_actions(), A).len(), 1);
        s.on_task_finished(A, t, 8, us, 0, None);
        s.validate();
        s.take_actions();
    }
    // A's two threads run a long and a short task: its wait per thread (5.05 s) is far
    // above the short one's 0.1 s, but the short one runs already.
    let keys = ["l1".to_string(), "s1".to_string()];
    let tasks = vec![op_task("l1", "long", &[]), op_task("s1", "short", &[])];
    s.on_update_graph(C, tasks, &keys).unwrap();
    assert_eq!(computes(&s.take_actions(), A).len(), 2);
    s.on_worker_joined(B, worker("b"));
    s.validate();
    assert!(
        steals(&s.take_actions()).is_empty(),
        "a running task asked back"
    );
}

#[test]
fn an_answer_about_another_run_is_dropped_and_the_right_one_taken() {
    let (mut s, actions) = busy_a_idle_b(config(true), 2);
    let (victim, t, run) = steals(&actions)[0];
    s.on_steal_response(victim, t, run + 1, true);
    s.validate();
    assert!(computes(&s.take_actions(), B).is_empty(), "another run");
    assert_eq!(s.processing_on(t), Some(A));
    s.on_steal_response(victim, t, run, true);
    s.validate();
    assert_eq!(computes(&s.take_actions(), B), vec![(t, run + 1)]);
}

/// A move is asked when moving the inputs and running the task on the thief ends before
/// the victim would start it: with the victim's wait of 2 s (two 1 s tasks on one
/// thread) and a link of 1 MB/s, an input of 0.5 MB pays (1.5 s), one of 1 MB only ties
/// the wait (2 s: nothing gained, not asked) and one of 1.5 MB does not (2.5 s).
#[test]
fn a_move_is_asked_only_when_its_transfer_and_run_beat_the_victims_wait() {
    for (nbytes, asked) in [(500_000u64, true), (1_000_000, false), (1_500_000, false)] {
        let mut s = SchedulerCore::new(CoreConfig {
            bandwidth: 1e6,
            ..config(true)
        });
        s.on_client_joined(C);
        s.on_worker_joined(A, worker("a"));
        s.on_update_graph(C, vec![task("x", &[])], &["x".to_string()])
            .unwrap();
        let x = s.task_id("x").unwrap();
        s.on_task_finished(A, x, nbytes, 1_000_000, 0, None);
        let _ = s.take_actions();
        let readers: Vec<String> = (0..2).map(|i| format!("r{i}")).collect();
        s.on_update_graph(
            C,
            readers.iter().map(|k| task(k, &["x"])).collect(),
            &readers,
        )
        .unwrap();
        assert_eq!(computes(&s.take_actions(), A).len(), 2);
        s.on_worker_joined(B, worker("b"));
        s.validate();
        assert_eq!(
            !steals(&s.take_actions()).is_empty(),
            asked,
            "an input of {nbytes} bytes"
        );
    }
}

/// The wait a victim's queue means is per thread: three 1 s tasks on two threads wait
/// 1.5 s, which a move costing 0.8 s plus its 1 s run does not beat.
#[test]
fn a_victims_wait_is_its_work_per_thread() {
    let mut s = SchedulerCore::new(CoreConfig {
        bandwidth: 1e6,
        ..config(true)
    });
    s.on_client_joined(C);
    s.on_worker_joined(
        A,
        WorkerSpec {
            nthreads: 2,
            ..worker("a")
        },
    );
    s.on_update_graph(C, vec![task("x", &[])], &["x".to_string()])
        .unwrap();
    let x = s.task_id("x").unwrap();
    s.on_task_finished(A, x, 800_000, 1_000_000, 0, None);
    let _ = s.take_actions();
    let readers: Vec<String> = (0..3).map(|i| format!("r{i}")).collect();
    s.on_update_graph(
        C,
        readers.iter().map(|k| task(k, &["x"])).collect(),
        &readers,
    )
    .unwrap();
    assert_eq!(computes(&s.take_actions(), A).len(), 3);
    s.on_worker_joined(B, worker("b"));
    s.validate();
    assert!(steals(&s.take_actions()).is_empty());
}

/// A look that finds nothing to steal is not made again for 10 ms of the core's clock (a
/// chain keeps a worker idle by its shape, and would pay a look at every task); a worker
/// joining looks at once.
#[test]
fn after_a_look_that_found_nothing_the_next_waits_a_while() {
    let (mut s, actions) = busy_a_idle_b(config(true), 1);
    assert!(steals(&actions).is_empty());
    // Two more tasks: one goes to idle B, one queues on A behind its running task.
    let keys: Vec<String> = (1..3).map(|i| format!("u{i}")).collect();
    s.on_update_graph(C, keys.iter().map(|k| task(k, &[])).collect(), &keys)
        .unwrap();
    let actions = s.take_actions();
    let on_b = computes(&actions, B);
    assert_eq!((on_b.len(), computes(&actions, A).len()), (1, 1));
    // B is idle again and A has a task queued: not looked at yet.
    s.on_task_finished(B, on_b[0].0, 8, 1_000_000, 0, None);
    s.validate();
    assert!(
        steals(&s.take_actions()).is_empty(),
        "within the quiet time"
    );
    s.set_now(10_000);
    // Any stimulus that places work looks again.
    s.hold_placement(true);
    s.hold_placement(false);
    s.validate();
    assert_eq!(steals(&s.take_actions()).len(), 1, "looked again");
}

#[test]
fn a_thief_retiring_before_the_answer_does_not_get_the_task() {
    let (mut s, actions) = busy_a_idle_b(config(true), 3);
    let (victim, t, run) = steals(&actions)[0];
    // B computes y meanwhile, and holds it: retiring, it stays until y has moved.
    s.on_update_graph(C, vec![task("y", &[])], &["y".to_string()])
        .unwrap();
    let y = s.task_id("y").unwrap();
    assert_eq!(computes(&s.take_actions(), B), vec![(y, 1)]);
    s.on_task_finished(B, y, 8, 10, 0, None);
    s.on_retire_workers(C, 1, &[B]);
    s.validate();
    let _ = s.take_actions();
    assert!(s.is_retiring(B));
    s.on_steal_response(victim, t, run, true);
    s.validate();
    let actions = s.take_actions();
    assert!(
        computes(&actions, B).is_empty(),
        "a retiring worker takes no new task"
    );
    assert_eq!(computes(&actions, A), vec![(t, run + 1)]);
}

/// The core's clock is the caller's: a look that found nothing at the clock's very end
/// waits until then, not past a wrapped sum (found by fuzzing the core).
#[test]
fn a_look_at_the_end_of_the_clock_does_not_overflow() {
    let mut s = SchedulerCore::new(config(true));
    s.set_now(u64::MAX - 1);
    s.on_client_joined(C);
    s.on_worker_joined(A, worker("a"));
    s.on_update_graph(C, vec![task("t", &[])], &["t".to_string()])
        .unwrap();
    s.on_worker_joined(B, worker("b"));
    s.validate();
    assert!(steals(&s.take_actions()).is_empty());
}

#[test]
fn a_dependent_is_not_sent_ahead_to_a_victim_while_its_input_is_asked_back() {
    use rask_proto::msg::Resource;
    let res = |name: &str, amount: f64| Resource {
        name: name.into(),
        amount,
    };
    let with = |name: &str, offers: &[(&str, f64)]| WorkerSpec {
        resources: offers.iter().map(|(r, a)| res(r, *a)).collect(),
        ..worker(name)
    };
    let needing = |key: &str, deps: &[&str], r: &str| NewTask {
        resources: vec![res(r, 1.0)],
        ..task(key, deps)
    };
    let c = WorkerId(2);
    let mut s = SchedulerCore::new(config(true));
    s.on_client_joined(C);
    s.on_worker_joined(A, with("a", &[("a", 100.0), ("only-a", 1.0)]));
    s.on_worker_joined(c, with("c", &[("c", 1.0)]));
    // Four tasks on A; z on C, and x after it, on A alone; d reads the last of the four
    // and x, e reads x. x waits for z, so d and e wait at the scheduler.
    let mut tasks: Vec<NewTask> = (0..4)
        .map(|i| needing(&format!("t{i}"), &[], "a"))
        .collect();
    tasks.push(needing("z", &[], "c"));
    tasks.push(needing("x", &["z"], "only-a"));
    tasks.push(task("d", &["t3", "x"]));
    tasks.push(task("e", &["x"]));
    let wanted: Vec<String> = ["t0", "t1", "t2", "d", "e"].map(String::from).into();
    s.on_update_graph(C, tasks, &wanted).unwrap();
    s.validate();
    s.take_actions();
    assert_eq!(s.state("d"), TaskState::Waiting);
    // B joins idle and asks t3 back from A.
    s.on_worker_joined(B, with("b", &[("a", 100.0)]));
    s.validate();
    let t3 = s.task_id("t3").unwrap();
    assert_eq!(steals(&s.take_actions()), vec![(A, t3, 1)]);
    // z is done and x goes to A: both of d's inputs now run on A, but one is being
    // asked back from it. d is not sent ahead to A.
    let z = s.task_id("z").unwrap();
    s.on_task_finished(c, z, 8, 10, 0, None);
    s.validate();
    let x = s.task_id("x").unwrap();
    assert_eq!(s.processing_on(x), Some(A));
    assert_eq!(s.state("d"), TaskState::Waiting);
    // e, reading x alone, is sent ahead to A as ever: only t3 is being asked back.
    assert_eq!(s.processing_on(s.task_id("e").unwrap()), Some(A));
    // A released t3: it moves to B. d runs once both are done.
    s.on_steal_response(A, t3, 1, true);
    s.validate();
    assert_eq!(s.processing_on(t3), Some(B));
    s.on_task_finished(B, t3, 8, 10, 0, None);
    s.validate();
    s.on_task_finished(A, x, 8, 10, 0, None);
    s.validate();
    assert_eq!(s.state("d"), TaskState::Processing);
}
