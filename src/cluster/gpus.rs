//! The GPUs of a local cluster ([`LocalCUDACluster`]): one worker process per real GPU or
//! MIG instance, or per simulated GPU. Which real devices get a worker is decided as
//! `cuda-worker` decides it ([`crate::gpu_process::visible_devices`]: every GPU, or those
//! `CUDA_VISIBLE_DEVICES` names, a GPU in MIG mode as its instances), and each worker is
//! started as `cuda-worker` starts it ([`GpuProcess`]).
//!
//! This module configures and plans; starting and waiting for the processes is the
//! builder's (`super`).

use rask_device::discover::GpuInfo;
use rask_device::DeviceError;

use super::{LocalCluster, LocalClusterBuilder};
use crate::gpu_process::{GpuProcess, GpuTarget};
use crate::ClusterError;

/// A local cluster with one worker per GPU, like dask-cuda's: real GPUs found through
/// NVML, or simulated ones.
///
/// ```no_run
/// # fn main() -> Result<(), rask::Error> {
/// let cluster = rask::LocalCUDACluster::sim(4, 1 << 30)
///     .nvlink(rask::Topology::pairs(4))
///     .build()?;
/// let client = rask::Client::for_cluster(cluster)?;
/// # Ok(()) }
/// ```
pub struct LocalCUDACluster;

impl LocalCUDACluster {
    /// One worker per CUDA GPU of this machine, or per MIG instance of a GPU in MIG mode;
    /// only those `CUDA_VISIBLE_DEVICES` names when it is set (`build` fails where there
    /// is none).
    pub fn builder() -> LocalClusterBuilder {
        LocalCluster::builder().cuda_gpus(None)
    }

    /// One worker per simulated GPU of `memory` bytes.
    pub fn sim(n: u32, memory: u64) -> LocalClusterBuilder {
        LocalCluster::builder().sim_gpus(n, memory)
    }
}

/// The GPUs of a [`LocalCUDACluster`]: one worker each.
#[derive(Clone, Debug)]
pub(super) enum Gpus {
    /// The real GPUs of this machine, found through NVML when the cluster starts.
    Cuda {
        device_memory_limit: Option<u64>,
        /// What discovery found when the cluster started, `CUDA_VISIBLE_DEVICES`
        /// applied: worker `i` drives `found[i]`.
        found: Vec<GpuTarget>,
    },
    /// Simulated GPUs.
    Sim {
        n: u32,
        memory: u64,
        topology: rask_device::sim::Topology,
    },
}

/// One worker's device: `--device`, `--device-memory-limit`, `--nvlink-peers`.
pub(super) struct DeviceArgs {
    pub(super) device: rask_worker::WorkerDevice,
    pub(super) nvlink: Vec<u32>,
}

/// The devices a cluster of real GPUs starts workers for: those `discover` finds (NVML),
/// narrowed by `visible` (`CUDA_VISIBLE_DEVICES`) as cuda-worker narrows them.
pub(super) fn cuda_targets(
    discover: impl FnOnce() -> Result<Vec<GpuInfo>, DeviceError>,
    visible: Option<&str>,
) -> Result<Vec<GpuTarget>, ClusterError> {
    let gpus = discover().map_err(ClusterError::NoGpus)?;
    crate::gpu_process::visible_devices(gpus, visible)
        .map_err(|e| ClusterError::VisibleDevices(e.to_string()))
}

/// The `rask worker` options of a GPU worker process: its transport (tcp when it may not
/// use CUDA IPC, else `asked`) and its device.
pub(super) fn gpu_worker_args(
    p: &GpuProcess,
    asked: Option<rask_transport::TransportMode>,
) -> Vec<String> {
    let mut args = Vec::new();
    if let Some(t) = p.transport(asked) {
        args.extend(["--transport".to_string(), t.to_string()]);
    }
    args.extend(crate::cli::device_args(&p.device, &p.nvlink));
    args
}

impl LocalClusterBuilder {
    /// One worker per simulated GPU of `memory` bytes (no NVLink unless
    /// [`LocalClusterBuilder::nvlink`]); workers are processes, as dask-cuda's are.
    pub fn sim_gpus(mut self, n: u32, memory: u64) -> Self {
        self.gpus = Some(Gpus::Sim {
            n,
            memory,
            topology: rask_device::sim::Topology::none(),
        });
        self.n_workers = n as usize;
        self.processes = true;
        self
    }

