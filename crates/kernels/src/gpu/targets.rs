//! What a GPU's kernels are compiled to, decided when it is opened: a CUBIN for its own
//! architecture when NVRTC knows it (ptxas checks resources and nothing is compiled by the
//! driver later), else PTX for the newest architecture NVRTC knows below it (the driver
//! compiles PTX for newer GPUs), else nothing — the GPU's array ops then run on the CPU.

/// The targets to try, in order, for a GPU of compute capability `cc` (`(9, 0)`) with an
/// NVRTC that compiles for `known` (`[75, 80, 86, 89, 90, 100, 120]`): `sm_XY` then
/// `compute_XY` when NVRTC knows XY (PTX when a CUBIN does not load, e.g. a driver
/// refusing NVRTC's CUBIN), else `compute_AB` for the newest AB below XY. Empty when NVRTC
/// knows nothing at or below the GPU (a GPU older than NVRTC supports).
pub fn targets(cc: (u32, u32), known: &[u32]) -> Vec<String> {
    let xy = cc.0 * 10 + cc.1;
    match known.iter().copied().filter(|&a| a <= xy).max() {
        Some(a) if a == xy => vec![format!("sm_{xy}"), format!("compute_{xy}")],
        Some(a) => vec![format!("compute_{a}")],
        None => Vec::new(),
    }
}

/// How a GPU's kernels were made ready when it was opened, for its start-up line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kernels {
    /// Every kernel file compiled and loaded for `target`; `tried` lists the targets that
    /// failed first, with why.
    Ready {
        /// `sm_90` (CUBIN) or `compute_90` (PTX the driver compiles).
        target: String,
        /// Targets that failed before, and why.
        tried: Vec<(String, String)>,
    },
    /// No target worked: the GPU's kernels are unavailable and array ops that need them
    /// run on the CPU (GEMMs still run on cuBLAS).
    Unavailable(String),
}

impl Kernels {
    /// Whether plans that launch kernels can run.
    pub fn ready(&self) -> bool {
        matches!(self, Kernels::Ready { .. })
    }

    /// What happened, in words (`kernels: CUBIN for sm_90`).
    pub fn describe(&self) -> String {
        match self {
            Kernels::Ready { target, tried } => {
                let form = if target.starts_with("sm_") {
                    "CUBIN"
                } else {
                    "PTX"
                };
                let mut s = format!("kernels: {form} for {target}");
                for (t, why) in tried {
                    s.push_str(&format!(" ({t} failed: {why})"));
                }
                s
            }
            Kernels::Unavailable(why) => {
                format!("kernels unavailable ({why}): array ops other than GEMM run on the CPU")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NVRTC_13: &[u32] = &[75, 80, 86, 87, 88, 89, 90, 100, 103, 110, 120, 121];

    #[test]
    fn a_known_architecture_gets_a_cubin_then_ptx() {
        assert_eq!(targets((9, 0), NVRTC_13), ["sm_90", "compute_90"]);
        assert_eq!(targets((8, 6), NVRTC_13), ["sm_86", "compute_86"]);
    }

    #[test]
    fn a_gpu_newer_than_nvrtc_gets_ptx_of_the_newest_arch_below_it() {
        assert_eq!(targets((13, 0), NVRTC_13), ["compute_121"]);
        assert_eq!(targets((10, 1), &[80, 90, 100]), ["compute_100"]);
        // Not the newest NVRTC knows: the newest below the GPU.
        assert_eq!(targets((9, 5), &[80, 90, 100]), ["compute_90"]);
    }

    #[test]
    fn a_gpu_older_than_nvrtc_gets_nothing() {
        assert!(targets((7, 0), NVRTC_13).is_empty());
        assert!(targets((9, 0), &[]).is_empty());
    }

    #[test]
    fn what_happened_is_said_in_words() {
        let k = Kernels::Ready {
            target: "compute_90".into(),
            tried: vec![("sm_90".into(), "no binary for GPU".into())],
        };
        assert!(k.ready());
        assert_eq!(
            k.describe(),
            "kernels: PTX for compute_90 (sm_90 failed: no binary for GPU)"
        );
        let u = Kernels::Unavailable("NVRTC 13.0 compiles for sm_75 and newer".into());
        assert!(!u.ready());
        assert!(u.describe().contains("run on the CPU"), "{}", u.describe());
    }
}
