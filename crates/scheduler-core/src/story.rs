//! A bounded log of transitions, so that `story(key)` can replay one task's history
//! (also after the task was forgotten, while the log still holds its entries).

use std::collections::VecDeque;
use std::sync::Arc;

use rask_proto::{StimulusId, TaskId, WorkerId};

use crate::api::TaskFailure;
use crate::TaskState;

/// One recorded transition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The task.
    pub task: TaskId,
    /// Its key.
    pub key: Arc<str>,
    /// Its state before.
    pub from: TaskState,
    /// Its state after.
    pub to: TaskState,
    /// The external input that caused it.
    pub stimulus: StimulusId,
    /// What that input was ([`Why::name`]: `update-graph`, `task-finished`,
    /// `worker-lost`, …).
    pub why: &'static str,
    /// The worker concerned: the one running it (to `processing`), holding it (to
    /// `memory`), or the one the input came from.
    pub worker: Option<WorkerId>,
    /// When, on the scheduler's clock ([`SchedulerCore::set_now`](crate::SchedulerCore::set_now)).
    pub time_us: u64,
    /// Into `erred`: why it failed.
    pub error: Option<Arc<TaskFailure>>,
}

/// What caused a transition: the kind of the external input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// No input yet.
    Start,
    /// A client connected.
    ClientJoined,
    /// A client disconnected.
    ClientLeft,
    /// A worker joined.
    WorkerJoined,
    /// A worker left or died.
    WorkerLost,
    /// A client submitted a graph.
    UpdateGraph,
    /// A client released keys.
    ReleaseKeys,
    /// A worker finished a task.
    TaskFinished,
    /// A worker reported a task's failure.
    TaskErred,
    /// A program's code could not be started anywhere.
    CodeFailed,
    /// A worker could not fetch a dependency.
    MissingData,
    /// A client asked to retire workers.
    RetireWorkers,
    /// A worker asked to retire.
    CloseGracefully,
    /// A worker took copies of values.
    ReplicasAcquired,
    /// A worker could not take a copy of a value.
    ReplicaMissing,
    /// A worker (back after a partition or a scheduler restart) told what it holds.
    WorkerHolds,
    /// The scheduler was restored from its journal.
    Restored,
    /// A worker answered a steal.
    Stolen,
}

impl Why {
    /// The input's name, as the story shows it (`task-finished`, …).
    pub fn name(self) -> &'static str {
        match self {
            Why::Start => "start",
            Why::ClientJoined => "client-joined",
            Why::ClientLeft => "client-left",
            Why::WorkerJoined => "worker-joined",
            Why::WorkerLost => "worker-lost",
            Why::WorkerHolds => "worker-holds",
            Why::Restored => "restored",
            Why::UpdateGraph => "update-graph",
            Why::ReleaseKeys => "release-keys",
            Why::TaskFinished => "task-finished",
            Why::TaskErred => "task-erred",
            Why::CodeFailed => "code-failed",
            Why::MissingData => "missing-data",
            Why::RetireWorkers => "retire-workers",
            Why::CloseGracefully => "close-gracefully",
            Why::ReplicasAcquired => "replicas-acquired",
            Why::ReplicaMissing => "replica-missing",
            Why::Stolen => "stolen",
        }
    }
}

/// One transition as the log keeps it: small and without references (32 bytes), since
/// the log takes one per transition; keys and errors are found when a story is asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) task: TaskId,
    pub(crate) stimulus: StimulusId,
    pub(crate) time_us: u64,
    /// `NO_WORKER` for none.
    pub(crate) worker: u32,
    pub(crate) from: TaskState,
    pub(crate) to: TaskState,
    pub(crate) why: Why,
}

const NO_WORKER: u32 = u32::MAX;

const _: () = assert!(std::mem::size_of::<Entry>() <= 32);

impl Entry {
    pub(crate) fn new(
        task: TaskId,
        from: TaskState,
        to: TaskState,
        stimulus: StimulusId,
        why: Why,
        worker: Option<WorkerId>,
        time_us: u64,
    ) -> Self {
        Entry {
            task,
            stimulus,
            time_us,
            worker: worker.map_or(NO_WORKER, |w| w.0),
            from,
            to,
            why,
        }
    }
}

/// A forgotten task's key and error, kept so that its story can still be told.
#[derive(Debug)]
struct Forgotten {
    task: TaskId,
    key: Arc<str>,
    error: Option<Arc<TaskFailure>>,
}

