//! A map is the graph of its tasks: submitted as a map or as that graph, the core does the
//! same thing, step by step, and refuses the same things.

mod common;

use bytes::Bytes;
use common::{op_task, worker_with, C};
use proptest::prelude::RngExt;
use proptest::test_runner::{RngAlgorithm, TestRng};
use rask_proto::{Datum, WorkerId};
use rask_scheduler_core::{Action, CoreConfig, GraphError, NewMap, SchedulerCore};

fn core() -> SchedulerCore {
    let mut s = SchedulerCore::new(CoreConfig::default());
    s.on_client_joined(C);
    s.on_worker_joined(WorkerId(0), worker_with("a", 2));
    s.on_worker_joined(WorkerId(1), worker_with("b", 1));
    s.take_actions();
    s
}

/// A map of `n` tasks numbered from `first`; every third carries a buffer.
fn map(first: u64, n: usize) -> NewMap {
    NewMap {
        prefix: "inc-1f-3".into(),
        first,
        op: "inc".into(),
        args: (0..n)
            .map(|i| match i % 3 {
                0 => (
                    Datum::List(vec![Datum::Int(i as i64), Datum::Buf(0)]).into(),
                    vec![Bytes::from(vec![i as u8; 3])],
                ),
                _ => (Datum::List(vec![Datum::Int(i as i64)]).into(), vec![]),
            })
            .collect(),
        resources: vec![],
        code: None,
    }
}

/// Runs both cores to the end, each step alike: every compute finished on its worker
/// (its value reported), then every key released. The actions of each step, and the
/// counts, must be equal.
fn run_alike(a: &mut SchedulerCore, b: &mut SchedulerCore) {
    loop {
        let (xa, xb) = (a.take_actions(), b.take_actions());
        assert_eq!(xa, xb, "the same actions");
        a.validate();
        b.validate();
        let computes: Vec<_> = xa
            .iter()
            .filter_map(|x| match x {
                Action::Compute { worker, msg, .. } => Some((*worker, msg.task)),
                _ => None,
            })
            .collect();
        if computes.is_empty() {
            break;
        }
        for (w, t) in computes {
            for s in [&mut *a, &mut *b] {
                s.on_task_finished(
                    w,
                    t,
                    8,
                    3,
                    0,
                    Some(rask_proto::packed::Packed::new(&Datum::Int(t.0 as i64))),
                );
            }
        }
    }
    assert_eq!(a.info().tasks_by_state, b.info().tasks_by_state);
    assert_eq!(a.info().prefixes, b.info().prefixes);
}

/// Submits `m` to `a` as a map and to `b` as its graph, and runs both to the end alike.
fn submit_alike(a: &mut SchedulerCore, b: &mut SchedulerCore, m: NewMap) {
    a.on_map(C, m.clone()).unwrap();
    let (tasks, wanted) = m.into_graph();
    b.on_update_graph(C, tasks, &wanted).unwrap();
    run_alike(a, b);
}

#[test]
fn a_map_does_what_its_graph_does_from_submission_to_release() {
    let (mut a, mut b) = (core(), core());
    let m = map(5, 50);
    let keys: Vec<String> = (0..50).map(|i| m.key(i)).collect();
    assert_eq!(keys[0], "inc-1f-3-5");
    assert_eq!(keys[49], "inc-1f-3-54");
    a.on_map(C, m.clone()).unwrap();
    let (tasks, wanted) = m.into_graph();
    assert_eq!(wanted, keys);
    b.on_update_graph(C, tasks, &wanted).unwrap();
    run_alike(&mut a, &mut b);
    assert_eq!(a.task_count(), 50);
    assert_eq!(a.info().prefixes.len(), 1, "one prefix for the whole map");
    assert_eq!(&*a.info().prefixes[0].name, "inc");
    a.on_release_keys(C, &keys);
    b.on_release_keys(C, &keys);
    run_alike(&mut a, &mut b);
    assert_eq!(a.task_count(), 0);
}

/// A key of the map already held keeps its task (the client now wants it too, and hears
/// it is in memory), as in a graph.
#[test]
fn a_map_over_keys_already_held_keeps_their_tasks_as_a_graph_does() {
    let (mut a, mut b) = (core(), core());
    for s in [&mut a, &mut b] {
        s.on_update_graph(C, vec![op_task("inc-1f-3-7", "inc", &[])], &[])
            .unwrap();
        // Wanted by no one: dropped at once. Submitted again, wanted, and run.
        s.on_update_graph(
            C,
            vec![op_task("inc-1f-3-8", "inc", &[])],
            &["inc-1f-3-8".into()],
        )
        .unwrap();
    }
    run_alike(&mut a, &mut b);
    submit_alike(&mut a, &mut b, map(6, 4));
    assert_eq!(a.task_count(), 4, "the task held counts once");
}

/// A map over keys of an earlier map still held (in its block) keeps their tasks, as a
/// graph does, and adds tasks for the keys past them: the keys past a block's slots are
/// the only ones known to be new.
#[test]
fn a_map_over_an_earlier_maps_keys_keeps_their_tasks_and_adds_the_rest() {
    let (mut a, mut b) = (core(), core());
    submit_alike(&mut a, &mut b, map(10, 8));
    assert_eq!(a.task_count(), 8);
    // Numbers 14..24: 14..18 held, 18..24 new.
    submit_alike(&mut a, &mut b, map(14, 10));
    assert_eq!(a.task_count(), 14, "the keys held count once");
}

