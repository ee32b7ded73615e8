//! Shipping programs: a client's typed ops run on workers of its own program, which the
//! cluster's workers start when asked.
//!
//! When a task of a program's code has no worker to run on, every worker that runs
//! programs is asked to start one (`RunProgram`). A worker whose host has no copy of the
//! executable asks for it (`GetProgram`); the scheduler sends the copy it keeps, or first
//! asks a client of the program to upload it (`SendProgram`), once. A program that cannot
//! be sent or started anywhere fails its waiting tasks with the reasons, worker by worker.
//! When its last client leaves, its workers are stopped.

use bytes::Bytes;
use rask_proto::msg::{ProgramInfo, ProgramStatusMsg, ToClient, ToWorker};
use rask_proto::{ClientId, WorkerId};
use rustc_hash::{FxHashMap, FxHashSet};
use tracing::{info, warn};

use crate::server::Server;

/// Executables travel in parts of this many bytes (well inside any frame limit).
pub const PROGRAM_PART: usize = 4 << 20;

/// Executables the scheduler keeps after their clients left, at most (the most recently
/// used; a program in use is always kept).
const KEPT_IDLE: usize = 4;

/// The largest executable accepted.
pub const MAX_PROGRAM: u64 = 4 << 30;

/// One program the scheduler has heard of.
pub(crate) struct Program {
    pub(crate) info: ProgramInfo,
    /// Connected clients that run it.
    pub(crate) clients: FxHashSet<ClientId>,
    /// The executable, once uploaded.
    pub(crate) bytes: Option<Bytes>,
    /// An upload in progress: its bytes so far, and the client sending it.
    pub(crate) upload: Option<(Vec<u8>, ClientId)>,
    /// Workers waiting for the executable.
    pub(crate) waiting: Vec<WorkerId>,
    /// Workers asked to start it, and those that could not (with why).
    pub(crate) started_on: FxHashSet<WorkerId>,
    pub(crate) failed_on: Vec<(String, String)>,
    pub(crate) uploads: u32,
    pub(crate) downloads: u32,
    /// Why it cannot run, once it is known to run nowhere.
    pub(crate) error: Option<String>,
    /// Last use, for keeping the recently used executables.
    pub(crate) used: u64,
}

/// A connected client's program: its code and which of its ops are typed.
pub(crate) struct ClientProgram {
    pub(crate) code: u64,
    pub(crate) ops: FxHashSet<String>,
}

impl Program {
    fn new(info: ProgramInfo) -> Program {
        Program {
            info,
            clients: FxHashSet::default(),
            bytes: None,
            upload: None,
            waiting: Vec::new(),
            started_on: FxHashSet::default(),
            failed_on: Vec::new(),
            uploads: 0,
            downloads: 0,
            error: None,
            used: 0,
        }
    }

    fn label(&self) -> String {
        format!("{} ({:016x})", self.info.name, self.info.code)
    }
}

impl Server {
    /// A client with a program joined.
    pub(crate) fn program_client_joined(&mut self, c: ClientId, info: ProgramInfo) {
        self.clock += 1;
        let p = self
            .programs
            .entry(info.code)
            .or_insert_with(|| Program::new(info.clone()));
        // A client of the same code may be shippable where an earlier one was not.
        p.info.shippable |= info.shippable;
        p.clients.insert(c);
        p.used = self.clock;
    }

    /// A client left: a program none of the connected clients runs is stopped.
    pub(crate) fn program_client_left(&mut self, c: ClientId) {
        let Some(cp) = self.client_programs.remove(&c) else {
            return;
        };
        let Some(p) = self.programs.get_mut(&cp.code) else {
            return;
        };
        p.clients.remove(&c);
        if let Some((_, from)) = &p.upload {
            if *from == c {
                p.upload = None;
            }
        }
        if !p.clients.is_empty() {
            return;
        }
        info!(program = %p.label(), "no client runs the program any more: its workers stop");
        for w in p.started_on.drain() {
            if let Some(tx) = self.workers.get(&w).and_then(|c| c.tx.as_ref()) {
                let _ = tx.send(ToWorker::StopProgram { code: cp.code });
            }
        }
        p.failed_on.clear();
        p.waiting.clear();
        p.error = None;
        self.forget_idle_programs();
    }

