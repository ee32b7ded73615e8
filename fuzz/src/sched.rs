//! The scheduler's state machine driven by decoded messages: a step script in which
//! clients and workers join and leave and send frames of `ToScheduler` batches, handed
//! to a [`SchedulerCore`] the way the scheduler server hands them (the same message to
//! stimulus mapping, role by role), with `validate()` after every step.
//!
//! The core's actions are carried out as the server routes them: a compute is encoded
//! into a `ToWorker` frame and decoded again (what the scheduler accepted, it can send
//! on), and the script can have a worker answer the computes and copies it was given,
//! through real encoded frames, so that graphs run to their end.
//!
//! Steps (tag byte modulo 16, then the fields named):
//! 0 client joins · 1 worker joins (spec byte) · 2 client frame (client byte, chunk) ·
//! 3 worker frame (worker byte, chunk) · 4 worker lost (byte) · 5 client left (byte) ·
//! 6 clock (u64) · 7 worker answers its oldest compute or copy (worker byte, kind byte,
//! u32, u32) · 8 registry (byte) · 9 worker retires itself (byte) · 10 a client submits
//! a small graph (client byte, task count byte, then 3 bytes a task, wanted byte) ·
//! 11 a client releases keys (client byte, mask byte) · 12 a worker reports on any
//! task (worker byte, kind byte, task byte, byte) · 13 a client asks (client byte, kind
//! byte, byte) · 14 a worker connects again holding values (spec byte) · 15 a worker
//! lists values it holds (worker byte, count byte, 2 bytes a value).
//!
//! Steps 10 to 13 build their messages from a few bytes, over a small set of keys and
//! task ids, and send them through real frames: the fuzzer reaches deep states by
//! recombining steps rather than by forging archives.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use rask_proto::frame;
use rask_proto::msg::{
    run_keys, split_map_key, DepLoc, HeartbeatMsg, Holder, KeyRun, Resource, TaskErredMsg,
    TaskError, TaskFinishedMsg, TaskSpec, ToClient, ToScheduler, ToWorker, UpdateGraphMsg,
    WireMessage, MAX_RELEASE_RUN_KEYS,
};
use rask_proto::observe::ActivityKind;
use rask_proto::packed::Packed;
use rask_proto::{ClientId, Datum, LinkClass, TaskId, WorkerId};
use rask_scheduler_core::{
    Action, Activity, CoreConfig, NewMap, NewTask, SchedulerCore, SpillDirection, StreamKind,
    WorkerSpec,
};

use crate::input::{split_frame, welcomed_limits, Script, ScriptWriter};

/// Steps one input may take.
pub const MAX_STEPS: usize = 256;

/// What the scheduler server caps a task-stream answer at.
const MAX_STREAM_REPLY: usize = 10_000;

/// Step tags (see the module docs).
pub mod step {
    /// A client connects.
    pub const CLIENT_JOINS: u8 = 0;
    /// A worker connects; a spec byte follows.
    pub const WORKER_JOINS: u8 = 1;
    /// A client's frame: client byte, chunk.
    pub const CLIENT_FRAME: u8 = 2;
    /// A worker's frame: worker byte, chunk.
    pub const WORKER_FRAME: u8 = 3;
    /// A worker's connection ends: worker byte.
    pub const WORKER_LOST: u8 = 4;
    /// A client's connection ends: client byte.
    pub const CLIENT_LEFT: u8 = 5;
    /// The clock: u64.
    pub const CLOCK: u8 = 6;
    /// A worker answers: worker byte, kind byte, u32, u32.
    pub const ANSWER: u8 = 7;
    /// The workers' op registry: byte.
    pub const REGISTRY: u8 = 8;
    /// A worker asks to retire: worker byte.
    pub const RETIRE_SELF: u8 = 9;
    /// A client submits a small graph: client byte, task count byte, 3 bytes a task
    /// (key, dependencies mask, flags), wanted mask byte.
    pub const GRAPH: u8 = 10;
    /// A client releases keys: client byte, mask byte over the keys.
    pub const RELEASE: u8 = 11;
    /// A worker reports on any task: worker byte, kind byte, task byte, byte.
    pub const REPORT: u8 = 12;
    /// A client asks something: client byte, kind byte, byte.
    pub const ASK: u8 = 13;
    /// A worker connects again, holding values: spec byte.
    pub const REJOIN: u8 = 14;
    /// A worker lists values it holds: worker byte, count byte (bit 7: the last part),
    /// then a task byte and a size byte each.
    pub const HOLD: u8 = 15;
}

