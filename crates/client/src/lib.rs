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
//! A `map` of independent tasks is the exception: it goes in submissions of up to
//! [`MAP_CHUNK`] tasks, each sent once built, so its first tasks run while the rest are
//! built.
//!
//! This crate must not contain scheduler or worker code: in-process clusters live in the
//! `rask` facade crate.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod client;
mod datasets;
mod future;
mod gather;
mod graph;
mod keys;
mod manage;
mod map;
mod observe;
mod options;
mod release;
mod runtime;
mod state;
mod typed;
mod upload;

pub use client::{Client, ClientOptions, ProgramSource, MAP_CHUNK};
pub use future::{FromValue, Future};
pub use graph::{Arg, Graph};
pub use rask_proto::msg::{Resource, WorkerInfoMsg};
pub use rask_proto::observe::{TaskPrefixMsg, TaskStream, TaskStreamEntryMsg, TransitionMsg};
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
        /// The op of the failed task.
        op: String,
        /// The op's error, or why the task could not run.
        message: String,
    },
    /// The scheduler refused the graph (an op no worker has, a missing dependency, a
    /// cycle), or it could not be encoded; carries why.
    #[error("graph refused: {0}")]
    Rejected(String),
    /// The graph names an op that this client's registry lacks (checked before
    /// submitting, when the client was given a registry).
    #[error("unknown op {op:?}: not registered in this client (known: {known})")]
    UnknownOp {
        /// The op named.
        op: String,
        /// The ops the client knows, for the message.
        known: String,
    },
    /// Connecting or the handshake with the scheduler failed.
    #[error("cannot connect to {addr}: {message}")]
    Connect {
        /// The scheduler's address.
        addr: String,
        /// The transport's error.
        message: String,
    },
    /// The connection to the scheduler closed; carries the scheduler's reason or the
    /// transport's error.
    #[error("lost the scheduler: {0}")]
    Disconnected(String),
    /// The key is computed but its value could not be fetched (no worker holds it, or
    /// fetching failed on every try).
    #[error("could not fetch {key:?}: {message}")]
    Fetch {
        /// The key.
        key: String,
        /// Why the last try failed.
        message: String,
    },
    /// A result of another type than asked for ([`FromValue`]).
    #[error("expected {expected}, got {got}")]
    Type {
        /// The type asked for.
        expected: &'static str,
        /// The result's type ([`Value::type_name`](rask_proto::Value::type_name)).
        got: &'static str,
    },
    /// A task's value is not of the type its future promised (a typed op's result read
    /// through a future of another type, or a dynamic op's value that does not decode).
    #[error("the value of {key:?} is not a {ty}: {message}")]
    Decode {
        /// The key whose value it is.
        key: String,
        /// The type the future promised.
        ty: &'static str,
        /// What did not fit.
        message: String,
    },
    /// A typed argument could not be encoded.
    #[error("argument of op {op:?} cannot be encoded: {message}")]
    Encode {
        /// The op the argument was for.
        op: String,
        /// Why it cannot be encoded.
        message: String,
    },
    /// The client's own runtime thread could not be started or has stopped.
    #[error("the client runtime: {0}")]
    Runtime(String),
    /// Anything else (a released key waited on, a bad setting in the environment, an
    /// unexpected reply); the text says what.
    #[error("{0}")]
    Other(String),
}
