//! Page-locked host memory of a CUDA context for staging ([`CudaPinned`]), and a CUDA
//! stream as the copy engine of staged transfers ([`StreamEngine`]): what the generic
//! pipelines of [`crate::staging`] run on for a CUDA GPU.

use std::sync::Arc;

use cudarc::driver::{result, CudaContext, CudaEvent, CudaStream};

use super::guarded;
use crate::staging::{CopyEngine, PinnedMemory};
use crate::DeviceError;

/// Page-locked host memory of a CUDA context, for staging (`cuMemHostAlloc` with flags 0:
/// not write-combined, since the CPU reads downloads from it).
pub(crate) struct CudaPinned(Arc<CudaContext>);

impl CudaPinned {
    pub(crate) fn new(ctx: Arc<CudaContext>) -> CudaPinned {
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
pub(crate) struct StreamEngine<'a>(pub(crate) &'a CudaStream);

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
