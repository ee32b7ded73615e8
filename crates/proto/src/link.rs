//! How bytes travel between two workers (or two devices): [`LinkClass`]. Heartbeats count
//! received bytes by class, and placement weighs a transfer by the class of its link. On
//! the wire a class is its name (`local`, `nvlink`, `pcie`, `shm`, `tcp`).

/// The class of a link, from cheapest to dearest as placement sees them. The order of
/// the variants is also their names' alphabetical order, so maps keyed by a class list
/// it as they would list its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LinkClass {
    /// Within one process (or one device): no bytes move.
    Local,
    /// Between two GPUs of one host joined by NVLink.
    Nvlink,
    /// Between a GPU and the host, or two GPUs of one host through it.
    Pcie,
    /// Between CPU workers of one host, through shared memory.
    Shm,
    /// Over the network.
    Tcp,
}

impl LinkClass {
    /// Every class.
    pub const ALL: [LinkClass; 5] = [
        LinkClass::Local,
        LinkClass::Nvlink,
        LinkClass::Pcie,
        LinkClass::Shm,
        LinkClass::Tcp,
    ];

    /// The name messages and reports use.
    pub const fn as_str(self) -> &'static str {
        match self {
            LinkClass::Local => "local",
            LinkClass::Nvlink => "nvlink",
            LinkClass::Pcie => "pcie",
            LinkClass::Shm => "shm",
            LinkClass::Tcp => "tcp",
        }
    }
}

impl std::fmt::Display for LinkClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for LinkClass {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        LinkClass::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| format!("unknown link class {s:?}: local, nvlink, pcie, shm or tcp"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_classes_round_trip_and_keep_their_spelling() {
        let names: Vec<&str> = LinkClass::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names, ["local", "nvlink", "pcie", "shm", "tcp"]);
        for c in LinkClass::ALL {
            assert_eq!(c.to_string(), c.as_str());
            assert_eq!(c.as_str().parse::<LinkClass>().unwrap(), c);
        }
        assert!("NVLink".parse::<LinkClass>().is_err());
        assert!("".parse::<LinkClass>().is_err());
    }

    #[test]
    fn classes_sort_as_their_names_do() {
        let mut by_name = LinkClass::ALL;
        by_name.sort_by_key(|c| c.as_str());
        assert_eq!(by_name, LinkClass::ALL);
        let mut by_class = LinkClass::ALL;
        by_class.reverse();
        by_class.sort();
        assert_eq!(by_class, LinkClass::ALL);
    }
}
