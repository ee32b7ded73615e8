//! The owner task: its state, the reaction to each event, and the carrying out of the
//! core's instructions.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use rask_proto::msg::{ComputeMsg, ToScheduler, ToWorker};
use rask_proto::{TaskId, Value, WorkerId};
use rask_transport::shm::Arena;
use rask_transport::{Batch, Sender};
use rask_worker_core::spill::{Spill, Tier};
use rask_worker_core::{Instruction, WorkerCore};
use rustc_hash::FxHashMap;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::config::WorkerConfig;
use crate::error::WorkerError;
use crate::events::Event;
use crate::events::Executed;
use crate::executor::run_job;
use crate::executor::Args;
use crate::executor::Exec;
use crate::executor::Job;
use crate::executor::INLINE_BUDGET;
use crate::executor::INLINE_MAX_US;
use crate::peers::Peer;
use crate::store::inline_datum;
use crate::store::Store;

/// The main loop's state.
pub(crate) struct State {
    pub(crate) id: WorkerId,
    pub(crate) cfg: WorkerConfig,
    pub(crate) core: WorkerCore,
    pub(crate) store: Store,
    /// Compute requests not yet run: op, args and their buffers, deps in order.
    pub(crate) specs: FxHashMap<TaskId, (ComputeMsg, Vec<Bytes>)>,
    /// Peer workers' data addresses and identities, and how data moves from each.
    pub(crate) peers: FxHashMap<WorkerId, Peer>,
    /// Open data connections to peers.
    pub(crate) links: FxHashMap<WorkerId, rask_transport::data::DataLink>,
    /// Peers whose device memory this worker's device could not import.
    pub(crate) no_ipc: rustc_hash::FxHashSet<WorkerId>,
    /// Values being brought back to the device by a job.
    pub(crate) unspilling: rustc_hash::FxHashSet<TaskId>,
    /// Fetch requests in flight: (peer, request id) → tasks.
    pub(crate) outstanding: FxHashMap<(WorkerId, u64), Vec<TaskId>>,
    pub(crate) next_req: u64,
    pub(crate) to_scheduler: Sender<ToScheduler>,
    pub(crate) jobs: crossbeam_channel::Sender<Job>,
    pub(crate) events: mpsc::UnboundedSender<Event>,
    /// Tasks whose small result the scheduler wants reported inline.
    pub(crate) report: rustc_hash::FxHashSet<TaskId>,
    /// Measured average duration of each op, in µs.
    pub(crate) op_us: FxHashMap<String, f64>,
    /// Inline execution stops at this instant (per wake-up budget).
    pub(crate) inline_until: Instant,
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
    pub(crate) received: std::collections::BTreeMap<&'static str, u64>,
    pub(crate) spill: Spill,
    /// Host memory for values spilled from the device.
    pub(crate) host_arena: Arena,
    /// Bytes spilled, by direction.
    pub(crate) spilled: std::collections::BTreeMap<&'static str, u64>,
    /// Tasks run on the CPU and by the device's kernels.
    pub(crate) ran: [u64; 2],
    /// Where values spilled to disk go, in files without names.
    pub(crate) spill_dir: std::path::PathBuf,
    /// The process's private memory at the last heartbeat (its own process only).
    pub(crate) private_heap: u64,
}

impl State {
    /// Handles one event; `Some` stops the worker with that result.
    pub(crate) fn on_event(&mut self, ev: Event) -> Option<Result<(), WorkerError>> {
        match ev {
            Event::FromScheduler(Batch { msgs, bufs, .. }) => {
                let mut computes = Vec::new();
                for m in msgs {
                    match m {
                        ToWorker::Compute(mut c) => match c.args.localize(&bufs) {
                            Ok(own) => {
                                computes.push((c.task, c.priority, c.deps.clone()));
                                if c.report_value {
                                    self.report.insert(c.task);
                                }
                                self.specs.insert(c.task, (c, own));
                            }
                            Err(e) => {
                                let message = format!("malformed task arguments: {e}");
                                let _ = self.to_scheduler.send(ToScheduler::TaskErred(
                                    rask_proto::msg::TaskErredMsg {
                                        task: c.task,
                                        message,
                                    },
                                ));
                            }
                        },
                        ToWorker::Free { tasks } => {
                            if !computes.is_empty() {
                                self.core.on_compute_batch(computes.drain(..));
                            }
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
                    }
                }
                if !computes.is_empty() {
                    self.core.on_compute_batch(computes);
                }
            }
            Event::SchedulerGone(reason) => {
                let reason = reason.unwrap_or_else(|| "closed".into());
                return Some(Err(WorkerError::SchedulerLost(reason)));
            }
            Event::Executed(done) => self.on_executed(done),
            Event::Fetched {
                from,
                req,
                values,
                missing,
            } => {
                self.outstanding.remove(&(from, req));
                let class = self.link_class(from);
                let mut received = 0;
                for (t, v) in &values {
                    let nbytes = v.nbytes();
                    received += nbytes;
                    self.track(*t, v, nbytes);
                }
                *self.received.entry(class).or_default() += received;
                let got: Vec<TaskId> = values.iter().map(|(t, _)| *t).collect();
                {
                    let mut store = self.store.lock().expect("store lock");
                    for (t, v) in values {
                        store.insert(t, v);
                    }
                }
                self.core.on_fetched(from, &got, &missing);
            }
            Event::ImportFailed { from, tasks, error } => {
                if self.no_ipc.insert(from) {
                    warn!(
                        peer = from.0,
                        "cannot import device memory of worker {}: {error}; its values come through the host",
                        from.0
                    );
                }
                self.fetch(from, tasks);
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
                    let tasks = self
                        .outstanding
                        .remove(&k)
                        .expect("invariant: key just listed");
                    self.core.on_fetch_failed(from, &tasks);
                }
            }
        }
        None
    }

