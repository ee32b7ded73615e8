//! The scheduler server: accepts client and worker connections, does the handshake
//! (versions and op registries), decodes batches and hands them to the
//! [`SchedulerCore`], and routes the core's actions to the connections' writers.
//!
//! One task owns the core; connection tasks only read, decode and forward. What was read
//! is handled in rounds of a bounded number of messages, each followed by a flush (see
//! `backlog`), and each connection's writer batches what queued meanwhile into one frame.
//! Scheduling decisions belong in the core, not here.
//!
//! With [`SchedulerConfig::dashboard`] and [`SchedulerConfig::dashboard_server`] set, the
//! scheduler binds the dashboard's address and runs the server given, handing it an
//! [`Observer`]: the dashboard asks the main loop as a client would, and never touches
//! the core.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod backlog;
mod conn;
mod datasets;
// Every item is documented; the resolver types rkyv derives beside the records are
// public and their fields carry no docs.
#[allow(missing_docs)]
pub mod journal;
mod membership;
mod observe;
mod programs;
mod recovery;
mod registry;
mod route;
mod server;

use crate::conn::handle_conn;
use crate::conn::Event;
use crate::observe::unix_us;
use crate::server::Server;

pub use crate::observe::{
    DashboardFuture, DashboardServer, Observer, TaskGraph, TaskGraphNode, MAX_STREAM_REPLY,
};
pub use rask_proto::observe::{TaskPrefixMsg, TaskStream, TaskStreamEntryMsg, TransitionMsg};
use rask_scheduler_core::{CoreConfig, SchedulerCore};
use rask_transport::{ConnConfig, TransportError};
use std::future::Future;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// Scheduler settings.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// Limits and timeouts of every connection (frame sizes, handshake, secret).
    pub conn: ConnConfig,
    /// The scheduling core's tunables.
    pub core: CoreConfig,
    /// A worker silent for this long (workers heartbeat every second) is presumed dead:
    /// its connection is closed and its work rescheduled.
    pub worker_ttl: std::time::Duration,
    /// The address it announces (in `scheduler_info`); `None`: the listener's.
    pub address: Option<String>,
    /// Where the dashboard listens (`host:port`; port 0 picks a free one); `None`: no
    /// dashboard. Served only with a [`SchedulerConfig::dashboard_server`].
    pub dashboard: Option<String>,
    /// The dashboard's server, given the listener bound to `dashboard` and an
    /// [`Observer`].
    pub dashboard_server: Option<DashboardServer>,
    /// Where the scheduler journals what it must not forget, and restores it from when
    /// started again; `None`: no journal.
    pub journal: Option<journal::JournalConfig>,
    /// How long a client whose connection was lost (not closed) keeps its keys while it
    /// connects again; zero: released at once.
    pub client_grace: std::time::Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            conn: ConnConfig::default(),
            core: CoreConfig::default(),
            worker_ttl: std::time::Duration::from_secs(10),
            address: None,
            dashboard: None,
            dashboard_server: None,
            journal: None,
            client_grace: std::time::Duration::from_secs(30),
        }
    }
}

/// How long workers told to close (the scheduler shutting down) may take to leave.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Errors that stop the scheduler.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// The listener's transport failed (its address could not be read, …).
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// An operating-system call failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The scheduler has stopped: an [`Observer`] asked it too late.
    #[error("the scheduler has stopped")]
    Stopped,
    /// Its journal could not be read or written at start.
    #[error("{0}")]
    Journal(String),
}

