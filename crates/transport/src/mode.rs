//! Which transport serves which peer (like `UCX_TLS`), and the host identity that decides
//! it.

/// Which transports a worker may use for data, like `UCX_TLS`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TransportMode {
    /// By peer: same process → inproc, same host → shm, otherwise tcp.
    #[default]
    Auto,
    /// tcp to every peer.
    Tcp,
    /// shm to every same-host peer (in-process ones included), tcp to remote ones.
    Shm,
}

impl std::str::FromStr for TransportMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(TransportMode::Auto),
            "tcp" => Ok(TransportMode::Tcp),
            "shm" => Ok(TransportMode::Shm),
            other => Err(format!(
                "unknown transport {other:?}: expected auto, tcp or shm"
            )),
        }
    }
}

impl std::fmt::Display for TransportMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TransportMode::Auto => "auto",
            TransportMode::Tcp => "tcp",
            TransportMode::Shm => "shm",
        })
    }
}

impl TransportMode {
    /// The mode named by `RASK_TRANSPORT`, if set.
    pub fn from_env() -> Result<Option<TransportMode>, String> {
        match std::env::var("RASK_TRANSPORT") {
            Ok(v) if !v.is_empty() => v.parse().map(Some),
            _ => Ok(None),
        }
    }

    /// The transport to use to a peer, from the identities exchanged in the handshake
    /// (never from IP addresses).
    pub fn select(self, me: (&str, u32), peer: (&str, u32), peer_has_shm: bool) -> Link {
        let same_host = me.0 == peer.0 && !me.0.is_empty();
        match self {
            TransportMode::Tcp => Link::Tcp,
            TransportMode::Auto if same_host && me.1 == peer.1 => Link::Inproc,
            _ if same_host && peer_has_shm => Link::Shm,
            _ => Link::Tcp,
        }
    }
}

/// The transport chosen for one peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// The same process: values are shared, never copied.
    Inproc,
    /// The same host: values are lent from shared-memory arenas (and device memory by
    /// IPC).
    Shm,
    /// Another host (or `--transport tcp`): the bytes travel over the socket.
    Tcp,
}

impl std::fmt::Display for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Link::Inproc => "inproc",
            Link::Shm => "shm",
            Link::Tcp => "tcp",
        })
    }
}

/// An identity of this host, the same for every process on it: used to tell same-host
/// peers from remote ones (never the IP address). It names the kernel (boot id) and the
/// network namespace: processes in other namespaces cannot reach each other's abstract
/// unix sockets, so for transport purposes they are other hosts.
pub fn host_id() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let netns = std::fs::read_link("/proc/self/ns/net")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{}-{}-{}", name.trim(), boot.trim(), netns)
}
