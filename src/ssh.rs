//! A cluster on hosts reached over SSH, as Dask's `SSHCluster`: the first host runs the
//! scheduler, every other host a worker (repeat a host for several). Processes are
//! started with the OpenSSH client (`ssh`, key-based, the user's ssh configuration and
//! agent), their logs are kept (and streamed when asked), and closing the cluster — or
//! dropping it, or this process ending — stops every remote process: each runs under a
//! small shell wrapper that stops it when its ssh session's input closes.

use std::collections::VecDeque;
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::ClusterError;

mod options;

pub use options::SshOptions;

/// A cluster on SSH hosts: see [`SshCluster::builder`].
#[derive(Clone, Debug)]
pub struct SshClusterBuilder {
    hosts: Vec<String>,
    ssh: SshOptions,
    scheduler_args: Vec<String>,
    worker_args: Vec<String>,
    echo: bool,
    timeout: Duration,
}

/// One remote process: its ssh client, and the last lines it printed.
struct Remote {
    label: String,
    /// The worker's name, for a worker.
    worker: Option<String>,
    child: Child,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl Remote {
    fn start(
        label: String,
        mut cmd: Command,
        echo: bool,
        first_line: Option<std::sync::mpsc::Sender<String>>,
    ) -> Result<Remote, ClusterError> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| ClusterError::Remote {
                what: label.clone(),
                reason: format!("cannot start ssh: {e}"),
            })?;
        let log: Arc<Mutex<VecDeque<String>>> = Arc::default();
        for out in [
            child
                .stdout
                .take()
                .map(|o| Box::new(o) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|e| Box::new(e) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let (log, label, tell) = (log.clone(), label.clone(), first_line.clone());
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                    if echo {
                        crate::errln!("[{label}] {line}");
                    }
                    if let Some(t) = &tell {
                        let _ = t.send(line.clone());
                    }
                    let mut l = log.lock().unwrap_or_else(|e| e.into_inner());
                    if l.len() == 40 {
                        l.pop_front();
                    }
                    l.push_back(line);
                }
            });
        }
        Ok(Remote {
            label,
            worker: None,
            child,
            log,
        })
    }

    /// Why it ended, if it has: its exit status and last lines.
    fn ended(&mut self) -> Option<String> {
        let status = self.child.try_wait().ok().flatten()?;
        Some(format!("{status}: {}", self.tail()))
    }

    fn tail(&self) -> String {
        let l = self.log.lock().unwrap_or_else(|e| e.into_inner());
        l.iter().cloned().collect::<Vec<_>>().join(" | ")
    }
}

impl SshClusterBuilder {
    /// How to reach the hosts.
    pub fn ssh_options(mut self, o: SshOptions) -> Self {
        self.ssh = o;
        self
    }

