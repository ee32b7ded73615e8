//! The owner task: its state, the reaction to each event, and the carrying out of the
//! core's instructions.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use rask_proto::msg::{ComputeMsg, ToScheduler, ToWorker};
use rask_proto::{IdMap, TaskId, Value, WorkerId};
use rask_transport::shm::Arena;
use rask_transport::{Batch, Sender};
use rask_worker_core::spill::{Spill, Tier};
use rask_worker_core::{Assigned, Finished, Instruction, WorkerCore};
use rustc_hash::FxHashMap;
use tokio::sync::mpsc;
use tracing::{debug, info, trace, warn};

use crate::config::WorkerConfig;
use crate::error::WorkerError;
use crate::events::Event;
use crate::events::Executed;
use crate::events::JobError;
use crate::executor::run_job;
use crate::executor::Args;
use crate::executor::Exec;
use crate::executor::Job;
use crate::executor::INLINE_SLICE;
use crate::peers::Peer;
use crate::store::inline_value;
use crate::store::Store;

/// The main loop's state.
pub(crate) struct State {
    pub(crate) id: WorkerId,
    pub(crate) cfg: WorkerConfig,
    pub(crate) core: WorkerCore,
    pub(crate) store: Store,
    /// Compute requests not yet run: op, args and their buffers, deps in order.
    pub(crate) specs: IdMap<TaskId, (ComputeMsg, Vec<Bytes>)>,
    /// Peer workers' data addresses and identities, and how data moves from each.
    pub(crate) peers: FxHashMap<WorkerId, Peer>,
    /// Open data connections to peers.
    pub(crate) links: FxHashMap<WorkerId, rask_transport::data::DataLink>,
    /// Peers whose device memory this worker's device could not import.
    pub(crate) no_ipc: rustc_hash::FxHashSet<WorkerId>,
    /// Fetch requests in flight: (peer, request id) → tasks, and when they were asked for.
    pub(crate) outstanding: FxHashMap<(WorkerId, u64), (Vec<TaskId>, Instant)>,
    pub(crate) next_req: u64,
    pub(crate) to_scheduler: Sender<ToScheduler>,
    pub(crate) jobs: crossbeam_channel::Sender<Job>,
    pub(crate) events: mpsc::UnboundedSender<Event>,
    /// Inline execution stops at this instant (the end of this wake-up's slice).
    pub(crate) inline_until: Instant,
    /// Tasks to run inline whose slice was over: run when the loop's other tasks (the
    /// writer of the results so far) have had their turn.
    pub(crate) deferred: Vec<(ComputeMsg, Vec<Bytes>)>,
    /// The clock as last read by this loop: when [`State::drive`] began, or when the
    /// last op it ran inline ended.
    pub(crate) clock: Instant,
    /// The list the core's instructions are taken into (kept for its room).
    pub(crate) instructions: Vec<rask_worker_core::Instruction>,
    /// The start of the core's clock ([`WorkerCore::set_now`](rask_worker_core::WorkerCore::set_now)).
    pub(crate) epoch: Instant,
    /// How ops run: outputs to the shared-memory arena, device plans on the device.
    pub(crate) exec: Exec,
    pub(crate) arena: Arena,
    /// Segments the arena unmapped, for the shared-memory connections to announce.
    pub(crate) retire_tx: tokio::sync::broadcast::Sender<Vec<u32>>,
    pub(crate) host_id: String,
    /// This worker's device (`sim:N`, `cuda:N`, `host`).
    pub(crate) device_label: String,
    /// The GPU's index on its host (what peers' NVLink lists name).
    pub(crate) host_gpu: Option<u32>,
    pub(crate) device_pool: Option<Arc<rask_device::MemoryPool>>,
    /// Bytes received from peers, by link class.
    pub(crate) received: std::collections::BTreeMap<rask_proto::LinkClass, u64>,
    pub(crate) spill: Spill,
    /// Host memory for values spilled from the device (the spill thread fills it).
    pub(crate) host_arena: Arena,
    /// Bytes spilled, by direction.
    pub(crate) spilled: std::collections::BTreeMap<&'static str, u64>,
    /// Transfers and spills for the next heartbeat, and the totals per peer.
    pub(crate) activity: crate::activity::Activity,
    /// The spill thread's queue: it moves values down a tier, off this loop.
    pub(crate) spiller: crossbeam_channel::Sender<crate::memory::SpillJob>,
    /// Values the spill thread is moving, by the number of their move (a reply to another
    /// move is stale).
    pub(crate) spilling: IdMap<TaskId, u64>,
    pub(crate) next_spill: u64,
    /// Tasks whose op did not fit on the device, waiting for spilled values to leave it.
    pub(crate) parked: Vec<crate::device::Parked>,
    /// Runs on a device without room, by task (see [`crate::device::DEVICE_FULL_RUNS`]).
    pub(crate) device_full_runs: IdMap<TaskId, u32>,
    /// Why the device failed for good, once it has: the worker leaves.
    pub(crate) lost: Option<String>,
    /// The process's private memory at the last heartbeat (its own process only).
    pub(crate) private_heap: u64,
    /// Programs this worker runs a worker of, by code.
    pub(crate) programs: FxHashMap<u64, crate::programs::Running>,
    /// The hello it joined with (joining again, it says it holds values).
    pub(crate) hello: rask_proto::msg::Hello,
    /// Trying to join the scheduler again.
    pub(crate) rejoining: bool,
}

