//! Host memory that other processes on this host can map: memfd-backed segments, each
//! mapped once and carved into [`Region`]s, sealed against shrinking so a peer's mapping
//! can never fault on a truncated file. Segments grow on demand and are unmapped by
//! [`Arena::trim`] after they stay unused.
//!
//! Segments of the arena's own size are pre-faulted, so the transfers that reuse them
//! never pay page faults. A region larger than that gets a segment of its own, which is
//! committed as it is written: a length a peer announces reserves address space, not
//! memory, until its bytes arrive.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rustix::fs::{MemfdFlags, SealFlags};
use rustix::mm::{MapFlags, ProtFlags};

/// Regions are aligned (and sized) to cache lines.
const ALIGN: u64 = 64;
/// The smallest segment an arena creates; bigger requests get a segment of their own size.
pub const DEFAULT_SEGMENT: u64 = 32 << 20;

fn io_err(e: rustix::io::Errno) -> std::io::Error {
    std::io::Error::from(e)
}

/// One memfd, mapped read-write in this process.
struct Segment {
    fd: Arc<OwnedFd>,
    base: *mut u8,
    len: u64,
    /// Free ranges, offset → length, coalesced.
    free: BTreeMap<u64, u64>,
    used: u64,
    /// Consecutive trims that found the segment unused.
    idle: u32,
}

// SAFETY: the mapping is plain shared memory; access to its bytes is governed by the
// regions carved from it (exclusive while being written, shared once frozen).
unsafe impl Send for Segment {}

impl Segment {
    fn create(len: u64, populate: bool) -> std::io::Result<Segment> {
        let fd = rustix::fs::memfd_create(
            "rask-arena",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )
        .map_err(io_err)?;
        rustix::fs::ftruncate(&fd, len).map_err(io_err)?;
        // Receivers rely on the size: a file that could shrink would fault their reads.
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)
            .map_err(io_err)?;
        let flags = if populate {
            MapFlags::SHARED | MapFlags::POPULATE
        } else {
            MapFlags::SHARED
        };
        // SAFETY: a fresh shared mapping of a file we own; nothing else refers to it yet.
        let base = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len as usize,
                ProtFlags::READ | ProtFlags::WRITE,
                flags,
                &fd,
                0,
            )
        }
        .map_err(io_err)? as *mut u8;
        Ok(Segment {
            fd: Arc::new(fd),
            base,
            len,
            free: BTreeMap::from([(0, len)]),
            used: 0,
            idle: 0,
        })
    }

    /// Bytes of memory the file holds: the pages written so far (all, once pre-faulted).
    fn resident(&self) -> u64 {
        rustix::fs::fstat(&*self.fd)
            .map(|st| (st.st_blocks as u64 * 512).min(self.len))
            .unwrap_or(self.len)
    }

    /// First fit.
    fn take(&mut self, need: u64) -> Option<u64> {
        let (&off, &len) = self.free.iter().find(|(_, &len)| len >= need)?;
        self.free.remove(&off);
        if len > need {
            self.free.insert(off + need, len - need);
        }
        self.used += need;
        self.idle = 0;
        Some(off)
    }

    fn give(&mut self, mut off: u64, mut len: u64) {
        self.used -= len;
        if let Some((&p, &plen)) = self.free.range(..off).next_back() {
            if p + plen == off {
                self.free.remove(&p);
                off = p;
                len += plen;
            }
        }
        if let Some(nlen) = self.free.remove(&(off + len)) {
            len += nlen;
        }
        self.free.insert(off, len);
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: the mapping was created by `create` with this length; no region of it
        // is alive (segments are dropped only when unused, or with the whole arena).
        unsafe {
            let _ = rustix::mm::munmap(self.base.cast(), self.len as usize);
        }
    }
}

struct ArenaState {
    segments: BTreeMap<u32, Segment>,
    next: u32,
}

struct ArenaInner {
    state: Mutex<ArenaState>,
    segment_size: u64,
}

impl ArenaInner {
    fn give(&self, seg: u32, off: u64, len: u64) {
        let mut st = self.state.lock().expect("arena lock");
        if let Some(s) = st.segments.get_mut(&seg) {
            s.give(off, len);
        }
    }
}

/// Counters of an arena.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArenaStats {
    /// Memfd segments mapped now.
    pub segments: u64,
    /// Bytes of all segments together.
    pub capacity: u64,
    /// Bytes allocated in them (the rest is free for reuse).
    pub used: u64,
    /// Bytes of memory the segments hold (pages written or pre-faulted); at most
    /// `capacity`.
    pub resident: u64,
}

/// Memfd-backed memory that same-host peers can map. Cheap to clone.
#[derive(Clone)]
pub struct Arena(Arc<ArenaInner>);

