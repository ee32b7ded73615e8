//! Unit tests of the core's internals.

use rask_proto::msg::Resource;
use rask_proto::packed::Packed;
use rask_proto::{ClientId, Datum};

use crate::api::CoreConfig;
use crate::api::NewTask;
use crate::core::SchedulerCore;

/// A map of `inc` over `0..n`, its keys numbered from `first`.
pub(crate) fn map(prefix: &str, first: u64, n: i64) -> crate::api::NewMap {
    crate::api::NewMap {
        prefix: prefix.into(),
        first,
        op: "inc".into(),
        args: (0..n)
            .map(|i| (Datum::List(vec![Datum::Int(i)]).into(), vec![]))
            .collect(),
        resources: vec![],
        code: None,
    }
}

fn new_task(key: &str, deps: &[&str], resources: &[&str]) -> NewTask {
    NewTask {
        key: key.into(),
        op: "add".into(),
        args: Datum::Null,
        bufs: vec![],
        deps: deps.iter().map(|d| d.to_string()).collect(),
        resources: resources
            .iter()
            .map(|r| Resource {
                name: r.to_string(),
                amount: 1.0,
            })
            .collect(),
        code: None,
    }
}

#[test]
#[should_panic(expected = "y ready without its inputs")]
fn validate_finds_a_ready_task_whose_input_is_not_in_memory() {
    let c = ClientId(1);
    let mut s = SchedulerCore::new(CoreConfig::default());
    s.on_client_joined(c);
    // No worker has a GPU: both wait in no-worker.
    s.on_update_graph(
        c,
        vec![new_task("w", &[], &["gpu"]), new_task("y", &[], &["gpu"])],
        &["w".to_string(), "y".to_string()],
    )
    .unwrap();
    s.validate();
    let w = s.task_id("w").unwrap();
    let y = s.task_id("y").unwrap();
    // Broken on purpose: y reads w, which is not in memory.
    s.tasks.get_mut(&y).unwrap().deps = vec![w].into();
    s.validate();
}

/// Found by fuzzing (the scheduler_core target): a task whose arguments name the largest
/// dependency index a reference can carry, with no dependencies, is refused as a bad
/// reference; counting that index plus one overflowed (a panic in checked builds, and in
/// others an overflow to 0 that let the graph through).
#[test]
fn a_reference_to_the_largest_dependency_index_is_refused() {
    let c = ClientId(1);
    let mut s = SchedulerCore::new(CoreConfig::default());
    s.on_client_joined(c);
    let mut t = new_task("x", &[], &[]);
    t.args = Datum::List(vec![Datum::Int(1), Datum::Ref(u32::MAX)]);
    let e = s.on_update_graph(c, vec![t], &["x".to_string()]);
    assert_eq!(
        e,
        Err(crate::api::GraphError::BadReference {
            key: "x".into(),
            index: u32::MAX,
            count: 0,
        })
    );
    s.validate();
}

/// A forgotten task's key leaves the index: the key finds nothing, and submitted again
/// it is a new task (its slot reused, under another id).
#[test]
fn a_forgotten_key_leaves_the_index_and_can_be_submitted_again() {
    let c = ClientId(1);
    let mut s = SchedulerCore::new(CoreConfig::default());
    s.on_client_joined(c);
    s.on_update_graph(c, vec![new_task("x", &[], &[])], &["x".to_string()])
        .unwrap();
    let first = s.task_id("x").expect("x indexed");
    s.on_release_keys(c, &["x".to_string()]);
    s.validate();
    assert_eq!(s.task_id("x"), None);
    assert_eq!(s.keys.len(), 0);
    s.on_update_graph(c, vec![new_task("x", &[], &[])], &["x".to_string()])
        .unwrap();
    s.validate();
    let again = s.task_id("x").expect("x indexed again");
    assert_ne!(again, first);
    assert_eq!(s.key(again).map(|k| &**k), Some("x"));
}

/// Distinct keys hash apart: an index whose keys all collide is correct but slow.
#[test]
fn keys_hash_apart() {
    let hashes: std::collections::HashSet<u64> = (0..1000)
        .map(|i| crate::keys::hash(&format!("k-{i}")))
        .collect();
    assert_eq!(hashes.len(), 1000);
}

