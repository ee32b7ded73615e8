//! Frames on a byte stream: the reader (limits before allocation, handshake-sized frames
//! until the peer is welcomed, bodies grown as their bytes arrive) and the writer task
//! that batches queued messages into frames.

use std::io::IoSlice;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rask_proto::frame::{self, PREFIX_LEN};
use rask_proto::msg::{Hello, WireMessage};
use rkyv::util::AlignedVec;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use crate::{shm, ConnConfig, TcpReadHalf, TransportError, HANDSHAKE_LIMITS};

/// A received frame: the aligned header and the payload buffers.
pub struct Frame {
    /// The rkyv header (or a refusal's reason text), 16-byte aligned for checked access.
    pub header: AlignedVec<16>,
    /// The raw buffers, in the order the prefix announced them.
    pub bufs: Vec<Bytes>,
}

/// A decoded batch of messages and the buffers their `Datum::Buf` indices refer to.
pub struct Batch<M> {
    /// The messages, in the order they were sent.
    pub msgs: Vec<M>,
    /// The frame's buffers, shared by all of `msgs`.
    pub bufs: Vec<Bytes>,
    /// The frame's size on the wire (header and buffers), for bounding what a
    /// connection may have read and not yet handled.
    pub frame_bytes: u64,
}

/// Reads frames from one connection.
///
/// Until the peer is welcomed ([`FrameReader::welcome`], done by [`accept`](crate::accept) and
/// [`connect`](crate::connect)), only frames within [`HANDSHAKE_LIMITS`] are read. Headers and payloads
/// grow as their bytes arrive: an announced length alone allocates nothing.
pub struct FrameReader<R = TcpReadHalf> {
    r: BufReader<R>,
    pub(crate) cfg: ConnConfig,
    /// Whether the peer has been through the handshake: it may send frames up to
    /// `cfg.limits` (before, [`HANDSHAKE_LIMITS`]).
    welcomed: bool,
    /// What this side's proof of the shared secret covers, for the welcome of a peer
    /// that proved it (server side).
    pub(crate) server_proof: Option<crate::handshake::ServerProof>,
    /// Where large payloads are received: pre-faulted, reused memory that same-host peers
    /// can map (instead of a fresh heap allocation that page-faults on first touch). Only
    /// for connections whose replies this side asked for, by size.
    arena: Option<shm::Arena>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Wraps a byte stream.
    pub fn new(r: R, cfg: ConnConfig) -> Self {
        FrameReader {
            r: BufReader::with_capacity(64 * 1024, r),
            cfg,
            welcomed: false,
            server_proof: None,
            arena: None,
        }
    }

    /// Waits until the peer has sent something (or closed the connection: an error).
    pub(crate) async fn ready(&mut self) -> Result<(), TransportError> {
        use tokio::io::AsyncBufReadExt;
        match self.r.fill_buf().await?.is_empty() {
            true => Err(TransportError::Closed),
            false => Ok(()),
        }
    }

    /// The peer has been through the handshake: from now on frames up to the
    /// connection's limits are read.
    pub fn welcome(&mut self) {
        self.welcomed = true;
    }

    /// Receives payloads of [`shm::INLINE_MAX`] bytes or more into `arena`.
    pub fn set_arena(&mut self, arena: Option<shm::Arena>) {
        self.arena = arena;
    }