    /// Options of `rask scheduler` (default `--host 0.0.0.0 --port 8786`).
    pub fn scheduler_args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, a: I) -> Self {
        self.scheduler_args = a.into_iter().map(Into::into).collect();
        self
    }

    /// Options of every `rask worker` (default `--host 0.0.0.0`).
    pub fn worker_args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, a: I) -> Self {
        self.worker_args = a.into_iter().map(Into::into).collect();
        self
    }

    /// Copy every remote line to standard error, prefixed with its host and role.
    pub fn echo(mut self, on: bool) -> Self {
        self.echo = on;
        self
    }

    /// How long the scheduler and every worker may take to start (default 60 s).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Starts the scheduler on the first host and a worker on each other one, and waits
    /// until every worker has joined.
    pub fn build(self) -> Result<SshCluster, ClusterError> {
        let Some((first, workers)) = self.hosts.split_first() else {
            return Err(ClusterError::Remote {
                what: "ssh".into(),
                reason: "no hosts: the first host runs the scheduler, the others workers".into(),
            });
        };
        if workers.is_empty() {
            return Err(ClusterError::Remote {
                what: "ssh".into(),
                reason: "one host only: give a host for the scheduler, then one per worker".into(),
            });
        }
        let deadline = Instant::now() + self.timeout;
        let mut cluster = SshCluster {
            address: String::new(),
            remotes: Vec::new(),
            ssh: self.ssh.clone(),
            worker_hosts: workers.to_vec(),
            worker_args: self.worker_args.clone(),
            echo: self.echo,
            timeout: self.timeout,
            next: 0,
        };
        let mut args = vec![self.ssh.remote_rask.clone(), "scheduler".into()];
        args.extend(if self.scheduler_args.is_empty() {
            vec![
                "--host".into(),
                "0.0.0.0".into(),
                "--port".into(),
                "8786".into(),
            ]
        } else {
            self.scheduler_args.clone()
        });
        let (tx, lines) = std::sync::mpsc::channel();
        let label = format!("{first} scheduler");
        cluster.remotes.push(Remote::start(
            label.clone(),
            self.ssh.command(first, &args),
            self.echo,
            Some(tx),
        )?);
        // Ready when it says where it listens.
        cluster.address = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) => {
                    if let Some(at) = line.split("Scheduler at:").nth(1) {
                        break at.trim().to_string();
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) if !left.is_zero() => {}
                Err(_) => {}
            }
            if let Some(why) = cluster.remotes[0].ended() {
                return Err(ClusterError::Remote {
                    what: label,
                    reason: format!("ended before listening ({why})"),
                });
            }
            if Instant::now() >= deadline {
                return Err(ClusterError::Remote {
                    what: label,
                    reason: format!(
                        "did not say where it listens within {:?}: {}",
                        self.timeout,
                        cluster.remotes[0].tail()
                    ),
                });
            }
        };
        drop(lines);
        for _ in workers {
            cluster.start_worker()?;
        }
        // Ready when every worker has joined.
        cluster.wait_for_joined(workers.len(), deadline)?;
        Ok(cluster)
    }
}

/// A scheduler and workers on SSH hosts; stopped when dropped.
pub struct SshCluster {
    address: String,
    remotes: Vec<Remote>,
    /// How workers start when it scales up.
    ssh: SshOptions,
    worker_hosts: Vec<String>,
    worker_args: Vec<String>,
    echo: bool,
    timeout: Duration,
    /// The index of the next worker (names are never reused).
    next: usize,
}

impl SshCluster {
    /// A cluster on `hosts`: the first runs the scheduler, each other one a worker.
    pub fn builder<I: IntoIterator<Item = S>, S: Into<String>>(hosts: I) -> SshClusterBuilder {
        SshClusterBuilder {
            hosts: hosts.into_iter().map(Into::into).collect(),
            ssh: SshOptions::default(),
            scheduler_args: Vec::new(),
            worker_args: Vec::new(),
            echo: false,
            timeout: Duration::from_secs(60),
        }
    }

    /// The scheduler's address, as it announced it.
    pub fn scheduler_address(&self) -> &str {
        &self.address
    }

    /// A client of this cluster.
    pub fn client(&self) -> Result<crate::Client, crate::ClientError> {
        crate::Client::connect(&self.address)
    }

    /// Whether a remote process has ended, and which with why.
    pub fn ended(&mut self) -> Option<(String, String)> {
        self.remotes
            .iter_mut()
            .find_map(|r| r.ended().map(|why| (r.label.clone(), why)))
    }

    /// Stops every remote process (workers first) and waits for them, up to 10 s each
    /// before their ssh client is killed.
    pub fn close(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        // Workers first, then the scheduler.
        for r in self.remotes.iter_mut().rev() {
            // Their input closes: the wrapper stops the remote process, and the session
            // ends.
            drop(r.child.stdin.take());
        }
        for r in self.remotes.iter_mut().rev() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while r.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = r.child.kill();
            let _ = r.child.wait();
        }
        self.remotes.clear();
    }
}

