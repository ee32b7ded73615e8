//! The adaptive target (how many workers the cluster should have) and the choice of
//! workers to retire, as Dask computes them, on states built through the core.

use std::sync::Arc;
use std::time::Duration;

use rask_proto::msg::Resource;
use rask_proto::{ClientId, Datum, TaskId, WorkerId};
use rask_scheduler_core::{Action, CoreConfig, NewTask, SchedulerCore, WorkerSpec};

const C: ClientId = ClientId(1);
const FIVE_S: Duration = Duration::from_secs(5);

fn spec(name: &str, nthreads: u32, memory: u64) -> WorkerSpec {
    WorkerSpec {
        name: name.into(),
        addr: format!("tcp://127.0.0.1/{name}"),
        host_id: "h".into(),
        nthreads,
        memory_limit: memory,
        resources: vec![Resource {
            name: name.into(),
            amount: 1.0,
        }],
        gpu: None,
        nvlink: vec![],
        device_spill_at: 0,
        code: 0,
        base: true,
    }
}

/// A root task of `op`, needing one unit of `resource` (none if empty).
fn task(key: &str, op: &str, resource: &str) -> NewTask {
    NewTask {
        key: key.into(),
        op: op.into(),
        args: Datum::Null,
        bufs: vec![],
        deps: vec![],
        resources: if resource.is_empty() {
            vec![]
        } else {
            vec![Resource {
                name: resource.into(),
                amount: 1.0,
            }]
        },
        code: None,
    }
}

fn core() -> SchedulerCore {
    let mut s = SchedulerCore::new(CoreConfig::default());
    s.on_client_joined(C);
    s
}

/// Submits `n` tasks of `op` needing `resource`, wanted; returns the computes sent.
fn submit(s: &mut SchedulerCore, prefix: &str, op: &str, resource: &str, n: usize) -> Vec<TaskId> {
    let tasks: Vec<NewTask> = (0..n)
        .map(|i| task(&format!("{prefix}{i}"), op, resource))
        .collect();
    let wanted: Vec<String> = tasks.iter().map(|t| t.key.clone()).collect();
    s.on_update_graph(C, tasks, &wanted).unwrap();
    s.validate();
    s.take_actions()
        .iter()
        .filter_map(|a| match a {
            Action::Compute { msg, .. } => Some(msg.task),
            _ => None,
        })
        .collect()
}

/// Runs one task of `op` on the worker named `on` (id `w`), measured at `duration_us`,
/// its value `nbytes` kept.
fn run(s: &mut SchedulerCore, key: &str, op: &str, on: &str, w: WorkerId, us: u64, nbytes: u64) {
    let sent = submit(s, key, op, on, 1);
    assert_eq!(sent.len(), 1, "{key} runs at once");
    s.on_task_finished(w, sent[0], nbytes, us, 0, None);
    s.validate();
    s.take_actions();
}

fn names(v: Vec<Arc<str>>) -> Vec<String> {
    v.iter().map(|n| n.to_string()).collect()
}

#[test]
fn an_idle_cluster_without_data_needs_no_worker_and_an_empty_one_needs_one_when_work_waits() {
    let mut s = core();
    assert_eq!(s.adaptive_target(FIVE_S), 0);
    for (i, n) in ["a", "b", "c"].iter().enumerate() {
        s.on_worker_joined(WorkerId(i as u32), spec(n, 1, 1000));
    }
    assert_eq!(s.adaptive_target(FIVE_S), 0);
    assert_eq!(names(s.workers_to_close(None)), ["a", "b", "c"]);
    // Work that takes no time at all still asks for a worker when there is none.
    run(&mut s, "m", "instant", "a", WorkerId(0), 0, 0);
    for i in 0..3 {
        s.on_worker_lost(WorkerId(i));
    }
    submit(&mut s, "x", "instant", "", 3);
    assert_eq!(s.adaptive_target(FIVE_S), 1);
}