    /// Keeps the executables of at most [`KEPT_IDLE`] programs no client runs.
    fn forget_idle_programs(&mut self) {
        let mut idle: Vec<(u64, u64)> = self
            .programs
            .iter()
            .filter(|(_, p)| p.clients.is_empty())
            .map(|(code, p)| (p.used, *code))
            .collect();
        if idle.len() <= KEPT_IDLE {
            return;
        }
        idle.sort_unstable();
        for (_, code) in &idle[..idle.len() - KEPT_IDLE] {
            self.programs.remove(code);
        }
    }

    /// Makes sure the tasks of program `code` have, or will have, a worker: asks the
    /// workers that run programs to start one, or fails the tasks if none can.
    pub(crate) fn start_program(&mut self, code: u64) {
        if !self.core.waits_for_code(code) {
            return;
        }
        if self.workers.values().any(|w| w.code == code) {
            return; // its workers are busy or just joined; the tasks wait for them
        }
        let Some(p) = self.programs.get_mut(&code) else {
            return;
        };
        if let Some(e) = &p.error {
            let e = e.clone();
            self.core.on_code_failed(code, &e);
            return;
        }
        if !p.info.shippable {
            let e = format!(
                "no worker of this cluster runs the program {} that defines this op, and the program cannot be started on the cluster's workers: its main does not begin with rask::worker_entry()",
                p.label()
            );
            self.core.on_code_failed(code, &e);
            return;
        }
        let mut asked = 0;
        for (id, w) in &self.workers {
            if !w.runs_programs || p.started_on.contains(id) {
                continue;
            }
            let Some(tx) = &w.tx else { continue };
            if tx
                .send(ToWorker::RunProgram {
                    program: p.info.clone(),
                })
                .is_ok()
            {
                p.started_on.insert(*id);
                asked += 1;
            }
        }
        if asked > 0 {
            info!(program = %p.label(), workers = asked, "asking workers to start the program's workers");
        } else if p.started_on.is_empty() && !self.workers.is_empty() {
            let e = format!(
                "no worker of this cluster runs the program {}, and none starts programs (all run with --no-programs, or are programs' own workers)",
                p.label()
            );
            self.core.on_code_failed(code, &e);
        }
    }

    /// A worker that runs programs joined: programs waiting for workers start there.
    pub(crate) fn programs_on_worker_joined(&mut self) {
        let waiting: Vec<u64> = self
            .programs
            .iter()
            .filter(|(_, p)| !p.clients.is_empty() && p.error.is_none())
            .map(|(code, _)| *code)
            .collect();
        for code in waiting {
            self.start_program(code);
        }
    }

    /// A worker left: it no longer runs, waits for, or starts anything.
    pub(crate) fn programs_on_worker_left(&mut self, w: WorkerId) {
        for p in self.programs.values_mut() {
            p.started_on.remove(&w);
            p.waiting.retain(|x| *x != w);
        }
    }

    /// A worker asks for a program's executable.
    pub(crate) fn on_get_program(&mut self, w: WorkerId, code: u64) {
        let Some(p) = self.programs.get_mut(&code) else {
            self.stop_on(w, code);
            return;
        };
        if p.bytes.is_some() {
            self.send_program(w, code);
            return;
        }
        if !p.waiting.contains(&w) {
            p.waiting.push(w);
        }
        if p.upload.is_some() {
            return;
        }
        // Ask one of its clients for it.
        let Some(&c) = p.clients.iter().min() else {
            return;
        };
        p.upload = Some((Vec::new(), c));
        info!(program = %p.label(), client = c.0, bytes = p.info.size, "asking the client for the program's executable");
        self.to_client(c, ToClient::SendProgram { code });
    }

    fn stop_on(&self, w: WorkerId, code: u64) {
        if let Some(tx) = self.workers.get(&w).and_then(|c| c.tx.as_ref()) {
            let _ = tx.send(ToWorker::StopProgram { code });
        }
    }

    /// Sends the executable to a worker, in parts (slices of the one copy kept).
    fn send_program(&mut self, w: WorkerId, code: u64) {
        let Some(p) = self.programs.get_mut(&code) else {
            return;
        };
        let Some(bytes) = p.bytes.clone() else { return };
        let Some(tx) = self.workers.get(&w).and_then(|c| c.tx.as_ref()) else {
            return;
        };
        p.downloads += 1;
        let size = bytes.len() as u64;
        let mut offset = 0;
        while offset < bytes.len() || offset == 0 {
            let end = (offset + PROGRAM_PART).min(bytes.len());
            let part = bytes.slice(offset..end);
            let msg = ToWorker::ProgramPart {
                code,
                offset: offset as u64,
                size,
                buf: 0,
            };
            if tx.send_with(msg, vec![part]).is_err() || end == bytes.len() {
                break;
            }
            offset = end;
        }
    }