    /// Which simulated GPUs are NVLink peers.
    pub fn nvlink(mut self, topology: rask_device::sim::Topology) -> Self {
        if let Some(Gpus::Sim { topology: t, .. }) = &mut self.gpus {
            *t = topology;
        }
        self
    }

    /// One worker per CUDA GPU of this machine, or per MIG instance of a GPU in MIG mode
    /// (found through NVML when the cluster starts; only those `CUDA_VISIBLE_DEVICES`
    /// names when it is set, read as `cuda-worker` reads it; `build` fails where there is
    /// none), each limited to `device_memory_limit` bytes (default 80 % of its device's
    /// memory).
    pub fn cuda_gpus(mut self, device_memory_limit: Option<u64>) -> Self {
        self.gpus = Some(Gpus::Cuda {
            device_memory_limit,
            found: Vec::new(),
        });
        self.processes = true;
        self
    }

    /// Finds the real GPUs to start workers for (when the cluster has real GPUs): one
    /// worker each.
    pub(super) fn find_gpus(&mut self) -> Result<(), ClusterError> {
        if let Some(Gpus::Cuda { found, .. }) = &mut self.gpus {
            let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
            *found = cuda_targets(rask_device::discover::gpus, visible.as_deref())?;
            self.n_workers = found.len();
        }
        Ok(())
    }

    /// The worker process of real GPU worker `i`, when the cluster has real GPUs: seeing
    /// only its device, on the CPUs near its GPU among those this process may use.
    pub(super) fn gpu_process(&self, i: usize) -> Option<GpuProcess> {
        let Some(Gpus::Cuda {
            device_memory_limit,
            found,
        }) = &self.gpus
        else {
            return None;
        };
        let target = found
            .get(i)
            .expect("invariant: build found one device per worker");
        let allowed = crate::affinity::allowed();
        Some(GpuProcess::new(
            target,
            *device_memory_limit,
            allowed.as_deref(),
        ))
    }

    /// How an error names worker `i`'s device: `cuda:0 MIG 3 (NVIDIA H100 …)`, `sim:2`.
    pub(super) fn device_label(&self, i: usize) -> Option<String> {
        if let Some(Gpus::Cuda { found, .. }) = &self.gpus {
            return found.get(i).map(GpuTarget::label);
        }
        self.device_of(i).map(|d| d.device.label())
    }

