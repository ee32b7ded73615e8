//! The cluster's ops and code: those of its connected workers, which must all agree; a
//! client may know fewer or more, with the shared ones in the same versions.

use rask_proto::msg::{Hello, RegistryInfo};
use rustc_hash::FxHashMap;

/// The ops and code of a cluster's workers.
pub(crate) struct ClusterOps {
    pub(crate) info: RegistryInfo,
    pub(crate) code: u64,
}

impl ClusterOps {
    /// A worker must have the same ops, versions and code as the cluster's workers.
    pub(crate) fn admits_worker(
        &self,
        h: &Hello,
        theirs: &RegistryInfo,
        code: u64,
    ) -> Result<(), String> {
        if theirs.fingerprint != self.info.fingerprint {
            return Err(self.mismatch(h, theirs));
        }
        if code != self.code {
            return Err(format!(
                "code mismatch: worker {:?} runs other code (build {code:016x}) than the cluster's workers (build {:016x}) for the same ops and versions: a changed or stale binary; start every worker of a cluster from one build",
                h.name, self.code
            ));
        }
        Ok(())
    }

    /// A client may know fewer or more ops than the workers, but those it shares with
    /// them must be the same versions.
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
        let names =
            |r: &RegistryInfo| -> Vec<String> { r.ops.iter().map(|o| o.name.clone()).collect() };
        let (ours_n, theirs_n) = (names(&self.info), names(theirs));
        let only_theirs: Vec<&String> = theirs_n.iter().filter(|o| !ours_n.contains(o)).collect();
        let only_ours: Vec<&String> = ours_n.iter().filter(|o| !theirs_n.contains(o)).collect();
        let other_versions: Vec<&str> = theirs
            .ops
            .iter()
            .filter(|o| {
                self.info
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
