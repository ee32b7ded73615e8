//! The worker's state machine driven by decoded messages: a step script of frames of
//! `ToWorker` batches from the scheduler, handed to a [`WorkerCore`] as the worker's
//! event loop hands them (a compute's arguments moved out of the frame first, frees
//! carried out in order), interleaved with what the worker's own machinery reports back
//! (a task ran, a fetch returned or failed, memory paused the worker). The harness keeps
//! the worker's side (specs, store, tasks running, fetches in flight) and checks, after
//! every step, that the core and it agree on what runs.
//!
//! Steps (tag byte modulo 9, then the fields named):
//! 0 scheduler frames (chunk) · 1 a running task ends (index byte, outcome byte, u32) ·
//! 2 a fetch returns (index byte, mask byte) · 3 a fetch fails (index byte) ·
//! 4 pause or resume (byte) · 5 a compute (task byte, deps byte, holders byte) ·
//! 6 a free (task byte) · 7 copies asked (task byte, holders byte) · 8 the worker joins
//! its scheduler again.
//! The script's first byte is the worker's thread count (1 to 4).

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use rask_proto::frame;
use rask_proto::msg::{ComputeMsg, DepLoc, TaskFinishedMsg, ToScheduler, ToWorker, WireMessage};
use rask_proto::packed::Packed;
use rask_proto::{Datum, TaskId, WorkerId};
use rask_worker_core::{Assigned, Finished, Instruction, WorkerCore};

use crate::input::{split_frame, welcomed_limits, Script};

/// Steps one input may take.
pub const MAX_STEPS: usize = 256;

/// Step tags (see the module docs).
pub mod step {
    /// Scheduler frames: chunk.
    pub const FRAMES: u8 = 0;
    /// A running task ends: index byte, outcome byte, u32.
    pub const EXECUTED: u8 = 1;
    /// A fetch returns: index byte, mask byte.
    pub const FETCHED: u8 = 2;
    /// A fetch fails: index byte.
    pub const FETCH_FAILED: u8 = 3;
    /// Pause (odd byte) or resume.
    pub const PAUSE: u8 = 4;
    /// A compute: task byte, deps byte, holders byte.
    pub const COMPUTE: u8 = 5;
    /// A free: task byte.
    pub const FREE: u8 = 6;
    /// Copies asked: task byte, holders byte.
    pub const REPLICAS: u8 = 7;
    /// The worker joins its scheduler again as a new member.
    pub const REJOIN: u8 = 8;
}

struct Harness {
    core: WorkerCore,
    nthreads: usize,
    /// Compute requests by task, their buffers moved out of the frame (the worker's
    /// `specs`).
    specs: HashMap<TaskId, (ComputeMsg, Vec<Bytes>)>,
    /// Values in the local store.
    store: HashSet<TaskId>,
    /// Tasks handed to an executor, in order.
    running: Vec<TaskId>,
    /// Fetches in flight: the peer asked, the tasks asked for.
    fetches: Vec<(WorkerId, Vec<TaskId>)>,
    /// The scheduler said close: the worker stops reading.
    closed: bool,
}