    /// The device of worker `i`.
    pub(super) fn device_of(&self, i: usize) -> Option<DeviceArgs> {
        match self.gpus.as_ref()? {
            Gpus::Sim {
                n,
                memory,
                topology,
            } => {
                let (i, n) = (i as u32, *n);
                Some(DeviceArgs {
                    device: rask_worker::WorkerDevice::Sim {
                        index: i,
                        memory: *memory,
                    },
                    nvlink: topology.peers(i, n),
                })
            }
            Gpus::Cuda {
                device_memory_limit,
                found,
            } => Some(DeviceArgs {
                // In a worker thread (`processes(false)`), CUDA's device `i`; a worker
                // process sees only its own device (see `gpu_process`).
                device: rask_worker::WorkerDevice::Cuda {
                    index: i as u32,
                    memory_limit: *device_memory_limit,
                },
                nvlink: found
                    .get(i)
                    .map_or_else(Vec::new, |t| t.nvlink_peers().to_vec()),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    //! A cluster of real GPUs on a made-up machine (a GPU in MIG mode with two instances,
    //! a whole GPU): which devices get a worker, and the options each is started with.

    use super::*;
    use rask_device::discover::MigInfo;

    const GIB: u64 = 1 << 30;

    fn machine() -> Vec<GpuInfo> {
        let gpu = |index: u32, uuid: &str, mig: Vec<MigInfo>| GpuInfo {
            index,
            name: "NVIDIA H100 80GB HBM3".into(),
            uuid: uuid.into(),
            memory_total: 80 * GIB,
            pci_bus_id: format!("00000000:{:02x}:00.0", 0x18 + index),
            nvlink_peers: vec![1 - index],
            cpu_affinity: vec![index as usize],
            mig,
        };
        let instance = |index: u32, uuid: &str| MigInfo {
            index,
            uuid: uuid.into(),
            memory_total: 20 * GIB,
        };
        vec![
            gpu(
                0,
                "GPU-11111111-0000-0000-0000-000000000000",
                vec![
                    instance(3, "MIG-aaaaaaaa-0000-0000-0000-000000000000"),
                    instance(4, "MIG-bbbbbbbb-0000-0000-0000-000000000000"),
                ],
            ),
            gpu(1, "GPU-22222222-0000-0000-0000-000000000000", Vec::new()),
        ]
    }

    fn uuids(targets: &[GpuTarget]) -> Vec<&str> {
        targets.iter().map(|t| t.uuid()).collect()
    }

    #[test]
    fn the_cluster_starts_workers_for_what_cuda_visible_devices_names() {
        let all = cuda_targets(|| Ok(machine()), None).unwrap();
        assert_eq!(
            uuids(&all),
            [
                "MIG-aaaaaaaa-0000-0000-0000-000000000000",
                "MIG-bbbbbbbb-0000-0000-0000-000000000000",
                "GPU-22222222-0000-0000-0000-000000000000"
            ]
        );
        let some = cuda_targets(|| Ok(machine()), Some("1,MIG-bbbb")).unwrap();
        assert_eq!(
            uuids(&some),
            [
                "GPU-22222222-0000-0000-0000-000000000000",
                "MIG-bbbbbbbb-0000-0000-0000-000000000000"
            ]
        );
        let some = cuda_targets(|| Ok(machine()), Some("GPU-1111")).unwrap();
        assert_eq!(
            uuids(&some),
            [
                "MIG-aaaaaaaa-0000-0000-0000-000000000000",
                "MIG-bbbbbbbb-0000-0000-0000-000000000000"
            ]
        );
        let e = cuda_targets(|| Ok(machine()), Some("2")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("CUDA_VISIBLE_DEVICES=\"2\": \"2\" names no GPU of this machine"),
            "{e}"
        );
        let e = cuda_targets(
            || Err(DeviceError::NoGpus("NVML reports no devices".into())),
            Some("0"),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "no GPUs: NVML reports no devices; a LocalCUDACluster needs a GPU here, or \
             simulated GPUs (sim_gpus)"
        );
    }

    #[test]
    fn each_worker_sees_its_device_and_a_mig_instance_uses_tcp() {
        let mut b = LocalCluster::builder().cuda_gpus(Some(8 * GIB));
        if let Some(Gpus::Cuda { found, .. }) = &mut b.gpus {
            *found = cuda_targets(|| Ok(machine()), None).unwrap();
        }
        let started: Vec<(String, Vec<String>)> = (0..3)
            .map(|i| {
                let p = b.gpu_process(i).unwrap();
                (p.env[0].1.clone(), gpu_worker_args(&p, None))
            })
            .collect();
        let device = ["--device-memory-limit", "8589934592", "--device", "cuda:0"];
        let with = |head: &[&str], tail: &[&str]| -> Vec<String> {
            head.iter()
                .chain(&device)
                .chain(tail)
                .map(|s| s.to_string())
                .collect()
        };
        assert_eq!(
            started,
            [
                (
                    "MIG-aaaaaaaa-0000-0000-0000-000000000000".to_string(),
                    with(&["--transport", "tcp"], &[])
                ),
                (
                    "MIG-bbbbbbbb-0000-0000-0000-000000000000".to_string(),
                    with(&["--transport", "tcp"], &[])
                ),
                // GPU 1's NVLink peer is in MIG mode: no peers.
                (
                    "GPU-22222222-0000-0000-0000-000000000000".to_string(),
                    with(&[], &[])
                ),
            ]
        );
        // The cluster's transport reaches whole GPUs only.
        let p = b.gpu_process(2).unwrap();
        assert_eq!(
            gpu_worker_args(&p, Some(rask_transport::TransportMode::Shm))[..2],
            ["--transport", "shm"]
        );
        assert!(b.device_of(0).unwrap().nvlink.is_empty());
    }
}
