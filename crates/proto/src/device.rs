//! Where bytes live: [`DeviceLoc`], a small `Copy` name for the host, a simulated GPU or a
//! CUDA GPU of one process. Its text form (`host`, `sim:N`, `cuda:N`) is what messages,
//! logs and the command line carry; this type only names a device, it holds no memory.

/// The kind of a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeviceKind {
    /// The process's host memory.
    Host,
    /// A simulated GPU (host memory standing in for a GPU's).
    Sim,
    /// A CUDA GPU.
    Cuda,
}

/// A device of one process: its kind and, for GPUs, its index as that process numbers
/// them (the host's index is 0). Shown and parsed as `host`, `sim:N` or `cuda:N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceLoc {
    /// Host, simulated GPU or CUDA GPU.
    pub kind: DeviceKind,
    /// The GPU's index in its process (0 for the host).
    pub index: u32,
}

impl DeviceLoc {
    /// The host.
    pub const HOST: DeviceLoc = DeviceLoc {
        kind: DeviceKind::Host,
        index: 0,
    };

    /// Simulated GPU `index`.
    pub const fn sim(index: u32) -> DeviceLoc {
        DeviceLoc {
            kind: DeviceKind::Sim,
            index,
        }
    }

    /// CUDA GPU `index`.
    pub const fn cuda(index: u32) -> DeviceLoc {
        DeviceLoc {
            kind: DeviceKind::Cuda,
            index,
        }
    }

    /// Whether this is the host.
    pub const fn is_host(self) -> bool {
        matches!(self.kind, DeviceKind::Host)
    }
}

impl std::fmt::Display for DeviceLoc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            DeviceKind::Host => f.write_str("host"),
            DeviceKind::Sim => write!(f, "sim:{}", self.index),
            DeviceKind::Cuda => write!(f, "cuda:{}", self.index),
        }
    }
}

impl std::str::FromStr for DeviceLoc {
    type Err = String;
    /// `host` (or `cpu`), `sim:N` or `cuda:N`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("unknown device {s:?}: host, sim:N or cuda:N");
        if s == "host" || s == "cpu" {
            return Ok(DeviceLoc::HOST);
        }
        let (kind, n) = s.split_once(':').ok_or_else(bad)?;
        let n: u32 = n.parse().map_err(|_| bad())?;
        match kind {
            "sim" => Ok(DeviceLoc::sim(n)),
            "cuda" => Ok(DeviceLoc::cuda(n)),
            _ => Err(bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_round_trip_and_keep_their_spelling() {
        for (loc, text) in [
            (DeviceLoc::HOST, "host"),
            (DeviceLoc::sim(0), "sim:0"),
            (DeviceLoc::sim(3), "sim:3"),
            (DeviceLoc::cuda(1), "cuda:1"),
            (DeviceLoc::cuda(17), "cuda:17"),
        ] {
            assert_eq!(loc.to_string(), text);
            assert_eq!(text.parse::<DeviceLoc>().unwrap(), loc);
        }
        assert_eq!("cpu".parse::<DeviceLoc>().unwrap(), DeviceLoc::HOST);
        assert!(DeviceLoc::HOST.is_host() && !DeviceLoc::sim(0).is_host());
        for bad in ["gpu:1", "sim", "sim:", "sim:x", "cuda:-1", "host:0", ""] {
            let e = bad.parse::<DeviceLoc>().unwrap_err();
            assert_eq!(e, format!("unknown device {bad:?}: host, sim:N or cuda:N"));
        }
    }

    #[test]
    fn device_locations_order_by_kind_then_index() {
        let mut v = vec![
            DeviceLoc::cuda(0),
            DeviceLoc::sim(2),
            DeviceLoc::HOST,
            DeviceLoc::sim(1),
        ];
        v.sort();
        assert_eq!(
            v,
            [
                DeviceLoc::HOST,
                DeviceLoc::sim(1),
                DeviceLoc::sim(2),
                DeviceLoc::cuda(0)
            ]
        );
    }
}