/// The keys the built steps use (a few, so that they meet).
const KEYS: [&str; 8] = [
    "inc-1",
    "inc-2",
    "add-1",
    "add-2",
    "sum-1",
    "gpu-1",
    "x",
    "('mat', 0, 1)",
];

/// A task id among the first slots of the core's slab, of generation 0 or 1.
fn small_task(b: u8) -> TaskId {
    TaskId(((b as u64 >> 4) & 1) << 32 | (b as u64 & 15))
}

/// A task a worker was asked to compute, as the harness remembers it.
struct Assigned {
    task: TaskId,
    deps: Vec<DepLoc>,
    run: u32,
}

struct Worker {
    id: WorkerId,
    name: String,
    addr: String,
    computes: VecDeque<Assigned>,
    copies: VecDeque<DepLoc>,
    /// Steals asked of it and not answered: (task, run).
    steals: VecDeque<(TaskId, u32)>,
    /// A worker that joined again holding values: what it said it holds so far, until
    /// its last `Holding` part joins it to the core (the server's `recovery.holding`).
    holding: Option<(WorkerSpec, Vec<(TaskId, u64)>)>,
}

/// A client's graph arriving in parts (the server's `Partial`).
#[derive(Default)]
struct Partial {
    tasks: Vec<NewTask>,
    wanted: Vec<String>,
    error: bool,
}

struct Harness {
    core: SchedulerCore,
    clients: Vec<(ClientId, Partial)>,
    workers: Vec<Worker>,
    next_client: u32,
    next_worker: u32,
    /// The server's clock, microseconds (what the core was last given).
    now_us: u64,
}

