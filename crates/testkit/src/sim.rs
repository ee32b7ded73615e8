//! The simulated cluster: one scheduler core, one worker core per worker, a client that
//! submits a graph and waits for its keys, all driven by a virtual clock. Messages cross
//! links with latency and jitter (in order per scheduler link), data crosses worker
//! links at a bandwidth (transfers from one worker queue), ops take their nominal
//! duration over their worker's speed, and faults happen at set times. The scheduler
//! is instantaneous in virtual time; its real CPU time is measured.
//!
//! It must not decide anything the cores decide: it only carries their messages and
//! instructions, as the servers do.

use std::collections::BTreeSet;
use std::time::Instant;

use rask_proto::msg::ToScheduler;
use rask_proto::{ClientId, TaskId, WorkerId};
use rask_scheduler_core::{Action, SchedulerCore};
use rustc_hash::FxHashMap;

use crate::config::SimConfig;
use crate::cpu::thread_cpu_ns;
use crate::graph::Graph;
use crate::queue::EventQueue;
use crate::rng::{Rng, TraceHash};
use crate::worker::{Effects, Sabotage, SimWorker, Started, Stored, ToSchedulerMsg, ToWorkerMsg};
use crate::{Report, SimError};

/// The one client.
pub(crate) const CLIENT: ClientId = ClientId(1);

/// What happens at a virtual time.
pub(crate) enum Event {
    /// A batch of messages reaches a worker.
    ToWorker {
        worker: WorkerId,
        msgs: Vec<ToWorkerMsg>,
    },
    /// A batch of messages from a worker reaches the scheduler.
    ToScheduler {
        worker: WorkerId,
        msgs: Vec<ToSchedulerMsg>,
    },
    /// An op ends.
    Executed {
        worker: WorkerId,
        started: Started,
    },
    /// A request for values reaches their holder.
    FetchRequest {
        holder: WorkerId,
        asker: WorkerId,
        tasks: Vec<TaskId>,
    },
    /// The holder's answer reaches the asker; the holder sent its last byte at
    /// `sent_until`.
    FetchReply {
        asker: WorkerId,
        holder: WorkerId,
        sent_until: u64,
        values: Vec<(TaskId, Stored)>,
        missing: Vec<TaskId>,
    },
    /// The asker learns that the holder cannot be reached.
    FetchFailed {
        asker: WorkerId,
        holder: WorkerId,
        tasks: Vec<TaskId>,
    },
    /// The scheduler sees a dead worker's connection close.
    WorkerLost(WorkerId),
    /// Fault knobs.
    Join,
    Retire,
    Leave,
    Die,
}

impl Event {
    /// A number per kind, and the worker concerned, for the trace.
    fn trace_id(&self) -> (u64, u64) {
        match self {
            Event::ToWorker { worker, .. } => (1, worker.0.into()),
            Event::ToScheduler { worker, .. } => (2, worker.0.into()),
            Event::Executed { worker, started } => (3 | (started.task.0 << 8), worker.0.into()),
            Event::FetchRequest { holder, asker, .. } => {
                (4 | u64::from(asker.0) << 8, holder.0.into())
            }
            Event::FetchReply { asker, holder, .. } => {
                (5 | u64::from(holder.0) << 8, asker.0.into())
            }
            Event::FetchFailed { asker, holder, .. } => {
                (6 | u64::from(holder.0) << 8, asker.0.into())
            }
            Event::WorkerLost(w) => (7, w.0.into()),
            Event::Join => (8, 0),
            Event::Retire => (9, 0),
            Event::Die => (10, 0),
            Event::Leave => (16, 0),
        }
    }
}

