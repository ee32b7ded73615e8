//! One simulated worker: the real worker core ([`WorkerCore`]) with the few things its
//! server adds — a data store, the compute requests' specs, the op itself — driven the
//! way the worker server's event loop drives it. It decides nothing of its own: what it
//! fetches, runs, reports and drops is the core's decision. Time, links and other
//! workers are the simulation's.

use rask_proto::msg::{ComputeMsg, DepLoc, ToScheduler};
use rask_proto::{Datum, TaskId, WorkerId};
use rask_worker_core::{Assigned, Finished, Instruction, WorkerCore};
use rustc_hash::FxHashMap;

use crate::rng::task_value;
use crate::SimError;

/// A message from the scheduler to a worker.
#[derive(Clone, Debug)]
pub(crate) enum ToWorkerMsg {
    Compute(ComputeMsg),
    Steal { task: TaskId, run: u32 },
    Free(TaskId),
    AcquireReplica(DepLoc),
    Close,
}

/// A message from a worker to the scheduler.
#[derive(Clone, Debug)]
pub(crate) enum ToSchedulerMsg {
    /// A task finished; `index` and `value` travel along for the accounting only (the
    /// scheduler core sees neither).
    Finished {
        task: TaskId,
        nbytes: u64,
        duration_us: u64,
        fetch_us: u64,
        run: u32,
        index: u32,
        value: u64,
    },
    Core(ToScheduler),
    StealResponse {
        task: TaskId,
        run: u32,
        released: bool,
    },
}

/// A stored value: the op's result, its nominal size, and the graph index of its task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stored {
    pub(crate) value: u64,
    pub(crate) nbytes: u64,
    pub(crate) index: u32,
}

/// An op started: it ends `duration_us` later with `result`.
pub(crate) struct Started {
    pub(crate) task: TaskId,
    pub(crate) duration_us: u64,
    pub(crate) result: Stored,
}

/// What one step of a worker asks of the world, in order of kind.
#[derive(Default)]
pub(crate) struct Effects {
    pub(crate) to_scheduler: Vec<ToSchedulerMsg>,
    pub(crate) fetches: Vec<(WorkerId, Vec<TaskId>)>,
    pub(crate) started: Vec<Started>,
}

/// Deliberate faults of a worker, to show that the checks catch them.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sabotage {
    /// The first report of this task (graph index) is never sent.
    pub drop_result_of: Option<u32>,
    /// The first run of this task (graph index) returns a wrong value.
    pub corrupt_result_of: Option<u32>,
}

pub(crate) struct SimWorker {
    pub(crate) id: WorkerId,
    pub(crate) core: WorkerCore,
    pub(crate) store: FxHashMap<TaskId, Stored>,
    specs: FxHashMap<TaskId, ComputeMsg>,
    /// Work per virtual microsecond: an op of nominal duration d runs d / speed.
    pub(crate) speed: f64,
    /// Its outgoing data link is busy sending until then (µs): transfers from it queue.
    pub(crate) sending_until: u64,
    /// Bytes it sent to peers.
    pub(crate) sent_bytes: u64,
}

impl SimWorker {
    pub(crate) fn new(id: WorkerId, nthreads: u32, speed: f64) -> Self {
        SimWorker {
            id,
            core: WorkerCore::new(nthreads as usize),
            store: FxHashMap::default(),
            specs: FxHashMap::default(),
            speed,
            sending_until: 0,
            sent_bytes: 0,
        }
    }

    /// A batch of messages from the scheduler, handled as the worker server does: the
    /// computes are handed to the core together, before any steal or free that follows
    /// them. `Ok(false)`: the scheduler closed the worker.
    pub(crate) fn on_batch(
        &mut self,
        msgs: Vec<ToWorkerMsg>,
        fx: &mut Effects,
        sabotage: &mut Sabotage,
    ) -> Result<bool, SimError> {
        let mut computes = Vec::new();
        for m in msgs {
            match m {
                ToWorkerMsg::Compute(c) => {
                    computes.push(c.task);
                    self.specs.insert(c.task, c);
                }
                ToWorkerMsg::Steal { task, run } => {
                    self.assign(&mut computes);
                    let released = self.core.on_steal(task, run);
                    fx.to_scheduler.push(ToSchedulerMsg::StealResponse {
                        task,
                        run,
                        released,
                    });
                    self.drive(fx, sabotage)?;
                }
                ToWorkerMsg::Free(t) => {
                    self.assign(&mut computes);
                    self.core.on_free(t);
                    self.drive(fx, sabotage)?;
                }
                ToWorkerMsg::AcquireReplica(dep) => self.core.on_acquire_replicas(vec![dep]),
                ToWorkerMsg::Close => return Ok(false),
            }
        }
        self.assign(&mut computes);
        self.drive(fx, sabotage)?;
        Ok(true)
    }

