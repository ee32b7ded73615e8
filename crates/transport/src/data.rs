//! The peer-data protocol: how a worker or a client fetches values from the worker that
//! holds them, and how a worker serves them. One implementation for every requester and
//! every holder, over each transport:
//!
//! - **inproc** (a holder in this process): the reply is the holder's values themselves,
//!   answered in place ([`DataLink::get`] returns it);
//! - **shm** (same host): the holder lends buffers of its arena (and a GPU's memory by IPC
//!   handle, to a requester that imports it into its own device); the requester maps them
//!   and releases each loan when the last byte of it is dropped;
//! - **tcp** (any host): the bytes, written from where they live and read straight into
//!   the requester's buffers (its arena, when it has one).
//!
//! Requests are pulled: a [`DataLink`] sends `GetData` and hands each reply, decoded into
//! values, to its [`ReplySink`]. A holder serves every connection of its listeners with
//! one [`LookupFn`]. This module decides nothing about which peer to ask: that is the
//! caller's.

use std::collections::VecDeque;
use std::future::Future;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use bytes::Bytes;
use rask_proto::msg::{DataItem, Hello, PeerMsg, WireMessage};
use rask_proto::{Payload, TaskId, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream, UnixListener};

use crate::shm::{write_frame_fds, Arena, Exporter, FdReader, Importer};
use crate::{
    accept, connect, connect_unix, inproc, refuse, refuse_after, welcome, Batch, ConnConfig,
    FrameReader, Link, Sender, TransportError,
};

/// A reply to a `GetData`, decoded: the values held, and the tasks the holder does not
/// have (or whose bytes could not be read).
#[derive(Debug)]
pub struct Reply {
    /// The request this answers (its `GetData`'s `req`).
    pub req: u64,
    /// The values received, by task.
    pub values: Vec<(TaskId, Value)>,
    /// The tasks asked for and not received.
    pub missing: Vec<TaskId>,
}

/// Where a [`DataLink`] delivers what comes back.
pub trait ReplySink: Send + 'static {
    /// A reply; `false` when nobody listens any more (the link then closes).
    fn reply(&mut self, reply: Reply) -> impl Future<Output = bool> + Send;
    /// The link ended (it could not be opened, the holder went away, a reply was
    /// malformed): why.
    fn down(self, error: String);
}

/// A requester's link to one holder. Requests queue until the connection is up.
#[derive(Clone)]
pub struct DataLink {
    to: To,
}

#[derive(Clone)]
enum To {
    /// A holder in this process, registered under this address.
    Inproc(String),
    Remote(Sender<PeerMsg>),
}

/// Where a holder serves data.
#[derive(Clone, Copy, Debug)]
pub struct HolderAddr<'a> {
    /// `tcp://host:port`.
    pub tcp: &'a str,
    /// `unix:@name` (empty when the holder offers no shared memory).
    pub shm: &'a str,
}