impl SshCluster {
    fn start_worker(&mut self) -> Result<(), ClusterError> {
        let i = self.next;
        self.next += 1;
        let host = self.worker_hosts[i % self.worker_hosts.len()].clone();
        let name = format!("{host}-{i}");
        let mut args = vec![
            self.ssh.remote_rask.clone(),
            "worker".into(),
            self.address.clone(),
            "--name".into(),
            name.clone(),
        ];
        args.extend(if self.worker_args.is_empty() {
            vec!["--host".into(), "0.0.0.0".into()]
        } else {
            self.worker_args.clone()
        });
        let mut r = Remote::start(
            format!("{host} worker {i}"),
            self.ssh.command(&host, &args),
            self.echo,
            None,
        )?;
        r.worker = Some(name);
        self.remotes.push(r);
        Ok(())
    }

    /// Waits until `n` workers have joined; fails as soon as a remote process ends.
    fn wait_for_joined(&mut self, n: usize, deadline: Instant) -> Result<(), ClusterError> {
        let scheduler = |reason: String| ClusterError::Remote {
            what: "the scheduler".into(),
            reason,
        };
        let client = loop {
            match crate::Client::connect(&self.address) {
                Ok(c) => break c,
                Err(e) if Instant::now() >= deadline => {
                    return Err(scheduler(format!(
                        "cannot be reached at {}: {e}",
                        self.address
                    )))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        loop {
            let joined = client
                .scheduler_info()
                .map_err(|e| scheduler(e.to_string()))?
                .workers
                .len();
            if joined >= n {
                return Ok(());
            }
            for r in &mut self.remotes {
                if let Some(why) = r.ended() {
                    return Err(ClusterError::Remote {
                        what: r.label.clone(),
                        reason: format!("ended ({why})"),
                    });
                }
            }
            if Instant::now() >= deadline {
                return Err(ClusterError::Remote {
                    what: "ssh".into(),
                    reason: format!("{joined} of {n} workers joined within {:?}", self.timeout),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The workers this cluster started and has not stopped, oldest first.
    pub fn worker_names(&self) -> Vec<String> {
        self.remotes
            .iter()
            .filter_map(|r| r.worker.clone())
            .collect()
    }

    /// Makes the cluster `n` workers: starts new ones on the worker hosts in turn, or
    /// retires the newest gracefully (what only they hold moves to other workers first).
    pub fn scale(&mut self, n: usize) -> Result<(), ClusterError> {
        let have = self.worker_names();
        if n > have.len() {
            for _ in have.len()..n {
                self.start_worker()?;
            }
            let deadline = Instant::now() + self.timeout;
            self.wait_for_joined(n, deadline)?;
        } else if n < have.len() {
            self.retire_workers(&have[n..])?;
        }
        Ok(())
    }

    /// Retires the named workers gracefully and stops their processes; returns those
    /// retired.
    pub fn retire_workers(&mut self, names: &[String]) -> Result<Vec<String>, ClusterError> {
        let retired = self.client()?.retire_workers(names)?;
        for name in &retired {
            if let Some(at) = self
                .remotes
                .iter()
                .position(|r| r.worker.as_deref() == Some(name.as_str()))
            {
                let mut r = self.remotes.remove(at);
                drop(r.child.stdin.take());
                let deadline = Instant::now() + Duration::from_secs(10);
                while r.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = r.child.kill();
                let _ = r.child.wait();
            }
        }
        Ok(retired)
    }
}

impl crate::adapt::Scalable for SshCluster {
    fn address(&self) -> String {
        self.address.clone()
    }
    fn planned(&self) -> usize {
        self.worker_names().len()
    }
    fn scale_up(&mut self, n: usize) -> Result<(), ClusterError> {
        self.scale(n)
    }
    fn scale_down(&mut self, names: &[String]) -> Result<(), ClusterError> {
        self.retire_workers(names).map(drop)
    }
}

impl Drop for SshCluster {
    fn drop(&mut self) {
        self.stop();
    }
}