/// The script interpreter (see the module docs).
pub fn scheduler_core(data: &[u8]) {
    let mut s = Script::new(data);
    let mut h = Harness {
        core: SchedulerCore::new(CoreConfig {
            log_capacity: 512,
            stream_capacity: 64,
            max_prefixes: 8,
            ..CoreConfig::default()
        }),
        clients: Vec::new(),
        workers: Vec::new(),
        next_client: 1,
        next_worker: 1,
        now_us: 0,
    };
    for _ in 0..MAX_STEPS {
        if s.is_empty() {
            break;
        }
        let tag = s.u8() % 16;
        crate::trace(|| {
            let ids: Vec<u32> = h.workers.iter().map(|w| w.id.0).collect();
            let clients: Vec<u32> = h.clients.iter().map(|c| c.0 .0).collect();
            format!("step {tag}: workers {ids:?} clients {clients:?}")
        });
        match tag {
            step::CLIENT_JOINS => {
                let c = ClientId(h.next_client);
                h.next_client += 1;
                h.core.on_client_joined(c);
                h.clients.push((c, Partial::default()));
            }
            step::WORKER_JOINS => {
                let b = s.u8();
                h.worker_joins(b, false);
            }
            step::REJOIN => {
                let b = s.u8();
                h.worker_joins(b, true);
            }
            step::HOLD => {
                let who = s.u8();
                let n = s.u8();
                let tasks: Vec<(TaskId, u64)> = (0..n % 8)
                    .map(|_| (small_task(s.u8()), s.u8() as u64 * 100))
                    .collect();
                if let Some(i) = pick(h.workers.len(), who) {
                    let w = h.workers[i].id;
                    let last = n & 0x80 != 0;
                    let m = ToScheduler::Holding { tasks, last };
                    h.worker_frames(w, &frame_of(vec![m], &[]));
                }
            }
            step::CLIENT_FRAME => {
                let who = s.u8();
                let f = s.chunk();
                if let Some(i) = pick(h.clients.len(), who) {
                    h.client_frames(i, f);
                }
            }
            step::WORKER_FRAME => {
                let who = s.u8();
                let f = s.chunk();
                if let Some(i) = pick(h.workers.len(), who) {
                    let w = h.workers[i].id;
                    h.worker_frames(w, f);
                }
            }
            step::WORKER_LOST => {
                if let Some(i) = pick(h.workers.len(), s.u8()) {
                    let w = h.workers.remove(i).id;
                    h.worker_left(w);
                }
            }
            step::CLIENT_LEFT => {
                if let Some(i) = pick(h.clients.len(), s.u8()) {
                    let (c, _) = h.clients.remove(i);
                    h.core.on_client_left(c);
                }
            }
            step::CLOCK => {
                h.now_us = s.u64();
                h.core.set_now(h.now_us);
            }
            step::ANSWER => {
                let who = s.u8();
                let kind = s.u8();
                let (a, b) = (s.u32(), s.u32());
                if let Some(i) = pick(h.workers.len(), who) {
                    h.answer(i, kind, a, b);
                }
            }
            step::REGISTRY => match s.u8() % 3 {
                0 => h.core.set_registry(None::<Vec<String>>),
                1 => h
                    .core
                    .set_registry(Some(["add", "inc", "sum"].map(String::from))),
                _ => h.core.set_registry(Some(Vec::<String>::new())),
            },
            step::RETIRE_SELF => {
                if let Some(i) = pick(h.workers.len(), s.u8()) {
                    let w = h.workers[i].id;
                    h.batch_from_worker(
                        w,
                        vec![ToScheduler::CloseGracefully {
                            reason: "lifetime".into(),
                        }],
                        &[],
                    );
                }
            }
            step::GRAPH => {
                let who = s.u8();
                let n = s.u8();
                let specs: Vec<[u8; 3]> = (0..n % 6).map(|_| [s.u8(), s.u8(), s.u8()]).collect();
                let wanted = s.u8();
                if let Some(i) = pick(h.clients.len(), who) {
                    let (msg, bufs) = small_graph(&specs, wanted, n & 0x80 != 0);
                    h.client_frames(i, &frame_of(vec![msg], &bufs));
                }
            }
            step::RELEASE => {
                let (who, mask) = (s.u8(), s.u8());
                if let Some(i) = pick(h.clients.len(), who) {
                    let keys = masked(mask);
                    let msg = if who & 0x80 != 0 {
                        // Said as a map's keys: those of that form, a run each.
                        let runs = keys
                            .iter()
                            .filter_map(|k| split_map_key(k))
                            .map(|(prefix, first)| KeyRun {
                                prefix: prefix.into(),
                                first,
                                count: 1,
                            })
                            .collect();
                        ToScheduler::ReleaseMapKeys { runs }
                    } else {
                        ToScheduler::ReleaseKeys { keys }
                    };
                    h.client_frames(i, &frame_of(vec![msg], &[]));
                }
            }
            step::REPORT => {
                let (who, kind, t, b) = (s.u8(), s.u8(), s.u8(), s.u8());
                if let Some(i) = pick(h.workers.len(), who) {
                    let w = h.workers[i].id;
                    let task = small_task(t);
                    let other = WorkerId(1 + b as u32 % 4);
                    let msg = match kind % 5 {
                        0 => ToScheduler::TaskFinished(TaskFinishedMsg {
                            task,
                            nbytes: b as u64 * 1000,
                            duration_us: kind as u64,
                            // Past the core's cap too.
                            fetch_us: u64::from(t) << 17,
                            value: None,
                            run: u32::from(kind >> 5),
                        }),
                        1 => ToScheduler::TaskErred(TaskErredMsg {
                            task,
                            message: "report".into(),
                            run: u32::from(kind >> 5),
                        }),
                        2 => ToScheduler::MissingData {
                            task,
                            dep: small_task(b),
                            holder: other,
                        },
                        3 => ToScheduler::ReplicasAcquired { tasks: vec![task] },
                        _ => ToScheduler::ReplicaMissing {
                            task,
                            holder: other,
                        },
                    };
                    h.worker_frames(w, &frame_of(vec![msg], &[]));
                }
            }
            _ => {
                let (who, kind, b) = (s.u8(), s.u8(), s.u8());
                if let Some(i) = pick(h.clients.len(), who) {
                    let msg = match kind % 7 {
                        0 => ToScheduler::RetireWorkers {
                            req: 1,
                            names: h
                                .workers
                                .iter()
                                .enumerate()
                                .filter(|(k, _)| b >> (k % 8) & 1 != 0)
                                .map(|(_, w)| w.name.clone())
                                .collect(),
                        },
                        1 => ToScheduler::WorkersToClose {
                            req: 2,
                            target: b as u64 % 5,
                        },
                        2 => ToScheduler::AdaptiveTarget {
                            req: 3,
                            target_duration_us: (b as u64) << 12,
                        },
                        3 => ToScheduler::WhoHas {
                            req: 4,
                            keys: masked(b),
                        },
                        4 => ToScheduler::Story {
                            req: 5,
                            key: KEYS[b as usize % KEYS.len()].into(),
                        },
                        5 => ToScheduler::GetTaskStream {
                            req: 6,
                            since: b as u64 % 8,
                            limit: b as u64 >> 3,
                        },
                        _ => ToScheduler::Resubscribe { keys: masked(b) },
                    };
                    h.client_frames(i, &frame_of(vec![msg], &[]));
                }
            }
        }
        // Actions carried out may cause more (a worker told to close leaves).
        for _ in 0..8 {
            if !h.flush() {
                break;
            }
        }
        h.core.validate();
        // The read-only queries the dashboard and clients make.
        let _ = h.core.info();
        let _ = h.core.graph_view(64);
    }
}

