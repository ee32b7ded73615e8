//! Scenario tests: drive the core directly, check exact actions, validate after each step.

mod common;

use common::{keys, op_task, worker_with, C};
use std::sync::Arc;

use bytes::Bytes;
use rask_proto::msg::Resource;
use rask_proto::{ClientId, Datum, StimulusId, TaskId, WorkerId};
use rask_scheduler_core::{
    Action, CoreConfig, GraphError, NewTask, SchedulerCore, TaskFailure, TaskState, WorkerSpec,
};

fn task(key: &str, deps: &[&str]) -> NewTask {
    op_task(key, "add", deps)
}

fn worker(name: &str, nthreads: u32) -> WorkerSpec {
    worker_with(name, nthreads)
}

fn core() -> SchedulerCore {
    let mut c = SchedulerCore::new(CoreConfig::default());
    c.on_client_joined(C);
    c
}

fn computes(actions: &[Action]) -> Vec<(WorkerId, TaskId)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Compute { worker, msg, .. } => Some((*worker, msg.task)),
            _ => None,
        })
        .collect()
}

#[test]
fn chain_runs_in_order_and_frees_intermediates() {
    let mut s = core();
    s.on_worker_joined(WorkerId(0), worker("a", 1));
    s.on_update_graph(
        C,
        vec![task("x", &[]), task("y", &["x"]), task("z", &["y"])],
        &keys(&["z"]),
    )
    .unwrap();
    s.validate();
    let x = s.task_id("x").unwrap();
    let y = s.task_id("y").unwrap();
    let z = s.task_id("z").unwrap();
    // The whole chain goes to the worker at once: y and z wait there for their inputs.
    assert_eq!(
        computes(&s.take_actions()),
        vec![(WorkerId(0), x), (WorkerId(0), y), (WorkerId(0), z)]
    );
    assert_eq!(s.state("y"), TaskState::Processing);

    s.on_task_finished(WorkerId(0), x, 8, 10, 0, None);
    s.validate();
    assert_eq!(s.take_actions(), vec![]);

    s.on_task_finished(WorkerId(0), y, 8, 10, 0, None);
    s.validate();
    // x is no longer needed: freed on the worker.
    assert_eq!(
        s.take_actions(),
        vec![Action::Free {
            worker: WorkerId(0),
            task: x
        }]
    );

    s.on_task_finished(WorkerId(0), z, 8, 10, 0, None);
    s.validate();
    let a = s.take_actions();
    assert!(a.contains(&Action::Free {
        worker: WorkerId(0),
        task: y
    }));
    assert!(a.iter().any(
        |a| matches!(a, Action::KeyInMemory { key, task, .. } if &**key == "z" && *task == z)
    ));
    // x's data is gone but its lineage stays while z (through y) refers to it.
    assert_eq!(s.state("x"), TaskState::Released);
    let story: Vec<_> = s.story("z").iter().map(|t| t.to).collect();
    assert_eq!(
        story,
        vec![TaskState::Waiting, TaskState::Processing, TaskState::Memory]
    );

    s.on_release_keys(C, &keys(&["z"]));
    s.validate();
    assert_eq!(
        s.take_actions(),
        vec![Action::Free {
            worker: WorkerId(0),
            task: z
        }]
    );
    assert_eq!(s.task_count(), 0);
}

#[test]
fn story_records_transitions() {
    let mut s = core();
    s.on_update_graph(C, vec![task("a", &[])], &keys(&["a"]))
        .unwrap();
    let story: Vec<_> = s.story("a").iter().map(|t| (t.from, t.to)).collect();
    assert_eq!(
        story,
        vec![
            (TaskState::Released, TaskState::Waiting),
            (TaskState::Waiting, TaskState::NoWorker)
        ]
    );
    s.on_worker_joined(WorkerId(3), worker("w", 1));
    s.validate();
    assert_eq!(s.state("a"), TaskState::Processing);
    assert_eq!(s.story("a").last().unwrap().to, TaskState::Processing);
}

