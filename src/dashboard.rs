//! The scheduler's dashboard: `rask_dashboard`'s pages and metrics fed by the scheduler's
//! [`Observer`]. The HTTP server runs on a thread and runtime of its own, so that parsing
//! requests and rendering pages never takes time from the scheduler's event loop; the
//! loop only answers the observer (a sample at most every [`rask_dashboard::SAMPLE`],
//! task-stream entries by cursor, a story on request).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rask_dashboard::{BoxFuture, LinkRow, PrefixRow, Snapshot, StoryEntry, StreamEntry, WorkerRow};
use rask_proto::msg::{SchedulerInfoMsg, WorkerInfoMsg};
use rask_scheduler::{DashboardServer, Observer};

/// The dashboard's server for [`rask_scheduler::SchedulerConfig::dashboard_server`].
pub fn server() -> DashboardServer {
    DashboardServer::new(
        |listener: tokio::net::TcpListener, observer: Observer, tls| {
            // Dropped when the scheduler stops: the dashboard's thread then stops too.
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let started = listener.into_std().map(|std| {
                std::thread::Builder::new()
                    .name("rask-dashboard".into())
                    .spawn(move || {
                        let rt = match tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                        {
                            Ok(rt) => rt,
                            Err(e) => {
                                tracing::warn!("no dashboard: {e}");
                                return;
                            }
                        };
                        rt.block_on(async move {
                            let listener = match tokio::net::TcpListener::from_std(std) {
                                Ok(l) => l,
                                Err(e) => {
                                    tracing::warn!("no dashboard: {e}");
                                    return;
                                }
                            };
                            let source = Arc::new(Source {
                                observer,
                                started_us: AtomicU64::new(0),
                            });
                            let stop = async move {
                                let _ = stop_rx.await;
                            };
                            match tls {
                                None => rask_dashboard::serve_until(listener, source, stop).await,
                                Some(tls) => match Https::new(listener, &tls) {
                                    Ok(l) => rask_dashboard::serve_until(l, source, stop).await,
                                    Err(e) => tracing::warn!("no dashboard: {e}"),
                                },
                            }
                        });
                    })
            });
            if let Err(e) = started {
                tracing::warn!("no dashboard: {e}");
            }
            async move {
                let _stop = stop_tx;
                std::future::pending::<()>().await
            }
        },
    )
}

/// A listener handing on HTTPS connections, their handshakes done: what the dashboard and
/// a worker's metrics endpoint serve on when their process serves TLS.
pub(crate) struct Https(rask_transport::tls::HttpsIncoming);

impl Https {
    /// HTTPS on `listener` with `tls`'s certificate (within a tokio runtime).
    pub(crate) fn new(
        listener: tokio::net::TcpListener,
        tls: &rask_transport::Tls,
    ) -> Result<Https, rask_transport::TransportError> {
        rask_transport::tls::HttpsIncoming::new(listener, tls).map(Https)
    }
}

impl rask_dashboard::Listener for Https {
    type Io = rask_transport::tls::HttpsStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        self.0.accept().await
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.0.local_addr())
    }
}

/// The scheduler as the dashboard's [`rask_dashboard::Source`].
struct Source {
    observer: Observer,
    /// When the scheduler started (Unix µs), from the last sample: times in the stream
    /// and stories are shown relative to it.
    started_us: AtomicU64,
}

impl Source {
    fn since_start(&self, us: u64) -> f64 {
        us.saturating_sub(self.started_us.load(Ordering::Relaxed)) as f64 / 1e6
    }

    /// `started_us` known (one sample taken).
    async fn start(&self) -> Result<(), String> {
        if self.started_us.load(Ordering::Relaxed) == 0 {
            let info = self.observer.info().await.map_err(|e| e.to_string())?;
            self.started_us.store(info.started_us, Ordering::Relaxed);
        }
        Ok(())
    }
}

