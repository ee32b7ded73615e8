//! Endpoints: framed TCP connections.
//!
//! A connection is a [`FrameReader`] (reads frames, checks limits before allocating,
//! validates headers) and a [`Sender`] (a writer task that drains everything queued since
//! its last write into one frame and writes prefix, header and payload buffers with
//! vectored writes — payloads are never copied into a send buffer). The first frame on
//! every connection is a [`Hello`], answered by a [`HelloReply`].
//!
//! This crate moves bytes; it does not interpret messages.

use std::io::IoSlice;
use std::time::Duration;

pub mod inproc;
pub mod shm;

/// Which transports a worker may use for data, like `UCX_TLS`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TransportMode {
    /// By peer: same process → inproc, same host → shm, otherwise tcp.
    #[default]
    Auto,
    /// tcp to every peer.
    Tcp,
    /// shm to every same-host peer (in-process ones included), tcp to remote ones.
    Shm,
}

impl std::str::FromStr for TransportMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(TransportMode::Auto),
            "tcp" => Ok(TransportMode::Tcp),
            "shm" => Ok(TransportMode::Shm),
            other => Err(format!(
                "unknown transport {other:?}: expected auto, tcp or shm"
            )),
        }
    }
}

impl std::fmt::Display for TransportMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TransportMode::Auto => "auto",
            TransportMode::Tcp => "tcp",
            TransportMode::Shm => "shm",
        })
    }
}

impl TransportMode {
    /// The mode named by `RASK_TRANSPORT`, if set.
    pub fn from_env() -> Result<Option<TransportMode>, String> {
        match std::env::var("RASK_TRANSPORT") {
            Ok(v) if !v.is_empty() => v.parse().map(Some),
            _ => Ok(None),
        }
    }

    /// The transport to use to a peer, from the identities exchanged in the handshake
    /// (never from IP addresses).
    pub fn select(self, me: (&str, u32), peer: (&str, u32), peer_has_shm: bool) -> Link {
        let same_host = me.0 == peer.0 && !me.0.is_empty();
        match self {
            TransportMode::Tcp => Link::Tcp,
            TransportMode::Auto if same_host && me.1 == peer.1 => Link::Inproc,
            _ if same_host && peer_has_shm => Link::Shm,
            _ => Link::Tcp,
        }
    }
}

/// The transport chosen for one peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    Inproc,
    Shm,
    Tcp,
}

impl std::fmt::Display for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Link::Inproc => "inproc",
            Link::Shm => "shm",
            Link::Tcp => "tcp",
        })
    }
}