fn pick(len: usize, b: u8) -> Option<usize> {
    (len > 0).then(|| b as usize % len)
}

impl Harness {
    /// A worker connects (`holds`: again, holding values it will list before it joins
    /// the core).
    fn worker_joins(&mut self, b: u8, holds: bool) {
        let id = WorkerId(self.next_worker);
        self.next_worker += 1;
        let program = b & 0x80 != 0;
        let spec = WorkerSpec {
            name: format!("worker-{}", id.0),
            addr: format!("tcp://127.0.0.1:{}", 40000 + id.0),
            host_id: ["host-a", "host-b", ""][(b % 3) as usize].into(),
            nthreads: 1 + (b as u32 >> 2) % 4,
            memory_limit: 1 << 30,
            resources: if b & 0x10 != 0 {
                vec![Resource {
                    name: "gpu".into(),
                    amount: 1.0,
                }]
            } else {
                vec![]
            },
            gpu: (b & 0x20 != 0).then_some((b as u32 >> 6) & 1),
            nvlink: if b & 0x40 != 0 { vec![0, 1] } else { vec![] },
            device_spill_at: if b & 0x20 != 0 { 1 << 30 } else { 0 },
            code: if program { 42 } else { 0 },
            base: !program,
        };
        self.workers.push(Worker {
            id,
            name: spec.name.clone(),
            addr: spec.addr.clone(),
            computes: VecDeque::new(),
            copies: VecDeque::new(),
            steals: VecDeque::new(),
            holding: holds.then(|| (spec.clone(), Vec::new())),
        });
        if !holds {
            self.core.on_worker_joined(id, spec);
        }
    }

    /// The server's `on_holding`: parts gathered; the last joins the worker to the core
    /// with them.
    fn holding(&mut self, w: WorkerId, tasks: Vec<(TaskId, u64)>, last: bool) {
        let Some(wk) = self.workers.iter_mut().find(|x| x.id == w) else {
            return;
        };
        let Some((_, held)) = &mut wk.holding else {
            return;
        };
        held.extend(tasks);
        if !last {
            return;
        }
        let (spec, held) = wk.holding.take().expect("invariant: just seen");
        self.core.on_worker_joined(w, spec);
        self.core.on_worker_holds(w, &held);
    }

    /// The server's `on_left` for a worker.
    fn worker_left(&mut self, w: WorkerId) {
        if self.core.has_worker(w) {
            self.core.on_worker_lost(w);
        }
    }

    fn client_frames(&mut self, i: usize, data: &[u8]) {
        each_batch::<ToScheduler>(data, |msgs, bufs| self.batch_from_client(i, msgs, bufs));
    }

    fn worker_frames(&mut self, w: WorkerId, data: &[u8]) {
        each_batch::<ToScheduler>(data, |msgs, bufs| self.batch_from_worker(w, msgs, bufs));
    }

