//! `LocalCluster`: a scheduler and workers on this machine, as threads of this process or
//! as worker processes (`rask worker`), like Dask's `LocalCluster`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;

pub use crate::cluster_error::ClusterError;

use rask_kernels::Registry;
use rask_scheduler::SchedulerConfig;
use rask_transport::{Secret, Tls, TlsFiles};
use rask_worker::{Worker, WorkerConfig};
use tokio::sync::oneshot;

mod gpus;
mod scale;
mod secret_file;

use gpus::Gpus;
pub use gpus::LocalCUDACluster;
use secret_file::SecretFile;

/// Configures a [`LocalCluster`].
#[derive(Clone, Debug)]
pub struct LocalClusterBuilder {
    n_workers: usize,
    threads_per_worker: u32,
    processes: bool,
    registry: Registry,
    worker_binary: Option<PathBuf>,
    memory_limit: Option<u64>,
    resources: Vec<(String, f64)>,
    scheduler: SchedulerConfig,
    auth: Option<Secret>,
    /// TLS as given, and as loaded by `build`.
    tls_files: Option<TlsFiles>,
    tls: Option<Tls>,
    transport: Option<rask_transport::TransportMode>,
    gpus: Option<Gpus>,
    /// Where the scheduler listens, and what it announces.
    scheduler_host: String,
    scheduler_contact: Option<String>,
}

impl Default for LocalClusterBuilder {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        LocalClusterBuilder {
            n_workers: cores.clamp(1, 4),
            threads_per_worker: 1,
            processes: false,
            registry: Registry::program(),
            worker_binary: None,
            memory_limit: None,
            resources: Vec::new(),
            scheduler: SchedulerConfig::default(),
            auth: None,
            tls_files: None,
            tls: None,
            transport: None,
            gpus: None,
            scheduler_host: "127.0.0.1".into(),
            scheduler_contact: None,
        }
    }
}

impl LocalClusterBuilder {
    /// Number of workers (default: cores, at most 4).
    pub fn n_workers(mut self, n: usize) -> Self {
        self.n_workers = n;
        self
    }

    /// Executor threads per worker (default 1).
    pub fn threads_per_worker(mut self, n: u32) -> Self {
        self.threads_per_worker = n.max(1);
        self
    }

    /// How workers move data to each other (default: `RASK_TRANSPORT`, else auto).
    pub fn transport(mut self, t: rask_transport::TransportMode) -> Self {
        self.transport = Some(t);
        self
    }

    /// Run workers as separate `rask worker` processes (default: threads of this process).
    pub fn processes(mut self, yes: bool) -> Self {
        self.processes = yes;
        self
    }

    /// The ops the workers run (threads mode; in processes mode, the worker binary's ops).
    pub fn registry(mut self, r: Registry) -> Self {
        self.registry = r;
        self
    }

    /// The worker program for processes mode, started as `PROGRAM worker SCHEDULER
    /// [options]` (default: this program itself if it has typed ops and calls
    /// [`crate::worker_entry`]; else `rask` next to this executable, or
    /// `$RASK_WORKER_BIN`, whose workers receive the program if it has typed ops).
    pub fn worker_binary(mut self, p: impl Into<PathBuf>) -> Self {
        self.worker_binary = Some(p.into());
        self
    }