use bytes::{Bytes, BytesMut};
use rask_proto::frame::{self, FrameLimits, PREFIX_LEN};
use rask_proto::msg::{AuthProof, Hello, HelloReply, WireMessage};
use rask_proto::ProtoError;
use rkyv::util::AlignedVec;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Errors of connections.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Proto(#[from] ProtoError),
    #[error("refused by peer: {0}")]
    Refused(String),
    #[error("connection closed")]
    Closed,
    #[error("timed out {0}")]
    Timeout(&'static str),
    #[error("bad address {0:?}: expected tcp://host:port")]
    BadAddress(String),
    #[error("unexpected handshake reply")]
    BadHandshake,
    #[error("the peer requires authentication: give this process the cluster's secret (--auth-file, RASK_AUTH_FILE or RASK_AUTH_SECRET)")]
    AuthRequired,
    #[error("authentication failed: {0}")]
    AuthFailed(String),
    #[error("shared memory: {0}")]
    Shm(String),
    #[error("cannot read the secret from {path}: {message}")]
    Secret { path: String, message: String },
    #[error("no connection and handshake within {0:?} (the connect timeout)")]
    ConnectTimeout(Duration),
    #[error("too many connections in their handshake ({0}): closed at once")]
    Busy(usize),
}

/// How long a peer may take to finish a frame it started.
pub const DEFAULT_FRAME_TIMEOUT: Duration = Duration::from_secs(60);

/// How long connecting and the whole handshake may take (a listener that never answers,
/// a peer that never says hello).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a peer may send before the handshake is done: a hello (its registry's op names
/// included) or an authentication proof, a few KiB; no payload buffers. Nothing larger is
/// read, and nothing is allocated for it, until the peer has been welcomed.
pub const HANDSHAKE_LIMITS: FrameLimits = FrameLimits {
    max_header: 64 << 10,
    max_buffers: 0,
    max_payload: 0,
};

/// Connection settings.
#[derive(Clone, Debug)]
pub struct ConnConfig {
    /// Limits on frames once the peer has been welcomed (before, [`HANDSHAKE_LIMITS`]).
    pub limits: FrameLimits,
    /// Once a frame has started, the rest must arrive within this.
    pub frame_timeout: Duration,
    /// Connecting, and the whole handshake on either side, must finish within this.
    pub handshake_timeout: Duration,
    /// The cluster's shared secret. With one, every connection must prove it (both ways);
    /// without one, peers that require it are refused.
    pub auth: Option<Secret>,
    /// Bounds the connections of this process's listeners that are still in their
    /// handshake (shared by clones).
    pub gate: HandshakeGate,
}

impl Default for ConnConfig {
    fn default() -> Self {
        ConnConfig {
            limits: FrameLimits::default(),
            frame_timeout: DEFAULT_FRAME_TIMEOUT,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            auth: None,
            gate: HandshakeGate::default(),
        }
    }
}

/// Admission of connections that have not finished their handshake: at most `waiting`
/// more than `in_progress` are admitted (any beyond are closed at once), and of those
/// that have started sending, at most `in_progress` read at once (each may hold up to a
/// [`HANDSHAKE_LIMITS`] frame, as its bytes arrive). An unauthenticated peer can thus hold
/// neither memory nor file descriptors without bound, and one that stays silent holds no
/// turn.
#[derive(Clone, Debug)]
pub struct HandshakeGate {
    turns: std::sync::Arc<tokio::sync::Semaphore>,
    admitted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    max_admitted: usize,
}

impl Default for HandshakeGate {
    fn default() -> Self {
        HandshakeGate::new(64, 1024)
    }
}

/// A connection admitted by a [`HandshakeGate`]; it leaves the gate when dropped.
pub struct Admission {
    admitted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.admitted
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl HandshakeGate {
    /// A gate letting `in_progress` handshakes run at once and `waiting` more queue.
    pub fn new(in_progress: usize, waiting: usize) -> HandshakeGate {
        HandshakeGate {
            turns: std::sync::Arc::new(tokio::sync::Semaphore::new(in_progress.max(1))),
            admitted: std::sync::Arc::default(),
            max_admitted: in_progress.max(1) + waiting,
        }
    }

    /// Admits a fresh connection, or `None` when too many are already in their handshake.
    pub fn admit(&self) -> Option<Admission> {
        use std::sync::atomic::Ordering;
        let before = self.admitted.fetch_add(1, Ordering::Relaxed);
        let admission = Admission {
            admitted: self.admitted.clone(),
        };
        (before < self.max_admitted).then_some(admission)
    }

    /// Connections admitted and not yet through their handshake.
    pub fn admitted(&self) -> usize {
        self.admitted.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A shared secret, proven by HMAC-SHA256 over fresh nonces of both sides in the
/// handshake; never sent, never printed.
#[derive(Clone)]
pub struct Secret(std::sync::Arc<Vec<u8>>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<hidden>)")
    }
}

const SERVER_PROOF: &[u8] = b"rask server proof v2";
/// How a refusal for a wrong proof of the secret begins.
const WRONG_SECRET: &str = "authentication failed";
const CLIENT_PROOF: &[u8] = b"rask client proof v2";

impl Secret {
    /// A secret from bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Secret {
        Secret(std::sync::Arc::new(bytes.into()))
    }

    /// The secret's bytes, for handing it to a child process through a private file.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Reads a secret file (surrounding whitespace ignored; must not be empty).
    pub fn from_file(path: &std::path::Path) -> Result<Secret, TransportError> {
        let err = |message: String| TransportError::Secret {
            path: path.display().to_string(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let trimmed = bytes.trim_ascii();
        if trimmed.is_empty() {
            return Err(err("the file is empty".into()));
        }
        Ok(Secret::new(trimmed.to_vec()))
    }

    /// The secret named by `RASK_AUTH_FILE` (a path) or `RASK_AUTH_SECRET` (the value).
    pub fn from_env() -> Result<Option<Secret>, TransportError> {
        if let Some(p) = std::env::var_os("RASK_AUTH_FILE").filter(|p| !p.is_empty()) {
            return Secret::from_file(std::path::Path::new(&p)).map(Some);
        }
        Ok(std::env::var("RASK_AUTH_SECRET")
            .ok()
            .filter(|s| !s.is_empty())
            .map(Secret::new))
    }

    fn mac(&self, label: &[u8], a: &[u8; 32], b: &[u8; 32]) -> hmac::Hmac<sha2::Sha256> {
        use hmac::Mac;
        let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.0)
            .expect("invariant: HMAC takes any key length");
        m.update(label);
        m.update(a);
        m.update(b);
        m
    }

    fn proof(&self, label: &[u8], a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
        use hmac::Mac;
        self.mac(label, a, b).finalize().into_bytes().into()
    }

    /// Constant-time check of a proof.
    fn verify(&self, label: &[u8], a: &[u8; 32], b: &[u8; 32], proof: &[u8; 32]) -> bool {
        use hmac::Mac;
        self.mac(label, a, b).verify_slice(proof).is_ok()
    }
}

fn nonce() -> [u8; 32] {
    let mut n = [0u8; 32];
    getrandom::fill(&mut n).expect("the operating system's random source");
    n
}

/// A received frame: the aligned header and the payload buffers.
pub struct Frame {
    pub header: AlignedVec<16>,
    pub bufs: Vec<Bytes>,
}

/// A decoded batch of messages and the buffers their `Datum::Buf` indices refer to.
pub struct Batch<M> {
    pub msgs: Vec<M>,
    pub bufs: Vec<Bytes>,
    /// The frame's size on the wire (header and buffers), for bounding what a
    /// connection may have read and not yet handled.
    pub frame_bytes: u64,
}

/// `tcp://host:port` → `host:port`.
pub fn parse_addr(addr: &str) -> Result<&str, TransportError> {
    let rest = addr.strip_prefix("tcp://").unwrap_or(addr);
    if rest.is_empty() || !rest.contains(':') {
        return Err(TransportError::BadAddress(addr.into()));
    }
    Ok(rest)
}

/// Reads frames from one connection.
///
/// Until the peer is welcomed ([`FrameReader::welcome`], done by [`accept`] and
/// [`connect`]), only frames within [`HANDSHAKE_LIMITS`] are read. Headers and payloads
/// grow as their bytes arrive: an announced length alone allocates nothing.
pub struct FrameReader<R = OwnedReadHalf> {
    r: BufReader<R>,
    cfg: ConnConfig,
    /// Whether the peer has been through the handshake: it may send frames up to
    /// `cfg.limits` (before, [`HANDSHAKE_LIMITS`]).
    welcomed: bool,
    /// This side's proof of the shared secret, for the welcome of a peer that proved it
    /// (server side).
    server_proof: Option<[u8; 32]>,
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
    async fn ready(&mut self) -> Result<(), TransportError> {
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
    async fn read_handshake<T>(&mut self) -> Result<T, TransportError>
    where
        T: rkyv::Archive,
        T::Archived: for<'a> rkyv::bytecheck::CheckBytes<
                rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>,
            > + rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rkyv::rancor::Error>>,
    {
        let f = self.read_frame().await?.ok_or(TransportError::Closed)?;
        Ok(frame::decode_header::<T>(&f.header)?)
    }

    /// Reads the peer's hello (the server side of a handshake, without authentication:
    /// [`accept`] does the whole of it).
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

/// Writes one frame: prefix, header and buffers in vectored writes.
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
    write_all_vectored(w, slices).await
}

/// Writes every slice, in as few `writev` calls as the socket takes.
async fn write_all_vectored<W: AsyncWrite + Unpin>(
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
type Queued<M> = (M, Vec<Bytes>, Option<tokio::sync::OwnedSemaphorePermit>);

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
            .send((m, bufs, None))
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
            .send((m, bufs, permit))
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
        let mut rx = self.rx;
        tokio::spawn(async move {
            let mut msgs = Vec::new();
            let mut bufs = Vec::new();
            let mut permits = Vec::new();
            // A message that would take the frame past FRAME_TARGET waits for the next.
            let mut next: Option<Queued<M>> = None;
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
                        Ok(m) => {
                            size += m.0.wire_size();
                            if size > FRAME_TARGET {
                                next = Some(m);
                                break;
                            }
                            push(&mut msgs, &mut bufs, &mut permits, m);
                        }
                        Err(_) => break,
                    }
                }
                let header = M::encode_batch(&msgs);
                msgs.clear();
                if let Err(e) = write_frame(&mut w, &header, &bufs).await {
                    tracing::debug!("write failed: {e}");
                    break;
                }
                bufs.clear();
                // Written: the budget is free again.
                permits.clear();
            }
            rx.close();
            let _ = w.shutdown().await;
        });
    }
}