#[test]
fn errors_propagate_to_dependents_with_the_cause() {
    let mut s = core();
    s.on_worker_joined(WorkerId(0), worker("a", 2));
    s.on_update_graph(
        C,
        vec![task("x", &[]), task("y", &["x"]), task("z", &["y"])],
        &keys(&["z", "y"]),
    )
    .unwrap();
    let x = s.task_id("x").unwrap();
    s.take_actions();
    s.on_task_erred(WorkerId(0), x, "boom".into());
    s.validate();
    let a = s.take_actions();
    let erred: Vec<_> = a
        .iter()
        .filter_map(|a| match a {
            Action::KeyErred { key, error, .. } => {
                Some((key.to_string(), error.key.clone(), error.message.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        erred,
        vec![
            ("y".into(), "x".into(), "boom".into()),
            ("z".into(), "x".into(), "boom".into())
        ]
    );
    assert_eq!(s.state("z"), TaskState::Erred);
    s.on_release_keys(C, &keys(&["z", "y"]));
    s.validate();
    assert_eq!(s.task_count(), 0);
}

#[test]
fn unknown_op_and_bad_graphs_are_refused_whole() {
    let mut s = core();
    s.set_registry(Some(["add".to_string()]));
    let mut bad = task("b", &[]);
    bad.op = "nope".into();
    let err = s
        .on_update_graph(C, vec![task("a", &[]), bad], &keys(&["a", "b"]))
        .unwrap_err();
    assert_eq!(
        err,
        GraphError::UnknownOp {
            key: "b".into(),
            op: "nope".into()
        }
    );
    assert!(err.to_string().contains("nope"));
    assert_eq!(s.task_count(), 0);
    assert!(matches!(
        s.on_update_graph(C, vec![task("a", &["q"])], &[]),
        Err(GraphError::UnknownDependency { .. })
    ));
    assert!(matches!(
        s.on_update_graph(C, vec![task("a", &["b"]), task("b", &["a"])], &[]),
        Err(GraphError::Cycle { .. })
    ));
    let mut r = task("a", &[]);
    r.args = Datum::Ref(0);
    assert!(matches!(
        s.on_update_graph(C, vec![r], &[]),
        Err(GraphError::BadReference { .. })
    ));
    assert!(matches!(
        s.on_update_graph(C, vec![task("a", &[]), task("a", &[])], &[]),
        Err(GraphError::DuplicateKey { .. })
    ));
    s.validate();
    assert_eq!(s.task_count(), 0);
}

#[test]
fn lost_worker_reschedules_and_recomputes() {
    let mut s = core();
    s.on_worker_joined(WorkerId(0), worker("a", 1));
    s.on_worker_joined(WorkerId(1), worker("b", 1));
    s.on_update_graph(
        C,
        vec![task("x", &[]), task("y", &[]), task("z", &["x", "y"])],
        &keys(&["z"]),
    )
    .unwrap();
    let [x, y, z] = ["x", "y", "z"].map(|k| s.task_id(k).unwrap());
    let first = computes(&s.take_actions());
    assert_eq!(
        first.len(),
        2,
        "x and y on different workers; z waits for both"
    );
    let on = |t: TaskId| first.iter().find(|(_, u)| *u == t).unwrap().0;
    s.on_task_finished(on(x), x, 8, 5, 0, None);
    s.validate();
    let mut sent = computes(&s.take_actions());
    // The worker holding x dies while y still runs on the other one.
    let dead = on(x);
    let alive = if dead == WorkerId(0) {
        WorkerId(1)
    } else {
        WorkerId(0)
    };
    s.on_worker_lost(dead);
    s.validate();
    sent.extend(computes(&s.take_actions()));
    // x is recomputed on the survivor.
    assert!(sent.contains(&(alive, x)), "{sent:?}");
    s.on_task_finished(alive, x, 8, 5, 0, None);
    s.validate();
    sent.extend(computes(&s.take_actions()));
    if s.state("y") == TaskState::Processing {
        s.on_task_finished(alive, y, 8, 5, 0, None);
        s.validate();
        sent.extend(computes(&s.take_actions()));
    }
    assert!(sent.contains(&(alive, z)), "{sent:?}");
    s.on_task_finished(alive, z, 8, 5, 0, None);
    s.validate();
    assert_eq!(s.state("z"), TaskState::Memory);
    assert_eq!(s.who_has("z"), vec![alive]);
}

#[test]
fn pre_assigned_dependents_unwind_on_error_and_on_worker_loss() {
    let mut s = core();
    s.on_worker_joined(WorkerId(0), worker("a", 1));
    s.on_update_graph(
        C,
        vec![task("p", &[]), task("q", &["p"]), task("r", &["q"])],
        &keys(&["r"]),
    )
    .unwrap();
    let [p, q, r] = ["p", "q", "r"].map(|k| s.task_id(k).unwrap());
    assert_eq!(computes(&s.take_actions()).len(), 3);
    // p fails: q and r, waiting on the worker, are cancelled there and err with p's error.
    s.on_task_erred(WorkerId(0), p, "bad input".into());
    s.validate();
    let a = s.take_actions();
    assert!(
        a.contains(&Action::Free {
            worker: WorkerId(0),
            task: q
        }),
        "{a:?}"
    );
    assert!(
        a.contains(&Action::Free {
            worker: WorkerId(0),
            task: r
        }),
        "{a:?}"
    );
    assert_eq!(s.state("r"), TaskState::Erred);
    s.on_release_keys(C, &keys(&["r"]));
    s.validate();
    assert_eq!(s.task_count(), 0);

    // Worker loss: the running task counts a death, the ones waiting behind it do not.
    s.on_update_graph(C, vec![task("p", &[]), task("q", &["p"])], &keys(&["q"]))
        .unwrap();
    s.take_actions();
    s.on_worker_lost(WorkerId(0));
    s.validate();
    assert_eq!(s.state("p"), TaskState::NoWorker);
    assert_eq!(s.state("q"), TaskState::Waiting);
    s.on_worker_joined(WorkerId(1), worker("b", 1));
    s.validate();
    let q2 = s.task_id("q").unwrap();
    let p2 = s.task_id("p").unwrap();
    assert_eq!(
        computes(&s.take_actions()),
        vec![(WorkerId(1), p2), (WorkerId(1), q2)]
    );
    let _ = r;
}

#[test]
fn a_task_that_kills_three_workers_errs() {
    let mut s = core();
    s.on_update_graph(C, vec![task("bad", &[])], &keys(&["bad"]))
        .unwrap();
    for i in 0..3 {
        s.on_worker_joined(WorkerId(i), worker(&format!("w{i}"), 1));
        assert_eq!(s.state("bad"), TaskState::Processing);
        s.take_actions();
        s.on_worker_lost(WorkerId(i));
        s.validate();
    }
    let a = s.take_actions();
    let msg = a
        .iter()
        .find_map(|a| match a {
            Action::KeyErred { error, .. } => Some(error.message.clone()),
            _ => None,
        })
        .expect("the task erred");
    assert!(msg.contains("killed worker"), "{msg}");
    assert!(msg.contains("w0, w1, w2"), "{msg}");
}

#[test]
fn a_task_that_kills_workers_whose_device_failed_errs_naming_the_last_cause() {
    let mut s = core();
    s.on_update_graph(C, vec![task("bad", &[])], &keys(&["bad"]))
        .unwrap();
    for i in 0..3 {
        s.on_worker_joined(WorkerId(i), worker(&format!("w{i}"), 1));
        assert_eq!(s.state("bad"), TaskState::Processing);
        s.take_actions();
        s.on_worker_failing(
            WorkerId(i),
            &format!("sim:{i} failed for good: CUDA_ERROR_ILLEGAL_ADDRESS in kernel k{i}"),
        );
        s.validate();
        s.on_worker_lost(WorkerId(i));
        s.validate();
        if i < 2 {
            // Said why, then lost: rescheduled like any other lost worker's task.
            assert_eq!(s.state("bad"), TaskState::NoWorker);
        }
    }
    assert_eq!(s.state("bad"), TaskState::Erred);
    let msg = s
        .take_actions()
        .iter()
        .find_map(|a| match a {
            Action::KeyErred { error, .. } => Some(error.message.clone()),
            _ => None,
        })
        .expect("the task erred");
    assert_eq!(
        msg,
        "killed worker: the task was running on 3 workers that died (w0, w1, w2); \
         the last: sim:2 failed for good: CUDA_ERROR_ILLEGAL_ADDRESS in kernel k2"
    );
    // An unknown worker's cause is ignored.
    s.on_worker_failing(WorkerId(9), "gone");
    s.validate();
}

#[test]
fn stale_finish_after_cancel_frees_the_result() {
    let mut s = core();
    s.on_worker_joined(WorkerId(0), worker("a", 1));
    s.on_update_graph(C, vec![task("x", &[])], &keys(&["x"]))
        .unwrap();
    let x = s.task_id("x").unwrap();
    s.take_actions();
    s.on_release_keys(C, &keys(&["x"]));
    s.validate();
    assert_eq!(
        s.take_actions(),
        vec![Action::Free {
            worker: WorkerId(0),
            task: x
        }]
    );
    s.on_task_finished(WorkerId(0), x, 8, 5, 0, None);
    s.validate();
    assert_eq!(
        s.take_actions(),
        vec![Action::Free {
            worker: WorkerId(0),
            task: x
        }]
    );
    assert_eq!(s.task_count(), 0);
}

#[test]
fn placement_prefers_the_worker_holding_large_inputs() {
    let mut s = core();
    s.on_worker_joined(WorkerId(0), worker("a", 4));
    s.on_worker_joined(WorkerId(1), worker("b", 4));
    s.on_update_graph(C, vec![task("big", &[])], &keys(&["big"]))
        .unwrap();
    let big = s.task_id("big").unwrap();
    let w = computes(&s.take_actions())[0].0;
    s.on_task_finished(w, big, 1 << 30, 5, 0, None);
    s.on_update_graph(C, vec![task("use", &["big"])], &keys(&["use"]))
        .unwrap();
    s.validate();
    assert_eq!(computes(&s.take_actions())[0].0, w);
}

#[test]
fn resources_restrict_and_limit_placement() {
    let mut s = core();
    let mut gpu = worker("gpu", 4);
    gpu.resources = vec![Resource {
        name: "gpu".into(),
        amount: 1.0,
    }];
    s.on_worker_joined(WorkerId(0), worker("cpu", 4));
    s.on_worker_joined(WorkerId(1), gpu);
    let mut tasks = Vec::new();
    for i in 0..3 {
        let mut t = task(&format!("g{i}"), &[]);
        t.resources = vec![Resource {
            name: "gpu".into(),
            amount: 1.0,
        }];
        tasks.push(t);
    }
    let mut huge = task("huge", &[]);
    huge.resources = vec![Resource {
        name: "gpu".into(),
        amount: 2.0,
    }];
    tasks.push(huge);
    s.on_update_graph(C, tasks, &keys(&["g0", "g1", "g2", "huge"]))
        .unwrap();
    s.validate();
    let c = computes(&s.take_actions());
    // One GPU: one GPU task at a time, on the GPU worker; the rest queue.
    assert_eq!(c, vec![(WorkerId(1), s.task_id("g0").unwrap())]);
    assert_eq!(s.state("g1"), TaskState::Queued);
    assert_eq!(s.state("huge"), TaskState::NoWorker);
    s.on_task_finished(WorkerId(1), s.task_id("g0").unwrap(), 8, 5, 0, None);
    s.validate();
    assert_eq!(
        computes(&s.take_actions()),
        vec![(WorkerId(1), s.task_id("g1").unwrap())]
    );
}

#[test]
fn root_tasks_queue_on_the_scheduler() {
    let mut s = core();
    s.on_worker_joined(WorkerId(0), worker("a", 1));
    s.on_worker_joined(WorkerId(1), worker("b", 1));
    let n = 100_000;
    let tasks: Vec<_> = (0..n).map(|i| task(&format!("t{i}"), &[])).collect();
    let wanted: Vec<String> = tasks.iter().map(|t| t.key.clone()).collect();
    s.on_update_graph(C, tasks, &wanted).unwrap();
    let sent = computes(&s.take_actions()).len();
    // Unknown durations are assumed 500 µs against a 5 ms queue target: 10 per thread.
    assert_eq!(sent, 20);
    let info = s.info();
    assert_eq!(
        info.tasks_by_state
            .iter()
            .find(|(n, _)| *n == "queued")
            .unwrap()
            .1,
        n - 20
    );
}

#[test]
fn no_worker_tasks_start_when_a_worker_joins() {
    let mut s = core();
    s.on_update_graph(C, vec![task("a", &[])], &keys(&["a"]))
        .unwrap();
    assert_eq!(s.state("a"), TaskState::NoWorker);
    s.on_worker_joined(WorkerId(7), worker("late", 1));
    s.validate();
    assert_eq!(
        computes(&s.take_actions()),
        vec![(WorkerId(7), s.task_id("a").unwrap())]
    );
}

#[test]
fn two_clients_share_keys_until_both_release() {
    let mut s = core();
    let c2 = ClientId(2);
    s.on_client_joined(c2);
    s.on_worker_joined(WorkerId(0), worker("a", 1));
    s.on_update_graph(C, vec![task("x", &[])], &keys(&["x"]))
        .unwrap();
    s.on_update_graph(c2, vec![task("x", &[])], &keys(&["x"]))
        .unwrap();
    let x = s.task_id("x").unwrap();
    s.take_actions();
    s.on_task_finished(WorkerId(0), x, 8, 5, 0, None);
    let a = s.take_actions();
    assert_eq!(
        a.iter()
            .filter(|a| matches!(a, Action::KeyInMemory { .. }))
            .count(),
        2
    );
    s.on_client_left(C);
    s.validate();
    assert_eq!(s.state("x"), TaskState::Memory);
    s.on_release_keys(c2, &keys(&["x"]));
    s.validate();
    assert_eq!(
        s.take_actions(),
        vec![Action::Free {
            worker: WorkerId(0),
            task: x
        }]
    );
}

/// Four workers with a GPU each, NVLink between 0–1 and 2–3, all on one host.
fn gpu_workers(s: &mut SchedulerCore) {
    for i in 0..4u32 {
        let mut spec = worker(&format!("gpu{i}"), 1);
        spec.gpu = Some(i);
        spec.nvlink = vec![i ^ 1];
        spec.device_spill_at = 1 << 30;
        spec.resources = vec![
            Resource {
                name: "gpu".into(),
                amount: 1.0,
            },
            Resource {
                name: format!("on-{i}"),
                amount: 1.0,
            },
        ];
        s.on_worker_joined(WorkerId(i), spec);
    }
}

fn needs(t: NewTask, name: &str) -> NewTask {
    NewTask {
        resources: vec![Resource {
            name: name.into(),
            amount: 1.0,
        }],
        ..t
    }
}

/// Runs `x` on GPU 2, where it finishes with 256 MiB.
fn input_on_gpu2(s: &mut SchedulerCore) {
    s.on_update_graph(C, vec![needs(task("x", &[]), "on-2")], &keys(&["x"]))
        .unwrap();
    let x = s.task_id("x").unwrap();
    assert_eq!(computes(&s.take_actions()), vec![(WorkerId(2), x)]);
    s.on_task_finished(WorkerId(2), x, 256 << 20, 10, 0, None);
    s.take_actions();
}

#[test]
fn consumers_run_where_their_input_is_then_on_its_nvlink_peer() {
    let mut s = core();
    gpu_workers(&mut s);
    input_on_gpu2(&mut s);

    // The input is on GPU 2: the consumer runs there, nothing moves.
    s.on_update_graph(C, vec![needs(task("y", &["x"]), "gpu")], &keys(&["y"]))
        .unwrap();
    let y = s.task_id("y").unwrap();
    assert_eq!(computes(&s.take_actions()), vec![(WorkerId(2), y)]);
    s.validate();

    // GPU 2 is taken by y: the next consumer goes to its NVLink peer, GPU 3, not to a GPU
    // that would pull the input through the host.
    s.on_update_graph(C, vec![needs(task("z", &["x"]), "gpu")], &keys(&["z"]))
        .unwrap();
    let z = s.task_id("z").unwrap();
    assert_eq!(computes(&s.take_actions()), vec![(WorkerId(3), z)]);
    s.validate();

    // Both of the pair are busy: now another GPU has to do.
    s.on_update_graph(C, vec![needs(task("w", &["x"]), "gpu")], &keys(&["w"]))
        .unwrap();
    let w = s.task_id("w").unwrap();
    let placed = computes(&s.take_actions());
    assert_eq!(placed.len(), 1);
    assert!(
        matches!(placed[0], (WorkerId(0 | 1), t) if t == w),
        "{placed:?}"
    );
    s.validate();
}

#[test]
fn a_consumer_leaves_a_full_gpu_for_its_nvlink_peer_and_comes_back_when_it_has_room() {
    let mut s = core();
    gpu_workers(&mut s);
    input_on_gpu2(&mut s);
    // GPU 2 holds 900 MiB of its 1 GiB before spilling: a consumer of the 256 MiB input
    // (and an output guessed as large) would push values off it; its NVLink peer has
    // room, and the input crosses NVLink instead.
    s.on_device_memory(WorkerId(2), 900 << 20);
    s.on_update_graph(C, vec![needs(task("y", &["x"]), "gpu")], &keys(&["y"]))
        .unwrap();
    let y = s.task_id("y").unwrap();
    assert_eq!(computes(&s.take_actions()), vec![(WorkerId(3), y)]);
    s.on_task_finished(WorkerId(3), y, 8, 10, 0, None);
    s.take_actions();
    // GPU 2 has room again: the next consumer runs where the input is.
    s.on_device_memory(WorkerId(2), 256 << 20);
    s.on_update_graph(C, vec![needs(task("z", &["x"]), "gpu")], &keys(&["z"]))
        .unwrap();
    let z = s.task_id("z").unwrap();
    assert_eq!(computes(&s.take_actions()), vec![(WorkerId(2), z)]);
    s.validate();
}

#[test]
fn link_factors_rank_same_worker_nvlink_host_and_network() {
    let mut a = worker("a", 1);
    let mut b = worker("b", 1);
    assert_eq!(
        a.link_factor(&b),
        0.05,
        "CPU workers of one host share memory"
    );
    a.gpu = Some(0);
    b.gpu = Some(1);
    assert_eq!(
        a.link_factor(&b),
        0.5,
        "GPUs without NVLink go through the host"
    );
    b.nvlink = vec![0];
    assert_eq!(a.link_factor(&b), 0.1);
    b.host_id = "elsewhere".into();
    assert_eq!(a.link_factor(&b), 1.0);
}

#[test]
fn a_second_client_asking_for_a_key_in_memory_is_told_at_once() {
    let mut s = core();
    let c2 = ClientId(2);
    s.on_client_joined(c2);
    s.validate();
    s.on_worker_joined(WorkerId(0), worker("a", 1));
    s.validate();
    s.on_update_graph(C, vec![task("x", &[])], &keys(&["x"]))
        .unwrap();
    s.validate();
    let x = s.task_id("x").unwrap();
    assert_eq!(computes(&s.take_actions()), vec![(WorkerId(0), x)]);
    s.on_task_finished(WorkerId(0), x, 24, 5, 0, None);
    s.validate();
    s.take_actions();

    s.on_update_graph(c2, vec![task("x", &[])], &keys(&["x"]))
        .unwrap();
    s.validate();
    assert_eq!(
        s.take_actions(),
        vec![Action::KeyInMemory {
            client: c2,
            key: "x".into(),
            task: x,
            nbytes: 24,
            holders: vec![WorkerId(0)],
            value: None,
        }]
    );
    // Asking again for a key it already holds tells it nothing new.
    s.on_update_graph(c2, vec![], &keys(&["x"])).unwrap();
    s.validate();
    assert_eq!(s.take_actions(), vec![]);
    // The first client letting go keeps the data for the second.
    s.on_release_keys(C, &keys(&["x"]));
    s.validate();
    assert_eq!(s.take_actions(), vec![]);
    assert_eq!(s.who_has("x"), vec![WorkerId(0)]);
}

#[test]
fn releasing_a_task_still_waiting_for_its_inputs_cancels_them_and_forgets_all() {
    let mut s = core();
    s.on_worker_joined(WorkerId(0), worker("a", 1));
    s.validate();
    s.on_worker_joined(WorkerId(1), worker("b", 1));
    s.validate();
    s.on_update_graph(
        C,
        vec![task("x", &[]), task("y", &[]), task("z", &["x", "y"])],
        &keys(&["z"]),
    )
    .unwrap();
    s.validate();
    let [x, y] = ["x", "y"].map(|k| s.task_id(k).unwrap());
    // x and y on different workers: z cannot be sent ahead to either, it waits here.
    assert_eq!(
        computes(&s.take_actions()),
        vec![(WorkerId(0), x), (WorkerId(1), y)]
    );
    assert_eq!(s.state("z"), TaskState::Waiting);

    s.on_release_keys(C, &keys(&["z"]));
    s.validate();
    assert_eq!(
        s.take_actions(),
        vec![
            Action::Free {
                worker: WorkerId(0),
                task: x
            },
            Action::Free {
                worker: WorkerId(1),
                task: y
            }
        ]
    );
    for k in ["x", "y", "z"] {
        assert_eq!(s.state(k), TaskState::Forgotten, "{k}");
    }
    assert_eq!(s.task_count(), 0);
}

/// A worker spec with one unit of each named resource.
fn with(mut spec: WorkerSpec, resources: &[&str]) -> WorkerSpec {
    spec.resources = resources
        .iter()
        .map(|r| Resource {
            name: r.to_string(),
            amount: 1.0,
        })
        .collect();
    spec
}

fn core_with(cfg: CoreConfig) -> SchedulerCore {
    let mut c = SchedulerCore::new(cfg);
    c.on_client_joined(C);
    c
}

/// Runs one `op` task alone on `w` and reports it took `duration_us`.
fn measure(s: &mut SchedulerCore, w: WorkerId, key: &str, op: &str, duration_us: u64) {
    let mut t = task(key, &[]);
    t.op = op.into();
    s.on_update_graph(C, vec![t], &keys(&[key])).unwrap();
    s.validate();
    let id = s.task_id(key).unwrap();
    assert_eq!(computes(&s.take_actions()), vec![(w, id)]);
    s.on_task_finished(w, id, 8, duration_us, 0, None);
    s.validate();
    s.take_actions();
}

/// Submits `n` root tasks of `op`, all wanted; returns how many were sent to workers.
fn submit_roots(s: &mut SchedulerCore, prefix: &str, op: &str, n: usize) -> usize {
    let tasks: Vec<NewTask> = (0..n)
        .map(|i| NewTask {
            op: op.into(),
            ..task(&format!("{prefix}{i}"), &[])
        })
        .collect();
    let wanted: Vec<String> = tasks.iter().map(|t| t.key.clone()).collect();
    s.on_update_graph(C, tasks, &wanted).unwrap();
    s.validate();
    computes(&s.take_actions()).len()
}

#[test]
fn every_stimulus_gets_the_next_id_and_the_transitions_it_causes_carry_it() {
    let mut s = SchedulerCore::new(CoreConfig::default());
    assert_eq!(s.last_stimulus(), StimulusId(0));
    s.on_client_joined(C);
    s.validate();
    s.on_worker_joined(WorkerId(0), worker("a", 1));
    s.validate();
    s.on_update_graph(C, vec![task("x", &[])], &keys(&["x"]))
        .unwrap();
    s.validate();
    assert_eq!(s.last_stimulus(), StimulusId(3));
    let x = s.task_id("x").unwrap();
    s.on_task_finished(WorkerId(0), x, 8, 5, 0, None);
    s.validate();
    assert_eq!(s.last_stimulus(), StimulusId(4));
    let story: Vec<_> = s
        .story("x")
        .iter()
        .map(|t| (t.task, t.from, t.to, t.stimulus))
        .collect();
    assert_eq!(
        story,
        vec![
            (x, TaskState::Released, TaskState::Waiting, StimulusId(3)),
            (x, TaskState::Waiting, TaskState::Processing, StimulusId(3)),
            (x, TaskState::Processing, TaskState::Memory, StimulusId(4)),
        ]
    );
}

#[test]
fn queries_answer_for_known_and_unknown_tasks_and_workers() {
    let mut s = core();
    s.on_worker_joined(WorkerId(0), worker("a", 1));
    s.validate();
    s.on_update_graph(
        C,
        vec![task("x", &[]), task("y", &["x"]), task("z", &["y"])],
        &keys(&["z"]),
    )
    .unwrap();
    s.validate();
    let x = s.task_id("x").unwrap();
    assert_eq!(s.key(x).map(|k| &**k), Some("x"));
    assert_eq!(s.key(TaskId(1 << 40)), None);
    assert_eq!(s.task_id("nope"), None);
    assert_eq!(s.task_count(), 3);
    assert!(s.has_worker(WorkerId(0)));
    assert!(!s.has_worker(WorkerId(1)));
}

#[test]
fn a_task_sent_ahead_is_not_blamed_for_workers_that_died_while_it_waited() {
    let mut s = core();
    s.on_update_graph(C, vec![task("p", &[]), task("q", &["p"])], &keys(&["q"]))
        .unwrap();
    s.validate();
    let [p, q] = ["p", "q"].map(|k| s.task_id(k).unwrap());
    // Twice the worker dies while p runs and q waits there for it: p counts two deaths.
    for i in 0..2 {
        s.on_worker_joined(WorkerId(i), worker(&format!("w{i}"), 1));
        s.validate();
        assert_eq!(
            computes(&s.take_actions()),
            vec![(WorkerId(i), p), (WorkerId(i), q)]
        );
        s.on_worker_lost(WorkerId(i));
        s.validate();
        assert_eq!(s.take_actions(), vec![]);
        assert_eq!(s.state("p"), TaskState::NoWorker);
        assert_eq!(s.state("q"), TaskState::Waiting);
    }
    // The third time p finishes and q runs when its worker dies: q counts one death.
    s.on_worker_joined(WorkerId(2), worker("w2", 1));
    s.validate();
    assert_eq!(
        computes(&s.take_actions()),
        vec![(WorkerId(2), p), (WorkerId(2), q)]
    );
    s.on_task_finished(WorkerId(2), p, 8, 5, 0, None);
    s.validate();
    assert_eq!(s.take_actions(), vec![]);
    s.on_worker_lost(WorkerId(2));
    s.validate();
    assert_eq!(s.take_actions(), vec![]);
    assert_eq!(s.state("p"), TaskState::NoWorker);
    assert_eq!(s.state("q"), TaskState::Waiting);
    // Neither has reached three: both run on the next worker.
    s.on_worker_joined(WorkerId(3), worker("w3", 1));
    s.validate();
    assert_eq!(
        computes(&s.take_actions()),
        vec![(WorkerId(3), p), (WorkerId(3), q)]
    );
    s.on_task_finished(WorkerId(3), p, 8, 5, 0, None);
    s.validate();
    s.on_task_finished(WorkerId(3), q, 8, 5, 0, None);
    s.validate();
    assert_eq!(s.state("q"), TaskState::Memory);
}

#[test]
fn a_task_with_buffers_is_sent_with_them() {
    let mut s = core();
    s.on_worker_joined(WorkerId(0), worker("a", 1));
    s.validate();
    let mut t = task("x", &[]);
    t.args = Datum::List(vec![Datum::Buf(0), Datum::Buf(1)]);
    t.bufs = vec![Bytes::from_static(b"ab"), Bytes::from_static(b"c")];
    s.on_update_graph(C, vec![t], &keys(&["x"])).unwrap();
    s.validate();
    match &s.take_actions()[..] {
        [Action::Compute { worker, msg, bufs }] => {
            assert_eq!(*worker, WorkerId(0));
            assert_eq!(
                *msg.args.datum(),
                Datum::List(vec![Datum::Buf(0), Datum::Buf(1)])
            );
            assert_eq!(
                bufs,
                &vec![Bytes::from_static(b"ab"), Bytes::from_static(b"c")]
            );
        }
        a => panic!("{a:?}"),
    }
}

#[test]
fn refused_graphs_name_the_bad_index_and_a_task_on_the_cycle() {
    let mut s = core();
    s.on_update_graph(C, vec![task("b", &[])], &keys(&["b"]))
        .unwrap();
    s.validate();
    let mut r = task("a", &["b"]);
    r.args = Datum::List(vec![Datum::Ref(0), Datum::Ref(2)]);
    assert_eq!(
        s.on_update_graph(C, vec![r], &[]),
        Err(GraphError::BadReference {
            key: "a".into(),
            index: 2,
            count: 1
        })
    );
    let mut b = task("a", &[]);
    b.args = Datum::List(vec![Datum::Buf(0), Datum::List(vec![Datum::Buf(2)])]);
    b.bufs = vec![Bytes::from_static(b"z")];
    assert_eq!(
        s.on_update_graph(C, vec![b], &[]),
        Err(GraphError::BadBuffer {
            key: "a".into(),
            index: 2,
            count: 1
        })
    );
    assert_eq!(
        s.on_update_graph(
            C,
            vec![task("a", &[]), task("c", &["d"]), task("d", &["c"])],
            &[]
        ),
        Err(GraphError::Cycle { key: "c".into() })
    );
    s.validate();
    assert_eq!(s.task_count(), 1);
}

#[test]
fn queued_tasks_start_in_submission_order_even_when_their_ids_reuse_freed_slots() {
    let mut s = core_with(CoreConfig {
        max_processing_per_thread: 1,
        ..CoreConfig::default()
    });
    s.on_worker_joined(WorkerId(0), worker("a", 1));
    s.validate();
    // Three tasks run and are forgotten: their slots are free for the next graph.
    for k in ["o0", "o1", "o2"] {
        s.on_update_graph(C, vec![task(k, &[])], &keys(&[k]))
            .unwrap();
        s.validate();
        let t = s.task_id(k).unwrap();
        assert_eq!(computes(&s.take_actions()), vec![(WorkerId(0), t)]);
        s.on_task_finished(WorkerId(0), t, 8, 5, 0, None);
        s.validate();
        s.take_actions();
    }
    s.on_release_keys(C, &keys(&["o0", "o1", "o2"]));
    s.validate();
    s.take_actions();
    assert_eq!(s.task_count(), 0);

    s.on_update_graph(
        C,
        vec![task("a", &[]), task("b", &[]), task("c", &[])],
        &keys(&["a", "b", "c"]),
    )
    .unwrap();
    s.validate();
    let mut order = Vec::new();
    let mut priorities = Vec::new();
    for _ in 0..3 {
        let sent: Vec<_> = s
            .take_actions()
            .into_iter()
            .filter_map(|a| match a {
                Action::Compute { msg, .. } => Some((msg.task, msg.priority)),
                _ => None,
            })
            .collect();
        let [(t, priority)] = sent[..] else {
            panic!("{sent:?}")
        };
        order.push(s.key(t).unwrap().to_string());
        priorities.push(priority);
        s.on_task_finished(WorkerId(0), t, 8, 5, 0, None);
        s.validate();
    }
    assert_eq!(order, ["a", "b", "c"]);
    assert_eq!(priorities, [3, 4, 5]);
}

#[test]
fn reports_from_a_worker_the_task_is_not_running_on_change_nothing() {
    let mut s = core();
    s.on_worker_joined(WorkerId(0), worker("a", 1));
    s.validate();
    s.on_worker_joined(WorkerId(1), worker("b", 1));
    s.validate();
    s.on_update_graph(C, vec![task("x", &[])], &keys(&["x"]))
        .unwrap();
    s.validate();
    let x = s.task_id("x").unwrap();
    assert_eq!(computes(&s.take_actions()), vec![(WorkerId(0), x)]);

    s.on_task_erred(WorkerId(1), x, "boom".into());
    s.validate();
    assert_eq!(s.take_actions(), vec![]);
    assert_eq!(s.state("x"), TaskState::Processing);

    // A result it should not have: that worker drops it.
    s.on_task_finished(WorkerId(1), x, 8, 5, 0, None);
    s.validate();
    assert_eq!(
        s.take_actions(),
        vec![Action::Free {
            worker: WorkerId(1),
            task: x
        }]
    );
    assert_eq!(s.state("x"), TaskState::Processing);
    assert_eq!(s.who_has("x"), vec![]);

    s.on_task_finished(WorkerId(0), x, 8, 5, 0, None);
    s.validate();
    assert_eq!(s.who_has("x"), vec![WorkerId(0)]);
}

#[test]
fn missing_data_recomputes_the_input_and_runs_the_task_again() {
    let mut s = core();
    s.on_worker_joined(WorkerId(0), worker("a", 1));
    s.validate();
    s.on_worker_joined(WorkerId(1), with(worker("b", 1), &["r"]));
    s.validate();
    s.on_update_graph(
        C,
        vec![task("x", &[]), needs(task("y", &["x"]), "r")],
        &keys(&["x", "y"]),
    )
    .unwrap();
    s.validate();
    let [x, y] = ["x", "y"].map(|k| s.task_id(k).unwrap());
    // y needs r: it cannot be sent ahead to x's worker, it waits here.
    assert_eq!(computes(&s.take_actions()), vec![(WorkerId(0), x)]);
    assert_eq!(s.state("y"), TaskState::Waiting);
    s.on_task_finished(WorkerId(0), x, 8, 5, 0, None);
    s.validate();
    assert_eq!(computes(&s.take_actions()), vec![(WorkerId(1), y)]);

    // A report about a task the reporter is not running, naming a worker that does not
    // hold the input, changes nothing.
    s.on_missing_data(WorkerId(0), y, x, WorkerId(1));
    s.validate();
    assert_eq!(s.take_actions(), vec![]);
    assert_eq!(s.state("y"), TaskState::Processing);
    assert_eq!(s.who_has("x"), vec![WorkerId(0)]);

    // y's worker could not get x from its holder: x is computed again, y waits for it.
    s.on_missing_data(WorkerId(1), y, x, WorkerId(0));
    s.validate();
    assert_eq!(
        s.take_actions()
            .into_iter()
            .map(|a| match a {
                Action::Compute { worker, msg, .. } => (worker, msg.task, "compute"),
                Action::Free { worker, task } => (worker, task, "free"),
                a => panic!("{a:?}"),
            })
            .collect::<Vec<_>>(),
        vec![(WorkerId(1), y, "free"), (WorkerId(0), x, "compute")]
    );
    assert_eq!(s.state("x"), TaskState::Processing);
    assert_eq!(s.state("y"), TaskState::Waiting);
    assert_eq!(s.info().workers[0].stored_keys, 0);
    assert_eq!(s.info().workers[0].stored_bytes, 0);
    s.on_task_finished(WorkerId(0), x, 8, 5, 0, None);
    s.validate();
    assert_eq!(computes(&s.take_actions()), vec![(WorkerId(1), y)]);
}

#[test]
fn a_failed_key_is_reported_to_a_client_asking_later_and_fails_new_dependents_at_once() {
    let mut s = core();
    let c2 = ClientId(2);
    s.on_client_joined(c2);
    s.validate();
    s.on_worker_joined(WorkerId(0), worker("a", 1));
    s.validate();
    s.on_update_graph(C, vec![task("x", &[])], &keys(&["x"]))
        .unwrap();
    s.validate();
    let x = s.task_id("x").unwrap();
    s.take_actions();
    s.on_task_erred(WorkerId(0), x, "boom".into());
    s.validate();
    let error = Arc::new(TaskFailure {
        key: "x".into(),
        op: "add".into(),
        message: "boom".into(),
    });
    assert_eq!(
        s.take_actions(),
        vec![
            Action::Free {
                worker: WorkerId(0),
                task: x
            },
            Action::KeyErred {
                client: C,
                key: "x".into(),
                error: error.clone()
            }
        ]
    );

    s.on_update_graph(c2, vec![task("x", &[])], &keys(&["x"]))
        .unwrap();
    s.validate();
    assert_eq!(
        s.take_actions(),
        vec![Action::KeyErred {
            client: c2,
            key: "x".into(),
            error: error.clone()
        }]
    );

    s.on_update_graph(C, vec![task("y", &["x"])], &keys(&["y"]))
        .unwrap();
    s.validate();
    assert_eq!(
        s.take_actions(),
        vec![Action::KeyErred {
            client: C,
            key: "y".into(),
            error
        }]
    );
    assert_eq!(s.state("y"), TaskState::Erred);
}

#[test]
fn a_released_key_asked_for_again_is_computed_again() {
    let mut s = core();
    s.on_worker_joined(WorkerId(0), worker("a", 1));
    s.validate();
    s.on_update_graph(C, vec![task("x", &[]), task("y", &["x"])], &keys(&["y"]))
        .unwrap();
    s.validate();
    let [x, y] = ["x", "y"].map(|k| s.task_id(k).unwrap());
    s.take_actions();
    s.on_task_finished(WorkerId(0), x, 8, 5, 0, None);
    s.validate();
    s.on_task_finished(WorkerId(0), y, 8, 5, 0, None);
    s.validate();
    s.take_actions();
    assert_eq!(s.state("x"), TaskState::Released);

    s.on_update_graph(C, vec![], &keys(&["x"])).unwrap();
    s.validate();
    assert_eq!(computes(&s.take_actions()), vec![(WorkerId(0), x)]);
    s.on_task_finished(WorkerId(0), x, 8, 5, 0, None);
    s.validate();
    assert_eq!(
        s.take_actions(),
        vec![Action::KeyInMemory {
            client: C,
            key: "x".into(),
            task: x,
            nbytes: 8,
            holders: vec![WorkerId(0)],
            value: None
        }]
    );
}

#[test]
fn a_task_is_sent_ahead_to_the_worker_running_its_last_input_even_with_others_in_memory() {
    let mut s = core();
    s.on_worker_joined(WorkerId(0), worker("a", 2));
    s.validate();
    s.on_update_graph(C, vec![task("x", &[])], &keys(&["x"]))
        .unwrap();
    s.validate();
    let x = s.task_id("x").unwrap();
    s.take_actions();
    s.on_task_finished(WorkerId(0), x, 8, 5, 0, None);
    s.validate();
    s.take_actions();
    s.on_update_graph(
        C,
        vec![task("y", &[]), task("z", &["x", "y"])],
        &keys(&["z"]),
    )
    .unwrap();
    s.validate();
    let [y, z] = ["y", "z"].map(|k| s.task_id(k).unwrap());
    assert_eq!(
        computes(&s.take_actions()),
        vec![(WorkerId(0), y), (WorkerId(0), z)]
    );
}

#[test]
fn a_task_is_not_sent_ahead_to_a_worker_with_no_room_for_it() {
    let mut s = core_with(CoreConfig {
        max_processing_per_thread: 1,
        ..CoreConfig::default()
    });
    s.on_worker_joined(WorkerId(0), worker("a", 1));
    s.validate();
    s.on_update_graph(C, vec![task("u", &[]), task("v", &["u"])], &keys(&["v"]))
        .unwrap();
    s.validate();
    let [u, v] = ["u", "v"].map(|k| s.task_id(k).unwrap());
    assert_eq!(computes(&s.take_actions()), vec![(WorkerId(0), u)]);
    assert_eq!(s.state("v"), TaskState::Waiting);
    s.on_task_finished(WorkerId(0), u, 8, 5, 0, None);
    s.validate();
    assert_eq!(computes(&s.take_actions()), vec![(WorkerId(0), v)]);
}

#[test]
fn a_task_is_not_sent_ahead_to_a_worker_without_the_resources_it_needs() {
    let mut s = core();
    s.on_worker_joined(WorkerId(0), with(worker("a", 1), &["s"]));
    s.validate();
    s.on_worker_joined(WorkerId(1), with(worker("b", 1), &["r"]));
    s.validate();
    s.on_update_graph(
        C,
        vec![needs(task("u", &[]), "s"), needs(task("v", &["u"]), "r")],
        &keys(&["v"]),
    )
    .unwrap();
    s.validate();
    let [u, v] = ["u", "v"].map(|k| s.task_id(k).unwrap());
    assert_eq!(computes(&s.take_actions()), vec![(WorkerId(0), u)]);
    assert_eq!(s.state("v"), TaskState::Waiting);
    s.on_task_finished(WorkerId(0), u, 8, 5, 0, None);
    s.validate();
    assert_eq!(computes(&s.take_actions()), vec![(WorkerId(1), v)]);
}

#[test]
fn only_tasks_a_client_waits_on_ask_the_worker_for_their_value() {
    let mut s = core();
    s.on_worker_joined(WorkerId(0), worker("a", 1));
    s.validate();
    s.on_update_graph(C, vec![task("x", &[]), task("y", &["x"])], &keys(&["y"]))
        .unwrap();
    s.validate();
    let reports: Vec<_> = s
        .take_actions()
        .into_iter()
        .filter_map(|a| match a {
            Action::Compute { msg, .. } => Some((msg.task, msg.report_value)),
            _ => None,
        })
        .collect();
    let [x, y] = ["x", "y"].map(|k| s.task_id(k).unwrap());
    assert_eq!(reports, vec![(x, false), (y, true)]);
}

/// A worker with two threads and one GPU, at most one task per thread: `b` (CPU) and
/// `g0` (GPU) run, then `blocked` GPU tasks and one CPU task `c` queue behind them.
fn gpu_busy_then_queue(blocked: usize) -> SchedulerCore {
    let mut s = core_with(CoreConfig {
        max_processing_per_thread: 1,
        ..CoreConfig::default()
    });
    s.on_worker_joined(WorkerId(0), with(worker("a", 2), &["gpu"]));
    s.validate();
    s.on_update_graph(
        C,
        vec![task("b", &[]), needs(task("g0", &[]), "gpu")],
        &keys(&["b", "g0"]),
    )
    .unwrap();
    s.validate();
    assert_eq!(computes(&s.take_actions()).len(), 2);
    let mut tasks: Vec<NewTask> = (1..=blocked)
        .map(|i| needs(task(&format!("g{i}"), &[]), "gpu"))
        .collect();
    tasks.push(task("c", &[]));
    let wanted: Vec<String> = tasks.iter().map(|t| t.key.clone()).collect();
    s.on_update_graph(C, tasks, &wanted).unwrap();
    s.validate();
    assert_eq!(s.take_actions(), vec![]);
    assert_eq!(s.state("c"), TaskState::Queued);
    s
}

#[test]
fn a_freed_slot_goes_to_a_queued_task_behind_up_to_64_that_cannot_use_it() {
    let mut s = gpu_busy_then_queue(64);
    let b = s.task_id("b").unwrap();
    s.on_task_finished(WorkerId(0), b, 8, 5, 0, None);
    s.validate();
    let c = s.task_id("c").unwrap();
    assert_eq!(computes(&s.take_actions()), vec![(WorkerId(0), c)]);
}

#[test]
fn a_freed_slot_is_not_looked_for_behind_65_queued_tasks_that_cannot_use_it() {
    let mut s = gpu_busy_then_queue(65);
    let b = s.task_id("b").unwrap();
    s.on_task_finished(WorkerId(0), b, 8, 5, 0, None);
    s.validate();
    assert_eq!(computes(&s.take_actions()), vec![]);
    assert_eq!(s.state("c"), TaskState::Queued);
}

#[test]
fn a_waiting_task_stays_waiting_when_the_worker_running_its_input_dies() {
    let mut s = core();
    s.on_worker_joined(WorkerId(0), worker("a", 1));
    s.validate();
    s.on_worker_joined(WorkerId(1), worker("b", 1));
    s.validate();
    s.on_update_graph(
        C,
        vec![task("x", &[]), task("y", &[]), task("z", &["x", "y"])],
        &keys(&["z"]),
    )
    .unwrap();
    s.validate();
    let [x, y, z] = ["x", "y", "z"].map(|k| s.task_id(k).unwrap());
    assert_eq!(
        computes(&s.take_actions()),
        vec![(WorkerId(0), x), (WorkerId(1), y)]
    );
    s.on_worker_lost(WorkerId(0));
    s.validate();
    // x goes to y's worker, and z with it, sent ahead of both inputs.
    assert_eq!(
        computes(&s.take_actions()),
        vec![(WorkerId(1), x), (WorkerId(1), z)]
    );
    let story: Vec<_> = s.story("z").iter().map(|t| (t.from, t.to)).collect();
    assert_eq!(
        story,
        vec![
            (TaskState::Released, TaskState::Waiting),
            (TaskState::Waiting, TaskState::Processing)
        ]
    );
}

#[test]
fn a_client_letting_go_of_a_running_key_another_client_wants_changes_nothing() {
    let mut s = core();
    let c2 = ClientId(2);
    s.on_client_joined(c2);
    s.validate();
    s.on_worker_joined(WorkerId(0), worker("a", 1));
    s.validate();
    s.on_update_graph(C, vec![task("x", &[])], &keys(&["x"]))
        .unwrap();
    s.validate();
    s.on_update_graph(c2, vec![task("x", &[])], &keys(&["x"]))
        .unwrap();
    s.validate();
    let x = s.task_id("x").unwrap();
    assert_eq!(computes(&s.take_actions()), vec![(WorkerId(0), x)]);
    s.on_release_keys(C, &keys(&["x"]));
    s.validate();
    assert_eq!(s.take_actions(), vec![]);
    assert_eq!(s.story("x").len(), 2);
    s.on_task_finished(WorkerId(0), x, 8, 5, 0, None);
    s.validate();
    assert_eq!(
        s.take_actions(),
        vec![Action::KeyInMemory {
            client: c2,
            key: "x".into(),
            task: x,
            nbytes: 8,
            holders: vec![WorkerId(0)],
            value: None
        }]
    );
}

#[test]
fn long_tasks_go_one_per_thread() {
    let mut s = core();
    s.on_worker_joined(WorkerId(0), worker("a", 2));
    s.validate();
    measure(&mut s, WorkerId(0), "probe", "slow", 1_000_000);
    assert_eq!(submit_roots(&mut s, "t", "slow", 3), 2);
}

#[test]
fn a_worker_is_given_queue_target_worth_of_work_per_thread() {
    let mut s = core();
    s.on_worker_joined(WorkerId(0), worker("a", 4));
    s.validate();
    // 500 µs assumed per task, 5 ms per thread: ten per thread.
    assert_eq!(submit_roots(&mut s, "t", "add", 100), 40);
}

#[test]
fn a_worker_is_given_at_most_max_processing_per_thread_tasks_per_thread() {
    let mut s = core_with(CoreConfig {
        max_processing_per_thread: 2,
        default_duration_us: 1,
        ..CoreConfig::default()
    });
    s.on_worker_joined(WorkerId(0), worker("a", 3));
    s.validate();
    assert_eq!(submit_roots(&mut s, "t", "add", 20), 6);
}

#[test]
fn duration_estimates_are_a_moving_average_of_measured_durations() {
    let mut s = core();
    s.on_worker_joined(WorkerId(0), worker("a", 1));
    s.validate();
    measure(&mut s, WorkerId(0), "m0", "f", 1000);
    measure(&mut s, WorkerId(0), "m1", "f", 2000);
    // 0.8 × 1000 + 0.2 × 2000 = 1200 µs each: five fill the 5 ms queue.
    assert_eq!(submit_roots(&mut s, "t", "f", 20), 5);
}

/// Where a consumer of `x` (of `nbytes`, held by worker 0 on host h1) runs, when worker 0
/// has two threads and runs two tasks and worker 1 (host h2) is idle.
fn consumer_of_input_on_a_busy_worker(nbytes: u64) -> WorkerId {
    let mut s = core();
    let mut a = with(worker("a", 2), &["a"]);
    a.resources[0].amount = 2.0;
    a.host_id = "h1".into();
    let mut b = worker("b", 2);
    b.host_id = "h2".into();
    s.on_worker_joined(WorkerId(0), a);
    s.validate();
    s.on_worker_joined(WorkerId(1), b);
    s.validate();
    s.on_update_graph(C, vec![needs(task("x", &[]), "a")], &keys(&["x"]))
        .unwrap();
    s.validate();
    let x = s.task_id("x").unwrap();
    assert_eq!(computes(&s.take_actions()), vec![(WorkerId(0), x)]);
    s.on_task_finished(WorkerId(0), x, nbytes, 500, 0, None);
    s.validate();
    s.take_actions();
    s.on_update_graph(
        C,
        vec![needs(task("p", &[]), "a"), needs(task("q", &[]), "a")],
        &keys(&["p", "q"]),
    )
    .unwrap();
    s.validate();
    assert_eq!(computes(&s.take_actions()).len(), 2);
    s.on_update_graph(C, vec![task("y", &["x"])], &keys(&["y"]))
        .unwrap();
    s.validate();
    let y = s.task_id("y").unwrap();
    match &computes(&s.take_actions())[..] {
        [(w, t)] if *t == y => *w,
        a => panic!("{a:?}"),
    }
}

#[test]
fn placement_weighs_queued_work_per_thread_against_moving_the_input() {
    // Worker 0 has 1 ms of work on 2 threads: 500 µs until a thread is free.
    // 100 kB over the network take 100 µs: worth moving.
    assert_eq!(consumer_of_input_on_a_busy_worker(100_000), WorkerId(1));
    // 1 MB take 1 ms: better wait.
    assert_eq!(consumer_of_input_on_a_busy_worker(1_000_000), WorkerId(0));
}

#[test]
fn placement_charges_a_cpu_worker_nothing_for_device_memory() {
    // x (8 MiB) sits on CPU worker 0, which cannot run y. Worker 1 (CPU) shares its host
    // memory; worker 2 drives a GPU on the same host, with room, but the input would
    // cross PCIe.
    let mut s = core();
    s.on_worker_joined(WorkerId(0), with(worker("a", 1), &["a"]));
    s.validate();
    s.on_worker_joined(WorkerId(1), with(worker("b", 1), &["r"]));
    s.validate();
    let mut g = with(worker("g", 1), &["r"]);
    g.gpu = Some(0);
    g.device_spill_at = 1 << 30;
    s.on_worker_joined(WorkerId(2), g);
    s.validate();
    s.on_update_graph(C, vec![needs(task("x", &[]), "a")], &keys(&["x"]))
        .unwrap();
    s.validate();
    let x = s.task_id("x").unwrap();
    s.take_actions();
    s.on_task_finished(WorkerId(0), x, 8 << 20, 5, 0, None);
    s.validate();
    s.take_actions();
    s.on_update_graph(C, vec![needs(task("y", &["x"]), "r")], &keys(&["y"]))
        .unwrap();
    s.validate();
    let y = s.task_id("y").unwrap();
    assert_eq!(computes(&s.take_actions()), vec![(WorkerId(1), y)]);
}

#[test]
fn pushing_values_off_a_full_gpu_costs_half_of_moving_them_over_the_network() {
    // Two GPUs of one host without NVLink: moving x (256 MiB) between them costs half of
    // the network, 128 MiB. Running where x is pushes 200 MiB off that GPU: 100 MiB.
    let mut s = core();
    for i in 0..2u32 {
        let mut g = with(worker(&format!("gpu{i}"), 1), &["gpu", &format!("on-{i}")]);
        g.gpu = Some(i);
        g.device_spill_at = 1 << 30;
        s.on_worker_joined(WorkerId(i), g);
        s.validate();
    }
    s.on_update_graph(C, vec![needs(task("x", &[]), "on-1")], &keys(&["x"]))
        .unwrap();
    s.validate();
    let x = s.task_id("x").unwrap();
    assert_eq!(computes(&s.take_actions()), vec![(WorkerId(1), x)]);
    s.on_task_finished(WorkerId(1), x, 256 << 20, 10, 0, None);
    s.validate();
    s.take_actions();
    s.on_device_memory(WorkerId(1), 968 << 20);
    s.on_update_graph(C, vec![needs(task("y", &["x"]), "gpu")], &keys(&["y"]))
        .unwrap();
    s.validate();
    let y = s.task_id("y").unwrap();
    assert_eq!(computes(&s.take_actions()), vec![(WorkerId(1), y)]);
}

fn coded(t: NewTask, code: u64) -> NewTask {
    NewTask {
        code: Some(code),
        ..t
    }
}

/// A worker of the cluster's base code 1 (serving tasks of no particular code too), or a
/// program's worker.
fn of_code(w: WorkerSpec, code: u64) -> WorkerSpec {
    WorkerSpec {
        code,
        base: code == 1,
        ..w
    }
}

fn erred_keys(actions: &[Action]) -> Vec<(String, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::KeyErred { key, error, .. } => Some((key.to_string(), error.message.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_task_of_a_program_runs_only_on_workers_of_its_code_and_waits_for_one() {
    let mut s = core();
    // The idle worker runs other code; the program's worker is busy.
    s.on_worker_joined(WorkerId(0), of_code(worker("stock", 4), 1));
    s.validate();
    s.on_update_graph(
        C,
        vec![coded(task("p", &[]), 7), task("q", &[])],
        &keys(&["p", "q"]),
    )
    .unwrap();
    s.validate();
    let [p, q] = ["p", "q"].map(|k| s.task_id(k).unwrap());
    // The task of no particular code runs anywhere; the program's waits for its code.
    assert_eq!(computes(&s.take_actions()), vec![(WorkerId(0), q)]);
    assert_eq!(s.state("p"), TaskState::NoWorker);
    assert!(s.waits_for_code(7));
    assert!(!s.waits_for_code(1));
    // A worker of a third code changes nothing.
    s.on_worker_joined(WorkerId(1), of_code(worker("other", 4), 8));
    s.validate();
    assert_eq!(computes(&s.take_actions()), vec![]);
    assert_eq!(s.state("p"), TaskState::NoWorker);
    // The program's worker joins: the task goes there and nowhere else.
    s.on_worker_joined(WorkerId(2), of_code(worker("program", 1), 7));
    s.validate();
    assert_eq!(computes(&s.take_actions()), vec![(WorkerId(2), p)]);
    assert!(!s.waits_for_code(7));
}

#[test]
fn a_task_of_a_program_is_not_sent_ahead_to_a_worker_of_other_code() {
    let mut s = core();
    s.on_worker_joined(WorkerId(0), of_code(worker("stock", 1), 1));
    s.on_worker_joined(WorkerId(1), of_code(worker("program", 1), 7));
    s.validate();
    s.on_update_graph(
        C,
        vec![task("u", &[]), coded(task("v", &["u"]), 7)],
        &keys(&["v"]),
    )
    .unwrap();
    s.validate();
    let [u, v] = ["u", "v"].map(|k| s.task_id(k).unwrap());
    let first = computes(&s.take_actions());
    assert_eq!(first.len(), 1, "only the input starts: {first:?}");
    assert_eq!(first[0].1, u);
    assert_eq!(s.state("v"), TaskState::Waiting);
    s.on_task_finished(first[0].0, u, 8, 5, 0, None);
    s.validate();
    assert_eq!(computes(&s.take_actions()), vec![(WorkerId(1), v)]);
}

#[test]
fn when_a_code_cannot_run_anywhere_its_waiting_tasks_and_their_dependents_fail() {
    let mut s = core();
    s.on_worker_joined(WorkerId(0), of_code(worker("stock", 2), 1));
    s.on_update_graph(
        C,
        vec![
            coded(task("p", &[]), 7),
            coded(task("r", &["p"]), 7),
            task("q", &[]),
            coded(task("o", &[]), 8),
        ],
        &keys(&["r", "q", "o"]),
    )
    .unwrap();
    s.validate();
    s.take_actions();
    assert_eq!(s.state("p"), TaskState::NoWorker);
    s.on_code_failed(7, "program 7 cannot start: exec format error");
    s.validate();
    let mut erred = erred_keys(&s.take_actions());
    erred.sort();
    let why = "program 7 cannot start: exec format error".to_string();
    assert_eq!(erred, vec![("r".to_string(), why)]);
    assert_eq!(s.state("r"), TaskState::Erred);
    assert_eq!(s.state("q"), TaskState::Processing);
    // Tasks of another code still wait.
    assert_eq!(s.state("o"), TaskState::NoWorker);
    assert!(s.waits_for_code(8));
    assert!(!s.waits_for_code(7));
}

#[test]
fn a_program_task_may_use_ops_the_workers_do_not_list() {
    let mut s = core();
    s.set_registry(Some(["inc".to_string()]));
    s.on_worker_joined(WorkerId(0), worker("a", 1));
    let t = NewTask {
        op: "pi::hits".into(),
        ..task("h", &[])
    };
    assert!(matches!(
        s.on_update_graph(C, vec![t.clone()], &keys(&["h"])),
        Err(GraphError::UnknownOp { .. })
    ));
    s.on_update_graph(C, vec![coded(t, 7)], &keys(&["h"]))
        .unwrap();
    s.validate();
    assert_eq!(s.state("h"), TaskState::NoWorker);
}

#[test]
fn a_task_of_no_particular_code_runs_only_on_the_clusters_base_workers() {
    let mut s = core();
    s.on_worker_joined(WorkerId(0), of_code(worker("program", 4), 7));
    s.on_update_graph(C, vec![task("b", &[])], &keys(&["b"]))
        .unwrap();
    s.validate();
    assert_eq!(computes(&s.take_actions()), vec![]);
    assert_eq!(s.state("b"), TaskState::NoWorker);
    s.on_worker_joined(WorkerId(1), of_code(worker("stock", 1), 1));
    s.validate();
    let b = s.task_id("b").unwrap();
    assert_eq!(computes(&s.take_actions()), vec![(WorkerId(1), b)]);
}

#[test]
fn a_task_that_lost_one_input_keeps_the_other_and_only_the_lost_one_is_recomputed() {
    let mut s = core();
    s.on_worker_joined(WorkerId(0), with(worker("a", 1), &["ra"]));
    s.on_worker_joined(WorkerId(1), with(worker("b", 1), &["rb"]));
    s.on_update_graph(
        C,
        vec![
            needs(task("x", &[]), "ra"),
            needs(task("y", &[]), "rb"),
            task("t", &["x", "y"]),
        ],
        &keys(&["t"]),
    )
    .unwrap();
    s.validate();
    let [x, y, t] = ["x", "y", "t"].map(|k| s.task_id(k).unwrap());
    assert_eq!(
        computes(&s.take_actions()),
        vec![(WorkerId(0), x), (WorkerId(1), y)]
    );
    s.on_task_finished(WorkerId(0), x, 8, 10, 0, None);
    s.validate();
    s.on_task_finished(WorkerId(1), y, 8, 10, 0, None);
    s.validate();
    assert_eq!(computes(&s.take_actions()), vec![(WorkerId(0), t)]);
    // a cannot get y from b: y is computed again, and t sent ahead to b. x, which only
    // t reads, stays in memory on a, though t went back to waiting meanwhile.
    s.on_missing_data(WorkerId(0), t, y, WorkerId(1));
    s.validate();
    let a = s.take_actions();
    assert_eq!(
        a[0],
        Action::Free {
            worker: WorkerId(0),
            task: t
        }
    );
    assert_eq!(computes(&a[1..]), vec![(WorkerId(1), y), (WorkerId(1), t)]);
    assert_eq!(a.len(), 3);
    assert_eq!(s.state("x"), TaskState::Memory);
    assert_eq!(s.who_has("x"), vec![WorkerId(0)]);
}

/// A task freed on its worker and given to it again is a new run: the worker's report of
/// the run before (sent before it heard of the free) is stale, and the report of the new
/// one is current. Taking the stale one for the new run left the scheduler counting a
/// value the worker had dropped (the chaos test's stalls).
#[test]
fn a_task_given_again_to_its_worker_is_a_new_run_and_reports_of_the_old_one_are_stale() {
    let mut s = core();
    s.on_worker_joined(WorkerId(0), worker("a", 1));
    s.on_update_graph(C, vec![task("x", &[]), task("y", &["x"])], &keys(&["y"]))
        .unwrap();
    let (x, y) = (s.task_id("x").unwrap(), s.task_id("y").unwrap());
    let runs = |a: &[Action]| -> Vec<(TaskId, u32)> {
        a.iter()
            .filter_map(|a| match a {
                Action::Compute { msg, .. } => Some((msg.task, msg.run)),
                _ => None,
            })
            .collect()
    };
    assert_eq!(runs(&s.take_actions()), vec![(x, 1), (y, 1)]);
    assert!(!s.is_stale_run(y, 1));
    // The worker says it could not get x for y: both are freed there and given back.
    s.on_missing_data(WorkerId(0), y, x, WorkerId(0));
    s.validate();
    let a = s.take_actions();
    assert!(a.contains(&Action::Free {
        worker: WorkerId(0),
        task: y
    }));
    assert_eq!(runs(&a), vec![(x, 2), (y, 2)]);
    assert!(s.is_stale_run(y, 1), "the report of the first run");
    assert!(!s.is_stale_run(y, 2));
    assert!(
        !s.is_stale_run(TaskId(999), 1),
        "an unknown task has no run to be stale against"
    );
}