impl State {
    /// Handles one event; `Some` stops the worker with that result.
    pub(crate) fn on_event(&mut self, ev: Event) -> Option<Result<(), WorkerError>> {
        self.core.set_now(self.epoch.elapsed().as_micros() as u64);
        match ev {
            Event::FromScheduler(Batch { msgs, bufs, .. }) => {
                let mut computes = Vec::with_capacity(msgs.len());
                for m in msgs {
                    match m {
                        ToWorker::Compute(mut c) => match c.args.localize(&bufs) {
                            Ok(own) => {
                                trace!(target: "rask_worker::steps", task = c.task.0, deps = ?c.deps, "compute");
                                computes.push(c.task);
                                self.specs.insert(c.task, (c, own));
                            }
                            Err(e) => {
                                let message = format!("malformed task arguments: {e}");
                                let _ = self.to_scheduler.send(ToScheduler::TaskErred(
                                    rask_proto::msg::TaskErredMsg {
                                        task: c.task,
                                        message,
                                        run: c.run,
                                    },
                                ));
                            }
                        },
                        ToWorker::Steal { task, run } => {
                            // Computes before it in this batch are the core's first (the
                            // task may be among them).
                            self.assign(&mut computes);
                            let released = self.core.on_steal(task, run);
                            trace!(target: "rask_worker::steps", task = task.0, run, released, "steal");
                            let _ = self.to_scheduler.send(ToScheduler::StealResponse {
                                task,
                                run,
                                released,
                            });
                            self.drive();
                        }
                        ToWorker::Echo { client, seq } => {
                            let _ = self.to_scheduler.send(ToScheduler::Echo { client, seq });
                        }
                        ToWorker::Free { tasks } => {
                            trace!(target: "rask_worker::steps", ?tasks, "free");
                            self.assign(&mut computes);
                            for t in tasks {
                                self.core.on_free(t);
                            }
                            // Carried out now: a compute of the same task later in this
                            // batch (the scheduler gave it back) must find its spec.
                            self.drive();
                        }
                        ToWorker::Peers { peers } => {
                            for p in peers {
                                let peer = self.peer(p);
                                self.peers.insert(peer.addr.worker, peer);
                            }
                        }
                        ToWorker::PeerGone { worker } => {
                            self.peers.remove(&worker);
                            self.links.remove(&worker);
                        }
                        ToWorker::Close { reason } => {
                            info!("scheduler asked to close: {reason}");
                            return Some(Ok(()));
                        }
                        ToWorker::RunProgram { program } => self.run_program(program),
                        ToWorker::ProgramPart {
                            code,
                            offset,
                            size,
                            buf,
                        } => {
                            let (Some(running), Some(bytes)) =
                                (self.programs.get(&code), bufs.get(buf as usize))
                            else {
                                continue;
                            };
                            let _ = running.parts.send(crate::programs::Part {
                                offset,
                                size,
                                bytes: bytes.clone(),
                            });
                        }
                        ToWorker::AcquireReplicas { tasks } => self.core.on_acquire_replicas(tasks),
                        ToWorker::StopProgram { code } => {
                            if self.programs.remove(&code).is_some() {
                                info!(code = %format_args!("{code:016x}"), "stopping the program's worker");
                            }
                        }
                    }
                }
                self.assign(&mut computes);
            }
            Event::SchedulerGone(reason) => {
                if let Some(e) = self.on_scheduler_gone(reason) {
                    return Some(Err(e));
                }
            }
            Event::Rejoined(r) => self.on_rejoined(*r),
            Event::RejoinFailed(why) => return Some(Err(WorkerError::SchedulerLost(why))),
            Event::Executed(done) => self.on_executed(done),
            Event::Spilled(s) => self.on_spilled(s),
            Event::Fetched {
                from,
                req,
                values,
                missing,
            } => {
                let asked = self.outstanding.remove(&(from, req)).map(|(_, at)| at);
                let class = self.link_class(from);
                let mut received = 0;
                // A copy nobody waits for any more is not stored: it could replace a value
                // computed here meanwhile, or outlive the one reader that wanted it.
                let values: Vec<(TaskId, Value)> = values
                    .into_iter()
                    .filter(|(t, _)| self.core.fetching(*t))
                    .collect();
                let mut sizes = Vec::with_capacity(values.len());
                for (t, v) in &values {
                    let nbytes = v.nbytes();
                    received += nbytes;
                    sizes.push((*t, nbytes));
                    self.track(*t, v, nbytes);
                }
                *self.received.entry(class).or_default() += received;
                let now = Instant::now();
                self.activity
                    .transfer(from, class, &sizes, asked.unwrap_or(now), now);
                let got: Vec<TaskId> = values.iter().map(|(t, _)| *t).collect();
                {
                    let mut store = self.store.lock().expect("store lock");
                    for (t, v) in values {
                        store.insert(t, v);
                    }
                }
                trace!(target: "rask_worker::steps", from = from.0, ?got, ?missing, "fetched");
                self.core.on_fetched(from, &got, &missing);
            }
            Event::ImportFailed { from, tasks, error } => {
                if import_failure_lasts(&error) {
                    if self.no_ipc.insert(from) {
                        warn!(
                            peer = from.0,
                            "cannot import device memory of worker {}: {error}; its values come through the host",
                            from.0
                        );
                    }
                    self.fetch(from, tasks);
                } else {
                    // The device is full now: these values come through the host, and
                    // later ones are imported again.
                    debug!(
                        peer = from.0,
                        "{error}; fetching through the host this time"
                    );
                    self.fetch_through(from, tasks, false);
                }
            }
            Event::LinkDown { from, error } => {
                debug!(peer = from.0, "data link down: {error}");
                self.links.remove(&from);
                let failed: Vec<(WorkerId, u64)> = self
                    .outstanding
                    .keys()
                    .filter(|(w, _)| *w == from)
                    .copied()
                    .collect();
                for k in failed {
                    let (tasks, _) = self
                        .outstanding
                        .remove(&k)
                        .expect("invariant: key just listed");
                    trace!(target: "rask_worker::steps", from = from.0, ?tasks, "fetch failed");
                    self.core.on_fetch_failed(from, &tasks);
                }
            }
        }
        None
    }

