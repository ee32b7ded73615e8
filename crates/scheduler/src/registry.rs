//! Which workers serve which ops.
//!
//! Built-in and registered ops are identified by name and version, and run on the
//! cluster's *base* workers: the first worker to join sets the base (its ops and its code),
//! and every base worker must have the same ops, versions and code, so that an old and a
//! changed binary never serve one op. A program's typed ops are identified by name and the
//! program's code: a worker of another code joins beside the base if it carries typed ops
//! of its own (a program's worker), and serves only that program's tasks. Clients may know
//! fewer or more ops than the base; those they share must be the same versions.

use rask_proto::msg::{Hello, RegistryInfo};
use rustc_hash::FxHashMap;

/// The base workers' ops and code.
pub(crate) struct Base {
    /// The ops other than typed ops, with their fingerprint.
    pub(crate) info: RegistryInfo,
    pub(crate) code: u64,
}

impl Base {
    /// The base of a cluster whose first worker says `info` and `code`.
    pub(crate) fn new(info: &RegistryInfo, code: u64) -> Base {
        Base {
            info: RegistryInfo {
                fingerprint: info.fingerprint,
                ops: info.ops.iter().filter(|o| !o.program).cloned().collect(),
            },
            code,
        }
    }

    /// Whether a worker joins as a base worker (`Ok(true)`), as a program's worker beside
    /// the base (`Ok(false)`), or not at all.
    pub(crate) fn admits_worker(
        &self,
        h: &Hello,
        theirs: &RegistryInfo,
        code: u64,
    ) -> Result<bool, String> {
        if code != self.code {
            if theirs.ops.iter().any(|o| o.program) {
                return Ok(false);
            }
            return Err(format!(
                "code mismatch: worker {:?} runs other code (build {code:016x}) than the cluster's workers (build {:016x}) for the same ops: a changed or stale binary; start every worker of a cluster from one build (a program's own typed ops are what may run on workers of its own code)",
                h.name, self.code
            ));
        }
        if theirs.fingerprint != self.info.fingerprint {
            return Err(self.mismatch(h, theirs));
        }
        Ok(true)
    }

    /// A client may know fewer or more ops than the workers, but those it shares with
    /// them must be the same versions (its typed ops are its program's own).
    pub(crate) fn admits_client(&self, h: &Hello, theirs: &RegistryInfo) -> Result<(), String> {
        let ours: FxHashMap<&str, u64> = self
            .info
            .ops
            .iter()
            .map(|o| (o.name.as_str(), o.version))
            .collect();
        let differ: Vec<&str> = theirs
            .ops
            .iter()
            .filter(|o| !o.program)
            .filter(|o| ours.get(o.name.as_str()).is_some_and(|v| *v != o.version))
            .map(|o| o.name.as_str())
            .collect();
        if differ.is_empty() {
            return Ok(());
        }
        Err(format!(
            "op version mismatch: client {:?} has other versions than the cluster's workers of the ops {differ:?}",
            h.name
        ))
    }

    pub(crate) fn mismatch(&self, h: &Hello, theirs: &RegistryInfo) -> String {
        let names = |r: &RegistryInfo| -> Vec<String> {
            r.ops
                .iter()
                .filter(|o| !o.program)
                .map(|o| o.name.clone())
                .collect()
        };
        let (ours_n, theirs_n) = (names(&self.info), names(theirs));
        let only_theirs: Vec<&String> = theirs_n.iter().filter(|o| !ours_n.contains(o)).collect();
        let only_ours: Vec<&String> = ours_n.iter().filter(|o| !theirs_n.contains(o)).collect();
        let other_versions: Vec<&str> = theirs
            .ops
            .iter()
            .filter(|o| {
                !o.program
                    && self
                        .info
                        .ops
                        .iter()
                        .any(|x| x.name == o.name && x.version != o.version)
            })
            .map(|o| o.name.as_str())
            .collect();
        format!(
            "op registry mismatch: worker {:?} has registry {:016x}, the cluster's workers have {:016x}; ops only on this worker: {:?}; ops only on the cluster's workers: {:?}; ops in other versions: {:?}",
            h.name, theirs.fingerprint, self.info.fingerprint, only_theirs, only_ours, other_versions
        )
    }
}
