//! `rask scheduler`: its options, and running it until it is stopped or a client shuts
//! the cluster down.

use std::error::Error;

use clap::Args;

use super::{seconds, secret, shutdown_signal};

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
    /// No work stealing: a task stays on the worker it was given to, even while another
    /// worker is idle (stealing is on by default, as Dask's).
    #[arg(long)]
    pub no_work_stealing: bool,
    /// A file holding the cluster's shared secret (default: $RASK_AUTH_FILE or
    /// $RASK_AUTH_SECRET; none means no authentication).
    #[arg(long)]
    pub auth_file: Option<std::path::PathBuf>,
    /// TLS on every connection (see the TLS options).
    #[command(flatten)]
    pub tls: super::TlsArgs,
    /// How log lines are written: text (as Dask's) or json (one object per line).
    #[arg(long, value_enum, default_value_t)]
    pub log_format: super::LogFormat,
    /// Where the dashboard listens: HOST:PORT or :PORT (default :8787, on the scheduler's host;
    /// another port when that one is taken, as Dask does).
    #[arg(long)]
    pub dashboard_address: Option<String>,
    /// No dashboard (no pages, no /metrics).
    #[arg(long, conflicts_with = "dashboard_address")]
    pub no_dashboard: bool,
    /// Journal what must not be forgotten to this file, and restore from it when started
    /// again with it: graphs and the keys clients hold come back, values still on workers
    /// are not computed again.
    #[arg(long)]
    pub journal: Option<std::path::PathBuf>,
    /// When the journal's writes go to the disk: always (each round of the scheduler's
    /// loop), never (left to the OS), or at most every N seconds (default 1).
    #[arg(long, default_value = "1")]
    pub journal_fsync: String,
    /// Seconds a client whose connection was lost, and after a restore the journal's
    /// clients and workers, have to come back (default 30).
    #[arg(long)]
    pub reconnect_grace: Option<f64>,
}

/// The address the dashboard binds: `spec` (`[HOST]:PORT`, default `:8787`), its host
/// defaulting to the scheduler's `host`. (A taken port gives way to a free one when the
/// scheduler binds it.)
pub(crate) fn dashboard_bind(spec: Option<&str>, host: &str) -> String {
    let spec = spec.unwrap_or(":8787");
    let (h, port) = spec.rsplit_once(':').unwrap_or(("", spec));
    let h = if h.is_empty() { host } else { h };
    format!("{h}:{port}")
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
    cfg.core.work_stealing = !a.no_work_stealing;
    if let Some(t) = a.reconnect_grace {
        cfg.client_grace = seconds("--reconnect-grace", t)?;
    }
    if let Some(path) = &a.journal {
        cfg.journal = Some(rask_scheduler::journal::JournalConfig {
            path: path.clone(),
            fsync: a.journal_fsync.parse()?,
            grace: cfg.client_grace,
        });
    }
    cfg.conn.auth = secret(a.auth_file.as_deref())?;
    let auth = if cfg.conn.auth.is_some() {
        "shared secret (HMAC-SHA256)"
    } else {
        "none"
    };
    cfg.conn.tls = a.tls.load(
        "the scheduler",
        super::Needs {
            serve: true,
            connect: false,
        },
    )?;
    let tls = cfg
        .conn
        .tls
        .as_ref()
        .map_or_else(|| "none (plaintext)".to_string(), |t| t.describe());
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
        let rule = "-----------------------------------------------";
        tracing::info!(target: "rask.scheduler", "{rule}");
        tracing::info!(
            target: "rask.scheduler",
            "Rask version {}",
            rask_proto::RASK_VERSION
        );
        tracing::info!(target: "rask.scheduler", "  Scheduler at: {addr}");
        tracing::info!(target: "rask.scheduler", "Authentication: {auth}");
        tracing::info!(target: "rask.scheduler", "           TLS: {tls}");
        tracing::info!(target: "rask.scheduler", "{rule}");
        if let Some(f) = &a.scheduler_file {
            // Whole or not at all: workers may be waiting to read it.
            let tmp = f.with_extension("partial");
            std::fs::write(&tmp, format!("{addr}\n"))
                .and_then(|()| std::fs::rename(&tmp, f))
                .map_err(|e| format!("writing {}: {e}", f.display()))?;
        }
        let mut cfg = cfg;
        cfg.address = Some(addr);
        if !a.no_dashboard {
            let host = bind.rsplit_once(':').map_or("127.0.0.1", |(h, _)| h);
            cfg.dashboard = Some(dashboard_bind(a.dashboard_address.as_deref(), host));
            cfg.dashboard_server = Some(crate::dashboard::server());
        }
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
