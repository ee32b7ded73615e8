//! The `rask` command: `scheduler`, `worker`, `demo`, `info`.

use std::time::Instant;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use rask::cli::LogFormat;
use rask::{Arg, Client, LocalCluster, Registry};

/// The scheduler and workers allocate and free a few small values per task (keys,
/// messages, table entries); mimalloc does that in about a fifth less of the scheduler's
/// CPU than glibc's allocator, with less memory held (BENCHMARKS.md, "The allocator").
/// Built without transparent huge pages: with them, each fresh or purged 2 MiB region
/// is cleared whole on its first touch, which cost more than the allocator saved.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "rask",
    version,
    about = "A distributed task cluster: scheduler, workers, client"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a scheduler.
    Scheduler(rask::cli::SchedulerArgs),
    /// Run a worker that joins a scheduler.
    #[command(alias = "rask-worker")]
    Worker(rask::cli::WorkerArgs),
    /// Start a local cluster and run a demo computation.
    Demo {
        /// Workers to start.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Run workers as separate processes instead of threads.
        #[arg(long)]
        processes: bool,
        /// Leaves of the reduction.
        #[arg(long, default_value_t = 20_000)]
        n: i64,
        /// Side of the random square array of the array part (chunks are a quarter of it).
        #[arg(long, default_value_t = 2048)]
        array_size: u64,
        /// How log lines are written: text (as Dask's) or json (one object per line).
        #[arg(long, value_enum, default_value_t)]
        log_format: LogFormat,
    },
    /// Print this build's version, op registry and host (its GPUs and their MIG
    /// instances); with --scheduler, also that scheduler's workers and their devices.
    Info {
        /// A running scheduler, tcp://host:port: print one line per worker (name, device,
        /// device memory limit, transport, tasks run, bytes spilled and received).
        #[arg(long)]
        scheduler: Option<String>,
        /// The cluster's shared secret (default: $RASK_AUTH_FILE or $RASK_AUTH_SECRET).
        #[arg(long, requires = "scheduler")]
        auth_file: Option<std::path::PathBuf>,
    },
    /// Start a cluster over SSH: the scheduler on the first host, a worker on each other
    /// one (repeat a host for several); logs are streamed here, and Ctrl-C (or SIGTERM)
    /// stops every remote process.
    Ssh {
        /// The hosts (`host` or `user@host`).
        #[arg(required = true, num_args = 2..)]
        hosts: Vec<String>,
        /// The port of the hosts' sshd.
        #[arg(long)]
        ssh_port: Option<u16>,
        /// The remote user.
        #[arg(long)]
        ssh_user: Option<String>,
        /// The private key.
        #[arg(long, short = 'i')]
        identity: Option<std::path::PathBuf>,
        /// An ssh option, e.g. -o StrictHostKeyChecking=accept-new (repeatable).
        #[arg(long = "ssh-option", short = 'o')]
        ssh_options: Vec<String>,
        /// The rask program on the hosts.
        #[arg(long, default_value = "rask")]
        remote_rask: String,
        /// Options of `rask scheduler`, split at spaces (default: --host 0.0.0.0 --port
        /// 8786).
        #[arg(long, allow_hyphen_values = true)]
        scheduler_options: Option<String>,
        /// Options of each `rask worker`, split at spaces (default: --host 0.0.0.0).
        #[arg(long, allow_hyphen_values = true)]
        worker_options: Option<String>,
        /// How log lines are written: text (as Dask's) or json (one object per line).
        #[arg(long, value_enum, default_value_t)]
        log_format: LogFormat,
    },
    /// Workers as Slurm jobs (like dask-jobqueue's SLURMCluster): the scheduler runs
    /// here, each job runs `rask worker` processes that join it; Ctrl-C (or SIGTERM)
    /// cancels the jobs. With --print-script, print the job script and exit.
    Slurm {
        /// Jobs to submit.
        #[arg(long, default_value_t = 1)]
        jobs: usize,
        /// Cores of each job (--cpus-per-task).
        #[arg(long, default_value_t = 1)]
        cores: u32,
        /// Memory of each job (--mem), e.g. 4GiB.
        #[arg(long, default_value = "1GiB", value_parser = rask_proto::units::parse_bytes)]
        memory: u64,
        /// Worker processes per job (default: as dask-jobqueue, from the cores).
        #[arg(long)]
        processes: Option<u32>,
        /// The jobs' time limit (HH:MM:SS, D-HH:MM:SS or minutes).
        #[arg(long, default_value = "00:30:00")]
        walltime: rask::slurm::Walltime,
        /// Partition (-p).
        #[arg(long)]
        partition: Option<String>,
        /// Account (-A).
        #[arg(long)]
        account: Option<String>,
        /// An extra #SBATCH directive, e.g. --gres=gpu:1 (repeatable).
        #[arg(long, allow_hyphen_values = true)]
        job_extra: Vec<String>,
        /// Where the jobs write their output.
        #[arg(long)]
        log_directory: Option<String>,
        /// The rask program on the compute nodes (default: this one).
        #[arg(long)]
        remote_rask: Option<String>,
        /// Where the scheduler listens (default every interface, announcing this host's
        /// address).
        #[arg(long, default_value = "0.0.0.0")]
        scheduler_host: String,
        /// Print the job script and exit.
        #[arg(long)]
        print_script: bool,
        /// Submit to PBS (PBS Pro, OpenPBS, Torque: qsub, qdel, #PBS) instead of Slurm.
        #[arg(long)]
        pbs: bool,
        /// How log lines are written: text (as Dask's) or json (one object per line).
        #[arg(long, value_enum, default_value_t)]
        log_format: LogFormat,
    },
    /// Print the effective configuration: every option of `rask scheduler`, `rask
    /// worker` and `cuda-worker`, its value, and whether it came from a file, the
    /// environment or the default.
    Config,
    /// Kubernetes: print the manifests of a cluster (a scheduler Deployment and Service,
    /// a worker Deployment) for `kubectl apply -f -`.
    K8s {
        #[command(subcommand)]
        cmd: K8sCmd,
    },
}

