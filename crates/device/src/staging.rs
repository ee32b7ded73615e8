//! Pinned staging: a pool of page-locked host buffers through which bytes move between
//! ordinary host memory and a device, and the pipelines that move them in chunks.
//!
//! A device's DMA engine reads and writes only page-locked memory at full speed, so a copy
//! from pageable memory goes through a staging buffer. One buffer as large as the largest
//! transfer would pin gigabytes; instead a transfer is cut into chunks that alternate
//! between two buffers of a fixed size: while the device copies one chunk, the CPU fills
//! (or drains) the other. A buffer is reused only after the device is done with it (a
//! fence recorded after its copy), which is what the pipelines here guarantee and the
//! tests check with an engine that copies late.
//!
//! The pool and the pipelines know nothing of CUDA: the memory comes from a
//! [`PinnedMemory`] (CUDA's `cuMemHostAlloc`, not write-combined, since the CPU reads
//! downloads from it) and the copies from a [`CopyEngine`] (a CUDA stream and its events).

use std::ops::Range;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

use crate::DeviceError;

/// Where page-locked memory comes from.
pub trait PinnedMemory: Send + Sync {
    fn alloc(&self, len: usize) -> Result<NonNull<u8>, DeviceError>;
    /// # Safety
    /// `ptr` came from `alloc(len)` of this allocator and is freed once.
    unsafe fn free(&self, ptr: NonNull<u8>, len: usize);
}

/// A pool of equal page-locked buffers, allocated on first use and reused.
pub struct StagingPool {
    memory: Arc<dyn PinnedMemory>,
    chunk: usize,
    slots: usize,
    state: Mutex<Slots>,
}

struct Slots {
    free: Vec<NonNull<u8>>,
    allocated: usize,
}

// SAFETY: the buffers are plain memory owned by the pool (or by the one `Stage` that took
// them); the pointers are not shared.
unsafe impl Send for Slots {}

/// A buffer taken from the pool, returned when dropped.
pub struct Stage<'a> {
    pool: &'a StagingPool,
    ptr: NonNull<u8>,
}

impl StagingPool {
    /// At most `slots` buffers of `chunk` bytes.
    pub fn new(memory: Arc<dyn PinnedMemory>, chunk: usize, slots: usize) -> StagingPool {
        StagingPool {
            memory,
            chunk: chunk.max(1),
            slots,
            state: Mutex::new(Slots {
                free: Vec::new(),
                allocated: 0,
            }),
        }
    }

    /// Bytes per buffer.
    pub fn chunk(&self) -> usize {
        self.chunk
    }

    /// A free buffer, allocating one while fewer than `slots` exist.
    pub fn take(&self) -> Result<Stage<'_>, DeviceError> {
        let mut s = self.state.lock().expect("staging pool lock");
        let ptr = match s.free.pop() {
            Some(p) => p,
            None if s.allocated < self.slots => {
                let p = self.memory.alloc(self.chunk)?;
                s.allocated += 1;
                p
            }
            None => {
                return Err(DeviceError::Io(std::io::Error::other(format!(
                    "all {} staging buffers are in use",
                    self.slots
                ))))
            }
        };
        Ok(Stage { pool: self, ptr })
    }

    /// Bytes of page-locked memory held.
    #[cfg(test)]
    pub fn pinned(&self) -> usize {
        self.state.lock().expect("staging pool lock").allocated * self.chunk
    }
}

impl Drop for StagingPool {
    fn drop(&mut self) {
        let s = self.state.get_mut().expect("staging pool lock");
        for p in s.free.drain(..) {
            // SAFETY: allocated by `memory` with `chunk` bytes; every stage has returned
            // its buffer (they borrow the pool).
            unsafe { self.memory.free(p, self.chunk) };
        }
    }
}

impl Stage<'_> {
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `chunk` bytes owned by this stage until it is dropped.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.pool.chunk) }
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: as above.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.pool.chunk) }
    }
}

impl Drop for Stage<'_> {
    fn drop(&mut self) {
        let mut s = self.pool.state.lock().expect("staging pool lock");
        s.free.push(self.ptr);
    }
}

/// The chunks a transfer of `len` bytes is cut into.
pub fn chunks(len: usize, chunk: usize) -> impl Iterator<Item = Range<usize>> {
    let chunk = chunk.max(1);
    (0..len.div_ceil(chunk)).map(move |i| i * chunk..((i + 1) * chunk).min(len))
}