impl std::fmt::Debug for Arena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Arena({:?})", self.stats())
    }
}

impl Arena {
    /// An empty arena that grows by segments of at least `segment_size` bytes.
    pub fn new(segment_size: u64) -> Arena {
        Arena(Arc::new(ArenaInner {
            state: Mutex::new(ArenaState {
                segments: BTreeMap::new(),
                next: 1,
            }),
            segment_size: segment_size.max(ALIGN),
        }))
    }

    /// A writable region of `len` bytes (not zeroed when reused); grows the arena when no
    /// segment has room.
    pub fn alloc(&self, len: usize) -> std::io::Result<Region> {
        let need = (len.max(1) as u64).div_ceil(ALIGN) * ALIGN;
        let mut st = self.0.state.lock().expect("arena lock");
        let found = st
            .segments
            .iter_mut()
            .find_map(|(&id, s)| s.take(need).map(|off| (id, off, s.base)));
        let (seg, off, base) = match found {
            Some(f) => f,
            None => {
                let size = need.max(self.0.segment_size).div_ceil(2 << 20) * (2 << 20);
                let mut s = Segment::create(size, need <= self.0.segment_size)?;
                let off = s.take(need).expect("a fresh segment fits");
                let id = st.next;
                st.next += 1;
                let base = s.base;
                st.segments.insert(id, s);
                tracing::debug!(segment = id, bytes = size, "arena grew");
                (id, off, base)
            }
        };
        Ok(Region {
            arena: self.0.clone(),
            seg,
            off,
            cap: need,
            len,
            // SAFETY: off + len lies inside the segment's mapping.
            ptr: unsafe { base.add(off as usize) },
        })
    }

    /// A frozen copy of `bytes` in the arena.
    pub fn copy_in(&self, bytes: &[u8]) -> std::io::Result<Bytes> {
        let mut r = self.alloc(bytes.len())?;
        r.as_mut_slice().copy_from_slice(bytes);
        Ok(r.freeze())
    }

    /// Where `bytes` lies, if inside one of this arena's segments: (segment, offset).
    pub fn locate(&self, bytes: &[u8]) -> Option<(u32, u64)> {
        let p = bytes.as_ptr() as usize;
        let st = self.0.state.lock().expect("arena lock");
        st.segments.iter().find_map(|(&id, s)| {
            let b = s.base as usize;
            (p >= b && p + bytes.len() <= b + s.len as usize).then(|| (id, (p - b) as u64))
        })
    }

    /// Unmaps segments found unused by more than `rounds` consecutive trims, while more
    /// than `keep_free` bytes of capacity are unused; returns the ids of the segments
    /// removed (receivers should drop their mappings). Called periodically, this shrinks
    /// the arena after a burst without unmapping memory that is about to be reused.
    pub fn trim(&self, keep_free: u64, rounds: u32) -> Vec<u32> {
        let mut st = self.0.state.lock().expect("arena lock");
        let mut free: u64 = st.segments.values().map(|s| s.len - s.used).sum();
        for s in st.segments.values_mut() {
            s.idle = if s.used == 0 {
                s.idle.saturating_add(1)
            } else {
                0
            };
        }
        let idle: Vec<(u32, u64)> = st
            .segments
            .iter()
            .filter(|(_, s)| s.used == 0 && s.idle > rounds)
            .map(|(&id, s)| (id, s.len))
            .collect();
        let mut gone = Vec::new();
        for (id, len) in idle.into_iter().rev() {
            if free <= keep_free {
                break;
            }
            st.segments.remove(&id);
            free -= len;
            gone.push(id);
        }
        gone
    }

    /// Segments, capacity and bytes in use.
    pub fn stats(&self) -> ArenaStats {
        let st = self.0.state.lock().expect("arena lock");
        ArenaStats {
            segments: st.segments.len() as u64,
            capacity: st.segments.values().map(|s| s.len).sum(),
            used: st.segments.values().map(|s| s.used).sum(),
            resident: st.segments.values().map(Segment::resident).sum(),
        }
    }

    /// A segment's descriptor and length, to pass it to a peer that will map it.
    pub fn segment(&self, id: u32) -> Option<(Arc<OwnedFd>, u64)> {
        let st = self.0.state.lock().expect("arena lock");
        st.segments.get(&id).map(|s| (s.fd.clone(), s.len))
    }
}

/// A piece of an arena: writable until frozen into [`Bytes`]; returned to the arena when
/// the last `Bytes` referring to it is dropped.
pub struct Region {
    arena: Arc<ArenaInner>,
    seg: u32,
    off: u64,
    cap: u64,
    len: usize,
    ptr: *mut u8,
}

// SAFETY: a region is the only handle to its bytes; `&mut self` is needed to write them.
unsafe impl Send for Region {}
// SAFETY: shared access only reads.
unsafe impl Sync for Region {}