#[derive(Subcommand)]
enum K8sCmd {
    /// Print the manifests.
    Manifests {
        /// The cluster's name (a DNS label): names its objects and labels.
        #[arg(long, default_value = "rask")]
        name: String,
        /// The namespace.
        #[arg(long, default_value = "default")]
        namespace: String,
        /// The container image holding the `rask` program (or a program of your own
        /// with `rask::worker_entry()`).
        #[arg(long)]
        image: String,
        /// Worker replicas.
        #[arg(long, default_value_t = 1)]
        nworkers: u32,
        /// Threads of each worker.
        #[arg(long, default_value_t = 1)]
        nthreads: u32,
        /// Memory of each worker (its container's request and limit).
        #[arg(long, default_value = "4GiB", value_parser = rask_proto::units::parse_bytes)]
        memory_limit: u64,
        /// CPUs of each worker, in cores (e.g. 1, 0.5).
        #[arg(long, default_value_t = 1.0)]
        cpu: f64,
        /// GPUs of each worker (`nvidia.com/gpu`).
        #[arg(long, default_value_t = 0)]
        gpus: u32,
        /// A Kubernetes Secret holding the cluster's shared secret under the key `secret`.
        #[arg(long)]
        secret: Option<String>,
    },
}

/// The command line with what the configuration files and `RASK_*` variables give the
/// subcommand (see `rask::config`).
fn configured_args() -> Result<Vec<std::ffi::OsString>> {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let sub = argv.get(1).and_then(|a| a.to_str()).unwrap_or("");
    let (path, table) = match sub {
        "scheduler" => ("scheduler", "scheduler"),
        "worker" => ("worker", "worker"),
        "rask-worker" => ("rask-worker", "worker"),
        _ => return Ok(argv),
    };
    let files = rask::config::Files::load().map_err(anyhow::Error::msg)?;
    let env = |k: &str| std::env::var(k).ok();
    rask::config::apply(
        &<Cli as clap::CommandFactory>::command(),
        &[path],
        table,
        argv,
        &files,
        &env,
    )
    .map_err(anyhow::Error::msg)
}

