//! GPU discovery through NVML: what a `cuda-worker` needs to start one worker per GPU
//! (name, UUID, memory, PCI bus id, NVLink peers, CPU affinity). Without NVML (no NVIDIA
//! driver) the answer is a clean [`DeviceError::NoGpus`].

use crate::DeviceError;

/// One GPU as NVML reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuInfo {
    /// NVML's index (PCI bus order).
    pub index: u32,
    pub name: String,
    pub uuid: String,
    pub memory_total: u64,
    pub pci_bus_id: String,
    /// NVML indices of GPUs this one reaches over NVLink.
    pub nvlink_peers: Vec<u32>,
    /// CPUs close to this GPU.
    pub cpu_affinity: Vec<usize>,
}

/// The GPUs of this machine.
#[cfg(feature = "cuda")]
pub fn gpus() -> Result<Vec<GpuInfo>, DeviceError> {
    use nvml_wrapper::enum_wrappers::device::{P2pCapabilitiesIndex, P2pStatus};
    let nvml = nvml_wrapper::Nvml::init()
        .map_err(|e| DeviceError::NoGpus(format!("NVML is not available ({e})")))?;
    let err = |what: &str, e: nvml_wrapper::error::NvmlError| {
        DeviceError::NoGpus(format!("NVML could not {what}: {e}"))
    };
    let n = nvml.device_count().map_err(|e| err("count devices", e))?;
    if n == 0 {
        return Err(DeviceError::NoGpus("NVML reports no devices".into()));
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut out = Vec::new();
    for i in 0..n {
        let d = nvml
            .device_by_index(i)
            .map_err(|e| err("open a device", e))?;
        let mut peers = Vec::new();
        for j in 0..n {
            if j == i {
                continue;
            }
            if let Ok(other) = nvml.device_by_index(j) {
                if matches!(
                    d.p2p_status(&other, P2pCapabilitiesIndex::NvLink),
                    Ok(P2pStatus::Ok)
                ) {
                    peers.push(j);
                }
            }
        }
        let words = cpus.div_ceil(64).max(1);
        let mask = d.cpu_affinity(words).unwrap_or_default();
        let cpu_affinity = (0..cpus)
            .filter(|c| mask.get(c / 64).is_some_and(|w| (w >> (c % 64)) & 1 == 1))
            .collect();
        out.push(GpuInfo {
            index: i,
            name: d.name().map_err(|e| err("read a name", e))?,
            uuid: d.uuid().map_err(|e| err("read a UUID", e))?,
            memory_total: d.memory_info().map_err(|e| err("read memory", e))?.total,
            pci_bus_id: d.pci_info().map_err(|e| err("read the PCI bus", e))?.bus_id,
            nvlink_peers: peers,
            cpu_affinity,
        });
    }
    Ok(out)
}

/// The GPUs of this machine (this build has no CUDA support).
#[cfg(not(feature = "cuda"))]
pub fn gpus() -> Result<Vec<GpuInfo>, DeviceError> {
    Err(DeviceError::NoGpus(
        "this build has no CUDA support (feature `cuda`)".into(),
    ))
}