    /// Memory limit per worker, in bytes.
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.memory_limit = Some(bytes);
        self
    }

    /// Resources every worker offers, e.g. `("gpu", 1.0)`.
    pub fn resource(mut self, name: &str, amount: f64) -> Self {
        self.resources.push((name.into(), amount));
        self
    }

    /// Require this shared secret on every connection of the cluster (default: the one
    /// in `RASK_AUTH_FILE` / `RASK_AUTH_SECRET`, if set).
    pub fn auth(mut self, secret: Secret) -> Self {
        self.auth = Some(secret);
        self
    }

    /// TLS on every connection of the cluster (scheduler, workers, their peers, the
    /// client, the dashboard over HTTPS): every process gets these files. The
    /// certificate serves the scheduler and every worker, so it must name the address
    /// they listen on (an IP SAN 127.0.0.1 for a cluster on this machine), unless
    /// [`TlsFiles::ca_only`] is set. Off by default: settings in `RASK_TLS_*`, meant for
    /// clusters elsewhere, are not used by a local cluster.
    pub fn tls(mut self, files: TlsFiles) -> Self {
        self.tls_files = Some(files);
        self
    }

    /// The address the scheduler listens on (default 127.0.0.1: this machine only;
    /// 0.0.0.0 for workers on other hosts, which are then told this host's address).
    pub fn scheduler_host(mut self, host: impl Into<String>) -> Self {
        self.scheduler_host = host.into();
        self
    }

    /// The address workers and clients are told to reach the scheduler at, HOST or HOST:PORT
    /// (behind NAT, in a container).
    pub fn scheduler_contact(mut self, addr: impl Into<String>) -> Self {
        self.scheduler_contact = Some(addr.into());
        self
    }

    /// Scheduler settings (limits, core tunables).
    pub fn scheduler_config(mut self, cfg: SchedulerConfig) -> Self {
        let dashboard = (
            self.scheduler.dashboard.take(),
            self.scheduler.dashboard_server.take(),
        );
        self.scheduler = cfg;
        if self.scheduler.dashboard.is_none() {
            (self.scheduler.dashboard, self.scheduler.dashboard_server) = dashboard;
        }
        self
    }

    /// Serves the dashboard on `addr` (`HOST:PORT`; port 0 for a free one, a taken port
    /// gives way to a free one); its URL is in `scheduler_info().dashboard`. Off unless
    /// asked for.
    pub fn dashboard(mut self, addr: impl Into<String>) -> Self {
        self.scheduler.dashboard = Some(addr.into());
        self.scheduler.dashboard_server = Some(crate::dashboard::server());
        self
    }

    /// Starts the cluster; returns once every worker has joined.
    pub fn build(mut self) -> Result<LocalCluster, ClusterError> {
        self.find_gpus()?;
        if self.auth.is_none() {
            self.auth = Secret::from_env().map_err(|e| ClusterError::Secret(e.to_string()))?;
        }
        self.tls = match &self.tls_files {
            Some(f) => f.load().map_err(|e| ClusterError::Tls(e.to_string()))?,
            None => None,
        };
        let secret_file = match (&self.auth, self.processes) {
            (Some(s), true) => Some(SecretFile::write(s)?),
            _ => None,
        };
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let mut cfg = self.scheduler.clone();
        cfg.conn.auth = self.auth.clone();
        cfg.conn.tls = self.tls.clone();
        let (host, contact) = (self.scheduler_host.clone(), self.scheduler_contact.clone());
        let scheduler = std::thread::Builder::new()
            .name("rask-scheduler".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                let rt = match rt {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = addr_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                rt.block_on(async move {
                    let bind = match rask_transport::addr::bind_addr(
                        None,
                        Some(&host),
                        None,
                        0,
                        "127.0.0.1",
                    ) {
                        Ok(b) => b,
                        Err(e) => {
                            let _ = addr_tx.send(Err(e.to_string()));
                            return;
                        }
                    };
                    let listener = match rask_transport::listen(&bind).await {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = addr_tx.send(Err(format!("listening on {bind}: {e}")));
                            return;
                        }
                    };
                    let addr = listener
                        .local_addr()
                        .map_err(rask_transport::TransportError::from)
                        .and_then(|a| {
                            rask_transport::addr::contact_addr(a, contact.as_deref(), None)
                        })
                        .map_err(|e| e.to_string());
                    let mut cfg = cfg;
                    cfg.address = addr.as_ref().ok().cloned();
                    let _ = addr_tx.send(addr);
                    let _ = rask_scheduler::run(listener, cfg, async {
                        let _ = stop_rx.await;
                    })
                    .await;
                });
            })
            .map_err(|e| ClusterError::Scheduler(format!("no thread for it: {e}")))?;
        let address = addr_rx
            .recv()
            .map_err(|_| ClusterError::Scheduler("its thread died".into()))?
            .map_err(ClusterError::Scheduler)?;
        let mut cluster = LocalCluster {
            address,
            secret: self.auth.clone(),
            tls: self.tls.clone(),
            secret_file,
            registry: self.registry.clone(),
            scheduler: Some((stop_tx, scheduler)),
            threads: Vec::new(),
            processes: Vec::new(),
            spec: self.clone(),
            next: self.n_workers,
        };
        for i in 0..self.n_workers {
            let name = format!("worker-{i}");
            if self.processes {
                let secret = cluster.secret_file.as_ref().map(|f| f.0.clone());
                let child = self.spawn_process(&cluster.address, i, &name, secret.as_deref())?;
                cluster.processes.push((name, child));
            } else {
                cluster
                    .threads
                    .push(self.spawn_thread(&cluster.address, i, name)?);
            }
        }
        if self.processes {
            let probe =
                rask_client::Client::connect_with(&cluster.address, cluster.client_options())?;
            self.wait_for_processes(&probe, &mut cluster)?;
        }
        Ok(cluster)
    }

    /// Waits until every worker process has joined the scheduler, and fails as soon as
    /// one exits instead: a worker that cannot start (a GPU it cannot open, an option it
    /// refuses) would otherwise be waited for forever. Its own error is on standard
    /// error, which the worker processes share with this program.
    fn wait_for_processes(
        &self,
        probe: &rask_client::Client,
        cluster: &mut LocalCluster,
    ) -> Result<(), ClusterError> {
        let mut delay = std::time::Duration::from_millis(1);
        loop {
            if probe.scheduler_info()?.workers.len() >= cluster.processes.len() {
                return Ok(());
            }
            for (i, (_, child)) in cluster.processes.iter_mut().enumerate() {
                let status = child.try_wait().map_err(|e| ClusterError::Worker {
                    name: format!("worker-{i}"),
                    reason: format!("cannot watch its process: {e}"),
                })?;
                if let Some(status) = status {
                    let device = match self.device_label(i) {
                        Some(d) => format!(" ({d})"),
                        None => String::new(),
                    };
                    return Err(ClusterError::WorkerExited {
                        name: format!("worker-{i}{device}"),
                        status,
                    });
                }
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(std::time::Duration::from_millis(50));
        }
    }

    fn worker_config(&self, addr: &str, i: usize, name: String) -> WorkerConfig {
        let mut cfg = WorkerConfig::new(addr);
        cfg.name = name;
        cfg.nthreads = self.threads_per_worker;
        cfg.registry = self.registry.clone();
        cfg.conn.auth = self.auth.clone();
        cfg.conn.tls = self.tls.clone();
        cfg.transport = self.transport.unwrap_or_else(|| {
            rask_transport::TransportMode::from_env()
                .ok()
                .flatten()
                .unwrap_or_default()
        });
        if let Some(m) = self.memory_limit {
            cfg.memory_limit = m;
        }
        cfg.resources = self
            .resources
            .iter()
            .map(|(n, a)| rask_proto::msg::Resource {
                name: n.clone(),
                amount: *a,
            })
            .collect();
        if let Some(d) = self.device_of(i) {
            cfg.device = d.device;
            cfg.nvlink = d.nvlink;
        }
        cfg
    }

    fn spawn_thread(
        &self,
        addr: &str,
        i: usize,
        name: String,
    ) -> Result<WorkerThread, ClusterError> {
        let cfg = self.worker_config(addr, i, name.clone());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let join = std::thread::Builder::new()
            .name(format!("rask-{name}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                rt.block_on(async move {
                    match Worker::connect(cfg).await {
                        Ok(w) => {
                            let _ = ready_tx.send(Ok(()));
                            let _ = w
                                .run(async {
                                    let _ = stop_rx.await;
                                })
                                .await;
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e.to_string()));
                        }
                    }
                });
            })
            .map_err(|e| ClusterError::Worker {
                name: name.clone(),
                reason: format!("no thread for it: {e}"),
            })?;
        ready_rx
            .recv()
            .map_err(|_| ClusterError::Worker {
                name: name.clone(),
                reason: "died while starting".into(),
            })?
            .map_err(|reason| ClusterError::Worker {
                name: name.clone(),
                reason,
            })?;
        Ok(WorkerThread {
            name,
            stop: Some(stop_tx),
            join: Some(join),
        })
    }

    fn spawn_process(
        &self,
        addr: &str,
        i: usize,
        name: &str,
        secret: Option<&Path>,
    ) -> Result<Child, ClusterError> {
        let (bin, command) = match &self.worker_binary {
            Some(b) => (b.clone(), "worker"),
            // A program with typed ops that can be its own worker is its workers.
            None if self.registry.has_program_ops() && crate::is_worker_entry_called() => (
                std::env::current_exe().map_err(|e| ClusterError::WorkerBinary(e.to_string()))?,
                crate::WORKER_ENTRY_ARG,
            ),
            None => (default_worker_binary()?, "worker"),
        };
        let mut cmd = Command::new(&bin);
        cmd.arg(command)
            .arg(addr)
            .args([
                "--nthreads",
                &self.threads_per_worker.to_string(),
                "--name",
                name,
                "--quiet",
                // Its scheduler is this process's: gone, it is not coming back.
                "--death-timeout",
                "5",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        // A local cluster's TLS is what it was built with: settings this process's
        // environment may carry, for clusters elsewhere, must not make its workers
        // expect TLS.
        for v in rask_transport::tls::ENV_VARS {
            cmd.env_remove(v);
        }
        if let Some(f) = &self.tls_files {
            cmd.args(f.to_args());
        }
        if let Some(m) = self.memory_limit {
            cmd.args(["--memory-limit", &m.to_string()]);
        }
        if let Some(p) = secret {
            cmd.arg("--auth-file").arg(p);
        }
        if let Some(p) = self.gpu_process(i) {
            // One GPU (or MIG instance) per process, seen only by it, on the CPUs near it.
            cmd.args(gpus::gpu_worker_args(&p, self.transport));
            cmd.envs(p.env);
            crate::affinity::pin(&mut cmd, &p.cpus);
        } else {
            if let Some(t) = self.transport {
                cmd.args(["--transport", &t.to_string()]);
            }
            if let Some(d) = self.device_of(i) {
                cmd.args(crate::cli::device_args(&d.device, &d.nvlink));
            }
        }
        for (n, a) in &self.resources {
            cmd.args(["--resources", &format!("{n}={a}")]);
        }
        cmd.spawn().map_err(|e| ClusterError::Worker {
            name: name.to_string(),
            reason: format!("cannot start {}: {e}", bin.display()),
        })
    }
}

fn default_worker_binary() -> Result<PathBuf, ClusterError> {
    if let Some(p) = std::env::var_os("RASK_WORKER_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| ClusterError::WorkerBinary(e.to_string()))?;
    let mut dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    // Test and example binaries live one level below the `rask` binary.
    for _ in 0..2 {
        let candidate = dir.join("rask");
        if candidate.is_file() {
            return Ok(candidate);
        }
        dir.pop();
    }
    Err(ClusterError::WorkerBinary(
        "no `rask` binary found next to this program: set RASK_WORKER_BIN or LocalClusterBuilder::worker_binary".into(),
    ))
}

struct WorkerThread {
    name: String,
    stop: Option<oneshot::Sender<()>>,
    join: Option<JoinHandle<()>>,
}

/// A scheduler and workers on this machine; stopped when dropped.
pub struct LocalCluster {
    address: String,
    /// The secret every connection proves, if the cluster has one.
    secret: Option<Secret>,
    /// TLS on every connection, if the cluster has it.
    tls: Option<Tls>,
    secret_file: Option<SecretFile>,
    registry: Registry,
    scheduler: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
    threads: Vec<WorkerThread>,
    processes: Vec<(String, Child)>,
    /// How it was built: how new workers start when it scales up.
    spec: LocalClusterBuilder,
    /// The index of the next worker to start (names are never reused).
    next: usize,
}

impl LocalCluster {
    /// Configure a cluster.
    pub fn builder() -> LocalClusterBuilder {
        LocalClusterBuilder::default()
    }

    /// The scheduler's `tcp://` address.
    pub fn scheduler_address(&self) -> &str {
        &self.address
    }

    /// The ops this cluster's workers run.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The cluster's shared secret, if it has one.
    pub fn secret(&self) -> Option<&Secret> {
        self.secret.as_ref()
    }

    /// The cluster's TLS, if it has it.
    pub fn tls(&self) -> Option<&Tls> {
        self.tls.as_ref()
    }

    /// Options for a client of this cluster: its secret and TLS.
    pub fn client_options(&self) -> rask_client::ClientOptions {
        let mut opts = rask_client::ClientOptions::default();
        opts.conn.auth = self.secret.clone();
        opts.conn.tls = self.tls.clone();
        opts
    }

    /// Process ids of the worker processes (processes mode).
    pub fn worker_pids(&self) -> Vec<u32> {
        self.processes.iter().map(|(_, c)| c.id()).collect()
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for w in &mut self.threads {
            if let Some(s) = w.stop.take() {
                let _ = s.send(());
            }
        }
        for w in &mut self.threads {
            if let Some(j) = w.join.take() {
                let _ = j.join();
            }
        }
        for (_, p) in &mut self.processes {
            let _ = p.kill();
            let _ = p.wait();
        }
        if let Some((stop, join)) = self.scheduler.take() {
            let _ = stop.send(());
            let _ = join.join();
        }
    }
}