/// `validate` finds a load index out of step with its workers.
#[test]
#[should_panic(expected = "workers taking tasks")]
fn validate_finds_a_wrong_count_of_workers_taking_tasks() {
    let mut s = SchedulerCore::new(CoreConfig::default());
    s.on_worker_joined(rask_proto::WorkerId(1), crate::tests::spec("w1"));
    s.validate();
    s.free_workers += 1;
    s.validate();
}

/// `validate` finds a worker filed under a stale load.
#[test]
#[should_panic(expected = "load index of")]
fn validate_finds_a_worker_filed_under_a_stale_load() {
    let mut s = SchedulerCore::new(CoreConfig::default());
    s.on_worker_joined(rask_proto::WorkerId(1), crate::tests::spec("w1"));
    // Filed now (a cluster this small is filed only when it grows).
    s.refresh_index();
    s.workers
        .get_mut(&rask_proto::WorkerId(1))
        .expect("joined")
        .occupancy_us += 1_000_000;
    s.validate();
}

/// `validate` finds a worker marked to be filed again in the load index but missing from
/// the list of those to file (or listed and not marked).
#[test]
#[should_panic(expected = "marked to be filed again in one place only")]
fn validate_finds_a_worker_marked_to_be_filed_again_in_one_place_only() {
    let mut s = SchedulerCore::new(CoreConfig::default());
    s.on_worker_joined(rask_proto::WorkerId(1), crate::tests::spec("w1"));
    s.validate();
    let w = s.workers.get_mut(&rask_proto::WorkerId(1)).expect("joined");
    w.stale = !w.stale;
    s.validate();
}

/// A map's new keys are indexed by number; keys of the same form from a graph are in the
/// table, and only their prefixes send a look-up of a key a block lacks to the table.
#[test]
fn a_maps_keys_are_indexed_by_number_and_a_graphs_in_the_table() {
    let mut s = SchedulerCore::new(CoreConfig::default());
    let c = ClientId(1);
    s.on_client_joined(c);
    let graph: Vec<NewTask> = ["g-5", "g-6", "plain"]
        .iter()
        .map(|k| new_task(k, &[], &[]))
        .collect();
    let wanted: Vec<String> = graph.iter().map(|t| t.key.clone()).collect();
    s.on_update_graph(c, graph, &wanted).unwrap();
    assert_eq!((s.keys.in_blocks(), s.keys.len()), (0, 3));
    s.on_map(c, map("m", 0, 10)).unwrap();
    // Over keys a graph gave: those keep their tasks, in the table.
    s.on_map(c, map("g", 4, 4)).unwrap();
    s.validate();
    assert_eq!((s.keys.in_blocks(), s.keys.len()), (12, 15));
    assert!(s.keys.table_has("g"));
    assert!(!s.keys.table_has("m"));
    assert!(!s.keys.table_has("plain"));
    for (key, known) in [
        ("g-5", true),
        ("g-7", true),
        ("g-8", false),
        ("m-9", true),
        ("m-10", false),
    ] {
        assert_eq!(s.task_id(key).is_some(), known, "{key}");
    }
    // Keys known to be unheld without a look-up: past a block, or of a prefix with
    // none; none known while the table holds a key of the prefix's form.
    assert_eq!(s.keys.unheld_from("m"), Some(10));
    assert_eq!(s.keys.unheld_from("new"), Some(0));
    assert_eq!(s.keys.unheld_from("g"), None);
}

pub(crate) fn spec(name: &str) -> crate::api::WorkerSpec {
    crate::api::WorkerSpec {
        name: name.into(),
        addr: format!("tcp://127.0.0.1/{name}"),
        host_id: "h".into(),
        nthreads: 1,
        memory_limit: 1 << 30,
        resources: vec![],
        gpu: None,
        nvlink: vec![],
        device_spill_at: 0,
        code: 0,
        base: true,
    }
}

