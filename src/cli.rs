//! The worker command line, shared by `rask worker` and custom worker binaries: a program
//! with its own ops becomes a worker with `rask::cli::worker_main(my_registry())`.

use std::error::Error;
use std::io::Write;

use clap::Args;
use rask_kernels::Registry;
use rask_proto::msg::Resource;
pub use rask_worker::WorkerDevice;

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
    /// Seconds to keep trying to reach the scheduler (at start, and after losing it)
    /// before giving up.
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
    /// How data moves to peers: auto (same process → inproc, same host → shm, else tcp),
    /// tcp, or shm (default: $RASK_TRANSPORT, else auto).
    #[arg(long)]
    pub transport: Option<rask_transport::TransportMode>,
    /// The device this worker drives: host, sim:N (a simulated GPU) or cuda:N.
    #[arg(long, default_value = "host")]
    pub device: String,
    /// Device memory: a simulated GPU's capacity (default 1 GiB), a CUDA GPU's limit
    /// (default 80 % of its memory); bytes (512MiB, 2GiB) or a fraction of the GPU's
    /// memory (0.8).
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
            transport: None,
            device: "host".into(),
            device_memory_limit: None,
            nvlink_peers: Vec::new(),
            connect_timeout: rask_transport::DEFAULT_HANDSHAKE_TIMEOUT.as_secs_f64(),
            peer_timeout: rask_transport::DEFAULT_PEER_TIMEOUT.as_secs_f64(),
            no_programs: false,
            supervised: false,
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
fn random_unit() -> f64 {
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

/// `scheduler` options, like `dask scheduler`'s.
#[derive(Args, Debug, Clone, Default)]
pub struct SchedulerArgs {
    /// The address to listen on (default loopback only; 0.0.0.0 for every interface).
    #[arg(long, conflicts_with = "interface")]
    pub host: Option<String>,
    /// Listen on this network interface's address (eth0, ib0).
    #[arg(long)]
    pub interface: Option<String>,
    /// The address workers and clients should use, HOST or HOST:PORT (behind NAT, in a
    /// container); written to --scheduler-file. Default: the listening address, or when
    /// that is every interface, this host's first non-loopback address.
    #[arg(long)]
    pub contact_address: Option<String>,
    /// Port (0 picks a free one).
    #[arg(long, default_value_t = 8786)]
    pub port: u16,
    /// Write the scheduler's address to this file once listening.
    #[arg(long)]
    pub scheduler_file: Option<std::path::PathBuf>,
    /// Largest frame header accepted, in bytes.
    #[arg(long)]
    pub max_header: Option<u32>,
    /// Largest frame payload accepted, in bytes.
    #[arg(long)]
    pub max_payload: Option<u64>,
    /// Seconds a peer may take to finish a frame it started.
    #[arg(long)]
    pub frame_timeout: Option<f64>,
    /// Seconds a peer may take to connect and complete its handshake.
    #[arg(long)]
    pub connect_timeout: Option<f64>,
    /// Seconds a peer may leave data sent to it unacknowledged before its connection is
    /// presumed dead (a crashed or cut-off host sends no close).
    #[arg(long)]
    pub peer_timeout: Option<f64>,
    /// Seconds of silence after which a worker is presumed dead.
    #[arg(long)]
    pub worker_ttl: Option<f64>,
    /// A file holding the cluster's shared secret (default: $RASK_AUTH_FILE or
    /// $RASK_AUTH_SECRET; none means no authentication).
    #[arg(long)]
    pub auth_file: Option<std::path::PathBuf>,
}

/// Runs a scheduler until SIGTERM or SIGINT, or until a client shuts the cluster down.
pub fn run_scheduler(a: SchedulerArgs) -> Result<(), Box<dyn Error>> {
    let mut cfg = rask_scheduler::SchedulerConfig::default();
    if let Some(h) = a.max_header {
        cfg.conn.limits.max_header = h;
    }
    if let Some(p) = a.max_payload {
        cfg.conn.limits.max_payload = p;
    }
    if let Some(t) = a.frame_timeout {
        cfg.conn.frame_timeout = seconds("--frame-timeout", t)?;
    }
    if let Some(t) = a.connect_timeout {
        cfg.conn.handshake_timeout = seconds("--connect-timeout", t)?;
    }
    if let Some(t) = a.peer_timeout {
        cfg.conn.peer_timeout = seconds("--peer-timeout", t)?;
    }
    if let Some(t) = a.worker_ttl {
        cfg.worker_ttl = seconds("--worker-ttl", t)?;
    }
    cfg.conn.auth = secret(a.auth_file.as_deref())?;
    let auth = if cfg.conn.auth.is_some() {
        "shared secret (HMAC-SHA256)"
    } else {
        "none"
    };
    let bind = rask_transport::addr::bind_addr(
        None,
        a.host.as_deref(),
        a.interface.as_deref(),
        a.port,
        "127.0.0.1",
    )?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = rask_transport::listen(&bind).await?;
        let addr = rask_transport::addr::contact_addr(
            listener.local_addr()?,
            a.contact_address.as_deref(),
            None,
        )?;
        crate::errln!("rask.scheduler - INFO - -----------------------------------------------");
        crate::errln!(
            "rask.scheduler - INFO - Rask version {}",
            rask_proto::RASK_VERSION
        );
        crate::errln!("rask.scheduler - INFO -   Scheduler at: {addr}");
        crate::errln!("rask.scheduler - INFO - Authentication: {auth}");
        crate::errln!("rask.scheduler - INFO - -----------------------------------------------");
        if let Some(f) = &a.scheduler_file {
            // Whole or not at all: workers may be waiting to read it.
            let tmp = f.with_extension("partial");
            std::fs::write(&tmp, format!("{addr}\n"))
                .and_then(|()| std::fs::rename(&tmp, f))
                .map_err(|e| format!("writing {}: {e}", f.display()))?;
        }
        let mut cfg = cfg;
        cfg.address = Some(addr);
        rask_scheduler::run(listener, cfg, shutdown_signal()).await?;
        Ok::<_, Box<dyn Error>>(())
    })
}

