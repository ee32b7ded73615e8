//! What the core keeps for observers: counts per task prefix, the task stream, the
//! transition log behind `story(key)`, counters; exact values and bounds, validated after
//! each step.

mod common;

use common::{keys, op_task, worker_with, C};
use rask_proto::{StimulusId, WorkerId};
use rask_scheduler_core::{
    CoreConfig, Counters, NewTask, SchedulerCore, StreamKind, TaskState, WorkerSpec,
};

const W: WorkerId = WorkerId(0);

fn task(key: &str, op: &str, deps: &[&str]) -> NewTask {
    op_task(key, op, deps)
}

fn worker(name: &str) -> WorkerSpec {
    worker_with(name, 1)
}

fn core(cfg: CoreConfig) -> SchedulerCore {
    let mut s = SchedulerCore::new(cfg);
    s.on_client_joined(C);
    s.on_worker_joined(W, worker("w0"));
    s
}

/// Finishes `key` on W at time `now_us`, having run `us`, with `nbytes` of output.
fn finish(s: &mut SchedulerCore, key: &str, now_us: u64, us: u64, nbytes: u64) {
    s.set_now(now_us);
    let t = s.task_id(key).unwrap();
    s.on_task_finished(W, t, nbytes, us, 0, None);
    s.validate();
}

/// (current, totals) of a prefix, for the states given.
fn prefix(s: &SchedulerCore, name: &str, states: &[TaskState]) -> (Vec<u64>, Vec<u64>) {
    let info = s.info();
    let p = info
        .prefixes
        .iter()
        .find(|p| &*p.name == name)
        .unwrap_or_else(|| panic!("no prefix {name}"));
    (
        states.iter().map(|st| p.current(*st)).collect(),
        states.iter().map(|st| p.total(*st)).collect(),
    )
}

#[test]
fn prefixes_count_tasks_by_state_from_keys_or_ops() {
    use TaskState::*;
    let mut s = core(CoreConfig::default());
    s.set_now(1_000);
    s.on_update_graph(
        C,
        vec![
            task("load-1", "io.read", &[]),
            task("load-2", "io.read", &[]),
            task("x", "array.sum", &["load-1", "load-2"]),
        ],
        &keys(&["x"]),
    )
    .unwrap();
    s.validate();
    let names: Vec<String> = s
        .info()
        .prefixes
        .iter()
        .map(|p| p.name.to_string())
        .collect();
    assert_eq!(names, vec!["load", "array.sum"]);
    let st = [Released, Waiting, Processing, Memory, Erred, Forgotten];
    // One worker thread: both loads processing (a slot each is not needed: queued ahead),
    // x waiting on them.
    assert_eq!(
        prefix(&s, "load", &st),
        (vec![0, 0, 2, 0, 0, 0], vec![2, 2, 2, 0, 0, 0])
    );
    assert_eq!(
        prefix(&s, "array.sum", &[Waiting, Processing]),
        (vec![0, 1], vec![1, 1])
    );

    finish(&mut s, "load-1", 2_000, 300, 10);
    finish(&mut s, "load-2", 3_000, 500, 20);
    finish(&mut s, "x", 4_000, 700, 5);
    let info = s.info();
    let load = info.prefixes.iter().find(|p| &*p.name == "load").unwrap();
    assert_eq!((load.compute_us, load.output_bytes), (800, 30));
    // The loads were released once x had them; x refers to them (its lineage): not
    // forgotten.
    assert_eq!(
        prefix(&s, "load", &st),
        (vec![2, 0, 0, 0, 0, 0], vec![4, 2, 2, 2, 0, 0])
    );
    assert_eq!(prefix(&s, "array.sum", &[Memory]), (vec![1], vec![1]));
    let sum = info
        .prefixes
        .iter()
        .find(|p| &*p.name == "array.sum")
        .unwrap();
    assert_eq!((sum.compute_us, sum.output_bytes), (700, 5));
    assert_eq!(
        info.counters,
        Counters {
            tasks_completed: 3,
            tasks_erred: 0,
            workers_added: 1,
            workers_removed: 0,
            steal_requests: 0,
            steals: 0,
        }
    );
    assert_eq!(info.stream_last, 3);
}

