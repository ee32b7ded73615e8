//! `rask worker`: its options, one worker in this process or several supervised, joining
//! (and joining again) its scheduler, and the workers of clients' programs.

use std::error::Error;

use rask_kernels::Registry;
use rask_worker::WorkerError;

use super::worker_args::{nworkers, random_unit, staggered_lifetime, WorkerArgs};
use super::{parse_device, parse_resources, seconds, secret, shutdown_signal};

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
    match crate::supervise::run(crate::supervise::Supervisor::Worker, program, launches, 5)? {
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
    cfg.reconnect = match seconds("--death-timeout", args.death_timeout)? {
        d if d.is_zero() => None,
        d => Some(d),
    };
    cfg.lifetime = match args.lifetime {
        Some(l) => Some(staggered_lifetime(l, args.lifetime_stagger, random_unit())?),
        None => None,
    };
    cfg.resources = parse_resources(&args.resources)?;
    cfg.conn.auth = secret(args.auth_file.as_deref())?;
    cfg.conn.tls = args.tls.load(
        "a worker",
        super::Needs {
            serve: true,
            connect: true,
        },
    )?;
    let tls = cfg.conn.tls.as_ref().map(|t| t.describe());
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
    if !args.no_dashboard {
        let spec = args.dashboard_address.as_deref().unwrap_or(":0");
        if let Some((hook, url)) = super::worker_metrics::serve(spec, &cfg) {
            cfg.on_heartbeat = Some(hook);
            cfg.dashboard = url;
        }
    }
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
            tracing::info!(
                target: "rask.worker",
                "      Start worker at: {}",
                w.listen_addr()
            );
            tracing::info!(target: "rask.worker", "         Worker name: {name}");
            tracing::info!(target: "rask.worker", "-------------------------------------------------");
            tracing::info!(target: "rask.worker", "              Threads: {nthreads}");
            tracing::info!(
                target: "rask.worker",
                "               Memory: {:.2} GiB",
                memory as f64 / (1u64 << 30) as f64
            );
            tracing::info!(target: "rask.worker", "               Device: {device}");
            tracing::info!(target: "rask.worker", "                  Ops: {ops}");
            tracing::info!(
                target: "rask.worker",
                "            Transport: {transport} (tcp{})",
                match &shm {
                    Some(a) => format!(", shm at {a}"),
                    None => String::new(),
                }
            );
            tracing::info!(
                target: "rask.worker",
                "       Authentication: {}",
                if authenticated {
                    "shared secret (HMAC-SHA256)"
                } else {
                    "none"
                }
            );
            tracing::info!(
                target: "rask.worker",
                "                  TLS: {}",
                tls.as_deref().unwrap_or("none (plaintext)")
            );
            if !resources.is_empty() {
                let r: Vec<String> = resources
                    .iter()
                    .map(|r| format!("{}={}", r.name, r.amount))
                    .collect();
                tracing::info!(
                    target: "rask.worker",
                    "            Resources: {}",
                    r.join(", ")
                );
            }
            tracing::info!(
                target: "rask.worker",
                "        Registered to: worker id {}",
                w.id()
            );
            tracing::info!(target: "rask.worker", "-------------------------------------------------");
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