/// The scheduler of a `SlurmRunner` step: every interface, a free port, its address in
/// `file`; until a client shuts the cluster down (or SIGTERM).
pub fn run_scheduler_until_shutdown(file: &std::path::Path) -> Result<(), Box<dyn Error>> {
    run_scheduler(SchedulerArgs {
        host: Some("0.0.0.0".into()),
        port: 0,
        scheduler_file: Some(file.to_path_buf()),
        ..SchedulerArgs::default()
    })
}

/// Writes a line of a command's output to stdout. A reader that went away (`rask info |
/// head -1`) ends the program quietly, as it does any Unix tool; it never panics.
pub fn out_line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        let _ = writeln!(std::io::stderr(), "cannot write the output: {e}");
        std::process::exit(1);
    }
}

/// Writes a line to stderr (start-up banners); a closed stderr is not a reason to stop
/// a scheduler or a worker.
pub fn err_line(args: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr().lock(), "{args}");
}

/// `println!` for command output: see [`out_line`].
#[macro_export]
macro_rules! outln {
    ($($t:tt)*) => { $crate::cli::out_line(format_args!($($t)*)) };
}

/// `eprintln!` for banners: see [`err_line`].
#[macro_export]
macro_rules! errln {
    ($($t:tt)*) => { $crate::cli::err_line(format_args!($($t)*)) };
}

/// The `rask worker` options for `device` and its NVLink peers: the inverse of
/// [`parse_device`] plus `--nvlink-peers`.
pub fn device_args(device: &rask_worker::WorkerDevice, nvlink: &[u32]) -> Vec<String> {
    let mut args = match device {
        rask_worker::WorkerDevice::Host => return Vec::new(),
        rask_worker::WorkerDevice::Sim { memory, .. } => {
            vec!["--device-memory-limit".into(), memory.to_string()]
        }
        rask_worker::WorkerDevice::Cuda { memory_limit, .. } => memory_limit
            .map(|m| vec!["--device-memory-limit".into(), m.to_string()])
            .unwrap_or_default(),
    };
    args.extend(["--device".into(), device.label()]);
    if !nvlink.is_empty() {
        let peers: Vec<String> = nvlink.iter().map(u32::to_string).collect();
        args.extend(["--nvlink-peers".into(), peers.join(",")]);
    }
    args
}