    /// Carries out the core's instructions until it has none.
    pub(crate) fn drive(&mut self) {
        self.inline_until = Instant::now() + INLINE_BUDGET;
        self.spill_now();
        loop {
            let out = self.core.take();
            if out.is_empty() {
                return;
            }
            for i in out {
                match i {
                    Instruction::Fetch { from, tasks } => self.fetch(from, tasks),
                    Instruction::Execute { task } => self.execute(task),
                    Instruction::Send(mut m) => {
                        match &mut m {
                            ToScheduler::TaskFinished(f) if self.report.remove(&f.task) => {
                                let store = self.store.lock().expect("store lock");
                                f.value = store.get(&f.task).and_then(inline_datum);
                            }
                            ToScheduler::TaskFinished(f) => {
                                self.report.remove(&f.task);
                            }
                            ToScheduler::TaskErred(e) => {
                                self.report.remove(&e.task);
                            }
                            ToScheduler::MissingData { task, .. } => {
                                self.report.remove(task);
                            }
                            _ => {}
                        }
                        let _ = self.to_scheduler.send(m);
                    }
                    Instruction::Discard { task } => {
                        self.store.lock().expect("store lock").remove(&task);
                        self.spill.remove(task);
                    }
                    Instruction::Drop { task } => {
                        self.specs.remove(&task);
                        self.report.remove(&task);
                    }
                }
            }
        }
    }

    pub(crate) fn execute(&mut self, task: TaskId) {
        let Some((spec, bufs)) = self.specs.remove(&task) else {
            self.core
                .on_executed(task, Err("internal: task spec missing".into()));
            return;
        };
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
                self.core.on_executed(task, Err(message));
                return;
            }
        };
        let args = self.unspill_for(&spec, bufs, args);
        let unspilling = matches!(args, Args::Unspill { .. });
        let job = Job {
            task,
            op: spec.op,
            args,
        };
        let fast = self
            .op_us
            .get(&job.op)
            .is_some_and(|us| *us < INLINE_MAX_US);
        if fast && !unspilling && Instant::now() < self.inline_until {
            // A op measured to take microseconds runs here: handing it to a thread would
            // cost more (two cross-thread wake-ups) than running it.
            let done = run_job(&self.exec, job);
            self.on_executed(vec![done]);
        } else if self.jobs.send(job).is_err() {
            self.core.on_executed(task, Err("executor stopped".into()));
        }
    }

    pub(crate) fn on_executed(&mut self, done: Vec<Executed>) {
        let store = self.store.clone();
        let mut store = store.lock().expect("store lock");
        for Executed {
            task,
            op,
            result,
            duration_us,
            unspilled,
        } in done
        {
            for (t, v) in unspilled {
                self.unspilling.remove(&t);
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
            let avg = self.op_us.entry(op).or_insert(duration_us as f64);
            *avg = 0.8 * *avg + 0.2 * duration_us as f64;
            match result {
                Ok((value, on_device)) => {
                    self.ran[on_device as usize] += 1;
                    let nbytes = value.nbytes();
                    self.track(task, &value, nbytes);
                    store.insert(task, value);
                    self.core.on_executed(task, Ok((nbytes, duration_us)));
                }
                Err(message) => self.core.on_executed(task, Err(message)),
            }
        }
    }
}
