//! Unit and property tests of the worker's bookkeeping.

use super::*;

fn dep(t: u64, holders: &[u32]) -> DepLoc {
    DepLoc {
        task: TaskId(t),
        nbytes: 8,
        holders: holders.iter().map(|h| WorkerId(*h)).collect(),
    }
}

fn finished(t: u64, nbytes: u64, duration_us: u64) -> Instruction {
    Instruction::Finished {
        task: TaskId(t),
        nbytes,
        duration_us,
        with_value: false,
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
    w.on_executed(
        TaskId(3),
        3,
        Ok(Finished {
            nbytes: 8,
            on_device: false,
        }),
    );
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
    w.on_executed(
        TaskId(1),
        3,
        Ok(Finished {
            nbytes: 8,
            on_device: false,
        }),
    );
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
    w.on_executed(
        TaskId(10),
        1,
        Ok(Finished {
            nbytes: 8,
            on_device: false,
        }),
    );
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
    w.on_executed(
        TaskId(1),
        1,
        Ok(Finished {
            nbytes: 8,
            on_device: false,
        }),
    );
    assert_eq!(w.take(), vec![Instruction::Discard { task: TaskId(1) }]);
    assert!(!w.has_data(TaskId(1)));
}

#[test]
fn freed_while_executing_then_assigned_again_the_run_in_progress_counts() {
    let mut w = WorkerCore::new(1);
    w.on_compute(TaskId(1), 0, vec![]);
    w.take();
    // The scheduler frees it and assigns it here again (it lost another worker): the
    // run in progress is kept, the second spec dropped, and the result reported.
    w.on_free(TaskId(1));
    w.on_compute(TaskId(1), 0, vec![]);
    assert_eq!(w.take(), vec![Instruction::Drop { task: TaskId(1) }]);
    w.on_executed(
        TaskId(1),
        1,
        Ok(Finished {
            nbytes: 8,
            on_device: false,
        }),
    );
    assert_eq!(
        w.take(),
        vec![Instruction::Finished {
            task: TaskId(1),
            nbytes: 8,
            duration_us: 1,
            with_value: false
        }]
    );
    assert!(w.has_data(TaskId(1)));
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
    w.on_executed(
        TaskId(1),
        1,
        Ok(Finished {
            nbytes: 8,
            on_device: false,
        }),
    );
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
    w.on_executed(
        TaskId(2),
        1,
        Ok(Finished {
            nbytes: 8,
            on_device: false,
        }),
    );
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
    w.on_executed(
        TaskId(1),
        1,
        Ok(Finished {
            nbytes: 8,
            on_device: false,
        }),
    );
    assert_eq!(w.take(), vec![finished(1, 8, 1)]);
    assert_eq!(w.executing(), 1);
    w.on_executed(
        TaskId(2),
        1,
        Ok(Finished {
            nbytes: 8,
            on_device: false,
        }),
    );
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
    w.on_executed(
        TaskId(11),
        1,
        Ok(Finished {
            nbytes: 8,
            on_device: false,
        }),
    );
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
    w.on_executed(
        TaskId(1),
        1,
        Ok(Finished {
            nbytes: 8,
            on_device: false,
        }),
    );
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
    w.on_executed(
        TaskId(1),
        1,
        Ok(Finished {
            nbytes: 8,
            on_device: false,
        }),
    );
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
    w.on_executed(
        TaskId(10),
        1,
        Ok(Finished {
            nbytes: 8,
            on_device: false,
        }),
    );
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
    w.on_executed(
        TaskId(1),
        1,
        Ok(Finished {
            nbytes: 8,
            on_device: false,
        }),
    );
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
                message: "boom".into()
            }
        ))]
    );
}

#[cfg(test)]
mod props {
    use std::collections::{HashMap, HashSet};

    use proptest::prelude::*;

    use super::*;

    /// A model of the worker server around the core: a store, fetches in flight, jobs
    /// running. Checks that the core never runs a task without its inputs, never runs more
    /// than `nthreads` at once, and never discards data a waiting task still needs.
    #[derive(Default)]
    struct Model {
        store: HashSet<TaskId>,
        inflight: Vec<(WorkerId, Vec<TaskId>)>,
        running: Vec<TaskId>,
        deps: HashMap<TaskId, Vec<TaskId>>,
        finished: HashSet<TaskId>,
        dropped: HashSet<TaskId>,
    }