/// A client that wants and releases key after key keeps a list of what it may want no
/// longer than twice what it wants plus the margin, whatever it did before; leaving
/// releases what it still wants and nothing another client wants.
#[test]
fn a_clients_wants_stay_bounded_and_leaving_releases_only_its_own() {
    use crate::lists::SLACK;
    use crate::TaskState;
    let (a, b) = (ClientId(1), ClientId(2));
    let mut s = SchedulerCore::new(CoreConfig::default());
    s.on_client_joined(a);
    s.on_client_joined(b);
    // Held throughout by `a`; `shared` by both.
    s.on_update_graph(a, vec![new_task("kept", &[], &[])], &["kept".into()])
        .unwrap();
    s.on_update_graph(a, vec![new_task("shared", &[], &[])], &["shared".into()])
        .unwrap();
    s.on_update_graph(b, vec![], &["shared".into()]).unwrap();
    // The same key wanted and released again and again (each time a new task, its slot
    // reused), and `shared` released and wanted again (the same task: `b` holds it):
    // stale and repeated entries in `a`'s list.
    for i in 0..3 * SLACK {
        s.on_update_graph(a, vec![new_task("churn", &[], &[])], &["churn".into()])
            .unwrap();
        s.on_release_keys(a, &["churn".into(), "shared".into()]);
        s.on_update_graph(a, vec![], &["shared".into()]).unwrap();
        let len = s.clients[&a].list.len();
        assert!(
            len <= 2 * 2 + SLACK + 2,
            "after {i} rounds the list holds {len}"
        );
        // Appends alone until the first compaction is due (not a compaction each).
        if 2 + 2 * (i + 1) < SLACK {
            assert_eq!(len, 2 + 2 * (i + 1), "after {i} rounds");
        }
    }
    s.validate();
    assert_eq!(s.clients[&a].wanted(a, &s.tasks).len(), 2);
    // `b` held `shared` and came to hold the reused slot's current task: `a` leaving
    // leaves both to `b`.
    s.on_update_graph(b, vec![new_task("churn", &[], &[])], &["churn".into()])
        .unwrap();
    s.on_client_left(a);
    s.validate();
    assert_eq!(s.task_id("kept"), None, "a's own task is forgotten");
    for key in ["shared", "churn"] {
        let t = s.task_id(key).expect("b's task is kept");
        assert_eq!(s.tasks[&t].who_wants.as_slice(), &[b], "{key}");
        assert_ne!(s.tasks[&t].state, TaskState::Released, "{key}");
    }
}

/// `swap_actions` gives the actions produced since the last call, in order, and the core
/// fills the vector handed to it next, emptied first: a caller handing back the one it
/// drained keeps its room.
#[test]
fn swapped_actions_come_back_in_order_and_the_spare_is_filled_next() {
    use crate::Action;
    let c = ClientId(1);
    let w = rask_proto::WorkerId(1);
    let mut s = SchedulerCore::new(CoreConfig::default());
    s.on_client_joined(c);
    s.on_worker_joined(w, spec("w1"));
    s.on_update_graph(c, vec![new_task("x", &[], &[])], &["x".into()])
        .unwrap();
    // A spare with room and a stale action in it.
    let mut spare = Vec::with_capacity(64);
    spare.push(Action::Free {
        worker: w,
        task: rask_proto::TaskId(99),
    });
    let first = s.swap_actions(spare);
    let [Action::Compute { worker, msg, .. }] = first.as_slice() else {
        panic!("one compute expected: {first:?}");
    };
    let x = s.task_id("x").unwrap();
    assert_eq!((*worker, msg.task), (w, x));
    s.on_task_finished(w, x, 8, 10, 0, None);
    let second = s.swap_actions(Vec::new());
    assert!(second.capacity() >= 64, "the spare was not the one filled");
    let [Action::KeyInMemory { client, key, .. }] = second.as_slice() else {
        panic!("one news of x expected, and not the stale free: {second:?}");
    };
    assert_eq!((*client, &**key), (c, "x"));
    assert!(s.take_actions().is_empty());
}

