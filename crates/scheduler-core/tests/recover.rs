//! Coming back: a graph restored at its old ids, ids issued after a restore above every
//! old one, placement held until workers are back, and what a rejoining worker holds
//! taken as results (not recomputed) unless stale. `validate()` after every step.

mod common;

use common::{keys, op_task, worker_with, C};
use rask_proto::{TaskId, WorkerId};
use rask_scheduler_core::{
    Action, CoreConfig, NewTask, SchedulerCore, TaskState, WorkerSpec, RESTORE_GENERATIONS,
};
use rustc_hash::FxHashMap;

fn task(key: &str, deps: &[&str]) -> NewTask {
    op_task(key, "inc", deps)
}

fn worker(name: &str) -> WorkerSpec {
    worker_with(name, 1)
}

/// The tasks the actions since the last call asked `w` to compute.
fn computes(s: &mut SchedulerCore, w: WorkerId) -> Vec<TaskId> {
    s.take_actions()
        .into_iter()
        .filter_map(|a| match a {
            Action::Compute { worker, msg, .. } if worker == w => Some(msg.task),
            _ => None,
        })
        .collect()
}

fn frees(actions: &[Action]) -> Vec<(WorkerId, TaskId)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Free { worker, task } => Some((*worker, *task)),
            _ => None,
        })
        .collect()
}

fn finish(s: &mut SchedulerCore, w: WorkerId, key: &str) {
    let t = s.task_id(key).unwrap();
    s.on_task_finished(w, t, 8, 10, 0, None);
    s.validate();
}

#[test]
fn a_restored_graph_keeps_its_ids_and_later_ids_are_above_every_old_one() {
    let mut before = SchedulerCore::new(CoreConfig::default());
    before.record_changes(true);
    before.on_client_joined(C);
    before
        .on_update_graph(C, vec![task("b", &["a"]), task("a", &[])], &keys(&["b"]))
        .unwrap();
    // A task submitted and dropped at once: its slot is reused with a new generation.
    before
        .on_update_graph(C, vec![task("gone", &[])], &[])
        .unwrap();
    before
        .on_update_graph(C, vec![task("c", &[])], &keys(&["c"]))
        .unwrap();
    let (created, forgotten) = before.take_changes();
    let indices: Vec<u32> = created.iter().map(|(i, _)| *i).collect();
    assert_eq!(
        indices,
        vec![1, 0, 0, 0],
        "inputs first, by index in their graph"
    );
    assert_eq!(forgotten, vec![created[2].1], "gone, at once");
    assert_eq!(before.take_changes(), (vec![], vec![]), "taken once");
    let ids: FxHashMap<String, TaskId> = ["a", "b", "c"]
        .iter()
        .map(|k| (k.to_string(), before.task_id(k).unwrap()))
        .collect();
    // What a journal is compacted to: every task with its id, and each client's keys.
    let (tasks, wants) = before.export();
    let exported: Vec<(TaskId, String, Vec<String>)> = tasks
        .into_iter()
        .map(|(id, t)| (id, t.key, t.deps))
        .collect();
    let mut expected = vec![
        (ids["a"], "a".to_string(), vec![]),
        (ids["b"], "b".to_string(), keys(&["a"])),
        (ids["c"], "c".to_string(), vec![]),
    ];
    expected.sort();
    assert_eq!(exported, expected);
    assert_eq!(wants, vec![(C, keys(&["b", "c"]))]);
    // The journal's tail is lost with what came after the compaction: a task issued in
    // a new slot, dropped, and that slot issued again (its generation one up).
    before
        .on_update_graph(C, vec![task("lost", &[])], &[])
        .unwrap();
    before
        .on_update_graph(C, vec![task("lost-too", &[])], &keys(&["lost-too"]))
        .unwrap();
    let mut issued: Vec<TaskId> = created.iter().map(|(_, t)| *t).collect();
    issued.extend(before.take_changes().0.into_iter().map(|(_, t)| t));
    assert_eq!(issued.len(), 6);

    let mut after = SchedulerCore::new(CoreConfig::default());
    after.on_client_joined(C);
    after.hold_placement(true);
    // Restored in another order and in one graph: the ids are those given.
    after
        .restore_graph(
            vec![task("c", &[]), task("a", &[]), task("b", &["a"])],
            &[(C, keys(&["b", "c"]))],
            &ids,
        )
        .unwrap();
    after.restored();
    after.validate();
    for (k, id) in &ids {
        assert_eq!(after.task_id(k), Some(*id), "{k}");
    }
    let floor = (ids.values().map(|t| t.0 >> 32).max().unwrap() as u32) + RESTORE_GENERATIONS;
    after
        .on_update_graph(C, vec![task("d", &[]), task("e", &[])], &keys(&["d", "e"]))
        .unwrap();
    for k in ["d", "e"] {
        let t = after.task_id(k).unwrap();
        assert!(
            (t.0 >> 32) as u32 >= floor,
            "{k}: {t:?} not above the old ids"
        );
        assert!(
            !issued.contains(&t),
            "{k}: {t:?} was issued before the restore"
        );
    }
    // Held: a worker joining gets nothing until placement is let go.
    let w = WorkerId(7);
    after.on_worker_joined(w, worker("w7"));
    after.validate();
    assert!(computes(&mut after, w).is_empty(), "placed while held");
    assert!(after.placement_held());
    after.hold_placement(false);
    assert!(!after.placement_held());
    after.validate();
    let mut placed = computes(&mut after, w);
    placed.sort();
    // b is sent ahead to the worker running its only input.
    let mut want: Vec<TaskId> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|k| after.task_id(k).unwrap())
        .collect();
    want.sort();
    assert_eq!(placed, want, "every task, once let go");
}