    impl Model {
        fn apply(&mut self, core: &mut WorkerCore, nthreads: usize) -> Result<(), TestCaseError> {
            for i in core.take() {
                match i {
                    Instruction::Fetch { from, tasks } => self.inflight.push((from, tasks)),
                    Instruction::Execute { task, .. } => {
                        for d in &self.deps[&task] {
                            prop_assert!(
                                self.store.contains(d),
                                "task {task:?} runs without input {d:?}"
                            );
                        }
                        self.running.push(task);
                        prop_assert!(
                            self.running.len() <= nthreads,
                            "more than {nthreads} running"
                        );
                    }
                    Instruction::Finished { task, .. } => {
                        self.finished.insert(task);
                    }
                    Instruction::Send(ToScheduler::MissingData { task, .. }) => {
                        self.dropped.insert(task);
                    }
                    Instruction::Send(_) => {}
                    Instruction::Discard { task } => {
                        self.store.remove(&task);
                    }
                    Instruction::Drop { task } => {
                        self.dropped.insert(task);
                    }
                }
            }
            Ok(())
        }
    }

    proptest! {
        #[test]
        fn random_events_keep_the_worker_consistent(
            nthreads in 1usize..4,
            ops in proptest::collection::vec((0u8..6, 0u64..30, proptest::collection::vec(100u64..110, 0..3)), 1..200),
        ) {
            let mut core = WorkerCore::new(nthreads);
            let mut m = Model::default();
            for (kind, t, deps) in ops {
                let task = TaskId(t);
                match kind {
                    0 | 1 => {
                        if m.deps.contains_key(&task) { continue; }
                        let deps: Vec<TaskId> = deps.into_iter().map(TaskId).collect::<HashSet<_>>().into_iter().collect();
                        m.deps.insert(task, deps.clone());
                        let locs = deps.iter().map(|d| DepLoc { task: *d, nbytes: 8, holders: vec![WorkerId(1), WorkerId(2)] }).collect();
                        core.on_compute(task, t, locs);
                    }
                    2 => {
                        if let Some((from, tasks)) = m.inflight.pop() {
                            // The peer has the even-numbered inputs.
                            let (got, missing): (Vec<TaskId>, Vec<TaskId>) = tasks.iter().partition(|x| x.0 % 2 == 0);
                            for g in &got { m.store.insert(*g); }
                            core.on_fetched(from, &got, &missing);
                        }
                    }
                    3 => {
                        if let Some((from, tasks)) = m.inflight.pop() {
                            core.on_fetch_failed(from, &tasks);
                        }
                    }
                    4 => {
                        if !m.running.is_empty() {
                            let done = m.running.remove(t as usize % m.running.len());
                            m.store.insert(done);
                            core.on_executed(done, 1, Ok(Finished { nbytes: 8, on_device: false }));
                        }
                    }
                    _ => core.on_free(task),
                }
                m.apply(&mut core, nthreads)?;
                prop_assert_eq!(core.executing(), m.running.len());
            }
        }
    }
}

fn assigned(t: u64, op: &str, report_value: bool) -> Assigned<'_> {
    Assigned {
        task: TaskId(t),
        priority: t,
        deps: vec![],
        op,
        report_value,
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
            finished(2, 8, 500),
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
    w.on_executed(
        TaskId(2),
        4,
        Ok(Finished {
            nbytes: 16,
            on_device: false,
        }),
    );
    assert_eq!(
        w.take(),
        vec![
            Instruction::Finished {
                task: TaskId(1),
                nbytes: 8,
                duration_us: 3,
                with_value: true
            },
            Instruction::Finished {
                task: TaskId(2),
                nbytes: 16,
                duration_us: 4,
                with_value: false
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
    w.on_executed(
        TaskId(4),
        1,
        Ok(Finished {
            nbytes: 8,
            on_device: false,
        }),
    );
    assert_eq!(w.ran(), [1, 1]);
    assert_eq!(
        w.take(),
        vec![
            Instruction::Send(ToScheduler::TaskErred(rask_proto::msg::TaskErredMsg {
                task: TaskId(3),
                message: "boom".into()
            })),
            Instruction::Discard { task: TaskId(4) },
        ]
    );
}

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
    w.on_executed(
        TaskId(10),
        1,
        Ok(Finished {
            nbytes: 8,
            on_device: false,
        }),
    );
    assert_eq!(w.take(), vec![finished(10, 8, 1)]);
    assert!(w.has_data(TaskId(1)));
    w.on_free(TaskId(1));
    assert_eq!(w.take(), vec![Instruction::Discard { task: TaskId(1) }]);
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
    w.on_executed(
        TaskId(1),
        1,
        Ok(Finished {
            nbytes: 8,
            on_device: false,
        }),
    );
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
    w.on_executed(
        TaskId(10),
        1,
        Ok(Finished {
            nbytes: 8,
            on_device: false,
        }),
    );
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
    w.on_executed(
        TaskId(11),
        1,
        Ok(Finished {
            nbytes: 8,
            on_device: false,
        }),
    );
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
    w.on_fetched(WorkerId(7), &[TaskId(1), TaskId(2)], &[]);
    assert_eq!(
        w.take(),
        vec![Instruction::Discard { task: TaskId(1) }, acquired(&[2])]
    );
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
    w.on_executed(
        TaskId(10),
        1,
        Ok(Finished {
            nbytes: 8,
            on_device: false,
        }),
    );
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