impl DataLink {
    /// Opens a link to `holder` over `link`; returns it with the transport actually used
    /// (an in-process holder that is not registered here is reached over tcp). Runs on
    /// the caller's tokio runtime. `arena` receives tcp payloads (not used over shm,
    /// where the holder's own pages are read).
    pub fn open<S: ReplySink>(
        link: Link,
        holder: HolderAddr<'_>,
        hello: Hello,
        conn: ConnConfig,
        arena: Option<Arena>,
        sink: S,
    ) -> (DataLink, Link) {
        if link == Link::Inproc && inproc::lookup::<inproc::DataEndpoint>(holder.tcp).is_some() {
            let to = To::Inproc(holder.tcp.to_string());
            return (DataLink { to }, Link::Inproc);
        }
        let link = if link == Link::Inproc {
            Link::Tcp
        } else {
            link
        };
        let (tx, pending) = crate::channel::<PeerMsg>();
        let (tcp, shm) = (holder.tcp.to_string(), holder.shm.to_string());
        let releases = tx.clone();
        let span = tracing::info_span!("data_link", holder = %tcp, over = %link);
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let mut sink = sink;
                let ended = if link == Link::Shm {
                    match connect_unix(&shm, &hello, conn).await {
                        Ok((reader, w, _)) => {
                            pending.start(w);
                            // Imported buffers release their loan when the last of their
                            // bytes is dropped.
                            let importer = Importer::new(move |loan| {
                                let _ = releases.send(PeerMsg::Release { loans: vec![loan] });
                            });
                            read_replies(reader, Some(importer), &mut sink).await
                        }
                        Err(e) => Some(format!(
                            "cannot reach {tcp} through shared memory ({shm}): {e}"
                        )),
                    }
                } else {
                    drop(releases);
                    match connect(&tcp, &hello, conn).await {
                        Ok((mut reader, w, _)) => {
                            pending.start(w);
                            reader.set_arena(arena);
                            read_replies(reader, None, &mut sink).await
                        }
                        Err(e) => Some(format!("cannot reach {tcp}: {e}")),
                    }
                };
                if let Some(error) = ended {
                    tracing::debug!("link down: {error}");
                    sink.down(error);
                }
            },
            span,
        ));
        (DataLink { to: To::Remote(tx) }, link)
    }

    /// Asks for `tasks`. An in-process holder answers at once (`Some`); otherwise the
    /// reply goes to the link's sink. `into_device`: bytes in the holder's device memory
    /// stay there for this side to import into its own device (shm only; otherwise they
    /// come through the host).
    pub fn get(
        &self,
        req: u64,
        tasks: Vec<TaskId>,
        into_device: bool,
    ) -> Result<Option<Reply>, TransportError> {
        match &self.to {
            To::Inproc(addr) => {
                let ep =
                    inproc::lookup::<inproc::DataEndpoint>(addr).ok_or(TransportError::Closed)?;
                // Same process: the values' buffers are shared, not copied.
                let (values, missing) = ep.get(&tasks);
                Ok(Some(Reply {
                    req,
                    values,
                    missing,
                }))
            }
            To::Remote(tx) => tx
                .send(PeerMsg::GetData {
                    req,
                    tasks,
                    into_device,
                })
                .map(|()| None),
        }
    }

    /// Whether the link has stopped (its connection failed or closed).
    pub fn is_closed(&self) -> bool {
        match &self.to {
            To::Inproc(addr) => inproc::lookup::<inproc::DataEndpoint>(addr).is_none(),
            To::Remote(tx) => tx.is_closed(),
        }
    }
}

/// A connection's read half that may also carry file descriptors (unix sockets do).
pub trait Descriptors: AsyncRead + Unpin {
    /// Descriptors received and not yet taken, if the connection carries any.
    fn fds(&mut self) -> Option<&mut VecDeque<OwnedFd>>;
}

impl Descriptors for FdReader {
    fn fds(&mut self) -> Option<&mut VecDeque<OwnedFd>> {
        Some(FdReader::fds(self))
    }
}

impl Descriptors for tokio::net::tcp::OwnedReadHalf {
    fn fds(&mut self) -> Option<&mut VecDeque<OwnedFd>> {
        None
    }
}

/// Hands a connection's replies, decoded, to `sink` until it ends; `None` when the sink
/// stopped listening, else why the connection ended. A value that cannot be decoded is
/// reported missing (the scheduler then finds it elsewhere or recomputes it).
async fn read_replies<R: Descriptors, S: ReplySink>(
    mut reader: FrameReader<R>,
    mut importer: Option<Importer>,
    sink: &mut S,
) -> Option<String> {
    loop {
        let batch = match reader.read_batch::<PeerMsg>().await {
            Ok(Some(b)) => b,
            Ok(None) => return Some("the holder closed the data connection".into()),
            Err(e) => return Some(e.to_string()),
        };
        let got = match replies(batch, importer.as_mut(), reader.get_mut().fds()) {
            Ok(r) => r,
            Err(e) => return Some(e.to_string()),
        };
        for r in got {
            let mut values = Vec::with_capacity(r.items.len());
            let mut missing = r.missing;
            for it in r.items {
                match it.value.to_value_from(&r.bufs, &[]) {
                    Ok(v) => values.push((it.task, v)),
                    Err(_) => missing.push(it.task),
                }
            }
            drop(r.bufs);
            tracing::debug!(
                req = r.req,
                values = values.len(),
                missing = missing.len(),
                "reply"
            );
            let reply = Reply {
                req: r.req,
                values,
                missing,
            };
            if !sink.reply(reply).await {
                return None;
            }
        }
    }
}