/// Asynchronous copies between staging memory and a device, carried out in the order
/// queued.
pub trait CopyEngine {
    /// Marks the copies queued so far.
    type Fence;
    /// Queues a copy of `len` bytes from staging memory at `src` to device address `dst`.
    ///
    /// # Safety
    /// `src` stays valid and unchanged until a fence recorded after this copy is waited on.
    unsafe fn to_device(&mut self, src: *const u8, len: usize, dst: u64)
        -> Result<(), DeviceError>;
    /// Queues a copy of `len` bytes from device address `src` to staging memory at `dst`.
    ///
    /// # Safety
    /// `dst` stays valid and unread until a fence recorded after this copy is waited on.
    unsafe fn to_host(&mut self, src: u64, dst: *mut u8, len: usize) -> Result<(), DeviceError>;
    fn fence(&mut self) -> Result<Self::Fence, DeviceError>;
    fn wait(&mut self, fence: &Self::Fence) -> Result<(), DeviceError>;
}

/// Copies `bytes` to device address `dst` through two staging buffers; returns when the
/// device has them.
pub fn upload<E: CopyEngine>(
    pool: &StagingPool,
    engine: &mut E,
    bytes: &[u8],
    dst: u64,
) -> Result<(), DeviceError> {
    let mut stages = [pool.take()?, pool.take()?];
    let mut fences: [Option<E::Fence>; 2] = [None, None];
    let r = (|| {
        for (k, r) in chunks(bytes.len(), pool.chunk()).enumerate() {
            let s = k % 2;
            // The device is done reading this buffer's previous chunk.
            if let Some(f) = fences[s].take() {
                engine.wait(&f)?;
            }
            let stage = &mut stages[s].as_mut_slice()[..r.len()];
            stage.copy_from_slice(&bytes[r.clone()]);
            // SAFETY: the buffer is not touched again before the fence below is waited on
            // (next use of this buffer, or the end).
            unsafe { engine.to_device(stage.as_ptr(), r.len(), dst + r.start as u64)? };
            fences[s] = Some(engine.fence()?);
        }
        Ok(())
    })();
    // Whatever happened, no copy may still read a buffer when it goes back to the pool.
    for f in fences.iter().flatten() {
        let w = engine.wait(f);
        if r.is_ok() {
            w?;
        }
    }
    r
}