#[test]
fn the_task_stream_has_each_finished_task_with_its_worker_and_times() {
    let mut s = core(CoreConfig::default());
    s.on_update_graph(
        C,
        vec![task("a-1", "add", &[]), task("b", "mul", &["a-1"])],
        &keys(&["b"]),
    )
    .unwrap();
    assert_eq!(s.task_stream_last(), 0);
    finish(&mut s, "a-1", 10_000, 2_500, 8);
    finish(&mut s, "b", 20_000, 1_000, 16);
    assert_eq!(s.task_stream_last(), 2);
    let all = s.task_stream(0, 100);
    type Row<'a> = (u64, &'a str, &'a str, &'a str, u64, u64, u64, StreamKind);
    let got: Vec<Row> = all
        .iter()
        .map(|e| {
            (
                e.seq,
                &*e.key,
                &*e.prefix,
                &*e.worker_name,
                e.start_us,
                e.stop_us,
                e.nbytes,
                e.kind,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (1, "a-1", "a", "w0", 7_500, 10_000, 8, StreamKind::Compute),
            (2, "b", "mul", "w0", 19_000, 20_000, 16, StreamKind::Compute),
        ]
    );
    assert!(all.iter().all(|e| e.worker == W));
    assert_eq!(s.task_stream(1, 100).len(), 1);
    assert_eq!(s.task_stream(2, 100), vec![]);
    // A stale report (the task is no longer processing there) adds nothing.
    let b = s.task_id("b").unwrap();
    s.on_task_finished(W, b, 16, 1, 0, None);
    assert_eq!(s.task_stream(0, 100).len(), 2);
    assert_eq!(s.info().counters.tasks_completed, 2);
}

#[test]
fn the_task_stream_and_log_stay_within_their_bounds() {
    let cfg = CoreConfig {
        stream_capacity: 5,
        log_capacity: 7,
        ..CoreConfig::default()
    };
    let mut s = core(cfg);
    for i in 0..20 {
        let key = format!("t-{i}");
        s.on_update_graph(C, vec![task(&key, "add", &[])], std::slice::from_ref(&key))
            .unwrap();
        finish(&mut s, &key, 100 * i, 10, 1);
        s.on_release_keys(C, &[key]);
        s.validate();
        assert!(s.task_stream(0, usize::MAX).len() <= 5);
    }
    let held: Vec<u64> = s.task_stream(0, usize::MAX).iter().map(|e| e.seq).collect();
    assert_eq!(held, vec![16, 17, 18, 19, 20]);
    assert_eq!(s.info().stream_last, 20);
    // The log keeps the last 7 transitions: those of t-19 (5) and the end of t-18's.
    assert_eq!(s.story("t-19").len(), 5);
    let t18: Vec<_> = s.story("t-18").iter().map(|t| t.to).collect();
    assert_eq!(t18, vec![TaskState::Released, TaskState::Forgotten]);
    assert_eq!(s.story("t-0"), vec![]);
}

#[test]
fn a_story_tells_each_transition_with_why_where_and_when() {
    use TaskState::*;
    let mut s = core(CoreConfig::default());
    s.set_now(5);
    s.on_update_graph(C, vec![task("a", "add", &[])], &keys(&["a"]))
        .unwrap();
    let graph_stimulus = s.last_stimulus();
    finish(&mut s, "a", 9, 1, 8);
    s.on_release_keys(C, &keys(&["a"]));
    let story = s.story("a");
    let got: Vec<_> = story
        .iter()
        .map(|t| (t.from, t.to, t.why, t.worker, t.time_us))
        .collect();
    assert_eq!(
        got,
        vec![
            (Released, Waiting, "update-graph", None, 5),
            (Waiting, Processing, "update-graph", Some(W), 5),
            (Processing, Memory, "task-finished", Some(W), 9),
            (Memory, Released, "release-keys", None, 9),
            (Released, Forgotten, "release-keys", None, 9),
        ]
    );
    assert!(story.iter().all(|t| &*t.key == "a" && t.error.is_none()));
    assert_eq!(story[0].stimulus, graph_stimulus);
    assert_eq!(story[2].stimulus, StimulusId(graph_stimulus.0 + 1));
}