/// One reply of a data connection, its buffers ready to read.
#[derive(Debug)]
pub struct DataReply {
    /// The request this answers.
    pub req: u64,
    /// The values the holder sent, still in wire form.
    pub items: Vec<DataItem>,
    /// The tasks the holder does not hold.
    pub missing: Vec<TaskId>,
    /// What the items' `Datum::Buf(i)` refer to: shared by every plain `Data` reply of a
    /// frame (their indices are frame-wide), so a batch of replies does not copy the
    /// buffer list once per reply.
    pub bufs: Arc<Vec<Payload>>,
}

/// The replies in one batch read from a data connection: `Data` as is, `ShmData` with
/// its segments mapped and buffers imported (descriptors taken from `fds` in order),
/// `Retired` applied to the importer.
pub fn replies(
    batch: Batch<PeerMsg>,
    importer: Option<&mut Importer>,
    fds: Option<&mut VecDeque<OwnedFd>>,
) -> Result<Vec<DataReply>, TransportError> {
    let mut out = Vec::new();
    let mut importer = importer;
    let mut fds = fds;
    let frame_bufs = batch.bufs;
    let mut host_bufs: Option<Arc<Vec<Payload>>> = None;
    for m in batch.msgs {
        match m {
            PeerMsg::Data {
                req,
                items,
                missing,
            } => out.push(DataReply {
                req,
                items,
                missing,
                bufs: host_bufs
                    .get_or_insert_with(|| {
                        Arc::new(frame_bufs.iter().cloned().map(Payload::Host).collect())
                    })
                    .clone(),
            }),
            PeerMsg::ShmData {
                req,
                items,
                missing,
                refs,
                segments,
                loan,
            } => {
                let (Some(imp), Some(fds)) = (importer.as_deref_mut(), fds.as_deref_mut()) else {
                    return Err(TransportError::Shm(
                        "shared-memory reply on a connection without shared memory".into(),
                    ));
                };
                imp.add_segments(&segments, fds)?;
                let bufs = Arc::new(imp.import(&refs, &frame_bufs, loan)?);
                out.push(DataReply {
                    req,
                    items,
                    missing,
                    bufs,
                });
            }
            PeerMsg::Retired { segments } => {
                if let Some(imp) = importer.as_deref_mut() {
                    imp.retire(&segments);
                }
            }
            PeerMsg::GetData { .. } | PeerMsg::Release { .. } => {
                return Err(TransportError::Shm(
                    "request sent to the requesting side".into(),
                ))
            }
        }
    }
    Ok(out)
}

/// What a holder answers to a `GetData`: items whose `Datum::Buf(i)` refer to `bufs[i]`,
/// and the tasks it does not have.
pub type Lookup = (Vec<DataItem>, Vec<Payload>, Vec<TaskId>);