impl Region {
    /// The bytes, for filling in.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: ptr..ptr+len is mapped and belongs to this region alone.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    /// Read-only bytes that keep the region alive.
    pub fn freeze(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for Region {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: as in `as_mut_slice`; no writer exists while shared.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        self.arena.give(self.seg, self.off, self.cap);
    }
}

/// A read-only shared mapping of the start of a file, unmapped when dropped. Usable as the
/// owner of `Bytes` (`Bytes::from_owner`).
pub struct ReadOnlyMap {
    base: *const u8,
    len: usize,
}

// SAFETY: read-only shared memory; nothing writes through this mapping.
unsafe impl Send for ReadOnlyMap {}
// SAFETY: as above.
unsafe impl Sync for ReadOnlyMap {}

impl ReadOnlyMap {
    /// Maps the first `len` (> 0) bytes of `fd`; with `populate`, every page is faulted in
    /// now rather than on first read. The caller makes sure the file is at least `len`
    /// bytes long and cannot shrink while mapped (reads past its end would fault).
    pub fn new(fd: impl AsFd, len: usize, populate: bool) -> std::io::Result<ReadOnlyMap> {
        let flags = if populate {
            MapFlags::SHARED | MapFlags::POPULATE
        } else {
            MapFlags::SHARED
        };
        // SAFETY: a fresh read-only mapping; its validity is the caller's size guarantee.
        let base =
            unsafe { rustix::mm::mmap(std::ptr::null_mut(), len, ProtFlags::READ, flags, fd, 0) }
                .map_err(io_err)?;
        Ok(ReadOnlyMap {
            base: base as *const u8,
            len,
        })
    }

    /// Bytes mapped.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is mapped (a zero-length file).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The mapped bytes, valid while the map lives.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `len` mapped bytes, alive as long as `self`.
        unsafe { std::slice::from_raw_parts(self.base, self.len) }
    }
}

impl AsRef<[u8]> for ReadOnlyMap {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Drop for ReadOnlyMap {
    fn drop(&mut self) {
        // SAFETY: our own mapping; every slice into it borrows or owns this.
        unsafe {
            let _ = rustix::mm::munmap(self.base as *mut _, self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_coalesce_and_segments_trim() {
        let a = Arena::new(1 << 20);
        let r1 = a.alloc(1000).unwrap();
        let r2 = a.alloc(5000).unwrap();
        assert_eq!(a.stats().segments, 1);
        assert_eq!(a.stats().used, 1024 + 5056);
        let b1 = r1.freeze();
        drop(r2);
        assert_eq!(a.stats().used, 1024);
        drop(b1);
        assert_eq!(a.stats().used, 0);
        // After coalescing, the whole segment is one free range again.
        let big = a.alloc((2 << 20) - 64).unwrap();
        assert_eq!(a.stats().segments, 1);
        let other = a.alloc(100).unwrap();
        assert_eq!(a.stats().segments, 2);
        drop(big);
        drop(other);
        assert_eq!(a.trim(0, 1).len(), 0, "idle for one round only");
        assert_eq!(a.trim(1 << 30, 1).len(), 0, "within what may stay free");
        assert_eq!(a.trim(0, 1).len(), 2);
        assert_eq!(a.stats(), ArenaStats::default());
    }

    #[test]
    fn a_region_beyond_the_segment_size_holds_memory_only_as_it_is_written() {
        let a = Arena::new(2 << 20);
        let small = a.alloc(4096).unwrap();
        assert_eq!(
            a.stats().resident,
            2 << 20,
            "a segment of the arena's size is pre-faulted"
        );
        let mut big = a.alloc(256 << 20).unwrap();
        assert_eq!(a.stats().capacity, (2 << 20) + (256 << 20));
        assert!(
            a.stats().resident < 3 << 20,
            "announcing 256 MiB holds {} bytes",
            a.stats().resident
        );
        big.as_mut_slice()[..8 << 20].fill(7);
        let held = a.stats().resident - (2 << 20);
        assert!(
            (8 << 20..9 << 20).contains(&held),
            "8 MiB written, {held} held"
        );
        drop((small, big));
    }

    #[test]
    fn locate_finds_region_offsets() {
        let a = Arena::new(1 << 20);
        let _pad = a.alloc(128).unwrap();
        let mut r = a.alloc(10).unwrap();
        r.as_mut_slice().copy_from_slice(b"0123456789");
        let b = r.freeze();
        let (seg, off) = a.locate(&b).unwrap();
        assert_eq!((seg, off), (1, 128));
        assert_eq!(a.locate(&b[3..]), Some((1, 131)));
        assert_eq!(a.locate(b"elsewhere"), None);
        assert_eq!(&b[..], b"0123456789");
    }
}