/// A simulated cluster running one graph. See the module docs.
pub struct Sim {
    pub(crate) cfg: SimConfig,
    pub(crate) graph: Graph,
    pub(crate) expected: Vec<u64>,
    pub(crate) core: SchedulerCore,
    /// Workers by id (ids are never reused); `None` once dead or closed.
    pub(crate) workers: Vec<Option<SimWorker>>,
    /// When each worker died or closed (`u64::MAX` while alive).
    pub(crate) died_at: Vec<u64>,
    /// Live workers, in id order (a fault picks among them).
    pub(crate) live: BTreeSet<u32>,
    /// Arrival time of the last message on each scheduler → worker link, and back.
    pub(crate) down_last: Vec<u64>,
    pub(crate) up_last: Vec<u64>,
    pub(crate) queue: EventQueue<Event>,
    pub(crate) rng: Rng,
    sabotage: Sabotage,
    pub(crate) trace: TraceHash,
    /// Wanted tasks: their ids and graph indices.
    pub(crate) wanted: FxHashMap<TaskId, u32>,
    /// Runs of each task that ended on a live worker (graph index).
    pub(crate) runs: Vec<u32>,
    /// When a wanted key was last reported in memory.
    pub(crate) last_in_memory: u64,
    pub(crate) report: Report,
    next_checkpoint: u64,
    pub(crate) next_req: u64,
}

impl Sim {
    /// A cluster of `cfg.workers` workers about to run `graph`.
    pub fn new(cfg: SimConfig, graph: Graph) -> Sim {
        let expected = graph.expected_values();
        let core = SchedulerCore::new(cfg.core.clone());
        let report = Report {
            workers: cfg.workers,
            threads_per_worker: cfg.threads_per_worker,
            tasks: graph.len() as u64,
            critical_path_us: graph.critical_path_us(),
            work_us: graph.work_us(),
            oracle_bytes: graph.locality_oracle_bytes(),
            ..Report::default()
        };
        let runs = vec![0; graph.len()];
        Sim {
            rng: Rng::new(cfg.seed),
            sabotage: cfg.sabotage,
            next_checkpoint: cfg.validate_every,
            cfg,
            graph,
            expected,
            core,
            workers: Vec::new(),
            died_at: Vec::new(),
            live: BTreeSet::new(),
            down_last: Vec::new(),
            up_last: Vec::new(),
            queue: EventQueue::default(),
            trace: TraceHash::default(),
            wanted: FxHashMap::default(),
            runs,
            last_in_memory: 0,
            report,
            next_req: 0,
        }
    }

    /// Runs the graph to the end and checks the outcome: every wanted key in memory with
    /// its exact value, every task run, nothing left once the keys are released.
    pub fn run(mut self) -> Result<Report, SimError> {
        let wall = Instant::now();
        self.start()?;
        self.run_events()?;
        self.check_results()?;
        self.release_all()?;
        self.run_events()?;
        self.check_left_behind()?;
        self.report.weighed = self.core.workers_weighed();
        self.report.wall_ms = wall.elapsed().as_millis() as u64;
        Ok(self.report)
    }

    /// Time zero: the workers join, the faults are set, the client submits the graph's
    /// parts.
    fn start(&mut self) -> Result<(), SimError> {
        for _ in 0..self.cfg.workers {
            self.join();
        }
        // The bound with the speeds drawn: the critical path at the fastest worker's
        // speed, or the work over every starting thread at its worker's speed.
        let speeds = self.workers.iter().flatten().map(|w| w.speed);
        let fastest = speeds.clone().fold(f64::MIN_POSITIVE, f64::max);
        let capacity: f64 = speeds.sum::<f64>() * f64::from(self.cfg.threads_per_worker.max(1));
        let cp = self.report.critical_path_us as f64 / fastest;
        let spread = self.report.work_us as f64 / capacity.max(f64::MIN_POSITIVE);
        self.report.lower_bound_us = cp.max(spread) as u64;
        let faults = self.cfg.faults.clone();
        for t in faults.joins {
            self.queue.push(t, Event::Join);
        }
        for t in faults.retires {
            self.queue.push(t, Event::Retire);
        }
        for t in faults.leaves {
            self.queue.push(t, Event::Leave);
        }
        for t in faults.deaths {
            self.queue.push(t, Event::Die);
        }
        self.core.on_client_joined(CLIENT);
        let mut wanted = self.graph.wanted.clone();
        wanted.sort_unstable();
        for part in self.graph.parts.clone() {
            let tasks = part.clone().map(|i| self.graph.new_task(i)).collect();
            let keys: Vec<String> = wanted
                .iter()
                .filter(|i| part.contains(i))
                .map(|&i| self.graph.key(i))
                .collect();
            let c0 = thread_cpu_ns();
            self.core.set_now(self.queue.now());
            self.core
                .on_update_graph(CLIENT, tasks, &keys)
                .map_err(SimError::Graph)?;
            let actions = self.core.take_actions();
            self.report.scheduler_ns += thread_cpu_ns() - c0;
            for (key, &i) in keys.iter().zip(wanted.iter().filter(|i| part.contains(i))) {
                let t = self.core.task_id(key).ok_or(SimError::Broken {
                    what: format!("{key} submitted and unknown"),
                })?;
                self.wanted.insert(t, i);
            }
            self.route(actions)?;
        }
        Ok(())
    }