/// Parses `--device` and `--device-memory-limit`: bytes, a fraction of the GPU's memory
/// (for a simulated GPU, of the default capacity), or `auto` (a simulated GPU's default
/// capacity, 80 % of a CUDA GPU's memory), read as everywhere else.
pub fn parse_device(
    device: &str,
    memory: Option<&str>,
) -> Result<rask_worker::WorkerDevice, Box<dyn Error>> {
    use rask_proto::units::MemoryLimit;
    let memory = memory
        .map(|m| {
            m.parse::<MemoryLimit>()
                .map_err(|e| format!("--device-memory-limit {e}"))
        })
        .transpose()?;
    let device = device.parse::<rask_proto::DeviceLoc>()?;
    let index = device.index;
    Ok(match device.kind {
        rask_proto::DeviceKind::Host => rask_worker::WorkerDevice::Host,
        rask_proto::DeviceKind::Sim => rask_worker::WorkerDevice::Sim {
            index,
            memory: memory
                .unwrap_or(MemoryLimit::Auto)
                .of(rask_device::sim::DEFAULT_SIM_MEMORY),
        },
        rask_proto::DeviceKind::Cuda => rask_worker::WorkerDevice::Cuda {
            index,
            memory_limit: match memory {
                None | Some(MemoryLimit::Auto) => None,
                Some(MemoryLimit::Bytes(b)) => Some(b),
                Some(f @ MemoryLimit::Fraction(_)) => {
                    Some(f.of(rask_device::cuda::total_memory(index)?))
                }
            },
        },
    })
}

/// A positive, finite number of seconds given for `option`.
pub fn seconds(option: &str, s: f64) -> Result<std::time::Duration, String> {
    if s.is_finite() && s > 0.0 {
        Ok(std::time::Duration::from_secs_f64(s))
    } else {
        Err(format!(
            "{option} {s}: expected a positive number of seconds"
        ))
    }
}

/// The secret from `--auth-file`, else from the environment.
pub fn secret(
    auth_file: Option<&std::path::Path>,
) -> Result<Option<rask_transport::Secret>, Box<dyn Error>> {
    Ok(match auth_file {
        Some(p) => Some(rask_transport::Secret::from_file(p)?),
        None => rask_transport::Secret::from_env()?,
    })
}

#[derive(clap::Parser)]
struct WorkerCommand {
    #[command(subcommand)]
    cmd: WorkerSub,
}

#[derive(clap::Subcommand)]
enum WorkerSub {
    /// Run a worker that joins a scheduler.
    Worker(WorkerArgs),
}

/// Parses `PROGRAM worker SCHEDULER [options]` from the process arguments and runs a
/// worker with `registry` until the scheduler goes away or SIGTERM/SIGINT arrives.
pub fn worker_main(registry: Registry) -> Result<(), Box<dyn Error>> {
    let WorkerCommand {
        cmd: WorkerSub::Worker(args),
    } = clap::Parser::parse();
    run_worker(args, registry)
}

