//! Peers: the workers this one fetches from, the link to each (the shared data
//! protocol), and importing values lent from a peer's device.

use std::sync::Arc;

use rask_kernels::{Accelerator, OpError};
use rask_proto::msg::{Hello, PeerAddr, Role};
use rask_proto::{LinkClass, TaskId, Value, WorkerId};
use rask_transport::Link;
use tokio::sync::mpsc;
use tracing::info;

use crate::event_loop::State;
use crate::events::Event;
use crate::store::lent;

/// A peer worker as this worker reaches it.
#[derive(Clone)]
pub(crate) struct Peer {
    pub(crate) addr: PeerAddr,
    pub(crate) link: Link,
    pub(crate) class: LinkClass,
}

/// Where a data link's replies go: values lent from the peer's device are imported into
/// this worker's device first (on a blocking thread); those that fail to import are
/// fetched again through the host.
pub(crate) struct LinkSink {
    pub(crate) peer: WorkerId,
    pub(crate) import: Option<Arc<dyn Accelerator>>,
    pub(crate) events: mpsc::UnboundedSender<Event>,
}

impl rask_transport::data::ReplySink for LinkSink {
    async fn reply(&mut self, r: rask_transport::data::Reply) -> bool {
        let mut values = r.values;
        if values.iter().any(|(_, v)| lent(v)) {
            let (imported, failed) = import_values(self.import.clone(), values).await;
            values = imported;
            if let Some((tasks, error)) = failed {
                let ev = Event::ImportFailed {
                    from: self.peer,
                    tasks,
                    error,
                };
                if self.events.send(ev).is_err() {
                    return false;
                }
            }
        }
        let ev = Event::Fetched {
            from: self.peer,
            req: r.req,
            values,
            missing: r.missing,
        };
        self.events.send(ev).is_ok()
    }

    fn down(self, error: String) {
        let _ = self.events.send(Event::LinkDown {
            from: self.peer,
            error,
        });
    }
}

/// `values` with the bytes lent from a peer's device imported into this worker's device,
/// on a blocking thread (the copies wait for the GPU); those that failed, and why.
pub(crate) async fn import_values(
    import: Option<Arc<dyn Accelerator>>,
    values: Vec<(TaskId, Value)>,
) -> (Vec<(TaskId, Value)>, Option<(Vec<TaskId>, OpError)>) {
    let Some(acc) = import else {
        let (failed, kept): (Vec<_>, Vec<_>) = values.into_iter().partition(|(_, v)| lent(v));
        let tasks = failed.into_iter().map(|(t, _)| t).collect();
        let error =
            OpError::Message("this worker's device does not import a peer's device memory".into());
        return (kept, Some((tasks, error)));
    };
    let all: Vec<TaskId> = values.iter().map(|(t, _)| *t).collect();
    let run = move || {
        let mut ok = Vec::with_capacity(values.len());
        let mut failed = Vec::new();
        let mut error = None;
        for (t, v) in values {
            if !lent(&v) {
                ok.push((t, v));
                continue;
            }
            // The loan is released as the lent value is dropped, after the copy.
            match rask_kernels::import_lent(&*acc, &v) {
                Ok(v) => ok.push((t, v)),
                Err(e) => {
                    failed.push(t);
                    // The first error says why; a full device is said first (the others
                    // may follow from it).
                    match (&error, &e) {
                        (None, _) | (Some(_), OpError::DeviceFull { .. }) => error = Some(e),
                        _ => {}
                    }
                }
            }
        }
        (ok, error.map(|e| (failed, e)))
    };
    match tokio::task::spawn_blocking(run).await {
        Ok(r) => r,
        Err(e) => (
            Vec::new(),
            Some((all, OpError::Message(format!("importing stopped: {e}")))),
        ),
    }
}

/// The hello of a data connection.
pub fn peer_hello(name: &str) -> Hello {
    Hello::new(Role::Peer, name, rask_transport::host_id())
}

impl State {
    /// Asks `from` for `tasks`: device bytes by IPC handle when this worker's device
    /// imports that peer's.
    pub(crate) fn fetch(&mut self, from: WorkerId, tasks: Vec<TaskId>) {
        let into_device = self.imports() && !self.no_ipc.contains(&from);
        self.fetch_through(from, tasks, into_device);
    }