/// Runs a scheduler on a bound listener until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    cfg: SchedulerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), SchedulerError> {
    let address = match &cfg.address {
        Some(a) => a.clone(),
        None => rask_transport::listener_addr(&listener)?,
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
    let dashboard = match (&cfg.dashboard, &cfg.dashboard_server) {
        // A dashboard never keeps the scheduler from running: a taken port gives way to
        // a free one (as Dask's does), any other failure to no dashboard, said.
        (Some(addr), Some(serve)) => match bind_dashboard(addr).await {
            Ok(l) => {
                let local = l.local_addr()?;
                let tls = cfg.conn.tls.clone().filter(|t| t.can_serve());
                let scheme = if tls.is_some() { "https" } else { "http" };
                let url = format!("{scheme}://{local}/status");
                info!(target: "rask.scheduler", "Dashboard at: {url}");
                let observer = Observer { tx: tx.clone() };
                Some((url, tokio::spawn((serve.0)(l, observer, tls))))
            }
            Err(e) => {
                warn!("no dashboard: cannot listen on {addr}: {e}");
                None
            }
        },
        (Some(addr), None) => {
            warn!("no dashboard server in this build: not serving a dashboard on {addr}");
            None
        }
        (None, _) => None,
    };
    let mut server = Server::new(
        SchedulerCore::new(cfg.core.clone()),
        address,
        dashboard
            .as_ref()
            .map_or_else(String::new, |(u, _)| u.clone()),
    );
    server.recovery.grace = cfg.client_grace;
    if let Some(j) = &cfg.journal {
        crate::recovery::restore(&mut server, j).map_err(SchedulerError::Journal)?;
    }
    let conn_cfg = cfg.conn;
    let worker_ttl = cfg.worker_ttl;
    let accept = async {
        loop {
            match listener.accept().await {
                Ok((stream, peer_addr)) => {
                    debug!(%peer_addr, "connection");
                    if let Err(e) = rask_transport::watch_peer(&stream, conn_cfg.peer_timeout) {
                        debug!(%peer_addr, "cannot set the peer timeout: {e}");
                    }
                    let conn =
                        handle_conn(stream, peer_addr, conn_cfg.clone(), worker_ttl, tx.clone());
                    let span = tracing::info_span!("conn", peer = %peer_addr);
                    tokio::spawn(tracing::Instrument::instrument(conn, span));
                }
                Err(e) => warn!("accept failed: {e}"),
            }
        }
    };
    // The main loop runs as a spawned task, not inside the caller's future: waking a
    // task is a queue push, while waking a current-thread runtime's `block_on` future goes
    // through the I/O driver (an eventfd write per wake-up).
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut main = tokio::spawn(async move {
        let mut events = Vec::new();
        // What is read goes in rounds of a bounded size (see `backlog`).
        let mut backlog = backlog::Backlog::default();
        let mut round = Vec::new();
        // Clients and workers given up when they do not come back in time.
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Once closing: when the workers, told to close, must have left by.
        let mut closing: Option<tokio::time::Instant> = None;
        loop {
            let deadline = closing.unwrap_or_else(tokio::time::Instant::now);
            tokio::select! {
                biased;
                n = rx.recv_many(&mut events, 4096), if !backlog.waiting() => {
                    if n == 0 {
                        break;
                    }
                    handle_round(&mut server, &mut backlog, &mut events, &mut round);
                }
                _ = tick.tick() => {
                    server.core.set_now(unix_us());
                    server.recovery_tick();
                    server.flush();
                    server.journal_round(true);
                }
                _ = &mut stop_rx, if closing.is_none() => {
                    server.close_clients("the scheduler is shutting down");
                    server.close_workers("scheduler shutting down");
                    server.flush();
                    closing = Some(tokio::time::Instant::now() + CLOSE_GRACE);
                }
                _ = tokio::time::sleep_until(deadline), if closing.is_some() => {
                    warn!("{} workers did not leave within {} s of being told to close", server.workers.len(), CLOSE_GRACE.as_secs());
                    break;
                }
                // Events wait from the last round: the next starts once the connections'
                // tasks have had their turn (writers sent the last round's messages,
                // readers read what came), with whatever came meanwhile.
                _ = tokio::task::yield_now(), if backlog.waiting() => {
                    while let Ok(ev) = rx.try_recv() {
                        events.push(ev);
                    }
                    handle_round(&mut server, &mut backlog, &mut events, &mut round);
                }
            }
            if closing.is_none() {
                if let Some(why) = server.shutdown_requested.take() {
                    info!("{why}: closing the workers");
                    server.close_clients(&why);
                    server.close_workers(&why);
                    server.flush();
                    closing = Some(tokio::time::Instant::now() + CLOSE_GRACE);
                }
            }
            // Closed once every worker has left (they were told why).
            if closing.is_some() && server.workers.is_empty() {
                break;
            }
        }
        server.journal_round(true);
    });
    let ended = tokio::select! {
        _ = accept => false,
        _ = shutdown => {
            info!("scheduler shutting down");
            false
        }
        _ = &mut main => true,
    };
    if !ended {
        let _ = stop_tx.send(());
        let _ = main.await;
    }
    if let Some((_, server)) = dashboard {
        server.abort();
    }
    Ok(())
}

/// The dashboard's listener on `addr`, or on a free port of the same host when that port
/// is taken (another cluster's dashboard, most likely).
async fn bind_dashboard(addr: &str) -> std::io::Result<TcpListener> {
    match TcpListener::bind(addr).await {
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            let host = addr.rsplit_once(':').map_or("127.0.0.1", |(h, _)| h);
            let host = if host.is_empty() { "0.0.0.0" } else { host };
            warn!("{addr} is in use (another cluster?): the dashboard takes a free port instead");
            TcpListener::bind(format!("{host}:0")).await
        }
        r => r,
    }
}

/// Handles a round of events (those `arrived` since the last after those waiting), then
/// sends what the core decided.
fn handle_round(
    server: &mut Server,
    backlog: &mut backlog::Backlog<Event>,
    arrived: &mut Vec<Event>,
    round: &mut Vec<Event>,
) {
    backlog.round(arrived.drain(..), round);
    server.core.set_now(unix_us());
    for ev in round.drain(..) {
        server.on_event(ev);
    }
    server.flush();
    server.journal_round(false);
}
