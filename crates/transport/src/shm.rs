//! Same-host transfers through shared memory.
//!
//! A worker's data buffers live in an [`Arena`]: memfd-backed segments, mapped once and
//! pre-faulted, carved into [`Region`]s. A segment's file descriptor crosses a unix socket
//! once per peer (SCM_RIGHTS, see [`FdReader`] and [`write_frame_fds`]); after that a
//! transfer is a `(segment, offset, length)` triple and the receiver reads the holder's
//! pages in place — no byte is copied.
//!
//! Bytes in a GPU's memory go the same way without touching the host when the receiver
//! asks for them in its device: the holder lends the allocation's IPC handle
//! ([`BufRef::Device`]), the receiver's device opens it, copies the bytes into its own
//! memory and closes it, then the loan is released (as UCX's `cuda_ipc` transport does).
//!
//! Lifetimes are explicit. The holder's [`Exporter`] keeps every lent buffer alive until
//! the receiver's [`Importer`] releases the loan (when the last imported `Bytes` of it is
//! dropped) or the connection ends. Segments are sealed against shrinking, so a mapping
//! can never fault on a truncated file, and they stay valid for a receiver even after
//! the holder dies: the pages live as long as some process maps them.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use rask_proto::frame;
use rask_proto::msg::{BufRef, ShmSegment};
use rask_proto::{DeviceBytes, IpcBuffer, IpcExport, Payload};
use rustix::fs::SealFlags;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use tokio::io::{AsyncRead, Interest, ReadBuf};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use crate::TransportError;

/// Buffers smaller than this travel inline in the frame: copying them costs less than the
/// bookkeeping of a loan.
pub const INLINE_MAX: usize = 64 * 1024;
pub use rask_device::arena::{Arena, ArenaStats, ReadOnlyMap, Region, DEFAULT_SEGMENT};
/// Most descriptors passed with one `sendmsg`.
const FDS_PER_MSG: usize = 16;

/// A batch of buffers made ready for a same-host peer.
#[derive(Debug)]
pub struct Export {
    /// One per input buffer, in order.
    pub refs: Vec<BufRef>,
    /// The buffers sent inline (`BufRef::Inline` indices refer to these).
    pub inline: Vec<Bytes>,
    /// Segments the peer has not seen; their descriptors are `fds`, in order.
    pub segments: Vec<ShmSegment>,
    /// The descriptors of `segments`, sent with the frame by SCM_RIGHTS.
    pub fds: Vec<Arc<OwnedFd>>,
    /// The loan to be released by the peer (0: nothing lent).
    pub loan: u64,
    /// Bytes that had to be copied into the arena (buffers that lived elsewhere).
    pub copied: u64,
}

/// The holder's side of one shared-memory connection: lends buffers, remembers which
/// segments the peer has, keeps lent buffers alive until released.
pub struct Exporter {
    arena: Arena,
    shared: HashSet<u32>,
    loans: HashMap<u64, Vec<Payload>>,
    next_loan: u64,
}

impl Exporter {
    /// Lends from `arena`; buffers living elsewhere are copied into it first.
    pub fn new(arena: Arena) -> Exporter {
        Exporter {
            arena,
            shared: HashSet::new(),
            loans: HashMap::new(),
            next_loan: 1,
        }
    }

    /// Lends `bufs` ([`prepare`] then [`Exporter::export_ready`]). Waits for the devices
    /// holding device payloads: call it off an async runtime's threads.
    pub fn export(&mut self, bufs: Vec<Payload>) -> std::io::Result<Export> {
        self.export_ready(prepare(bufs)?)
    }

