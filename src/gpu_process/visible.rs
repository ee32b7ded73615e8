//! Which CUDA devices of this machine get a worker: every GPU, or those
//! `CUDA_VISIBLE_DEVICES` names, and a GPU in MIG mode as its MIG instances. Shared by
//! `cuda-worker` and `LocalCUDACluster`, so that both read the variable alike.
//!
//! Pure: it is given what NVML found and the variable's value, and looks at nothing else.
//!
//! MIG: a CUDA process uses one MIG instance, named by its `MIG-…` UUID in
//! `CUDA_VISIBLE_DEVICES`, so a GPU with MIG on gets one worker per instance, each with
//! the instance's memory. NVIDIA's MIG user guide lists, among its application
//! considerations, that CUDA IPC across GPU instances and peer-to-peer transfers (PCIe
//! and NVLink) are not supported on MIG devices: a MIG instance has no NVLink peers here,
//! a whole GPU's NVLink peers in MIG mode are dropped, and a MIG instance's worker is
//! told not to use CUDA IPC ([`GpuTarget::ipc`]).

use rask_device::discover::{GpuInfo, MigInfo};

use super::LaunchError;

/// What one GPU worker drives: a whole GPU, or one MIG instance of it.
#[derive(Clone, Debug, PartialEq)]
pub struct GpuTarget {
    /// The GPU, or a MIG instance's parent: its name, index, PCI bus and nearby CPUs
    /// are the worker's. Its `nvlink_peers` are only GPUs that are not in MIG mode.
    pub gpu: GpuInfo,
    /// The MIG instance, when the GPU's MIG mode is on.
    pub mig: Option<MigInfo>,
}

impl GpuTarget {
    /// The UUID that names it in `CUDA_VISIBLE_DEVICES`: `GPU-…`, or `MIG-…`.
    pub fn uuid(&self) -> &str {
        self.mig.as_ref().map_or(&self.gpu.uuid, |m| &m.uuid)
    }

    /// Its memory in bytes (a MIG instance's own): what a fractional or default device
    /// memory limit is a fraction of.
    pub fn memory_total(&self) -> u64 {
        self.mig
            .as_ref()
            .map_or(self.gpu.memory_total, |m| m.memory_total)
    }

    /// NVML indices of the GPUs it reaches over NVLink: none for a MIG instance.
    pub fn nvlink_peers(&self) -> &[u32] {
        match self.mig {
            Some(_) => &[],
            None => &self.gpu.nvlink_peers,
        }
    }

    /// Whether its worker may exchange device memory with same-host peers by CUDA IPC:
    /// not a MIG instance's.
    pub fn ipc(&self) -> bool {
        self.mig.is_none()
    }

    /// How cuda-worker names it: `cuda:0 (NVIDIA A100…)`, `cuda:0 MIG 2 (NVIDIA A100…)`.
    pub fn label(&self) -> String {
        match &self.mig {
            None => format!("cuda:{} ({})", self.gpu.index, self.gpu.name),
            Some(m) => format!(
                "cuda:{} MIG {} ({})",
                self.gpu.index, m.index, self.gpu.name
            ),
        }
    }

    /// The end of its worker's name: `gpu0`, `gpu0-mig2`.
    pub fn name_suffix(&self) -> String {
        match &self.mig {
            None => format!("gpu{}", self.gpu.index),
            Some(m) => format!("gpu{}-mig{}", self.gpu.index, m.index),
        }
    }
}

/// The devices of `gpu`: its MIG instances when it has any, else the whole GPU.
fn targets_of(gpu: &GpuInfo) -> Vec<GpuTarget> {
    if gpu.mig.is_empty() {
        return vec![GpuTarget {
            gpu: gpu.clone(),
            mig: None,
        }];
    }
    gpu.mig
        .iter()
        .map(|m| GpuTarget {
            gpu: gpu.clone(),
            mig: Some(m.clone()),
        })
        .collect()
}

