//! The holder's side of the peer-data protocol: serving `GetData` over tcp and shared
//! memory from one [`LookupFn`], and the handshake of a data connection.

use std::sync::Arc;

use bytes::Bytes;
use rask_proto::msg::{DataItem, PeerMsg, WireMessage};
use rask_proto::{Payload, TaskId};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream, UnixListener};

use crate::shm::{write_frame_fds, Arena, Exporter, FdReader};
use crate::{accept, refuse, refuse_after, welcome, ConnConfig, FrameReader, TransportError};

/// What a holder answers to a `GetData`: items whose `Datum::Buf(i)` refer to `bufs[i]`,
/// and the tasks it does not have.
pub type Lookup = (Vec<DataItem>, Vec<Payload>, Vec<TaskId>);

/// Serves one shared-memory data connection (after its handshake) until it closes:
/// answers `GetData` by lending buffers from `arena` (or devices' IPC handles), applies
/// releases, and tells the peer about segments the arena retired. Every loan of the
/// connection ends with it. Bytes in a device's memory stay there for a requester that
/// imports them (`into_device` in its request), else come to the host. What lending asks
/// of a device (an IPC handle, a download) runs on a blocking thread (a GPU answers after
/// the kernel it runs): the runtime's threads never wait for a device, though this
/// connection's next request waits for the one before.
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

/// Looks `tasks` up and makes their buffers ready to lend ([`crate::shm::prepare`]):
/// bytes in a device's memory stay there for a requester that imports them
/// (`into_device`), else come to the host. The lookup only reads the holder's store; what
/// then asks a device for something (an IPC handle, a download) runs on a blocking thread,
/// and only then (a GPU answers after the kernel it runs). What cannot be made ready is
/// reported missing.
async fn lend(
    lookup: &LookupFn,
    tasks: Vec<TaskId>,
    into_device: bool,
) -> (Vec<DataItem>, Vec<crate::shm::Ready>, Vec<TaskId>) {
    let (items, bufs, missing) = lookup(tasks, true);
    let on_device = any_on_device(&bufs);
    let finish = move || {
        let (items, bufs, mut missing) = if into_device {
            (items, bufs, missing)
        } else {
            on_host(items, bufs, missing)
        };
        match crate::shm::prepare(bufs) {
            Ok(ready) => (items, ready, missing),
            Err(e) => {
                tracing::warn!("cannot lend buffers: {e}");
                missing.extend(items.into_iter().map(|i| i.task));
                (Vec::new(), Vec::new(), missing)
            }
        }
    };
    off_the_runtime(on_device, finish).await
}

/// A lookup for a requester on the host (tcp): items and their host bytes, and the tasks
/// missing; a device's bytes are brought over on a blocking thread.
async fn lookup_host(
    lookup: &LookupFn,
    tasks: Vec<TaskId>,
) -> (Vec<DataItem>, Vec<Bytes>, Vec<TaskId>) {
    let (items, payloads, missing) = lookup(tasks, true);
    let on_device = any_on_device(&payloads);
    let finish = move || {
        let (items, payloads, missing) = on_host(items, payloads, missing);
        let bufs = payloads
            .into_iter()
            .map(|p| match p {
                Payload::Host(b) => b,
                Payload::Device(_) => unreachable!("on_host leaves no device payload"),
            })
            .collect();
        (items, bufs, missing)
    };
    off_the_runtime(on_device, finish).await
}

/// Whether any payload is in a device's memory.
fn any_on_device(payloads: &[Payload]) -> bool {
    payloads.iter().any(|p| matches!(p, Payload::Device(_)))
}

/// `finish()`, here when nothing waits for a device (the common case costs no thread
/// hop), else on a blocking thread; if that thread fails, nothing of the answer goes.
async fn off_the_runtime<T: Send + 'static>(
    on_device: bool,
    finish: impl FnOnce() -> (Vec<DataItem>, Vec<T>, Vec<TaskId>) + Send + 'static,
) -> (Vec<DataItem>, Vec<T>, Vec<TaskId>) {
    if !on_device {
        return finish();
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::task::spawn_blocking(move || {
        let _ = tx.send(finish());
    });
    rx.await.unwrap_or_else(|_| {
        tracing::warn!("looking values up failed on its thread");
        (Vec::new(), Vec::new(), Vec::new())
    })
}

/// The payloads with a device's bytes brought to the host (waits for the device); if one
/// cannot be read, nothing of this answer goes and its tasks are missing (the requester
/// finds them elsewhere or has them recomputed).
fn on_host(
    items: Vec<DataItem>,
    payloads: Vec<Payload>,
    mut missing: Vec<TaskId>,
) -> (Vec<DataItem>, Vec<Payload>, Vec<TaskId>) {
    let mut out = Vec::with_capacity(payloads.len());
    for p in payloads {
        match p.into_host() {
            Ok(b) => out.push(Payload::Host(b)),
            Err(e) => {
                tracing::warn!("cannot bring a value to the host: {e}");
                missing.extend(items.iter().map(|i| i.task));
                return (Vec::new(), Vec::new(), missing);
            }
        }
    }
    (items, out, missing)
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How a holder finds values: `lookup(tasks, into_device)` answers with the items (their
/// `Datum::Buf(i)` referring to the payloads), and leaves bytes in a device's memory
/// there only when `into_device`. It is called on the runtime's threads, so it must not
/// wait for a device: the servers here ask with `into_device` set and bring a device's
/// bytes to the host themselves, on a blocking thread, when the requester needs them
/// there.
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
    let (r, mut w) = match crate::accept_tcp(stream, &cfg).await {
        Ok(halves) => halves,
        Err(e) => {
            tracing::warn!(peer = %addr, "data connection handshake failed: {e}");
            return;
        }
    };
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

/// Serves every shared-memory data connection of `listener` with `lookup`, lending
/// buffers of `arena`; `retired` announces segments the arena unmapped. Peers running as
/// another user are refused ([`TransportError::OtherUser`]).
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
        // An abstract socket has no file permissions: any process in this network
        // namespace can connect, whoever runs it. Only this user's processes are served.
        if let Err(e) = crate::unix::same_user(&stream) {
            let pid = stream.peer_cred().ok().and_then(|c| c.pid());
            tracing::warn!(peer_pid = ?pid, "refused a shared-memory data connection: {e}");
            tokio::spawn(async move {
                let mut stream = stream;
                let _ = crate::refuse(&mut stream, &e.to_string()).await;
                crate::drain(&mut stream, std::time::Duration::from_secs(2)).await;
            });
            continue;
        }
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
