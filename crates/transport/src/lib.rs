//! Rask's transport: framed connections between processes, the handshake that admits a
//! peer, and the data links workers and clients fetch values over.
//!
//! A connection is a [`FrameReader`] (reads frames, checks limits before allocating,
//! validates headers) and a [`Sender`] (a writer task that drains everything queued since
//! its last write into one frame and writes prefix, header and payload buffers with
//! vectored writes — payloads are never copied into a send buffer). The first frame on
//! every connection is a [`Hello`](rask_proto::msg::Hello), answered by a
//! [`HelloReply`](rask_proto::msg::HelloReply) or a refusal.
//!
//! This crate moves bytes and speaks the handshake and the peer-data protocol; it does
//! not interpret scheduling messages.
//!
//! # Layout
//! - [`config`]: connection settings and limits.
//! - [`frame_io`]: reading and writing frames; [`writer`]: the batching writer, which
//!   encodes queued messages where they lie ([`pairs`]).
//! - [`handshake`]: hellos, the shared-secret proof, admission of unauthenticated peers,
//!   refusals.
//! - [`tcp`] and [`unix`]: connecting and listening; [`addr`]: where to listen and what
//!   address to announce across hosts; [`tls`]: TLS on tcp connections.
//! - [`mode`]: which transport serves which peer, host identity.
//! - [`data`]: the peer-data protocol (fetching values from the worker holding them,
//!   serving them), for every requester and holder.
//! - [`shm`]: shared-memory arenas lent across processes; [`inproc`]: peers in this
//!   process.

#![warn(missing_docs)]

pub mod addr;
pub mod config;
pub mod data;
pub mod frame_io;
pub mod handshake;
pub mod inproc;
pub mod mode;
pub mod pairs;
pub mod shm;
pub mod tcp;
pub mod tls;
pub mod unix;
pub mod writer;

pub use config::*;
pub use frame_io::*;
pub use handshake::*;
pub use mode::*;
pub use tcp::*;
pub use tls::{accept_tcp, TcpReadHalf, TcpWriteHalf, Tls, TlsFiles};
pub use unix::*;
pub use writer::*;

use std::time::Duration;

use rask_proto::ProtoError;

/// Errors of connections.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The socket failed (connection reset, address in use, …).
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The peer's bytes are not a valid frame or message (see [`ProtoError`]).
    #[error(transparent)]
    Proto(#[from] ProtoError),
    /// The peer sent a refusal frame; carries its reason.
    #[error("refused by peer: {0}")]
    Refused(String),
    /// The peer closed the connection (or, in process, is no longer there).
    #[error("connection closed")]
    Closed,
    /// A read did not complete in time; says what was awaited.
    #[error("timed out {0}")]
    Timeout(&'static str),
    /// An address that is not `tcp://host:port`.
    #[error("bad address {0:?}: expected tcp://host:port")]
    BadAddress(String),
    /// An address that cannot be used as given (an interface without an address,
    /// conflicting options, a name that does not resolve); says why.
    #[error("{0}")]
    Address(String),
    /// The server answered the hello with something that is not a valid next step.
    #[error("unexpected handshake reply")]
    BadHandshake,
    /// The server wants a shared secret and this process has none.
    #[error("the peer requires authentication: give this process the cluster's secret (--auth-file, RASK_AUTH_FILE or RASK_AUTH_SECRET)")]
    AuthRequired,
    /// A proof of the shared secret was wrong or missing, on either side.
    #[error("authentication failed: {0}")]
    AuthFailed(String),
    /// A shared-memory reply or segment could not be used (a descriptor missing, a
    /// buffer out of its segment, a message out of place).
    #[error("shared memory: {0}")]
    Shm(String),
    /// The secret file could not be read, or is empty.
    #[error("cannot read the secret from {path}: {message}")]
    Secret {
        /// The file named by `--auth-file` or `RASK_AUTH_FILE`.
        path: String,
        /// Why it could not be used.
        message: String,
    },
    /// Connecting and the handshake together took longer than the connect timeout.
    #[error("no connection and handshake within {0:?} (the connect timeout)")]
    ConnectTimeout(Duration),
    /// TLS could not be set up or failed: a certificate refused, a file unreadable, an
    /// alert from the peer; says what went wrong and what to give.
    #[error("TLS: {0}")]
    Tls(String),
    /// This side uses TLS and the peer answered in something else (a plaintext server).
    #[error("TLS: {0}; this side uses TLS and never falls back to plaintext")]
    NotTls(String),
    /// This side serves TLS and the peer spoke plaintext; it was told so, in plaintext.
    #[error("the peer spoke plaintext and this server requires TLS (the peer was told)")]
    TlsRequired,
    /// The peer opened with TLS and this side does not use TLS; it was told so.
    #[error("the peer opened with TLS and this server does not use TLS (the peer was told): give the server --tls-cert and --tls-key, or the peer no TLS settings")]
    UnexpectedTls,
    /// A same-host peer runs as another user: shared memory is shared only between the
    /// processes of one user (abstract unix sockets have no file permissions).
    #[error("the same-host peer runs as another user (uid {uid}, this process's is {ours}): shared memory is shared only between one user's processes")]
    OtherUser {
        /// The peer's user id, from the socket's credentials.
        uid: u32,
        /// This process's user id.
        ours: u32,
    },
    /// A listener already has its maximum of connections waiting for a handshake turn;
    /// carries that count.
    #[error("too many connections in their handshake ({0}): closed at once")]
    Busy(usize),
}
