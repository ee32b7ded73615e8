//! What runs inline, and which results are reported with their value.

use super::*;

fn assigned(t: u64, op: &str, report_value: bool) -> Assigned<'_> {
    Assigned {
        task: TaskId(t),
        priority: t,
        deps: vec![],
        op,
        report_value,
        // Distinct from the task's id: the report must carry the assignment's run.
        run: 100 + t as u32,
    }
}

#[test]
fn a_task_of_an_op_measured_fast_is_marked_to_run_inline() {
    let mut w = WorkerCore::new(1);
    w.on_assigned([assigned(1, "inc", false)]);
    assert_eq!(
        w.take(),
        vec![Instruction::Execute {
            task: TaskId(1),
            inline: false
        }]
    );
    let done = Finished {
        nbytes: 8,
        on_device: false,
    };
    w.on_executed(TaskId(1), 2, Ok(done));
    w.take();
    w.on_assigned([assigned(2, "inc", false), assigned(3, "sleep", false)]);
    assert_eq!(
        w.take(),
        vec![Instruction::Execute {
            task: TaskId(2),
            inline: true
        }]
    );
    // A slow run of the same op (0.8 × 2 + 0.2 × 500 = 101.6 µs) ends inlining.
    w.on_executed(TaskId(2), 500, Ok(done));
    assert_eq!(
        w.take(),
        vec![
            Instruction::Finished {
                task: TaskId(2),
                nbytes: 8,
                duration_us: 500,
                with_value: false,
                run: 102,
                fetch_us: 0,
            },
            Instruction::Execute {
                task: TaskId(3),
                inline: false
            }
        ]
    );
    w.on_executed(TaskId(3), 1, Ok(done));
    w.take();
    w.on_assigned([assigned(4, "inc", false)]);
    assert_eq!(
        w.take(),
        vec![Instruction::Execute {
            task: TaskId(4),
            inline: false
        }]
    );
    // Failures are measured too.
    w.on_executed(TaskId(4), 0, Err("boom".into()));
    assert_eq!(w.op_times().average_us("inc"), Some(0.8 * 101.6));
}

#[test]
fn a_result_a_client_waits_on_is_reported_with_its_value_and_others_are_not() {
    let mut w = WorkerCore::new(2);
    assert_eq!(w.ran(), [0, 0], "nothing run yet");
    w.on_assigned([assigned(1, "inc", true), assigned(2, "inc", false)]);
    w.take();
    w.on_executed(
        TaskId(1),
        3,
        Ok(Finished {
            nbytes: 8,
            on_device: true,
        }),
    );
    w.on_executed(TaskId(2), 4, done(16));
    assert_eq!(
        w.take(),
        vec![
            Instruction::Finished {
                task: TaskId(1),
                nbytes: 8,
                duration_us: 3,
                with_value: true,
                run: 101,
                fetch_us: 0,
            },
            Instruction::Finished {
                task: TaskId(2),
                nbytes: 16,
                duration_us: 4,
                with_value: false,
                run: 102,
                fetch_us: 0,
            },
        ]
    );
    assert_eq!(
        w.ran(),
        [1, 1],
        "one on the CPU, one by the device's kernels"
    );
    // Not counted: a failure, and a run cancelled by the scheduler.
    w.on_assigned([assigned(3, "inc", true), assigned(4, "inc", true)]);
    w.take();
    w.on_free(TaskId(4));
    w.on_executed(TaskId(3), 1, Err("boom".into()));
    w.on_executed(TaskId(4), 1, done(8));
    assert_eq!(w.ran(), [1, 1]);
    assert_eq!(
        w.take(),
        vec![
            Instruction::Send(ToScheduler::TaskErred(rask_proto::msg::TaskErredMsg {
                task: TaskId(3),
                message: "boom".into(),
                run: 103,
            })),
            Instruction::Discard { task: TaskId(4) },
        ]
    );
}

#[test]
fn a_report_says_how_long_the_task_waited_for_inputs_from_peers() {
    let mut w = WorkerCore::new(1);
    w.set_now(1_000);
    // Task 10 reads 1 from peer 7 and 2 from peer 8; task 11 reads 1 too, assigned
    // later; task 12 reads what task 10 makes here.
    w.on_compute(TaskId(10), 0, vec![dep(1, &[7]), dep(2, &[8])]);
    w.take();
    w.set_now(1_100);
    w.on_compute(TaskId(11), 1, vec![dep(1, &[7])]);
    w.on_compute(TaskId(12), 2, vec![dep(10, &[])]);
    w.take();
    w.set_now(1_400);
    w.on_fetched(WorkerId(7), &[TaskId(1)], &[]);
    // Task 11 is ready: 300 µs after it came.
    assert_eq!(
        w.take(),
        vec![Instruction::Execute {
            task: TaskId(11),
            inline: false
        }]
    );
    w.set_now(2_500);
    w.on_fetched(WorkerId(8), &[TaskId(2)], &[]);
    w.take();
    let reported = |w: &mut WorkerCore, t: u64| {
        w.on_executed(TaskId(t), 1, done(8));
        w.take()
            .into_iter()
            .find_map(|i| match i {
                Instruction::Finished { task, fetch_us, .. } if task == TaskId(t) => Some(fetch_us),
                _ => None,
            })
            .expect("a report")
    };
    w.set_now(9_000);
    assert_eq!(reported(&mut w, 11), 300);
    // Its last input from a peer came 1,500 µs after it did; the run is not counted.
    assert_eq!(reported(&mut w, 10), 1_500);
    // An input made here is no wait on a peer.
    assert_eq!(reported(&mut w, 12), 0);
}

#[test]
fn without_a_clock_every_wait_is_zero() {
    let mut w = WorkerCore::new(1);
    w.on_compute(TaskId(10), 0, vec![dep(1, &[7])]);
    w.on_fetched(WorkerId(7), &[TaskId(1)], &[]);
    w.take();
    w.on_executed(TaskId(10), 1, done(8));
    assert!(w
        .take()
        .iter()
        .any(|i| matches!(i, Instruction::Finished { fetch_us: 0, .. })));
}
