//! Connection settings: frame limits, timeouts, the shared secret, TLS, the handshake
//! gate.

use std::time::Duration;

use rask_proto::frame::FrameLimits;

use crate::{HandshakeGate, Secret, Tls};

/// How long a peer may take to finish a frame it started.
pub const DEFAULT_FRAME_TIMEOUT: Duration = Duration::from_secs(60);

/// The default [`ConnConfig::peer_timeout`].
pub const DEFAULT_PEER_TIMEOUT: Duration = Duration::from_secs(30);

/// How long connecting and the whole handshake may take (a listener that never answers,
/// a peer that never says hello).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a peer may send before the handshake is done: a hello (its registry's op names
/// included) or an authentication proof, a few KiB; no payload buffers. Nothing larger is
/// read, and nothing is allocated for it, until the peer has been welcomed.
pub const HANDSHAKE_LIMITS: FrameLimits = FrameLimits {
    max_header: 64 << 10,
    max_buffers: 0,
    max_payload: 0,
};

/// Connection settings.
#[derive(Clone, Debug)]
pub struct ConnConfig {
    /// Limits on frames once the peer has been welcomed (before, [`HANDSHAKE_LIMITS`]).
    pub limits: FrameLimits,
    /// Once a frame has started, the rest must arrive within this.
    pub frame_timeout: Duration,
    /// Connecting, and the whole handshake on either side, must finish within this.
    pub handshake_timeout: Duration,
    /// How long a peer may leave data sent to it unacknowledged (or fail to answer
    /// keepalive probes when idle) before its connection is presumed dead: a host that
    /// crashed or is cut off sends no close, and without this its connection would look
    /// alive for many minutes.
    pub peer_timeout: Duration,
    /// The cluster's shared secret. With one, every connection must prove it (both ways);
    /// without one, peers that require it are refused.
    pub auth: Option<Secret>,
    /// TLS for every tcp connection, both ways (see [`crate::tls`]); `None`: plaintext.
    /// Connections of either kind refuse peers of the other.
    pub tls: Option<Tls>,
    /// Bounds the connections of this process's listeners that are still in their
    /// handshake (shared by clones).
    pub gate: HandshakeGate,
}

impl Default for ConnConfig {
    fn default() -> Self {
        ConnConfig {
            limits: FrameLimits::default(),
            frame_timeout: DEFAULT_FRAME_TIMEOUT,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            peer_timeout: DEFAULT_PEER_TIMEOUT,
            auth: None,
            tls: None,
            gate: HandshakeGate::default(),
        }
    }
}
