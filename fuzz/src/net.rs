//! The transport's readers, driven with the fuzz input as what the peer sends: the frame
//! reader (before and after the handshake, with and without a receiving arena), the
//! server side of the handshake (with and without a shared secret), a requester reading
//! shared-memory replies (segments mapped from real memfds, buffers imported), and a
//! holder serving a requester over a real unix socket pair.
//!
//! Each runs on a current-thread runtime kept per thread; timeouts are short so that a
//! reader that waits for bytes that never come shows as a slow input, not a hang.

use std::collections::VecDeque;
use std::future::Future;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use rask_proto::frame::FrameLimits;
use rask_proto::msg::{DataItem, PeerMsg, ToClient, ToScheduler, ToWorker};
use rask_proto::{Payload, TaskId, Value};
use rask_transport::data::{self, Lookup};
use rask_transport::shm::{Arena, FdReader, Importer};
use rask_transport::{ConnConfig, FrameReader, HandshakeGate, Secret, TransportError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::input::{split_frame, welcomed_limits};

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
}

/// Runs `f` to completion on this thread's runtime.
pub fn block_on<F: Future>(f: F) -> F::Output {
    RUNTIME.with(|rt| rt.block_on(f))
}

/// Connection settings for the harnesses: short timeouts, a fresh handshake gate.
/// `max_payload` bounds a welcomed peer's buffers (see [`frame_reader`]).
fn config(auth: Option<Secret>, max_payload: u64) -> ConnConfig {
    ConnConfig {
        limits: FrameLimits {
            max_payload,
            ..FrameLimits::default()
        },
        frame_timeout: Duration::from_secs(2),
        handshake_timeout: Duration::from_secs(2),
        auth,
        gate: HandshakeGate::new(4, 4),
        ..ConnConfig::default()
    }
}

/// The arena a requester receives large payloads into (tcp data links), and the one a
/// holder lends from; one per process, as a worker has.
fn arena() -> &'static Arena {
    static ARENA: OnceLock<Arena> = OnceLock::new();
    ARENA.get_or_init(|| Arena::new(1 << 20))
}

/// The byte a frame-reader input starts with: bit 0 reads as a welcomed peer, bit 1
/// receives large payloads into an arena, bits 2..4 pick the message type. The
/// transport's default limits apply (a payload may announce up to 16 GiB).
pub fn frame_reader(data: &[u8]) {
    let Some((&mode, stream)) = data.split_first() else {
        return;
    };
    let cfg = config(None, FrameLimits::default().max_payload);
    let arena = (mode & 2 != 0).then(|| arena().clone());
    let before = arena.as_ref().map(|a| a.stats().resident);
    block_on(async {
        let mut r = FrameReader::new(stream, cfg);
        if mode & 1 != 0 {
            r.welcome();
        }
        r.set_arena(arena.clone());
        for _ in 0..crate::decode::MAX_FRAMES {
            let more = match (mode >> 2) & 7 {
                0 => read_one::<ToScheduler>(&mut r).await,
                1 => read_one::<ToWorker>(&mut r).await,
                2 => read_one::<ToClient>(&mut r).await,
                3 => read_one::<PeerMsg>(&mut r).await,
                _ => match r.read_frame().await {
                    Ok(Some(f)) => {
                        touch(&f.bufs);
                        true
                    }
                    _ => false,
                },
            };
            if !more {
                break;
            }
        }
    });
    if let (Some(a), Some(before)) = (arena, before) {
        // The memory the arena holds for a frame is bounded by the bytes that arrived (a
        // pre-faulted segment is 2 MiB), not by the lengths announced.
        let grown = a.stats().resident.saturating_sub(before);
        let bound = (4 << 20) + 2 * stream.len() as u64;
        assert!(
            grown <= bound,
            "the receiving arena holds {grown} more bytes for {} bytes of input",
            stream.len()
        );
        // A segment reserved for an announced length is let go of, as a worker's
        // periodic trim does, so inputs do not pile up address space.
        a.trim(0, 0);
    }
}