/// Copies `out.len()` bytes from device address `src` into `out` through two staging
/// buffers: the device fills one while the CPU drains the other.
pub fn download<E: CopyEngine>(
    pool: &StagingPool,
    engine: &mut E,
    src: u64,
    out: &mut [u8],
) -> Result<(), DeviceError> {
    let mut stages = [pool.take()?, pool.take()?];
    let mut pending: [Option<(E::Fence, Range<usize>)>; 2] = [None, None];
    let r = (|| {
        for (k, r) in chunks(out.len(), pool.chunk()).enumerate() {
            let s = k % 2;
            // Drain this buffer's previous chunk before the device overwrites it.
            if let Some((f, prev)) = pending[s].take() {
                engine.wait(&f)?;
                out[prev.clone()].copy_from_slice(&stages[s].as_slice()[..prev.len()]);
            }
            let dst = stages[s].as_mut_slice().as_mut_ptr();
            // SAFETY: the buffer is read only after the fence below is waited on.
            unsafe { engine.to_host(src + r.start as u64, dst, r.len())? };
            pending[s] = Some((engine.fence()?, r));
        }
        // The last two chunks, the older first (the device may still be filling the
        // newer): after n chunks, buffer n % 2 holds chunk n - 2.
        let older = out.len().div_ceil(pool.chunk()) % 2;
        for s in [older, 1 - older] {
            if let Some((f, prev)) = pending[s].take() {
                engine.wait(&f)?;
                out[prev.clone()].copy_from_slice(&stages[s].as_slice()[..prev.len()]);
            }
        }
        Ok(())
    })();
    for (f, _) in pending.iter().flatten() {
        let _ = engine.wait(f);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Heap memory standing in for page-locked memory, counted.
    #[derive(Default)]
    struct Heap {
        live: AtomicUsize,
        allocs: AtomicUsize,
    }

    impl PinnedMemory for Heap {
        fn alloc(&self, len: usize) -> Result<NonNull<u8>, DeviceError> {
            self.live.fetch_add(1, Ordering::Relaxed);
            self.allocs.fetch_add(1, Ordering::Relaxed);
            let b: Box<[u8]> = vec![0u8; len].into_boxed_slice();
            Ok(NonNull::new(Box::into_raw(b).cast()).unwrap())
        }
        unsafe fn free(&self, ptr: NonNull<u8>, len: usize) {
            self.live.fetch_sub(1, Ordering::Relaxed);
            // SAFETY: made by `alloc` from a boxed slice of `len` bytes.
            drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr.as_ptr(), len)) });
        }
    }

    /// A device of plain memory whose engine copies only when a fence is waited on (as
    /// late as a real one may): a buffer reused before its fence shows as wrong bytes.
    struct LateEngine {
        device: Vec<u8>,
        queued: Vec<Op>,
        done: usize,
        fences: usize,
    }

    enum Op {
        ToDevice(*const u8, usize, u64),
        ToHost(u64, *mut u8, usize),
    }

    impl LateEngine {
        fn new(len: usize) -> LateEngine {
            LateEngine {
                device: vec![0; len],
                queued: Vec::new(),
                done: 0,
                fences: 0,
            }
        }
    }

    impl CopyEngine for LateEngine {
        type Fence = usize;
        unsafe fn to_device(
            &mut self,
            src: *const u8,
            len: usize,
            dst: u64,
        ) -> Result<(), DeviceError> {
            self.queued.push(Op::ToDevice(src, len, dst));
            Ok(())
        }
        unsafe fn to_host(
            &mut self,
            src: u64,
            dst: *mut u8,
            len: usize,
        ) -> Result<(), DeviceError> {
            self.queued.push(Op::ToHost(src, dst, len));
            Ok(())
        }
        fn fence(&mut self) -> Result<usize, DeviceError> {
            self.fences += 1;
            Ok(self.queued.len())
        }
        fn wait(&mut self, fence: &usize) -> Result<(), DeviceError> {
            while self.done < *fence {
                match self.queued[self.done] {
                    Op::ToDevice(src, len, dst) => {
                        // SAFETY: the pipeline keeps `src` valid until this fence.
                        let s = unsafe { std::slice::from_raw_parts(src, len) };
                        self.device[dst as usize..dst as usize + len].copy_from_slice(s);
                    }
                    Op::ToHost(src, dst, len) => {
                        // SAFETY: as above.
                        let d = unsafe { std::slice::from_raw_parts_mut(dst, len) };
                        d.copy_from_slice(&self.device[src as usize..src as usize + len]);
                    }
                }
                self.done += 1;
            }
            Ok(())
        }
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + seed as usize) as u8).collect()
    }

    #[test]
    fn chunks_cover_a_transfer_exactly() {
        let c: Vec<_> = chunks(10, 4).collect();
        assert_eq!(c, vec![0..4, 4..8, 8..10]);
        assert_eq!(chunks(0, 4).count(), 0);
        assert_eq!(chunks(8, 4).collect::<Vec<_>>(), vec![0..4, 4..8]);
    }

    #[test]
    fn bytes_go_through_two_buffers_and_come_back_exact_even_when_copies_are_late() {
        let heap = Arc::new(Heap::default());
        let pool = StagingPool::new(heap.clone(), 1000, 2);
        for len in [0, 1, 999, 1000, 1001, 4567, 10_000] {
            let mut dev = LateEngine::new(len + 64);
            let data = pattern(len, len as u8);
            upload(&pool, &mut dev, &data, 64).unwrap();
            assert!(dev.device[64..] == data[..], "upload of {len}");
            assert_eq!(dev.done, dev.queued.len(), "every copy finished");
            let mut back = vec![0u8; len];
            download(&pool, &mut dev, 64, &mut back).unwrap();
            assert!(back == data, "download of {len}");
        }
        // Two buffers, allocated once and reused for every transfer.
        assert_eq!(heap.allocs.load(Ordering::Relaxed), 2);
        assert_eq!(pool.pinned(), 2000);
        drop(pool);
        assert_eq!(heap.live.load(Ordering::Relaxed), 0, "freed with the pool");
    }

    #[test]
    fn a_pool_gives_no_more_buffers_than_its_slots() {
        let heap = Arc::new(Heap::default());
        let pool = StagingPool::new(heap.clone(), 64, 2);
        let a = pool.take().unwrap();
        let b = pool.take().unwrap();
        assert!(pool.take().is_err());
        drop(a);
        let c = pool.take().unwrap();
        drop((b, c));
        assert_eq!(heap.allocs.load(Ordering::Relaxed), 2);
        // A pool of one buffer cannot pipeline: a clear error, nothing copied.
        let one = StagingPool::new(heap.clone(), 64, 1);
        let mut dev = LateEngine::new(128);
        let e = upload(&one, &mut dev, &[1; 100], 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("staging buffers are in use"), "{e}");
        assert!(dev.queued.is_empty());
    }
}
