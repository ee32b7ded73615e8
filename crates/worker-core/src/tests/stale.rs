//! A fetch that outlives its reason: the value it asked for is computed here meanwhile
//! (the scheduler recomputes a lost input on this very worker), or arrives after the
//! value was computed here. Both were found by killing workers at random mid-graph.

use super::*;

fn ok() -> Result<Finished, String> {
    done(8)
}

fn dep(t: u64, holders: &[u32]) -> DepLoc {
    DepLoc {
        task: TaskId(t),
        nbytes: 8,
        holders: holders.iter().map(|h| WorkerId(*h)).collect(),
    }
}

#[test]
fn a_task_waiting_on_a_fetch_of_an_input_computed_here_meanwhile_runs() {
    let mut w = WorkerCore::new(1);
    // s reads x, held by worker 3: fetched.
    w.on_compute_batch([(TaskId(10), 1, vec![dep(1, &[3])])]);
    assert_eq!(
        w.take(),
        vec![Instruction::Fetch {
            from: WorkerId(3),
            tasks: vec![TaskId(1)]
        }]
    );
    // Worker 3 died: the scheduler frees s, and gives it back with x to be computed
    // here (x's compute comes after s's in the batch); the fetch is still out.
    w.on_free(TaskId(10));
    w.on_compute_batch([(TaskId(10), 1, vec![dep(1, &[])]), (TaskId(1), 0, vec![])]);
    let out = w.take();
    assert!(
        out.contains(&Instruction::Execute {
            task: TaskId(1),
            inline: false
        }),
        "{out:?}"
    );
    w.on_executed(TaskId(1), 5, ok());
    let out = w.take();
    assert!(
        out.contains(&Instruction::Execute {
            task: TaskId(10),
            inline: false
        }),
        "s waits forever on the fetch: {out:?}"
    );
}

#[test]
fn a_late_copy_of_a_value_computed_here_does_not_take_its_place() {
    let mut w = WorkerCore::new(1);
    w.on_compute_batch([(TaskId(10), 1, vec![dep(1, &[3])])]);
    w.take();
    w.on_free(TaskId(10));
    // x is computed here, then the old fetch's copy arrives.
    w.on_compute_batch([(TaskId(1), 0, vec![])]);
    w.take();
    w.on_executed(TaskId(1), 5, ok());
    w.take();
    assert!(!w.fetching(TaskId(1)), "nothing waits for the copy now");
    w.on_fetched(WorkerId(3), &[TaskId(1)], &[]);
    let out = w.take();
    assert!(
        !out.contains(&Instruction::Discard { task: TaskId(1) }),
        "the value computed here is dropped: {out:?}"
    );
    assert!(w.has_data(TaskId(1)));
    // A reader assigned now finds it here.
    w.on_compute_batch([(TaskId(11), 2, vec![dep(1, &[])])]);
    assert_eq!(
        w.take(),
        vec![Instruction::Execute {
            task: TaskId(11),
            inline: false
        }]
    );
}

#[test]
fn a_failed_fetch_of_an_input_now_computed_here_leaves_its_reader_waiting_here() {
    let mut w = WorkerCore::new(1);
    // s reads x from worker 3; worker 3 dies; s comes back before x's compute.
    w.on_compute_batch([(TaskId(10), 1, vec![dep(1, &[3])])]);
    w.take();
    w.on_free(TaskId(10));
    // x waits for y here, so it does not run at once.
    w.on_compute_batch([
        (TaskId(2), 0, vec![]),
        (TaskId(10), 3, vec![dep(1, &[])]),
        (TaskId(1), 2, vec![dep(2, &[])]),
    ]);
    w.take();
    // The old fetch fails: s is not reported missing nor dropped; it waits for x here.
    w.on_fetch_failed(WorkerId(3), &[TaskId(1)]);
    let out = w.take();
    assert!(
        !out.iter()
            .any(|i| matches!(i, Instruction::Send(_) | Instruction::Drop { .. })),
        "{out:?}"
    );
    w.on_executed(TaskId(2), 5, ok());
    w.take();
    w.on_executed(TaskId(1), 5, ok());
    let out = w.take();
    assert!(
        out.contains(&Instruction::Execute {
            task: TaskId(10),
            inline: false
        }),
        "{out:?}"
    );
}

/// A task sent ahead of its input, which is assigned here, freed before it ran (its own
/// input was lost elsewhere), and assigned here again: the task waits for the new run and
/// starts after it. It used to lose its wait with the freed input and never start, while
/// the scheduler counted it as processing here (the chaos test's hang).
#[test]
fn a_task_waiting_for_a_local_input_freed_and_assigned_again_starts_after_its_new_run() {
    let mut w = WorkerCore::new(1);
    // 5 holds the only thread; 1 waits its turn; 2 is sent ahead of 1.
    w.on_compute_batch([
        (TaskId(5), 0, vec![]),
        (TaskId(1), 1, vec![]),
        (TaskId(2), 2, vec![dep(1, &[])]),
    ]);
    w.take();
    w.on_free(TaskId(1));
    assert_eq!(w.take(), vec![Instruction::Drop { task: TaskId(1) }]);
    w.on_compute(TaskId(1), 1, vec![]);
    assert_eq!(w.take(), vec![]);
    for (t, next) in [(5, 1), (1, 2)] {
        w.on_executed(TaskId(t), 1, done(8));
        let out = w.take();
        assert!(
            out.contains(&Instruction::Execute {
                task: TaskId(next),
                inline: false
            }),
            "after {t}: {out:?}"
        );
    }
}