/// The devices `CUDA_VISIBLE_DEVICES` (when set) lets this machine's workers use, in its
/// order; every device of every GPU when it is unset. Entries, comma-separated, are NVML
/// indices (PCI bus order, as with `CUDA_DEVICE_ORDER=PCI_BUS_ID`), GPU UUIDs (`GPU-…`)
/// or MIG instance UUIDs (`MIG-…`); a UUID may be shortened to a prefix that names one
/// device. An index or GPU UUID of a GPU in MIG mode selects all of its MIG instances
/// (one worker each; a single CUDA process given it would see only one). An entry that
/// names nothing, names a device twice or hides every GPU is an error naming it (CUDA
/// itself would silently stop at it).
pub fn visible_devices(
    gpus: Vec<GpuInfo>,
    visible: Option<&str>,
) -> Result<Vec<GpuTarget>, LaunchError> {
    // Peer access is not supported with MIG: a GPU in MIG mode is nobody's NVLink peer.
    let in_mig: Vec<u32> = gpus
        .iter()
        .filter(|g| !g.mig.is_empty())
        .map(|g| g.index)
        .collect();
    let gpus: Vec<GpuInfo> = gpus
        .into_iter()
        .map(|mut g| {
            g.nvlink_peers.retain(|p| !in_mig.contains(p));
            g
        })
        .collect();
    let Some(visible) = visible else {
        return Ok(gpus.iter().flat_map(targets_of).collect());
    };
    let bad =
        |why: String| LaunchError::BadOption(format!("CUDA_VISIBLE_DEVICES={visible:?}: {why}"));
    let entries: Vec<&str> = visible
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    if entries.is_empty() || entries == ["-1"] {
        return Err(bad(
            "it hides every GPU of this machine; unset it to use them all".into(),
        ));
    }
    let machine = || {
        gpus.iter()
            .flat_map(targets_of)
            .map(|t| format!("{} {}", t.label(), t.uuid()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut chosen: Vec<GpuTarget> = Vec::new();
    for e in entries {
        let found: Vec<GpuTarget> = if let Ok(i) = e.parse::<u32>() {
            match gpus.iter().find(|g| g.index == i) {
                Some(g) => targets_of(g),
                None => {
                    return Err(bad(format!(
                        "{e:?} names no GPU of this machine (it has {})",
                        machine()
                    )))
                }
            }
        } else if e.starts_with("GPU-") {
            match gpus
                .iter()
                .filter(|g| g.uuid.starts_with(e))
                .collect::<Vec<_>>()
                .as_slice()
            {
                [g] => targets_of(g),
                [] => {
                    return Err(bad(format!(
                        "{e:?} names no GPU of this machine (it has {})",
                        machine()
                    )))
                }
                _ => {
                    return Err(bad(format!(
                        "{e:?} is a prefix of more than one GPU's UUID"
                    )))
                }
            }
        } else if e.starts_with("MIG-") {
            let instances: Vec<GpuTarget> = gpus
                .iter()
                .flat_map(targets_of)
                .filter(|t| t.mig.as_ref().is_some_and(|m| m.uuid.starts_with(e)))
                .collect();
            match instances.len() {
                1 => instances,
                0 => {
                    return Err(bad(format!(
                        "{e:?} names no MIG instance of this machine (it has {})",
                        machine()
                    )))
                }
                _ => {
                    return Err(bad(format!(
                        "{e:?} is a prefix of more than one MIG instance's UUID"
                    )))
                }
            }
        } else {
            return Err(bad(format!(
                "{e:?} is neither a GPU index, a GPU UUID (GPU-…) nor a MIG instance UUID (MIG-…)"
            )));
        };
        for t in found {
            if chosen.iter().any(|c| c.uuid() == t.uuid()) {
                return Err(bad(format!("{e:?} names {} a second time", t.label())));
            }
            chosen.push(t);
        }
    }
    Ok(chosen)
}