#[test]
fn what_a_rejoining_worker_holds_is_taken_unless_stale() {
    let mut s = SchedulerCore::new(CoreConfig::default());
    s.on_client_joined(C);
    let (w0, w1, w2) = (WorkerId(0), WorkerId(1), WorkerId(2));
    s.on_worker_joined(w0, worker("w0"));
    s.on_update_graph(
        C,
        vec![task("a", &[]), task("x", &[]), task("b", &["a", "x"])],
        &keys(&["b", "x"]),
    )
    .unwrap();
    let _ = s.take_actions();
    finish(&mut s, w0, "a");
    finish(&mut s, w0, "x");
    let (a, x, b) = (
        s.task_id("a").unwrap(),
        s.task_id("x").unwrap(),
        s.task_id("b").unwrap(),
    );
    // w0 is cut off: b was running there, a and x were only there.
    s.on_worker_lost(w0);
    s.validate();
    assert_eq!(s.state("a"), TaskState::NoWorker, "to be computed again");
    s.hold_placement(true);
    // w1 (w0 come back as a new member) holds a and x; w2 joins too.
    s.on_worker_joined(w1, worker("w0-again"));
    s.on_worker_joined(w2, worker("w2"));
    let _ = s.take_actions();
    s.on_worker_holds(w1, &[(a, 8), (x, 8), (TaskId(999), 8)]);
    s.validate();
    let actions = s.take_actions();
    assert_eq!(
        frees(&actions),
        vec![(w1, TaskId(999))],
        "only the unknown is dropped"
    );
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::KeyInMemory { key, .. } if &**key == "x")),
        "the client hears x is back"
    );
    assert_eq!(
        (s.state("a"), s.who_has("a")),
        (TaskState::Memory, vec![w1])
    );
    assert_eq!(s.state("x"), TaskState::Memory);
    assert_ne!(
        s.state("b"),
        TaskState::Processing,
        "nothing placed while held"
    );
    // w2 claims x too, from before: x is in memory on w1, so w2's copy is stale.
    s.on_worker_holds(w2, &[(x, 8), (b, 8)]);
    s.validate();
    let actions = s.take_actions();
    let mut dropped = frees(&actions);
    dropped.sort();
    // x is stale on w2; b is taken, and a, read only by b, is then released on w1.
    assert_eq!(dropped, vec![(w1, a), (w2, x)]);
    assert_eq!(
        (s.state("b"), s.who_has("b")),
        (TaskState::Memory, vec![w2])
    );
    // Let go: nothing is left to compute.
    s.hold_placement(false);
    s.validate();
    assert!(computes(&mut s, w1).is_empty() && computes(&mut s, w2).is_empty());
    assert_eq!(s.count(TaskState::Memory), 2, "x and b");
}

#[test]
fn a_value_held_after_its_task_was_computed_again_elsewhere_is_dropped() {
    let mut s = SchedulerCore::new(CoreConfig::default());
    s.on_client_joined(C);
    let (w0, w1, w2) = (WorkerId(0), WorkerId(1), WorkerId(2));
    s.on_worker_joined(w0, worker("w0"));
    s.on_update_graph(C, vec![task("a", &[])], &keys(&["a"]))
        .unwrap();
    finish(&mut s, w0, "a");
    let a = s.task_id("a").unwrap();
    s.on_worker_lost(w0);
    // a is computed again on w1 (running, then done) before w0 comes back as w2.
    s.on_worker_joined(w1, worker("w1"));
    assert_eq!(computes(&mut s, w1), vec![a]);
    s.on_worker_joined(w2, worker("w0-again"));
    s.on_worker_holds(w2, &[(a, 8)]);
    s.validate();
    assert_eq!(
        frees(&s.take_actions()),
        vec![(w2, a)],
        "running elsewhere: stale"
    );
    finish(&mut s, w1, "a");
    s.on_worker_holds(w2, &[(a, 8)]);
    s.validate();
    assert_eq!(
        frees(&s.take_actions()),
        vec![(w2, a)],
        "in memory elsewhere: stale"
    );
    assert_eq!(s.who_has("a"), vec![w1]);
    // A forgotten task's value is stale too.
    s.on_release_keys(C, &keys(&["a"]));
    s.validate();
    let _ = s.take_actions();
    s.on_worker_holds(w2, &[(a, 8)]);
    assert_eq!(frees(&s.take_actions()), vec![(w2, a)]);
}

