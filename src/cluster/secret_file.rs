//! The cluster's secret in a file, for the worker processes of a `LocalCluster`.

use std::path::PathBuf;

use rask_transport::Secret;

use super::ClusterError;

/// The cluster's secret in a file only this user can read, for worker processes;
/// removed with the cluster.
pub(super) struct SecretFile(pub(super) PathBuf);

impl SecretFile {
    pub(super) fn write(secret: &Secret) -> Result<SecretFile, ClusterError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("rask-secret-{}-{n}", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| ClusterError::Secret(format!("cannot write {}: {e}", path.display())))?;
        f.write_all(secret.as_bytes())
            .map_err(|e| ClusterError::Secret(format!("cannot write {}: {e}", path.display())))?;
        Ok(SecretFile(path))
    }
}

impl Drop for SecretFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