    /// Takes events until none is due, checking the budget and the checkpoints.
    fn run_events(&mut self) -> Result<(), SimError> {
        let budget = self
            .cfg
            .max_events
            .unwrap_or(64 * self.graph.len() as u64 + 1_000_000);
        while let Some((time, _seq, event)) = self.queue.pop() {
            self.report.events += 1;
            if self.report.events > budget {
                return Err(SimError::Budget {
                    events: budget,
                    time_us: time,
                    detail: self.stuck_detail(),
                });
            }
            let (kind, worker) = event.trace_id();
            self.trace.add(time);
            self.trace.add(kind);
            self.trace.add(worker);
            self.on_event(event)?;
            if self.cfg.validate_every > 0 && self.report.stimuli >= self.next_checkpoint {
                self.next_checkpoint = self.report.stimuli + self.cfg.validate_every;
                self.checkpoint()?;
            }
        }
        self.checkpoint()
    }

    fn on_event(&mut self, event: Event) -> Result<(), SimError> {
        let mut fx = Effects::default();
        let now = self.queue.now();
        let worker = match event {
            Event::ToWorker { worker, msgs } => {
                let sabotage = &mut self.sabotage;
                let Some(w) = self.workers[worker.0 as usize].as_mut() else {
                    return Ok(());
                };
                w.core.set_now(now);
                let t0 = Instant::now();
                let open = w.on_batch(msgs, &mut fx, sabotage)?;
                self.report.worker_core_ns += t0.elapsed().as_nanos() as u64;
                if !open {
                    self.remove(worker);
                    self.report.closed += 1;
                    return Ok(());
                }
                worker
            }
            Event::ToScheduler { worker, msgs } => return self.on_scheduler_batch(worker, msgs),
            Event::Executed { worker, started } => {
                let sabotage = &mut self.sabotage;
                let Some(w) = self.workers[worker.0 as usize].as_mut() else {
                    return Ok(());
                };
                w.core.set_now(now);
                self.runs[started.result.index as usize] += 1;
                self.report.executions += 1;
                self.report.busy_us += started.duration_us;
                let t0 = Instant::now();
                w.on_executed(started, &mut fx, sabotage)?;
                self.report.worker_core_ns += t0.elapsed().as_nanos() as u64;
                worker
            }
            Event::FetchRequest {
                holder,
                asker,
                tasks,
            } => {
                self.on_fetch_request(holder, asker, tasks);
                return Ok(());
            }
            Event::FetchReply {
                asker,
                holder,
                sent_until,
                values,
                missing,
            } => {
                let sabotage = &mut self.sabotage;
                let Some(w) = self.workers[asker.0 as usize].as_mut() else {
                    return Ok(());
                };
                w.core.set_now(now);
                let t0 = Instant::now();
                if self.died_at[holder.0 as usize] < sent_until {
                    // The holder died before its last byte left.
                    let tasks: Vec<TaskId> =
                        values.iter().map(|(t, _)| *t).chain(missing).collect();
                    w.on_fetch_failed(holder, &tasks, &mut fx, sabotage)?;
                } else {
                    self.report.bytes_moved += values.iter().map(|(_, v)| v.nbytes).sum::<u64>();
                    w.on_fetched(holder, values, &missing, &mut fx, sabotage)?;
                }
                self.report.worker_core_ns += t0.elapsed().as_nanos() as u64;
                asker
            }
            Event::FetchFailed {
                asker,
                holder,
                tasks,
            } => {
                let sabotage = &mut self.sabotage;
                let Some(w) = self.workers[asker.0 as usize].as_mut() else {
                    return Ok(());
                };
                w.core.set_now(now);
                w.on_fetch_failed(holder, &tasks, &mut fx, sabotage)?;
                asker
            }
            Event::WorkerLost(worker) => {
                return self.scheduler(|core| core.on_worker_lost(worker));
            }
            Event::Join => {
                self.join();
                return Ok(());
            }
            Event::Retire => return self.retire_one(),
            Event::Leave => return self.leave_one(),
            Event::Die => {
                self.die_one();
                return Ok(());
            }
        };
        self.effects(worker, fx);
        Ok(())
    }