/// A ring buffer of the most recent transitions, and of the keys of the tasks forgotten
/// most recently (as many: each forgotten task has at least one transition).
#[derive(Debug)]
pub struct TransitionLog {
    entries: VecDeque<Entry>,
    forgotten: VecDeque<Forgotten>,
    capacity: usize,
}

/// A task the core still holds, for [`TransitionLog::story`].
pub(crate) struct Live<'a> {
    pub(crate) task: TaskId,
    pub(crate) key: &'a Arc<str>,
    pub(crate) error: Option<&'a Arc<TaskFailure>>,
}

impl TransitionLog {
    /// A log keeping the last `capacity` transitions (0 disables it).
    pub fn new(capacity: usize) -> Self {
        // Reserved whole (pages are touched only as the log fills): growing by doubling
        // would copy it while tasks run.
        let reserve = capacity.min(1 << 20);
        TransitionLog {
            entries: VecDeque::with_capacity(reserve),
            forgotten: VecDeque::with_capacity(reserve),
            capacity,
        }
    }

    /// Whether it keeps anything (a capacity above 0).
    pub fn enabled(&self) -> bool {
        self.capacity > 0
    }

    pub(crate) fn record(&mut self, e: Entry) {
        if self.capacity == 0 {
            return;
        }
        if self.entries.len() == self.capacity {
            self.entries.pop_front();
        }
        self.entries.push_back(e);
    }

    /// A task was forgotten: its key (and error) are kept for its story.
    pub(crate) fn forget(&mut self, task: TaskId, key: Arc<str>, error: Option<Arc<TaskFailure>>) {
        if self.capacity == 0 {
            return;
        }
        if self.forgotten.len() == self.capacity {
            self.forgotten.pop_front();
        }
        self.forgotten.push_back(Forgotten { task, key, error });
    }

    /// The recorded transitions of one key, oldest first: of the tasks of that key
    /// forgotten (a key submitted again after it was forgotten), and of `live`, the task
    /// the core holds for it now.
    pub(crate) fn story(&self, key: &str, live: Option<Live>) -> Vec<Transition> {
        let mut tasks: Vec<(TaskId, Arc<str>, Option<Arc<TaskFailure>>)> = self
            .forgotten
            .iter()
            .filter(|f| *f.key == *key)
            .map(|f| (f.task, f.key.clone(), f.error.clone()))
            .collect();
        if let Some(l) = live {
            tasks.push((l.task, l.key.clone(), l.error.cloned()));
        }
        if tasks.is_empty() {
            return Vec::new();
        }
        self.entries
            .iter()
            .filter_map(|e| {
                let (_, key, error) = tasks.iter().find(|(t, _, _)| *t == e.task)?;
                Some(Transition {
                    task: e.task,
                    key: key.clone(),
                    from: e.from,
                    to: e.to,
                    stimulus: e.stimulus,
                    why: e.why.name(),
                    worker: (e.worker != NO_WORKER).then_some(WorkerId(e.worker)),
                    time_us: e.time_us,
                    error: if e.to == TaskState::Erred {
                        error.clone()
                    } else {
                        None
                    },
                })
            })
            .collect()
    }

    /// Number of transitions held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Number of forgotten tasks whose keys are held (at most the capacity).
    pub fn forgotten_len(&self) -> usize {
        self.forgotten.len()
    }

