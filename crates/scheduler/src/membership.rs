//! Peers joining and leaving: a hello checked and answered (a client, a worker joining
//! or joining again, a program's workers), a worker announced to its peers, and what
//! happens to a peer's work and holds when it leaves or is lost.

use rask_proto::msg::{Hello, Role, ToClient, ToWorker};
use rask_proto::{ClientId, WorkerId};
use rask_scheduler_core::WorkerSpec;
use rustc_hash::FxHashMap;
use tracing::{info, warn};

use crate::conn::{Joined, Peer};
use crate::programs::ClientProgram;
use crate::registry::Base;
use crate::server::{ClientConn, Server, WorkerConn};

impl Server {
    pub(crate) fn on_hello(&mut self, h: Hello) -> Result<Joined, String> {
        rask_proto::msg::check_versions(&h, "the scheduler")?;
        match h.role {
            Role::Client => {
                if let (Some(theirs), Some(ours)) = (&h.registry, &self.base) {
                    ours.admits_client(&h, theirs)?;
                }
                let resumed = h.resume.and_then(|id| self.resume_client(id));
                let id = resumed.unwrap_or_else(|| {
                    let id = ClientId(self.next_client);
                    self.next_client += 1;
                    id
                });
                self.clients.insert(id, ClientConn::default());
                if resumed.is_none() {
                    self.core.on_client_joined(id);
                    self.journal(&crate::journal::Record::ClientJoined {
                        id: id.0,
                        name: h.name.clone(),
                    });
                }
                if let Some(program) = h.program.clone() {
                    let ops = h
                        .registry
                        .iter()
                        .flat_map(|r| &r.ops)
                        .filter(|o| o.program)
                        .map(|o| o.name.clone())
                        .collect();
                    info!(client = id.0, program = %program.name, code = %format_args!("{:016x}", program.code), shippable = program.shippable, "the client runs a program with typed ops");
                    self.client_programs.insert(
                        id,
                        ClientProgram {
                            code: program.code,
                            ops,
                        },
                    );
                    self.program_client_joined(id, program);
                }
                info!(client = id.0, name = %h.name, "client joined");
                Ok(Joined {
                    peer: Peer::Client(id),
                })
            }
            Role::Worker => {
                let (Some(wh), Some(reg)) = (&h.worker, &h.registry) else {
                    return Err("a worker's hello must describe the worker and its ops".into());
                };
                let base = match &self.base {
                    Some(ours) => ours.admits_worker(&h, reg, wh.code)?,
                    None => {
                        let base = Base::new(reg, wh.code);
                        self.core
                            .set_registry(Some(base.info.ops.iter().map(|o| o.name.clone())));
                        info!(ops = base.info.ops.len(), code = %format_args!("{:016x}", wh.code), "the cluster's ops and code are those of worker {:?}", h.name);
                        self.base = Some(base);
                        true
                    }
                };
                if !base {
                    info!(name = %h.name, code = %format_args!("{:016x}", wh.code), "a program's worker joins beside the cluster's workers");
                }
                let Some(wh) = h.worker else {
                    unreachable!("checked above")
                };
                if wh.holds {
                    // The same process, still registered under its old connection (its
                    // loss not noticed here yet): that member is gone.
                    let stale: Vec<WorkerId> = self
                        .workers
                        .iter()
                        .filter(|(_, c)| {
                            c.pid == h.pid && c.spec.host_id == h.host_id && c.spec.name == h.name
                        })
                        .map(|(w, _)| *w)
                        .collect();
                    for w in stale {
                        self.on_left(Peer::Worker(w), None, false);
                    }
                }
                let id = WorkerId(self.next_worker);
                self.next_worker += 1;
                if wh.holds {
                    self.recovery.holding.insert(id, Vec::new());
                }
                self.journal(&crate::journal::Record::WorkerJoined {
                    id: id.0,
                    name: h.name.clone(),
                });
                let spec = WorkerSpec {
                    name: h.name.clone(),
                    addr: wh.listen_addr.clone(),
                    host_id: h.host_id.clone(),
                    nthreads: wh.nthreads,
                    memory_limit: wh.memory_limit,
                    resources: wh.resources,
                    gpu: wh.gpu,
                    nvlink: wh.nvlink.clone(),
                    device_spill_at: wh.device_spill_at,
                    code: wh.code,
                    base,
                };
                info!(worker = id.0, name = %h.name, addr = %wh.listen_addr, nthreads = wh.nthreads, transport = %wh.transport, shm = !wh.shm_addr.is_empty(), "worker joined");
                // An id can come back (a worker rejoining a restored scheduler), perhaps
                // at another address: clients are told of it again.
                for c in self.clients.values_mut() {
                    c.told.remove(&id);
                }
                self.workers.insert(
                    id,
                    WorkerConn {
                        tx: None,
                        addr: wh.listen_addr,
                        shm_addr: wh.shm_addr,
                        transport: wh.transport,
                        device: wh.device,
                        device_name: wh.device_name,
                        device_memory_limit: wh.device_memory_limit,
                        pid: h.pid,
                        spec,
                        heartbeat: None,
                        last_seen: std::time::Instant::now(),
                        code: wh.code,
                        runs_programs: wh.runs_programs,
                        dashboard: wh.dashboard,
                        received_from: FxHashMap::default(),
                    },
                );
                Ok(Joined {
                    peer: Peer::Worker(id),
                })
            }
            Role::Peer => {
                Err("the scheduler does not serve data: connect as a client or a worker".into())
            }
        }
    }