/// The script interpreter (see the module docs).
pub fn worker_core(data: &[u8]) {
    let mut s = Script::new(data);
    let nthreads = 1 + s.u8() as usize % 4;
    let mut h = Harness {
        core: WorkerCore::new(nthreads),
        nthreads,
        specs: HashMap::new(),
        store: HashSet::new(),
        running: Vec::new(),
        fetches: Vec::new(),
        closed: false,
    };
    for step in 0..MAX_STEPS {
        if s.is_empty() || h.closed {
            break;
        }
        // A clock that moves, so that waits for inputs are measured.
        h.core.set_now(step as u64 * 100);
        let tag = s.u8() % 9;
        crate::trace(|| {
            format!(
                "step {tag}: running {:?}, fetches {:?}",
                h.running, h.fetches
            )
        });
        match tag {
            step::FRAMES => {
                let f = s.chunk();
                h.frames(f);
            }
            step::EXECUTED => {
                let (i, outcome, n) = (s.u8(), s.u8(), s.u32());
                if !h.running.is_empty() {
                    let task = h.running.remove(i as usize % h.running.len());
                    let result = if outcome & 1 == 0 {
                        // The executor stores the value before it reports.
                        h.store.insert(task);
                        Ok(Finished {
                            nbytes: n as u64,
                            on_device: outcome & 2 != 0,
                        })
                    } else {
                        Err("the op failed".into())
                    };
                    h.core.on_executed(task, (outcome >> 2) as u64 * 17, result);
                }
            }
            step::FETCHED => {
                let (i, mask) = (s.u8(), s.u8());
                if !h.fetches.is_empty() {
                    let (from, tasks) = h.fetches.remove(i as usize % h.fetches.len());
                    let (got, missing): (Vec<_>, Vec<_>) = tasks
                        .iter()
                        .enumerate()
                        .partition(|(k, _)| mask >> (k % 8) & 1 == 0);
                    // A copy nobody waits for any more is not stored (the worker's loop).
                    let got: Vec<TaskId> = got
                        .into_iter()
                        .map(|(_, t)| *t)
                        .filter(|t| h.core.fetching(*t))
                        .collect();
                    let missing: Vec<TaskId> = missing.into_iter().map(|(_, t)| *t).collect();
                    h.store.extend(got.iter().copied());
                    h.core.on_fetched(from, &got, &missing);
                }
            }
            step::FETCH_FAILED => {
                let i = s.u8();
                if !h.fetches.is_empty() {
                    let (from, tasks) = h.fetches.remove(i as usize % h.fetches.len());
                    h.core.on_fetch_failed(from, &tasks);
                }
            }
            step::PAUSE => {
                let b = s.u8();
                h.core.set_paused(b & 1 != 0);
            }
            step::COMPUTE => {
                let (t, deps, holders) = (s.u8(), s.u8(), s.u8());
                let c = ComputeMsg {
                    task: TaskId(t as u64 % 16),
                    op: ["inc", "add", "sum"][t as usize % 3].into(),
                    args: Datum::List(
                        (0..deps % 4)
                            .map(|i| Datum::Ref(i as u32))
                            .chain(std::iter::once(Datum::Buf(0)))
                            .collect(),
                    )
                    .into(),
                    deps: (0..deps % 4)
                        .map(|k| DepLoc {
                            task: TaskId(((deps >> 2) as u64 + k as u64 * 3) % 16),
                            nbytes: 8,
                            holders: (0..holders % 3)
                                .map(|j| WorkerId((holders as u32 >> 2) % 4 + j as u32))
                                .collect(),
                        })
                        .collect(),
                    priority: (t >> 4) as u64,
                    report_value: t & 0x80 != 0,
                    run: u32::from(holders >> 4),
                };
                h.send(vec![ToWorker::Compute(c)], &[b"payload"]);
            }
            step::FREE => {
                let t = s.u8();
                h.send(
                    vec![ToWorker::Free {
                        tasks: vec![TaskId(t as u64 % 16)],
                    }],
                    &[],
                );
            }
            step::REJOIN => {
                // Its connection to the scheduler came back as a new member: what it
                // was given no longer stands (replies to fetches in flight may still
                // come, and runs end).
                let held = h.core.on_rejoined();
                assert!(
                    held.windows(2).all(|p| p[0] < p[1]),
                    "held values sorted, once"
                );
                pass_on(ToScheduler::Holding {
                    tasks: held.iter().map(|t| (*t, 8)).collect(),
                    last: true,
                });
            }
            _ => {
                let (t, holders) = (s.u8(), s.u8());
                let tasks = vec![DepLoc {
                    task: TaskId(t as u64 % 16),
                    nbytes: 8,
                    holders: (0..holders % 3)
                        .map(|j| WorkerId((holders as u32 >> 2) % 4 + j as u32))
                        .collect(),
                }];
                h.send(vec![ToWorker::AcquireReplicas { tasks }], &[]);
            }
        }
        h.drive();
        h.check();
    }
}

/// What the worker tells the scheduler travels: encoded, it decodes as sent.
fn pass_on(m: ToScheduler) {
    let once = ToScheduler::encode_batch(&vec![m]);
    let back = ToScheduler::decode_batch(&once).expect("a message to the scheduler decodes");
    assert_eq!(
        ToScheduler::encode_batch(&back).as_slice(),
        once.as_slice(),
        "a message to the scheduler arrives as sent"
    );
}

impl Harness {
    /// A batch from the scheduler, through a real frame.
    fn send(&mut self, msgs: Vec<ToWorker>, bufs: &[&[u8]]) {
        let header = ToWorker::encode_batch(&msgs);
        let f = frame::encode_frame(&header, bufs);
        self.frames(&f);
    }