fn push<M: WireMessage>(
    msgs: &mut Vec<M>,
    bufs: &mut Vec<Bytes>,
    permits: &mut Vec<tokio::sync::OwnedSemaphorePermit>,
    (mut m, own, permit): Queued<M>,
) {
    permits.extend(permit);
    if !own.is_empty() {
        m.shift_buffers(bufs.len() as u32);
        bufs.extend(own);
    }
    msgs.push(m);
}

/// Opens a connection and does the client side of the handshake (authentication
/// included when either side has a secret), all within `cfg.handshake_timeout`.
pub async fn connect(
    addr: &str,
    hello: &Hello,
    cfg: ConnConfig,
) -> Result<(FrameReader, OwnedWriteHalf, u32), TransportError> {
    let target = parse_addr(addr)?;
    let limit = cfg.handshake_timeout;
    tokio::time::timeout(limit, async {
        let stream = TcpStream::connect(target).await?;
        stream.set_nodelay(true)?;
        let (r, w) = stream.into_split();
        handshake(FrameReader::new(r, cfg), w, hello).await
    })
    .await
    .map_err(|_| TransportError::ConnectTimeout(limit))?
}

/// Opens a same-host connection to `unix:@name` (an abstract unix socket) and does the
/// client side of the handshake; the reader also receives file descriptors.
pub async fn connect_unix(
    addr: &str,
    hello: &Hello,
    cfg: ConnConfig,
) -> Result<
    (
        FrameReader<shm::FdReader>,
        tokio::net::unix::OwnedWriteHalf,
        u32,
    ),
    TransportError,
