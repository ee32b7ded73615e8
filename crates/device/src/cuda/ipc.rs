//! CUDA IPC: the handle of an allocation ([`export`]), and another process's allocation
//! opened in this process by that handle ([`IpcMapping`], closed when dropped). The
//! exporter keeps its memory until the importer is done with it: the data protocol's loan
//! says when.

use std::sync::Arc;

use cudarc::driver::{sys, CudaContext};
use rask_proto::IpcExport;

use super::{guarded, DeviceMem};
use crate::DeviceError;

/// Bytes of a CUDA IPC handle (`CUipcMemHandle`).
const HANDLE_LEN: usize = 64;

/// The CUDA IPC handle of the allocation holding `mem`, and `mem`'s offset in it; `ctx`
/// (`mem`'s context) is bound to this thread.
pub(crate) fn export(mem: &DeviceMem) -> Result<IpcExport, DeviceError> {
    let ptr = mem.ptr();
    let (mut base, mut size): (sys::CUdeviceptr, usize) = (0, 0);
    // SAFETY: out-parameters of the declared types.
    guarded("finding the allocation", || unsafe {
        sys::cuMemGetAddressRange_v2(&mut base, &mut size, ptr).result()
    })?;
    let mut h = sys::CUipcMemHandle {
        reserved: [0; HANDLE_LEN],
    };
    // SAFETY: as above; `base` is the start of a live allocation (`mem` holds it).
    guarded("exporting an IPC handle", || unsafe {
        sys::cuIpcGetMemHandle(&mut h, base).result()
    })?;
    Ok(IpcExport {
        handle: h.reserved.iter().map(|&c| c as u8).collect(),
        offset: ptr - base,
    })
}

/// Another process's allocation, opened in this process by the IPC handle it exported;
/// the handle is closed when this is dropped (which must happen before the exporter frees
/// the allocation: the data protocol's loan keeps it until then).
pub struct IpcMapping {
    /// The opened allocation's base in this context.
    base: sys::CUdeviceptr,
    /// Its size, when the driver says.
    size: Option<usize>,
    ctx: Arc<CudaContext>,
}

impl IpcMapping {
    /// Opens the allocation of `handle` in `ctx` (bound to this thread).
    pub(crate) fn open(ctx: &Arc<CudaContext>, handle: &[u8]) -> Result<IpcMapping, DeviceError> {
        let mut h = sys::CUipcMemHandle {
            reserved: [0; HANDLE_LEN],
        };
        if handle.len() != h.reserved.len() {
            return Err(DeviceError::IpcHandle {
                want: h.reserved.len(),
                got: handle.len(),
            });
        }
        for (d, s) in h.reserved.iter_mut().zip(handle) {
            *d = *s as std::ffi::c_char;
        }
        let mut base: sys::CUdeviceptr = 0;
        let flags = sys::CUipcMem_flags::CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS as u32;
        // SAFETY: an out-parameter; the handle was made by cuIpcGetMemHandle (the driver
        // checks it).
        guarded("opening a peer's IPC handle", || unsafe {
            sys::cuIpcOpenMemHandle_v2(&mut base, h, flags).result()
        })?;
        let (mut start, mut size): (sys::CUdeviceptr, usize) = (0, 0);
        // SAFETY: out-parameters; `base` was just opened.
        let size = guarded("sizing a peer's allocation", || unsafe {
            sys::cuMemGetAddressRange_v2(&mut start, &mut size, base).result()
        })
        .ok()
        .map(|()| size);
        Ok(IpcMapping {
            base,
            size,
            ctx: ctx.clone(),
        })
    }

    /// The allocation's size in bytes, when the driver says.
    pub fn size(&self) -> Option<usize> {
        self.size
    }

    /// The address of `len` bytes at `offset`, checked against the allocation's size.
    pub(crate) fn at(&self, offset: u64, len: usize) -> Result<sys::CUdeviceptr, DeviceError> {
        let end = offset.checked_add(len as u64);
        match (end, self.size) {
            (Some(end), Some(size)) if end <= size as u64 => Ok(self.base + offset),
            (Some(_), None) => Ok(self.base + offset),
            _ => Err(DeviceError::Cuda(format!(
                "{len} bytes at offset {offset} of a peer's allocation of {:?} bytes",
                self.size
            ))),
        }
    }
}

impl Drop for IpcMapping {
    fn drop(&mut self) {
        let base = self.base;
        let closed = guarded("closing a peer's IPC handle", || {
            self.ctx.bind_to_thread()?;
            // SAFETY: opened by `open`; nothing reads it after this (copies from it are
            // finished before they return).
            unsafe { sys::cuIpcCloseMemHandle(base).result() }
        });
        if let Err(e) = closed {
            tracing::warn!("{e}");
        }
    }
}
