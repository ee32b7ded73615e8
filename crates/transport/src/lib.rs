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
//! - [`frame_io`]: reading and writing frames, the batching writer.
//! - [`handshake`]: hellos, the shared-secret proof, admission of unauthenticated peers,
//!   refusals.
//! - [`tcp`] and [`unix`]: connecting and listening.
//! - [`mode`]: which transport serves which peer, host identity.
//! - [`data`]: the peer-data protocol (fetching values from the worker holding them,
//!   serving them), for every requester and holder.
//! - [`shm`]: shared-memory arenas lent across processes; [`inproc`]: peers in this
//!   process.

pub mod config;
pub mod data;
pub mod frame_io;
pub mod handshake;
pub mod inproc;
pub mod mode;
pub mod shm;
pub mod tcp;
pub mod unix;

pub use config::*;
pub use frame_io::*;
pub use handshake::*;
pub use mode::*;
pub use tcp::*;
pub use unix::*;

use std::time::Duration;

use rask_proto::ProtoError;

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