/// Runs a worker from parsed options: one worker in this process, or, with
/// `--nworkers` above 1, that many worker processes started and supervised by this one.
pub fn run_worker(args: WorkerArgs, registry: Registry) -> Result<(), Box<dyn Error>> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let n = nworkers(&args.nworkers, cores)?;
    let nthreads = args.nthreads.unwrap_or((cores / n).max(1) as u32);
    if nthreads == 0 {
        return Err("--nthreads 0: a worker needs at least one thread".into());
    }
    let available = rask_worker::available_memory();
    let memory = match args.memory_limit {
        rask_proto::units::MemoryLimit::Auto => available / n as u64,
        l => l.of(available),
    };
    if n > 1 {
        return supervise_workers(args, n, nthreads, memory);
    }
    let death = seconds("--death-timeout", args.death_timeout)?;
    let mut deadline = std::time::Instant::now() + death;
    loop {
        let scheduler = scheduler_address(&args, deadline)?;
        match run_one_worker(&args, &registry, &scheduler, nthreads, memory, deadline)? {
            Ended::Closed => return Ok(()),
            Ended::Lost(why) if !args.supervised => {
                // As a nanny would: join again as a new worker (what this one held is
                // gone; the scheduler recomputes it), for up to --death-timeout.
                tracing::warn!(
                    "lost the scheduler ({why}); joining it again for up to {} s",
                    death.as_secs_f64()
                );
                deadline = std::time::Instant::now() + death;
            }
            Ended::Lost(why) => return Err(WorkerError::SchedulerLost(why).into()),
        }
    }
}

use rask_worker::WorkerError;

/// How a worker's run ended.
enum Ended {
    /// The scheduler closed it, or it was stopped: the process ends.
    Closed,
    /// The scheduler went away: try to join again.
    Lost(String),
}

