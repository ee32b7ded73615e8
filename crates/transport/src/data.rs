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

use rask_proto::msg::{DataItem, Hello, PeerMsg};
use rask_proto::{Payload, TaskId, Value};
use tokio::io::AsyncRead;

use crate::shm::{Arena, FdReader, Importer};
use crate::{
    connect, connect_unix, inproc, Batch, ConnConfig, FrameReader, Link, Sender, TransportError,
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
                // A same-host holder of another user refuses shared memory (and is
                // refused it): it is reached over tcp instead. (The link is still
                // reported as shm to the caller, which asked before connecting.)
                let over_shm = if link == Link::Shm {
                    match connect_unix(&shm, &hello, conn.clone()).await {
                        Ok(c) => Ok(Some(c)),
                        Err(e) if other_user(&e) => {
                            tracing::info!("{shm}: {e}; fetching from {tcp} over tcp instead");
                            Ok(None)
                        }
                        Err(e) => Err(format!(
                            "cannot reach {tcp} through shared memory ({shm}): {e}"
                        )),
                    }
                } else {
                    Ok(None)
                };
                let ended = match over_shm {
                    Err(error) => Some(error),
                    Ok(Some((reader, w, _))) => {
                        pending.start(w);
                        // Imported buffers release their loan when the last of their
                        // bytes is dropped.
                        let importer = Importer::new(move |loan| {
                            let _ = releases.send(PeerMsg::Release { loans: vec![loan] });
                        });
                        read_replies(reader, Some(importer), &mut sink).await
                    }
                    Ok(None) => {
                        drop(releases);
                        match connect(&tcp, &hello, conn).await {
                            Ok((mut reader, w, _)) => {
                                pending.start(w);
                                reader.set_arena(arena);
                                read_replies(reader, None, &mut sink).await
                            }
                            Err(e) => Some(format!("cannot reach {tcp}: {e}")),
                        }
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

/// Whether `e` says the same-host peer runs as another user (found on this side, or
/// told by the peer's refusal).
fn other_user(e: &TransportError) -> bool {
    match e {
        TransportError::OtherUser { .. } => true,
        // The peer's refusal is the same error's text.
        TransportError::Refused(r) => r.starts_with("the same-host peer runs as another user"),
        _ => false,
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

impl Descriptors for crate::TcpReadHalf {
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

mod serve;

pub use serve::{accept_requester, serve_shm, serve_tcp, serve_unix, Lookup, LookupFn};