impl rask_dashboard::Source for Source {
    fn snapshot(&self) -> BoxFuture<'_, Result<Snapshot, String>> {
        Box::pin(async move {
            let info = self.observer.info().await.map_err(|e| e.to_string())?;
            self.started_us.store(info.started_us, Ordering::Relaxed);
            Ok(snapshot(info))
        })
    }

    fn task_stream(
        &self,
        since: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<StreamEntry>, String>> {
        Box::pin(async move {
            self.start().await?;
            let s = self
                .observer
                .task_stream(since, limit)
                .await
                .map_err(|e| e.to_string())?;
            Ok(s.entries
                .into_iter()
                .map(|e| StreamEntry {
                    cursor: e.seq,
                    key: e.key,
                    prefix: e.prefix,
                    worker: e.worker_name,
                    start_s: self.since_start(e.start_us),
                    stop_s: self.since_start(e.stop_us),
                    kind: e.kind,
                    peer: e.peer_name,
                    detail: e.detail,
                    nbytes: e.nbytes,
                })
                .collect())
        })
    }

    fn graph(&self, limit: usize) -> BoxFuture<'_, Result<rask_dashboard::Graph, String>> {
        Box::pin(async move {
            let g = self
                .observer
                .graph(limit)
                .await
                .map_err(|e| e.to_string())?;
            Ok(rask_dashboard::Graph {
                total: g.total,
                nodes: g
                    .nodes
                    .into_iter()
                    .map(|n| rask_dashboard::GraphNode {
                        key: n.key,
                        prefix: n.prefix,
                        state: n.state,
                        worker: n.worker,
                    })
                    .collect(),
                edges: g.edges,
            })
        })
    }

    fn story(&self, key: String) -> BoxFuture<'_, Result<Vec<StoryEntry>, String>> {
        Box::pin(async move {
            self.start().await?;
            let story = self.observer.story(&key).await.map_err(|e| e.to_string())?;
            Ok(story
                .into_iter()
                .map(|t| StoryEntry {
                    at_s: self.since_start(t.time_us),
                    from: t.from,
                    to: t.to,
                    why: match t.error {
                        Some(e) => format!("{}: {}", t.why, e.message),
                        None => t.why,
                    },
                    worker: t.worker_name,
                })
                .collect())
        })
    }
}

/// The count of `state` in a list of `(state, count)`.
fn count(list: &[(String, u64)], state: &str) -> u64 {
    list.iter()
        .filter(|(s, _)| s == state)
        .map(|(_, n)| *n)
        .sum()
}

/// The most pairs of workers [`Snapshot::links`] lists.
const MAX_LINKS: usize = 4096;

/// Bytes between pairs of workers, largest first, at most [`MAX_LINKS`].
fn links(workers: &[WorkerInfoMsg]) -> Vec<LinkRow> {
    let names: std::collections::HashMap<_, _> =
        workers.iter().map(|w| (w.id, w.name.as_str())).collect();
    let mut rows: Vec<LinkRow> = workers
        .iter()
        .flat_map(|w| {
            let names = &names;
            w.received_from.iter().map(move |p| LinkRow {
                from: names
                    .get(&p.peer)
                    .map_or_else(|| format!("worker {}", p.peer.0), |n| n.to_string()),
                to: w.name.clone(),
                link: p.link.clone(),
                bytes: p.bytes,
                seconds: p.micros as f64 / 1e6,
            })
        })
        .collect();
    rows.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.to.cmp(&b.to)));
    rows.truncate(MAX_LINKS);
    rows
}

fn snapshot(info: SchedulerInfoMsg) -> Snapshot {
    Snapshot {
        links: links(&info.workers),
        address: info.address,
        version: info.rask_version,
        uptime_s: info.now_us.saturating_sub(info.started_us) as f64 / 1e6,
        clients: info.clients as u64,
        workers: info.workers.into_iter().map(worker).collect(),
        tasks: info.tasks_by_state,
        prefixes: info
            .prefixes
            .into_iter()
            .map(|p| PrefixRow {
                waiting: ["waiting", "queued", "no-worker"]
                    .iter()
                    .map(|s| count(&p.states, s))
                    .sum(),
                processing: count(&p.states, "processing"),
                memory: count(&p.states, "memory"),
                erred: count(&p.states, "erred"),
                released: count(&p.totals, "forgotten"),
                compute_s: p.compute_us as f64 / 1e6,
                output_bytes: p.output_bytes,
                prefix: p.name,
            })
            .collect(),
        tasks_completed: info.tasks_completed,
        workers_added: info.workers_added,
        workers_removed: info.workers_removed,
    }
}

fn worker(w: WorkerInfoMsg) -> WorkerRow {
    let spilled = |dir: &str| count(&w.spilled, dir);
    WorkerRow {
        host: w.host_id.split(':').next().unwrap_or_default().to_string(),
        threads: w.nthreads as u64,
        processing: w.processing,
        memory: w.host_bytes,
        spilled_host: spilled("device->host"),
        spilled_disk: w.disk_bytes,
        memory_limit: w.memory_limit,
        device_memory: w.device_memory_used,
        device_memory_limit: w.device_memory_limit,
        utilization: w.utilization.map(f64::from),
        last_seen_s: w.last_seen_secs,
        name: w.name,
        address: w.addr,
        device: w.device,
        device_name: w.device_name,
        transport: w.transport,
        received: w.received,
        dashboard: w.dashboard,
    }
}