    /// A stimulus of the scheduler core (timed), then its actions routed.
    pub(crate) fn scheduler(&mut self, f: impl FnOnce(&mut SchedulerCore)) -> Result<(), SimError> {
        self.report.stimuli += 1;
        let c0 = thread_cpu_ns();
        self.core.set_now(self.queue.now());
        f(&mut self.core);
        let actions = self.core.take_actions();
        self.report.scheduler_ns += thread_cpu_ns() - c0;
        self.route(actions)
    }

    /// A batch from a worker, each message handled as the scheduler server does.
    fn on_scheduler_batch(
        &mut self,
        w: WorkerId,
        msgs: Vec<ToSchedulerMsg>,
    ) -> Result<(), SimError> {
        let c0 = thread_cpu_ns();
        self.core.set_now(self.queue.now());
        for m in msgs {
            self.report.stimuli += 1;
            match m {
                ToSchedulerMsg::Finished {
                    task,
                    nbytes,
                    duration_us,
                    fetch_us,
                    run,
                    index,
                    value,
                } => {
                    let want = self.expected[index as usize];
                    if value != want {
                        return Err(SimError::WrongValue {
                            key: self.graph.key(index),
                            got: value,
                            want,
                        });
                    }
                    if !self.core.is_stale_run(task, run) {
                        self.core
                            .on_task_finished(w, task, nbytes, duration_us, fetch_us, None);
                    }
                }
                ToSchedulerMsg::StealResponse {
                    task,
                    run,
                    released,
                } => self.core.on_steal_response(w, task, run, released),
                ToSchedulerMsg::Core(ToScheduler::TaskErred(e)) => {
                    if !self.core.is_stale_run(e.task, e.run) {
                        self.core.on_task_erred(w, e.task, e.message);
                    }
                }
                ToSchedulerMsg::Core(ToScheduler::MissingData { task, dep, holder }) => {
                    self.core.on_missing_data(w, task, dep, holder)
                }
                ToSchedulerMsg::Core(ToScheduler::ReplicasAcquired { tasks }) => {
                    self.core.on_replicas_acquired(w, &tasks)
                }
                ToSchedulerMsg::Core(ToScheduler::ReplicaMissing { task, holder }) => {
                    self.core.on_replica_missing(w, task, holder)
                }
                ToSchedulerMsg::Core(other) => {
                    return Err(SimError::Broken {
                        what: format!("{w} sent the scheduler an unexpected {other:?}"),
                    })
                }
            }
        }
        let actions = self.core.take_actions();
        self.report.scheduler_ns += thread_cpu_ns() - c0;
        self.route(actions)
    }