#[test]
fn an_erred_task_keeps_its_error_in_its_story_and_counts() {
    use TaskState::*;
    let mut s = core(CoreConfig::default());
    s.on_update_graph(
        C,
        vec![task("bad", "div", &[]), task("after", "add", &["bad"])],
        &keys(&["after"]),
    )
    .unwrap();
    let bad = s.task_id("bad").unwrap();
    s.on_task_erred(W, bad, "division by zero".into());
    s.validate();
    let story = s.story("bad");
    let last = story.last().unwrap();
    assert_eq!(
        (last.from, last.to, last.why),
        (Processing, Erred, "task-erred")
    );
    assert_eq!(last.worker, Some(W));
    let error = last.error.as_ref().unwrap();
    assert_eq!((&*error.key, &*error.message), ("bad", "division by zero"));
    // The dependent errs with the same cause.
    let after = s.story("after");
    let cause = after.last().unwrap().error.as_ref().unwrap();
    assert_eq!((after.last().unwrap().to, &*cause.key), (Erred, "bad"));
    assert_eq!(prefix(&s, "div", &[Erred]), (vec![1], vec![1]));
    assert_eq!(prefix(&s, "add", &[Erred]), (vec![1], vec![1]));
    assert_eq!(s.info().counters.tasks_erred, 1);
    assert_eq!(s.task_stream(0, 10), vec![]);
}

#[test]
fn workers_added_and_removed_are_counted() {
    let mut s = core(CoreConfig::default());
    s.on_worker_joined(WorkerId(1), worker("w1"));
    s.on_worker_lost(WorkerId(1));
    s.on_worker_lost(WorkerId(1));
    s.validate();
    let c = s.info().counters;
    assert_eq!((c.workers_added, c.workers_removed), (2, 1));
}

#[test]
fn keys_past_the_prefix_limit_count_under_their_op() {
    let cfg = CoreConfig {
        max_prefixes: 2,
        ..CoreConfig::default()
    };
    let mut s = core(cfg);
    let tasks = vec![
        task("alpha-1", "add", &[]),
        task("beta-1", "add", &[]),
        task("gamma-1", "add", &[]),
        task("alpha-2", "add", &[]),
    ];
    s.on_update_graph(
        C,
        tasks,
        &keys(&["alpha-1", "beta-1", "gamma-1", "alpha-2"]),
    )
    .unwrap();
    s.validate();
    let info = s.info();
    let got: Vec<(&str, u64)> = info
        .prefixes
        .iter()
        .map(|p| (&*p.name, p.total(TaskState::Released)))
        .collect();
    assert_eq!(got, vec![("alpha", 2), ("beta", 1), ("add", 1)]);
}

#[test]
fn releasing_the_last_reader_forgets_its_inputs_and_counts_them() {
    use TaskState::*;
    let mut s = core(CoreConfig::default());
    s.on_update_graph(
        C,
        vec![
            task("load-1", "io.read", &[]),
            task("x", "array.sum", &["load-1"]),
        ],
        &keys(&["x"]),
    )
    .unwrap();
    finish(&mut s, "load-1", 1, 1, 1);
    finish(&mut s, "x", 2, 1, 1);
    s.on_release_keys(C, &keys(&["x"]));
    s.validate();
    assert_eq!(s.task_count(), 0);
    assert_eq!(
        prefix(&s, "load", &[Released, Memory, Forgotten]),
        (vec![0, 0, 0], vec![2, 1, 1])
    );
    assert_eq!(
        prefix(&s, "array.sum", &[Released, Memory, Forgotten]),
        (vec![0, 0, 0], vec![2, 1, 1])
    );
}