    /// Called once the worker's writer exists: tell it its peers, tell them about it, and
    /// only then let the core place work on it.
    pub(crate) fn announce_worker(&mut self, id: WorkerId) {
        let peers: Vec<_> = self
            .workers
            .iter()
            .map(|(w, c)| rask_proto::msg::PeerAddr {
                worker: *w,
                addr: c.addr.clone(),
                shm_addr: c.shm_addr.clone(),
                host_id: c.spec.host_id.clone(),
                pid: c.pid,
                gpu: c.spec.gpu,
            })
            .collect();
        let me = peers
            .iter()
            .find(|p| p.worker == id)
            .cloned()
            .expect("invariant: just inserted");
        for (w, c) in &self.workers {
            let Some(tx) = &c.tx else { continue };
            let msg = if *w == id {
                ToWorker::Peers {
                    peers: peers.clone(),
                }
            } else {
                ToWorker::Peers {
                    peers: vec![me.clone()],
                }
            };
            let _ = tx.send(msg);
        }
        let spec = self.workers[&id].spec.clone();
        if !self.recovery.holding.contains_key(&id) {
            // A worker with nothing to tell joins the core at once; one back after a
            // restore under a name awaited counts as back.
            let name = spec.name.clone();
            self.core.on_worker_joined(id, spec);
            self.worker_back(&name);
        }
        if self.workers[&id].runs_programs {
            self.programs_retry();
            self.programs_on_worker_joined();
        }
    }

    pub(crate) fn on_left(&mut self, peer: Peer, reason: Option<String>, lost: bool) {
        self.forget_outbox(peer);
        match peer {
            Peer::Client(c) => {
                self.partial.remove(&c);
                if let Some(ClientConn { tx, .. }) = self.clients.remove(&c) {
                    match reason {
                        Some(ref r) => {
                            warn!(client = c.0, "client connection closed: {r}");
                            // The client learns why (its writer sends what is queued before
                            // it stops), rather than seeing the connection drop.
                            if let Some(tx) = tx {
                                let _ = tx.send(ToClient::Closing { reason: r.clone() });
                            }
                        }
                        None => info!(client = c.0, "client left"),
                    }
                    if lost && self.keeps_clients() {
                        // Its connection was lost, not closed: it may come back.
                        let until = std::time::Instant::now() + self.recovery.grace;
                        self.recovery.suspended.insert(c, until);
                    } else {
                        self.core.on_client_left(c);
                        self.journal(&crate::journal::Record::ClientLeft(c.0));
                    }
                    self.program_client_left(c);
                }
            }
            Peer::Worker(w) => {
                if let Some(conn) = self.workers.remove(&w) {
                    self.recovery.holding.remove(&w);
                    self.journal(&crate::journal::Record::WorkerLeft(w.0));
                    match reason {
                        Some(r) => {
                            warn!(worker = w.0, name = %conn.spec.name, "worker connection closed: {r}");
                            // One whose connection was lost (silent past its time to
                            // live, or an I/O error) is not told to close: cut off by
                            // the network, it joins again as a new member once it can.
                            if let (Some(tx), false) = (&conn.tx, lost) {
                                let _ = tx.send(ToWorker::Close { reason: r });
                            }
                        }
                        None => info!(worker = w.0, name = %conn.spec.name, "worker left"),
                    }
                    if self.core.has_worker(w) {
                        self.core.on_worker_lost(w);
                    }
                    self.programs_on_worker_left(w);
                    self.retired_worker_left(w);
                    if !self.workers.values().any(|c| c.spec.base) && self.base.take().is_some() {
                        // The base ops' data lived on the base workers: none is left that
                        // code of another build could be mixed with.
                        self.core.set_registry(None::<std::iter::Empty<String>>);
                        info!("no base worker left: the next worker to join defines the cluster's ops and code");
                    }
                    for c in self.workers.values() {
                        if let Some(tx) = &c.tx {
                            let _ = tx.send(ToWorker::PeerGone { worker: w });
                        }
                    }
                }
            }
        }
    }
}