> {
    let name = addr
        .strip_prefix("unix:@")
        .ok_or_else(|| TransportError::BadAddress(addr.into()))?
        .to_string();
    let limit = cfg.handshake_timeout;
    tokio::time::timeout(limit, async {
        let stream = tokio::task::spawn_blocking(move || {
            use std::os::linux::net::SocketAddrExt;
            let a = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            let s = std::os::unix::net::UnixStream::connect_addr(&a)?;
            s.set_nonblocking(true)?;
            Ok::<_, std::io::Error>(s)
        })
        .await
        .map_err(|e| TransportError::Io(std::io::Error::other(e)))??;
        let (r, w) = tokio::net::UnixStream::from_std(stream)?.into_split();
        handshake(FrameReader::new(shm::FdReader::new(r), cfg), w, hello).await
    })
    .await
    .map_err(|_| TransportError::ConnectTimeout(limit))?
}

/// Binds an abstract unix socket with a fresh name; returns it and its `unix:@name`.
pub fn listen_unix() -> Result<(tokio::net::UnixListener, String), TransportError> {
    use std::os::linux::net::SocketAddrExt;
    let mut r = [0u8; 8];
    getrandom::fill(&mut r)
        .map_err(|e| TransportError::Io(std::io::Error::other(e.to_string())))?;
    let name = format!("rask-{}-{:016x}", std::process::id(), u64::from_le_bytes(r));
    let a = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    let l = std::os::unix::net::UnixListener::bind_addr(&a)?;
    l.set_nonblocking(true)?;
    Ok((
        tokio::net::UnixListener::from_std(l)?,
        format!("unix:@{name}"),
    ))
}

