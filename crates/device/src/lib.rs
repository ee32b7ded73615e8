//! Devices and their memory: per-device memory accounting with a limit ([`MemoryPool`]),
//! simulated GPUs, the CUDA backend, pinned staging, NVRTC, spilling to disk and the
//! discovery of real GPUs through NVML. Devices are named by [`DeviceLoc`] (from
//! rask-proto).
//!
//! Values in a device's memory are [`rask_proto::DeviceBytes`]: the one model of device
//! memory the system runs on. Each kind of device implements its
//! [`rask_proto::DeviceData`] where its ops run (rask-kernels: a simulated GPU's bytes, a
//! CUDA GPU's); the memory itself comes from here ([`arena::Arena`] regions for simulated
//! GPUs, `cuda::DeviceMem` allocations for CUDA ones).
//!
//! **Simulated GPUs** stand in for GPUs on machines without one: each has its own
//! capacity, its memory is a memfd [`arena::Arena`] (so a same-host peer can map it, as
//! CUDA IPC maps device memory), kernels run on the CPU, and NVLink peers come from a
//! configurable topology. Everything they report says "simulated".
//!
//! **CUDA** (feature `cuda`, on by default): cudarc with the driver loaded at run time, so
//! this builds and starts on machines with no CUDA; without a driver every entry point
//! returns [`DeviceError::NoDriver`], never panics.

#![warn(missing_docs)]

pub mod arena;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod discover;
pub mod fault;
#[cfg(feature = "cuda")]
pub mod nvrtc;
pub mod sim;
pub mod spill;
#[cfg(feature = "cuda")]
mod staging;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use rask_proto::{DType, DeviceKind, DeviceLoc};

/// Errors of devices.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The CUDA driver library cannot be loaded.
    #[error("no CUDA driver found: {0}")]
    NoDriver(String),
    /// NVML finds no GPU (or cannot be loaded).
    #[error("no GPUs: {0}")]
    NoGpus(String),
    /// A [`MemoryPool`] cannot hold what was asked of it.
    #[error(
        "{device} is out of memory: {requested} bytes requested, {available} of {limit} available"
    )]
    OutOfMemory {
        /// The device whose pool is full.
        device: DeviceLoc,
        /// Bytes asked for.
        requested: u64,
        /// Bytes still free in the pool when asked.
        available: u64,
        /// The pool's limit in bytes.
        limit: u64,
    },
    /// A CUDA call failed (what was being done, and the driver's error).
    #[error("CUDA: {0}")]
    Cuda(String),
    /// A CUDA error that leaves the GPU's context unusable for good
    /// ([`fault::FaultKind::Sticky`]): nothing will run on it again in this process.
    #[error("the GPU failed for good while {what}: {} (only a new process can use it again)", fault::describe(*.code))]
    Sticky {
        /// What was being done when the error was seen (errors of kernels show at the
        /// next call that waits for them).
        what: String,
        /// The CUDA error code.
        code: u32,
    },
    /// The GPU itself has no memory for what was asked (`CUDA_ERROR_OUT_OF_MEMORY`).
    #[error("{what}: the GPU is out of memory (CUDA_ERROR_OUT_OF_MEMORY)")]
    NoMemory {
        /// What was being done.
        what: String,
    },
    /// A CUDA IPC handle of the wrong length (from a peer).
    #[error("a CUDA IPC handle is {want} bytes, got {got}")]
    IpcHandle {
        /// The length of a `CUipcMemHandle`.
        want: usize,
        /// The length received.
        got: usize,
    },
    /// NVRTC cannot be loaded.
    #[error("NVRTC is not available: {0}")]
    NoNvrtc(String),
    /// A CUDA source does not compile: NVRTC's log.
    #[error("{name} does not compile:\n{log}")]
    Compile {
        /// The source's name (its file name, or the kernel's registered name).
        name: String,
        /// NVRTC's compile log, or which NVRTC call failed.
        log: String,
    },
    /// An operating-system call failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl DeviceError {
    /// What this error means for its device: sticky (leave), out of memory (spill and
    /// retry) or other (this call failed).
    pub fn kind(&self) -> fault::FaultKind {
        match self {
            DeviceError::Sticky { .. } => fault::FaultKind::Sticky,
            DeviceError::OutOfMemory { .. } | DeviceError::NoMemory { .. } => {
                fault::FaultKind::OutOfMemory
            }
            _ => fault::FaultKind::Other,
        }
    }

    /// The error a CUDA call returned with `code`, classified ([`fault::classify`]).
    pub fn from_code(what: &str, code: u32) -> DeviceError {
        match fault::classify(code) {
            fault::FaultKind::Sticky => DeviceError::Sticky {
                what: what.to_string(),
                code,
            },
            fault::FaultKind::OutOfMemory => DeviceError::NoMemory {
                what: what.to_string(),
            },
            fault::FaultKind::Other => {
                DeviceError::Cuda(format!("{what}: {}", fault::describe(code)))
            }
        }
    }
}

/// Bytes in use on one device, against a limit.
#[derive(Debug)]
pub struct MemoryPool {
    device: DeviceLoc,
    limit: u64,
    used: AtomicU64,
}

impl MemoryPool {
    /// A pool of `limit` bytes for `device`.
    pub fn new(device: DeviceLoc, limit: u64) -> Arc<MemoryPool> {
        Arc::new(MemoryPool {
            device,
            limit,
            used: AtomicU64::new(0),
        })
    }

    /// Reserves `n` bytes, or says how much is left.
    pub fn reserve(self: &Arc<Self>, n: u64) -> Result<Reservation, DeviceError> {
        let mut cur = self.used.load(Ordering::Relaxed);
        loop {
            let next = cur.checked_add(n).filter(|&v| v <= self.limit);
            let Some(next) = next else {
                return Err(DeviceError::OutOfMemory {
                    device: self.device,
                    requested: n,
                    available: self.limit.saturating_sub(cur),
                    limit: self.limit,
                });
            };
            match self
                .used
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    return Ok(Reservation {
                        pool: self.clone(),
                        bytes: n,
                    })
                }
                Err(actual) => cur = actual,
            }
        }
    }

    /// Bytes reserved now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Bytes that may be reserved at once.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The device whose memory this accounts.
    pub fn device(&self) -> DeviceLoc {
        self.device
    }
}

/// Bytes reserved in a [`MemoryPool`], given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    pool: Arc<MemoryPool>,
    bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.pool.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests;