    /// Asks `from` for `tasks`, its device bytes by IPC handle only when `into_device`.
    pub(crate) fn fetch_through(&mut self, from: WorkerId, tasks: Vec<TaskId>, into_device: bool) {
        let req = self.next_req;
        self.next_req += 1;
        let link = match self.links.get(&from) {
            Some(l) if !l.is_closed() => l.clone(),
            _ => {
                let Some(peer) = self.peers.get(&from).cloned() else {
                    self.core.on_fetch_failed(from, &tasks);
                    return;
                };
                let link = self.open_link(from, &peer);
                self.links.insert(from, link.clone());
                link
            }
        };
        // Over shared memory, bytes in a peer GPU's memory come by CUDA IPC straight into
        // ours (tcp peers answer with host bytes whatever we ask).
        match link.get(req, tasks.clone(), into_device) {
            Ok(Some(now)) => {
                // A peer in this process: its values' buffers are shared, not copied.
                self.outstanding
                    .insert((from, req), (Vec::new(), std::time::Instant::now()));
                let _ = self.events.send(Event::Fetched {
                    from,
                    req,
                    values: now.values,
                    missing: now.missing,
                });
            }
            Ok(None) => {
                self.outstanding
                    .insert((from, req), (tasks, std::time::Instant::now()));
            }
            Err(_) => {
                self.links.remove(&from);
                self.core.on_fetch_failed(from, &tasks);
            }
        }
    }

    /// Whether this worker's device imports bytes lent from a peer's device.
    pub(crate) fn imports(&self) -> bool {
        self.exec.device.as_ref().is_some_and(|a| a.imports())
    }

    /// This worker's device, if it imports bytes lent from a peer's device.
    pub(crate) fn importer(&self) -> Option<Arc<dyn Accelerator>> {
        self.exec.device.clone().filter(|a| a.imports())
    }

    /// A peer as this worker reaches it: the transport its data takes, and the class of
    /// the link — `local` (same process), `nvlink`, `pcie` (GPUs through the host), `shm`
    /// (CPU workers of one host) or `tcp`. Decided once, when the peer is announced.
    pub(crate) fn peer(&self, addr: PeerAddr) -> Peer {
        let link = self.cfg.transport.select(
            (&self.host_id, std::process::id()),
            (&addr.host_id, addr.pid),
            !addr.shm_addr.is_empty(),
        );
        let class = match (link, self.host_gpu, addr.gpu) {
            (Link::Inproc, ..) => LinkClass::Local,
            (Link::Tcp, ..) => LinkClass::Tcp,
            (Link::Shm, Some(_), Some(g)) if self.cfg.nvlink.contains(&g) => LinkClass::Nvlink,
            (Link::Shm, None, None) => LinkClass::Shm,
            (Link::Shm, ..) => LinkClass::Pcie,
        };
        Peer { addr, link, class }
    }

    /// The class of the link data from `peer` takes (see [`State::peer`]).
    pub(crate) fn link_class(&self, peer: WorkerId) -> LinkClass {
        self.peers.get(&peer).map_or(LinkClass::Tcp, |p| p.class)
    }

    /// Opens a data link to a peer (requests queue until it is up); its replies come back
    /// as `Fetched` events.
    pub(crate) fn open_link(&self, peer: WorkerId, to: &Peer) -> rask_transport::data::DataLink {
        let sink = LinkSink {
            peer,
            import: self.importer(),
            events: self.events.clone(),
        };
        let holder = rask_transport::data::HolderAddr {
            tcp: &to.addr.addr,
            shm: &to.addr.shm_addr,
        };
        let hello = peer_hello(&format!("worker-{}", self.id.0));
        let (link, kind) = rask_transport::data::DataLink::open(
            to.link,
            holder,
            hello,
            self.cfg.conn.clone(),
            Some(self.arena.clone()),
            sink,
        );
        info!(peer = peer.0, "data link to worker {} over {kind}", peer.0);
        link
    }
}