/// The client side of the handshake on an open connection.
async fn handshake<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    mut reader: FrameReader<R>,
    mut w: W,
    hello: &Hello,
) -> Result<(FrameReader<R>, W, u32), TransportError> {
    let mut hello = hello.clone();
    hello.nonce = nonce();
    write_frame(&mut w, &frame::encode_header(&hello), &[]).await?;
    let auth = reader.cfg.auth.clone();
    let mut reply = reader.read_handshake::<HelloReply>().await?;
    // With a secret: this side proves it first, and the server's proof comes back with
    // its welcome (a peer that proves nothing learns nothing to guess the secret from).
    let mut challenge = None;
    if let HelloReply::Challenge {
        nonce: server_nonce,
    } = reply
    {
        let secret = auth.as_ref().ok_or(TransportError::AuthRequired)?;
        let ours = AuthProof {
            proof: secret.proof(CLIENT_PROOF, &server_nonce, &hello.nonce),
        };
        write_frame(&mut w, &frame::encode_header(&ours), &[]).await?;
        challenge = Some((secret, server_nonce));
        reply = match reader.read_handshake::<HelloReply>().await {
            Ok(r) => r,
            Err(TransportError::Refused(r)) if r.starts_with(WRONG_SECRET) => {
                return Err(TransportError::AuthFailed(r))
            }
            Err(TransportError::Closed) => {
                return Err(TransportError::AuthFailed(
                    "the server closed the connection on this side's proof of the secret".into(),
                ))
            }
            Err(e) => return Err(e),
        };
    } else if auth.is_some() {
        return Err(TransportError::AuthFailed(
            "the server does not authenticate; refusing to use it with a secret configured".into(),
        ));
    }
    match (reply, challenge) {
        (HelloReply::Welcome { id, proof, .. }, Some((secret, server_nonce))) => {
            let proven =
                proof.is_some_and(|p| secret.verify(SERVER_PROOF, &hello.nonce, &server_nonce, &p));
            if !proven {
                return Err(TransportError::AuthFailed(
                    "the server does not know this cluster's secret".into(),
                ));
            }
            reader.welcome();
            Ok((reader, w, id))
        }
        (HelloReply::Welcome { id, .. }, None) => {
            reader.welcome();
            Ok((reader, w, id))
        }
        (HelloReply::Challenge { .. }, _) => Err(TransportError::BadHandshake),
    }
}