    /// A part of an executable from a client.
    pub(crate) fn on_program_part(
        &mut self,
        c: ClientId,
        code: u64,
        offset: u64,
        size: u64,
        data: Option<&Bytes>,
    ) {
        let Some(p) = self.programs.get_mut(&code) else {
            return;
        };
        let problem = match (&mut p.upload, data) {
            (Some((buf, from)), Some(data)) if *from == c => {
                if size != p.info.size || size > MAX_PROGRAM {
                    Some(format!(
                        "the client announced {} bytes and sends {size}",
                        p.info.size
                    ))
                } else if offset != buf.len() as u64 {
                    Some(format!(
                        "a part at byte {offset} where byte {} was due",
                        buf.len()
                    ))
                } else if offset + data.len() as u64 > size {
                    Some(format!(
                        "{} bytes past the end",
                        offset + data.len() as u64 - size
                    ))
                } else {
                    buf.extend_from_slice(data);
                    None
                }
            }
            (Some((_, from)), _) if *from == c => Some("a part without its bytes".into()),
            _ => {
                warn!(client = c.0, program = %p.label(), "ignoring a program part nobody asked this client for");
                return;
            }
        };
        if let Some(problem) = problem {
            let e = format!("the upload of program {} failed: {problem}", p.label());
            self.program_failed(code, e);
            return;
        }
        let Some((buf, _)) = &p.upload else { return };
        if (buf.len() as u64) < size {
            return;
        }
        let Some((buf, _)) = p.upload.take() else {
            return;
        };
        p.bytes = Some(Bytes::from(buf));
        p.uploads += 1;
        info!(program = %p.label(), bytes = size, "received the program's executable");
        let waiting = std::mem::take(&mut p.waiting);
        for w in waiting {
            self.send_program(w, code);
        }
    }

    /// A client could not send its program (`worker` none), or a worker could not start
    /// it; `from` names which.
    pub(crate) fn on_program_failed(
        &mut self,
        worker: Option<WorkerId>,
        from: String,
        code: u64,
        message: String,
    ) {
        let Some(p) = self.programs.get_mut(&code) else {
            return;
        };
        warn!(program = %p.label(), "{from}: {message}");
        let Some(w) = worker else {
            let e = format!("the client cannot send program {}: {message}", p.label());
            self.program_failed(code, e);
            return;
        };
        p.started_on.remove(&w);
        p.failed_on.push((from, message));
        // Still starting somewhere, or already running: the tasks wait.
        if !p.started_on.is_empty() || self.workers.values().any(|w| w.code == code) {
            return;
        }
        let reasons: Vec<String> = p
            .failed_on
            .iter()
            .map(|(who, why)| format!("{who}: {why}"))
            .collect();
        let e = format!(
            "the program {} cannot run on this cluster's workers: {}",
            p.label(),
            reasons.join("; ")
        );
        self.program_failed(code, e);
    }

    /// The program cannot run: its waiting tasks fail, and so do those submitted later
    /// (until a worker that runs programs joins).
    fn program_failed(&mut self, code: u64, e: String) {
        let Some(p) = self.programs.get_mut(&code) else {
            return;
        };
        warn!(program = %p.label(), "{e}");
        p.upload = None;
        p.error = Some(e.clone());
        for w in std::mem::take(&mut p.waiting) {
            self.stop_on(w, code);
        }
        self.core.on_code_failed(code, &e);
    }

    /// A worker that runs programs joined: programs that failed may run there.
    pub(crate) fn programs_retry(&mut self) {
        for p in self.programs.values_mut() {
            p.error = None;
            p.failed_on.clear();
        }
    }

    pub(crate) fn program_status(&self) -> Vec<ProgramStatusMsg> {
        let mut v: Vec<ProgramStatusMsg> = self
            .programs
            .values()
            .map(|p| ProgramStatusMsg {
                code: p.info.code,
                name: p.info.name.clone(),
                size: p.info.size,
                uploads: p.uploads,
                downloads: p.downloads,
                workers: self
                    .workers
                    .values()
                    .filter(|w| w.code == p.info.code)
                    .count() as u32,
                clients: p.clients.len() as u32,
                error: p.error.clone().unwrap_or_default(),
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name).then(a.code.cmp(&b.code)));
        v
    }
}

/// The programs the scheduler has heard of, by code.
pub(crate) type ProgramMap = FxHashMap<u64, Program>;
