//! The protocol's error type.

/// Everything that can be wrong with bytes received from a peer.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// The frame does not start with the Rask magic: not a Rask peer, or a corrupt stream.
    #[error("bad magic {0:02x?}: not a Rask frame")]
    BadMagic([u8; 4]),
    /// The peer speaks another protocol version.
    #[error("protocol version mismatch: peer speaks {peer}, we speak {ours}")]
    Version {
        /// The version in the peer's frame prefix.
        peer: u16,
        /// This build's [`PROTOCOL_VERSION`](crate::PROTOCOL_VERSION).
        ours: u16,
    },
    /// A limit was exceeded; checked before anything is allocated.
    #[error("frame too large: {what} is {got} bytes/items, limit {limit}")]
    TooLarge {
        /// Which limit: `header`, `buffer count` or `payload`.
        what: &'static str,
        /// What the peer announced, in bytes or items.
        got: u64,
        /// The limit it exceeds.
        limit: u64,
    },
    /// The rkyv header failed validation.
    #[error("malformed header: {0}")]
    Malformed(String),
    /// A value refers to a buffer the frame does not carry.
    #[error("value refers to buffer {index} but the frame has {count}")]
    MissingBuffer {
        /// The buffer index the value names.
        index: u32,
        /// How many buffers the frame carries.
        count: usize,
    },
    /// A value refers to a dependency the task does not have.
    #[error("value refers to dependency {index} but the task has {count}")]
    MissingDependency {
        /// The dependency index the value names.
        index: u32,
        /// How many dependencies the task has.
        count: usize,
    },
    /// A value nests deeper than allowed.
    #[error("value nests deeper than {0} levels")]
    TooDeep(usize),
    /// Bytes on a device could not be brought to the host.
    #[error("bytes on {device} cannot be read: {message}")]
    Device {
        /// Where the bytes are ([`DeviceBytes::label`](crate::DeviceBytes::label)).
        device: String,
        /// The device's reason.
        message: String,
    },
}