/// A worker that comes to hold and drop value after value keeps a list of what it may
/// hold no longer than twice what it holds plus the margin, counts exactly what it holds,
/// and when it leaves, exactly its values are lost (and recomputed where wanted).
#[test]
fn a_workers_held_values_stay_bounded_and_leaving_loses_exactly_its_own() {
    use crate::lists::SLACK;
    use crate::TaskState;
    use rask_proto::WorkerId;
    let c = ClientId(1);
    let (w1, w2) = (WorkerId(1), WorkerId(2));
    let mut s = SchedulerCore::new(CoreConfig::default());
    s.on_client_joined(c);
    s.on_worker_joined(w1, spec("w1"));
    let finish = |s: &mut SchedulerCore, key: &str| {
        let t = s.task_id(key).unwrap();
        s.on_task_finished(w1, t, 8, 10, 0, None);
        t
    };
    s.on_update_graph(c, vec![new_task("kept", &[], &[])], &["kept".into()])
        .unwrap();
    let kept = finish(&mut s, "kept");
    // The same key computed and released again and again: each time a new task on a
    // reused slot, held by w1 and dropped.
    for i in 0..3 * SLACK {
        s.on_update_graph(c, vec![new_task("churn", &[], &[])], &["churn".into()])
            .unwrap();
        finish(&mut s, "churn");
        let w = &s.workers[&w1].has_what;
        assert_eq!(w.count(), 2, "after {i} rounds");
        let len = w.list.len();
        assert!(
            len <= 2 * 2 + SLACK + 1,
            "after {i} rounds the list holds {len}"
        );
        if 1 + (i + 1) < SLACK {
            assert_eq!(len, 1 + (i + 1), "after {i} rounds");
        }
        s.on_release_keys(c, &["churn".into()]);
        assert_eq!(s.workers[&w1].has_what.count(), 1, "after {i} rounds");
    }
    s.validate();
    assert_eq!(s.workers[&w1].has_what.current(w1, &s.tasks), vec![kept]);
    let info = s.info();
    assert_eq!(
        info.workers
            .iter()
            .map(|i| i.stored_keys)
            .collect::<Vec<_>>(),
        [1]
    );
    // The churned key, held at the end by w1; w2 joins, and w1 leaves.
    s.on_update_graph(c, vec![new_task("churn", &[], &[])], &["churn".into()])
        .unwrap();
    let churn = finish(&mut s, "churn");
    s.on_worker_joined(w2, spec("w2"));
    s.on_worker_lost(w1);
    s.validate();
    for t in [kept, churn] {
        assert!(s.tasks[&t].who_has.is_empty());
        assert_eq!(
            s.tasks[&t].processing_on,
            Some(w2),
            "{t:?} recomputed on w2"
        );
        assert_eq!(s.tasks[&t].state, TaskState::Processing);
    }
}

/// A map's keys released in runs of numbers do what releasing them by name does: the
/// same tasks forgotten, the same frees sent, whether a key is in its map's block, in the
/// table (a graph's key of that form, or one of a block closed for sparseness), held by
/// another client too, or not known at all.
#[test]
fn releasing_runs_of_a_maps_keys_does_what_releasing_their_names_does() {
    use rask_proto::msg::{map_key, KeyRun};
    use rask_proto::WorkerId;
    let (a, b, w) = (ClientId(1), ClientId(2), WorkerId(1));
    let build = || {
        let mut s = SchedulerCore::new(CoreConfig::default());
        s.on_client_joined(a);
        s.on_client_joined(b);
        s.on_worker_joined(w, spec("w1"));
        let graph: Vec<NewTask> = ["g-5", "g-6", "plain"]
            .iter()
            .map(|k| new_task(k, &[], &[]))
            .collect();
        let wanted: Vec<String> = graph.iter().map(|t| t.key.clone()).collect();
        s.on_update_graph(a, graph, &wanted).unwrap();
        s.on_map(a, map("m", 0, 400)).unwrap();
        s.on_map(a, map("g", 4, 4)).unwrap();
        // `b` wants some of `m` too.
        s.on_update_graph(b, vec![], &[map_key("m", 7), map_key("m", 350)])
            .unwrap();
        // Half of `m` computed: those are freed on the worker when forgotten.
        for n in 0..200 {
            let t = s.task_id(&map_key("m", n)).unwrap();
            if s.tasks[&t].state == crate::TaskState::Processing {
                s.on_task_finished(w, t, 8, 10, 0, None);
            }
        }
        s.take_actions();
        s.validate();
        s
    };
    // Seven keys of `m` in eight first (the block is left sparse and closed, its keys
    // going to the table), then the rest and keys never known, and `g` across graph and
    // map.
    let steps: Vec<Vec<KeyRun>> = vec![
        (0..400)
            .filter(|n| n % 8 != 7)
            .map(|first| KeyRun {
                prefix: "m".into(),
                first,
                count: 1,
            })
            .collect(),
        vec![
            KeyRun {
                prefix: "m".into(),
                first: 0,
                count: 1000,
            },
            KeyRun {
                prefix: "g".into(),
                first: 3,
                count: 6,
            },
            KeyRun {
                prefix: "none".into(),
                first: u64::MAX,
                count: 2,
            },
        ],
    ];
    let (mut by_name, mut by_run) = (build(), build());
    for (i, runs) in steps.iter().enumerate() {
        let names: Vec<String> = runs
            .iter()
            .flat_map(|r| r.numbers().map(|n| map_key(&r.prefix, n)))
            .collect();
        by_name.on_release_keys(a, &names);
        by_run.on_release_runs(a, runs);
        by_name.validate();
        by_run.validate();
        let (x, y) = (by_name.take_actions(), by_run.take_actions());
        assert_eq!(format!("{x:?}"), format!("{y:?}"), "step {i}");
        assert!(!x.is_empty(), "step {i} freed nothing");
        let held = |s: &SchedulerCore| {
            let mut keys: Vec<String> = (0..1000)
                .map(|n| map_key("m", n))
                .chain((0..10).map(|n| map_key("g", n)))
                .chain(["plain".to_string()])
                .filter(|k| s.task_id(k).is_some())
                .collect();
            keys.sort();
            keys
        };
        assert_eq!(held(&by_name), held(&by_run), "step {i}");
        if i == 0 {
            assert!(
                by_run.keys.table_has("m"),
                "the sparse block was not closed"
            );
            // Of `m`, the eighths kept and what `b` wants; `g`'s four; `plain`.
            assert_eq!(held(&by_run).len(), 50 + 1 + 4 + 1, "after the first step");
        }
    }
    // What `b` wants and the plain key stay.
    assert_eq!(
        held_now(&by_run),
        ["m-350", "m-7", "plain"].map(String::from)
    );

    fn held_now(s: &SchedulerCore) -> Vec<String> {
        let mut keys: Vec<String> = ["m-7", "m-350", "plain", "g-5", "g-6"]
            .iter()
            .filter(|k| s.task_id(k).is_some())
            .map(|k| k.to_string())
            .collect();
        keys.sort();
        keys
    }
}

