//! Rask's wire protocol: dense ids, typed values, the messages exchanged by clients,
//! the scheduler and workers, the frame codec and the handshake.
//!
//! This crate is pure: no I/O, no async runtime, no clock. Everything that arrives from
//! the network is untrusted input; decoding validates it (rkyv's checked access) and
//! returns a [`ProtoError`], never panics.

mod error;
pub mod frame;
mod ids;
pub mod msg;
mod value;

pub use error::ProtoError;
pub use ids::{ClientId, StimulusId, TaskId, WorkerId};
pub use value::{Datum, Value};

/// The wire protocol version. A peer with another version is refused in the handshake.
pub const PROTOCOL_VERSION: u16 = 1;

/// This build's Rask version, compared in the handshake.
pub const RASK_VERSION: &str = env!("CARGO_PKG_VERSION");
