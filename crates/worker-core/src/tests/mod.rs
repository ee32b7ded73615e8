//! Unit and property tests of the worker's bookkeeping.

use super::*;

fn dep(t: u64, holders: &[u32]) -> DepLoc {
    DepLoc {
        task: TaskId(t),
        nbytes: 8,
        holders: holders.iter().map(|h| WorkerId(*h)).collect(),
    }
}

/// A run that ended well with an output of `nbytes` in host memory.
fn done(nbytes: u64) -> Result<Finished, String> {
    Ok(Finished {
        nbytes,
        on_device: false,
    })
}

fn finished(t: u64, nbytes: u64, duration_us: u64) -> Instruction {
    Instruction::Finished {
        task: TaskId(t),
        nbytes,
        duration_us,
        with_value: false,
        run: 0,
        fetch_us: 0,
    }
}

#[test]
fn runs_by_priority_up_to_nthreads() {
    let mut w = WorkerCore::new(2);
    w.on_compute_batch([
        (TaskId(1), 5, vec![]),
        (TaskId(2), 1, vec![]),
        (TaskId(3), 0, vec![]),
    ]);
    assert_eq!(
        w.take(),
        vec![
            Instruction::Execute {
                task: TaskId(3),
                inline: false
            },
            Instruction::Execute {
                task: TaskId(2),
                inline: false
            }
        ]
    );
    w.on_executed(TaskId(3), 3, done(8));
    let out = w.take();
    assert!(matches!(&out[0], Instruction::Finished { task, .. } if *task == TaskId(3)));
    assert_eq!(
        out[1],
        Instruction::Execute {
            task: TaskId(1),
            inline: false
        }
    );
}

#[test]
fn paused_no_task_starts_and_running_ones_finish_then_resuming_starts_them() {
    let mut w = WorkerCore::new(1);
    w.on_compute_batch([(TaskId(1), 0, vec![]), (TaskId(2), 1, vec![])]);
    assert_eq!(
        w.take(),
        vec![Instruction::Execute {
            task: TaskId(1),
            inline: false
        }]
    );
    assert!(!w.paused());
    w.set_paused(true);
    assert!(w.paused());
    w.on_compute_batch([(TaskId(3), 2, vec![])]);
    w.on_executed(TaskId(1), 3, done(8));
    let out = w.take();
    assert_eq!(out.len(), 1, "only the finished task is reported: {out:?}");
    assert!(matches!(&out[0], Instruction::Finished { task, .. } if *task == TaskId(1)));
    assert_eq!(w.executing(), 0);
    w.set_paused(false);
    assert!(!w.paused());
    assert_eq!(
        w.take(),
        vec![Instruction::Execute {
            task: TaskId(2),
            inline: false
        }]
    );
}

#[test]
fn fetches_batched_per_peer_and_discards_inputs_after_use() {
    let mut w = WorkerCore::new(1);
    w.on_compute(
        TaskId(10),
        0,
        vec![dep(1, &[7]), dep(2, &[7]), dep(3, &[8])],
    );
    assert_eq!(
        w.take(),
        vec![
            Instruction::Fetch {
                from: WorkerId(7),
                tasks: vec![TaskId(1), TaskId(2)]
            },
            Instruction::Fetch {
                from: WorkerId(8),
                tasks: vec![TaskId(3)]
            },
        ]
    );
    w.on_fetched(WorkerId(7), &[TaskId(1), TaskId(2)], &[]);
    assert_eq!(w.take(), vec![]);
    w.on_fetched(WorkerId(8), &[TaskId(3)], &[]);
    assert_eq!(
        w.take(),
        vec![Instruction::Execute {
            task: TaskId(10),
            inline: false
        }]
    );
    w.on_executed(TaskId(10), 1, done(8));
    let out = w.take();
    for t in [1, 2, 3] {
        assert!(
            out.contains(&Instruction::Discard { task: TaskId(t) }),
            "{out:?}"
        );
    }
    assert!(w.has_data(TaskId(10)));
    w.on_free(TaskId(10));
    assert_eq!(w.take(), vec![Instruction::Discard { task: TaskId(10) }]);
}