    /// Whether tasks wait for the next slice ([`State::deferred`]).
    pub(crate) fn has_deferred(&self) -> bool {
        !self.deferred.is_empty()
    }

    /// Carries out the core's instructions until it has none, the deferred tasks first.
    pub(crate) fn drive(&mut self) {
        self.clock = Instant::now();
        self.inline_until = self.clock + INLINE_SLICE;
        self.spill_now();
        for (spec, bufs) in std::mem::take(&mut self.deferred) {
            self.run_spec(spec, bufs, true);
        }
        // The core's instructions come in this list and its room goes back to the core:
        // no list is allocated per instruction.
        let mut out = std::mem::take(&mut self.instructions);
        // What goes to the scheduler, handed to the writer at once when the core is done
        // (nothing else is sent to the scheduler meanwhile: the order is kept).
        let mut reports = Vec::new();
        loop {
            self.core.take_into(&mut out);
            if out.is_empty() {
                self.instructions = out;
                if !reports.is_empty() {
                    let _ = self.to_scheduler.send_batch(reports);
                }
                return;
            }
            // Most instructions are reports: room for them at once, not by doubling.
            reports.reserve(out.len());
            for i in out.drain(..) {
                trace!(target: "rask_worker::steps", "{i:?}");
                match i {
                    Instruction::Fetch { from, tasks } => self.fetch(from, tasks),
                    Instruction::Execute { task, inline } => self.execute(task, inline),
                    Instruction::Finished {
                        task,
                        nbytes,
                        duration_us,
                        with_value,
                        run,
                        fetch_us,
                    } => {
                        let value = with_value
                            .then(|| {
                                let store = self.store.lock().expect("store lock");
                                store.get(&task).and_then(inline_value)
                            })
                            .flatten();
                        let m = ToScheduler::TaskFinished(rask_proto::msg::TaskFinishedMsg {
                            task,
                            nbytes,
                            duration_us,
                            fetch_us,
                            value,
                            run,
                        });
                        reports.push((m, Vec::new()));
                    }
                    Instruction::Send(m) => reports.push((m, Vec::new())),
                    Instruction::Discard { task } => {
                        self.store.lock().expect("store lock").remove(&task);
                        self.spill.remove(task);
                    }
                    Instruction::Drop { task } => {
                        self.specs.remove(&task);
                    }
                }
            }
        }
    }

