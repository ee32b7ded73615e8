//! Placement in a cluster larger than the few workers a decision weighs: a task goes
//! to the holder of its input, work spreads over every worker, a worker beyond the
//! least loaded still gets a task none of those can run, a full cluster queues at once,
//! and every idle worker is found to steal for. `validate()` after every step.

mod common;

use common::{keys, op_task, worker_with, C};
use rask_proto::{Datum, TaskId, WorkerId};
use rask_scheduler_core::{Action, CoreConfig, SchedulerCore, TaskState, WorkerSpec};

/// A core with `n` workers of one thread each, each on a host of its own.
fn cluster(n: u32) -> SchedulerCore {
    let mut s = SchedulerCore::new(CoreConfig::default());
    s.on_client_joined(C);
    for w in 0..n {
        let mut spec = worker_with(&format!("w{w}"), 1);
        spec.host_id = format!("host{w}");
        s.on_worker_joined(WorkerId(w), spec);
    }
    s.validate();
    s
}

/// A core with `programs` workers of a program (no base ops), first by id, then `base`
/// base workers; all of one thread and idle.
fn programs_then_base(programs: u32, base: u32) -> SchedulerCore {
    let mut s = SchedulerCore::new(CoreConfig::default());
    s.on_client_joined(C);
    for w in 0..programs {
        let spec = WorkerSpec {
            code: 7,
            base: false,
            ..worker_with(&format!("p{w}"), 1)
        };
        s.on_worker_joined(WorkerId(w), spec);
    }
    for w in programs..programs + base {
        s.on_worker_joined(WorkerId(w), worker_with(&format!("b{w}"), 1));
    }
    s
}

/// [`cluster`] of `n` workers where a task `load` ran and left a value of `nbytes` on
/// the returned worker.
fn loaded(n: u32, nbytes: u64) -> (SchedulerCore, WorkerId) {
    let mut s = cluster(n);
    s.on_update_graph(C, vec![op_task("load", "load", &[])], &keys(&["load"]))
        .unwrap();
    let [(holder, load)] = computes(&mut s)[..] else {
        panic!("one compute")
    };
    finish(&mut s, holder, load, nbytes);
    (s, holder)
}

/// The computes the core asked for since the last call: (worker, task).
fn computes(s: &mut SchedulerCore) -> Vec<(WorkerId, TaskId)> {
    s.take_actions()
        .into_iter()
        .filter_map(|a| match a {
            Action::Compute { worker, msg, .. } => Some((worker, msg.task)),
            _ => None,
        })
        .collect()
}

fn finish(s: &mut SchedulerCore, w: WorkerId, t: TaskId, nbytes: u64) {
    s.on_task_finished(
        w,
        t,
        nbytes,
        1_000,
        0,
        Some(rask_proto::packed::Packed::new(&Datum::Int(1))),
    );
    s.validate();
}

#[test]
fn a_task_runs_where_its_large_input_is_among_a_hundred_workers() {
    let (mut s, holder) = loaded(100, 1 << 30);
    // Twenty tasks keep the holder and nineteen others busy: the least loaded workers
    // are all others.
    let busy: Vec<_> = (0..20)
        .map(|i| op_task(&format!("busy-{i}"), "busy", &[]))
        .collect();
    let wanted: Vec<String> = busy.iter().map(|t| t.key.clone()).collect();
    s.on_update_graph(C, busy, &wanted).unwrap();
    let placed = computes(&mut s);
    assert!(
        placed.iter().any(|(w, _)| *w == holder),
        "the holder is busy"
    );
    s.on_update_graph(C, vec![op_task("use", "use", &["load"])], &keys(&["use"]))
        .unwrap();
    s.validate();
    let placed = computes(&mut s);
    assert_eq!(placed.len(), 1);
    assert_eq!(
        placed[0].0, holder,
        "moved a GiB instead of waiting on its holder"
    );
}

