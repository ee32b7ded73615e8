//! Scenario tests: drive the core directly, check exact actions, validate after each step.

use rask_proto::msg::Resource;
use rask_proto::{ClientId, Datum, TaskId, WorkerId};
use rask_scheduler_core::{
    Action, CoreConfig, GraphError, NewTask, SchedulerCore, TaskState, WorkerSpec,
};

const C: ClientId = ClientId(1);

fn task(key: &str, deps: &[&str]) -> NewTask {
    NewTask {
        key: key.into(),
        op: "add".into(),
        args: Datum::List((0..deps.len() as u32).map(Datum::Ref).collect()),
        bufs: vec![],
        deps: deps.iter().map(|s| s.to_string()).collect(),
        resources: vec![],
    }
}

fn worker(name: &str, nthreads: u32) -> WorkerSpec {
    WorkerSpec {
        name: name.into(),
        addr: format!("tcp://127.0.0.1/{name}"),
        host_id: "h".into(),
        nthreads,
        memory_limit: 1 << 30,
        resources: vec![],
        gpu: None,
        nvlink: vec![],
        device_spill_at: 0,
    }
}

fn core() -> SchedulerCore {
    let mut c = SchedulerCore::new(CoreConfig::default());
    c.add_client(C);
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

fn keys(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn chain_runs_in_order_and_frees_intermediates() {
    let mut s = core();
    s.add_worker(WorkerId(0), worker("a", 1));
    s.update_graph(
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

    s.task_finished(WorkerId(0), x, 8, 10, None);
    s.validate();
    assert_eq!(s.take_actions(), vec![]);

    s.task_finished(WorkerId(0), y, 8, 10, None);
    s.validate();
    // x is no longer needed: freed on the worker.
    assert_eq!(
        s.take_actions(),
        vec![Action::Free {
            worker: WorkerId(0),
            task: x
        }]
    );

    s.task_finished(WorkerId(0), z, 8, 10, None);
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

    s.release_keys(C, &keys(&["z"]));
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
    s.update_graph(C, vec![task("a", &[])], &keys(&["a"]))
        .unwrap();
    let story: Vec<_> = s.story("a").iter().map(|t| (t.from, t.to)).collect();
    assert_eq!(
        story,
        vec![
            (TaskState::Released, TaskState::Waiting),
            (TaskState::Waiting, TaskState::NoWorker)
        ]
    );
    s.add_worker(WorkerId(3), worker("w", 1));
    s.validate();
    assert_eq!(s.state("a"), TaskState::Processing);
    assert_eq!(s.story("a").last().unwrap().to, TaskState::Processing);
}

#[test]
fn errors_propagate_to_dependents_with_the_cause() {
    let mut s = core();
    s.add_worker(WorkerId(0), worker("a", 2));
    s.update_graph(
        C,
        vec![task("x", &[]), task("y", &["x"]), task("z", &["y"])],
        &keys(&["z", "y"]),
    )
    .unwrap();
    let x = s.task_id("x").unwrap();
    s.take_actions();
    s.task_erred(WorkerId(0), x, "boom".into());
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
    s.release_keys(C, &keys(&["z", "y"]));
    s.validate();
    assert_eq!(s.task_count(), 0);
}

#[test]
fn unknown_op_and_bad_graphs_are_refused_whole() {
    let mut s = core();
    s.set_registry(["add".to_string()]);
    let mut bad = task("b", &[]);
    bad.op = "nope".into();
    let err = s
        .update_graph(C, vec![task("a", &[]), bad], &keys(&["a", "b"]))
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
        s.update_graph(C, vec![task("a", &["q"])], &[]),
        Err(GraphError::UnknownDependency { .. })
    ));
    assert!(matches!(
        s.update_graph(C, vec![task("a", &["b"]), task("b", &["a"])], &[]),
        Err(GraphError::Cycle { .. })
    ));
    let mut r = task("a", &[]);
    r.args = Datum::Ref(0);
    assert!(matches!(
        s.update_graph(C, vec![r], &[]),
        Err(GraphError::BadReference { .. })
    ));
    assert!(matches!(
        s.update_graph(C, vec![task("a", &[]), task("a", &[])], &[]),
        Err(GraphError::DuplicateKey { .. })
    ));
    s.validate();
    assert_eq!(s.task_count(), 0);
}

#[test]
fn lost_worker_reschedules_and_recomputes() {
    let mut s = core();
    s.add_worker(WorkerId(0), worker("a", 1));
    s.add_worker(WorkerId(1), worker("b", 1));
    s.update_graph(
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
    s.task_finished(on(x), x, 8, 5, None);
    s.validate();
    let mut sent = computes(&s.take_actions());
    // The worker holding x dies while y still runs on the other one.
    let dead = on(x);
    let alive = if dead == WorkerId(0) {
        WorkerId(1)
    } else {
        WorkerId(0)
    };
    s.remove_worker(dead);
    s.validate();
    sent.extend(computes(&s.take_actions()));
    // x is recomputed on the survivor.
    assert!(sent.contains(&(alive, x)), "{sent:?}");
    s.task_finished(alive, x, 8, 5, None);
    s.validate();
    sent.extend(computes(&s.take_actions()));
    if s.state("y") == TaskState::Processing {
        s.task_finished(alive, y, 8, 5, None);
        s.validate();
        sent.extend(computes(&s.take_actions()));
    }
    assert!(sent.contains(&(alive, z)), "{sent:?}");
    s.task_finished(alive, z, 8, 5, None);
    s.validate();
    assert_eq!(s.state("z"), TaskState::Memory);
    assert_eq!(s.who_has("z"), vec![alive]);
}

#[test]
fn pre_assigned_dependents_unwind_on_error_and_on_worker_loss() {
    let mut s = core();
    s.add_worker(WorkerId(0), worker("a", 1));
    s.update_graph(
        C,
        vec![task("p", &[]), task("q", &["p"]), task("r", &["q"])],
        &keys(&["r"]),
    )
    .unwrap();
    let [p, q, r] = ["p", "q", "r"].map(|k| s.task_id(k).unwrap());
    assert_eq!(computes(&s.take_actions()).len(), 3);
    // p fails: q and r, waiting on the worker, are cancelled there and err with p's error.
    s.task_erred(WorkerId(0), p, "bad input".into());
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
    s.release_keys(C, &keys(&["r"]));
    s.validate();
    assert_eq!(s.task_count(), 0);

    // Worker loss: the running task counts a death, the ones waiting behind it do not.
    s.update_graph(C, vec![task("p", &[]), task("q", &["p"])], &keys(&["q"]))
        .unwrap();
    s.take_actions();
    s.remove_worker(WorkerId(0));
    s.validate();
    assert_eq!(s.state("p"), TaskState::NoWorker);
    assert_eq!(s.state("q"), TaskState::Waiting);
    s.add_worker(WorkerId(1), worker("b", 1));
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
    s.update_graph(C, vec![task("bad", &[])], &keys(&["bad"]))
        .unwrap();
    for i in 0..3 {
        s.add_worker(WorkerId(i), worker(&format!("w{i}"), 1));
        assert_eq!(s.state("bad"), TaskState::Processing);
        s.take_actions();
        s.remove_worker(WorkerId(i));
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
fn stale_finish_after_cancel_frees_the_result() {
    let mut s = core();
    s.add_worker(WorkerId(0), worker("a", 1));
    s.update_graph(C, vec![task("x", &[])], &keys(&["x"]))
        .unwrap();
    let x = s.task_id("x").unwrap();
    s.take_actions();
    s.release_keys(C, &keys(&["x"]));
    s.validate();
    assert_eq!(
        s.take_actions(),
        vec![Action::Free {
            worker: WorkerId(0),
            task: x
        }]
    );
    s.task_finished(WorkerId(0), x, 8, 5, None);
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
    s.add_worker(WorkerId(0), worker("a", 4));
    s.add_worker(WorkerId(1), worker("b", 4));
    s.update_graph(C, vec![task("big", &[])], &keys(&["big"]))
        .unwrap();
    let big = s.task_id("big").unwrap();
    let w = computes(&s.take_actions())[0].0;
    s.task_finished(w, big, 1 << 30, 5, None);
    s.update_graph(C, vec![task("use", &["big"])], &keys(&["use"]))
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
    s.add_worker(WorkerId(0), worker("cpu", 4));
    s.add_worker(WorkerId(1), gpu);
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
    s.update_graph(C, tasks, &keys(&["g0", "g1", "g2", "huge"]))
        .unwrap();
    s.validate();
    let c = computes(&s.take_actions());
    // One GPU: one GPU task at a time, on the GPU worker; the rest queue.
    assert_eq!(c, vec![(WorkerId(1), s.task_id("g0").unwrap())]);
    assert_eq!(s.state("g1"), TaskState::Queued);
    assert_eq!(s.state("huge"), TaskState::NoWorker);
    s.task_finished(WorkerId(1), s.task_id("g0").unwrap(), 8, 5, None);
    s.validate();
    assert_eq!(
        computes(&s.take_actions()),
        vec![(WorkerId(1), s.task_id("g1").unwrap())]
    );
}

#[test]
fn root_tasks_queue_on_the_scheduler() {
    let mut s = core();
    s.add_worker(WorkerId(0), worker("a", 1));
    s.add_worker(WorkerId(1), worker("b", 1));
    let n = 100_000;
    let tasks: Vec<_> = (0..n).map(|i| task(&format!("t{i}"), &[])).collect();
    let wanted: Vec<String> = tasks.iter().map(|t| t.key.clone()).collect();
    s.update_graph(C, tasks, &wanted).unwrap();
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
    s.update_graph(C, vec![task("a", &[])], &keys(&["a"]))
        .unwrap();
    assert_eq!(s.state("a"), TaskState::NoWorker);
    s.add_worker(WorkerId(7), worker("late", 1));
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
    s.add_client(c2);
    s.add_worker(WorkerId(0), worker("a", 1));
    s.update_graph(C, vec![task("x", &[])], &keys(&["x"]))
        .unwrap();
    s.update_graph(c2, vec![task("x", &[])], &keys(&["x"]))
        .unwrap();
    let x = s.task_id("x").unwrap();
    s.take_actions();
    s.task_finished(WorkerId(0), x, 8, 5, None);
    let a = s.take_actions();
    assert_eq!(
        a.iter()
            .filter(|a| matches!(a, Action::KeyInMemory { .. }))
            .count(),
        2
    );
    s.remove_client(C);
    s.validate();
    assert_eq!(s.state("x"), TaskState::Memory);
    s.release_keys(c2, &keys(&["x"]));
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
        s.add_worker(WorkerId(i), spec);
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
    s.update_graph(C, vec![needs(task("x", &[]), "on-2")], &keys(&["x"]))
        .unwrap();
    let x = s.task_id("x").unwrap();
    assert_eq!(computes(&s.take_actions()), vec![(WorkerId(2), x)]);
    s.task_finished(WorkerId(2), x, 256 << 20, 10, None);
    s.take_actions();
}

#[test]
fn consumers_run_where_their_input_is_then_on_its_nvlink_peer() {
    let mut s = core();
    gpu_workers(&mut s);
    input_on_gpu2(&mut s);

    // The input is on GPU 2: the consumer runs there, nothing moves.
    s.update_graph(C, vec![needs(task("y", &["x"]), "gpu")], &keys(&["y"]))
        .unwrap();
    let y = s.task_id("y").unwrap();
    assert_eq!(computes(&s.take_actions()), vec![(WorkerId(2), y)]);
    s.validate();

    // GPU 2 is taken by y: the next consumer goes to its NVLink peer, GPU 3, not to a GPU
    // that would pull the input through the host.
    s.update_graph(C, vec![needs(task("z", &["x"]), "gpu")], &keys(&["z"]))
        .unwrap();
    let z = s.task_id("z").unwrap();
    assert_eq!(computes(&s.take_actions()), vec![(WorkerId(3), z)]);
    s.validate();

    // Both of the pair are busy: now another GPU has to do.
    s.update_graph(C, vec![needs(task("w", &["x"]), "gpu")], &keys(&["w"]))
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
    s.worker_device_memory(WorkerId(2), 900 << 20);
    s.update_graph(C, vec![needs(task("y", &["x"]), "gpu")], &keys(&["y"]))
        .unwrap();
    let y = s.task_id("y").unwrap();
    assert_eq!(computes(&s.take_actions()), vec![(WorkerId(3), y)]);
    s.task_finished(WorkerId(3), y, 8, 10, None);
    s.take_actions();
    // GPU 2 has room again: the next consumer runs where the input is.
    s.worker_device_memory(WorkerId(2), 256 << 20);
    s.update_graph(C, vec![needs(task("z", &["x"]), "gpu")], &keys(&["z"]))
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
    s.add_client(c2);
    s.validate();
    s.add_worker(WorkerId(0), worker("a", 1));
    s.validate();
    s.update_graph(C, vec![task("x", &[])], &keys(&["x"]))
        .unwrap();
    s.validate();
    let x = s.task_id("x").unwrap();
    assert_eq!(computes(&s.take_actions()), vec![(WorkerId(0), x)]);
    s.task_finished(WorkerId(0), x, 24, 5, None);
    s.validate();
    s.take_actions();

    s.update_graph(c2, vec![task("x", &[])], &keys(&["x"]))
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
    s.update_graph(c2, vec![], &keys(&["x"])).unwrap();
    s.validate();
    assert_eq!(s.take_actions(), vec![]);
    // The first client letting go keeps the data for the second.
    s.release_keys(C, &keys(&["x"]));
    s.validate();
    assert_eq!(s.take_actions(), vec![]);
    assert_eq!(s.who_has("x"), vec![WorkerId(0)]);
}

#[test]
fn releasing_a_task_still_waiting_for_its_inputs_cancels_them_and_forgets_all() {
    let mut s = core();
    s.add_worker(WorkerId(0), worker("a", 1));
    s.validate();
    s.add_worker(WorkerId(1), worker("b", 1));
    s.validate();
    s.update_graph(
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

    s.release_keys(C, &keys(&["z"]));
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
