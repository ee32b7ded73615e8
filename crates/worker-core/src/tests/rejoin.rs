//! A worker joining again as a new member: nothing assigned stands, every value held is
//! reported.

use super::*;

fn ok(nbytes: u64) -> Result<Finished, String> {
    Ok(Finished {
        nbytes,
        on_device: false,
    })
}

#[test]
fn rejoining_drops_assignments_cancels_runs_and_reports_every_value_held() {
    let mut w = WorkerCore::new(1);
    // 1 runs and finishes (owned); 2 runs; 3 waits for 2; 4 needs 9, fetched from
    // worker 5; 6 needs 8, being fetched.
    w.on_compute_batch([(TaskId(1), 0, vec![])]);
    w.take();
    w.on_executed(TaskId(1), 3, ok(8));
    w.on_compute_batch([
        (TaskId(2), 1, vec![]),
        (
            TaskId(3),
            2,
            vec![DepLoc {
                task: TaskId(2),
                nbytes: 8,
                holders: vec![],
            }],
        ),
        (
            TaskId(4),
            3,
            vec![DepLoc {
                task: TaskId(9),
                nbytes: 8,
                holders: vec![WorkerId(5)],
            }],
        ),
        (
            TaskId(6),
            4,
            vec![DepLoc {
                task: TaskId(8),
                nbytes: 8,
                holders: vec![WorkerId(5)],
            }],
        ),
    ]);
    w.take();
    w.on_fetched(WorkerId(5), &[TaskId(9)], &[]);
    w.take();
    assert!(w.has_data(TaskId(9)));
    let held = w.on_rejoined();
    assert_eq!(
        held,
        vec![TaskId(1), TaskId(9)],
        "computed and fetched values alike"
    );
    let out = w.take();
    assert!(
        !out.iter().any(|i| matches!(i, Instruction::Discard { .. })),
        "no value held is dropped: {out:?}"
    );
    assert!(
        !out.iter().any(|i| matches!(i, Instruction::Execute { .. })),
        "nothing starts: {out:?}"
    );
    // The running task ends: its result is dropped, nothing reported, nothing starts.
    w.on_executed(TaskId(2), 3, ok(8));
    assert_eq!(w.take(), vec![Instruction::Discard { task: TaskId(2) }]);
    // The abandoned fetch's value arrives: not fetched any more, so not stored.
    assert!(!w.fetching(TaskId(8)));
    w.on_fetched(WorkerId(5), &[TaskId(8)], &[]);
    assert_eq!(w.take(), vec![]);
    assert_eq!((w.assigned(), w.executing()), (0, 0));
    // The scheduler drops one of the values reported; the other stays.
    w.on_free(TaskId(9));
    assert_eq!(w.take(), vec![Instruction::Discard { task: TaskId(9) }]);
    assert!(w.has_data(TaskId(1)) && !w.has_data(TaskId(9)));
    // New work runs as usual.
    w.on_compute_batch([(TaskId(20), 0, vec![])]);
    assert_eq!(
        w.take(),
        vec![Instruction::Execute {
            task: TaskId(20),
            inline: false
        }]
    );
}