/// A client that held a key before a restart, and comes back after a rejoining worker
/// gave the key's value back (the news went to no connection), is told when it asks for
/// its keys again. Holding the key already, it used to be told nothing, and its future
/// waited for ever (the chaos soak's stall).
#[test]
fn a_client_asking_for_its_keys_again_is_told_those_already_in_memory() {
    let mut s = SchedulerCore::new(CoreConfig::default());
    s.on_client_joined(C);
    s.hold_placement(true);
    let ids: FxHashMap<String, TaskId> = [("x".to_string(), TaskId(5))].into_iter().collect();
    s.restore_graph(vec![task("x", &[])], &[(C, keys(&["x"]))], &ids)
        .unwrap();
    s.restored();
    s.take_actions();
    s.on_worker_joined(WorkerId(0), worker("a"));
    s.on_worker_holds(WorkerId(0), &[(TaskId(5), 8)]);
    // Told once, while the client was away.
    let told = |a: &[Action]| {
        a.iter()
            .filter(|a| matches!(a, Action::KeyInMemory { client, .. } if *client == C))
            .count()
    };
    assert_eq!(told(&s.take_actions()), 1);
    s.on_resubscribe(C, &keys(&["x"])).unwrap();
    assert_eq!(told(&s.take_actions()), 1, "told again");
    s.validate();
}

/// A task's own failure is recorded (not those of the tasks failing with it), kept by a
/// compaction, and put back after a restart: the task and what reads it are erred again,
/// the client told, and nothing runs.
#[test]
fn a_failure_recorded_before_a_restart_is_put_back_and_nothing_runs_again() {
    let mut before = SchedulerCore::new(CoreConfig::default());
    before.record_changes(true);
    before.on_client_joined(C);
    let w = WorkerId(0);
    before.on_worker_joined(w, worker("w"));
    before
        .on_update_graph(
            C,
            vec![task("a", &[]), task("b", &["a"]), task("ok", &[])],
            &keys(&["b", "ok"]),
        )
        .unwrap();
    let _ = before.take_actions();
    let a = before.task_id("a").unwrap();
    before.on_task_erred(w, a, "boom".into());
    before.validate();
    assert_eq!(before.state("b"), TaskState::Erred);
    assert_eq!(before.take_erred(), vec![(a, "boom".to_string())]);
    assert_eq!(before.take_erred(), vec![], "taken once");
    assert_eq!(before.export_erred(), vec![(a, "boom".to_string())]);
    let ids: FxHashMap<String, TaskId> = ["a", "b", "ok"]
        .iter()
        .map(|k| (k.to_string(), before.task_id(k).unwrap()))
        .collect();

    let mut after = SchedulerCore::new(CoreConfig::default());
    after.on_client_joined(C);
    after.hold_placement(true);
    after
        .restore_graph(
            vec![task("a", &[]), task("b", &["a"]), task("ok", &[])],
            &[(C, keys(&["b", "ok"]))],
            &ids,
        )
        .unwrap();
    after.restored();
    after.restore_erred(ids["a"], "boom".into());
    after.validate();
    assert_eq!(
        (after.state("a"), after.state("b")),
        (TaskState::Erred, TaskState::Erred)
    );
    assert_ne!(after.state("ok"), TaskState::Erred);
    let told: Vec<(String, String)> = after
        .take_actions()
        .into_iter()
        .filter_map(|x| match x {
            Action::KeyErred { client, key, error } if client == C => {
                Some((key.to_string(), format!("{}: {}", error.key, error.message)))
            }
            _ => None,
        })
        .collect();
    assert_eq!(told, vec![("b".to_string(), "a: boom".to_string())]);
    assert_eq!(after.export_erred(), vec![(ids["a"], "boom".to_string())]);
    // Once let go, only the task that never failed runs.
    after.on_worker_joined(w, worker("w"));
    after.hold_placement(false);
    after.validate();
    assert_eq!(computes(&mut after, w), vec![ids["ok"]]);
    // A failure of a task already done, or unknown, changes nothing.
    after.restore_erred(TaskId(12345), "late".into());
    after.validate();
    assert_eq!(after.state("b"), TaskState::Erred);
}

