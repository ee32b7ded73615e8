//! Runs: a task freed while it runs and given back runs again; its reports name the
//! assignment.

use super::*;

fn assign(w: &mut WorkerCore, t: u64, deps: Vec<DepLoc>, run: u32) {
    w.on_assigned([Assigned {
        task: TaskId(t),
        priority: t,
        deps,
        op: "",
        report_value: false,
        run,
    }]);
}

#[test]
fn freed_while_executing_then_assigned_again_runs_again_after_the_cancelled_run() {
    let mut w = WorkerCore::new(1);
    assign(&mut w, 1, vec![], 1);
    w.take();
    // The scheduler frees it and assigns it here again: the run in progress is not taken
    // for the new one (the scheduler may count its inputs as coming again), which runs
    // once it has ended, and reports run 2.
    w.on_free(TaskId(1));
    assign(&mut w, 1, vec![], 2);
    assert_eq!(w.take(), vec![]);
    let done = || done(8);
    w.on_executed(TaskId(1), 1, done());
    assert_eq!(
        w.take(),
        vec![
            Instruction::Discard { task: TaskId(1) },
            Instruction::Execute {
                task: TaskId(1),
                inline: false
            }
        ]
    );
    w.on_executed(TaskId(1), 1, done());
    assert_eq!(
        w.take(),
        vec![Instruction::Finished {
            task: TaskId(1),
            nbytes: 8,
            duration_us: 1,
            with_value: false,
            run: 2,
            fetch_us: 0,
        }]
    );
    assert!(w.has_data(TaskId(1)));
    // Freed again while running with a new assignment waiting: both go, the waiting
    // one's spec dropped.
    assign(&mut w, 3, vec![], 1);
    w.take();
    w.on_free(TaskId(3));
    assign(&mut w, 3, vec![], 2);
    w.on_free(TaskId(3));
    assert_eq!(w.take(), vec![Instruction::Drop { task: TaskId(3) }]);
    w.on_executed(TaskId(3), 1, done());
    assert_eq!(w.take(), vec![Instruction::Discard { task: TaskId(3) }]);
    assert_eq!(w.assigned(), 0);
}

/// The chaos test's stall: a task sent ahead of its input, freed while it ran and given
/// back with the input given out again. The old run (which had the old input) used to
/// count, its report reached the scheduler before the input's, was refused, and the
/// value dropped: the scheduler then waited on it for ever.
#[test]
fn a_resumed_task_waits_for_its_input_given_out_again() {
    let mut w = WorkerCore::new(1);
    assign(&mut w, 1, vec![], 1);
    assign(&mut w, 2, vec![dep(1, &[])], 1);
    w.take();
    let done = || done(8);
    w.on_executed(TaskId(1), 1, done());
    w.take(); // 1 finished, 2 runs
    w.on_free(TaskId(2));
    w.on_free(TaskId(1));
    assign(&mut w, 1, vec![], 2);
    assign(&mut w, 2, vec![dep(1, &[])], 2);
    w.take();
    w.on_executed(TaskId(2), 1, done());
    // The cancelled run of 2 is dropped; the new one waits for 1's new run.
    let out = w.take();
    assert!(
        !out.iter()
            .any(|i| matches!(i, Instruction::Finished { .. })),
        "{out:?}"
    );
    w.on_executed(TaskId(1), 1, done());
    w.take();
    w.on_executed(TaskId(2), 1, done());
    assert!(w.take().contains(&Instruction::Finished {
        task: TaskId(2),
        nbytes: 8,
        duration_us: 1,
        with_value: false,
        run: 2,
        fetch_us: 0,
    }));
}

/// Work stealing: a task that has not started is released (its spec dropped, as a freed
/// task's); one that runs, of another run, or that a task here waits for, is kept.
#[test]
fn a_steal_releases_only_a_task_that_has_not_started_and_no_one_here_waits_for() {
    let mut w = WorkerCore::new(1);
    assign(&mut w, 1, vec![], 1);
    assign(&mut w, 2, vec![], 1);
    assign(&mut w, 3, vec![dep(9, &[5])], 1);
    // 4 is sent ahead: it waits here for 2's value.
    assign(&mut w, 4, vec![dep(2, &[])], 1);
    w.take();
    assert!(!w.on_steal(TaskId(1), 1), "running");
    assert!(!w.on_steal(TaskId(2), 1), "4 waits here for it");
    assert!(!w.on_steal(TaskId(3), 2), "another run");
    assert!(!w.on_steal(TaskId(7), 1), "never here");
    assert!(w.on_steal(TaskId(3), 1), "fetching its input, not started");
    assert_eq!(w.take(), vec![Instruction::Drop { task: TaskId(3) }]);
    assert_eq!(w.assigned(), 3);
    // 4 is released too; then nothing waits for 2, which goes as well.
    assert!(w.on_steal(TaskId(4), 1));
    assert!(w.on_steal(TaskId(2), 1));
    assert_eq!(
        w.take(),
        vec![
            Instruction::Drop { task: TaskId(4) },
            Instruction::Drop { task: TaskId(2) }
        ]
    );
    assert_eq!(w.assigned(), 1);
}