    /// Whether the log holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(task: u64, stimulus: u64, to: TaskState) -> Entry {
        Entry::new(
            TaskId(task),
            TaskState::Released,
            to,
            StimulusId(stimulus),
            Why::UpdateGraph,
            task.is_multiple_of(2).then_some(WorkerId(task as u32)),
            stimulus * 10,
        )
    }

    fn key(k: &str) -> Arc<str> {
        k.into()
    }

    fn live<'a>(
        task: u64,
        key: &'a Arc<str>,
        error: Option<&'a Arc<TaskFailure>>,
    ) -> Option<Live<'a>> {
        Some(Live {
            task: TaskId(task),
            key,
            error,
        })
    }

    fn stims(v: &[Transition]) -> Vec<u64> {
        v.iter().map(|t| t.stimulus.0).collect()
    }

    #[test]
    fn keeps_the_last_capacity_transitions() {
        let mut log = TransitionLog::new(2);
        assert!(log.is_empty() && log.enabled());
        log.record(e(1, 1, TaskState::Waiting));
        assert_eq!((log.len(), log.is_empty()), (1, false));
        log.record(e(2, 2, TaskState::Waiting));
        log.record(e(1, 3, TaskState::Waiting));
        assert_eq!(log.len(), 2);
        let k1 = key("k1");
        let k2 = key("k2");
        let one = log.story("k1", live(1, &k1, None));
        assert_eq!(stims(&one), vec![3]);
        assert_eq!(
            one[0],
            Transition {
                task: TaskId(1),
                key: k1.clone(),
                from: TaskState::Released,
                to: TaskState::Waiting,
                stimulus: StimulusId(3),
                why: "update-graph",
                worker: None,
                time_us: 30,
                error: None,
            }
        );
        let two = log.story("k2", live(2, &k2, None));
        assert_eq!((stims(&two), two[0].worker), (vec![2], Some(WorkerId(2))));
        assert_eq!(log.story("k1", None), vec![]);
    }

    #[test]
    fn forgotten_tasks_keep_their_keys_and_errors_within_the_capacity() {
        let mut log = TransitionLog::new(3);
        let boom = Arc::new(TaskFailure {
            key: "a".into(),
            op: "div".into(),
            message: "zero".into(),
        });
        log.record(e(1, 1, TaskState::Erred));
        log.record(e(1, 2, TaskState::Forgotten));
        log.forget(TaskId(1), key("a"), Some(boom.clone()));
        // The key submitted again: another task, held now.
        let a = key("a");
        log.record(e(3, 3, TaskState::Waiting));
        let story = log.story("a", live(3, &a, None));
        assert_eq!(stims(&story), vec![1, 2, 3]);
        assert_eq!(story[0].error, Some(boom.clone()));
        assert_eq!(
            (story[1].error.clone(), story[2].error.clone()),
            (None, None)
        );
        assert_eq!(story[2].task, TaskId(3));
        assert_eq!(log.forgotten_len(), 1);
        for t in 10..14 {
            log.forget(TaskId(t), key("other"), None);
            assert!(log.forgotten_len() <= 3);
        }
        assert_eq!(log.forgotten_len(), 3);
        assert_eq!(log.story("a", None), vec![]);
    }

    #[test]
    fn an_erred_live_task_shows_its_error_on_the_transition_into_erred() {
        let mut log = TransitionLog::new(4);
        let boom = Arc::new(TaskFailure {
            key: "b".into(),
            op: "fail".into(),
            message: "no".into(),
        });
        log.record(e(4, 1, TaskState::Waiting));
        log.record(e(4, 2, TaskState::Erred));
        let b = key("b");
        let story = log.story("b", live(4, &b, Some(&boom)));
        let errors: Vec<bool> = story.iter().map(|t| t.error.is_some()).collect();
        assert_eq!(errors, vec![false, true]);
    }

    #[test]
    fn a_capacity_of_zero_keeps_nothing() {
        let mut log = TransitionLog::new(0);
        assert!(!log.enabled());
        log.record(e(1, 1, TaskState::Waiting));
        log.forget(TaskId(1), key("k1"), None);
        assert!(log.is_empty());
        assert_eq!((log.len(), log.forgotten_len()), (0, 0));
        assert_eq!(log.story("k1", None), vec![]);
    }

    #[test]
    fn every_why_has_its_name() {
        let all = [
            Why::Start,
            Why::ClientJoined,
            Why::ClientLeft,
            Why::WorkerJoined,
            Why::WorkerLost,
            Why::UpdateGraph,
            Why::ReleaseKeys,
            Why::TaskFinished,
            Why::TaskErred,
            Why::CodeFailed,
            Why::MissingData,
            Why::RetireWorkers,
            Why::CloseGracefully,
            Why::ReplicasAcquired,
            Why::ReplicaMissing,
            Why::Stolen,
        ];
        let names: Vec<&str> = all.iter().map(|w| w.name()).collect();
        assert_eq!(
            names,
            vec![
                "start",
                "client-joined",
                "client-left",
                "worker-joined",
                "worker-lost",
                "update-graph",
                "release-keys",
                "task-finished",
                "task-erred",
                "code-failed",
                "missing-data",
                "retire-workers",
                "close-gracefully",
                "replicas-acquired",
                "replica-missing",
                "stolen",
            ]
        );
    }
}
