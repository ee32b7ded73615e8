//! Rask's wire protocol: dense ids, typed values, the messages exchanged by clients,
//! the scheduler and workers, the frame codec and the handshake.
//!
//! This crate is pure: no I/O, no async runtime, no clock. Everything that arrives from
//! the network is untrusted input; decoding validates it (rkyv's checked access) and
//! returns a [`ProtoError`], never panics.
//!
//! Changing `msg/`, `observe.rs`, `value.rs` or `flat.rs` (even a comment) changes
//! [`PROTOCOL_SCHEMA`], so builds from before and after such a change refuse each other.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod arg;
pub mod chunk;
mod device;
mod dtype;
mod error;
pub mod flat;
pub mod frame;
mod ids;
mod link;
pub mod map_keys;
// Every message item here is documented; the resolver enums rkyv derives beside them
// (`ToSchedulerResolver`, …) are public and their variants' fields carry no docs.
#[allow(missing_docs)]
pub mod msg;
#[allow(missing_docs)]
pub mod observe;
pub mod packed;
mod payload;
mod shared;
pub mod size;
pub mod typed;
pub mod units;
mod value;

pub use arg::Arg;
pub use device::{DeviceKind, DeviceLoc};
pub use dtype::DType;
pub use error::ProtoError;
pub use ids::{ClientId, IdBuildHasher, IdHasher, IdMap, IdSet, StimulusId, TaskId, WorkerId};
pub use link::LinkClass;
pub use payload::{AsPayload, DeviceBytes, DeviceData, IpcBuffer, IpcExport, Payload};
pub use shared::SharedStr;
pub use value::{Datum, Value, MAX_DEPTH};

/// The wire protocol version. A peer with another version is refused in the handshake.
pub const PROTOCOL_VERSION: u16 = 1;

/// This build's Rask version, compared in the handshake.
pub const RASK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// A hash of the sources that define the wire layout. Two builds with the same version
/// but different message definitions (a development build, a patched fork) refuse each
/// other in the handshake instead of failing later on undecodable frames.
pub const PROTOCOL_SCHEMA: u64 = {
    let a = fnv1a(include_bytes!("msg/mod.rs"))
        ^ fnv1a(include_bytes!("msg/hello.rs")).rotate_left(5)
        ^ fnv1a(include_bytes!("msg/to_scheduler.rs")).rotate_left(7)
        ^ fnv1a(include_bytes!("msg/to_worker.rs")).rotate_left(11)
        ^ fnv1a(include_bytes!("msg/to_client.rs")).rotate_left(13)
        ^ fnv1a(include_bytes!("msg/peer.rs")).rotate_left(17);
    let b = fnv1a(include_bytes!("value.rs"));
    let c = fnv1a(include_bytes!("flat.rs"))
        ^ fnv1a(include_bytes!("packed.rs")).rotate_left(9)
        ^ fnv1a(include_bytes!("packed/wire.rs")).rotate_left(19);
    let d = fnv1a(include_bytes!("observe.rs"));
    let e = fnv1a(include_bytes!("shared.rs"));
    a ^ b.rotate_left(1) ^ c.rotate_left(2) ^ d.rotate_left(3) ^ e.rotate_left(4)
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

#[cfg(test)]
mod tests {
    use super::fnv1a;

    /// The published FNV-1a 64-bit test vectors (from the FNV reference test suite), and
    /// a few longer inputs checked with an independent implementation.
    #[test]
    fn fnv1a_matches_the_published_vectors() {
        let vectors: &[(&[u8], u64)] = &[
            (b"", 0xcbf2_9ce4_8422_2325),
            (b"a", 0xaf63_dc4c_8601_ec8c),
            (b"b", 0xaf63_df4c_8601_f1a5),
            (b"c", 0xaf63_de4c_8601_eff2),
            (b"foobar", 0x8594_4171_f739_67e8),
            (b"chongo was here!\n", 0x4681_0940_eff5_f915),
            (&[0], 0xaf63_bd4c_8601_b7df),
            (&[0xff; 4], 0x994f_7665_3e2a_3951),
        ];
        for &(input, want) in vectors {
            assert_eq!(
                fnv1a(input),
                want,
                "fnv1a({:?})",
                String::from_utf8_lossy(input)
            );
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(fnv1a(&all), 0x4242_dc52_49c3_3625);
        assert_eq!(fnv1a(&[7; 1000]), 0xd55b_06ce_89fd_a1ed);
    }

    /// Usable in constants (the wire schema's hash is one), with the same value.
    #[test]
    fn fnv1a_in_a_constant_is_the_same_hash() {
        const FOOBAR: u64 = fnv1a(b"foobar");
        assert_eq!(FOOBAR, 0x8594_4171_f739_67e8);
    }
}