    fn assign(&mut self, tasks: &mut Vec<TaskId>) {
        if tasks.is_empty() {
            return;
        }
        let specs = &self.specs;
        self.core.on_assigned(
            tasks
                .drain(..)
                .filter_map(|t| specs.get(&t).map(Assigned::of)),
        );
    }

    /// An op ended: its result goes into the store, then the core hears of it.
    pub(crate) fn on_executed(
        &mut self,
        s: Started,
        fx: &mut Effects,
        sabotage: &mut Sabotage,
    ) -> Result<(), SimError> {
        self.store.insert(s.task, s.result);
        let done = Finished {
            nbytes: s.result.nbytes,
            on_device: false,
        };
        self.core.on_executed(s.task, s.duration_us, Ok(done));
        self.drive(fx, sabotage)
    }

    /// A fetch from `from` came back with these values (and without `missing`): the
    /// copies the core still waits for are stored, as the server does.
    pub(crate) fn on_fetched(
        &mut self,
        from: WorkerId,
        values: Vec<(TaskId, Stored)>,
        missing: &[TaskId],
        fx: &mut Effects,
        sabotage: &mut Sabotage,
    ) -> Result<(), SimError> {
        let mut got = Vec::with_capacity(values.len());
        for (t, v) in values {
            if self.core.fetching(t) {
                self.store.insert(t, v);
                got.push(t);
            }
        }
        self.core.on_fetched(from, &got, missing);
        self.drive(fx, sabotage)
    }

    /// A fetch from `from` failed as a whole (the peer is gone).
    pub(crate) fn on_fetch_failed(
        &mut self,
        from: WorkerId,
        tasks: &[TaskId],
        fx: &mut Effects,
        sabotage: &mut Sabotage,
    ) -> Result<(), SimError> {
        self.core.on_fetch_failed(from, tasks);
        self.drive(fx, sabotage)
    }

    /// Carries out the core's instructions until it has none.
    fn drive(&mut self, fx: &mut Effects, sabotage: &mut Sabotage) -> Result<(), SimError> {
        loop {
            let out = self.core.take();
            if out.is_empty() {
                return Ok(());
            }
            for i in out {
                match i {
                    Instruction::Fetch { from, tasks } => fx.fetches.push((from, tasks)),
                    Instruction::Execute { task, .. } => {
                        let started = self.start(task, sabotage)?;
                        fx.started.push(started);
                    }
                    Instruction::Finished {
                        task,
                        nbytes,
                        duration_us,
                        run,
                        fetch_us,
                        ..
                    } => {
                        let stored = *self.store.get(&task).ok_or(SimError::Broken {
                            what: format!("{task} reported finished, not in the store"),
                        })?;
                        if sabotage.drop_result_of == Some(stored.index) {
                            sabotage.drop_result_of = None;
                            continue;
                        }
                        fx.to_scheduler.push(ToSchedulerMsg::Finished {
                            task,
                            nbytes,
                            duration_us,
                            fetch_us,
                            run,
                            index: stored.index,
                            value: stored.value,
                        });
                    }
                    Instruction::Send(m) => fx.to_scheduler.push(ToSchedulerMsg::Core(m)),
                    Instruction::Discard { task } => {
                        self.store.remove(&task);
                    }
                    Instruction::Drop { task } => {
                        self.specs.remove(&task);
                    }
                }
            }
        }
    }

    /// Starts a task's op: every input is in the store (the core's promise); the value
    /// is computed now, and the op takes its nominal duration over this worker's speed.
    fn start(&mut self, task: TaskId, sabotage: &mut Sabotage) -> Result<Started, SimError> {
        let spec = self.specs.remove(&task).ok_or(SimError::Broken {
            what: format!("{} told to run {task} without its compute request", self.id),
        })?;
        let args = spec.args.datum();
        let arg = |i: usize| match &*args {
            Datum::List(l) => match l.get(i) {
                Some(Datum::Int(x)) => Some(*x as u64),
                _ => None,
            },
            _ => None,
        };
        let (Some(index), Some(duration), Some(nbytes)) = (arg(0), arg(1), arg(2)) else {
            return Err(SimError::Broken {
                what: format!("{task} has malformed arguments {args:?}"),
            });
        };
        let mut inputs = Vec::with_capacity(spec.deps.len());
        for d in &spec.deps {
            let v = self.store.get(&d.task).ok_or(SimError::Broken {
                what: format!(
                    "{} runs {task} (index {index}) without its input {}",
                    self.id, d.task
                ),
            })?;
            inputs.push(v.value);
        }
        let mut value = task_value(index, inputs);
        if sabotage.corrupt_result_of == Some(index as u32) {
            sabotage.corrupt_result_of = None;
            value ^= 1;
        }
        Ok(Started {
            task,
            duration_us: ((duration as f64 / self.speed) as u64).max(1),
            result: Stored {
                value,
                nbytes,
                index: index as u32,
            },
        })
    }
}