/// An input lost with its worker while a task reading it runs elsewhere is computed
/// again; the running task waits for it again (as a task sent ahead does), and takes it
/// when it is back in memory: its report is taken.
#[test]
fn an_input_computed_again_while_its_reader_runs_elsewhere_is_waited_for_again() {
    let mut s = SchedulerCore::new(CoreConfig::default());
    s.on_client_joined(C);
    let (a, b) = (WorkerId(0), WorkerId(1));
    s.on_worker_joined(a, worker("a"));
    s.on_update_graph(C, vec![task("x", &[])], &keys(&["x"]))
        .unwrap();
    finish(&mut s, a, "x");
    // A is busy with a long task: y, reading x, goes to B.
    s.on_update_graph(C, vec![task("long", &[])], &keys(&["long"]))
        .unwrap();
    s.on_worker_joined(b, worker("b"));
    s.on_update_graph(C, vec![task("y", &["x"])], &keys(&["y"]))
        .unwrap();
    s.validate();
    let (x, y) = (s.task_id("x").unwrap(), s.task_id("y").unwrap());
    assert_eq!(s.processing_on(y), Some(b));
    let _ = s.take_actions();
    s.on_worker_lost(a);
    s.validate();
    assert_eq!(
        (s.processing_on(y), s.processing_on(x)),
        (Some(b), Some(b)),
        "y stays; x is computed again beside it"
    );
    s.on_task_finished(b, x, 8, 10, 0, None);
    s.validate();
    s.on_task_finished(b, y, 8, 10, 0, None);
    s.validate();
    assert_eq!(s.state("y"), TaskState::Memory);
}

/// Several holders (clients, datasets' holders) restored at once: a task only a later
/// holder wants, or that only a later holder's task reads, is kept; one no holder wants
/// nor needs is dropped; a client that holds nothing is still known. With no holder at
/// all, nothing is kept.
#[test]
fn a_graph_restored_for_several_holders_keeps_what_any_of_them_wants() {
    let d = rask_proto::ClientId(7);
    let e = rask_proto::ClientId(8);
    let ids: FxHashMap<String, TaskId> = [("a", 1), ("b", 2), ("c", 3), ("gone", 4)]
        .into_iter()
        .map(|(k, i)| (k.to_string(), TaskId(i)))
        .collect();
    let graph = || {
        vec![
            task("a", &[]),
            task("b", &["a"]),
            task("c", &[]),
            task("gone", &[]),
        ]
    };
    let mut s = SchedulerCore::new(CoreConfig::default());
    for c in [C, d, e] {
        s.on_client_joined(c);
    }
    s.hold_placement(true);
    s.restore_graph(
        graph(),
        &[(C, vec![]), (d, keys(&["b"])), (e, keys(&["c", "b"]))],
        &ids,
    )
    .unwrap();
    s.restored();
    s.validate();
    let kept: Vec<Option<TaskId>> = ["a", "b", "c", "gone"]
        .iter()
        .map(|k| s.task_id(k))
        .collect();
    assert_eq!(
        kept,
        [Some(TaskId(1)), Some(TaskId(2)), Some(TaskId(3)), None]
    );
    assert_eq!(s.state("b"), TaskState::Waiting);
    // Each holder's keys are its own: d releasing b leaves e's.
    s.on_release_keys(d, &keys(&["b"]));
    s.validate();
    assert_eq!(s.task_id("b"), Some(TaskId(2)));
    s.on_release_keys(e, &keys(&["b", "c"]));
    s.validate();
    assert_eq!(
        ["a", "b", "c"].map(|k| s.task_id(k)),
        [None, None, None],
        "released by every holder"
    );
    let mut none = SchedulerCore::new(CoreConfig::default());
    none.restore_graph(graph(), &[], &ids).unwrap();
    none.validate();
    assert_eq!(none.task_count(), 0);
}

/// A rejoining worker placed a task before its list of held values arrived, and the list
/// names that task (it had computed it before): the value is taken, the run it was given
/// ends there, and the value is not dropped.
#[test]
fn a_value_held_by_the_worker_the_task_runs_on_is_taken() {
    let mut s = SchedulerCore::new(CoreConfig::default());
    s.on_client_joined(C);
    let w = WorkerId(0);
    s.on_worker_joined(w, worker("w"));
    s.on_update_graph(C, vec![task("a", &[])], &keys(&["a"]))
        .unwrap();
    let a = s.task_id("a").unwrap();
    assert_eq!(computes(&mut s, w), vec![a]);
    assert_eq!(s.state("a"), TaskState::Processing);
    s.on_worker_holds(w, &[(a, 8)]);
    s.validate();
    assert!(frees(&s.take_actions()).is_empty(), "not stale");
    assert_eq!((s.state("a"), s.who_has("a")), (TaskState::Memory, vec![w]));
}
