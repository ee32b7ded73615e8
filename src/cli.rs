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
    /// The scheduler, tcp://host:port.
    pub scheduler: String,
    /// Tasks run at once.
    #[arg(long, default_value_t = 1)]
    pub nthreads: u32,
    /// Worker name (default: worker-PID, this process's id).
    #[arg(long)]
    pub name: Option<String>,
    /// Memory limit in bytes (default: all of the machine's memory).
    #[arg(long)]
    pub memory_limit: Option<u64>,
    /// A resource this worker offers, NAME=AMOUNT (repeatable or comma-separated), e.g. gpu=1.
    #[arg(long)]
    pub resources: Vec<String>,
    /// Where to serve data to peers and clients.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
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
    /// (default 80 % of its memory); bytes or e.g. 512MiB, 2GiB.
    #[arg(long)]
    pub device_memory_limit: Option<String>,
    /// GPUs of this host that this worker's GPU reaches over NVLink, e.g. 1 or 1,3.
    #[arg(long, value_delimiter = ',')]
    pub nvlink_peers: Vec<u32>,
    /// Seconds that connecting to the scheduler or a peer, handshake included, may take.
    #[arg(long, default_value_t = rask_transport::DEFAULT_HANDSHAKE_TIMEOUT.as_secs_f64())]
    pub connect_timeout: f64,
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
            scheduler: scheduler.into(),
            nthreads: 1,
            name: None,
            memory_limit: None,
            resources: Vec::new(),
            listen: "127.0.0.1:0".into(),
            quiet: false,
            auth_file: None,
            transport: None,
            device: "host".into(),
            device_memory_limit: None,
            nvlink_peers: Vec::new(),
            connect_timeout: rask_transport::DEFAULT_HANDSHAKE_TIMEOUT.as_secs_f64(),
            no_programs: false,
            supervised: false,
        }
    }
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

/// Parses `--device` and `--device-memory-limit`.
pub fn parse_device(
    device: &str,
    memory: Option<&str>,
) -> Result<rask_worker::WorkerDevice, Box<dyn Error>> {
    let memory = memory.map(rask_device::sim::parse_bytes).transpose()?;
    let device = device.parse::<rask_proto::DeviceLoc>()?;
    let index = device.index;
    Ok(match device.kind {
        rask_proto::DeviceKind::Host => rask_worker::WorkerDevice::Host,
        rask_proto::DeviceKind::Sim => rask_worker::WorkerDevice::Sim {
            index,
            memory: memory.unwrap_or(rask_device::sim::DEFAULT_SIM_MEMORY),
        },
        rask_proto::DeviceKind::Cuda => rask_worker::WorkerDevice::Cuda {
            index,
            memory_limit: memory,
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

/// Runs a worker from parsed options.
pub fn run_worker(args: WorkerArgs, registry: Registry) -> Result<(), Box<dyn Error>> {
    let given = args.clone();
    let mut cfg = rask_worker::WorkerConfig::new(args.scheduler);
    // A worker program is a worker alone in its process: its process's memory is its own.
    cfg.own_process = true;
    cfg.nthreads = args.nthreads;
    cfg.registry = registry;
    if let Some(n) = args.name {
        cfg.name = n;
    }
    if let Some(m) = args.memory_limit {
        cfg.memory_limit = m;
    }
    cfg.listen = args.listen;
    cfg.resources = parse_resources(&args.resources)?;
    cfg.conn.auth = secret(args.auth_file.as_deref())?;
    cfg.conn.handshake_timeout = seconds("--connect-timeout", args.connect_timeout)?;
    cfg.transport = match args.transport {
        Some(t) => t,
        None => rask_transport::TransportMode::from_env()?.unwrap_or_default(),
    };
    let transport = cfg.transport;
    cfg.device = parse_device(&args.device, args.device_memory_limit.as_deref())?;
    cfg.nvlink = args.nvlink_peers;
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
        cfg.programs = Some(program_launcher(&given, &cfg.name));
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
        let w = rask_worker::Worker::connect(cfg).await?;
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
        if supervised {
            w.run(async {
                tokio::select! {
                    _ = shutdown_signal() => {}
                    _ = stdin_closed() => {}
                }
            })
            .await?;
        } else {
            w.run(shutdown_signal()).await?;
        }
        Ok::<_, Box<dyn Error>>(())
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

/// How a worker started with `args` (named `name`) starts a worker of a program: the
/// program's executable with [`crate::WORKER_ENTRY_ARG`] and the same scheduler,
/// resources, device, transport and secret.
pub fn program_launcher(args: &WorkerArgs, name: &str) -> rask_worker::ProgramLauncher {
    let args = args.clone();
    let name = name.to_string();
    let command = move |path: &std::path::Path| {
        let mut cmd = std::process::Command::new(path);
        let program = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Another port on the same interface.
        let host = args.listen.rsplit_once(':').map_or("127.0.0.1", |(h, _)| h);
        cmd.arg(crate::WORKER_ENTRY_ARG)
            .arg(&args.scheduler)
            .args(["--nthreads", &args.nthreads.to_string()])
            .args(["--name", &format!("{name}/{program}")])
            .args(["--listen", &format!("{host}:0")])
            .args(["--device", &args.device])
            .args(["--connect-timeout", &args.connect_timeout.to_string()])
            .args(["--quiet", "--supervised"]);
        if let Some(m) = args.memory_limit {
            cmd.args(["--memory-limit", &m.to_string()]);
        }
        if let Some(m) = &args.device_memory_limit {
            cmd.args(["--device-memory-limit", m]);
        }
        if !args.nvlink_peers.is_empty() {
            let peers: Vec<String> = args.nvlink_peers.iter().map(u32::to_string).collect();
            cmd.args(["--nvlink-peers", &peers.join(",")]);
        }
        for r in &args.resources {
            cmd.args(["--resources", r]);
        }
        if let Some(f) = &args.auth_file {
            cmd.arg("--auth-file").arg(f);
        }
        if let Some(t) = args.transport {
            cmd.args(["--transport", &t.to_string()]);
        }
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
