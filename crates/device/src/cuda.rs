//! The CUDA backend: cudarc with the driver library loaded at run time. Every entry point
//! first checks that a driver can be loaded and returns [`DeviceError::NoDriver`] if not
//! (cudarc itself panics without one), and calls into cudarc are guarded so that a panic
//! (a symbol missing from an old driver) becomes an error too.
//!
//! A CUDA context binds to the calling thread and its calls block: callers drive each GPU
//! from one dedicated thread, never from an async runtime's threads.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use cudarc::driver::{result, CudaContext, CudaEvent, CudaStream};

use crate::staging::{CopyEngine, PinnedMemory};
use crate::{DeviceError, DeviceLoc, MemoryPool};

/// Whether a CUDA driver library can be loaded here.
pub fn driver() -> Result<(), DeviceError> {
    // SAFETY: only tries to open the driver library by its usual names.
    if unsafe { cudarc::driver::sys::is_culib_present() } {
        Ok(())
    } else {
        Err(DeviceError::NoDriver(
            "the CUDA driver library (libcuda.so.1) cannot be loaded on this machine".into(),
        ))
    }
}

/// Runs a CUDA call: its error, or a panic inside cudarc (a symbol missing from an old
/// driver), becomes a [`DeviceError::Cuda`] naming `what` was being done.
pub fn guarded<T, E: std::fmt::Debug>(
    what: &str,
    f: impl FnOnce() -> Result<T, E>,
) -> Result<T, DeviceError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(DeviceError::Cuda(format!("{what}: {e:?}"))),
        Err(_) => Err(DeviceError::Cuda(format!(
            "{what}: the CUDA driver failed (a missing symbol or an unusable driver)"
        ))),
    }
}

/// CUDA devices visible to this process.
pub fn device_count() -> Result<u32, DeviceError> {
    driver()?;
    guarded("counting devices", CudaContext::device_count).map(|n| n.max(0) as u32)
}

/// An opened CUDA GPU as a worker accounts it: its context (held open while the worker
/// runs), its name, and the pool its memory use is accounted in.
pub struct CudaDevice {
    ordinal: u32,
    name: String,
    _ctx: Arc<CudaContext>,
    pool: Arc<MemoryPool>,
}

impl CudaDevice {
    /// Opens GPU `ordinal` with a memory limit (default: 80 % of its memory, like
    /// dask-cuda's device memory limit).
    pub fn open(ordinal: u32, limit: Option<u64>) -> Result<CudaDevice, DeviceError> {
        driver()?;
        let ctx = guarded("creating a context", || CudaContext::new(ordinal as usize))?;
        let name = guarded("reading the device name", || ctx.name())?;
        let total = guarded("reading the device memory", || ctx.total_mem())? as u64;
        Ok(CudaDevice {
            ordinal,
            name,
            _ctx: ctx,
            pool: MemoryPool::new(DeviceLoc::cuda(ordinal), limit.unwrap_or(total / 10 * 8)),
        })
    }

    /// The GPU's ordinal in this process.
    pub fn ordinal(&self) -> u32 {
        self.ordinal
    }

    /// The GPU's product name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pool the GPU's memory use is accounted in.
    pub fn pool(&self) -> &Arc<MemoryPool> {
        &self.pool
    }
}

/// Page-locked host memory of a CUDA context, for staging (`cuMemHostAlloc` with flags 0:
/// not write-combined, since the CPU reads downloads from it).
pub struct CudaPinned(Arc<CudaContext>);

impl CudaPinned {
    pub fn new(ctx: Arc<CudaContext>) -> CudaPinned {
        CudaPinned(ctx)
    }
}

impl PinnedMemory for CudaPinned {
    fn alloc(&self, len: usize) -> Result<std::ptr::NonNull<u8>, DeviceError> {
        guarded("binding the context", || self.0.bind_to_thread())?;
        // SAFETY: a plain page-locked allocation.
        let p = guarded("allocating pinned memory", || unsafe {
            result::malloc_host(len, 0)
        })?;
        std::ptr::NonNull::new(p.cast())
            .ok_or_else(|| DeviceError::Cuda("allocating pinned memory: a null pointer".into()))
    }

    unsafe fn free(&self, ptr: std::ptr::NonNull<u8>, _len: usize) {
        let _ = guarded("binding the context", || self.0.bind_to_thread());
        // SAFETY: allocated by `alloc` above, freed once (the caller's contract).
        let _ = guarded("freeing pinned memory", || unsafe {
            result::free_host(ptr.as_ptr().cast())
        });
    }
}

/// A CUDA stream as the copy engine of staged transfers: copies are queued on the stream,
/// fences are events recorded on it.
pub struct StreamEngine<'a>(pub &'a CudaStream);

impl CopyEngine for StreamEngine<'_> {
    type Fence = CudaEvent;

    unsafe fn to_device(
        &mut self,
        src: *const u8,
        len: usize,
        dst: u64,
    ) -> Result<(), DeviceError> {
        let stream = self.0.cu_stream();
        // SAFETY: the caller keeps `src` (pinned, `len` bytes) valid until the fence after
        // this copy; `dst` holds `len` bytes.
        guarded("copying to the device", || unsafe {
            result::memcpy_htod_async(dst, std::slice::from_raw_parts(src, len), stream)
        })
    }

    unsafe fn to_host(&mut self, src: u64, dst: *mut u8, len: usize) -> Result<(), DeviceError> {
        let stream = self.0.cu_stream();
        // SAFETY: as above, for `dst`.
        guarded("copying to the host", || unsafe {
            result::memcpy_dtoh_async(std::slice::from_raw_parts_mut(dst, len), src, stream)
        })
    }

    fn fence(&mut self) -> Result<CudaEvent, DeviceError> {
        guarded("recording an event", || self.0.record_event(None))
    }

    fn wait(&mut self, fence: &CudaEvent) -> Result<(), DeviceError> {
        guarded("waiting for the device", || fence.synchronize())
    }
}