#[test]
fn a_map_is_refused_as_its_graph_is_and_nothing_changes() {
    let bad: Vec<(NewMap, &str)> = vec![
        (
            NewMap {
                op: "nope".into(),
                ..map(0, 3)
            },
            "unknown op",
        ),
        (
            NewMap {
                args: vec![
                    (Datum::List(vec![Datum::Int(1)]).into(), vec![]),
                    (Datum::List(vec![Datum::Ref(0)]).into(), vec![]),
                ],
                ..map(0, 0)
            },
            "refers to dependency 0 but has 0",
        ),
        (
            NewMap {
                args: vec![(Datum::List(vec![Datum::Buf(1)]).into(), vec![Bytes::new()])],
                ..map(0, 0)
            },
            "refers to buffer 1 but has 1",
        ),
    ];
    for (m, what) in bad {
        let (mut a, mut b) = (core(), core());
        for s in [&mut a, &mut b] {
            s.set_registry(Some(["inc".to_string()]));
        }
        let ea = a.on_map(C, m.clone()).unwrap_err();
        let (tasks, wanted) = m.into_graph();
        let eb = b.on_update_graph(C, tasks, &wanted).unwrap_err();
        assert_eq!(ea, eb);
        assert!(ea.to_string().contains(what), "{ea}");
        assert!(ea.to_string().contains("inc-1f-3-"), "names the task: {ea}");
        assert_eq!(a.task_count(), 0);
        assert!(a.take_actions().is_empty());
        a.validate();
    }
}

#[test]
fn a_map_numbered_past_the_largest_number_or_from_an_unknown_client_is_refused() {
    let mut s = core();
    let err = s.on_map(C, map(u64::MAX - 1, 3)).unwrap_err();
    assert_eq!(
        err,
        GraphError::MapNumbers {
            prefix: "inc-1f-3".into(),
            first: u64::MAX - 1,
            count: 3
        }
    );
    assert!(err.to_string().contains("past the largest number"), "{err}");
    // The last number itself is allowed.
    s.on_map(C, map(u64::MAX - 2, 3)).unwrap();
    assert_eq!(s.task_count(), 3);
    assert!(s.task_id(&format!("inc-1f-3-{}", u64::MAX)).is_some());
    let mut t = core();
    let stranger = rask_proto::ClientId(9);
    assert_eq!(
        t.on_map(stranger, map(0, 2)).unwrap_err(),
        GraphError::UnknownClient(stranger)
    );
    assert_eq!(t.task_count(), 0);
    // An empty map adds nothing.
    t.on_map(C, map(0, 0)).unwrap();
    assert_eq!(t.task_count(), 0);
    t.validate();
}

/// Maps and graphs whose keys share forms (a graph's `m-1-7` before or after the map
/// `m-1` numbers it), computed and released in random order: after every step each task
/// is found by its key, the index holds exactly the tasks, and what was released is gone
/// (`validate`), whether a key sits in its map's block or in the table.
#[test]
fn keys_of_maps_and_graphs_released_in_any_order_stay_indexed() {
    let mut s = core();
    let mut rng = TestRng::deterministic_rng(RngAlgorithm::ChaCha);
    let mut rand = move |n: u64| rng.random_range(0..n);
    let mut held: Vec<String> = Vec::new();
    let prefixes = ["m-1", "m-2", "m-2-5"];
    for step in 0..400 {
        match rand(4) {
            0 => {
                let prefix = prefixes[rand(3) as usize];
                let (first, n) = (rand(600), 1 + rand(300) as usize);
                let m = NewMap {
                    prefix: prefix.into(),
                    first,
                    op: "inc".into(),
                    args: (0..n)
                        .map(|i| (Datum::List(vec![Datum::Int(i as i64)]).into(), vec![]))
                        .collect(),
                    resources: vec![],
                    code: None,
                };
                held.extend((0..n).map(|i| m.key(i)));
                s.on_map(C, m).unwrap();
            }
            1 => {
                let keys: Vec<String> = (0..1 + rand(20))
                    .map(|_| match rand(3) {
                        0 => format!("{}-{}", prefixes[rand(3) as usize], rand(2000)),
                        1 => format!("g-{}", rand(100)),
                        _ => format!("m-1-0{}", rand(10)),
                    })
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect();
                let tasks = keys.iter().map(|k| op_task(k, "inc", &[])).collect();
                s.on_update_graph(C, tasks, &keys).unwrap();
                held.extend(keys);
            }
            2 if !held.is_empty() => {
                // Some keys, from anywhere in what is held.
                let mut keys = Vec::new();
                for _ in 0..1 + rand(200) {
                    if held.is_empty() {
                        break;
                    }
                    keys.push(held.swap_remove(rand(held.len() as u64) as usize));
                }
                s.on_release_keys(C, &keys);
            }
            _ => {
                // Every compute sent so far finishes.
                let computes: Vec<_> = s
                    .take_actions()
                    .into_iter()
                    .filter_map(|x| match x {
                        Action::Compute { worker, msg, .. } => Some((worker, msg.task)),
                        _ => None,
                    })
                    .collect();
                for (w, t) in computes {
                    s.on_task_finished(
                        w,
                        t,
                        8,
                        3,
                        0,
                        Some(rask_proto::packed::Packed::new(&Datum::Int(1))),
                    );
                }
            }
        }
        s.validate();
        let _ = step;
    }
    held.sort();
    held.dedup();
    s.on_release_keys(C, &held);
    s.validate();
    assert_eq!(
        s.info().tasks_by_state.iter().map(|(_, n)| n).sum::<u64>(),
        0
    );
}