#[test]
fn the_stream_names_a_worker_after_it_left() {
    let mut s = core(CoreConfig::default());
    s.on_worker_lost(W);
    let w1 = WorkerId(1);
    s.on_worker_joined(w1, worker("w1"));
    s.on_update_graph(C, vec![task("a", "add", &[])], &keys(&["a"]))
        .unwrap();
    let a = s.task_id("a").unwrap();
    s.on_task_finished(w1, a, 8, 1, 0, None);
    s.on_worker_lost(w1);
    s.validate();
    let names: Vec<(WorkerId, String)> = s
        .task_stream(0, 10)
        .iter()
        .map(|e| (e.worker, e.worker_name.to_string()))
        .collect();
    assert_eq!(names, vec![(w1, "w1".to_string())]);
    assert_eq!(&*s.worker_name(W), "w0");
    assert_eq!(&*s.worker_name(WorkerId(9)), "");
    for i in 2..1100 {
        s.on_worker_joined(WorkerId(i), worker(&format!("w{i}")));
        s.on_worker_lost(WorkerId(i));
    }
    // Only the last names of workers gone are kept.
    assert_eq!(&*s.worker_name(w1), "");
    assert_eq!(&*s.worker_name(WorkerId(1099)), "w1099");
    assert_eq!(&*s.worker_name(WorkerId(76)), "w76");
    assert_eq!(&*s.worker_name(WorkerId(75)), "");
}

#[test]
fn transfers_and_spills_enter_the_stream_beside_computations() {
    use rask_proto::{LinkClass, TaskId};
    use rask_scheduler_core::{Activity, SpillDirection};
    let mut s = core(CoreConfig::default());
    let w1 = WorkerId(1);
    s.on_worker_joined(w1, worker("w1"));
    s.on_update_graph(C, vec![task("load-1", "io.read", &[])], &keys(&["load-1"]))
        .unwrap();
    finish(&mut s, "load-1", 5_000, 1_000, 64);
    let t = s.task_id("load-1").unwrap();
    let transfer = StreamKind::Transfer {
        from: W,
        link: LinkClass::Tcp,
    };
    let spill = StreamKind::Spill(SpillDirection::DeviceToHost);
    s.on_activity(
        w1,
        &[
            Activity {
                task: t,
                kind: transfer,
                start_us: 6_000,
                stop_us: 6_500,
                nbytes: 64,
            },
            Activity {
                task: TaskId(999),
                kind: spill,
                start_us: 7_000,
                stop_us: 7_100,
                nbytes: 1,
            },
            Activity {
                task: t,
                kind: spill,
                // A start after the stop (clocks are not trusted) is taken as the stop.
                start_us: 8_000,
                stop_us: 7_900,
                nbytes: 32,
            },
            Activity {
                task: t,
                kind: StreamKind::Compute,
                start_us: 0,
                stop_us: 1,
                nbytes: 1,
            },
        ],
    );
    s.validate();
    let stream = s.task_stream(0, 100);
    assert_eq!(
        stream.len(),
        3,
        "a task unknown and a computation reported so are skipped"
    );
    assert_eq!(stream[0].kind, StreamKind::Compute);
    let tr = &stream[1];
    assert_eq!(
        (&*tr.key, &*tr.prefix, &*tr.worker_name),
        ("load-1", "load", "w1")
    );
    assert_eq!(
        (tr.kind, tr.kind.name(), tr.kind.detail()),
        (transfer, "transfer", "tcp")
    );
    assert_eq!(
        (tr.start_us, tr.stop_us, tr.nbytes, tr.seq),
        (6_000, 6_500, 64, 2)
    );
    assert_eq!(&*tr.peer_name, "w0");
    assert_eq!(&*stream[0].peer_name, "", "a computation has no peer");
    let sp = &stream[2];
    assert_eq!(
        (sp.kind.name(), sp.kind.detail()),
        ("spill", "device->host")
    );
    assert_eq!((sp.start_us, sp.stop_us, sp.nbytes), (7_900, 7_900, 32));
    assert_eq!(
        s.info().prefixes[0].compute_us,
        1_000,
        "transfers and spills are not compute time"
    );
    for d in SpillDirection::ALL {
        assert_eq!(SpillDirection::from_name(d.as_str()), Some(d));
    }
    assert_eq!(SpillDirection::from_name("disk->device"), None);
}