    /// The next frame; `Ok(None)` on a clean end of stream between frames. A refusal
    /// frame (in any protocol version) is [`TransportError::Refused`].
    pub async fn read_frame(&mut self) -> Result<Option<Frame>, TransportError> {
        let mut prefix = [0u8; PREFIX_LEN];
        // Waiting for a frame to start may take forever; finishing it may not.
        let n = self.r.read(&mut prefix[..1]).await?;
        if n == 0 {
            return Ok(None);
        }
        let limits = if self.welcomed {
            self.cfg.limits
        } else {
            HANDSHAKE_LIMITS
        };
        let rest = async {
            self.r.read_exact(&mut prefix[1..]).await?;
            let p = frame::parse_prefix(&prefix, &limits)?;
            if p.refusal {
                let mut text = Vec::new();
                read_growing(&mut self.r, p.header_len as usize, |b| {
                    text.extend_from_slice(b)
                })
                .await?;
                return Err(TransportError::Refused(
                    String::from_utf8_lossy(&text).into_owned(),
                ));
            }
            let mut lens = Vec::new();
            read_growing(&mut self.r, p.nbufs as usize * 8, |b| {
                lens.extend_from_slice(b)
            })
            .await?;
            let lens = frame::parse_buf_lens(&lens, &limits)?;
            let mut header = AlignedVec::<16>::new();
            read_growing(&mut self.r, p.header_len as usize, |b| {
                header.extend_from_slice(b)
            })
            .await?;
            let mut bufs = Vec::with_capacity(lens.len());
            for len in lens {
                let len = len as usize;
                let region = match &self.arena {
                    Some(a) if len >= shm::INLINE_MAX => a.alloc(len).ok(),
                    _ => None,
                };
                match region {
                    Some(mut region) => {
                        self.r.read_exact(region.as_mut_slice()).await?;
                        bufs.push(region.freeze());
                    }
                    None => bufs.push(read_exact_bytes(&mut self.r, len).await?),
                }
            }
            Ok::<_, TransportError>(Frame { header, bufs })
        };
        match tokio::time::timeout(self.cfg.frame_timeout, rest).await {
            Ok(r) => r.map(Some),
            Err(_) => Err(TransportError::Timeout("in the middle of a frame")),
        }
    }

    /// The next batch of messages; `Ok(None)` at end of stream.
    pub async fn read_batch<M: WireMessage>(&mut self) -> Result<Option<Batch<M>>, TransportError> {
        let Some(f) = self.read_frame().await? else {
            return Ok(None);
        };
        let msgs = M::decode_batch(&f.header)?;
        let frame_bytes =
            f.header.len() as u64 + f.bufs.iter().map(|b| b.len() as u64).sum::<u64>();
        Ok(Some(Batch {
            msgs,
            bufs: f.bufs,
            frame_bytes,
        }))
    }

    /// The connection being read.
    pub fn get_mut(&mut self) -> &mut R {
        self.r.get_mut()
    }

    /// Reads one handshake frame of type `T` (the caller bounds the time).
    pub(crate) async fn read_handshake<T>(&mut self) -> Result<T, TransportError>
    where
        T: rkyv::Archive,
        T::Archived: for<'a> rkyv::bytecheck::CheckBytes<
                rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>,
            > + rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rkyv::rancor::Error>>,
    {
        let f = self.read_frame().await?.ok_or(TransportError::Closed)?;
        Ok(frame::decode_header::<T>(&f.header)?)
    }

    /// [`FrameReader::read_handshake`], with the SHA-256 of the header's bytes as
    /// received (what the client's proof covers).
    pub(crate) async fn read_handshake_hashed<T>(&mut self) -> Result<(T, [u8; 32]), TransportError>
    where
        T: rkyv::Archive,
        T::Archived: for<'a> rkyv::bytecheck::CheckBytes<
                rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>,
            > + rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rkyv::rancor::Error>>,
    {
        use sha2::Digest;
        let f = self.read_frame().await?.ok_or(TransportError::Closed)?;
        let hash = sha2::Sha256::digest(&f.header[..]).into();
        Ok((frame::decode_header::<T>(&f.header)?, hash))
    }

    /// Reads the peer's hello (the server side of a handshake, without authentication:
    /// [`accept`](crate::accept) does the whole of it).
    pub async fn read_hello(&mut self) -> Result<Hello, TransportError> {
        tokio::time::timeout(self.cfg.handshake_timeout, self.read_handshake::<Hello>())
            .await
            .map_err(|_| TransportError::Timeout("waiting for hello"))?
    }
}