#[test]
fn failed_fetch_tries_next_holder_then_reports_missing() {
    let mut w = WorkerCore::new(1);
    w.on_compute(TaskId(10), 0, vec![dep(1, &[7, 8])]);
    w.take();
    w.on_fetch_failed(WorkerId(7), &[TaskId(1)]);
    assert_eq!(
        w.take(),
        vec![Instruction::Fetch {
            from: WorkerId(8),
            tasks: vec![TaskId(1)]
        }]
    );
    w.on_fetched(WorkerId(8), &[], &[TaskId(1)]);
    let out = w.take();
    assert_eq!(
        out[0],
        Instruction::Send(ToScheduler::MissingData {
            task: TaskId(10),
            dep: TaskId(1),
            holder: WorkerId(8)
        })
    );
    assert_eq!(w.assigned(), 0);
}

#[test]
fn cancelled_while_executing_discards_the_result() {
    let mut w = WorkerCore::new(1);
    w.on_compute(TaskId(1), 0, vec![]);
    w.take();
    w.on_free(TaskId(1));
    assert_eq!(w.take(), vec![]);
    w.on_executed(TaskId(1), 1, done(8));
    assert_eq!(w.take(), vec![Instruction::Discard { task: TaskId(1) }]);
    assert!(!w.has_data(TaskId(1)));
}

#[test]
fn a_task_sent_ahead_waits_for_its_local_input() {
    let mut w = WorkerCore::new(1);
    w.on_compute_batch([(TaskId(1), 0, vec![]), (TaskId(2), 1, vec![dep(1, &[])])]);
    assert_eq!(
        w.take(),
        vec![Instruction::Execute {
            task: TaskId(1),
            inline: false
        }]
    );
    w.on_executed(TaskId(1), 1, done(8));
    let out = w.take();
    assert!(matches!(&out[0], Instruction::Finished { task, .. } if *task == TaskId(1)));
    assert_eq!(
        out[1],
        Instruction::Execute {
            task: TaskId(2),
            inline: false
        }
    );
    // If the input fails, the waiter stays until the scheduler frees it.
    w.on_compute_batch([(TaskId(3), 0, vec![]), (TaskId(4), 1, vec![dep(3, &[])])]);
    w.take();
    w.on_executed(TaskId(2), 1, done(8));
    w.take();
    w.on_executed(TaskId(3), 0, Err("boom".into()));
    assert!(!w.take().contains(&Instruction::Execute {
        task: TaskId(4),
        inline: false
    }));
    w.on_free(TaskId(4));
    assert_eq!(w.take(), vec![Instruction::Drop { task: TaskId(4) }]);
    assert_eq!(w.assigned(), 0);
}

#[test]
fn a_task_with_two_local_inputs_starts_only_after_both_are_done() {
    let mut w = WorkerCore::new(2);
    w.on_compute_batch([
        (TaskId(1), 0, vec![]),
        (TaskId(2), 1, vec![]),
        (TaskId(3), 2, vec![dep(1, &[]), dep(2, &[])]),
    ]);
    assert_eq!(
        w.take(),
        vec![
            Instruction::Execute {
                task: TaskId(1),
                inline: false
            },
            Instruction::Execute {
                task: TaskId(2),
                inline: false
            }
        ]
    );
    w.on_executed(TaskId(1), 1, done(8));
    assert_eq!(w.take(), vec![finished(1, 8, 1)]);
    assert_eq!(w.executing(), 1);
    w.on_executed(TaskId(2), 1, done(8));
    assert_eq!(
        w.take(),
        vec![
            finished(2, 8, 1),
            Instruction::Execute {
                task: TaskId(3),
                inline: false
            }
        ]
    );
}

#[test]
fn freeing_one_of_two_tasks_waiting_on_a_fetch_leaves_the_other_waiting() {
    let mut w = WorkerCore::new(1);
    w.on_compute_batch([
        (TaskId(10), 0, vec![dep(1, &[7])]),
        (TaskId(11), 1, vec![dep(1, &[7])]),
    ]);
    assert_eq!(
        w.take(),
        vec![Instruction::Fetch {
            from: WorkerId(7),
            tasks: vec![TaskId(1)]
        }]
    );
    w.on_free(TaskId(10));
    assert_eq!(w.take(), vec![Instruction::Drop { task: TaskId(10) }]);
    w.on_fetched(WorkerId(7), &[TaskId(1)], &[]);
    assert_eq!(
        w.take(),
        vec![Instruction::Execute {
            task: TaskId(11),
            inline: false
        }]
    );
    assert!(w.has_data(TaskId(1)));
    w.on_executed(TaskId(11), 1, done(8));
    assert_eq!(
        w.take(),
        vec![Instruction::Discard { task: TaskId(1) }, finished(11, 8, 1)]
    );
    assert!(!w.has_data(TaskId(1)));
}

