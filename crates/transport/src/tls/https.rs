//! TLS for the cluster's HTTP servers (the scheduler's dashboard, a worker's `/metrics`):
//! connections accepted on a tcp listener and handed on once their TLS handshake is done.
//! Each handshake runs on a task of its own, within a deadline, so a peer that connects
//! and sends nothing holds up no one else; a peer that speaks plain HTTP is answered, in
//! plain HTTP, that this server wants `https://`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};

use super::{explain, Tls};
use crate::TransportError;

/// A TLS connection of an HTTP server.
pub type HttpsStream = tokio_rustls::server::TlsStream<TcpStream>;

/// Handshakes in progress at most; further connections wait to be accepted.
const HANDSHAKES: usize = 64;

/// A handshake (or a plain-HTTP peer's refusal) must end within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a peer that speaks plain HTTP to an HTTPS server is told.
pub const HTTPS_REQUIRED: &str = "this server is served over TLS: use https://";

/// Connections of an HTTPS server, each handed on with its handshake done (see the
/// module's documentation). Stops accepting when dropped.
pub struct HttpsIncoming {
    ready: mpsc::Receiver<(HttpsStream, SocketAddr)>,
    local: SocketAddr,
    accepting: tokio::task::JoinHandle<()>,
}

impl HttpsIncoming {
    /// Serves TLS on `listener` with `tls`'s certificate (and its client certificate
    /// policy: with `--tls-require-client-cert`, a peer must present one the CA signed).
    /// Must be called within a tokio runtime.
    pub fn new(listener: TcpListener, tls: &Tls) -> Result<HttpsIncoming, TransportError> {
        let acceptor = tls.acceptor.clone().ok_or_else(|| {
            TransportError::Tls(
                "this process has no certificate to serve HTTPS with (--tls-cert, --tls-key)"
                    .into(),
            )
        })?;
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(HANDSHAKES);
        let slots = Arc::new(Semaphore::new(HANDSHAKES));
        let accepting = tokio::spawn(async move {
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (stream, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors, most likely: give connections in
                        // progress time to end.
                        tracing::warn!("https on {local}: cannot accept: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let _slot = slot;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(acceptor, stream)).await
                    {
                        Ok(Ok(s)) => {
                            let _ = tx.send((s, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!("https on {local}: {peer}: {e}"),
                        Err(_) => {
                            tracing::debug!("https on {local}: {peer}: no TLS handshake in time")
                        }
                    }
                });
            }
        });
        Ok(HttpsIncoming {
            ready,
            local,
            accepting,
        })
    }

    /// The next connection whose handshake is done, and its peer's address.
    pub async fn accept(&mut self) -> (HttpsStream, SocketAddr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accepting task keeps a sender while it runs, and runs until dropped.
            None => std::future::pending().await,
        }
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for HttpsIncoming {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

/// The server side of one connection's TLS handshake; a plain-HTTP peer is answered
/// with a `400` naming `https://`, and refused.
async fn handshake(
    acceptor: tokio_rustls::TlsAcceptor,
    mut stream: TcpStream,
) -> Result<HttpsStream, TransportError> {
    let _ = stream.set_nodelay(true);
    if !super::stream::opens_with_tls(&stream).await? {
        let body = format!("{HTTPS_REQUIRED}\n");
        let answer = format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(answer.as_bytes()).await?;
        let _ = stream.shutdown().await;
        // Read what the peer sent, so that closing sends no reset over the answer.
        crate::drain(&mut stream, Duration::from_secs(1)).await;
        return Err(TransportError::TlsRequired);
    }
    acceptor.accept(stream).await.map_err(|e| explain(e.into()))
}