async fn read_one<M: rask_proto::msg::WireMessage>(r: &mut FrameReader<&[u8]>) -> bool {
    match r.read_batch::<M>().await {
        Ok(Some(b)) => {
            touch(&b.bufs);
            true
        }
        Ok(None) | Err(_) => false,
    }
}

/// Reads every byte of `bufs` (an imported or mapped buffer that cannot be read would
/// fault here).
fn touch(bufs: &[Bytes]) -> u64 {
    bufs.iter()
        .map(|b| b.iter().map(|&x| x as u64).sum::<u64>())
        .sum()
}

fn touch_value(v: &Value) -> u64 {
    match v {
        Value::Bytes(b) => touch(std::slice::from_ref(b)),
        Value::List(l) => l.iter().map(touch_value).sum(),
        _ => 0,
    }
}

/// The server side of a data connection's handshake (`accept_requester`: the hello, the
/// shared-secret challenge when bit 0 of the first byte is set, the version check, the
/// welcome), then the connection's first batch, with the input as what the connecting
/// side sends.
pub fn handshake(data: &[u8]) {
    let Some((&mode, stream)) = data.split_first() else {
        return;
    };
    let auth = (mode & 1 != 0).then(|| Secret::new(b"fuzz secret".to_vec()));
    let cfg = config(auth, 1 << 20);
    block_on(async {
        let mut r = FrameReader::new(stream, cfg.clone());
        let mut sink = tokio::io::sink();
        if rask_transport::data::accept_requester("fuzz", &mut r, &mut sink, &cfg)
            .await
            .is_some()
        {
            let _ = r.read_batch::<PeerMsg>().await;
        }
    });
}

/// The segments a holder announces in the shared-memory replies of [`shm_reply`]: two of
/// a real arena (sealed memfds), and a descriptor that is no such segment.
struct Segments {
    /// Keeps the segments' regions in use.
    _held: Vec<Bytes>,
    fds: Vec<Arc<OwnedFd>>,
    not_a_segment: std::fs::File,
}

fn segments() -> &'static Segments {
    static SEGMENTS: OnceLock<Segments> = OnceLock::new();
    SEGMENTS.get_or_init(|| {
        let arena = Arena::new(64 << 10);
        let mut held = Vec::new();
        let mut fds = Vec::new();
        for fill in [0x5au8, 0xa5] {
            // A region as large as a segment forces a segment of its own.
            let b = arena
                .copy_in(&vec![fill; 2 << 20])
                .expect("an arena segment (memfd)");
            let (id, _) = arena.locate(&b).expect("in the arena");
            fds.push(arena.segment(id).expect("its segment").0);
            held.push(b);
        }
        Segments {
            _held: held,
            fds,
            not_a_segment: std::fs::File::open("/dev/null").expect("/dev/null"),
        }
    })
}

/// A requester reading shared-memory replies (`rask_transport::data::replies` with an
/// importer): segments announced are mapped from the descriptors that came with the
/// frame (here two real sealed segments and `/dev/null`, in that order), buffers
/// imported by reference, values rebuilt and every byte read, loans released when the
/// buffers are dropped.
pub fn shm_reply(data: &[u8]) {
    let _ = shm_replies(data);
}