impl Cmd {
    /// How its logs are written: `--log-format` of a command that runs a scheduler or
    /// workers (the others log little, as text).
    fn log_format(&self) -> LogFormat {
        match self {
            Cmd::Scheduler(a) => a.log_format,
            Cmd::Worker(a) => a.log_format,
            Cmd::Demo { log_format, .. }
            | Cmd::Ssh { log_format, .. }
            | Cmd::Slurm { log_format, .. } => *log_format,
            Cmd::Info { .. } | Cmd::Config | Cmd::K8s { .. } => LogFormat::Text,
        }
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse_from(configured_args()?);
    // The demo's cluster runs in this process: keep its logs quiet unless asked.
    let default_level = if matches!(cli.cmd, Cmd::Demo { .. }) {
        "warn"
    } else {
        "info"
    };
    rask::cli::init_logging(default_level, cli.cmd.log_format());
    match cli.cmd {
        Cmd::Scheduler(args) => rask::cli::run_scheduler(args).map_err(|e| anyhow::anyhow!("{e}")),
        Cmd::Worker(args) => {
            rask::cli::run_worker(args, Registry::program()).map_err(|e| anyhow::anyhow!("{e}"))
        }
        Cmd::Demo {
            workers,
            processes,
            n,
            array_size,
            ..
        } => demo(workers, processes, n, array_size),
        Cmd::K8s {
            cmd:
                K8sCmd::Manifests {
                    name,
                    namespace,
                    image,
                    nworkers,
                    nthreads,
                    memory_limit,
                    cpu,
                    gpus,
                    secret,
                },
        } => {
            if !(cpu.is_finite() && cpu > 0.0) {
                bail!("--cpu {cpu}: expected a positive number of cores");
            }
            let spec = rask_deploy::k8s::K8sSpec {
                namespace,
                workers: nworkers,
                worker_nthreads: nthreads,
                worker_memory: memory_limit,
                worker_cpu_millis: (cpu * 1000.0).round() as u32,
                gpus_per_worker: gpus,
                secret_name: secret,
                ..rask_deploy::k8s::K8sSpec::new(name, image)
            };
            let text = spec.manifests()?;
            rask::outln!("{}", text.trim_end());
            Ok(())
        }
        Cmd::Ssh {
            hosts,
            ssh_port,
            ssh_user,
            identity,
            ssh_options,
            remote_rask,
            scheduler_options,
            worker_options,
            ..
        } => {
            let words = |s: Option<String>| -> Vec<String> {
                s.map(|s| s.split_whitespace().map(String::from).collect())
                    .unwrap_or_default()
            };
            let mut cluster = rask::ssh::SshCluster::builder(hosts)
                .ssh_options(rask::ssh::SshOptions {
                    port: ssh_port,
                    user: ssh_user,
                    identity,
                    options: ssh_options,
                    remote_rask,
                    ..Default::default()
                })
                .scheduler_args(words(scheduler_options))
                .worker_args(words(worker_options))
                .echo(true)
                .build()?;
            let n = cluster.client()?.scheduler_info()?.workers.len();
            rask::outln!(
                "rask.ssh - INFO - cluster ready: scheduler at {} with {n} workers",
                cluster.scheduler_address()
            );
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let ended = rt.block_on(async {
                let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
                let stop = rask::cli::shutdown_signal();
                tokio::pin!(stop);
                loop {
                    tokio::select! {
                        _ = &mut stop => break None,
                        _ = tick.tick() => {
                            if let Some(e) = cluster.ended() {
                                break Some(e);
                            }
                        }
                    }
                }
            });
            tracing::info!(target: "rask.ssh", "stopping the cluster");
            cluster.close();
            match ended {
                Some((what, why)) => bail!("{what} ended: {why}"),
                None => Ok(()),
            }
        }
        Cmd::Slurm {
            jobs,
            cores,
            memory,
            processes,
            walltime,
            partition,
            account,
            job_extra,
            log_directory,
            remote_rask,
            scheduler_host,
            print_script,
            pbs,
            ..
        } => {
            let mut job = rask::slurm::SlurmJob::new("", cores, memory);
            job.name = "rask-worker".into();
            job.processes = processes;
            job.walltime = walltime;
            job.partition = partition;
            job.account = account;
            job.extra_directives = job_extra;
            job.log_directory = log_directory;
            job.rask_bin = match remote_rask {
                Some(r) => r,
                None => std::env::current_exe()?.display().to_string(),
            };
            if print_script {
                job.scheduler = "tcp://SCHEDULER:8786".into();
                let script = if pbs {
                    job.pbs_script()?
                } else {
                    job.job_script()?
                };
                rask::outln!("{}", script.trim_end());
                return Ok(());
            }
            let mut builder =
                rask::slurm::SlurmCluster::builder(job).scheduler_host(scheduler_host);
            if pbs {
                builder = builder.pbs();
            }
            let mut cluster = builder.build()?;
            let workers = jobs * cluster.processes_per_job();
            cluster.scale(workers)?;
            rask::outln!(
                "rask.slurm - INFO - scheduler at {}; submitted jobs {:?} for {workers} workers",
                cluster.scheduler_address(),
                cluster.jobs()
            );
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(rask::cli::shutdown_signal());
            tracing::info!(target: "rask.slurm", "cancelling jobs {:?}", cluster.jobs());
            cluster.close()?;
            Ok(())
        }
        Cmd::Config => {
            let files = rask::config::Files::load().map_err(anyhow::Error::msg)?;
            let root = <Cli as clap::CommandFactory>::command();
            let sub = |n: &str| root.find_subcommand(n).cloned().expect("a subcommand");
            let tables = [
                ("scheduler", sub("scheduler")),
                ("worker", sub("worker")),
                (
                    "cuda-worker",
                    <rask::gpu_process::CudaWorkerArgs as clap::CommandFactory>::command(),
                ),
            ];
            let env = |k: &str| std::env::var(k).ok();
            let text = rask::config::describe(&tables, &files, &env).map_err(anyhow::Error::msg)?;
            rask::outln!("{}", text.trim_end());
            Ok(())
        }
        Cmd::Info {
            scheduler,
            auth_file,
        } => {
            let r = Registry::builtin();
            rask::outln!(
                "rask {} (protocol {})",
                rask_proto::RASK_VERSION,
                rask_proto::PROTOCOL_VERSION
            );
            rask::outln!("host id: {}", rask_transport::host_id());
            rask::outln!(
                "cpus: {}, memory: {:.1} GiB",
                std::thread::available_parallelism().map_or(1, |n| n.get()),
                rask_worker::total_memory() as f64 / (1u64 << 30) as f64
            );
            rask::outln!(
                "op registry {:016x}: {}",
                r.fingerprint(),
                r.names().join(", ")
            );
            match rask_device::discover::gpus() {
                Ok(gpus) => {
                    for g in gpus {
                        rask::outln!(
                            "gpu {}: {} ({}, {:.1} GiB, PCI {}, NVLink to {:?})",
                            g.index,
                            g.name,
                            g.uuid,
                            g.memory_total as f64 / (1u64 << 30) as f64,
                            g.pci_bus_id,
                            g.nvlink_peers
                        );
                        for m in &g.mig {
                            rask::outln!(
                                "gpu {} MIG {}: {} ({:.1} GiB)",
                                g.index,
                                m.index,
                                m.uuid,
                                m.memory_total as f64 / (1u64 << 30) as f64
                            );
                        }
                    }
                }
                Err(e) => rask::outln!("gpus: none ({e}); simulated GPUs: --sim-gpus"),
            }
            match rask_device::cuda::device_count() {
                Ok(n) => rask::outln!("cuda: driver loaded, {n} devices"),
                Err(e) => rask::outln!("cuda: {e}"),
            }
            if let Some(addr) = scheduler {
                scheduler_workers(&addr, auth_file.as_deref())?;
            }
            Ok(())
        }
    }
}

/// `rask info --scheduler`: the scheduler's workers, one line each, as `key=value` pairs
/// (lists as `name:value` joined by commas) that a script can pick out.
fn scheduler_workers(addr: &str, auth_file: Option<&std::path::Path>) -> Result<()> {
    let mut opts = rask::ClientOptions::default();
    opts.conn.auth = rask::cli::secret(auth_file).map_err(|e| anyhow::anyhow!("{e}"))?;
    opts.conn.tls = rask::tls_from_env()?;
    let client = rask::Client::connect_with(addr, opts)?;
    let mut info = client.scheduler_info()?;
    info.workers.sort_by(|a, b| a.name.cmp(&b.name));
    let list = |l: &[(String, u64)]| -> String {
        let parts: Vec<String> = l.iter().map(|(k, v)| format!("{k}:{v}")).collect();
        if parts.is_empty() {
            "-".into()
        } else {
            parts.join(",")
        }
    };
    rask::outln!("scheduler {}: {} workers", info.address, info.workers.len());
    for w in &info.workers {
        rask::outln!(
            "worker {} device={} device_memory_limit={} transport={} ran={} spilled={} received={} device_name={:?}",
            w.name,
            w.device,
            w.device_memory_limit,
            w.transport,
            list(&w.ran),
            list(&w.spilled),
            list(&w.received),
            w.device_name
        );
    }
    Ok(())
}

/// The demo: squares of 0..n, summed by a binary tree of `add` tasks, on a local cluster.
fn demo(workers: usize, processes: bool, n: i64, m: u64) -> Result<()> {
    if n < 1 {
        bail!("--n must be at least 1");
    }
    if m < 4 {
        bail!("--array-size must be at least 4");
    }
    let t0 = Instant::now();
    let cluster = LocalCluster::builder()
        .n_workers(workers)
        .processes(processes)
        .build()?;
    let started = t0.elapsed();
    let client = Client::for_cluster(cluster)?;
    let info = client.scheduler_info()?;
    rask::outln!(
        "local cluster: scheduler {} with {} workers ({}), started in {:.1} ms",
        info.address,
        info.workers.len(),
        if processes { "processes" } else { "threads" },
        started.as_secs_f64() * 1e3
    );
    let t1 = Instant::now();
    let squares = client.map("mul", (0..n).map(|i| [Arg::from(i), Arg::from(i)]))?;
    let mut level: Vec<rask::Future> = squares;
    let mut tasks = n as usize;
    while level.len() > 1 {
        let mut next = Vec::with_capacity(level.len().div_ceil(2));
        for pair in level.chunks(2) {
            let args: Vec<Arg> = pair.iter().map(Arg::from).collect();
            next.push(client.submit("add", args)?);
            tasks += 1;
        }
        level = next;
    }
    let total: i64 = level[0].result_as()?;
    let elapsed = t1.elapsed();
    let expect = (n - 1) * n * (2 * n - 1) / 6;
    rask::outln!("sum of i*i for i in 0..{n} = {total} (expected {expect})");
    rask::outln!(
        "{tasks} tasks in {:.1} ms: {:.0} tasks/s",
        elapsed.as_secs_f64() * 1e3,
        tasks as f64 / elapsed.as_secs_f64()
    );
    if total != expect {
        bail!("wrong result");
    }

    // An array computation: (x @ x.T).sum() on a random m × m f32 array in 4 × 4
    // chunks, checked against its expected value.
    let chunk = m.div_ceil(4);
    let x = rask::array::Array::random_uniform(
        &[m, m],
        &[chunk, chunk],
        rask::array::DType::F32,
        7,
        0.0,
        1.0,
    )?;
    let total = x.matmul(&x.t()?)?.sum(8);
    let t2 = Instant::now();
    let v = client.compute_array::<f32>(&total)?;
    let secs = t2.elapsed().as_secs_f64();
    let got = v.iter().next().copied().unwrap_or_default() as f64;
    // The check: the same in this process, in f64, from the same random array.
    let xs = client
        .compute_array::<f32>(&x)?
        .mapv(f64::from)
        .into_dimensionality::<ndarray::Ix2>()?;
    let expect = xs.dot(&xs.t()).sum();
    rask::outln!(
        "(x @ x.T).sum() for a random {m}×{m} f32 array in {chunk}×{chunk} chunks = {got:.6e} (computed here in f64: {expect:.6e})"
    );
    rask::outln!(
        "{} tasks in {:.1} ms: {:.1} GFLOP/s",
        total.graph().len(),
        secs * 1e3,
        2.0 * (m as f64).powi(3) / secs / 1e9
    );
    if ((got - expect) / expect).abs() > 1e-4 {
        bail!("wrong array result");
    }
    Ok(())
}
