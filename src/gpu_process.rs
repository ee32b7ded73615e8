//! How the worker process of one real GPU is started, by `cuda-worker` and by
//! `LocalCUDACluster` alike: it sees only its GPU, named by UUID (NVML's and CUDA's
//! default indices may differ; a UUID names one GPU whatever the order), which is then
//! its CUDA device 0, and it runs on the CPUs close to the GPU. This module plans; it
//! starts nothing.

use rask_device::discover::GpuInfo;
use rask_worker::WorkerDevice;

/// The worker process of one GPU.
#[derive(Clone, Debug, PartialEq)]
pub struct GpuProcess {
    /// What the worker drives: CUDA's device 0, the only GPU it sees.
    pub device: WorkerDevice,
    /// Set in the worker's environment: `CUDA_VISIBLE_DEVICES` (the GPU's UUID) and
    /// `CUDA_DEVICE_ORDER=PCI_BUS_ID`.
    pub env: Vec<(String, String)>,
    /// The CPUs the worker runs on; empty: wherever its launcher may.
    pub cpus: Vec<usize>,
}

impl GpuProcess {
    /// The worker of `gpu`, with `memory_limit` bytes of device memory (default 80 % of
    /// the GPU's), on the CPUs near the GPU among `allowed` (see [`crate::affinity::near`]).
    pub fn new(gpu: &GpuInfo, memory_limit: Option<u64>, allowed: Option<&[usize]>) -> Self {
        GpuProcess {
            device: WorkerDevice::Cuda {
                index: 0,
                memory_limit,
            },
            env: vec![
                ("CUDA_VISIBLE_DEVICES".into(), gpu.uuid.clone()),
                ("CUDA_DEVICE_ORDER".into(), "PCI_BUS_ID".into()),
            ],
            cpus: crate::affinity::near(&gpu.cpu_affinity, allowed),
        }
    }
}