/// Serves one shared-memory data connection (after its handshake) until it closes:
/// answers `GetData` by lending buffers from `arena` (or devices' IPC handles), applies
/// releases, and tells the peer about segments the arena retired. Every loan of the
/// connection ends with it. `lookup(tasks, into_device)` leaves bytes in a device's
/// memory there when `into_device` (else brings them to the host). The lookup and what
/// lending asks of a device run on a blocking thread (a GPU answers after the kernel it
/// runs): the runtime's threads never wait for a device, though this connection's next
/// request waits for the one before.
pub async fn serve_shm(
    mut reader: crate::FrameReader<FdReader>,
    mut w: OwnedWriteHalf,
    arena: Arena,
    mut retired: tokio::sync::broadcast::Receiver<Vec<u32>>,
    lookup: impl Fn(Vec<TaskId>, bool) -> Lookup + Send + Sync + 'static,
) -> Result<(), TransportError> {
    // Reading runs in its own task: a frame read must not be cancelled half-way by the
    // other branch of the select.
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let read = tokio::spawn(async move {
        loop {
            let r = reader.read_batch::<PeerMsg>().await;
            let end = !matches!(r, Ok(Some(_)));
            if tx.send(r).await.is_err() || end {
                return;
            }
        }
    });
    let _stop_reading = AbortOnDrop(read);
    let lookup: LookupFn = Arc::new(lookup);
    let mut ex = Exporter::new(arena);
    let mut listen_retired = true;
    loop {
        tokio::select! {
            r = rx.recv() => {
                let Some(batch) = r.transpose()? .flatten() else { return Ok(()) };
                let mut out = Vec::new();
                let mut out_bufs = Vec::new();
                let mut fds = Vec::new();
                for m in batch.msgs {
                    match m {
                        PeerMsg::GetData { req, tasks, into_device } => {
                            let (items, ready, mut missing) = lend(&lookup, tasks, into_device).await;
                            let (items, e) = match ex.export_ready(ready) {
                                Ok(e) => (items, e),
                                Err(err) => {
                                    tracing::warn!("cannot lend buffers: {err}");
                                    missing.extend(items.into_iter().map(|i| i.task));
                                    (Vec::new(), ex.export_ready(Vec::new())?)
                                }
                            };
                            let mut m = PeerMsg::ShmData {
                                req,
                                items,
                                missing,
                                refs: e.refs,
                                segments: e.segments,
                                loan: e.loan,
                            };
                            m.shift_buffers(out_bufs.len() as u32);
                            out_bufs.extend(e.inline);
                            fds.extend(e.fds);
                            out.push(m);
                        }
                        PeerMsg::Release { loans } => ex.release(&loans),
                        _ => return Err(TransportError::Shm("unexpected message from a requester".into())),
                    }
                }
                if !out.is_empty() {
                    let header = PeerMsg::encode_batch(&out);
                    write_frame_fds(&mut w, &header, &out_bufs, &fds).await?;
                }
            }
            r = retired.recv(), if listen_retired => match r {
                Ok(segs) => {
                    let mine = ex.retired(&segs);
                    if !mine.is_empty() {
                        let header = PeerMsg::encode_batch(&vec![PeerMsg::Retired { segments: mine }]);
                        write_frame_fds(&mut w, &header, &[], &[]).await?;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!("missed {n} segment retirements; the peer keeps those mappings until it disconnects");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => listen_retired = false,
            },
        }
    }
}

/// Looks `tasks` up and makes their buffers ready to lend ([`crate::shm::prepare`]), on
/// a blocking thread; what cannot be made ready is reported missing.
async fn lend(
    lookup: &LookupFn,
    tasks: Vec<TaskId>,
    into_device: bool,
) -> (Vec<DataItem>, Vec<crate::shm::Ready>, Vec<TaskId>) {
    let lookup = lookup.clone();
    let asked = tasks.clone();
    let run = move || {
        let (items, bufs, mut missing) = lookup(tasks, into_device);
        match crate::shm::prepare(bufs) {
            Ok(ready) => (items, ready, missing),
            Err(e) => {
                tracing::warn!("cannot lend buffers: {e}");
                missing.extend(items.into_iter().map(|i| i.task));
                (Vec::new(), Vec::new(), missing)
            }
        }
    };
    tokio::task::spawn_blocking(run).await.unwrap_or_else(|e| {
        tracing::warn!("looking values up failed: {e}");
        (Vec::new(), Vec::new(), asked)
    })
}

/// [`LookupFn`] for a requester on the host, on a blocking thread (bringing a device's
/// bytes to the host waits for the device): items and their host bytes, and the tasks
/// missing.
async fn lookup_host(
    lookup: &LookupFn,
    tasks: Vec<TaskId>,
) -> (Vec<DataItem>, Vec<Bytes>, Vec<TaskId>) {
    let lookup = lookup.clone();
    let asked = tasks.clone();
    let run = move || {
        let (items, payloads, missing) = lookup(tasks, false);
        host_bytes(items, payloads, missing)
    };
    tokio::task::spawn_blocking(run).await.unwrap_or_else(|e| {
        tracing::warn!("looking values up failed: {e}");
        (Vec::new(), Vec::new(), asked)
    })
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How a holder finds values: `lookup(tasks, into_device)` answers with the items (their
/// `Datum::Buf(i)` referring to the payloads), and leaves bytes in a device's memory
/// there only when `into_device`.
pub type LookupFn = Arc<dyn Fn(Vec<TaskId>, bool) -> Lookup + Send + Sync>;

/// Reply bytes a tcp data connection may queue before it stops reading requests: a slow
/// reader holds back its own requests.
const DATA_QUEUE_BYTES: u32 = 64 << 20;

/// Serves every tcp data connection of `listener` with `lookup`, until dropped.
pub async fn serve_tcp(listener: TcpListener, cfg: ConnConfig, lookup: LookupFn) {
    loop {
        match listener.accept().await {
            Ok((stream, addr)) => {
                if let Err(e) = crate::tcp::watch_peer(&stream, cfg.peer_timeout) {
                    tracing::debug!(peer = %addr, "cannot set the peer timeout: {e}");
                }
                let span = tracing::info_span!("data_conn", peer = %addr);
                let conn = serve_tcp_conn(stream, addr, cfg.clone(), lookup.clone());
                tokio::spawn(tracing::Instrument::instrument(conn, span));
            }
            Err(e) => tracing::warn!("data listener: {e}"),
        }
    }
}

async fn serve_tcp_conn(
    stream: TcpStream,
    addr: std::net::SocketAddr,
    cfg: ConnConfig,
    lookup: LookupFn,
) {
    let _ = stream.set_nodelay(true);
    let (r, mut w) = stream.into_split();
    let mut reader = FrameReader::new(r, cfg.clone());
    let Some(name) = accept_requester(&addr.to_string(), &mut reader, &mut w, &cfg).await else {
        return;
    };
    let (tx, writer) = crate::channel_bounded::<PeerMsg>(DATA_QUEUE_BYTES);
    writer.start(w);
    loop {
        match reader.read_batch::<PeerMsg>().await {
            Ok(Some(batch)) => {
                for m in batch.msgs {
                    let PeerMsg::GetData { req, tasks, .. } = m else {
                        continue;
                    };
                    // Over tcp every byte comes through the host.
                    let (items, bufs, missing) = lookup_host(&lookup, tasks).await;
                    let reply = PeerMsg::Data {
                        req,
                        items,
                        missing,
                    };
                    if tx.send_bounded(reply, bufs).await.is_err() {
                        return;
                    }
                }
            }
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(peer = %name, "data connection: {e}");
                return;
            }
        }
    }
}

/// The items whose payloads are all in host memory, their bytes, and the rest reported
/// missing.
fn host_bytes(
    items: Vec<DataItem>,
    payloads: Vec<Payload>,
    mut missing: Vec<TaskId>,
) -> (Vec<DataItem>, Vec<Bytes>, Vec<TaskId>) {
    let mut bufs = Vec::with_capacity(payloads.len());
    for p in payloads {
        match p {
            Payload::Host(b) => bufs.push(b),
            Payload::Device(_) => {
                // A lookup for tcp brings every byte to the host; should a device's
                // bytes slip through, nothing of this reply can go.
                missing.extend(items.iter().map(|i| i.task));
                return (Vec::new(), Vec::new(), missing);
            }
        }
    }
    (items, bufs, missing)
}

/// Serves every shared-memory data connection of `listener` with `lookup`, lending
/// buffers of `arena`; `retired` announces segments the arena unmapped.
pub async fn serve_unix(
    listener: UnixListener,
    cfg: ConnConfig,
    arena: Arena,
    retired: tokio::sync::broadcast::Sender<Vec<u32>>,
    lookup: LookupFn,
) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!("shared-memory listener: {e}");
                continue;
            }
        };
        let (cfg, arena, retired, lookup) = (
            cfg.clone(),
            arena.clone(),
            retired.subscribe(),
            lookup.clone(),
        );
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut reader = FrameReader::new(FdReader::new(r), cfg.clone());
            let Some(name) = accept_requester("a same-host peer", &mut reader, &mut w, &cfg).await
            else {
                return;
            };
            let lookup = move |tasks, into_device| lookup(tasks, into_device);
            if let Err(e) = serve_shm(reader, w, arena, retired, lookup).await {
                tracing::warn!(peer = %name, "shared-memory data connection: {e}");
            }
        });
    }
}

/// The server side of a data connection's handshake; the requester's name once
/// welcomed. Failures are logged with `peer` and the reason, and the requester told.
pub async fn accept_requester<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    peer: &str,
    reader: &mut FrameReader<R>,
    w: &mut W,
    cfg: &ConnConfig,
) -> Option<String> {
    let hello = match accept(reader, w, cfg).await {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(peer = %peer, "data connection handshake failed: {e}");
            refuse_after(w, &e).await;
            return None;
        }
    };
    if let Err(reason) = rask_proto::msg::check_versions(&hello, "this worker") {
        tracing::warn!(peer = %peer, "refused a data connection: {reason}");
        let _ = refuse(w, &reason).await;
        return None;
    }
    welcome(w, reader, 0).await.ok()?;
    Some(hello.name)
}