/// [`shm_reply`], telling each frame's outcome: the values read from it, or why its
/// replies were refused.
pub fn shm_replies(data: &[u8]) -> Vec<Result<usize, String>> {
    let segs = segments();
    let released = Arc::new(Mutex::new(Vec::new()));
    let log = released.clone();
    let mut importer = Importer::new(move |loan| log.lock().expect("log").push(loan));
    let mut fds: VecDeque<OwnedFd> = segs
        .fds
        .iter()
        .map(|f| f.try_clone().expect("dup"))
        .chain(std::iter::once(OwnedFd::from(
            segs.not_a_segment.try_clone().expect("dup"),
        )))
        .collect();
    let mut rest = data;
    let mut kept = Vec::new();
    let mut outcomes = Vec::new();
    for _ in 0..crate::decode::MAX_FRAMES {
        let Ok((f, used)) = split_frame(rest, &welcomed_limits()) else {
            break;
        };
        rest = &rest[used..];
        let msgs = match <PeerMsg as rask_proto::msg::WireMessage>::decode_batch(&f.header) {
            Ok(m) => m,
            Err(e) => {
                outcomes.push(Err(e.to_string()));
                continue;
            }
        };
        let batch = rask_transport::Batch {
            msgs,
            bufs: f.bufs,
            frame_bytes: 0,
        };
        let replies = match data::replies(batch, Some(&mut importer), Some(&mut fds)) {
            Ok(r) => r,
            Err(e) => {
                outcomes.push(Err(e.to_string()));
                continue;
            }
        };
        let mut values = 0;
        for r in replies {
            for it in &r.items {
                if let Ok(v) = it.value.to_value_from(&r.bufs, &[]) {
                    touch_value(&v);
                    kept.push(v);
                    values += 1;
                }
            }
            for p in r.bufs.iter() {
                if let Payload::Host(b) = p {
                    touch(std::slice::from_ref(b));
                }
            }
        }
        outcomes.push(Ok(values));
    }
    drop(kept);
    drop(importer);
    outcomes
}

/// What the holder of [`peer_serve`] holds: tasks 0..8, small and large byte values
/// (the large ones in the arena it lends from), nested lists.
fn store() -> &'static Vec<Value> {
    static STORE: OnceLock<Vec<Value>> = OnceLock::new();
    STORE.get_or_init(|| {
        let big = arena()
            .copy_in(&vec![7u8; 100 << 10])
            .expect("an arena region");
        vec![
            Value::Int(1),
            Value::Bytes(Bytes::from_static(b"small")),
            Value::Bytes(big.clone()),
            Value::List(vec![Value::Bytes(big), Value::Str("x".into())]),
            Value::Null,
            Value::List(vec![]),
            Value::Float(f64::NAN),
            Value::Bytes(Bytes::new()),
        ]
    })
}

/// The holder's lookup: each task held is an item, its bytes lent.
fn lookup(tasks: Vec<TaskId>, into_device: bool) -> Lookup {
    let store = store();
    let mut items = Vec::new();
    let mut bufs = Vec::new();
    let mut missing = Vec::new();
    for t in tasks {
        match store.get(t.0 as usize) {
            Some(v) => match v.to_datum_lent(&mut bufs, into_device) {
                Ok(value) => items.push(DataItem { task: t, value }),
                Err(_) => missing.push(t),
            },
            None => missing.push(t),
        }
    }
    (items, bufs, missing)
}

/// A holder serving one shared-memory data connection as a worker's unix listener does
/// (`accept_requester`, then `serve_shm` lending from its arena), over a real socket
/// pair whose other end sends the input and reads whatever comes back.
pub fn peer_serve(data: &[u8]) {
    let cfg = config(None, 1 << 20);
    let input = data.to_vec();
    block_on(async move {
        let Ok((mut ours, theirs)) = tokio::net::UnixStream::pair() else {
            return;
        };
        let (r, mut w) = theirs.into_split();
        let peer = tokio::spawn(async move {
            let (mut rd, mut wr) = ours.split();
            let send = async {
                let _ = wr.write_all(&input).await;
                let _ = wr.shutdown().await;
            };
            let recv = async {
                let mut sink = vec![0u8; 64 << 10];
                while matches!(rd.read(&mut sink).await, Ok(n) if n > 0) {}
            };
            tokio::join!(send, recv);
        });
        let mut reader = FrameReader::new(FdReader::new(r), cfg.clone());
        let name = rask_transport::data::accept_requester("fuzz", &mut reader, &mut w, &cfg).await;
        if name.is_some() {
            let (_retire, retired) = tokio::sync::broadcast::channel(4);
            let serve =
                rask_transport::data::serve_shm(reader, w, arena().clone(), retired, lookup);
            let _: Result<(), TransportError> = serve.await;
        } else {
            // The peer's writes must not wait on a reader that is gone.
            drop(reader);
            drop(w);
        }
        let _ = peer.await;
    });
}