    /// A client's batch, as the server's `on_batch` handles it; messages not meant for
    /// a client are ignored as there.
    fn batch_from_client(&mut self, i: usize, msgs: Vec<ToScheduler>, bufs: &[Bytes]) {
        let c = self.clients[i].0;
        crate::trace(|| format!("  from client {c:?}: {msgs:?}"));
        for m in msgs {
            match m {
                ToScheduler::UpdateGraph(g) => {
                    let part = &mut self.clients[i].1;
                    for mut t in g.tasks {
                        if part.error {
                            continue;
                        }
                        match t.args.localize(bufs) {
                            Ok(own) => part.tasks.push(NewTask {
                                key: t.key,
                                op: t.op,
                                args: t.args,
                                bufs: own,
                                deps: t.deps,
                                resources: t.resources,
                                code: None,
                            }),
                            Err(_) => part.error = true,
                        }
                    }
                    part.wanted.extend(g.wanted);
                    if g.more {
                        continue;
                    }
                    let Partial {
                        tasks,
                        wanted,
                        error,
                    } = std::mem::take(part);
                    if !error {
                        let _ = self.core.on_update_graph(c, tasks, &wanted);
                    }
                }
                ToScheduler::Map(m) => {
                    // The server's `on_map` (without a journal).
                    let args: Option<Vec<_>> = m
                        .args
                        .into_iter()
                        .map(|mut a| a.localize(bufs).ok().map(|own| (a, own)))
                        .collect();
                    if let Some(args) = args {
                        let map = NewMap {
                            prefix: m.prefix,
                            first: m.first,
                            op: m.op,
                            args,
                            resources: m.resources,
                            code: None,
                        };
                        let _ = self.core.on_map(c, map);
                    }
                }
                ToScheduler::ReleaseKeys { keys } => self.core.on_release_keys(c, &keys),
                // The server's `on_release_runs`: too many keys refused.
                ToScheduler::ReleaseMapKeys { runs } if run_keys(&runs) <= MAX_RELEASE_RUN_KEYS => {
                    self.core.on_release_runs(c, &runs)
                }
                ToScheduler::Resubscribe { keys } => {
                    // The server's `on_resubscribe`: the keys still known are wanted again.
                    let known: Vec<String> = keys
                        .into_iter()
                        .filter(|k| self.core.task_id(k).is_some())
                        .collect();
                    if !known.is_empty() {
                        let _ = self.core.on_update_graph(c, Vec::new(), &known);
                    }
                }
                ToScheduler::WhoHas { keys, .. } => {
                    for k in keys {
                        let _ = self.core.who_has(&k);
                    }
                }
                ToScheduler::Info { .. } => {
                    let _ = self.core.info();
                }
                ToScheduler::GetTaskStream { since, limit, .. } => {
                    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
                    let _ = self.core.task_stream(since, limit.min(MAX_STREAM_REPLY));
                    let _ = self.core.task_stream_last();
                }
                ToScheduler::Story { key, .. } => {
                    let _ = self.core.story(&key);
                }
                ToScheduler::RetireWorkers { req, names } => {
                    let mut ids: Vec<WorkerId> = self
                        .workers
                        .iter()
                        .filter(|w| {
                            self.core.has_worker(w.id)
                                && names.iter().any(|n| *n == w.name || *n == w.addr)
                        })
                        .map(|w| w.id)
                        .collect();
                    ids.sort_unstable();
                    self.core.on_retire_workers(c, req, &ids);
                }
                ToScheduler::AdaptiveTarget {
                    target_duration_us, ..
                } => {
                    let _ = self
                        .core
                        .adaptive_target(Duration::from_micros(target_duration_us));
                }
                ToScheduler::WorkersToClose { target, .. } => {
                    let target = usize::try_from(target).unwrap_or(usize::MAX);
                    let _ = self.core.workers_to_close(Some(target));
                }
                ToScheduler::ProgramFailed { code, message } => self.code_failed(code, &message),
                // The server's own business (programs' bytes, shutting down).
                ToScheduler::ProgramPart { .. } | ToScheduler::Shutdown { .. } => {}
                _ => {}
            }
        }
    }

