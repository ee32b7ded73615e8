//! Frames on a byte stream: the reader (limits before allocation, handshake-sized frames
//! until the peer is welcomed, bodies grown as their bytes arrive) and the writing of one
//! frame. The task that batches queued messages into frames is `writer`'s.

use std::io::IoSlice;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rask_proto::frame::{self, PREFIX_LEN};
use rask_proto::msg::{Hello, WireMessage};
use rkyv::util::AlignedVec;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

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
    use rask_proto::msg::PeerMsg;
    use rask_proto::ProtoError;

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
