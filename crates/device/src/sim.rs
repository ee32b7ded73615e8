//! Simulated GPUs: devices with their own capacity whose memory is a memfd arena (mappable
//! by same-host peers, as CUDA IPC maps device memory) and whose kernels run on the CPU.
//! They exist so that placement, peer transfers and spilling can be run and tested on
//! machines without a GPU; they say "simulated" wherever they are reported.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::arena::Arena;
use crate::{DeviceLoc, MemoryPool};

/// Which pairs of simulated GPUs are NVLink peers (the rest talk through the host).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Topology {
    nvlink: BTreeSet<(u32, u32)>,
}

impl Topology {
    /// No NVLink at all.
    pub fn none() -> Topology {
        Topology::default()
    }

    /// Every pair linked (like an NVSwitch machine).
    pub fn all(n: u32) -> Topology {
        let mut t = Topology::default();
        for a in 0..n {
            for b in a + 1..n {
                t.link(a, b);
            }
        }
        t
    }

    /// GPUs linked in pairs: 0–1, 2–3, …
    pub fn pairs(n: u32) -> Topology {
        let mut t = Topology::default();
        for a in (0..n.saturating_sub(1)).step_by(2) {
            t.link(a, a + 1);
        }
        t
    }

    /// Links GPUs `a` and `b` both ways; a GPU is never linked to itself.
    pub fn link(&mut self, a: u32, b: u32) {
        if a != b {
            self.nvlink.insert((a.min(b), a.max(b)));
        }
    }

    /// Whether `a` and `b` are NVLink peers (in either order).
    pub fn nvlink(&self, a: u32, b: u32) -> bool {
        self.nvlink.contains(&(a.min(b), a.max(b)))
    }

    /// The NVLink peers of GPU `i` among GPUs `0..n`.
    pub fn peers(&self, i: u32, n: u32) -> Vec<u32> {
        (0..n).filter(|&j| self.nvlink(i, j)).collect()
    }

    /// Parses `none`, `all`, `pairs` or explicit links `0-1,2-3`.
    pub fn parse(s: &str, n: u32) -> Result<Topology, String> {
        match s {
            "none" | "" => return Ok(Topology::none()),
            "all" => return Ok(Topology::all(n)),
            "pairs" => return Ok(Topology::pairs(n)),
            _ => {}
        }
        let mut t = Topology::default();
        for link in s.split(',') {
            let bad = || format!("bad NVLink {link:?}: expected A-B with A, B < {n}");
            let (a, b) = link.trim().split_once('-').ok_or_else(bad)?;
            let a: u32 = a.trim().parse().map_err(|_| bad())?;
            let b: u32 = b.trim().parse().map_err(|_| bad())?;
            if a >= n || b >= n || a == b {
                return Err(bad());
            }
            t.link(a, b);
        }
        Ok(t)
    }

    /// The links, as `0-1,2-3` (empty for none).
    pub fn describe(&self) -> String {
        self.nvlink
            .iter()
            .map(|(a, b)| format!("{a}-{b}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The links as [`Topology::describe`] gives them, or `none` (as `--nvlink` takes it).
    pub fn label(&self) -> String {
        if self.nvlink.is_empty() {
            "none".into()
        } else {
            self.describe()
        }
    }
}

/// One simulated GPU.
pub struct SimGpu {
    index: u32,
    pool: Arc<MemoryPool>,
    arena: Arena,
}

impl SimGpu {
    /// Its index among the simulated GPUs (`sim:N`).
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The accounting of its capacity.
    pub fn pool(&self) -> &Arc<MemoryPool> {
        &self.pool
    }

    /// The GPU's memory, which same-host peers can map.
    pub fn arena(&self) -> &Arena {
        &self.arena
    }
}

/// A set of simulated GPUs and their topology.
pub struct SimGpus {
    gpus: Vec<SimGpu>,
    topology: Topology,
}

/// The default capacity of a simulated GPU.
pub const DEFAULT_SIM_MEMORY: u64 = 1 << 30;

impl SimGpus {
    /// `n` simulated GPUs of `memory` bytes each.
    pub fn new(n: u32, memory: u64, topology: Topology) -> SimGpus {
        let gpus = (0..n)
            .map(|i| SimGpu {
                index: i,
                pool: MemoryPool::new(DeviceLoc::sim(i), memory),
                // Segments no larger than the device, so a small device does not map more
                // than it can hold.
                arena: Arena::new(memory.clamp(1 << 20, crate::arena::DEFAULT_SEGMENT)),
            })
            .collect();
        SimGpus { gpus, topology }
    }

    /// Parses `N[:MEMORY]` (e.g. `4`, `4:2GiB`, `2:512MiB`).
    pub fn parse_spec(spec: &str) -> Result<(u32, u64), String> {
        let (n, mem) = match spec.split_once(':') {
            Some((n, m)) => (n, parse_bytes(m)?),
            None => (spec, DEFAULT_SIM_MEMORY),
        };
        let n: u32 = n
            .trim()
            .parse()
            .map_err(|_| format!("bad simulated GPU count {n:?}"))?;
        if n == 0 {
            return Err("at least one simulated GPU".into());
        }
        Ok((n, mem))
    }

    /// Number of GPUs.
    pub fn len(&self) -> usize {
        self.gpus.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.gpus.is_empty()
    }

    /// GPU `i`, if there is one.
    pub fn gpu(&self, i: u32) -> Option<&SimGpu> {
        self.gpus.get(i as usize)
    }

    /// All of them, by index.
    pub fn gpus(&self) -> &[SimGpu] {
        &self.gpus
    }

    /// Which of them are NVLink peers.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }
}

/// Parses a byte count: `1024`, `64KiB`, `512MiB`, `2GiB`, `1.5GB` (the project's one
/// size parser, [`rask_proto::units::parse_bytes`]).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    rask_proto::units::parse_bytes(s).map_err(|e| e.to_string())
}
