//! `rask worker`'s options, and the rules that read them: how many workers, how long a
//! lifetime.

use clap::Args;

/// `worker` options, like `dask worker`'s.
#[derive(Args, Debug, Clone)]
pub struct WorkerArgs {
    /// The scheduler, tcp://host:port (or give --scheduler-file).
    #[arg(required_unless_present = "scheduler_file")]
    pub scheduler: Option<String>,
    /// A file the scheduler wrote its address to (`rask scheduler --scheduler-file`);
    /// waited for up to --death-timeout.
    #[arg(long, conflicts_with = "scheduler")]
    pub scheduler_file: Option<std::path::PathBuf>,
    /// Worker processes to start: a number, or auto (one per core up to 4 cores, else
    /// about the square root of the cores, as Dask does). More than one: this process
    /// starts and supervises them.
    #[arg(long, default_value = "1")]
    pub nworkers: String,
    /// Tasks each worker runs at once (default: the cores divided among the workers).
    #[arg(long)]
    pub nthreads: Option<u32>,
    /// Worker name (default: worker-PID, this process's id; with --nworkers, NAME-I).
    #[arg(long)]
    pub name: Option<String>,
    /// Memory each worker may use: bytes (4GiB, 4GB, 4000000000), a fraction of this
    /// machine's (or container's) memory (0.5), or auto (its share of that).
    #[arg(long, default_value = "auto")]
    pub memory_limit: rask_proto::units::MemoryLimit,
    /// A resource this worker offers, NAME=AMOUNT (repeatable or comma-separated), e.g. gpu=1.
    #[arg(long)]
    pub resources: Vec<String>,
    /// The address to listen on for peers and clients (default 127.0.0.1; 0.0.0.0 for
    /// every interface; peers are told a reachable address, see --contact-address).
    #[arg(long, conflicts_with_all = ["interface", "listen"])]
    pub host: Option<String>,
    /// Listen on this network interface's address (eth0, ib0).
    #[arg(long, conflicts_with = "listen")]
    pub interface: Option<String>,
    /// The port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    pub worker_port: u16,
    /// Where to listen, HOST:PORT (instead of --host and --worker-port).
    #[arg(long)]
    pub listen: Option<String>,
    /// The address peers and clients should use to reach this worker, HOST or HOST:PORT
    /// (behind NAT or in a container). Default: the listening address, or, when that is
    /// every interface, this host's address on the route to the scheduler.
    #[arg(long)]
    pub contact_address: Option<String>,
    /// Seconds to keep trying to reach the scheduler (at start, and after losing it: the
    /// worker first joins the same address again keeping its values, which the scheduler
    /// takes back unless stale; past that it starts afresh) before giving up.
    #[arg(long, default_value_t = 60.0)]
    pub death_timeout: f64,
    /// Seconds after which the worker retires itself gracefully (its data moves to other
    /// workers first), e.g. before a batch job's walltime ends.
    #[arg(long)]
    pub lifetime: Option<f64>,
    /// Seconds by which --lifetime is moved, earlier or later at random, so that the
    /// workers of one job do not all retire at once.
    #[arg(long, default_value_t = 0.0)]
    pub lifetime_stagger: f64,
    /// Do not print the start-up lines (cluster managers use this).
    #[arg(long, hide = true)]
    pub quiet: bool,
    /// A file holding the cluster's shared secret (default: $RASK_AUTH_FILE or
    /// $RASK_AUTH_SECRET; none means no authentication).
    #[arg(long)]
    pub auth_file: Option<std::path::PathBuf>,
    /// TLS on every tcp connection: to the scheduler, to and from peers, to clients (see
    /// the TLS options).
    #[command(flatten)]
    pub tls: super::TlsArgs,
    /// How data moves to peers: auto (same process → inproc, same host → shm, else tcp),
    /// tcp, or shm (default: $RASK_TRANSPORT, else auto).
    #[arg(long)]
    pub transport: Option<rask_transport::TransportMode>,
    /// The device this worker drives: host, sim:N (a simulated GPU) or cuda:N.
    #[arg(long, default_value = "host")]
    pub device: String,
    /// Device memory: a simulated GPU's capacity (default 1 GiB), a CUDA GPU's limit
    /// (default 80 % of its memory free when the worker opens it); bytes (512MiB, 2GiB)
    /// or a fraction of the GPU's memory (0.8).
    #[arg(long)]
    pub device_memory_limit: Option<String>,
    /// GPUs of this host that this worker's GPU reaches over NVLink, e.g. 1 or 1,3.
    #[arg(long, value_delimiter = ',')]
    pub nvlink_peers: Vec<u32>,
    /// Seconds that connecting to the scheduler or a peer, handshake included, may take.
    #[arg(long, default_value_t = rask_transport::DEFAULT_HANDSHAKE_TIMEOUT.as_secs_f64())]
    pub connect_timeout: f64,
    /// Seconds the scheduler or a peer may leave data sent to it unacknowledged before
    /// its connection is presumed dead (a crashed or cut-off host sends no close).
    #[arg(long, default_value_t = rask_transport::DEFAULT_PEER_TIMEOUT.as_secs_f64())]
    pub peer_timeout: f64,
    /// Do not start workers of clients' programs (for their typed ops) when the scheduler
    /// asks: only ops this worker has run here.
    #[arg(long)]
    pub no_programs: bool,
    /// This worker is a program's worker, started by another worker: it starts none
    /// itself, and stops when its standard input closes (its supervisor went away).
    #[arg(long, hide = true)]
    pub supervised: bool,
    /// How log lines are written: text (as Dask's) or json (one object per line).
    #[arg(long, value_enum, default_value_t)]
    pub log_format: super::LogFormat,
    /// Serve the worker's own /health and Prometheus /metrics on HOST:PORT or :PORT (default
    /// :0, a free port; the host defaults to the one the worker listens on). Its address is
    /// told to the scheduler (the dashboard's workers page links it).
    #[arg(long)]
    pub dashboard_address: Option<String>,
    /// No /metrics and /health of the worker's own.
    #[arg(long, conflicts_with = "dashboard_address")]
    pub no_dashboard: bool,
}