#[test]
fn the_graph_view_has_every_task_and_dependency_up_to_its_limit() {
    let mut s = core(CoreConfig::default());
    s.on_update_graph(
        C,
        vec![
            task("load-1", "io.read", &[]),
            task("load-2", "io.read", &[]),
            task("x", "array.sum", &["load-1", "load-2"]),
        ],
        &keys(&["x"]),
    )
    .unwrap();
    finish(&mut s, "load-1", 1_000, 10, 8);
    let g = s.graph_view(3).expect("three tasks, limit three");
    let at = |key: &str| g.nodes.iter().position(|n| &*n.key == key).unwrap() as u32;
    let mut edges = g.edges.clone();
    edges.sort();
    let mut want = vec![(at("load-1"), at("x")), (at("load-2"), at("x"))];
    want.sort();
    assert_eq!(edges, want);
    let n = &g.nodes[at("load-1") as usize];
    assert_eq!(
        (n.state, n.worker, &*n.prefix),
        (TaskState::Memory, Some(W), "load")
    );
    let n = &g.nodes[at("load-2") as usize];
    assert_eq!((n.state, n.worker), (TaskState::Processing, Some(W)));
    let n = &g.nodes[at("x") as usize];
    // Sent ahead to the worker running both its inputs.
    assert_eq!(
        (n.state, n.worker, &*n.prefix),
        (TaskState::Processing, Some(W), "array.sum")
    );
    assert_eq!(s.graph_view(2), None, "past the limit, nothing");
}

/// Found by fuzzing (the scheduler_core target): sizes and durations a worker reports
/// are its word, not numbers to overflow on. Two outputs of `u64::MAX` bytes, each run
/// for `u64::MAX` µs, held by one worker and read by one task: the prefix's sums
/// saturate, a value's size counts at most `MAX_REPORTED_BYTES`, and the sums over a
/// worker's values and over a task's inputs stay exact.
#[test]
fn reported_sizes_and_durations_of_u64_max_do_not_overflow() {
    let mut s = core(CoreConfig::default());
    s.on_worker_joined(WorkerId(1), worker("w1"));
    s.on_update_graph(
        C,
        vec![
            task("a-1", "inc", &[]),
            task("a-2", "inc", &[]),
            task("b-1", "add", &["a-1", "a-2"]),
        ],
        &keys(&["b-1"]),
    )
    .unwrap();
    s.validate();
    let workers: Vec<(WorkerId, rask_proto::TaskId)> = s
        .take_actions()
        .into_iter()
        .filter_map(|a| match a {
            rask_scheduler_core::Action::Compute { worker, msg, .. } => Some((worker, msg.task)),
            _ => None,
        })
        .collect();
    assert_eq!(workers.len(), 2);
    for (w, t) in workers {
        s.on_task_finished(w, t, u64::MAX, u64::MAX, 0, None);
        s.validate();
    }
    let info = s.info();
    let p = info.prefixes.iter().find(|p| &*p.name == "a").unwrap();
    assert_eq!(p.compute_us, u64::MAX);
    assert_eq!(p.output_bytes, 2 * rask_scheduler_core::MAX_REPORTED_BYTES);
    assert_eq!(s.state("b-1"), TaskState::Processing);
    let _ = s.adaptive_target(std::time::Duration::from_secs(5));
    let _ = s.workers_to_close(Some(0));
    s.on_retire_workers(C, 1, &[W]);
    s.validate();
}

/// As above, for the sizes of the values a worker that joined again says it holds.
#[test]
fn held_values_of_u64_max_bytes_do_not_overflow() {
    let mut s = SchedulerCore::new(CoreConfig::default());
    s.on_client_joined(C);
    s.on_update_graph(
        C,
        vec![
            task("a-1", "inc", &[]),
            task("a-2", "inc", &[]),
            task("b-1", "add", &["a-1", "a-2"]),
        ],
        &keys(&["b-1"]),
    )
    .unwrap();
    s.on_worker_joined(W, worker("w0"));
    s.take_actions();
    let held = [
        (s.task_id("a-1").unwrap(), u64::MAX),
        (s.task_id("a-2").unwrap(), u64::MAX),
    ];
    s.on_worker_holds(W, &held);
    s.validate();
    assert_eq!(s.state("a-1"), TaskState::Memory);
    assert_eq!(s.state("a-2"), TaskState::Memory);
    assert_eq!(s.state("b-1"), TaskState::Processing);
    let _ = s.adaptive_target(std::time::Duration::from_secs(5));
}
