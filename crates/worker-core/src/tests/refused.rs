//! A task refused for an input no one holds: it leaves no fetch, and no hold on a local
//! or cached input, behind.

use super::*;

#[test]
fn a_task_refused_for_an_input_no_one_holds_leaves_no_fetch_behind() {
    let mut w = WorkerCore::new(1);
    w.on_compute(TaskId(10), 0, vec![dep(1, &[7]), dep(2, &[])]);
    assert_eq!(
        w.take(),
        vec![
            Instruction::Send(ToScheduler::MissingData {
                task: TaskId(10),
                dep: TaskId(2),
                holder: WorkerId(u32::MAX)
            }),
            Instruction::Drop { task: TaskId(10) }
        ]
    );
    assert_eq!(w.assigned(), 0);
    // The next task reading the first input fetches it.
    w.on_compute(TaskId(11), 0, vec![dep(1, &[7])]);
    assert_eq!(
        w.take(),
        vec![Instruction::Fetch {
            from: WorkerId(7),
            tasks: vec![TaskId(1)]
        }]
    );
    w.on_fetched(WorkerId(7), &[TaskId(1)], &[]);
    assert_eq!(
        w.take(),
        vec![Instruction::Execute {
            task: TaskId(11),
            inline: false
        }]
    );
}

#[test]
fn a_task_refused_for_an_input_no_one_holds_takes_no_hold_on_a_local_input() {
    let mut w = WorkerCore::new(1);
    w.on_compute(TaskId(1), 0, vec![]);
    assert_eq!(
        w.take(),
        vec![Instruction::Execute {
            task: TaskId(1),
            inline: false
        }]
    );
    w.on_compute(TaskId(10), 1, vec![dep(1, &[]), dep(2, &[])]);
    assert_eq!(
        w.take(),
        vec![
            Instruction::Send(ToScheduler::MissingData {
                task: TaskId(10),
                dep: TaskId(2),
                holder: WorkerId(u32::MAX)
            }),
            Instruction::Drop { task: TaskId(10) }
        ]
    );
    // Sent again once the input is recomputed elsewhere: it waits for both inputs.
    w.on_compute(TaskId(10), 1, vec![dep(1, &[]), dep(2, &[7])]);
    assert_eq!(
        w.take(),
        vec![Instruction::Fetch {
            from: WorkerId(7),
            tasks: vec![TaskId(2)]
        }]
    );
    w.on_executed(TaskId(1), 1, done(8));
    assert_eq!(w.take(), vec![finished(1, 8, 1)]);
    w.on_fetched(WorkerId(7), &[TaskId(2)], &[]);
    assert_eq!(
        w.take(),
        vec![Instruction::Execute {
            task: TaskId(10),
            inline: false
        }]
    );
}

#[test]
fn a_task_refused_for_an_input_no_one_holds_takes_no_hold_on_a_cached_input() {
    let mut w = WorkerCore::new(1);
    w.on_compute(TaskId(10), 0, vec![dep(1, &[7]), dep(2, &[8])]);
    w.take();
    w.on_fetched(WorkerId(7), &[TaskId(1)], &[]);
    assert_eq!(w.take(), vec![]);
    assert!(w.has_data(TaskId(1)));
    w.on_compute(TaskId(11), 1, vec![dep(1, &[7]), dep(3, &[])]);
    assert_eq!(
        w.take(),
        vec![
            Instruction::Send(ToScheduler::MissingData {
                task: TaskId(11),
                dep: TaskId(3),
                holder: WorkerId(u32::MAX)
            }),
            Instruction::Drop { task: TaskId(11) }
        ]
    );
    w.on_fetched(WorkerId(8), &[TaskId(2)], &[]);
    assert_eq!(
        w.take(),
        vec![Instruction::Execute {
            task: TaskId(10),
            inline: false
        }]
    );
    // Task 10 was the last reader of both inputs.
    w.on_executed(TaskId(10), 1, done(8));
    assert_eq!(
        w.take(),
        vec![
            Instruction::Discard { task: TaskId(1) },
            Instruction::Discard { task: TaskId(2) },
            finished(10, 8, 1)
        ]
    );
    assert!(!w.has_data(TaskId(1)));
}