/// A value reported inline reaches every client that wants its key, whether one or
/// several do.
#[test]
fn a_value_reported_inline_reaches_every_client_that_wants_it() {
    use crate::Action;
    use rask_proto::WorkerId;
    let (a, b, w) = (ClientId(1), ClientId(2), WorkerId(1));
    let mut s = SchedulerCore::new(CoreConfig::default());
    s.on_client_joined(a);
    s.on_client_joined(b);
    s.on_worker_joined(w, spec("w1"));
    for (key, wanters) in [("one", vec![a]), ("two", vec![a, b])] {
        for c in &wanters {
            s.on_update_graph(*c, vec![new_task(key, &[], &[])], &[key.into()])
                .unwrap();
        }
        let t = s.task_id(key).unwrap();
        s.take_actions();
        let five = Some(Packed::new(&Datum::List(vec![Datum::Int(5)])));
        s.on_task_finished(w, t, 8, 10, 0, five.clone());
        let told: Vec<(ClientId, Option<Packed>)> = s
            .take_actions()
            .into_iter()
            .filter_map(|act| match act {
                Action::KeyInMemory { client, value, .. } => Some((client, value)),
                _ => None,
            })
            .collect();
        let want: Vec<(ClientId, Option<Packed>)> =
            wanters.iter().map(|c| (*c, five.clone())).collect();
        assert_eq!(told, want, "{key}");
    }
}

/// Runs of a map's keys are a few bytes however many keys they name: a client naming a
/// million keys of a core that holds three tasks makes room for a few actions, not for
/// a million (about 100 MB, from a message of 30 bytes).
#[test]
fn runs_naming_keys_never_held_make_no_room_for_them() {
    use rask_proto::msg::{KeyRun, MAX_RELEASE_RUN_KEYS};
    let a = ClientId(1);
    let mut s = SchedulerCore::new(CoreConfig::default());
    s.on_client_joined(a);
    s.on_map(a, map("m", 0, 3)).unwrap();
    s.take_actions();
    s.actions.shrink_to_fit();
    let runs = [KeyRun {
        prefix: "m".into(),
        first: 0,
        count: MAX_RELEASE_RUN_KEYS,
    }];
    s.on_release_runs(a, &runs);
    s.validate();
    assert!(
        s.actions.capacity() <= 64,
        "room for {} actions, for 3 tasks held",
        s.actions.capacity()
    );
    assert_eq!(s.task_id("m-0"), None, "the map's keys were not released");
}