    /// Lends buffers made ready by [`prepare`]: bytes left in a device's memory by their
    /// IPC handle; small host buffers inline; the rest by reference into the arena
    /// (copied in first if they live elsewhere). Asks no device anything.
    pub fn export_ready(&mut self, bufs: Vec<Ready>) -> std::io::Result<Export> {
        let mut out = Export {
            refs: Vec::with_capacity(bufs.len()),
            inline: Vec::new(),
            segments: Vec::new(),
            fds: Vec::new(),
            loan: 0,
            copied: 0,
        };
        let mut lent = Vec::new();
        for r in bufs {
            let b = match r {
                Ready::Device { data, export } => {
                    out.refs.push(BufRef::Device {
                        device: data.device().to_string(),
                        handle: export.handle,
                        offset: export.offset,
                        len: data.len() as u64,
                    });
                    lent.push(Payload::Device(data));
                    continue;
                }
                Ready::Host(b) => b,
            };
            if b.len() < INLINE_MAX {
                out.refs.push(BufRef::Inline(out.inline.len() as u32));
                out.inline.push(b);
                continue;
            }
            let (b, (segment, offset)) = match self.arena.locate(&b) {
                Some(loc) => (b, loc),
                None => {
                    let copy = self.arena.copy_in(&b)?;
                    out.copied += b.len() as u64;
                    let loc = self.arena.locate(&copy).expect("copied into the arena");
                    (copy, loc)
                }
            };
            if self.shared.insert(segment) {
                let (fd, len) = self
                    .arena
                    .segment(segment)
                    .expect("segment of a live region");
                out.segments.push(ShmSegment { id: segment, len });
                out.fds.push(fd);
            }
            out.refs.push(BufRef::Shm {
                segment,
                offset,
                len: b.len() as u64,
            });
            lent.push(Payload::Host(b));
        }
        if !lent.is_empty() {
            out.loan = self.next_loan;
            self.next_loan += 1;
            self.loans.insert(out.loan, lent);
        }
        Ok(out)
    }

    /// The peer is done with these loans.
    pub fn release(&mut self, loans: &[u64]) {
        for l in loans {
            self.loans.remove(l);
        }
    }

    /// Of the segments the arena retired, those this peer had (and must unmap).
    pub fn retired(&mut self, segments: &[u32]) -> Vec<u32> {
        segments
            .iter()
            .copied()
            .filter(|s| self.shared.remove(s))
            .collect()
    }

    /// Loans not yet released.
    pub fn outstanding(&self) -> usize {
        self.loans.len()
    }
}

/// A buffer ready to lend: what lending it needs from a device is done.
#[derive(Debug)]
pub enum Ready {
    /// Bytes the host reads (host bytes, or a device's brought to the host).
    Host(Bytes),
    /// Bytes left in a device's memory, lent by the IPC handle of their allocation; kept
    /// (and their memory with them) for as long as the loan lasts.
    Device {
        /// The bytes.
        data: DeviceBytes,
        /// Its handle and offset.
        export: IpcExport,
    },
}

/// Makes buffers ready to lend ([`Exporter::export_ready`]): bytes in a device's memory
/// stay there, lent by IPC handle, when the device has one and they are at least
/// [`INLINE_MAX`] long; smaller ones, and those of a device without handles, are brought
/// to the host (a small copy costs less than opening a handle on the receiving side and
/// the loan's round trip). Waits for the devices (a GPU answers after the kernel it
/// runs): call it off an async runtime's threads.
pub fn prepare(bufs: Vec<Payload>) -> std::io::Result<Vec<Ready>> {
    bufs.into_iter()
        .map(|p| {
            if let Payload::Device(d) = &p {
                if d.len() >= INLINE_MAX {
                    match d.data().ipc_export() {
                        Some(Ok(export)) => {
                            return Ok(Ready::Device {
                                data: d.clone(),
                                export,
                            })
                        }
                        Some(Err(e)) => tracing::debug!(
                            "{}: no IPC handle ({e}); lending through the host",
                            d.device()
                        ),
                        None => {}
                    }
                }
            }
            p.into_host()
                .map(Ready::Host)
                .map_err(|e| std::io::Error::other(e.to_string()))
        })
        .collect()
}

/// Maps a peer's segment read-only, after checking that the file is as long as announced
/// and sealed against shrinking (so reading it can never fault).
fn map_segment(fd: &OwnedFd, len: u64) -> Result<ReadOnlyMap, TransportError> {
    let bad = |m: String| TransportError::Shm(m);
    let st = rustix::fs::fstat(fd).map_err(|e| bad(format!("fstat: {e}")))?;
    if (st.st_size as u64) < len {
        return Err(bad(format!(
            "segment is {} bytes, announced as {len}",
            st.st_size
        )));
    }
    let seals = rustix::fs::fcntl_get_seals(fd).map_err(|e| bad(format!("seals: {e}")))?;
    if !seals.contains(SealFlags::SHRINK) {
        return Err(bad("segment is not sealed against shrinking".into()));
    }
    if len == 0 {
        return Err(bad("empty segment".into()));
    }
    ReadOnlyMap::new(fd, len as usize, true).map_err(|e| bad(format!("mmap: {e}")))
}

