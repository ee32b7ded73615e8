//! Device memory with an owner: a [`DeviceMem`] is one allocation of a CUDA GPU, freed when
//! it is dropped (on whatever thread: the context is bound first). Its address never
//! leaves this crate; launches, copies and IPC take the owner.

use std::sync::Arc;

use cudarc::driver::{result, sys, CudaContext, CudaStream};

use super::guarded;
use crate::DeviceError;

/// One allocation of device memory, freed when dropped. Not `Clone`: a copy is a new
/// allocation on a device with a limit, made explicitly.
pub struct DeviceMem {
    ptr: sys::CUdeviceptr,
    /// Bytes usable (the allocation holds at least one byte even when this is 0).
    len: usize,
    ctx: Arc<CudaContext>,
    /// The stream whose memory pool it came from, freed in that stream's order; `None` for
    /// `cuMemAlloc` memory, the only kind CUDA IPC can export.
    pool: Option<Arc<CudaStream>>,
}

impl DeviceMem {
    /// `len` bytes from `cuMemAlloc` (exportable by CUDA IPC); `ctx` is bound to this
    /// thread.
    pub(crate) fn alloc(ctx: &Arc<CudaContext>, len: usize) -> Result<DeviceMem, DeviceError> {
        // SAFETY: a plain allocation.
        let ptr = guarded("allocating device memory", || unsafe {
            result::malloc_sync(len.max(1))
        })?;
        Ok(DeviceMem {
            ptr,
            len,
            ctx: ctx.clone(),
            pool: None,
        })
    }

    /// `len` bytes from `stream`'s memory pool where the GPU has one (freed after the work
    /// queued on the stream), else from `cuMemAlloc`; the stream's context is bound to
    /// this thread.
    pub(crate) fn alloc_pooled(
        stream: &Arc<CudaStream>,
        len: usize,
    ) -> Result<DeviceMem, DeviceError> {
        let ctx = stream.context();
        if !ctx.has_async_alloc() {
            return DeviceMem::alloc(ctx, len);
        }
        let cu_stream = stream.cu_stream();
        // SAFETY: a plain allocation on this context's stream.
        let ptr = guarded("allocating device memory", || unsafe {
            result::malloc_async(cu_stream, len.max(1))
        })?;
        Ok(DeviceMem {
            ptr,
            len,
            ctx: ctx.clone(),
            pool: Some(stream.clone()),
        })
    }

    /// Bytes usable.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no byte is usable.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether CUDA IPC can export it (`cuMemAlloc` memory, not pool memory).
    pub fn exportable(&self) -> bool {
        self.pool.is_none()
    }

    /// The device address, for this crate's calls into CUDA.
    pub(crate) fn ptr(&self) -> sys::CUdeviceptr {
        self.ptr
    }

    /// Whether this memory belongs to `ctx`.
    pub(crate) fn of(&self, ctx: &Arc<CudaContext>) -> bool {
        Arc::ptr_eq(&self.ctx, ctx)
    }
}

impl std::fmt::Debug for DeviceMem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceMem")
            .field("len", &self.len)
            .field("pooled", &self.pool.is_some())
            .finish()
    }
}

/// Freed when dropped, on the success and the error paths alike: a pooled free is ordered
/// after the work queued on the stream, and cuMemFree waits for the device.
impl Drop for DeviceMem {
    fn drop(&mut self) {
        let ptr = self.ptr;
        let r = guarded("freeing device memory", || {
            self.ctx.bind_to_thread()?;
            // SAFETY: allocated by `alloc` or `alloc_pooled` of this context, freed once
            // (here); nothing reads it after its owner is gone.
            unsafe {
                match &self.pool {
                    Some(stream) => result::free_async(ptr, stream.cu_stream()),
                    None => result::free_sync(ptr),
                }
            }
        });
        if let Err(e) = r {
            tracing::warn!("{e}");
        }
    }
}