    /// A program could not be sent or started: the tasks waiting for its workers fail.
    fn code_failed(&mut self, code: u64, message: &str) {
        if self.core.waits_for_code(code) {
            self.core.on_code_failed(code, message);
        }
    }

    /// A worker's batch, as the server's `on_batch` handles it.
    fn batch_from_worker(&mut self, w: WorkerId, msgs: Vec<ToScheduler>, _bufs: &[Bytes]) {
        crate::trace(|| format!("  from worker {w:?}: {msgs:?}"));
        for m in msgs {
            match m {
                // A report of a run freed and assigned again since is dropped, as the
                // server does.
                ToScheduler::TaskFinished(f) if !self.core.is_stale_run(f.task, f.run) => self
                    .core
                    .on_task_finished(w, f.task, f.nbytes, f.duration_us, f.fetch_us, f.value),
                ToScheduler::TaskErred(e) if !self.core.is_stale_run(e.task, e.run) => {
                    self.core.on_task_erred(w, e.task, e.message)
                }
                ToScheduler::TaskFinished(_) | ToScheduler::TaskErred(_) => {}
                ToScheduler::MissingData { task, dep, holder } => {
                    self.core.on_missing_data(w, task, dep, holder)
                }
                ToScheduler::ProgramFailed { code, message } => self.code_failed(code, &message),
                ToScheduler::CloseGracefully { .. } if self.core.has_worker(w) => {
                    self.core.on_close_gracefully(w)
                }
                ToScheduler::DeviceLost { message } => self.core.on_worker_failing(w, &message),
                ToScheduler::ReplicasAcquired { tasks } => {
                    self.core.on_replicas_acquired(w, &tasks)
                }
                ToScheduler::ReplicaMissing { task, holder } => {
                    self.core.on_replica_missing(w, task, holder)
                }
                ToScheduler::Heartbeat(hb) => self.heartbeat(w, *hb),
                ToScheduler::Holding { tasks, last } => self.holding(w, tasks, last),
                _ => {}
            }
        }
    }

    /// The server's `on_heartbeat`: device memory to the core, transfers and spills into
    /// its task stream (records naming an unknown link or direction skipped).
    fn heartbeat(&mut self, w: WorkerId, hb: HeartbeatMsg) {
        self.core.on_device_memory(w, hb.device_memory_used);
        let now = self.now_us;
        let records: Vec<Activity> = hb
            .activity
            .iter()
            .filter_map(|a| {
                let kind = match &a.kind {
                    ActivityKind::Transfer { from, link } => StreamKind::Transfer {
                        from: *from,
                        link: link.parse::<LinkClass>().ok()?,
                    },
                    ActivityKind::Spill { direction } => {
                        StreamKind::Spill(SpillDirection::from_name(direction)?)
                    }
                };
                Some(Activity {
                    task: a.task,
                    kind,
                    start_us: now.saturating_sub(a.start_ago_us),
                    stop_us: now.saturating_sub(a.stop_ago_us),
                    nbytes: a.nbytes,
                })
            })
            .collect();
        if !records.is_empty() && self.workers.iter().any(|x| x.id == w) {
            self.core.on_activity(w, &records);
        }
    }

