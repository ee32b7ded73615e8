//! Graceful retirement, driven through the core with exact actions and `validate()` after
//! every stimulus: a retiring worker gets no new task, its running tasks finish, each value
//! only it holds is copied to a running worker before it is closed, nothing is
//! recomputed; a worker whose data cannot move is not retired; workers and holders lost
//! midway leave a valid state. Each test fails if the copy before the close is skipped.

use std::sync::Arc;

use rask_proto::msg::{DepLoc, Resource};
use rask_proto::{ClientId, Datum, TaskId, WorkerId};
use rask_scheduler_core::{Action, CoreConfig, NewTask, SchedulerCore, TaskState, WorkerSpec};

const C: ClientId = ClientId(1);
const A: WorkerId = WorkerId(0);
const B: WorkerId = WorkerId(1);
const D: WorkerId = WorkerId(2);

/// A worker named `name` offering one unit of the resource `name` (so that tasks can be
/// pinned to it), with `memory` bytes.
fn spec(name: &str, memory: u64) -> WorkerSpec {
    WorkerSpec {
        name: name.into(),
        addr: format!("tcp://127.0.0.1/{name}"),
        host_id: "h".into(),
        nthreads: 1,
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

/// A root task, pinned to the worker named `on` (any worker if empty).
fn task(key: &str, on: &str) -> NewTask {
    NewTask {
        key: key.into(),
        op: "inc".into(),
        args: Datum::Null,
        bufs: vec![],
        deps: vec![],
        resources: if on.is_empty() {
            vec![]
        } else {
            vec![Resource {
                name: on.into(),
                amount: 1.0,
            }]
        },
        code: None,
    }
}

struct Cluster {
    s: SchedulerCore,
}

impl Cluster {
    /// A client and workers a, b, d (1 GiB each).
    fn new() -> Cluster {
        Cluster::with(&[("a", 1 << 30), ("b", 1 << 30), ("d", 1 << 30)])
    }

    fn with(workers: &[(&str, u64)]) -> Cluster {
        let mut s = SchedulerCore::new(CoreConfig::default());
        s.on_client_joined(C);
        for (i, (name, memory)) in workers.iter().enumerate() {
            s.on_worker_joined(WorkerId(i as u32), spec(name, *memory));
            s.validate();
        }
        assert_eq!(s.take_actions(), vec![]);
        Cluster { s }
    }

    fn id(&self, key: &str) -> TaskId {
        self.s.task_id(key).unwrap()
    }

    /// The actions since the last call, after checking every invariant.
    fn actions(&mut self) -> Vec<Action> {
        self.s.validate();
        self.s.take_actions()
    }

    /// Submits `key` (wanted) pinned to `on`, which must get it as `w`, and finishes it
    /// there with a value of `nbytes`.
    fn compute(&mut self, key: &str, on: &str, w: WorkerId, nbytes: u64) -> TaskId {
        self.s
            .on_update_graph(C, vec![task(key, on)], &[key.to_string()])
            .unwrap();
        let t = self.id(key);
        assert_eq!(computes(&self.actions()), vec![(w, t)], "{key}");
        self.s.on_task_finished(w, t, nbytes, 10, 0, None);
        assert_eq!(
            self.actions(),
            vec![in_memory(key, t, nbytes, &[w])],
            "{key} in memory"
        );
        t
    }

    fn retire(&mut self, req: u64, workers: &[WorkerId]) -> Vec<Action> {
        self.s.on_retire_workers(C, req, workers);
        self.actions()
    }

    fn acquired(&mut self, w: WorkerId, tasks: &[TaskId]) -> Vec<Action> {
        self.s.on_replicas_acquired(w, tasks);
        self.actions()
    }

    fn holders(&self, key: &str) -> Vec<WorkerId> {
        self.s.who_has(key)
    }

    fn retiring(&self) -> Vec<WorkerId> {
        self.s
            .info()
            .workers
            .iter()
            .filter(|w| w.retiring)
            .map(|w| w.id)
            .collect()
    }

    fn workers(&self) -> Vec<WorkerId> {
        self.s.info().workers.iter().map(|w| w.id).collect()
    }
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

fn in_memory(key: &str, t: TaskId, nbytes: u64, holders: &[WorkerId]) -> Action {
    Action::KeyInMemory {
        client: C,
        key: key.into(),
        task: t,
        nbytes,
        holders: holders.to_vec(),
        value: None,
    }
}

fn acquire(worker: WorkerId, t: TaskId, nbytes: u64, holders: &[WorkerId]) -> Action {
    Action::AcquireReplica {
        worker,
        dep: DepLoc {
            task: t,
            nbytes,
            holders: holders.to_vec(),
        },
    }
}

fn retired(req: u64, workers: &[(WorkerId, &str)]) -> Action {
    Action::Retired {
        client: C,
        req,
        workers: workers
            .iter()
            .map(|(w, n)| (*w, Arc::<str>::from(*n)))
            .collect(),
    }
}

/// The copy comes first: the worker is closed only once the value it alone held has a
/// second holder, and then nothing is recomputed.
#[test]
fn a_retired_workers_only_value_is_copied_before_it_is_closed() {
    let mut c = Cluster::new();
    let x = c.compute("x", "a", A, 100);
    assert_eq!(c.retire(7, &[A]), vec![acquire(B, x, 100, &[A])]);
    assert_eq!(c.retiring(), vec![A]);
    // Until the copy is there, a stays.
    assert_eq!(c.workers(), vec![A, B, D]);
    assert_eq!(
        c.acquired(B, &[x]),
        vec![
            in_memory("x", x, 100, &[B]),
            Action::CloseWorker { worker: A },
            retired(7, &[(A, "a")]),
        ]
    );
    assert_eq!(c.workers(), vec![B, D]);
    assert_eq!(c.holders("x"), vec![B]);
    assert_eq!(c.s.state("x"), TaskState::Memory);
    let stored = c.s.info().workers;
    assert_eq!((stored[0].stored_keys, stored[0].stored_bytes), (1, 100));
    // A later report of the same copy changes nothing.
    assert_eq!(c.acquired(B, &[x]), vec![]);
}

#[test]
fn a_retiring_worker_gets_no_new_task_and_finishes_the_one_it_runs() {
    let mut c = Cluster::with(&[("a", 1 << 30), ("b", 1 << 30)]);
    c.s.on_update_graph(C, vec![task("x", "")], &["x".to_string()])
        .unwrap();
    let x = c.id("x");
    assert_eq!(computes(&c.actions()), vec![(A, x)]);
    // a still runs x: it cannot close yet, and there is nothing to copy.
    assert_eq!(c.retire(1, &[A]), vec![]);
    // New work goes to b only, though a has the lower id and b is as free.
    c.s.on_update_graph(
        C,
        vec![task("y", ""), task("z", "")],
        &["y".into(), "z".into()],
    )
    .unwrap();
    let (y, z) = (c.id("y"), c.id("z"));
    assert_eq!(computes(&c.actions()), vec![(B, y), (B, z)]);
    // x finishes on a: its value is copied to b, and a waits for the copy.
    c.s.on_task_finished(A, x, 8, 10, 0, None);
    assert_eq!(
        c.actions(),
        vec![in_memory("x", x, 8, &[A]), acquire(B, x, 8, &[A])]
    );
    assert_eq!(c.workers(), vec![A, B]);
    assert_eq!(
        c.acquired(B, &[x]),
        vec![
            in_memory("x", x, 8, &[B]),
            Action::CloseWorker { worker: A },
            retired(1, &[(A, "a")]),
        ]
    );
    c.s.on_task_finished(B, y, 8, 10, 0, None);
    c.s.on_task_finished(B, z, 8, 10, 0, None);
    assert_eq!(
        c.actions(),
        vec![in_memory("y", y, 8, &[B]), in_memory("z", z, 8, &[B])]
    );
}

#[test]
fn a_task_submitted_while_every_worker_retires_has_no_worker() {
    let mut c = Cluster::with(&[("a", 1 << 30)]);
    c.s.on_update_graph(C, vec![task("x", "")], &["x".to_string()])
        .unwrap();
    let x = c.id("x");
    assert_eq!(computes(&c.actions()), vec![(A, x)]);
    // a retires while it runs x: no worker takes new work, none has a free slot.
    assert_eq!(c.retire(1, &[A]), vec![]);
    assert_eq!(c.retiring(), vec![A]);
    c.s.on_update_graph(C, vec![task("y", "")], &["y".to_string()])
        .unwrap();
    assert_eq!(computes(&c.actions()), vec![]);
    assert_eq!(
        c.s.state("y"),
        TaskState::NoWorker,
        "queued for a retiring worker"
    );
}

#[test]
fn a_task_sent_ahead_to_a_retiring_worker_runs_there_and_no_new_one_is() {
    let mut c = Cluster::with(&[("a", 1 << 30), ("b", 1 << 30)]);
    let mut q = task("q", "");
    q.deps = vec!["p".into()];
    c.s.on_update_graph(C, vec![task("p", "a"), q], &["q".to_string()])
        .unwrap();
    let (p, q) = (c.id("p"), c.id("q"));
    // q waits on a for p.
    assert_eq!(computes(&c.actions()), vec![(A, p), (A, q)]);
    assert_eq!(c.retire(1, &[A]), vec![]);
    // A new task reading p is not sent ahead to a: it waits for p.
    let mut r = task("r", "");
    r.deps = vec!["p".into()];
    c.s.on_update_graph(C, vec![r], &["r".to_string()]).unwrap();
    let r = c.id("r");
    assert_eq!(c.actions(), vec![]);
    assert_eq!(c.s.state("r"), TaskState::Waiting);
    // p finishes: r runs on b, and p's value is copied there as any other.
    c.s.on_task_finished(A, p, 8, 10, 0, None);
    let a = c.actions();
    assert_eq!(computes(&a), vec![(B, r)]);
    assert_eq!(a.last(), Some(&acquire(B, p, 8, &[A])));
    assert_eq!(a.len(), 2);
    // q runs where it was sent.
    c.s.on_task_finished(A, q, 8, 10, 0, None);
    assert_eq!(
        c.actions(),
        vec![in_memory("q", q, 8, &[A]), acquire(B, q, 8, &[A])]
    );
}

#[test]
fn values_held_by_a_running_worker_too_are_not_copied() {
    let mut c = Cluster::new();
    let x = c.compute("x", "a", A, 10);
    // Retiring a puts a copy of x on b; retiring b then copies it to d, and b leaves.
    c.retire(1, &[A]);
    c.acquired(B, &[x]);
    let y = c.compute("y", "b", B, 10);
    assert_eq!(c.holders("x"), vec![B]);
    // b holds x and y: both go to d, the only running worker left.
    assert_eq!(
        c.retire(2, &[B]),
        vec![acquire(D, x, 10, &[B]), acquire(D, y, 10, &[B])]
    );
    // One copy done is not enough.
    assert_eq!(c.acquired(D, &[x]), vec![]);
    assert_eq!(
        c.acquired(D, &[y]),
        vec![
            in_memory("x", x, 10, &[D]),
            in_memory("y", y, 10, &[D]),
            Action::CloseWorker { worker: B },
            retired(2, &[(B, "b")]),
        ]
    );
}

#[test]
fn a_worker_with_nothing_retires_at_once_even_the_last_one() {
    let mut c = Cluster::with(&[("a", 1 << 30)]);
    assert_eq!(
        c.retire(3, &[A]),
        vec![Action::CloseWorker { worker: A }, retired(3, &[(A, "a")])]
    );
    assert_eq!(c.workers(), vec![]);
    // Work submitted now waits for a worker.
    c.s.on_update_graph(C, vec![task("x", "")], &["x".to_string()])
        .unwrap();
    assert_eq!(c.actions(), vec![]);
    assert_eq!(c.s.state("x"), TaskState::NoWorker);
    // The last worker holding a value, though, stays.
    c.s.on_worker_joined(B, spec("b", 1 << 30));
    let x = c.id("x");
    assert_eq!(computes(&c.actions()), vec![(B, x)]);
    c.s.on_task_finished(B, x, 8, 10, 0, None);
    c.actions();
    assert_eq!(c.retire(4, &[B]), vec![retired(4, &[])]);
    assert_eq!(c.workers(), vec![B]);
}

#[test]
fn the_last_worker_holding_a_value_is_not_retired() {
    let mut c = Cluster::with(&[("a", 1 << 30)]);
    let x = c.compute("x", "", A, 8);
    assert_eq!(c.retire(4, &[A]), vec![retired(4, &[])]);
    assert_eq!(c.workers(), vec![A]);
    assert_eq!(c.retiring(), vec![]);
    assert_eq!(c.holders("x"), vec![A]);
    // It runs again: new work goes to it.
    c.s.on_update_graph(C, vec![task("y", "")], &["y".to_string()])
        .unwrap();
    let y = c.id("y");
    assert_eq!(computes(&c.actions()), vec![(A, y)]);
    assert_ne!(x, y);
}

#[test]
fn of_two_workers_retired_together_and_alone_the_one_refused_keeps_the_others_values() {
    let mut c = Cluster::with(&[("a", 1 << 30), ("b", 1 << 30)]);
    let x = c.compute("x", "a", A, 8);
    let y = c.compute("y", "b", B, 8);
    // No running worker is left to take x: a is refused, and runs again. It can take y:
    // b retires.
    assert_eq!(c.retire(5, &[A, B]), vec![acquire(A, y, 8, &[B])]);
    assert_eq!(c.retiring(), vec![B]);
    assert_eq!(
        c.acquired(A, &[y]),
        vec![
            in_memory("y", y, 8, &[A]),
            Action::CloseWorker { worker: B },
            retired(5, &[(B, "b")]),
        ]
    );
    assert_eq!(c.holders("x"), vec![A]);
    assert_eq!(c.s.who_has("x"), vec![A]);
    assert_ne!(x, y);
}

#[test]
fn a_worker_refused_runs_what_waited_while_it_was_retiring() {
    let mut c = Cluster::with(&[("a", 1 << 30), ("b", 1 << 30)]);
    let x = c.compute("x", "a", A, 8);
    c.s.on_update_graph(C, vec![task("w", "b")], &["w".to_string()])
        .unwrap();
    let w = c.id("w");
    assert_eq!(computes(&c.actions()), vec![(B, w)]);
    // a retires while b is busy; y, which only a can run, waits for a worker.
    assert_eq!(c.retire(1, &[A]), vec![acquire(B, x, 8, &[A])]);
    c.s.on_update_graph(C, vec![task("y", "a")], &["y".to_string()])
        .unwrap();
    let y = c.id("y");
    assert_eq!(c.actions(), vec![]);
    assert_eq!(c.s.state("y"), TaskState::NoWorker);
    // b, the only worker to take x, is lost: a is not retired, and runs y. (w, which
    // only b could run, waits for a worker like it.)
    c.s.on_worker_lost(B);
    let a = c.actions();
    assert_eq!(computes(&a), vec![(A, y)]);
    assert!(a.contains(&retired(1, &[])), "{a:?}");
    assert_eq!(c.retiring(), vec![]);
    assert_eq!(c.holders("x"), vec![A]);
    assert_eq!(c.s.state("w"), TaskState::NoWorker);
}

#[test]
fn a_worker_is_not_retired_when_no_other_has_room_for_its_value() {
    let mut c = Cluster::with(&[("a", 1 << 30), ("b", 1000)]);
    c.compute("w", "b", B, 500);
    c.compute("x", "a", A, 600);
    // 500 + 600 bytes would not fit in b's 1000.
    assert_eq!(c.retire(9, &[A]), vec![retired(9, &[])]);
    assert_eq!(c.workers(), vec![A, B]);
    assert_eq!(c.holders("x"), vec![A]);
    assert_eq!(c.s.state("x"), TaskState::Memory);
    // Exactly full is room enough.
    let mut c = Cluster::with(&[("a", 1 << 30), ("b", 1100)]);
    c.compute("w", "b", B, 500);
    let x = c.compute("x", "a", A, 600);
    assert_eq!(c.retire(9, &[A]), vec![acquire(B, x, 600, &[A])]);
}

#[test]
fn copies_on_their_way_count_against_the_receivers_memory() {
    let mut c = Cluster::with(&[("a", 1 << 30), ("b", 700), ("d", 1000)]);
    c.compute("w", "d", D, 500);
    let x = c.compute("x", "a", A, 400);
    let y = c.compute("y", "a", A, 400);
    // x goes to b, holding least. b holds nothing yet, but with x on its way it has no
    // room for y (400 + 400 > 700): y goes to d (500 + 400 <= 1000).
    assert_eq!(
        c.retire(1, &[A]),
        vec![acquire(B, x, 400, &[A]), acquire(D, y, 400, &[A])]
    );
    let info = c.s.info();
    assert_eq!(
        info.workers[1].stored_bytes, 0,
        "copies on their way are not held"
    );
    assert_eq!(c.acquired(B, &[x]), vec![]);
    let a = c.acquired(D, &[y]);
    assert!(a.contains(&Action::CloseWorker { worker: A }), "{a:?}");
    assert_eq!(c.holders("y"), vec![D]);
    assert_eq!(c.s.info().workers[1].stored_bytes, 900);
}

#[test]
fn a_value_of_a_programs_op_is_copied_to_a_worker_of_that_program() {
    let mut c = Cluster::with(&[("a", 1 << 30), ("b", 1 << 30)]);
    let mut p1 = spec("p1", 1 << 30);
    p1.code = 7;
    p1.base = false;
    let mut p2 = p1.clone();
    p2.name = "p2".into();
    p2.resources[0].name = "p2".into();
    c.s.on_worker_joined(WorkerId(5), p1);
    c.s.on_worker_joined(WorkerId(6), p2);
    c.actions();
    let mut t = task("t", "p1");
    t.code = Some(7);
    c.s.on_update_graph(C, vec![t], &["t".to_string()]).unwrap();
    let t = c.id("t");
    assert_eq!(computes(&c.actions()), vec![(WorkerId(5), t)]);
    c.s.on_task_finished(WorkerId(5), t, 8, 10, 0, None);
    c.actions();
    // b holds nothing, as p2, but runs other code: p2 takes it.
    assert_eq!(
        c.retire(1, &[WorkerId(5)]),
        vec![acquire(WorkerId(6), t, 8, &[WorkerId(5)])]
    );
    // A base value does not go to a program's worker, whatever it holds.
    c.compute("x", "a", A, 8);
    c.s.on_worker_lost(B);
    c.actions();
    assert_eq!(c.retire(2, &[A]), vec![retired(2, &[])]);
    assert_eq!(c.holders("x"), vec![A]);
}

#[test]
fn a_holder_lost_midway_is_recomputed_and_the_copy_dropped() {
    let mut c = Cluster::new();
    let x = c.compute("x", "", A, 8);
    assert_eq!(c.retire(1, &[A]), vec![acquire(B, x, 8, &[A])]);
    c.s.on_worker_lost(A);
    let a = c.actions();
    // The copy on its way is dropped, x is computed again, the client hears a did not
    // retire.
    assert_eq!(
        a,
        vec![
            Action::Free { worker: B, task: x },
            a[1].clone(),
            retired(1, &[]),
        ]
    );
    assert_eq!(computes(&a[1..2]), vec![(B, x)]);
    // The late report of the copy is ignored.
    assert_eq!(c.acquired(B, &[x]), vec![]);
    assert_eq!(c.holders("x"), vec![]);
    assert_eq!(c.s.state("x"), TaskState::Processing);
}

#[test]
fn a_receiver_lost_midway_is_replaced_by_another() {
    let mut c = Cluster::new();
    let x = c.compute("x", "a", A, 8);
    assert_eq!(c.retire(1, &[A]), vec![acquire(B, x, 8, &[A])]);
    c.s.on_worker_lost(B);
    assert_eq!(c.actions(), vec![acquire(D, x, 8, &[A])]);
    // b's report, were it to arrive, is not counted.
    assert_eq!(c.acquired(B, &[x]), vec![]);
    assert_eq!(c.workers(), vec![A, D]);
    let a = c.acquired(D, &[x]);
    assert_eq!(a.last(), Some(&retired(1, &[(A, "a")])));
    assert_eq!(c.holders("x"), vec![D]);
}

#[test]
fn a_copy_the_holder_does_not_have_is_recomputed_elsewhere() {
    let mut c = Cluster::new();
    let x = c.compute("x", "", A, 8);
    assert_eq!(c.retire(1, &[A]), vec![acquire(B, x, 8, &[A])]);
    // A report about a copy not asked of that worker is ignored.
    c.s.on_replica_missing(D, x, A);
    assert_eq!(c.actions(), vec![]);
    // b finds a without x: a holds nothing then, and retires; x is computed again.
    c.s.on_replica_missing(B, x, A);
    let a = c.actions();
    assert_eq!(computes(&a), vec![(B, x)]);
    assert!(a.contains(&Action::CloseWorker { worker: A }), "{a:?}");
    assert_eq!(a.last(), Some(&retired(1, &[(A, "a")])));
}

#[test]
fn a_value_released_midway_cancels_its_copy() {
    let mut c = Cluster::new();
    let x = c.compute("x", "a", A, 8);
    assert_eq!(c.retire(1, &[A]), vec![acquire(B, x, 8, &[A])]);
    c.s.on_release_keys(C, &["x".to_string()]);
    assert_eq!(
        c.actions(),
        vec![
            Action::Free { worker: A, task: x },
            Action::Free { worker: B, task: x },
            Action::CloseWorker { worker: A },
            retired(1, &[(A, "a")]),
        ]
    );
    assert_eq!(c.s.task_count(), 0);
}

#[test]
fn a_receiver_that_starts_retiring_does_not_count_as_a_copy() {
    let mut c = Cluster::new();
    let y = c.compute("y", "b", B, 8);
    c.compute("z", "d", D, 8);
    let x = c.compute("x", "a", A, 8);
    // b and d hold as much: x goes to b, the lower id.
    assert_eq!(c.retire(1, &[A]), vec![acquire(B, x, 8, &[A])]);
    assert_eq!(c.retire(2, &[B]), vec![acquire(D, y, 8, &[B])]);
    // The copy lands on b, which retires too: x goes on to d.
    assert_eq!(c.acquired(B, &[x]), vec![acquire(D, x, 8, &[A, B])]);
    assert_eq!(
        c.acquired(D, &[x, y]),
        vec![
            in_memory("x", x, 8, &[B, D]),
            Action::CloseWorker { worker: A },
            retired(1, &[(A, "a")]),
            in_memory("y", y, 8, &[D]),
            in_memory("x", x, 8, &[D]),
            Action::CloseWorker { worker: B },
            retired(2, &[(B, "b")]),
        ]
    );
}

#[test]
fn unknown_and_repeated_workers_are_ignored_and_every_request_hears_of_its_worker() {
    let mut c = Cluster::new();
    let x = c.compute("x", "a", A, 8);
    assert_eq!(
        c.retire(1, &[WorkerId(9), A, A]),
        vec![acquire(B, x, 8, &[A])]
    );
    // Asked again meanwhile: no second copy.
    assert_eq!(c.retire(2, &[A]), vec![]);
    assert_eq!(c.retire(3, &[WorkerId(9)]), vec![retired(3, &[])]);
    assert_eq!(
        c.acquired(B, &[x]),
        vec![
            in_memory("x", x, 8, &[B]),
            Action::CloseWorker { worker: A },
            retired(1, &[(A, "a")]),
            retired(2, &[(A, "a")]),
        ]
    );
}

#[test]
fn a_worker_asking_to_leave_hands_its_value_over_and_no_client_is_told() {
    let mut c = Cluster::with(&[("a", 1 << 30), ("b", 1 << 30)]);
    let x = c.compute("x", "a", A, 8);
    c.s.on_close_gracefully(A);
    assert_eq!(c.actions(), vec![acquire(B, x, 8, &[A])]);
    assert_eq!(c.retiring(), vec![A]);
    assert_eq!(
        c.acquired(B, &[x]),
        vec![
            in_memory("x", x, 8, &[B]),
            Action::CloseWorker { worker: A }
        ]
    );
    assert_eq!(c.s.state("x"), TaskState::Memory);
}

#[test]
fn a_worker_asking_to_leave_leaves_even_when_its_value_cannot_move() {
    let mut s = SchedulerCore::new(CoreConfig {
        allowed_failures: 1,
        ..CoreConfig::default()
    });
    s.on_client_joined(C);
    s.on_worker_joined(A, spec("a", 1 << 30));
    s.on_update_graph(
        C,
        vec![task("x", ""), task("y", "")],
        &["x".into(), "y".into()],
    )
    .unwrap();
    let (x, y) = (s.task_id("x").unwrap(), s.task_id("y").unwrap());
    assert_eq!(computes(&s.take_actions()), vec![(A, x), (A, y)]);
    s.on_task_finished(A, x, 8, 10, 0, None);
    s.validate();
    s.take_actions();
    // a is alone and runs y: it leaves all the same; y, which did not kill it, is not
    // blamed (one death would make it err), and both wait for a worker.
    s.on_close_gracefully(A);
    s.validate();
    assert_eq!(s.take_actions(), vec![Action::CloseWorker { worker: A }]);
    assert_eq!(s.state("x"), TaskState::NoWorker);
    assert_eq!(s.state("y"), TaskState::NoWorker);
    s.on_worker_joined(B, spec("b", 1 << 30));
    s.validate();
    assert_eq!(computes(&s.take_actions()), vec![(B, x), (B, y)]);
}

#[test]
fn retiring_workers_are_shown_and_stimuli_that_do_not_concern_them_change_nothing() {
    let mut c = Cluster::new();
    let x = c.compute("x", "a", A, 8);
    c.retire(1, &[A]);
    assert!(c.s.is_retiring(A));
    assert!(!c.s.is_retiring(B));
    assert!(!c.s.is_retiring(WorkerId(9)));
    // Work elsewhere, and a worker joining, leave the retirement as it is.
    c.compute("y", "d", D, 8);
    c.s.on_worker_joined(WorkerId(3), spec("e", 1 << 30));
    assert_eq!(c.actions(), vec![]);
    assert_eq!(c.retiring(), vec![A]);
    c.acquired(B, &[x]);
    assert_eq!(c.retiring(), vec![]);
}

#[test]
fn a_running_holder_lost_while_a_worker_retires_has_the_value_copied_again() {
    let mut c = Cluster::new();
    let x = c.compute("x", "a", A, 8);
    c.s.on_update_graph(C, vec![task("y", "a")], &["y".to_string()])
        .unwrap();
    let y = c.id("y");
    assert_eq!(computes(&c.actions()), vec![(A, y)]);
    assert_eq!(c.retire(1, &[A]), vec![acquire(B, x, 8, &[A])]);
    // The copy is there, but a still runs y.
    assert_eq!(c.acquired(B, &[x]), vec![]);
    assert_eq!(c.holders("x"), vec![A, B]);
    // b dies: x is again held by a only, and goes to d.
    c.s.on_worker_lost(B);
    assert_eq!(
        c.actions(),
        vec![in_memory("x", x, 8, &[A]), acquire(D, x, 8, &[A])]
    );
}

#[test]
fn a_retiring_worker_found_without_its_value_closes_and_the_value_is_computed_again() {
    let mut c = Cluster::new();
    let x = c.compute("x", "", A, 8);
    let mut t = task("t", "d");
    t.deps = vec!["x".into()];
    c.s.on_update_graph(C, vec![t], &["t".to_string()]).unwrap();
    let t = c.id("t");
    assert_eq!(computes(&c.actions()), vec![(D, t)]);
    assert_eq!(c.retire(1, &[A]), vec![acquire(B, x, 8, &[A])]);
    // d cannot get x from a: a holds nothing then and leaves; the copy is called off, x
    // is computed again elsewhere.
    c.s.on_missing_data(D, t, x, A);
    let a = c.actions();
    assert_eq!(computes(&a), vec![(B, x)]);
    for want in [
        Action::Free { worker: D, task: t },
        Action::Free { worker: B, task: x },
        Action::CloseWorker { worker: A },
    ] {
        assert!(a.contains(&want), "{want:?} in {a:?}");
    }
    assert_eq!(a.last(), Some(&retired(1, &[(A, "a")])));
}

#[test]
fn a_copy_goes_to_the_receiver_holding_least_with_the_copies_on_their_way() {
    let mut c = Cluster::new();
    c.compute("w", "d", D, 300);
    let x = c.compute("x", "a", A, 400);
    let y = c.compute("y", "a", A, 100);
    // x to b, which then has 400 on its way, more than d's 300: y to d.
    assert_eq!(
        c.retire(1, &[A]),
        vec![acquire(B, x, 400, &[A]), acquire(D, y, 100, &[A])]
    );
}