#[test]
fn waiting_work_of_ops_never_measured_counts_half_a_second_each() {
    let mut s = core();
    // 20 tasks no worker can run: 10 s of work is 2 workers' target of 5 s.
    submit(&mut s, "x", "new", "gpu", 20);
    assert_eq!(s.adaptive_target(FIVE_S), 2);
    assert_eq!(s.adaptive_target(Duration::from_secs(1)), 10);
    // Two workers of two threads: 100 tasks are 50 s, 10 cores, 5 such workers.
    s.on_worker_joined(WorkerId(0), spec("a", 2, 1 << 30));
    s.on_worker_joined(WorkerId(1), spec("b", 2, 1 << 30));
    submit(&mut s, "y", "new", "gpu", 80);
    assert_eq!(s.adaptive_target(FIVE_S), 5);
    // The default is a setting.
    let mut s = SchedulerCore::new(CoreConfig {
        unknown_duration_us: 2_000_000,
        ..CoreConfig::default()
    });
    s.on_client_joined(C);
    submit(&mut s, "x", "new", "gpu", 20);
    assert_eq!(s.adaptive_target(FIVE_S), 8);
}

#[test]
fn waiting_work_is_estimated_from_the_first_hundred_tasks_and_measured_means() {
    let mut s = core();
    s.on_worker_joined(WorkerId(0), spec("a", 1, 1 << 30));
    run(&mut s, "m", "slow", "a", WorkerId(0), 2_000_000, 8);
    run(&mut s, "n", "fast", "a", WorkerId(0), 1, 8);
    // 100 tasks of 2 s first, then 150 of a microsecond: the sample says 250 × 2 s,
    // 500 s, 100 workers; counting every task would say 200 s, 40.
    submit(&mut s, "x", "slow", "gpu", 100);
    submit(&mut s, "y", "fast", "gpu", 150);
    assert_eq!(s.adaptive_target(FIVE_S), 100);
}

#[test]
fn no_more_cores_are_asked_for_than_there_are_tasks_ready_or_running() {
    let mut s = core();
    s.on_worker_joined(WorkerId(0), spec("a", 2, 1 << 30));
    s.on_worker_joined(WorkerId(1), spec("b", 2, 1 << 30));
    run(&mut s, "m", "long", "a", WorkerId(0), 100_000_000, 8);
    // 8 tasks of 100 s: 4 run (one per thread), 4 are queued. 800 s of work would be
    // 160 cores, but 8 tasks use at most 8: 4 workers of 2 threads.
    let sent = submit(&mut s, "x", "long", "", 8);
    assert_eq!(sent.len(), 4);
    assert_eq!(s.adaptive_target(FIVE_S), 4);
    // Running tasks alone count too.
    let mut s = core();
    s.on_worker_joined(WorkerId(0), spec("a", 1, 1 << 30));
    s.on_worker_joined(WorkerId(1), spec("b", 1, 1 << 30));
    s.on_worker_joined(WorkerId(2), spec("c", 1, 1 << 30));
    run(&mut s, "m", "long", "a", WorkerId(0), 100_000_000, 0);
    assert_eq!(submit(&mut s, "x", "long", "", 2).len(), 2);
    assert_eq!(s.adaptive_target(FIVE_S), 2);
}

#[test]
fn memory_more_than_60_percent_full_doubles_the_workers() {
    let mut s = core();
    s.on_worker_joined(WorkerId(0), spec("a", 1, 1000));
    s.on_worker_joined(WorkerId(1), spec("b", 1, 1000));
    s.on_worker_joined(WorkerId(2), spec("c", 1, 1000));
    run(&mut s, "x", "f", "a", WorkerId(0), 10, 700);
    run(&mut s, "y", "f", "b", WorkerId(1), 10, 1101);
    assert_eq!(s.adaptive_target(FIVE_S), 6);
    // At 60 % exactly, no: and no worker can go either (1000 left < 2 × 1200).
    let mut s = core();
    s.on_worker_joined(WorkerId(0), spec("a", 1, 1000));
    s.on_worker_joined(WorkerId(1), spec("b", 1, 1000));
    run(&mut s, "x", "f", "a", WorkerId(0), 10, 700);
    run(&mut s, "y", "f", "b", WorkerId(1), 10, 500);
    assert_eq!(s.adaptive_target(FIVE_S), 2);
    // A worker whose memory limit is unknown (0) does not count as full.
    let mut s = core();
    s.on_worker_joined(WorkerId(0), spec("a", 1, 0));
    run(&mut s, "x", "f", "a", WorkerId(0), 10, 8);
    assert_eq!(s.adaptive_target(FIVE_S), 1);
}