/// Reads exactly `len` bytes, handing them to `put` as they arrive.
async fn read_growing<R: AsyncRead + Unpin>(
    r: &mut BufReader<R>,
    len: usize,
    mut put: impl FnMut(&[u8]),
) -> Result<(), TransportError> {
    use tokio::io::AsyncBufReadExt;
    let mut left = len;
    while left > 0 {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Err(TransportError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        let n = buf.len().min(left);
        put(&buf[..n]);
        r.consume(n);
        left -= n;
    }
    Ok(())
}

/// Reads exactly `len` bytes into a fresh buffer, without zero-filling it first. The
/// buffer grows as bytes arrive (doubling, from 64 KiB), so a peer that announces a
/// large payload and sends little makes this side hold little.
async fn read_exact_bytes<R: AsyncRead + Unpin>(
    r: &mut R,
    len: usize,
) -> Result<Bytes, TransportError> {
    let mut buf = BytesMut::new();
    while buf.len() < len {
        let want = len - buf.len();
        if buf.capacity() == buf.len() {
            buf.reserve(want.min(buf.len().max(64 << 10)));
        }
        let n = (&mut *r).take(want as u64).read_buf(&mut buf).await?;
        if n == 0 {
            return Err(TransportError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
    }
    Ok(buf.freeze())
}

/// Writes one frame: prefix, header and buffers in vectored writes, then flushes (a no-op
/// on a socket; over TLS it sends the records still held in the TLS layer, which would
/// otherwise wait for the next write).
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    header: &[u8],
    bufs: &[Bytes],
) -> Result<(), TransportError> {
    let prefix = frame::encode_prefix(header.len(), bufs.iter().map(|b| b.len() as u64));
    let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(2 + bufs.len());
    slices.push(IoSlice::new(&prefix));
    slices.push(IoSlice::new(header));
    slices.extend(
        bufs.iter()
            .filter(|b| !b.is_empty())
            .map(|b| IoSlice::new(b)),
    );
    write_all_vectored(w, slices).await?;
    w.flush().await?;
    Ok(())
}

/// Writes every slice, in as few `writev` calls as the socket takes.
pub(crate) async fn write_all_vectored<W: AsyncWrite + Unpin>(
    w: &mut W,
    mut slices: Vec<IoSlice<'_>>,
) -> Result<(), TransportError> {
    let mut rest: &mut [IoSlice<'_>] = &mut slices;
    while !rest.is_empty() {
        let n = w.write_vectored(rest).await?;
        if n == 0 {
            return Err(TransportError::Io(std::io::ErrorKind::WriteZero.into()));
        }
        IoSlice::advance_slices(&mut rest, n);
    }
    Ok(())
}

/// Sends messages on a connection; cheap to clone. Messages queued while the writer is
/// busy go out together in its next frame.
pub struct Sender<M> {
    tx: mpsc::UnboundedSender<Queued<M>>,
    /// Payload bytes that may wait in the queue (see [`channel_bounded`]).
    budget: Option<(std::sync::Arc<tokio::sync::Semaphore>, u32)>,
}

/// A message waiting for the writer, with the budget its payload holds until written.
type Msg<M> = (M, Vec<Bytes>, Option<tokio::sync::OwnedSemaphorePermit>);

/// What a sender queues: one message, or a batch of them in one entry of the queue (one
/// wake-up of the writer, and no move of each message through the queue).
enum Queued<M> {
    One(Msg<M>),
    Many(Vec<(M, Vec<Bytes>)>),
}

impl<M> Clone for Sender<M> {
    fn clone(&self) -> Self {
        Sender {
            tx: self.tx.clone(),
            budget: self.budget.clone(),
        }
    }
}

impl<M: WireMessage> Sender<M> {
    /// Queues a message without buffers.
    pub fn send(&self, m: M) -> Result<(), TransportError> {
        self.send_with(m, Vec::new())
    }

    /// Queues a message whose `Datum::Buf(i)` indices refer to `bufs[i]`.
    pub fn send_with(&self, m: M, bufs: Vec<Bytes>) -> Result<(), TransportError> {
        self.tx
            .send(Queued::One((m, bufs, None)))
            .map_err(|_| TransportError::Closed)
    }

    /// Queues messages (each with its buffers, as for [`Sender::send_with`]), in order,
    /// as one entry: for a sender with many messages at once, cheaper than one call each.
    pub fn send_batch(&self, msgs: Vec<(M, Vec<Bytes>)>) -> Result<(), TransportError> {
        if msgs.is_empty() {
            return match self.tx.is_closed() {
                true => Err(TransportError::Closed),
                false => Ok(()),
            };
        }
        self.tx
            .send(Queued::Many(msgs))
            .map_err(|_| TransportError::Closed)
    }

    /// Like [`Sender::send_with`], but on a [`channel_bounded`] sender waits while the
    /// payload bytes queued and not yet written exceed the bound: a slow receiver then
    /// slows the sender instead of growing its queue.
    pub async fn send_bounded(&self, m: M, bufs: Vec<Bytes>) -> Result<(), TransportError> {
        let permit = match &self.budget {
            Some((sem, max)) => {
                let total: u64 = bufs.iter().map(|b| b.len() as u64).sum();
                let n = total.min(*max as u64) as u32;
                Some(
                    sem.clone()
                        .acquire_many_owned(n)
                        .await
                        .map_err(|_| TransportError::Closed)?,
                )
            }
            None => None,
        };
        self.tx
            .send(Queued::One((m, bufs, permit)))
            .map_err(|_| TransportError::Closed)
    }

    /// Whether the writer has stopped (the connection failed or closed).
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// The most messages one frame carries.
const MAX_BATCH: usize = 16 * 1024;

/// The header size a writer aims to stay below when it batches messages into a frame (by
/// their [`WireMessage::wire_size`] estimates): well inside any receiver's header limit.
/// A single larger message still goes, alone; senders split what they send so that none
/// is (the client splits large graphs into parts).
pub const FRAME_TARGET: usize = 8 << 20;

/// What a batch's header holds besides its messages (the list's own root and padding).
const BATCH_OVERHEAD: usize = 64;

/// Starts the writer task of a connection. It ends when every [`Sender`] is dropped or a
/// write fails; the write half is then shut down.
pub fn spawn_writer<M: WireMessage, W: AsyncWrite + Unpin + Send + 'static>(w: W) -> Sender<M> {
    let (tx, pending) = channel();
    pending.start(w);
    tx
}

/// A sender whose connection does not exist yet: messages queue until
/// [`PendingWriter::start`] is given the connection.
pub fn channel<M: WireMessage>() -> (Sender<M>, PendingWriter<M>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Sender { tx, budget: None }, PendingWriter { rx })
}

/// [`channel`] whose [`Sender::send_bounded`] keeps at most `max_bytes` of payload queued
/// (a single larger payload still goes, alone).
pub fn channel_bounded<M: WireMessage>(max_bytes: u32) -> (Sender<M>, PendingWriter<M>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(max_bytes as usize));
    (
        Sender {
            tx,
            budget: Some((sem, max_bytes)),
        },
        PendingWriter { rx },
    )
}

/// The receiving end of [`channel`].
pub struct PendingWriter<M> {
    rx: mpsc::UnboundedReceiver<Queued<M>>,
}

impl<M: WireMessage> PendingWriter<M> {
    /// Starts writing queued and future messages to `w`.
    pub fn start<W: AsyncWrite + Unpin + Send + 'static>(self, mut w: W) {
        let mut rx = Inbox {
            rx: self.rx,
            batch: Vec::new().into_iter(),
        };
        tokio::spawn(async move {
            let mut msgs = Vec::new();
            let mut bufs = Vec::new();
            let mut permits = Vec::new();
            // A message that would take the frame past FRAME_TARGET waits for the next.
            let mut next: Option<Msg<M>> = None;
            loop {
                let first = match next.take() {
                    Some(m) => m,
                    None => match rx.recv().await {
                        Some(m) => m,
                        None => break,
                    },
                };
                let mut size = first.0.wire_size();
                push(&mut msgs, &mut bufs, &mut permits, first);
                while msgs.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Some(m) => {
                            size += m.0.wire_size();
                            if size > FRAME_TARGET {
                                next = Some(m);
                                break;
                            }
                            push(&mut msgs, &mut bufs, &mut permits, m);
                        }
                        None => break,
                    }
                }
                // Room for the estimate: the header does not grow (and copy) on the way.
                let header = M::encode_batch_with_room(&msgs, size + BATCH_OVERHEAD);
                msgs.clear();
                if let Err(e) = write_frame(&mut w, &header, &bufs).await {
                    tracing::debug!("write failed: {e}");
                    break;
                }
                bufs.clear();
                // Written: the budget is free again.
                permits.clear();
            }
            rx.rx.close();
            let _ = w.shutdown().await;
        });
    }
}