#[test]
fn freeing_one_of_two_tasks_waiting_on_a_local_input_leaves_the_other_waiting() {
    let mut w = WorkerCore::new(1);
    w.on_compute_batch([
        (TaskId(1), 0, vec![]),
        (TaskId(2), 1, vec![dep(1, &[])]),
        (TaskId(3), 2, vec![dep(1, &[])]),
    ]);
    assert_eq!(
        w.take(),
        vec![Instruction::Execute {
            task: TaskId(1),
            inline: false
        }]
    );
    w.on_free(TaskId(2));
    assert_eq!(w.take(), vec![Instruction::Drop { task: TaskId(2) }]);
    w.on_executed(TaskId(1), 1, done(8));
    assert_eq!(
        w.take(),
        vec![
            finished(1, 8, 1),
            Instruction::Execute {
                task: TaskId(3),
                inline: false
            }
        ]
    );
    assert_eq!(w.assigned(), 1);
}

#[test]
fn a_task_assigned_again_while_running_or_after_it_finished_is_ignored() {
    let mut w = WorkerCore::new(2);
    w.on_compute(TaskId(1), 0, vec![]);
    assert_eq!(
        w.take(),
        vec![Instruction::Execute {
            task: TaskId(1),
            inline: false
        }]
    );
    w.on_compute(TaskId(1), 0, vec![]);
    assert_eq!(w.take(), vec![]);
    assert_eq!((w.assigned(), w.executing(), w.owned()), (1, 1, 0));
    w.on_executed(TaskId(1), 1, done(8));
    assert_eq!(w.take(), vec![finished(1, 8, 1)]);
    assert_eq!((w.assigned(), w.executing(), w.owned()), (0, 0, 1));
    w.on_compute(TaskId(1), 0, vec![]);
    assert_eq!(w.take(), vec![]);
    assert_eq!((w.assigned(), w.executing(), w.owned()), (0, 0, 1));
}

#[test]
fn errors_are_reported() {
    let mut w = WorkerCore::new(1);
    w.on_compute(TaskId(1), 0, vec![]);
    w.take();
    w.on_executed(TaskId(1), 0, Err("boom".into()));
    assert_eq!(
        w.take(),
        vec![Instruction::Send(ToScheduler::TaskErred(
            rask_proto::msg::TaskErredMsg {
                task: TaskId(1),
                message: "boom".into(),
                run: 0,
            }
        ))]
    );
}

mod props;
mod refused;
mod rejoin;
mod replicas;
mod reports;
mod runs;
mod stale;
mod validate;

/// Found by fuzzing (the worker_core target): a task waiting on an input that runs here
/// while a copy of that input is also being fetched, freed, then assigned again, waits
/// once, not twice: freeing it used to leave its first wait behind, and the input's
/// completion then counted it down twice (an overflow).
#[test]
fn a_task_freed_and_assigned_again_while_its_local_input_is_also_fetched_waits_once() {
    let mut w = WorkerCore::new(2);
    // Task 1 needs 13 from worker 2: a fetch of 13 starts.
    w.on_compute(TaskId(1), 0, vec![dep(13, &[2])]);
    assert_eq!(
        w.take(),
        vec![Instruction::Fetch {
            from: WorkerId(2),
            tasks: vec![TaskId(13)]
        }]
    );
    // Then 13 itself is assigned here (recomputed), and runs.
    w.on_compute(TaskId(13), 0, vec![]);
    assert_eq!(
        w.take(),
        vec![Instruction::Execute {
            task: TaskId(13),
            inline: false
        }]
    );
    // Task 5 waits for 13 here; it is freed and assigned again.
    w.on_compute(TaskId(5), 1, vec![dep(13, &[2])]);
    w.on_free(TaskId(5));
    w.on_compute(TaskId(5), 1, vec![dep(13, &[2])]);
    w.take();
    w.on_executed(TaskId(13), 10, done(8));
    // Both readers of 13 run: 1, whose copy of it was being fetched, and 5.
    let out = w.take();
    for t in [1, 5] {
        assert!(
            out.contains(&Instruction::Execute {
                task: TaskId(t),
                inline: false
            }),
            "{out:?}"
        );
    }
}