    /// Carries out the scheduler core's actions: messages to workers go out in one batch
    /// per worker, in order; the client's news is recorded.
    fn route(&mut self, actions: Vec<Action>) -> Result<(), SimError> {
        let mut batches: Vec<(WorkerId, Vec<ToWorkerMsg>)> = Vec::new();
        let mut index: FxHashMap<WorkerId, usize> = FxHashMap::default();
        for a in actions {
            let (worker, msg) = match a {
                Action::Compute { worker, msg, .. } => {
                    self.trace.add(11 | (msg.task.0 << 8));
                    (worker, ToWorkerMsg::Compute(msg))
                }
                Action::Steal { worker, task, run } => {
                    self.trace.add(12 | (task.0 << 8));
                    (worker, ToWorkerMsg::Steal { task, run })
                }
                Action::Free { worker, task } => {
                    self.trace.add(13 | (task.0 << 8));
                    (worker, ToWorkerMsg::Free(task))
                }
                Action::AcquireReplica { worker, dep } => {
                    self.trace.add(14 | (dep.task.0 << 8));
                    (worker, ToWorkerMsg::AcquireReplica(dep))
                }
                Action::CloseWorker { worker } => (worker, ToWorkerMsg::Close),
                Action::KeyInMemory { task, .. } => {
                    self.trace.add(15 | (task.0 << 8));
                    if self.wanted.contains_key(&task) {
                        self.last_in_memory = self.queue.now();
                    }
                    continue;
                }
                Action::KeyErred { key, error, .. } => {
                    return Err(SimError::Erred {
                        key: key.to_string(),
                        message: error.message.clone(),
                    })
                }
                Action::Retired { workers, .. } => {
                    self.report.retired += workers.len() as u32;
                    continue;
                }
            };
            self.trace.add(u64::from(worker.0));
            let i = *index.entry(worker).or_insert_with(|| {
                batches.push((worker, Vec::new()));
                batches.len() - 1
            });
            batches[i].1.push(msg);
        }
        for (worker, msgs) in batches {
            let at = self.link(worker, true);
            self.queue.push(at, Event::ToWorker { worker, msgs });
        }
        Ok(())
    }

    /// What a worker's step asked for: its messages to the scheduler in one batch, its
    /// fetches, its ops' ends.
    fn effects(&mut self, worker: WorkerId, fx: Effects) {
        if !fx.to_scheduler.is_empty() {
            let at = self.link(worker, false);
            self.queue.push(
                at,
                Event::ToScheduler {
                    worker,
                    msgs: fx.to_scheduler,
                },
            );
        }
        for (holder, tasks) in fx.fetches {
            let at = self.queue.now() + self.cfg.latency_us + self.jitter();
            self.queue.push(
                at,
                Event::FetchRequest {
                    holder,
                    asker: worker,
                    tasks,
                },
            );
        }
        for started in fx.started {
            let at = self.queue.now() + started.duration_us;
            self.queue.push(at, Event::Executed { worker, started });
        }
    }

    /// A holder answers a fetch with what it has: its bytes leave once the transfers
    /// ahead of them from this holder have left.
    fn on_fetch_request(&mut self, holder: WorkerId, asker: WorkerId, tasks: Vec<TaskId>) {
        let now = self.queue.now();
        let latency = self.cfg.latency_us + self.jitter();
        let Some(h) = self.workers[holder.0 as usize].as_mut() else {
            self.queue.push(
                now + latency,
                Event::FetchFailed {
                    asker,
                    holder,
                    tasks,
                },
            );
            return;
        };
        let mut values = Vec::with_capacity(tasks.len());
        let mut missing = Vec::new();
        for t in tasks {
            match h.store.get(&t) {
                Some(v) => values.push((t, *v)),
                None => missing.push(t),
            }
        }
        let bytes: u64 = values.iter().map(|(_, v)| v.nbytes).sum();
        let start = now.max(h.sending_until);
        let sent_until = start + (bytes as f64 * 1e6 / self.cfg.bandwidth) as u64;
        h.sending_until = sent_until;
        h.sent_bytes += bytes;
        self.report.max_sent_bytes = self.report.max_sent_bytes.max(h.sent_bytes);
        self.queue.push(
            sent_until + latency,
            Event::FetchReply {
                asker,
                holder,
                sent_until,
                values,
                missing,
            },
        );
    }

    /// When a message sent now on a scheduler link arrives: after latency and jitter,
    /// and not before the one sent ahead of it.
    pub(crate) fn link(&mut self, worker: WorkerId, down: bool) -> u64 {
        let at = self.queue.now() + self.cfg.latency_us + self.jitter();
        let last = if down {
            &mut self.down_last[worker.0 as usize]
        } else {
            &mut self.up_last[worker.0 as usize]
        };
        *last = at.max(*last);
        *last
    }

    fn jitter(&mut self) -> u64 {
        match self.cfg.jitter_us {
            0 => 0,
            j => self.rng.below(j + 1),
        }
    }
}