    /// A worker answers the oldest compute (or copy) it was given, with a real frame.
    fn answer(&mut self, i: usize, kind: u8, a: u32, b: u32) {
        let w = self.workers[i].id;
        // Every sixth answer is to a steal: released if the worker has not started that
        // run (it is still among its computes), kept otherwise.
        if kind % 6 == 5 {
            let Some((task, run)) = self.workers[i].steals.pop_front() else {
                return;
            };
            let computes = &mut self.workers[i].computes;
            let before = computes.len();
            computes.retain(|c| !(c.task == task && c.run == run));
            let released = computes.len() < before;
            let header = ToScheduler::encode_batch(&vec![ToScheduler::StealResponse {
                task,
                run,
                released,
            }]);
            let f = frame::encode_frame(&header, &[]);
            self.worker_frames(w, &f);
            return;
        }
        let msg = match kind % 5 {
            0..=2 => {
                let Some(c) = self.workers[i].computes.pop_front() else {
                    return;
                };
                match kind % 5 {
                    0 => ToScheduler::TaskFinished(TaskFinishedMsg {
                        task: c.task,
                        nbytes: a as u64,
                        duration_us: b as u64,
                        fetch_us: u64::from(a) << 10,
                        value: (a & 1 != 0).then(|| Packed::new(&Datum::Int(b as i64))),
                        run: c.run,
                    }),
                    1 => ToScheduler::TaskErred(TaskErredMsg {
                        task: c.task,
                        message: "boom".into(),
                        run: c.run,
                    }),
                    _ => match c.deps.get(a as usize % c.deps.len().max(1)) {
                        Some(d) => ToScheduler::MissingData {
                            task: c.task,
                            dep: d.task,
                            holder: d.holders.first().copied().unwrap_or(WorkerId(u32::MAX)),
                        },
                        None => return,
                    },
                }
            }
            3 => {
                let Some(d) = self.workers[i].copies.pop_front() else {
                    return;
                };
                ToScheduler::ReplicasAcquired {
                    tasks: vec![d.task],
                }
            }
            _ => {
                let Some(d) = self.workers[i].copies.pop_front() else {
                    return;
                };
                ToScheduler::ReplicaMissing {
                    task: d.task,
                    holder: d.holders.first().copied().unwrap_or(WorkerId(u32::MAX)),
                }
            }
        };
        // Through the wire, as the worker sends it.
        let header = ToScheduler::encode_batch(&vec![msg]);
        let f = frame::encode_frame(&header, &[]);
        self.worker_frames(w, &f);
    }

    /// Carries out the core's actions as the server routes them.
    fn flush(&mut self) -> bool {
        let actions = self.core.take_actions();
        let any = !actions.is_empty();
        // Workers told to close leave after the step's messages are sent.
        let mut closed = Vec::new();
        for a in actions {
            crate::trace(|| format!("  {a:?}"));
            match a {
                Action::Compute { worker, msg, bufs } => {
                    // What the scheduler accepted travels on: encoded, decoded, its
                    // buffers found again by the worker.
                    let header = ToWorker::encode_batch(&vec![ToWorker::Compute(msg.clone())]);
                    let f = frame::encode_frame(
                        &header,
                        &bufs.iter().map(|b| &b[..]).collect::<Vec<_>>(),
                    );
                    let (raw, _) = split_frame(&f, &welcomed_limits())
                        .map_err(|e| format!("{e:?}"))
                        .expect("a compute frame splits");
                    let mut back =
                        ToWorker::decode_batch(&raw.header).expect("a compute frame decodes");
                    let Some(ToWorker::Compute(mut c)) = back.pop() else {
                        panic!("a compute decodes as a compute");
                    };
                    let own = c
                        .args
                        .datum_mut()
                        .localize(&raw.bufs)
                        .expect("a compute's buffers travel with it");
                    assert_eq!(own, bufs, "a compute's buffers arrive as sent");
                    assert_eq!(c.task, msg.task);
                    // A compute for a worker that left since is dropped, as the server
                    // drops it (the core has placed the task again).
                    if let Some(wk) = self.workers.iter_mut().find(|w| w.id == worker) {
                        wk.computes.push_back(Assigned {
                            task: msg.task,
                            deps: msg.deps,
                            run: msg.run,
                        });
                    }
                }
                Action::Free { worker, task } => {
                    if let Some(wk) = self.workers.iter_mut().find(|w| w.id == worker) {
                        wk.computes.retain(|c| c.task != task);
                    }
                }
                Action::Steal { worker, task, run } => {
                    if let Some(wk) = self.workers.iter_mut().find(|w| w.id == worker) {
                        wk.steals.push_back((task, run));
                    }
                }
                Action::AcquireReplica { worker, dep } => {
                    if let Some(wk) = self.workers.iter_mut().find(|w| w.id == worker) {
                        wk.copies.push_back(dep);
                    }
                }
                Action::CloseWorker { worker } => closed.push(worker),
                Action::KeyInMemory {
                    key,
                    task,
                    nbytes,
                    holders,
                    value,
                    ..
                } => {
                    pass_on(ToClient::Workers {
                        holders: holders
                            .iter()
                            .map(|w| Holder {
                                worker: *w,
                                addr: format!("tcp://127.0.0.1:{}", 40000 + w.0),
                                shm_addr: String::new(),
                                host_id: "host-a".into(),
                                pid: 1,
                                device: "host".into(),
                            })
                            .collect(),
                    });
                    pass_on(ToClient::KeyInMemory {
                        key: key.into(),
                        task,
                        nbytes,
                        holders,
                        value,
                    })
                }
                Action::KeyErred { key, error, .. } => pass_on(ToClient::KeyErred {
                    key: key.to_string(),
                    error: TaskError {
                        key: error.key.clone(),
                        op: error.op.clone(),
                        message: error.message.clone(),
                    },
                }),
                Action::Retired { .. } => {}
            }
        }
        for worker in closed {
            if let Some(i) = self.workers.iter().position(|w| w.id == worker) {
                self.workers.remove(i);
                self.worker_left(worker);
            }
        }
        any
    }
}

