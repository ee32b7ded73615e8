//! Where ops' outputs live: the device's accelerator, and the memfd arena that same-host
//! peers map.

use std::sync::Arc;

use bytes::Bytes;
use rask_kernels::{Accelerator, OutputAlloc, OutputBuf};
use rask_transport::shm::Arena;
use tracing::{debug, info, warn};

use crate::config::WorkerDevice;

/// The device that runs ops with device plans: a simulated GPU runs them with the
/// kernels' CPU twins, outputs left in its memory (`arena`, accounted in `pool`); a CUDA
/// GPU with its kernels (NVRTC and cuBLAS needed), or, when it cannot, every op runs on
/// the CPU (said once, at start).
pub(crate) fn open_accelerator(
    device: &WorkerDevice,
    arena: &Arena,
    pool: Option<&Arc<rask_device::MemoryPool>>,
) -> Option<Arc<dyn Accelerator>> {
    match device {
        WorkerDevice::Host => None,
        WorkerDevice::Sim { .. } => {
            let memory = Arc::new(ArenaAlloc {
                arena: arena.clone(),
                device: pool.cloned(),
                min_len: 0,
            });
            let plans = rask_kernels::plan::HostPlans::new(device.device(), memory);
            // What a plan needs while it runs is accounted as a GPU's allocations are.
            let plans = match pool {
                Some(pool) => plans.accounting(pool.clone()),
                None => plans,
            };
            Some(Arc::new(plans))
        }
        WorkerDevice::Cuda { index, .. } => {
            let pool = pool?.clone();
            match rask_kernels::gpu::GpuThread::spawn(*index, pool.clone()) {
                Ok(gpu) => {
                    // What happened to its kernels at open: compiled for its architecture,
                    // PTX for an older one, or unavailable (array ops on the CPU).
                    let kernels = gpu.kernels();
                    let line = format!(
                        "cuda:{index} {} ({}, {} MiB limit): {}",
                        gpu.name(),
                        gpu.arch(),
                        pool.limit() >> 20,
                        kernels.describe()
                    );
                    if kernels.ready() {
                        info!("{line}; array ops run on the GPU, their outputs stay in its memory");
                    } else {
                        warn!("{line}");
                    }
                    Some(Arc::new(gpu))
                }
                Err(e) => {
                    warn!("cuda:{index}: array ops run on the CPU: {e}");
                    None
                }
            }
        }
    }
}

/// Ops' large outputs go to the worker's shared-memory arena, so same-host peers read
/// them in place. On a simulated GPU the arena is the GPU's memory, and each output is
/// accounted against its capacity.
pub(crate) struct ArenaAlloc {
    pub(crate) arena: Arena,
    pub(crate) device: Option<Arc<rask_device::MemoryPool>>,
    /// Smaller outputs go to the heap (`None`).
    pub(crate) min_len: usize,
}

impl OutputAlloc for ArenaAlloc {
    fn alloc(&self, len: usize) -> Option<Box<dyn OutputBuf>> {
        if len < self.min_len {
            return None;
        }
        let reservation = match &self.device {
            Some(pool) => match pool.reserve(len as u64) {
                Ok(r) => Some(r),
                Err(e) => {
                    debug!("{e}; the output stays on the host");
                    return None;
                }
            },
            None => None,
        };
        match self.arena.alloc(len) {
            Ok(region) => Some(Box::new(ArenaBuf {
                region,
                reservation,
            })),
            Err(e) => {
                warn!("shared-memory arena cannot grow ({e}); using the heap");
                None
            }
        }
    }
}

pub(crate) struct ArenaBuf {
    pub(crate) region: rask_transport::shm::Region,
    pub(crate) reservation: Option<rask_device::Reservation>,
}

impl AsRef<[u8]> for ArenaBuf {
    fn as_ref(&self) -> &[u8] {
        self.region.as_ref()
    }
}

impl OutputBuf for ArenaBuf {
    fn bytes_mut(&mut self) -> &mut [u8] {
        self.region.as_mut_slice()
    }
    fn freeze(self: Box<Self>) -> Bytes {
        if self.reservation.is_none() {
            return self.region.freeze();
        }
        // The device memory stays accounted for as long as the bytes live.
        Bytes::from_owner(*self)
    }
}