#[test]
fn independent_tasks_spread_over_every_worker_of_a_large_cluster() {
    let n = 100u32;
    let mut s = cluster(n);
    let tasks: Vec<_> = (0..n * 3)
        .map(|i| op_task(&format!("t-{i}"), "inc", &[]))
        .collect();
    let wanted: Vec<String> = tasks.iter().map(|t| t.key.clone()).collect();
    s.on_update_graph(C, tasks, &wanted).unwrap();
    s.validate();
    let placed = computes(&mut s);
    // Spread evenly: every worker takes as many (its thread and the queue's slack).
    let mut per_worker = vec![0; n as usize];
    for (w, _) in &placed {
        per_worker[w.0 as usize] += 1;
    }
    let (lo, hi) = (per_worker.iter().min(), per_worker.iter().max());
    assert!(
        lo.is_some_and(|l| *l >= 1) && lo == hi,
        "{n} one-thread workers, unevenly loaded: {per_worker:?}"
    );
    let queued = s.info().tasks_by_state[2].1;
    assert_eq!(placed.len() as u64 + queued, u64::from(n) * 3);
    // As they finish, the queue drains onto the workers that free up.
    let mut pending = placed;
    let mut done = 0;
    while let Some((w, t)) = pending.pop() {
        finish(&mut s, w, t, 8);
        done += 1;
        for (w2, t2) in computes(&mut s) {
            assert_eq!(w2, w, "a freed thread takes the next queued task");
            pending.push((w2, t2));
        }
    }
    assert_eq!(done, n * 3);
}

#[test]
fn a_base_worker_beyond_the_least_loaded_still_gets_a_task_none_of_them_can_run() {
    // Seventy workers of a program (no base ops), all idle and first by id, then one
    // base worker: the least loaded looked at are all of the program.
    let mut s = programs_then_base(70, 1);
    s.validate();
    s.on_update_graph(C, vec![op_task("x", "inc", &[])], &keys(&["x"]))
        .unwrap();
    s.validate();
    let placed = computes(&mut s);
    assert_eq!(
        placed.len(),
        1,
        "the task was not placed: {:?}",
        s.state("x")
    );
    assert_eq!(placed[0].0, WorkerId(70));
}

#[test]
fn a_full_large_cluster_queues_tasks_and_an_empty_one_has_no_worker_for_them() {
    let mut s = cluster(20);
    let tasks: Vec<_> = (0..20)
        .map(|i| op_task(&format!("a-{i}"), "inc", &[]))
        .collect();
    let wanted: Vec<String> = tasks.iter().map(|t| t.key.clone()).collect();
    s.on_update_graph(C, tasks, &wanted).unwrap();
    let placed = computes(&mut s);
    assert_eq!(placed.len(), 20);
    // Every thread busy and the queue's slack used: the next task waits on the
    // scheduler.
    s.on_update_graph(C, vec![op_task("late", "inc", &[])], &keys(&["late"]))
        .unwrap();
    s.validate();
    assert!(matches!(
        s.state("late"),
        TaskState::Queued | TaskState::Processing
    ));
    // Everyone lost: a task submitted now has no worker to go to.
    for w in 0..20 {
        s.on_worker_lost(WorkerId(w));
        s.validate();
    }
    s.on_update_graph(C, vec![op_task("orphan", "inc", &[])], &keys(&["orphan"]))
        .unwrap();
    s.validate();
    assert_eq!(s.state("orphan"), TaskState::NoWorker);
}

#[test]
fn work_is_stolen_for_idle_workers_joining_a_large_cluster() {
    // Long tasks (1 s as far as the core knows), all queued deep on worker 0 alone.
    let mut s = SchedulerCore::new(CoreConfig {
        default_duration_us: 1_000_000,
        queue_target_us: 100_000_000,
        ..CoreConfig::default()
    });
    s.on_client_joined(C);
    s.on_worker_joined(WorkerId(0), worker_with("w0", 1));
    let tasks: Vec<_> = (0..90)
        .map(|i| op_task(&format!("r-{i}"), "slow", &[]))
        .collect();
    let wanted: Vec<String> = tasks.iter().map(|t| t.key.clone()).collect();
    s.on_update_graph(C, tasks, &wanted).unwrap();
    assert_eq!(computes(&mut s).len(), 90);
    // Ninety-nine idle workers join: each asks for one task, whatever the cluster's size.
    let mut asked = std::collections::BTreeSet::new();
    let mut thieves = 0;
    for w in 1..100 {
        s.on_worker_joined(WorkerId(w), worker_with(&format!("w{w}"), 1));
        s.validate();
        for a in s.take_actions() {
            if let Action::Steal { worker, task, .. } = a {
                assert_eq!(worker, WorkerId(0), "asked of a worker with nothing queued");
                assert!(asked.insert(task), "{task:?} asked twice");
                thieves += 1;
            }
        }
    }
    // Each task asked once (the scheduler does not know which one worker 0 started),
    // for the first ninety idle workers, the last of them past the sixty-fourth.
    assert_eq!(thieves, 90, "tasks asked back for idle workers");
}