impl WorkerArgs {
    /// The options of a worker of `scheduler` with defaults for everything else.
    pub fn new(scheduler: impl Into<String>) -> WorkerArgs {
        WorkerArgs {
            scheduler: Some(scheduler.into()),
            scheduler_file: None,
            nworkers: "1".into(),
            nthreads: None,
            name: None,
            memory_limit: rask_proto::units::MemoryLimit::Auto,
            resources: Vec::new(),
            host: None,
            interface: None,
            worker_port: 0,
            listen: None,
            contact_address: None,
            death_timeout: 60.0,
            lifetime: None,
            lifetime_stagger: 0.0,
            quiet: false,
            auth_file: None,
            tls: super::TlsArgs::default(),
            transport: None,
            device: "host".into(),
            device_memory_limit: None,
            nvlink_peers: Vec::new(),
            connect_timeout: rask_transport::DEFAULT_HANDSHAKE_TIMEOUT.as_secs_f64(),
            peer_timeout: rask_transport::DEFAULT_PEER_TIMEOUT.as_secs_f64(),
            no_programs: false,
            supervised: false,
            log_format: super::LogFormat::default(),
            dashboard_address: None,
            no_dashboard: false,
        }
    }

    /// The command line that gives these options again (after the program and its
    /// `worker` word): the scheduler, then every option that differs from its default.
    pub fn to_args(&self) -> Vec<std::ffi::OsString> {
        let mut out: Vec<std::ffi::OsString> = Vec::new();
        let mut push = |k: &str, v: String| out.extend([k.into(), v.into()]);
        let d = WorkerArgs::new("");
        if let Some(f) = &self.scheduler_file {
            push("--scheduler-file", f.display().to_string());
        }
        if self.nworkers != d.nworkers {
            push("--nworkers", self.nworkers.clone());
        }
        if let Some(n) = self.nthreads {
            push("--nthreads", n.to_string());
        }
        if let Some(n) = &self.name {
            push("--name", n.clone());
        }
        if self.memory_limit != d.memory_limit {
            push("--memory-limit", self.memory_limit.to_string());
        }
        for r in &self.resources {
            push("--resources", r.clone());
        }
        if let Some(h) = &self.host {
            push("--host", h.clone());
        }
        if let Some(i) = &self.interface {
            push("--interface", i.clone());
        }
        if self.worker_port != 0 {
            push("--worker-port", self.worker_port.to_string());
        }
        if let Some(l) = &self.listen {
            push("--listen", l.clone());
        }
        if let Some(c) = &self.contact_address {
            push("--contact-address", c.clone());
        }
        if self.death_timeout != d.death_timeout {
            push("--death-timeout", self.death_timeout.to_string());
        }
        if let Some(l) = self.lifetime {
            push("--lifetime", l.to_string());
        }
        if self.lifetime_stagger != d.lifetime_stagger {
            push("--lifetime-stagger", self.lifetime_stagger.to_string());
        }
        if let Some(f) = &self.auth_file {
            push("--auth-file", f.display().to_string());
        }
        out.extend(self.tls.to_args());
        let mut push = |k: &str, v: String| out.extend([k.into(), v.into()]);
        if let Some(t) = self.transport {
            push("--transport", t.to_string());
        }
        if self.device != d.device {
            push("--device", self.device.clone());
        }
        if let Some(m) = &self.device_memory_limit {
            push("--device-memory-limit", m.clone());
        }
        if !self.nvlink_peers.is_empty() {
            let peers: Vec<String> = self.nvlink_peers.iter().map(u32::to_string).collect();
            push("--nvlink-peers", peers.join(","));
        }
        if self.connect_timeout != d.connect_timeout {
            push("--connect-timeout", self.connect_timeout.to_string());
        }
        if self.peer_timeout != d.peer_timeout {
            push("--peer-timeout", self.peer_timeout.to_string());
        }
        if self.log_format != d.log_format {
            push("--log-format", self.log_format.to_string());
        }
        if let Some(a) = &self.dashboard_address {
            push("--dashboard-address", a.clone());
        }
        let mut flags = Vec::new();
        if self.quiet {
            flags.push("--quiet");
        }
        if self.no_programs {
            flags.push("--no-programs");
        }
        if self.supervised {
            flags.push("--supervised");
        }
        if self.no_dashboard {
            flags.push("--no-dashboard");
        }
        out.extend(flags.into_iter().map(Into::into));
        if let Some(s) = &self.scheduler {
            out.insert(0, s.into());
        }
        out
    }
}

