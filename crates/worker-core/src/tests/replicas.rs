//! Copies a retiring worker's values ask for: fetched, kept until freed, reported.

use super::*;

fn acquired(tasks: &[u64]) -> Instruction {
    Instruction::Send(ToScheduler::ReplicasAcquired {
        tasks: tasks.iter().map(|t| TaskId(*t)).collect(),
    })
}

fn fetch(from: u32, tasks: &[u64]) -> Instruction {
    Instruction::Fetch {
        from: WorkerId(from),
        tasks: tasks.iter().map(|t| TaskId(*t)).collect(),
    }
}

#[test]
fn copies_are_fetched_per_holder_kept_until_freed_and_reported() {
    let mut w = WorkerCore::new(1);
    w.on_acquire_replicas(vec![dep(1, &[7]), dep(2, &[8, 7]), dep(3, &[7])]);
    assert_eq!(w.take(), vec![fetch(7, &[1, 3]), fetch(8, &[2])]);
    w.on_fetched(WorkerId(7), &[TaskId(1), TaskId(3)], &[]);
    assert_eq!(w.take(), vec![acquired(&[1, 3])]);
    // Kept as owned data: no task reading it lets it go.
    assert_eq!(w.owned(), 2);
    w.on_compute(TaskId(10), 0, vec![dep(1, &[7])]);
    assert_eq!(
        w.take(),
        vec![Instruction::Execute {
            task: TaskId(10),
            inline: false
        }]
    );
    w.on_executed(TaskId(10), 1, done(8));
    assert_eq!(w.take(), vec![finished(10, 8, 1)]);
    assert!(w.has_data(TaskId(1)));
    w.on_free(TaskId(1));
    assert_eq!(w.take(), vec![Instruction::Discard { task: TaskId(1) }]);
    // A copy no task here read goes too.
    w.on_free(TaskId(3));
    assert_eq!(w.take(), vec![Instruction::Discard { task: TaskId(3) }]);
    assert!(!w.has_data(TaskId(3)));
    // The other holder is tried when the first has not got it; the last one tried is
    // named when none has.
    w.on_fetched(WorkerId(8), &[], &[TaskId(2)]);
    assert_eq!(w.take(), vec![fetch(7, &[2])]);
    w.on_fetch_failed(WorkerId(7), &[TaskId(2)]);
    assert_eq!(
        w.take(),
        vec![Instruction::Send(ToScheduler::ReplicaMissing {
            task: TaskId(2),
            holder: WorkerId(7)
        })]
    );
    assert!(!w.has_data(TaskId(2)));
}

#[test]
fn a_copy_of_a_value_already_here_or_on_its_way_is_not_fetched_again() {
    let mut w = WorkerCore::new(1);
    // 1 is an output of this worker, 2 an input it fetched for a task, 3 an input on its
    // way.
    w.on_compute(TaskId(1), 0, vec![]);
    w.take();
    w.on_executed(TaskId(1), 1, done(8));
    w.on_compute_batch([
        (TaskId(10), 0, vec![dep(2, &[7])]),
        (TaskId(11), 1, vec![dep(3, &[8])]),
    ]);
    w.take();
    w.on_fetched(WorkerId(7), &[TaskId(2)], &[]);
    assert_eq!(
        w.take(),
        vec![Instruction::Execute {
            task: TaskId(10),
            inline: false
        }]
    );
    w.on_acquire_replicas(vec![dep(1, &[9]), dep(2, &[9]), dep(3, &[9])]);
    assert_eq!(w.take(), vec![acquired(&[1, 2])]);
    // 2 stays once 10, which read it, is done.
    w.on_executed(TaskId(10), 1, done(8));
    assert_eq!(w.take(), vec![finished(10, 8, 1)]);
    assert!(w.has_data(TaskId(2)));
    // 3 arrives for 11 and is kept too.
    w.on_fetched(WorkerId(8), &[TaskId(3)], &[]);
    assert_eq!(
        w.take(),
        vec![
            acquired(&[3]),
            Instruction::Execute {
                task: TaskId(11),
                inline: false
            }
        ]
    );
    w.on_executed(TaskId(11), 1, done(8));
    assert_eq!(w.take(), vec![finished(11, 8, 1)]);
    assert!(w.has_data(TaskId(3)));
    assert_eq!(w.owned(), 5);
}

#[test]
fn a_copy_freed_on_its_way_is_dropped_when_it_comes() {
    let mut w = WorkerCore::new(1);
    w.on_acquire_replicas(vec![dep(1, &[7]), dep(2, &[7])]);
    w.take();
    w.on_free(TaskId(1));
    assert_eq!(w.take(), vec![]);
    // The copy of 1 is no longer fetched: the worker does not store it.
    assert!(!w.fetching(TaskId(1)) && w.fetching(TaskId(2)));
    w.on_fetched(WorkerId(7), &[TaskId(1), TaskId(2)], &[]);
    assert_eq!(w.take(), vec![acquired(&[2])]);
    assert!(!w.has_data(TaskId(1)));
    // A task reading a value whose copy was freed still gets it, and lets it go after.
    w.on_acquire_replicas(vec![dep(3, &[7])]);
    w.on_compute(TaskId(10), 0, vec![dep(3, &[7])]);
    assert_eq!(w.take(), vec![fetch(7, &[3])]);
    w.on_free(TaskId(3));
    w.on_fetched(WorkerId(7), &[TaskId(3)], &[]);
    assert_eq!(
        w.take(),
        vec![Instruction::Execute {
            task: TaskId(10),
            inline: false
        }]
    );
    w.on_executed(TaskId(10), 1, done(8));
    assert_eq!(
        w.take(),
        vec![Instruction::Discard { task: TaskId(3) }, finished(10, 8, 1)]
    );
}

#[test]
fn a_copy_with_no_holder_is_reported_missing_at_once() {
    let mut w = WorkerCore::new(1);
    w.on_acquire_replicas(vec![dep(1, &[])]);
    assert_eq!(
        w.take(),
        vec![Instruction::Send(ToScheduler::ReplicaMissing {
            task: TaskId(1),
            holder: WorkerId(u32::MAX)
        })]
    );
}