/// The scheduler's address: given, or read from `--scheduler-file` once it exists (a
/// worker may start before its scheduler), until `deadline`.
fn scheduler_address(
    args: &WorkerArgs,
    deadline: std::time::Instant,
) -> Result<String, Box<dyn Error>> {
    if let Some(s) = &args.scheduler {
        return Ok(s.clone());
    }
    let Some(file) = &args.scheduler_file else {
        return Err("give the scheduler's address or --scheduler-file".into());
    };
    let mut told = false;
    loop {
        match read_scheduler_file(file) {
            Ok(a) => return Ok(a),
            Err(e) if !told => {
                tracing::info!("waiting for the scheduler's address in {e}");
                told = true;
            }
            Err(e) if std::time::Instant::now() >= deadline => {
                return Err(format!(
                    "no scheduler address in {} within --death-timeout: {e}",
                    file.display()
                )
                .into())
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    }
}

/// The address in a scheduler file: its first line (`tcp://host:port`).
pub fn read_scheduler_file(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    match text.lines().next().map(str::trim) {
        Some(a) if !a.is_empty() => Ok(a.to_string()),
        _ => Err(format!("{}: empty", path.display())),
    }
}

/// Whether a failure to reach the scheduler may pass if tried again (it is not up yet,
/// or restarting), rather than a refusal that will be the same next time.
fn worth_retrying(e: &WorkerError) -> bool {
    use rask_transport::TransportError as T;
    match e {
        WorkerError::Connect { source, .. } => matches!(
            source,
            T::Io(_) | T::Closed | T::ConnectTimeout(_) | T::Timeout(_)
        ),
        _ => false,
    }
}

/// Starts `--nworkers` worker processes of this program and supervises them.
fn supervise_workers(
    args: WorkerArgs,
    n: usize,
    nthreads: u32,
    memory: u64,
) -> Result<(), Box<dyn Error>> {
    if args.listen.is_some() {
        return Err("--listen names one address; with --nworkers give --host and --worker-port (each worker takes the next port)".into());
    }
    let base = args
        .name
        .clone()
        .unwrap_or_else(|| format!("worker-{}", std::process::id()));
    let program = std::env::current_exe()?;
    let launches = (0..n)
        .map(|i| {
            let mut a = args.clone();
            a.nworkers = "1".into();
            a.name = Some(format!("{base}-{i}"));
            a.nthreads = Some(nthreads);
            a.memory_limit = rask_proto::units::MemoryLimit::Bytes(memory);
            if a.worker_port != 0 {
                a.worker_port = a.worker_port.saturating_add(i as u16);
            }
            let mut argv = vec![std::ffi::OsString::from(crate::WORKER_ENTRY_ARG)];
            argv.extend(a.to_args());
            crate::supervise::Launch {
                label: format!("{base}-{i}"),
                args: argv,
                env: Vec::new(),
                cpus: Vec::new(),
            }
        })
        .collect();
    match crate::supervise::run("rask.worker", program, launches, 5)? {
        std::process::ExitCode::SUCCESS => Ok(()),
        _ => Err("every worker was given up on".into()),
    }
}

/// Runs one worker of `scheduler` in this process until it ends.
fn run_one_worker(
    args: &WorkerArgs,
    registry: &Registry,
    scheduler: &str,
    nthreads: u32,
    memory: u64,
    deadline: std::time::Instant,
) -> Result<Ended, Box<dyn Error>> {
    let mut cfg = rask_worker::WorkerConfig::new(scheduler);
    // A worker program is a worker alone in its process: its process's memory is its own.
    cfg.own_process = true;
    cfg.nthreads = nthreads;
    cfg.registry = registry.clone();
    if let Some(n) = &args.name {
        cfg.name = n.clone();
    }
    cfg.memory_limit = memory;
    cfg.listen = rask_transport::addr::bind_addr(
        args.listen.as_deref(),
        args.host.as_deref(),
        args.interface.as_deref(),
        args.worker_port,
        "127.0.0.1",
    )?;
    cfg.contact = args.contact_address.clone();
    cfg.lifetime = match args.lifetime {
        Some(l) => Some(staggered_lifetime(l, args.lifetime_stagger, random_unit())?),
        None => None,
    };
    cfg.resources = parse_resources(&args.resources)?;
    cfg.conn.auth = secret(args.auth_file.as_deref())?;
    cfg.conn.handshake_timeout = seconds("--connect-timeout", args.connect_timeout)?;
    cfg.conn.peer_timeout = seconds("--peer-timeout", args.peer_timeout)?;
    cfg.transport = match args.transport {
        Some(t) => t,
        None => rask_transport::TransportMode::from_env()?.unwrap_or_default(),
    };
    let transport = cfg.transport;
    cfg.device = parse_device(&args.device, args.device_memory_limit.as_deref())?;
    cfg.nvlink = args.nvlink_peers.clone();
    let device = match &cfg.device {
        rask_worker::WorkerDevice::Host => "host (cpu)".to_string(),
        rask_worker::WorkerDevice::Sim { index, memory } => format!(
            "sim:{index} (simulated GPU, {:.2} GiB{})",
            *memory as f64 / (1u64 << 30) as f64,
            if cfg.nvlink.is_empty() {
                String::new()
            } else {
                format!(", NVLink to {:?}", cfg.nvlink)
            }
        ),
        rask_worker::WorkerDevice::Cuda { index, .. } => format!("cuda:{index}"),
    };
    if !args.no_programs && !args.supervised {
        cfg.programs = Some(program_launcher(
            args, &cfg.name, scheduler, nthreads, memory,
        ));
    }
    let authenticated = cfg.conn.auth.is_some();
    let quiet = args.quiet;
    let supervised = args.supervised;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let (nthreads, memory, name) = (cfg.nthreads, cfg.memory_limit, cfg.name.clone());
        let resources = cfg.resources.clone();
        let ops = cfg.registry.names().len();
        let mut pause = std::time::Duration::from_millis(50);
        let mut shutdown = std::pin::pin!(shutdown_signal());
        let w = loop {
            match rask_worker::Worker::connect(cfg.clone()).await {
                Ok(w) => break w,
                Err(e) if worth_retrying(&e) && std::time::Instant::now() < deadline => {
                    tracing::info!("{e}; trying again");
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = &mut shutdown => return Ok(Ended::Closed),
                    }
                    pause = (pause * 2).min(std::time::Duration::from_secs(2));
                }
                Err(e) => return Err(e.into()),
            }
        };
        let shm = w.shm_addr().map(str::to_string);
        if !quiet {
            crate::errln!(
                "rask.worker - INFO -       Start worker at: {}",
                w.listen_addr()
            );
            crate::errln!("rask.worker - INFO -          Worker name: {name}");
            crate::errln!("rask.worker - INFO - -------------------------------------------------");
            crate::errln!("rask.worker - INFO -               Threads: {nthreads}");
            crate::errln!(
                "rask.worker - INFO -                Memory: {:.2} GiB",
                memory as f64 / (1u64 << 30) as f64
            );
            crate::errln!("rask.worker - INFO -                Device: {device}");
            crate::errln!("rask.worker - INFO -                   Ops: {ops}");
            crate::errln!(
                "rask.worker - INFO -             Transport: {transport} (tcp{})",
                match &shm {
                    Some(a) => format!(", shm at {a}"),
                    None => String::new(),
                }
            );
            crate::errln!(
                "rask.worker - INFO -        Authentication: {}",
                if authenticated {
                    "shared secret (HMAC-SHA256)"
                } else {
                    "none"
                }
            );
            if !resources.is_empty() {
                let r: Vec<String> = resources
                    .iter()
                    .map(|r| format!("{}={}", r.name, r.amount))
                    .collect();
                crate::errln!(
                    "rask.worker - INFO -             Resources: {}",
                    r.join(", ")
                );
            }
            crate::errln!(
                "rask.worker - INFO -         Registered to: worker id {}",
                w.id()
            );
            crate::errln!("rask.worker - INFO - -------------------------------------------------");
        }
        let outcome = if supervised {
            w.run(async {
                tokio::select! {
                    _ = &mut shutdown => {}
                    _ = stdin_closed() => {}
                }
            })
            .await
        } else {
            w.run(&mut shutdown).await
        };
        match outcome {
            Ok(()) => Ok(Ended::Closed),
            Err(WorkerError::SchedulerLost(why)) => Ok(Ended::Lost(why)),
            Err(e) => Err(e.into()),
        }
    })
}