/// a idle holding 100 bytes, b busy holding nothing, c idle holding nothing, d idle
/// holding `d_bytes`: 1000 bytes of memory each.
fn four_workers(d_bytes: u64) -> SchedulerCore {
    let mut s = core();
    for (i, n) in ["a", "b", "c", "d"].iter().enumerate() {
        s.on_worker_joined(WorkerId(i as u32), spec(n, 1, 1000));
    }
    run(&mut s, "x", "f", "a", WorkerId(0), 10, 100);
    run(&mut s, "y", "f", "d", WorkerId(3), 10, d_bytes);
    assert_eq!(submit(&mut s, "z", "f", "b", 1).len(), 1);
    s
}

#[test]
fn idle_workers_holding_least_are_closed_first_while_the_rest_has_room_for_twice_the_data() {
    let s = four_workers(50);
    assert_eq!(names(s.workers_to_close(None)), ["c", "d", "a"]);
    // One task of a few microseconds runs: one worker is enough.
    assert_eq!(s.adaptive_target(FIVE_S), 1);
    // With 700 bytes on d, once c is gone 3000 bytes are left, enough for 2 × 800; once
    // a goes too, 2000 are, enough; d goes only if 1000 are: not enough.
    let s = four_workers(700);
    assert_eq!(names(s.workers_to_close(None)), ["c", "a"]);
    assert_eq!(s.adaptive_target(FIVE_S), 2);
}

#[test]
fn with_a_target_as_many_workers_go_as_bring_the_cluster_down_to_it_busy_ones_last() {
    let s = four_workers(50);
    assert_eq!(names(s.workers_to_close(Some(4))), Vec::<String>::new());
    assert_eq!(names(s.workers_to_close(Some(9))), Vec::<String>::new());
    assert_eq!(names(s.workers_to_close(Some(2))), ["c", "d"]);
    assert_eq!(names(s.workers_to_close(Some(0))), ["c", "d", "a", "b"]);
    // Memory is not a concern then.
    let s = four_workers(900);
    assert_eq!(names(s.workers_to_close(Some(1))), ["c", "a", "d"]);
}

#[test]
fn retiring_workers_count_neither_as_workers_nor_as_candidates() {
    let mut s = core();
    for (i, n) in ["a", "b", "c"].iter().enumerate() {
        s.on_worker_joined(WorkerId(i as u32), spec(n, 1, 1000));
    }
    run(&mut s, "x", "f", "a", WorkerId(0), 10, 100);
    // a retires, its value on its way to b.
    s.on_retire_workers(C, 1, &[WorkerId(0)]);
    s.validate();
    assert_eq!(s.take_actions().len(), 1);
    assert_eq!(names(s.workers_to_close(Some(0))), ["b", "c"]);
    assert_eq!(names(s.workers_to_close(Some(1))), ["b"]);
    // 40 tasks of half a second no one can run: 4 workers, while b and c are 2.
    submit(&mut s, "y", "new", "gpu", 40);
    assert_eq!(s.adaptive_target(FIVE_S), 4);
}

#[test]
fn running_work_counts_by_its_ops_mean_as_measured_now() {
    let mut s = core();
    s.on_worker_joined(WorkerId(0), spec("a", 1, 1 << 30));
    run(&mut s, "m", "grows", "a", WorkerId(0), 10, 0);
    // Measured at 10 µs, 50 tasks are all sent to a at once.
    let sent = submit(&mut s, "x", "grows", "", 50);
    assert_eq!(sent.len(), 50);
    assert_eq!(s.adaptive_target(FIVE_S), 1);
    // One of them takes 10 s: the mean is now about 2 s, and the 49 left are 98 s of
    // work, 20 workers' worth, though none waits.
    s.on_task_finished(WorkerId(0), sent[0], 0, 10_000_000, 0, None);
    s.validate();
    assert_eq!(s.adaptive_target(FIVE_S), 20);
}