    /// Hands the core the tasks the scheduler just assigned (their specs are stored).
    fn assign(&mut self, tasks: &mut Vec<TaskId>) {
        if tasks.is_empty() {
            return;
        }
        let specs = &self.specs;
        self.core.on_assigned(
            tasks
                .drain(..)
                .filter_map(|t| specs.get(&t).map(|(c, _)| Assigned::of(c))),
        );
    }

    /// Runs a task: in place when the core says its op is fast (and no input is being
    /// brought back to the device), else on an executor thread. A fast op whose slice is
    /// over waits for the next ([`State::deferred`]): the results so far go to the
    /// scheduler first, and it places the next tasks while these run.
    pub(crate) fn execute(&mut self, task: TaskId, inline: bool) {
        let Some((spec, bufs)) = self.specs.remove(&task) else {
            self.core
                .on_executed(task, 0, Err("internal: task spec missing".into()));
            return;
        };
        // The slice is checked against the end of the last op run inline (or the start of
        // this wake-up): no clock read of its own.
        if inline && self.clock >= self.inline_until {
            self.deferred.push((spec, bufs));
            return;
        }
        self.run_spec(spec, bufs, inline);
    }

    /// Runs a task's spec (in place when `inline`, see [`State::execute`]).
    fn run_spec(&mut self, spec: ComputeMsg, bufs: Vec<Bytes>, inline: bool) {
        let task = spec.task;
        for d in &spec.deps {
            self.spill.touch(d.task);
        }
        let args = {
            let store = self.store.lock().expect("store lock");
            let deps: Option<Vec<&Value>> = spec.deps.iter().map(|d| store.get(&d.task)).collect();
            match deps {
                Some(deps) => spec.args.to_value(&bufs, &deps).map_err(|e| e.to_string()),
                None => Err("internal: an input is not in the store".into()),
            }
        };
        let args = match args {
            Ok(a) => a,
            Err(message) => {
                self.core.on_executed(task, 0, Err(message));
                return;
            }
        };
        let args = self.unspill_for(&spec, bufs, args);
        let inline = inline && self.spares_device(&spec.op, &args);
        let job = Job {
            task,
            op: spec.op,
            args,
            // What a device that is full must not spill to make room for this job (a
            // worker without a device never needs it).
            deps: match self.exec.device {
                Some(_) => spec.deps.iter().map(|d| d.task).collect(),
                None => Vec::new(),
            },
            on_device: true,
        };
        if inline {
            // A op measured to take microseconds runs here: handing it to a thread would
            // cost more (two cross-thread wake-ups) than running it.
            let (done, end) = run_job(&self.exec, job, Instant::now());
            self.clock = end;
            self.on_executed([done]);
        } else if self.jobs.send(job).is_err() {
            self.core
                .on_executed(task, 0, Err("executor stopped".into()));
        }
    }

