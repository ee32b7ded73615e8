//! The CUDA backend: cudarc with the driver library loaded at run time. Every entry point
//! first checks that a driver can be loaded and returns [`DeviceError::NoDriver`] if not
//! (cudarc itself panics without one), and calls into cudarc are guarded so that a panic
//! (a symbol missing from an old driver) becomes an error too.
//!
//! A CUDA context binds to the calling thread and its calls block: callers drive each GPU
//! from one dedicated thread, never from an async runtime's threads.
//!
//! Raw CUDA stays in this module: other crates see typed owners. [`CudaGpu`] is an opened
//! GPU (context, stream, cuBLAS, pinned staging) with the calls a kernel launcher makes;
//! [`DeviceMem`] is an allocation, freed when dropped; [`IpcMapping`] another process's
//! allocation opened by its IPC handle, closed when dropped; [`Module`] and [`Function`]
//! are loaded kernels, launched with [`KernelArg`]s. No device address leaves this module
//! as a number.
//!
//! - `gpu`: [`CudaGpu`] (memory, copies, launches, GEMM, IPC)
//! - `mem`: [`DeviceMem`]
//! - `ipc`: [`IpcMapping`]
//! - `launch`: [`Module`], [`Function`], [`KernelArg`]
//! - `pinned`: page-locked staging memory and the stream as its copy engine

mod gpu;
mod ipc;
mod launch;
mod mem;
mod pinned;

pub use gpu::CudaGpu;
pub use ipc::IpcMapping;
pub use launch::{Function, KernelArg, Module};
pub use mem::DeviceMem;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use cudarc::driver::CudaContext;

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

/// An error of a CUDA library call, and its driver error code where it has one.
pub(crate) trait CallError: std::fmt::Debug {
    /// The driver's `CUresult`, for errors of the driver API.
    fn code(&self) -> Option<u32> {
        None
    }
}

impl CallError for cudarc::driver::DriverError {
    fn code(&self) -> Option<u32> {
        Some(self.0 as u32)
    }
}

impl CallError for cudarc::cublas::result::CublasError {}

/// Runs a CUDA call: its error, or a panic inside cudarc (a symbol missing from an old
/// driver), becomes a [`DeviceError`] naming `what` was being done — classified by its
/// code: [`DeviceError::Sticky`] for an error that poisons the context,
/// [`DeviceError::NoMemory`] for out of memory, [`DeviceError::Cuda`] otherwise.
pub(crate) fn guarded<T, E: CallError>(
    what: &str,
    f: impl FnOnce() -> Result<T, E>,
) -> Result<T, DeviceError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(match e.code() {
            Some(code) => DeviceError::from_code(what, code),
            None => DeviceError::Cuda(format!("{what}: {e:?}")),
        }),
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

/// The memory of GPU `ordinal` in this process, in bytes (what a fractional device
/// memory limit is a fraction of).
pub fn total_memory(ordinal: u32) -> Result<u64, DeviceError> {
    driver()?;
    let ctx = guarded("creating a context", || CudaContext::new(ordinal as usize))?;
    Ok(guarded("reading the device memory", || ctx.total_mem())? as u64)
}

/// The default device memory limit: 80 % of what is free when the GPU is opened (like
/// dask-cuda's, but of the free memory: another process's, or the CUDA context's own, is
/// not ours to count on), and never more than 80 % of the total.
pub fn default_limit(free: u64, total: u64) -> u64 {
    free.min(total) / 10 * 8
}

impl CudaDevice {
    /// Opens GPU `ordinal` with a memory limit (default: [`default_limit`]).
    pub fn open(ordinal: u32, limit: Option<u64>) -> Result<CudaDevice, DeviceError> {
        driver()?;
        let ctx = guarded("creating a context", || CudaContext::new(ordinal as usize))?;
        let name = guarded("reading the device name", || ctx.name())?;
        let (free, total) = guarded("reading the free device memory", || ctx.mem_get_info())?;
        Ok(CudaDevice {
            ordinal,
            name,
            _ctx: ctx,
            pool: MemoryPool::new(
                DeviceLoc::cuda(ordinal),
                limit.unwrap_or(default_limit(free as u64, total as u64)),
            ),
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
