//! The client: connects to a scheduler, submits tasks and graphs, and gathers results
//! directly from the workers that hold them (never through the scheduler).
//!
//! A [`Client`] owns a small runtime thread for its connections, so it works the same from
//! plain threads, from inside any async runtime, and from async code: every blocking
//! method ([`Future::result`], [`Client::gather`], [`Client::scheduler_info`], …) has an
//! `*_async` twin, and a [`Future`] can be awaited. Blocking methods called on a thread
//! that runs an async runtime block that thread (on a multi-threaded tokio runtime, through
//! `block_in_place`) but never panic. When the last handle to a key's future is dropped,
//! the client tells the scheduler, which frees the data.
//!
//! What the client keeps per held key is small (its name, a few words of state, the value
//! itself when it came inline): a million futures cost well under 300 bytes each.
//! Submissions too large for one frame go in parts that the scheduler takes as one graph.
//!
//! This crate must not contain scheduler or worker code: in-process clusters live in the
//! `rask` facade crate.

#![forbid(unsafe_code)]

mod client;
mod future;
mod gather;
mod graph;
mod runtime;
mod state;
mod typed;
mod upload;

pub use client::{Client, ClientOptions, ProgramSource};
pub use future::{FromValue, Future};
pub use graph::{Arg, Graph};
pub use rask_proto::msg::{Resource, WorkerInfoMsg};
pub use typed::{IntoArg, IntoArgs, Submit};

/// Errors seen by client users.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClientError {
    /// The task (or a task it depends on) failed.
    #[error("task {key:?} failed: op {op:?} in task {cause:?}: {message}")]
    Task {
        /// The key waited on.
        key: String,
        /// The task that failed (the key itself, or one upstream).
        cause: String,
        op: String,
        message: String,
    },
    #[error("graph refused: {0}")]
    Rejected(String),
    #[error("unknown op {op:?}: not registered in this client (known: {known})")]
    UnknownOp { op: String, known: String },
    #[error("cannot connect to {addr}: {message}")]
    Connect { addr: String, message: String },
    #[error("lost the scheduler: {0}")]
    Disconnected(String),
    #[error("could not fetch {key:?}: {message}")]
    Fetch { key: String, message: String },
    #[error("expected {expected}, got {got}")]
    Type {
        expected: &'static str,
        got: &'static str,
    },
    /// A task's value is not of the type its future promised (a typed op's result read
    /// through a future of another type, or a dynamic op's value that does not decode).
    #[error("the value of {key:?} is not a {ty}: {message}")]
    Decode {
        key: String,
        ty: &'static str,
        message: String,
    },
    /// A typed argument could not be encoded.
    #[error("argument of op {op:?} cannot be encoded: {message}")]
    Encode { op: String, message: String },
    /// The client's own runtime thread could not be started or has stopped.
    #[error("the client runtime: {0}")]
    Runtime(String),
    #[error("{0}")]
    Other(String),
}