/// Parses `NAME=AMOUNT` resource specs (comma-separated or repeated).
pub fn parse_resources(specs: &[String]) -> Result<Vec<Resource>, String> {
    specs
        .iter()
        .flat_map(|s| s.split(','))
        .filter(|s| !s.is_empty())
        .map(|s| {
            let (name, amount) = s
                .split_once('=')
                .ok_or_else(|| format!("resource {s:?}: expected NAME=AMOUNT"))?;
            let amount: f64 = amount
                .parse()
                .map_err(|_| format!("resource {s:?}: bad amount"))?;
            Ok(Resource {
                name: name.trim().into(),
                amount,
            })
        })
        .collect()
}

/// How a worker started with `args` (named `name`, of `scheduler`, with `nthreads`
/// threads and `memory` bytes) starts a worker of a program: the program's executable
/// with [`crate::WORKER_ENTRY_ARG`] and the same scheduler, resources, device, transport,
/// interface and secret, on a port of its own.
pub fn program_launcher(
    args: &WorkerArgs,
    name: &str,
    scheduler: &str,
    nthreads: u32,
    memory: u64,
) -> rask_worker::ProgramLauncher {
    let mut child = args.clone();
    child.scheduler = Some(scheduler.to_string());
    child.scheduler_file = None;
    child.nworkers = "1".into();
    child.nthreads = Some(nthreads);
    child.memory_limit = rask_proto::units::MemoryLimit::Bytes(memory);
    child.worker_port = 0;
    if let Some(l) = child.listen.take() {
        // Another port on the same interface.
        let l = l.strip_prefix("tcp://").unwrap_or(&l);
        child.host = Some(
            l.rsplit_once(':')
                .map_or("127.0.0.1", |(h, _)| h)
                .to_string(),
        );
    }
    // A contact host, without the port (the child's port is its own).
    child.contact_address = child.contact_address.as_deref().map(|c| {
        let c = c.strip_prefix("tcp://").unwrap_or(c);
        match c.rsplit_once(':') {
            Some((h, p)) if p.parse::<u16>().is_ok() && (!h.contains(':') || h.ends_with(']')) => {
                h.to_string()
            }
            _ => c.to_string(),
        }
    });
    child.quiet = true;
    child.supervised = true;
    let name = name.to_string();
    let command = move |path: &std::path::Path| {
        let mut cmd = std::process::Command::new(path);
        let program = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut a = child.clone();
        a.name = Some(format!("{name}/{program}"));
        cmd.arg(crate::WORKER_ENTRY_ARG).args(a.to_args());
        cmd
    };
    rask_worker::ProgramLauncher {
        cache: rask_worker::ProgramLauncher::default_cache(),
        command: std::sync::Arc::new(command),
    }
}