/// `--lifetime` moved by up to `stagger` seconds either way: `unit` in [0, 1) picks
/// where (0: `lifetime - stagger`); never below one second.
pub fn staggered_lifetime(
    lifetime: f64,
    stagger: f64,
    unit: f64,
) -> Result<std::time::Duration, String> {
    if !(lifetime.is_finite() && lifetime > 0.0) {
        return Err(format!(
            "--lifetime {lifetime}: expected a positive number of seconds"
        ));
    }
    if !(stagger.is_finite() && stagger >= 0.0) {
        return Err(format!(
            "--lifetime-stagger {stagger}: expected seconds, 0 or more"
        ));
    }
    let s = lifetime + stagger * (2.0 * unit - 1.0);
    Ok(std::time::Duration::from_secs_f64(s.max(1.0)))
}

/// A number in [0, 1) that differs between processes.
pub(super) fn random_unit() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// How many worker processes `--nworkers` asks for on a machine of `cores` cores: a
/// number (at least 1), or `auto` — one per core up to 4 cores, else the smallest factor
/// of the cores that is at least their square root (Dask's rule).
pub fn nworkers(spec: &str, cores: usize) -> Result<usize, String> {
    let cores = cores.max(1);
    if spec.trim().eq_ignore_ascii_case("auto") {
        if cores <= 4 {
            return Ok(cores);
        }
        let root = (cores as f64).sqrt().ceil() as usize;
        return Ok((root..=cores)
            .find(|f| cores.is_multiple_of(*f))
            .unwrap_or(cores));
    }
    match spec.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "--nworkers {spec:?}: expected a number of workers (at least 1) or auto"
        )),
    }
}