/// The writer's end of the queue, one message at a time: the rest of a batch taken from
/// the queue first.
struct Inbox<M> {
    rx: mpsc::UnboundedReceiver<Queued<M>>,
    batch: std::vec::IntoIter<(M, Vec<Bytes>)>,
}

impl<M> Inbox<M> {
    /// The next message, waiting for one; `None` once every sender is gone.
    async fn recv(&mut self) -> Option<Msg<M>> {
        loop {
            if let Some(m) = self.try_recv() {
                return Some(m);
            }
            match self.rx.recv().await? {
                Queued::One(m) => return Some(m),
                Queued::Many(v) => self.batch = v.into_iter(),
            }
        }
    }

    /// The next message if one is queued.
    fn try_recv(&mut self) -> Option<Msg<M>> {
        loop {
            if let Some((m, bufs)) = self.batch.next() {
                return Some((m, bufs, None));
            }
            match self.rx.try_recv().ok()? {
                Queued::One(m) => return Some(m),
                Queued::Many(v) => self.batch = v.into_iter(),
            }
        }
    }
}

fn push<M: WireMessage>(
    msgs: &mut Vec<M>,
    bufs: &mut Vec<Bytes>,
    permits: &mut Vec<tokio::sync::OwnedSemaphorePermit>,
    (mut m, own, permit): Msg<M>,
) {
    permits.extend(permit);
    if !own.is_empty() {
        m.shift_buffers(bufs.len() as u32);
        bufs.extend(own);
    }
    msgs.push(m);
}