#[test]
fn work_is_weighed_per_thread_when_workers_differ_in_threads() {
    let mut s = SchedulerCore::new(CoreConfig {
        default_duration_us: 1_000_000,
        queue_target_us: 100_000_000,
        ..CoreConfig::default()
    });
    s.on_client_joined(C);
    // A worker of 16 threads running 4 tasks, then nine of one thread running one each.
    s.on_worker_joined(WorkerId(9), worker_with("wide", 16));
    let first: Vec<_> = (0..4)
        .map(|i| op_task(&format!("a-{i}"), "slow", &[]))
        .collect();
    let wanted: Vec<String> = first.iter().map(|t| t.key.clone()).collect();
    s.on_update_graph(C, first, &wanted).unwrap();
    assert_eq!(computes(&mut s).len(), 4);
    for w in 0..9 {
        s.on_worker_joined(WorkerId(w), worker_with(&format!("w{w}"), 1));
    }
    let second: Vec<_> = (0..9)
        .map(|i| op_task(&format!("b-{i}"), "slow", &[]))
        .collect();
    let wanted: Vec<String> = second.iter().map(|t| t.key.clone()).collect();
    s.on_update_graph(C, second, &wanted).unwrap();
    s.validate();
    let placed = computes(&mut s);
    assert!(
        placed.iter().all(|(w, _)| w.0 < 9),
        "one each to the idle ones"
    );
    // The wide worker has a quarter of a task per thread; the others one.
    s.on_update_graph(C, vec![op_task("next", "slow", &[])], &keys(&["next"]))
        .unwrap();
    s.validate();
    let placed = computes(&mut s);
    assert_eq!(placed.len(), 1);
    assert_eq!(placed[0].0, WorkerId(9), "the least work per thread");
}

#[test]
fn a_retiring_holder_is_passed_over_in_a_large_cluster_though_it_is_idle() {
    let (mut s, holder) = loaded(12, 1 << 30);
    // The holder retires: its value is being copied to another worker, and meanwhile it
    // is idle, with room, and holds the input of the next task.
    s.on_retire_workers(C, 1, &[holder]);
    s.validate();
    assert!(s.is_retiring(holder));
    let copy_to: Vec<WorkerId> = s
        .take_actions()
        .into_iter()
        .filter_map(|a| match a {
            Action::AcquireReplica { worker, .. } => Some(worker),
            _ => None,
        })
        .collect();
    assert_eq!(copy_to.len(), 1, "one copy of the value");
    s.on_update_graph(C, vec![op_task("use", "use", &["load"])], &keys(&["use"]))
        .unwrap();
    s.validate();
    let placed = computes(&mut s);
    assert_eq!(placed.len(), 1, "placed at once: {:?}", s.state("use"));
    assert_ne!(placed[0].0, holder, "a new task went to a retiring worker");
}

/// The holders of a task's inputs weighed at most, plus the least loaded workers weighed
/// at most (`placement::HOLDERS`, `load::LEAST_LOADED`): a decision's work in a large
/// cluster, whatever its size.
const WEIGHED_AT_MOST: u64 = 16 + 8;

#[test]
fn a_decision_weighs_a_bounded_few_of_a_thousand_workers() {
    let (mut s, holder) = loaded(1000, 1 << 20);
    let weighed = s.workers_weighed();
    assert!(
        (1..=WEIGHED_AT_MOST).contains(&weighed),
        "a task without inputs weighed {weighed} of 1,000 workers"
    );
    let before = s.workers_weighed();
    s.on_update_graph(C, vec![op_task("use", "use", &["load"])], &keys(&["use"]))
        .unwrap();
    assert_eq!(computes(&mut s), vec![(holder, s.task_id("use").unwrap())]);
    let weighed = s.workers_weighed() - before;
    assert!(
        (1..=WEIGHED_AT_MOST).contains(&weighed),
        "a task with an input weighed {weighed} of 1,000 workers"
    );
}

#[test]
fn workers_that_cannot_take_a_task_are_not_weighed_in_place_of_those_that_can() {
    // Ten workers of a program (no base ops), idle and first by id, then thirty base
    // workers, as idle: the least loaded are the program's.
    let mut s = programs_then_base(10, 30);
    s.validate();
    let before = s.workers_weighed();
    s.on_update_graph(C, vec![op_task("x", "inc", &[])], &keys(&["x"]))
        .unwrap();
    s.validate();
    let placed = computes(&mut s);
    assert_eq!(placed.len(), 1);
    assert!(placed[0].0 .0 >= 10, "a base op on a program's worker");
    let weighed = s.workers_weighed() - before;
    assert!(
        (1..=WEIGHED_AT_MOST).contains(&weighed),
        "weighed {weighed}: the candidates were filled with workers that cannot take the task"
    );
}