/// Sends the release of one loan when its last imported buffer is dropped.
struct Ticket {
    loan: u64,
    release: Arc<dyn Fn(u64) + Send + Sync>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        (self.release)(self.loan);
    }
}

/// An imported buffer: a slice of a peer's segment, valid while held.
struct Imported {
    _map: Arc<ReadOnlyMap>,
    _ticket: Arc<Ticket>,
    ptr: *const u8,
    len: usize,
}

// SAFETY: read-only shared memory kept mapped by `_map`.
unsafe impl Send for Imported {}
// SAFETY: as above.
unsafe impl Sync for Imported {}

impl AsRef<[u8]> for Imported {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: checked to lie inside the mapping when created.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// The receiver's side of one shared-memory connection: maps the peer's segments and
/// turns references into [`Bytes`] that release their loan when dropped.
pub struct Importer {
    maps: HashMap<u32, Arc<ReadOnlyMap>>,
    release: Arc<dyn Fn(u64) + Send + Sync>,
}

impl Importer {
    /// `release(loan)` is called (from any thread) when a loan's buffers are all dropped.
    pub fn new(release: impl Fn(u64) + Send + Sync + 'static) -> Importer {
        Importer {
            maps: HashMap::new(),
            release: Arc::new(release),
        }
    }

    /// Maps newly announced segments, taking their descriptors from `fds` in order.
    pub fn add_segments(
        &mut self,
        segments: &[ShmSegment],
        fds: &mut VecDeque<OwnedFd>,
    ) -> Result<(), TransportError> {
        for s in segments {
            let fd = fds.pop_front().ok_or_else(|| {
                TransportError::Shm(format!("segment {} announced without a descriptor", s.id))
            })?;
            let m = map_segment(&fd, s.len)?;
            self.maps.insert(s.id, Arc::new(m));
        }
        Ok(())
    }

    /// The buffers of one reply. `inline` are the frame's own buffers. Bytes lent from the
    /// peer's device become [`IpcBuffer`]s for the receiver's device to import; they hold
    /// the loan open until dropped.
    pub fn import(
        &mut self,
        refs: &[BufRef],
        inline: &[Bytes],
        loan: u64,
    ) -> Result<Vec<Payload>, TransportError> {
        let ticket = (loan != 0).then(|| {
            Arc::new(Ticket {
                loan,
                release: self.release.clone(),
            })
        });
        let bad = |m: String| TransportError::Shm(m);
        let loaned = |what: &str| {
            ticket
                .clone()
                .ok_or_else(|| bad(format!("{what} buffer outside a loan")))
        };
        refs.iter()
            .map(|r| match *r {
                BufRef::Inline(i) => inline
                    .get(i as usize)
                    .cloned()
                    .map(Payload::Host)
                    .ok_or_else(|| bad(format!("inline buffer {i} missing"))),
                BufRef::Device {
                    ref device,
                    ref handle,
                    offset,
                    len,
                } => {
                    let ticket = loaned("device")?;
                    let device = device
                        .parse()
                        .map_err(|e| bad(format!("device buffer: {e}")))?;
                    Ok(Payload::Device(rask_proto::DeviceBytes::new(IpcBuffer {
                        device,
                        export: IpcExport {
                            handle: handle.clone(),
                            offset,
                        },
                        len,
                        loan: Some(ticket),
                    })))
                }
                BufRef::Shm {
                    segment,
                    offset,
                    len,
                } => {
                    let ticket = loaned("shared")?;
                    let map = self
                        .maps
                        .get(&segment)
                        .ok_or_else(|| bad(format!("unknown segment {segment}")))?;
                    match offset.checked_add(len) {
                        Some(end) if end <= map.len() as u64 => {}
                        _ => {
                            return Err(bad(format!(
                                "range {offset}+{len} outside segment {segment} ({} bytes)",
                                map.len()
                            )))
                        }
                    }
                    Ok(Payload::Host(Bytes::from_owner(Imported {
                        _map: map.clone(),
                        _ticket: ticket,
                        // SAFETY: offset + len ≤ the mapping's length (checked above).
                        ptr: unsafe { map.as_slice().as_ptr().add(offset as usize) },
                        len: len as usize,
                    })))
                }
            })
            .collect()
    }

