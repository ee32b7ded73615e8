//! The tcp halves that carry either plaintext or TLS, and the server side of a tcp
//! connection's start ([`accept_tcp`]): TLS accepted, or plaintext refused with a reason.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use super::{explain, REQUIRES_TLS, TLS_HANDSHAKE_RECORD};
use crate::{ConnConfig, TransportError};

/// The read half of a tcp connection, in plaintext or TLS.
pub enum TcpReadHalf {
    /// Plaintext: the socket itself.
    Plain(OwnedReadHalf),
    /// TLS: records decrypted by rustls.
    Tls(tokio::io::ReadHalf<tokio_rustls::TlsStream<TcpStream>>),
}

/// The write half of a tcp connection, in plaintext or TLS.
pub enum TcpWriteHalf {
    /// Plaintext: the socket itself (vectored writes go straight to `writev`).
    Plain(OwnedWriteHalf),
    /// TLS: encrypted into records by rustls.
    Tls(tokio::io::WriteHalf<tokio_rustls::TlsStream<TcpStream>>),
}

impl TcpReadHalf {
    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, TcpReadHalf::Tls(_))
    }
}

impl AsyncRead for TcpReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            TcpReadHalf::Plain(r) => Pin::new(r).poll_read(cx, buf),
            // A peer that closes without TLS's close_notify (a process that exits) ends
            // the stream as a plain close would: frames carry their lengths, so such an
            // end can only cut a frame short, which the frame reader reports as an
            // error, never as a shorter message.
            TcpReadHalf::Tls(r) => match Pin::new(r).poll_read(cx, buf) {
                Poll::Ready(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    Poll::Ready(Ok(()))
                }
                other => other,
            },
        }
    }
}

impl AsyncWrite for TcpWriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            TcpWriteHalf::Plain(w) => Pin::new(w).poll_write(cx, buf),
            TcpWriteHalf::Tls(w) => Pin::new(w).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            TcpWriteHalf::Plain(w) => Pin::new(w).poll_write_vectored(cx, bufs),
            TcpWriteHalf::Tls(w) => Pin::new(w).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            TcpWriteHalf::Plain(w) => w.is_write_vectored(),
            TcpWriteHalf::Tls(w) => w.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            TcpWriteHalf::Plain(w) => Pin::new(w).poll_flush(cx),
            TcpWriteHalf::Tls(w) => Pin::new(w).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            TcpWriteHalf::Plain(w) => Pin::new(w).poll_shutdown(cx),
            TcpWriteHalf::Tls(w) => Pin::new(w).poll_shutdown(cx),
        }
    }
}

/// Whether the peer on `stream` opens with a TLS handshake record: its first byte,
/// peeked (left to be read); [`TransportError::Closed`] if it closed before sending.
pub(crate) async fn opens_with_tls(stream: &TcpStream) -> Result<bool, TransportError> {
    let mut first = [0u8; 1];
    if stream.peek(&mut first).await? == 0 {
        return Err(TransportError::Closed);
    }
    Ok(first[0] == TLS_HANDSHAKE_RECORD)
}

/// How long a refused plaintext peer is read from (and its bytes discarded) before its
/// connection is closed: so the refusal is not lost to the reset that closing a socket
/// with unread bytes sends.
const REFUSAL_DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

/// The server side of a tcp connection's start: without TLS settings, the socket's halves
/// at once; with them, the TLS handshake (bounded like the rest of a handshake: admitted
/// by `cfg.gate`, a turn among those in progress once the peer sends, within
/// `cfg.handshake_timeout`). A peer whose first byte is not a TLS handshake record is
/// told in plaintext that this server requires TLS ([`REQUIRES_TLS`]) and refused with
/// [`TransportError::TlsRequired`]; the caller logs it with the peer's address.
pub async fn accept_tcp(
    stream: TcpStream,
    cfg: &ConnConfig,
) -> Result<(TcpReadHalf, TcpWriteHalf), TransportError> {
    let _ = stream.set_nodelay(true);
    let Some(tls) = &cfg.tls else {
        let (r, w) = stream.into_split();
        return Ok((TcpReadHalf::Plain(r), TcpWriteHalf::Plain(w)));
    };
    let acceptor = tls.acceptor.clone().ok_or_else(|| {
        TransportError::Tls(
            "this process has no certificate to serve TLS with (--tls-cert, --tls-key)".into(),
        )
    })?;
    let Some(_admitted) = cfg.gate.admit() else {
        return Err(TransportError::Busy(cfg.gate.admitted()));
    };
    let mut stream = stream;
    tokio::time::timeout(cfg.handshake_timeout, async {
        if !opens_with_tls(&stream).await? {
            crate::refuse(&mut stream, REQUIRES_TLS).await?;
            crate::drain(&mut stream, REFUSAL_DRAIN).await;
            return Err(TransportError::TlsRequired);
        }
        let _turn = cfg.gate.turns.acquire().await;
        let s = acceptor
            .accept(stream)
            .await
            .map_err(|e| explain(e.into()))?;
        let (r, w) = tokio::io::split(tokio_rustls::TlsStream::from(s));
        Ok((TcpReadHalf::Tls(r), TcpWriteHalf::Tls(w)))
    })
    .await
    .map_err(|_| TransportError::Timeout("in the TLS handshake"))?
}