/// The server side of the handshake: reads the peer's hello and, when this side has a
/// secret, challenges the peer to prove it; the peer is then welcomed by the reader
/// (larger frames are read). The caller answers with `Welcome` ([`reply_hello`]) or
/// refuses ([`refuse`]).
///
/// Bounded for unauthenticated peers: the connection must be admitted by `cfg.gate`
/// (else [`TransportError::Busy`] at once), waits for a turn among the handshakes in
/// progress, and must finish within `cfg.handshake_timeout`; until then only frames
/// within [`HANDSHAKE_LIMITS`] are read.
pub async fn accept<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    reader: &mut FrameReader<R>,
    w: &mut W,
    cfg: &ConnConfig,
) -> Result<Hello, TransportError> {
    let Some(_admitted) = cfg.gate.admit() else {
        return Err(TransportError::Busy(cfg.gate.admitted()));
    };
    let hello = tokio::time::timeout(cfg.handshake_timeout, async {
        // A silent connection holds no turn: only one that is sending its hello does.
        reader.ready().await?;
        let _turn = cfg.gate.turns.acquire().await;
        let hello = reader.read_handshake::<Hello>().await?;
        if let Some(secret) = &cfg.auth {
            let ours = nonce();
            reply_hello(w, &HelloReply::Challenge { nonce: ours }).await?;
            let theirs = reader.read_handshake::<AuthProof>().await?;
            if !secret.verify(CLIENT_PROOF, &ours, &hello.nonce, &theirs.proof) {
                return Err(TransportError::AuthFailed(format!(
                    "{:?} {:?} gave a wrong proof of the cluster's secret",
                    hello.role, hello.name
                )));
            }
            reader.server_proof = Some(secret.proof(SERVER_PROOF, &hello.nonce, &ours));
        }
        Ok(hello)
    })
    .await
    .map_err(|_| TransportError::Timeout("in the handshake"))??;
    reader.welcome();
    Ok(hello)
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

/// Welcomes a peer [`accept`] has taken, giving it `id` (and, with a shared secret, this
/// side's proof of it).
pub async fn welcome<R, W: AsyncWrite + Unpin>(
    w: &mut W,
    reader: &FrameReader<R>,
    id: u32,
) -> Result<(), TransportError> {
    let reply = HelloReply::Welcome {
        id,
        rask_version: rask_proto::RASK_VERSION.into(),
        proof: reader.server_proof,
    };
    reply_hello(w, &reply).await
}

/// Answers a hello (server side of the handshake).
pub async fn reply_hello<W: AsyncWrite + Unpin>(
    w: &mut W,
    reply: &HelloReply,
) -> Result<(), TransportError> {
    write_frame(w, &frame::encode_header(reply), &[]).await
}

/// Refuses a peer in its handshake with a [refusal frame](rask_proto::frame), which a
/// peer of any protocol version can read. What the peer is told never includes more than
/// the reason given here.
pub async fn refuse<W: AsyncWrite + Unpin>(w: &mut W, reason: &str) -> Result<(), TransportError> {
    // Bounded like any handshake frame, so the peer can read it.
    let max = HANDSHAKE_LIMITS.max_header as usize;
    let mut end = reason.len().min(max);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    w.write_all(&frame::encode_refusal(&reason[..end])).await?;
    w.flush().await?;
    Ok(())
}

/// Tells a peer why a handshake went wrong, for the server side: a refusal naming the
/// reason (errors of reading, such as a closed connection, are not answered).
pub async fn refuse_after<W: AsyncWrite + Unpin>(w: &mut W, e: &TransportError) {
    let reason = match e {
        TransportError::Proto(ProtoError::Version { peer, ours }) => format!(
            "protocol version mismatch: you speak protocol {peer}, this rask {} speaks {ours}",
            rask_proto::RASK_VERSION
        ),
        TransportError::AuthFailed(_) => format!("{WRONG_SECRET}: wrong secret"),
        TransportError::Io(_) | TransportError::Closed => return,
        e => e.to_string(),
    };
    let _ = refuse(w, &reason).await;
}

/// Binds a listener; `addr` may be `tcp://host:port` or `host:port` (port 0 picks one).
pub async fn listen(addr: &str) -> Result<TcpListener, TransportError> {
    Ok(TcpListener::bind(parse_addr(addr)?).await?)
}

/// The `tcp://ip:port` form of a listener's address.
pub fn listener_addr(l: &TcpListener) -> Result<String, TransportError> {
    Ok(format!("tcp://{}", l.local_addr()?))
}

/// An identity of this host, the same for every process on it: used to tell same-host
/// peers from remote ones (never the IP address). It names the kernel (boot id) and the
/// network namespace: processes in other namespaces cannot reach each other's abstract
/// unix sockets, so for transport purposes they are other hosts.
pub fn host_id() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let netns = std::fs::read_link("/proc/self/ns/net")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{}-{}-{}", name.trim(), boot.trim(), netns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rask_proto::msg::{DataItem, PeerMsg, Role};
    use rask_proto::{Datum, TaskId};

    fn hello() -> Hello {
        Hello {
            protocol: rask_proto::PROTOCOL_VERSION,
            schema: rask_proto::PROTOCOL_SCHEMA,
            rask_version: rask_proto::RASK_VERSION.into(),
            role: Role::Peer,
            name: "t".into(),
            host_id: host_id(),
            pid: 1,
            nonce: [0; 32],
            registry: None,
            worker: None,
        }
    }

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
    async fn batches_with_buffers_round_trip() {
        let listener = listen("127.0.0.1:0").await.unwrap();
        let addr = listener_addr(&listener).unwrap();
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let (r, mut w) = s.into_split();
            let mut reader = FrameReader::new(r, ConnConfig::default());
            let h = accept(&mut reader, &mut w, &ConnConfig::default())
                .await
                .unwrap();
            assert_eq!(h.name, "t");
            welcome(&mut w, &reader, 9).await.unwrap();
            let mut got = Vec::new();
            while let Some(b) = reader.read_batch::<PeerMsg>().await.unwrap() {
                for m in b.msgs {
                    if let PeerMsg::Data { items, .. } = m {
                        for it in items {
                            got.push(it.value.to_value(&b.bufs, &[]).unwrap());
                        }
                    }
                }
            }
            got
        });
        let (_r, w, id) = connect(&addr, &hello(), ConnConfig::default())
            .await
            .unwrap();
        assert_eq!(id, 9);
        let tx = spawn_writer::<PeerMsg, _>(w);
        let mut expect = Vec::new();
        for i in 0..100u64 {
            let payload = Bytes::from(vec![i as u8; (i * 997) as usize]);
            expect.push(rask_proto::Value::List(vec![
                rask_proto::Value::Int(i as i64),
                rask_proto::Value::Bytes(payload.clone()),
            ]));
            let value = Datum::List(vec![Datum::Int(i as i64), Datum::Buf(0)]);
            tx.send_with(
                PeerMsg::Data {
                    req: i,
                    items: vec![DataItem {
                        task: TaskId(i),
                        value,
                    }],
                    missing: vec![],
                },
                vec![payload],
            )
            .unwrap();
        }
        drop(tx);
        assert_eq!(server.await.unwrap(), expect);
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

    /// Serves one handshake with `server` as the secret; returns the client's outcome.
    async fn handshake(
        server: Option<Secret>,
        client: Option<Secret>,
    ) -> Result<u32, TransportError> {
        let listener = listen("127.0.0.1:0").await.unwrap();
        let addr = listener_addr(&listener).unwrap();
        let cfg = ConnConfig {
            auth: server,
            ..ConnConfig::default()
        };
        let srv = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let (r, mut w) = s.into_split();
            let mut reader = FrameReader::new(r, cfg.clone());
            if accept(&mut reader, &mut w, &cfg).await.is_ok() {
                welcome(&mut w, &reader, 7).await.unwrap();
            }
        });
        let out = connect(
            &addr,
            &hello(),
            ConnConfig {
                auth: client,
                ..ConnConfig::default()
            },
        )
        .await
        .map(|(_, _, id)| id);
        let _ = srv.await;
        out
    }

    #[tokio::test]
    async fn shared_secret_is_proven_both_ways() {
        let a = || Some(Secret::new(b"correct horse".to_vec()));
        let b = || Some(Secret::new(b"battery staple".to_vec()));
        assert_eq!(handshake(a(), a()).await.unwrap(), 7);
        assert_eq!(handshake(None, None).await.unwrap(), 7);
        assert!(matches!(
            handshake(a(), None).await,
            Err(TransportError::AuthRequired)
        ));
        assert!(matches!(
            handshake(a(), b()).await,
            Err(TransportError::AuthFailed(_))
        ));
        // A client with a secret refuses a server that does not authenticate.
        assert!(matches!(
            handshake(None, a()).await,
            Err(TransportError::AuthFailed(_))
        ));
        assert_eq!(format!("{:?}", a().unwrap()), "Secret(<hidden>)");
    }

    #[test]
    fn addresses() {
        assert_eq!(
            parse_addr("tcp://127.0.0.1:8786").unwrap(),
            "127.0.0.1:8786"
        );
        assert_eq!(parse_addr("127.0.0.1:1").unwrap(), "127.0.0.1:1");
        assert!(parse_addr("tcp://").is_err());
    }
}