/// Reads and discards what a peer still sends, until it closes or `limit` passes: so a
/// message sent just before closing (why the connection ends) is not lost to the reset
/// that closing a socket with unread bytes sends. Holds no more than one small buffer.
pub async fn drain<R: AsyncRead + Unpin>(r: &mut R, limit: Duration) {
    let mut sink = [0u8; 16 << 10];
    let _ = tokio::time::timeout(limit, async {
        while matches!(r.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use rask_proto::frame::FrameLimits;
    use rask_proto::msg::{DataItem, PeerMsg};
    use rask_proto::ProtoError;
    use rask_proto::{Datum, TaskId};

    #[tokio::test]
    async fn a_reader_that_does_not_read_holds_back_a_bounded_sender() {
        let (near, mut far) = tokio::io::duplex(64 * 1024);
        let (tx, writer) = channel_bounded::<PeerMsg>(1 << 20);
        writer.start(near);
        let reply = |req| PeerMsg::Data {
            req,
            items: vec![DataItem {
                task: TaskId(req),
                value: Datum::Buf(0),
            }],
            missing: vec![],
        };
        let payload = Bytes::from(vec![3u8; 1 << 20]);
        // The first reply takes the whole budget and cannot be written: nobody reads.
        tx.send_bounded(reply(1), vec![payload.clone()])
            .await
            .unwrap();
        let second = tx.send_bounded(reply(2), vec![payload.clone()]);
        tokio::pin!(second);
        for _ in 0..10 {
            let polled = std::future::poll_fn(|cx| {
                std::task::Poll::Ready(std::future::Future::poll(second.as_mut(), cx).is_pending())
            })
            .await;
            assert!(polled, "the second reply was queued past the budget");
            tokio::task::yield_now().await;
        }
        // Reading the first frame frees the budget.
        let mut reader = FrameReader::new(&mut far, ConnConfig::default());
        reader.welcome();
        let first = reader.read_batch::<PeerMsg>().await.unwrap().unwrap();
        assert_eq!(first.bufs[0].len(), 1 << 20);
        second.await.unwrap();
        let next = reader.read_batch::<PeerMsg>().await.unwrap().unwrap();
        assert!(matches!(next.msgs[0], PeerMsg::Data { req: 2, .. }));
    }

    #[tokio::test]
    async fn batches_and_single_messages_go_in_the_order_sent_each_with_its_buffers() {
        let (near, mut far) = tokio::io::duplex(1 << 16);
        let (tx, writer) = channel::<PeerMsg>();
        let data = |req: u64| {
            (
                PeerMsg::Data {
                    req,
                    items: vec![DataItem {
                        task: TaskId(req),
                        value: Datum::Buf(0),
                    }],
                    missing: vec![],
                },
                vec![Bytes::from(vec![req as u8; 10 + req as usize])],
            )
        };
        let ask = |req: u64, n: usize| PeerMsg::GetData {
            req,
            tasks: vec![TaskId(req); n],
            into_device: false,
        };
        let (m, b) = data(1);
        tx.send_with(m, b).unwrap();
        tx.send_batch(vec![data(2), data(3)]).unwrap();
        tx.send_batch(Vec::new()).unwrap();
        // Two messages whose headers together pass a frame's target: they go in two frames.
        let big = FRAME_TARGET / 8 * 5 / 8;
        tx.send_batch(vec![(ask(4, big), vec![]), (ask(5, big), vec![])])
            .unwrap();
        let (m, b) = data(6);
        tx.send_with(m, b).unwrap();
        drop(tx);
        writer.start(near);
        let mut reader = FrameReader::new(&mut far, ConnConfig::default());
        reader.welcome();
        let mut seen = Vec::new();
        let mut frames = 0;
        while let Some(batch) = reader.read_batch::<PeerMsg>().await.unwrap() {
            frames += 1;
            for m in batch.msgs {
                match m {
                    PeerMsg::Data { req, items, .. } => {
                        let Datum::Buf(i) = items[0].value else {
                            panic!("a buffer")
                        };
                        let buf = &batch.bufs[i as usize];
                        assert_eq!(buf.len(), 10 + req as usize, "the buffer of {req}");
                        assert!(buf.iter().all(|b| *b as u64 == req), "the buffer of {req}");
                        seen.push(req);
                    }
                    PeerMsg::GetData { req, tasks, .. } => {
                        assert_eq!(tasks.len(), big);
                        seen.push(req);
                    }
                    _ => panic!("unexpected message"),
                }
            }
        }
        assert_eq!(seen, [1, 2, 3, 4, 5, 6]);
        assert!(frames >= 2, "the large batch split: {frames} frames");
    }

    #[tokio::test]
    async fn a_batch_to_a_closed_writer_is_an_error() {
        let (tx, writer) = channel::<PeerMsg>();
        drop(writer);
        assert!(matches!(
            tx.send_batch(Vec::new()),
            Err(TransportError::Closed)
        ));
        let ask = PeerMsg::GetData {
            req: 1,
            tasks: vec![],
            into_device: false,
        };
        assert!(matches!(
            tx.send_batch(vec![(ask, vec![])]),
            Err(TransportError::Closed)
        ));
    }

    #[tokio::test]
    async fn garbage_and_oversize_frames_are_errors() {
        let cfg = ConnConfig {
            limits: FrameLimits {
                max_header: 1024,
                max_buffers: 4,
                max_payload: 1 << 20,
            },
            frame_timeout: Duration::from_secs(5),
            ..ConnConfig::default()
        };
        let welcomed = |b| {
            let mut r = FrameReader::new(b, cfg.clone());
            r.welcome();
            r
        };
        let mut r = FrameReader::new(&b"GET / HTTP/1.1\r\n\r\n"[..], cfg.clone());
        assert!(matches!(
            r.read_frame().await,
            Err(TransportError::Proto(ProtoError::BadMagic(_)))
        ));
        let big = frame::encode_prefix(10, [2u64 << 20].into_iter());
        let mut r = welcomed(&big[..]);
        assert!(matches!(
            r.read_frame().await,
            Err(TransportError::Proto(ProtoError::TooLarge { .. }))
        ));
        let junk = frame::encode_frame(b"not rkyv at all", &[]);
        let mut r = FrameReader::new(&junk[..], cfg.clone());
        assert!(matches!(
            r.read_batch::<PeerMsg>().await,
            Err(TransportError::Proto(_))
        ));
        let cut = frame::encode_frame(b"abc", &[b"xyz"]);
        let mut r = welcomed(&cut[..5]);
        assert!(r.read_frame().await.is_err(), "truncated frame");
        let mut r = FrameReader::new(&b""[..], cfg.clone());
        assert!(r.read_frame().await.unwrap().is_none(), "clean end");
    }
}