/// What the scheduler tells a client travels: encoded, it decodes to the same message
/// (re-encoded to the same bytes: a value may be NaN).
fn pass_on(m: ToClient) {
    let once = ToClient::encode_batch(&vec![m]);
    let back = ToClient::decode_batch(&once).expect("a message to a client decodes");
    assert_eq!(
        ToClient::encode_batch(&back).as_slice(),
        once.as_slice(),
        "a message to a client arrives as sent"
    );
}

/// The keys a mask byte picks.
fn masked(mask: u8) -> Vec<String> {
    KEYS.iter()
        .enumerate()
        .filter(|(k, _)| mask >> k & 1 != 0)
        .map(|(_, key)| key.to_string())
        .collect()
}

/// A graph from a few bytes a task: its key, the keys it reads (a mask: any of the keys,
/// itself included, known or not), and flags (a byte argument, a GPU need, the op). The
/// client's builder would refuse some of these; the scheduler must too.
fn small_graph(specs: &[[u8; 3]], wanted: u8, more: bool) -> (ToScheduler, Vec<Bytes>) {
    let mut bufs = Vec::new();
    let tasks = specs
        .iter()
        .map(|&[key, deps, flags]| {
            let deps = masked(deps);
            let mut args: Vec<Datum> = (0..deps.len() as u32).map(Datum::Ref).collect();
            if flags & 1 != 0 {
                args.push(Datum::Buf(bufs.len() as u32));
                bufs.push(Bytes::from(vec![flags; 8]));
            }
            TaskSpec {
                key: KEYS[key as usize % KEYS.len()].into(),
                op: ["inc", "add", "sum", "array.matmul"][(flags >> 1) as usize % 4].into(),
                args: Datum::List(args),
                deps,
                resources: if flags & 0x10 != 0 {
                    vec![Resource {
                        name: "gpu".into(),
                        amount: 1.0,
                    }]
                } else {
                    vec![]
                },
            }
        })
        .collect();
    let msg = ToScheduler::UpdateGraph(UpdateGraphMsg {
        tasks,
        wanted: masked(wanted),
        more,
    });
    (msg, bufs)
}

/// One frame of `msgs`, as a sender's writer puts it on the wire.
fn frame_of(msgs: Vec<ToScheduler>, bufs: &[Bytes]) -> Vec<u8> {
    let header = ToScheduler::encode_batch(&msgs);
    frame::encode_frame(&header, &bufs.iter().map(|b| &b[..]).collect::<Vec<_>>())
}

/// Splits the frames of `data` and hands each decoded batch to `each`.
fn each_batch<M: WireMessage>(data: &[u8], mut each: impl FnMut(Vec<M>, &[Bytes])) {
    let mut rest = data;
    for _ in 0..crate::decode::MAX_FRAMES {
        let Ok((f, used)) = split_frame(rest, &welcomed_limits()) else {
            return;
        };
        rest = &rest[used..];
        if let Ok(msgs) = M::decode_batch(&f.header) {
            each(msgs, &f.bufs);
        }
    }
}

/// Seeds: scripts a capture writes (see the capture example).
pub fn script() -> ScriptWriter {
    ScriptWriter::default()
}