    /// Drops the mappings of retired segments (buffers still held keep theirs alive).
    pub fn retire(&mut self, segments: &[u32]) {
        for s in segments {
            self.maps.remove(s);
        }
    }

    /// Segments mapped.
    pub fn mapped(&self) -> usize {
        self.maps.len()
    }
}

/// The read half of a unix connection that also receives file descriptors: bytes go to
/// the reader, descriptors queue in [`FdReader::fds`] in the order they arrived.
pub struct FdReader {
    half: OwnedReadHalf,
    fds: VecDeque<OwnedFd>,
}

impl FdReader {
    /// Reads from the read half of a unix socket.
    pub fn new(half: OwnedReadHalf) -> FdReader {
        FdReader {
            half,
            fds: VecDeque::new(),
        }
    }

    /// The connection.
    pub fn stream(&self) -> &tokio::net::UnixStream {
        self.half.as_ref()
    }

    /// Descriptors received and not yet taken.
    pub fn fds(&mut self) -> &mut VecDeque<OwnedFd> {
        &mut self.fds
    }
}

impl AsyncRead for FdReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let stream = this.half.as_ref();
        loop {
            ready!(stream.poll_read_ready(cx))?;
            let fds = &mut this.fds;
            let dst = buf.initialize_unfilled();
            let res = stream.try_io(Interest::READABLE, || {
                let mut space =
                    [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(FDS_PER_MSG))];
                let mut cmsg = RecvAncillaryBuffer::new(&mut space);
                let r = rustix::net::recvmsg(
                    stream,
                    &mut [std::io::IoSliceMut::new(dst)],
                    &mut cmsg,
                    RecvFlags::CMSG_CLOEXEC,
                )
                .map_err(io_err)?;
                for m in cmsg.drain() {
                    if let RecvAncillaryMessage::ScmRights(got) = m {
                        fds.extend(got);
                    }
                }
                if r.flags.contains(rustix::net::ReturnFlags::CTRUNC) {
                    return Err(std::io::Error::other(
                        "descriptors were dropped: too many in one message",
                    ));
                }
                Ok(r.bytes)
            });
            match res {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// Writes one frame on a unix connection, passing `fds` with its first bytes.
pub async fn write_frame_fds(
    w: &mut OwnedWriteHalf,
    header: &[u8],
    bufs: &[Bytes],
    fds: &[Arc<OwnedFd>],
) -> Result<(), TransportError> {
    let prefix = frame::encode_prefix(header.len(), bufs.iter().map(|b| b.len() as u64));
    let groups: Vec<&[Arc<OwnedFd>]> = fds.chunks(FDS_PER_MSG).collect();
    if groups.len() > prefix.len() {
        return Err(TransportError::Shm(format!(
            "{} descriptors in one frame; at most {}",
            fds.len(),
            prefix.len() * FDS_PER_MSG
        )));
    }
    // Each group rides on one byte of the prefix.
    let stream = w.as_ref();
    for (i, group) in groups.iter().enumerate() {
        let borrowed: Vec<_> = group.iter().map(|f| f.as_fd()).collect();
        stream
            .async_io(Interest::WRITABLE, || {
                let mut space =
                    [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(FDS_PER_MSG))];
                let mut cmsg = SendAncillaryBuffer::new(&mut space);
                cmsg.push(SendAncillaryMessage::ScmRights(&borrowed));
                rustix::net::sendmsg(
                    stream,
                    &[IoSlice::new(&prefix[i..i + 1])],
                    &mut cmsg,
                    SendFlags::NOSIGNAL,
                )
                .map_err(io_err)
            })
            .await
            .map_err(TransportError::Io)
            .and_then(|n| {
                if n == 1 {
                    Ok(())
                } else {
                    Err(TransportError::Io(std::io::ErrorKind::WriteZero.into()))
                }
            })?;
    }
    let mut slices = Vec::with_capacity(2 + bufs.len());
    slices.push(IoSlice::new(&prefix[groups.len()..]));
    slices.push(IoSlice::new(header));
    slices.extend(
        bufs.iter()
            .filter(|b| !b.is_empty())
            .map(|b| IoSlice::new(b)),
    );
    crate::frame_io::write_all_vectored(w, slices).await
}

fn io_err(e: rustix::io::Errno) -> std::io::Error {
    std::io::Error::from(e)
}
