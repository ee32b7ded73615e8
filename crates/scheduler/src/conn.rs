//! One connection: the handshake (refusals logged with the peer's address), then reading
//! and forwarding batches to the main loop within the connection's unread budget.

use std::sync::Arc;

use rask_proto::msg::{Hello, ToClient, ToScheduler, ToWorker};
use rask_proto::{ClientId, WorkerId};
use rask_transport::{spawn_writer, Batch, ConnConfig, FrameReader, Sender};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

/// Why a worker silent for its time to live is dropped (it is not told to close: cut
/// off by the network, it joins again once it can).
const PRESUMED_DEAD: &str = "presumed dead";

/// Who sent a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Peer {
    Client(ClientId),
    Worker(WorkerId),
}

/// What connection tasks tell the main loop.
pub(crate) enum Event {
    /// A peer said hello; the main loop answers through `reply`.
    Hello {
        hello: Box<Hello>,
        reply: oneshot::Sender<Result<Joined, String>>,
    },
    /// The sender of a joined peer, registered before its reader starts.
    Writer {
        peer: Peer,
        client: Option<Sender<ToClient>>,
        worker: Option<Sender<ToWorker>>,
    },
    /// A batch read from a peer, with the share of the peer's unread budget it holds
    /// until handled (none for the front of a batch split in rounds: the rest holds it,
    /// see `backlog`).
    Batch(
        Peer,
        Batch<ToScheduler>,
        Option<tokio::sync::OwnedSemaphorePermit>,
    ),
    /// A peer's connection ended: why (none for a clean close), and whether it was lost
    /// (an I/O error: the peer may connect again) rather than closed for a violation.
    Left(Peer, Option<String>, bool),
    /// A question from an in-process observer (the dashboard).
    Observe(crate::observe::Ask),
}

/// The main loop's answer to a hello.
pub(crate) struct Joined {
    pub(crate) peer: Peer,
}

/// Bytes of frames one connection may have read that the main loop has not handled yet;
/// past this, the connection is not read until the main loop catches up.
pub(crate) const UNREAD_MAX: usize = 64 << 20;

pub(crate) async fn handle_conn(
    stream: TcpStream,
    peer_addr: std::net::SocketAddr,
    cfg: ConnConfig,
    worker_ttl: std::time::Duration,
    events: mpsc::UnboundedSender<Event>,
) {
    let (r, mut w) = match rask_transport::accept_tcp(stream, &cfg).await {
        Ok(halves) => halves,
        Err(e) => {
            warn!(peer = %peer_addr, "handshake failed: {e}");
            return;
        }
    };
    let mut reader = FrameReader::new(r, cfg.clone());
    let hello = match rask_transport::accept(&mut reader, &mut w, &cfg).await {
        Ok(h) => h,
        Err(e) => {
            warn!(peer = %peer_addr, "handshake failed: {e}");
            rask_transport::refuse_after(&mut w, &e).await;
            return;
        }
    };
    let (reply_tx, reply_rx) = oneshot::channel();
    let role = hello.role.clone();
    let name = hello.name.clone();
    if events
        .send(Event::Hello {
            hello: Box::new(hello),
            reply: reply_tx,
        })
        .is_err()
    {
        return;
    }
    let Ok(answer) = reply_rx.await else { return };
    let peer = match answer {
        Ok(j) => j.peer,
        Err(reason) => {
            warn!(peer = %peer_addr, "refused {role:?} {name:?}: {reason}");
            let _ = rask_transport::refuse(&mut w, &reason).await;
            return;
        }
    };
    let id = match peer {
        Peer::Client(c) => c.0,
        Peer::Worker(w) => w.0,
    };
    if let Err(e) = rask_transport::welcome(&mut w, &reader, id).await {
        let lost = matches!(e, rask_transport::TransportError::Io(_));
        let _ = events.send(Event::Left(peer, Some(e.to_string()), lost));
        return;
    }
    let writer = match peer {
        Peer::Client(_) => Event::Writer {
            peer,
            client: Some(spawn_writer(w)),
            worker: None,
        },
        Peer::Worker(_) => Event::Writer {
            peer,
            client: None,
            worker: Some(spawn_writer(w)),
        },
    };
    if events.send(writer).is_err() {
        return;
    }
    let unread = Arc::new(tokio::sync::Semaphore::new(UNREAD_MAX));
    let reason = loop {
        let next = match peer {
            Peer::Worker(_) => {
                match tokio::time::timeout(worker_ttl, reader.read_batch::<ToScheduler>()).await {
                    Ok(r) => r,
                    Err(_) => {
                        break (
                            Some(format!("silent for {worker_ttl:?}: {PRESUMED_DEAD}")),
                            true,
                        )
                    }
                }
            }
            Peer::Client(_) => reader.read_batch::<ToScheduler>().await,
        };
        match next {
            Ok(Some(batch)) => {
                let share = batch.frame_bytes.min(UNREAD_MAX as u64) as u32;
                let Ok(held) = unread.clone().acquire_many_owned(share).await else {
                    return;
                };
                if events.send(Event::Batch(peer, batch, Some(held))).is_err() {
                    return;
                }
            }
            Ok(None) => break (None, false),
            Err(e) => {
                let lost = matches!(e, rask_transport::TransportError::Io(_));
                break (Some(e.to_string()), lost);
            }
        }
    };
    let (reason, lost) = reason;
    let failed = reason.is_some();
    let _ = events.send(Event::Left(peer, reason, lost));
    if failed {
        // The peer is told why (by its writer); keep its bytes from resetting that.
        rask_transport::drain(reader.get_mut(), std::time::Duration::from_secs(2)).await;
    }
}