/// Completes when standard input reaches its end (or cannot be read).
async fn stdin_closed() {
    let _ = tokio::task::spawn_blocking(|| {
        let mut buf = [0u8; 256];
        let mut stdin = std::io::stdin();
        while matches!(std::io::Read::read(&mut stdin, &mut buf), Ok(n) if n > 0) {}
    })
    .await;
}

/// Logs to stderr at `default` level unless `RUST_LOG` (or `RASK_LOG`) says otherwise;
/// colour only on a terminal (a log file gets plain text). Does nothing if the program
/// already set up logging.
pub fn init_logging(default: &str) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .or_else(|_| tracing_subscriber::EnvFilter::try_from_env("RASK_LOG"))
                .unwrap_or_else(|_| default.into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        w: WorkerArgs,
    }

    fn parse(argv: &[&str]) -> Result<WorkerArgs, clap::Error> {
        Cmd::try_parse_from(std::iter::once("w").chain(argv.iter().copied())).map(|c| c.w)
    }

    #[test]
    fn a_lifetime_is_staggered_within_its_bounds_and_never_below_a_second() {
        let s = |l, st, u| staggered_lifetime(l, st, u).map(|d| d.as_secs_f64());
        assert_eq!(s(3300.0, 240.0, 0.0), Ok(3060.0));
        assert_eq!(s(3300.0, 240.0, 0.5), Ok(3300.0));
        assert_eq!(s(3300.0, 240.0, 0.75), Ok(3420.0));
        assert_eq!(s(60.0, 0.0, 0.9), Ok(60.0));
        assert_eq!(s(2.0, 10.0, 0.0), Ok(1.0));
        assert!(s(0.0, 0.0, 0.5).unwrap_err().contains("--lifetime"));
        assert!(s(10.0, -1.0, 0.5)
            .unwrap_err()
            .contains("--lifetime-stagger"));
        let u = random_unit();
        assert!((0.0..1.0).contains(&u), "{u}");
    }

    #[test]
    fn device_memory_limits_read_as_every_other_size() {
        use rask_worker::WorkerDevice;
        let sim = |m: Option<&str>| parse_device("sim:1", m).map_err(|e| e.to_string());
        let one_gib = rask_device::sim::DEFAULT_SIM_MEMORY;
        assert_eq!(
            sim(None),
            Ok(WorkerDevice::Sim {
                index: 1,
                memory: one_gib
            })
        );
        assert_eq!(
            sim(Some("auto")),
            Ok(WorkerDevice::Sim {
                index: 1,
                memory: one_gib
            })
        );
        assert_eq!(
            sim(Some("0.5")),
            Ok(WorkerDevice::Sim {
                index: 1,
                memory: one_gib / 2
            })
        );
        assert_eq!(
            sim(Some("2GiB")),
            Ok(WorkerDevice::Sim {
                index: 1,
                memory: 2 << 30
            })
        );
        assert!(sim(Some("0"))
            .unwrap_err()
            .contains("--device-memory-limit"));
        let cuda = |m: Option<&str>| parse_device("cuda:0", m).map_err(|e| e.to_string());
        assert_eq!(
            cuda(Some("30GiB")),
            Ok(WorkerDevice::Cuda {
                index: 0,
                memory_limit: Some(30 << 30)
            })
        );
        assert_eq!(
            cuda(None),
            Ok(WorkerDevice::Cuda {
                index: 0,
                memory_limit: None
            })
        );
        // A fraction is of the GPU's memory: without a driver, that is an error saying so,
        // never a limit of 0 bytes.
        if rask_device::cuda::device_count().is_err() {
            assert!(cuda(Some("0.8")).is_err());
        }
    }

    #[test]
    fn nworkers_is_a_number_or_dasks_auto() {
        assert_eq!(nworkers("3", 2), Ok(3));
        assert_eq!(nworkers("auto", 1), Ok(1));
        assert_eq!(nworkers("auto", 4), Ok(4));
        // Above 4 cores: the smallest factor at least the square root.
        assert_eq!(nworkers("auto", 8), Ok(4));
        assert_eq!(nworkers("AUTO", 16), Ok(4));
        assert_eq!(nworkers("auto", 12), Ok(4));
        assert_eq!(nworkers("auto", 7), Ok(7));
        assert_eq!(nworkers("auto", 64), Ok(8));
        for bad in ["0", "-1", "two", ""] {
            assert!(
                nworkers(bad, 8).unwrap_err().contains("--nworkers"),
                "{bad}"
            );
        }
    }

    #[test]
    fn worker_options_given_again_parse_to_the_same_options() {
        let full = [
            "tcp://10.0.0.1:8786",
            "--nworkers",
            "2",
            "--nthreads",
            "3",
            "--name",
            "w",
            "--memory-limit",
            "4GiB",
            "--resources",
            "gpu=1",
            "--host",
            "0.0.0.0",
            "--worker-port",
            "9000",
            "--contact-address",
            "203.0.113.9",
            "--death-timeout",
            "7",
            "--lifetime",
            "3300",
            "--lifetime-stagger",
            "240",
            "--auth-file",
            "/s",
            "--transport",
            "tcp",
            "--device",
            "sim:1",
            "--device-memory-limit",
            "0.5",
            "--nvlink-peers",
            "0,2",
            "--connect-timeout",
            "3",
            "--peer-timeout",
            "4",
            "--no-programs",
            "--quiet",
        ];
        let a = parse(&full).unwrap();
        assert_eq!(
            a.memory_limit,
            rask_proto::units::MemoryLimit::Bytes(4 << 30)
        );
        let again = a.to_args();
        let b = parse(
            &again
                .iter()
                .map(|s| s.to_str().unwrap())
                .collect::<Vec<_>>(),
        )
        .unwrap();
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        // Defaults are not spelled out.
        let d = parse(&["tcp://h:1"]).unwrap();
        assert_eq!(d.to_args(), vec![std::ffi::OsString::from("tcp://h:1")]);
        // A scheduler file instead of an address.
        let f = parse(&["--scheduler-file", "/tmp/s.json", "--interface", "lo"]).unwrap();
        assert_eq!(f.scheduler, None);
        let again: Vec<String> = f
            .to_args()
            .iter()
            .map(|s| s.to_str().unwrap().to_string())
            .collect();
        assert_eq!(
            again,
            ["--scheduler-file", "/tmp/s.json", "--interface", "lo"]
        );
    }

    #[test]
    fn worker_options_that_cannot_go_together_are_refused() {
        assert!(parse(&[]).is_err());
        assert!(parse(&["tcp://h:1", "--scheduler-file", "f"]).is_err());
        assert!(parse(&["tcp://h:1", "--host", "0.0.0.0", "--interface", "lo"]).is_err());
        assert!(parse(&["tcp://h:1", "--listen", "0.0.0.0:1", "--host", "0.0.0.0"]).is_err());
        assert!(parse(&["tcp://h:1", "--memory-limit", "0"]).is_err());
        assert!(parse(&["tcp://h:1", "--memory-limit", "lots"]).is_err());
        let a = parse(&["tcp://h:1", "--memory-limit", "0.25"]).unwrap();
        assert_eq!(
            a.memory_limit,
            rask_proto::units::MemoryLimit::Fraction(0.25)
        );
    }

    #[test]
    fn a_scheduler_file_gives_its_first_line() {
        let dir = std::env::temp_dir().join(format!("rask-sf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("scheduler");
        std::fs::write(&f, "tcp://10.0.0.1:8786\n").unwrap();
        assert_eq!(read_scheduler_file(&f).unwrap(), "tcp://10.0.0.1:8786");
        std::fs::write(&f, "\n").unwrap();
        assert!(read_scheduler_file(&f).unwrap_err().contains("empty"));
        assert!(read_scheduler_file(&dir.join("none")).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
