//! Unix sockets on this host: abstract names, listening, and connecting with the client
//! side of the handshake (the reader also receives file descriptors).
//!
//! An abstract socket has no file permissions: any process in the network namespace can
//! connect to one, whichever user runs it, and could otherwise map the memory a worker
//! lends. Both sides therefore check the other's user id (SO_PEERCRED) and refuse
//! another user's ([`same_user`]): shared memory stays among one user's processes, and
//! a peer of another user is reached over tcp instead.

use crate::handshake::handshake;
use crate::{shm, ConnConfig, FrameReader, TransportError};
use rask_proto::msg::Hello;

/// Opens a same-host connection to `unix:@name` (an abstract unix socket) and does the
/// client side of the handshake; the reader also receives file descriptors.
pub async fn connect_unix(
    addr: &str,
    hello: &Hello,
    cfg: ConnConfig,
) -> Result<
    (
        FrameReader<shm::FdReader>,
        tokio::net::unix::OwnedWriteHalf,
        u32,
    ),
    TransportError,
> {
    let name = addr
        .strip_prefix("unix:@")
        .ok_or_else(|| TransportError::BadAddress(addr.into()))?
        .to_string();
    let limit = cfg.handshake_timeout;
    tokio::time::timeout(limit, async {
        let stream = tokio::task::spawn_blocking(move || {
            use std::os::linux::net::SocketAddrExt;
            let a = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            let s = std::os::unix::net::UnixStream::connect_addr(&a)?;
            s.set_nonblocking(true)?;
            Ok::<_, std::io::Error>(s)
        })
        .await
        .map_err(|e| TransportError::Io(std::io::Error::other(e)))??;
        let stream = tokio::net::UnixStream::from_std(stream)?;
        // The listener's owner: another user's socket could be anyone's.
        same_user(&stream)?;
        let (r, w) = stream.into_split();
        handshake(FrameReader::new(shm::FdReader::new(r), cfg), w, hello).await
    })
    .await
    .map_err(|_| TransportError::ConnectTimeout(limit))?
}

/// Binds an abstract unix socket with a fresh name; returns it and its `unix:@name`.
pub fn listen_unix() -> Result<(tokio::net::UnixListener, String), TransportError> {
    use std::os::linux::net::SocketAddrExt;
    let mut r = [0u8; 8];
    getrandom::fill(&mut r)
        .map_err(|e| TransportError::Io(std::io::Error::other(e.to_string())))?;
    let name = format!("rask-{}-{:016x}", std::process::id(), u64::from_le_bytes(r));
    let a = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    let l = std::os::unix::net::UnixListener::bind_addr(&a)?;
    l.set_nonblocking(true)?;
    Ok((
        tokio::net::UnixListener::from_std(l)?,
        format!("unix:@{name}"),
    ))
}

/// Checks that the process at the other end of `stream` (as the kernel recorded it when
/// the connection was made) runs as this process's user.
pub fn same_user(stream: &tokio::net::UnixStream) -> Result<(), TransportError> {
    let uid = stream.peer_cred()?.uid();
    let ours = rustix::process::getuid().as_raw();
    if uid == ours {
        Ok(())
    } else {
        Err(TransportError::OtherUser { uid, ours })
    }
}
