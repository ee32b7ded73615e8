//! A local cluster that grows and shrinks: [`LocalCluster::scale`] starts workers or
//! retires them gracefully (the scheduler first moves what only they hold to other
//! workers, so nothing is lost or computed again), as Dask's `cluster.scale(n)`.

use super::{LocalCluster, WorkerThread};
use crate::ClusterError;

impl LocalCluster {
    /// The names of the workers this cluster started and has not stopped, oldest first.
    pub fn worker_names(&self) -> Vec<String> {
        self.threads
            .iter()
            .map(|t| t.name.clone())
            .chain(self.processes.iter().map(|(n, _)| n.clone()))
            .collect()
    }

    /// Makes the cluster `n` workers: starts new ones (threads or processes, as it was
    /// built), or retires the newest gracefully. A cluster of GPUs keeps one worker per
    /// GPU and cannot be scaled.
    pub fn scale(&mut self, n: usize) -> Result<(), ClusterError> {
        let have = self.worker_names();
        if n > have.len() {
            if self.spec.gpus.is_some() {
                return Err(ClusterError::Worker {
                    name: format!("worker-{}", self.next),
                    reason: "a cluster of GPUs has one worker per GPU; it cannot be scaled".into(),
                });
            }
            for _ in have.len()..n {
                self.start_worker()?;
            }
            if self.spec.processes {
                let probe = self.probe()?;
                let spec = self.spec.clone();
                spec.wait_for_processes(&probe, self)?;
            }
        } else if n < have.len() {
            let newest: Vec<String> = have[n..].to_vec();
            self.retire_workers(&newest)?;
        }
        Ok(())
    }

    /// Retires the named workers gracefully and stops them; returns those retired (a
    /// worker holding data no other worker can take is not).
    pub fn retire_workers(&mut self, names: &[String]) -> Result<Vec<String>, ClusterError> {
        let mine: Vec<String> = names
            .iter()
            .filter(|n| self.worker_names().contains(n))
            .cloned()
            .collect();
        if mine.is_empty() {
            return Ok(Vec::new());
        }
        let retired = self.probe()?.retire_workers(&mine)?;
        for name in &retired {
            self.stop_worker(name);
        }
        Ok(retired)
    }

    fn probe(&self) -> Result<rask_client::Client, ClusterError> {
        let mut opts = rask_client::ClientOptions::default();
        opts.conn.auth = self.secret.clone();
        Ok(rask_client::Client::connect_with(&self.address, opts)?)
    }

    fn start_worker(&mut self) -> Result<(), ClusterError> {
        let i = self.next;
        self.next += 1;
        let name = format!("worker-{i}");
        if self.spec.processes {
            let secret = self.secret_file.as_ref().map(|f| f.0.clone());
            let child = self
                .spec
                .spawn_process(&self.address, i, &name, secret.as_deref())?;
            self.processes.push((name, child));
        } else {
            let t = self.spec.spawn_thread(&self.address, i, name)?;
            self.threads.push(t);
        }
        Ok(())
    }

    /// Stops a worker the scheduler has let go (it was told to close): its thread ends,
    /// its process exits.
    fn stop_worker(&mut self, name: &str) {
        if let Some(at) = self.threads.iter().position(|t| t.name == name) {
            let mut t: WorkerThread = self.threads.remove(at);
            if let Some(s) = t.stop.take() {
                let _ = s.send(());
            }
            if let Some(j) = t.join.take() {
                let _ = j.join();
            }
        }
        if let Some(at) = self.processes.iter().position(|(n, _)| n == name) {
            let (_, mut child) = self.processes.remove(at);
            // It leaves by itself once closed; one that does not is killed.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && std::time::Instant::now() < deadline
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl crate::adapt::Scalable for LocalCluster {
    fn address(&self) -> String {
        self.address.clone()
    }
    fn client_options(&self) -> rask_client::ClientOptions {
        LocalCluster::client_options(self)
    }
    fn planned(&self) -> usize {
        self.threads.len() + self.processes.len()
    }
    fn scale_up(&mut self, n: usize) -> Result<(), ClusterError> {
        self.scale(n)
    }
    fn scale_down(&mut self, names: &[String]) -> Result<(), ClusterError> {
        self.retire_workers(names).map(drop)
    }
}
