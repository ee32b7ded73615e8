//! GPU discovery through NVML: what a `cuda-worker` needs to start one worker per GPU
//! (name, UUID, memory, PCI bus id, NVLink peers, CPU affinity). Without NVML (no NVIDIA
//! driver) the answer is a clean [`DeviceError::NoGpus`].

use crate::DeviceError;

/// One GPU as NVML reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuInfo {
    /// NVML's index (PCI bus order).
    pub index: u32,
    /// The product name (`NVIDIA A100-SXM4-80GB`).
    pub name: String,
    /// The GPU's UUID (`GPU-…`), by which `CUDA_VISIBLE_DEVICES` selects it whatever the
    /// numbering.
    pub uuid: String,
    /// Device memory in bytes.
    pub memory_total: u64,
    /// The PCI bus id (`00000000:07:00.0`).
    pub pci_bus_id: String,
    /// NVML indices of GPUs this one reaches over NVLink.
    pub nvlink_peers: Vec<u32>,
    /// CPUs close to this GPU.
    pub cpu_affinity: Vec<usize>,
    /// Its MIG instances, when MIG mode is on (a CUDA process sees one of them as its
    /// device, chosen by UUID in `CUDA_VISIBLE_DEVICES`); empty otherwise.
    pub mig: Vec<MigInfo>,
}

/// A MIG instance (a slice of a GPU with its own memory and compute) as NVML reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigInfo {
    /// Its index among its GPU's MIG devices.
    pub index: u32,
    /// Its UUID (`MIG-…`), by which `CUDA_VISIBLE_DEVICES` selects it.
    pub uuid: String,
    /// Its memory in bytes.
    pub memory_total: u64,
}

/// The GPUs of this machine. A GPU NVML cannot read (fallen off the bus, being reset,
/// not permitted) is skipped with a warning naming it and why; only when no GPU can be
/// read is this an error.
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
    // Every CPU of the machine, not only those this process may use: a GPU's CPUs may lie
    // outside this process's set (under taskset or a cpuset).
    let cpus = possible_cpus();
    readable(n, |i| {
        let d = nvml
            .device_by_index(i)
            .map_err(|e| err("open the device", e))?;
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
        let cpu_affinity = mask_cpus(&d.cpu_affinity(words).unwrap_or_default());
        Ok(GpuInfo {
            index: i,
            name: d.name().map_err(|e| err("read a name", e))?,
            uuid: d.uuid().map_err(|e| err("read a UUID", e))?,
            memory_total: d.memory_info().map_err(|e| err("read memory", e))?.total,
            pci_bus_id: d.pci_info().map_err(|e| err("read the PCI bus", e))?.bus_id,
            nvlink_peers: peers,
            cpu_affinity,
            mig: mig_instances(&d),
        })
    })
}

/// GPUs `0..n` as `read` finds them: one it cannot read is skipped with a warning naming
/// it and why; an error only when none can be read (naming each and why).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn readable(
    n: u32,
    mut read: impl FnMut(u32) -> Result<GpuInfo, DeviceError>,
) -> Result<Vec<GpuInfo>, DeviceError> {
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for i in 0..n {
        match read(i) {
            Ok(g) => out.push(g),
            Err(e) => {
                tracing::warn!("GPU {i}: {e}; no worker for it");
                skipped.push(format!("GPU {i}: {e}"));
            }
        }
    }
    if out.is_empty() {
        return Err(DeviceError::NoGpus(format!(
            "NVML cannot read any of the {n} GPUs ({})",
            skipped.join("; ")
        )));
    }
    Ok(out)
}

/// The MIG instances of GPU `d`, when its MIG mode is on.
#[cfg(feature = "cuda")]
fn mig_instances(d: &nvml_wrapper::Device<'_>) -> Vec<MigInfo> {
    let on = d.mig_mode().is_ok_and(|m| m.current == 1);
    if !on {
        return Vec::new();
    }
    let slots = d.mig_device_count().unwrap_or(0);
    (0..slots)
        .filter_map(|index| {
            // Slots without an instance are absent (NotFound).
            let m = d.mig_device_by_index(index).ok()?;
            Some(MigInfo {
                index,
                uuid: m.uuid().ok()?,
                memory_total: m.memory_info().ok()?.total,
            })
        })
        .collect()
}

/// How many CPU ids the machine may have (`/sys/devices/system/cpu/possible`, e.g.
/// `0-127`: 128), or the CPUs this process may use when that cannot be read.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn possible_cpus() -> usize {
    std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .and_then(|s| highest_cpu(&s))
        .map(|max| max + 1)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The highest id of a CPU list such as `0-63,128-191`.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn highest_cpu(list: &str) -> Option<usize> {
    list.trim()
        .split(',')
        .filter_map(|r| r.rsplit('-').next()?.trim().parse().ok())
        .max()
}

/// The CPUs set in an affinity mask (64 CPUs per word, lowest first).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn mask_cpus(mask: &[u64]) -> Vec<usize> {
    mask.iter()
        .enumerate()
        .flat_map(|(w, bits)| {
            (0..64)
                .filter(move |b| (bits >> b) & 1 == 1)
                .map(move |b| w * 64 + b)
        })
        .collect()
}

/// The GPUs of this machine (this build has no CUDA support).
#[cfg(not(feature = "cuda"))]
pub fn gpus() -> Result<Vec<GpuInfo>, DeviceError> {
    Err(DeviceError::NoGpus(
        "this build has no CUDA support (feature `cuda`)".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(index: u32) -> GpuInfo {
        GpuInfo {
            index,
            name: "NVIDIA H200".into(),
            uuid: format!("GPU-{index}"),
            memory_total: 141 << 30,
            pci_bus_id: format!("00000000:{index:02x}:00.0"),
            nvlink_peers: Vec::new(),
            cpu_affinity: Vec::new(),
            mig: Vec::new(),
        }
    }

    #[test]
    fn a_gpu_that_cannot_be_read_is_skipped_and_none_readable_is_an_error() {
        let lost = |what: &str| DeviceError::NoGpus(format!("NVML could not {what}: GPU is lost"));
        let found = readable(4, |i| match i {
            1 => Err(lost("open the device")),
            3 => Err(lost("read memory")),
            i => Ok(gpu(i)),
        })
        .unwrap();
        assert_eq!(found, vec![gpu(0), gpu(2)]);
        let e = readable(2, |_| Err(lost("open the device"))).unwrap_err();
        let m = e.to_string();
        assert!(m.contains("any of the 2 GPUs"), "{m}");
        assert!(m.contains("GPU 0: ") && m.contains("GPU 1: "), "{m}");
        assert!(m.contains("GPU is lost"), "{m}");
    }

    #[test]
    fn affinity_masks_and_cpu_lists_name_every_cpu() {
        assert_eq!(highest_cpu("0-127\n"), Some(127));
        assert_eq!(highest_cpu("0-63,128-191"), Some(191));
        assert_eq!(highest_cpu("0"), Some(0));
        assert_eq!(highest_cpu(""), None);
        // CPUs 1, 63, 64 and 130: beyond any count of CPUs this process may use.
        let mask = [(1u64 << 1) | (1 << 63), 1, 1 << 2];
        assert_eq!(mask_cpus(&mask), vec![1, 63, 64, 130]);
        assert!(possible_cpus() >= 1);
    }
}