    fn frames(&mut self, data: &[u8]) {
        let mut rest = data;
        for _ in 0..crate::decode::MAX_FRAMES {
            let Ok((f, used)) = split_frame(rest, &welcomed_limits()) else {
                return;
            };
            rest = &rest[used..];
            if let Ok(msgs) = ToWorker::decode_batch(&f.header) {
                crate::trace(|| format!("  batch {msgs:?}"));
                self.batch(msgs, &f.bufs);
            }
            if self.closed {
                return;
            }
        }
    }

    /// The event loop's handling of one batch from the scheduler.
    fn batch(&mut self, msgs: Vec<ToWorker>, bufs: &[Bytes]) {
        let mut computes = Vec::new();
        for m in msgs {
            match m {
                ToWorker::Compute(mut c) => {
                    if let Ok(own) = c.args.datum_mut().localize(bufs) {
                        computes.push(c.task);
                        self.specs.insert(c.task, (c, own));
                    }
                    // Else the worker reports the task erred and keeps nothing of it.
                }
                ToWorker::Free { tasks } => {
                    self.assign(&mut computes);
                    for t in tasks {
                        self.core.on_free(t);
                    }
                    self.drive();
                }
                ToWorker::Steal { task, run } => {
                    self.assign(&mut computes);
                    self.core.on_steal(task, run);
                    self.drive();
                }
                ToWorker::Close { .. } => {
                    self.closed = true;
                    return;
                }
                ToWorker::AcquireReplicas { tasks } => self.core.on_acquire_replicas(tasks),
                ToWorker::Peers { .. }
                | ToWorker::Echo { .. }
                | ToWorker::PeerGone { .. }
                | ToWorker::RunProgram { .. }
                | ToWorker::ProgramPart { .. }
                | ToWorker::StopProgram { .. } => {}
            }
        }
        self.assign(&mut computes);
    }

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

    /// Carries out the core's instructions until it has none (the worker's `drive`).
    fn drive(&mut self) {
        for _ in 0..10_000 {
            let out = self.core.take();
            if out.is_empty() {
                return;
            }
            for i in out {
                crate::trace(|| format!("  {i:?}"));
                match i {
                    Instruction::Fetch { from, tasks } => {
                        assert!(!tasks.is_empty(), "a fetch of nothing from {from}");
                        self.fetches.push((from, tasks));
                    }
                    Instruction::Execute { task, .. } => {
                        assert!(
                            !self.running.contains(&task),
                            "task {task} started while it runs"
                        );
                        match self.specs.remove(&task) {
                            Some((spec, bufs)) => {
                                // The worker builds the arguments from its store.
                                let present =
                                    spec.deps.iter().all(|d| self.store.contains(&d.task));
                                if present {
                                    let deps: Vec<rask_proto::Value> = spec
                                        .deps
                                        .iter()
                                        .map(|d| rask_proto::Value::Int(d.task.0 as i64))
                                        .collect();
                                    let refs: Vec<&rask_proto::Value> = deps.iter().collect();
                                    let _ = spec.args.datum().to_value(&bufs, &refs);
                                    self.running.push(task);
                                } else {
                                    self.core.on_executed(
                                        task,
                                        0,
                                        Err("internal: an input is not in the store".into()),
                                    );
                                }
                            }
                            None => self.core.on_executed(
                                task,
                                0,
                                Err("internal: task spec missing".into()),
                            ),
                        }
                    }
                    Instruction::Finished {
                        task,
                        nbytes,
                        duration_us,
                        with_value,
                        run,
                        fetch_us,
                    } => pass_on(ToScheduler::TaskFinished(TaskFinishedMsg {
                        task,
                        nbytes,
                        duration_us,
                        fetch_us,
                        value: with_value.then(|| Packed::new(&Datum::Int(1))),
                        run,
                    })),
                    Instruction::Send(m) => pass_on(m),
                    Instruction::Discard { task } => {
                        self.store.remove(&task);
                    }
                    Instruction::Drop { task } => {
                        self.specs.remove(&task);
                    }
                }
            }
        }
        panic!("the worker core gives instructions without end");
    }

    /// The core and the harness agree on what runs, no more runs than threads, and the
    /// core's bookkeeping holds (`WorkerCore::validate`).
    fn check(&self) {
        assert_eq!(
            self.core.executing(),
            self.running.len(),
            "tasks running: the core's count and the executors'"
        );
        assert!(
            self.running.len() <= self.nthreads,
            "more tasks run than threads"
        );
        if let Err(e) = self.core.validate() {
            panic!("worker core: {e}");
        }
    }
}
