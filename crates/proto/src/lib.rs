//! Rask's wire protocol: dense ids, typed values, the messages exchanged by clients,
//! the scheduler and workers, the frame codec and the handshake.
//!
//! This crate is pure: no I/O, no async runtime, no clock. Everything that arrives from
//! the network is untrusted input; decoding validates it (rkyv's checked access) and
//! returns a [`ProtoError`], never panics.

mod dtype;
mod error;
pub mod flat;
pub mod frame;
mod ids;
pub mod msg;
mod value;

pub use dtype::DType;
pub use error::ProtoError;
pub use ids::{ClientId, StimulusId, TaskId, WorkerId};
pub use value::{AsPayload, Datum, DeviceBytes, DeviceData, IpcBuffer, IpcExport, Payload, Value};

/// The wire protocol version. A peer with another version is refused in the handshake.
pub const PROTOCOL_VERSION: u16 = 1;

/// This build's Rask version, compared in the handshake.
pub const RASK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// A hash of the sources that define the wire layout. Two builds with the same version
/// but different message definitions (a development build, a patched fork) refuse each
/// other in the handshake instead of failing later on undecodable frames.
pub const PROTOCOL_SCHEMA: u64 = {
    let a = fnv1a(include_bytes!("msg.rs"));
    let b = fnv1a(include_bytes!("value.rs"));
    let c = fnv1a(include_bytes!("flat.rs"));
    a ^ b.rotate_left(1) ^ c.rotate_left(2)
};

/// 64-bit FNV-1a: the wire schema's hash, and the project's content hash (checksums,
/// kernel cache keys).
pub const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    h
}