    /// Whether a job leaves the device alone (no plan of it runs there, no input is read
    /// from there): only such a job may run on this loop, which never waits for a device.
    fn spares_device(&self, op: &str, args: &Args) -> bool {
        let Some(device) = &self.exec.device else {
            return true;
        };
        let Args::Ready(v) = args else {
            return false;
        };
        let list = match v {
            Value::List(l) => l.as_slice(),
            v => std::slice::from_ref(v),
        };
        !v.on_device() && !device.runs(&self.exec.registry, op, list)
    }

    pub(crate) fn on_executed(&mut self, done: impl IntoIterator<Item = Executed>) {
        let shared = self.store.clone();
        let mut store = shared.lock().expect("store lock");
        for Executed {
            task,
            result,
            duration_us,
            unspilled,
            retry,
        } in done
        {
            if self.lost.is_some() {
                // Leaving: nothing more is reported.
                continue;
            }
            for (t, v) in unspilled {
                self.spill.unspill_done(t);
                // Only if the value is still stored and not already back on the device.
                let label = match self.spill.tier(t) {
                    Some(Tier::Disk) => "disk->device",
                    Some(Tier::Host) => "host->device",
                    _ => continue,
                };
                if let Some(slot) = store.get_mut(&t) {
                    *self.spilled.entry(label).or_default() += v.device_bytes();
                    *slot = v;
                    self.spill.moved(t, Tier::Device);
                }
            }
            match result {
                Ok((value, on_device)) => {
                    let nbytes = value.nbytes();
                    self.track(task, &value, nbytes);
                    store.insert(task, value);
                    let done = Finished { nbytes, on_device };
                    self.device_full_runs.remove(&task);
                    self.core.on_executed(task, duration_us, Ok(done));
                }
                Err(JobError::Failed(message)) => {
                    self.device_full_runs.remove(&task);
                    self.core.on_executed(task, duration_us, Err(message))
                }
                Err(JobError::DeviceLost(message)) => {
                    // Not reported: the scheduler runs the task elsewhere, as for a worker
                    // that died.
                    self.lost = Some(message);
                }
                Err(JobError::DeviceFull { needed, message }) => {
                    let retry = *retry.expect("invariant: a job that did not fit comes back");
                    drop(store);
                    self.on_device_full(task, retry, needed, &message);
                    store = shared.lock().expect("store lock");
                }
            }
        }
        drop(store);
        if self.lost.is_none() {
            // A device may be lost by something other than a job's op (an upload).
            self.lost = self.exec.device.as_ref().and_then(|d| d.lost());
        }
    }

    /// The error that stops the worker, once its device failed for good.
    pub(crate) fn stop_if_lost(&mut self) -> Option<WorkerError> {
        let message = self.lost.clone()?;
        Some(self.device_lost(message))
    }
}

/// Whether a failed import means the peer's device memory cannot be imported at all
/// (its values then always come through the host), rather than that this device was full
/// at the time.
pub(crate) fn import_failure_lasts(error: &rask_kernels::OpError) -> bool {
    !matches!(error, rask_kernels::OpError::DeviceFull { .. })
}

impl State {
    /// Starts a worker of a program beside this one, unless one runs (or this worker does
    /// not run programs: the scheduler hears why).
    fn run_program(&mut self, program: rask_proto::msg::ProgramInfo) {
        let code = program.code;
        if self
            .programs
            .get(&code)
            .is_some_and(|r| !r.parts.is_closed())
        {
            return;
        }
        let Some(launcher) = self.cfg.programs.clone() else {
            let _ = self.to_scheduler.send(ToScheduler::ProgramFailed {
                code,
                message: "this worker does not run programs".into(),
            });
            return;
        };
        info!(program = %program.name, code = %format_args!("{code:016x}"), "starting a worker of the program");
        let running = crate::programs::start(
            program,
            launcher,
            self.to_scheduler.clone(),
            self.cfg.name.clone(),
        );
        self.programs.insert(code, running);
    }
}
