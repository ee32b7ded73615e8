//! The bookkeeping check itself: each broken rule is named.

use super::*;

/// `validate` names each rule a broken core breaks (the core is broken by hand here: no
/// sequence of events should get it there).
#[test]
fn validate_names_each_broken_rule() {
    // 5 runs; 1 waits its turn; 2 waits for 1 here; 3 reads 9, fetched and cached.
    let good = || {
        let mut w = WorkerCore::new(1);
        w.on_compute_batch([
            (TaskId(5), 0, vec![]),
            (TaskId(1), 1, vec![]),
            (TaskId(2), 2, vec![dep(1, &[])]),
            (TaskId(3), 3, vec![dep(9, &[4])]),
        ]);
        w.on_fetched(WorkerId(4), &[TaskId(9)], &[]);
        w.take();
        w
    };
    assert_eq!(good().validate(), Ok(()));
    type Break = fn(&mut WorkerCore);
    let cases: [(Break, &str); 12] = [
        (
            |w| {
                w.local_waiters.remove(&TaskId(1));
                w.orphans.insert(TaskId(1), vec![TaskId(2)]);
            },
            "to be assigned here again, and it is",
        ),
        (
            |w| {
                w.ready.insert((2, TaskId(2)));
            },
            "is Fetching with 1 inputs missing (among the ready: true)",
        ),
        (
            |w| {
                w.local_waiters.remove(&TaskId(1));
                w.tasks.get_mut(&TaskId(2)).unwrap().missing = 0;
                w.owned.insert(TaskId(1));
            },
            "is Fetching with 0 inputs missing",
        ),
        (
            |w| {
                w.ready.insert((0, TaskId(5)));
            },
            "is Executing with 0 inputs missing (among the ready: true)",
        ),
        (
            |w| {
                w.tasks.remove(&TaskId(1));
            },
            "to run here, and no such task is here",
        ),
        (
            |w| {
                w.cached.remove(&TaskId(9));
            },
            "neither here nor waited for",
        ),
        (
            |w| w.local_waiters.get_mut(&TaskId(1)).unwrap().push(TaskId(2)),
            "waits 2 times",
        ),
        (
            |w| w.tasks.get_mut(&TaskId(2)).unwrap().missing = 2,
            "counts 2 inputs missing",
        ),
        (
            |w| {
                w.ready = Default::default();
            },
            "is Ready with 0 inputs missing",
        ),
        (
            |w| {
                let first = *w.ready.iter().next().unwrap();
                w.ready.tree.insert(first);
            },
            "in the ready list and tree both",
        ),
        (|w| w.executing = 0, "0 tasks run, 1 are running"),
        (
            |w| {
                w.cached.insert(TaskId(9), 3);
            },
            "cached by 3 tasks, and 1 read it",
        ),
    ];
    for (i, (broken, says)) in cases.into_iter().enumerate() {
        let mut w = good();
        broken(&mut w);
        let e = w.validate().expect_err("a broken core");
        assert!(e.contains(says), "case {i}: {e}");
    }
}
