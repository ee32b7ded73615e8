//! What the scheduler shows of itself: `scheduler_info`, the task stream and `story(key)`,
//! answered to clients and to an in-process [`Observer`] (the dashboard) alike, by the
//! main loop from the core's aggregated and bounded records. Nothing here changes the
//! cluster's state; each answer is built once per request, never per task.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rask_proto::msg::{HeartbeatMsg, SchedulerInfoMsg, ToClient, WorkerInfoMsg, MAX_PEER_ROWS};
use rask_proto::observe::{
    ActivityKind, ActivityMsg, PeerBytesMsg, TaskPrefixMsg, TaskStream, TaskStreamEntryMsg,
    TransitionMsg,
};
use rask_proto::{ClientId, LinkClass, WorkerId, RASK_VERSION};
use rask_scheduler_core::{
    Activity, PrefixInfo, SpillDirection, StreamEntry, StreamKind, TaskState, Transition,
};
use rask_transport::Tls;
use rustc_hash::FxHashMap;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::conn::Event;
use crate::route::error_msg;
use crate::server::Server;
use crate::SchedulerError;

/// The most peer and link pairs kept per worker (a worker fetching from more peers
/// than this has the others' bytes counted by link class only).
const MAX_PAIRS: usize = 4096;

/// The most task-stream entries one answer carries, whatever the limit asked.
pub const MAX_STREAM_REPLY: usize = 10_000;

/// Microseconds since the Unix epoch: the clock of task-stream entries and transitions.
pub(crate) fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A server for the dashboard, run in the scheduler's process on its runtime: given the
/// listener bound to [`SchedulerConfig::dashboard`](crate::SchedulerConfig::dashboard),
/// an [`Observer`], and the scheduler's TLS when it serves TLS (the dashboard is then
/// served over HTTPS, with the same certificate and client certificate policy), it
/// serves until the scheduler stops (its future is then dropped). It keeps the scheduler
/// crate independent of the dashboard's.
#[derive(Clone)]
pub struct DashboardServer(
    /// The function the scheduler calls once, at start.
    pub Arc<dyn Fn(TcpListener, Observer, Option<Tls>) -> DashboardFuture + Send + Sync>,
);

/// What a [`DashboardServer`] returns: the server's whole life.
pub type DashboardFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

impl DashboardServer {
    /// Wraps a serving function.
    pub fn new<F, Fut>(f: F) -> Self
    where
        F: Fn(TcpListener, Observer, Option<Tls>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        DashboardServer(Arc::new(move |l, o, t| Box::pin(f(l, o, t))))
    }
}

impl std::fmt::Debug for DashboardServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DashboardServer(..)")
    }
}

/// A question to the main loop from an [`Observer`].
pub(crate) enum Ask {
    Info(oneshot::Sender<SchedulerInfoMsg>),
    TaskStream {
        since: u64,
        limit: usize,
        reply: oneshot::Sender<TaskStream>,
    },
    Story {
        key: String,
        reply: oneshot::Sender<Vec<TransitionMsg>>,
    },
    Graph {
        limit: usize,
        reply: oneshot::Sender<TaskGraph>,
    },
}

/// The task graph as the scheduler holds it, for drawing small graphs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskGraph {
    /// Tasks the scheduler holds now.
    pub total: u64,
    /// The tasks, when `total` is at most the limit asked for (empty otherwise).
    pub nodes: Vec<TaskGraphNode>,
    /// `(i, j)`: `nodes[j]` depends on `nodes[i]`.
    pub edges: Vec<(u32, u32)>,
}

/// One task of a [`TaskGraph`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskGraphNode {
    /// Its key.
    pub key: String,
    /// Its prefix.
    pub prefix: String,
    /// Its state's name (`waiting`, `processing`, `memory`, …).
    pub state: String,
    /// The name of the worker running or holding it (empty for none).
    pub worker: String,
}

/// A handle on a running scheduler for code in its process (the dashboard): asks what a
/// client can ask, answered by the scheduler's main loop between its other events.
/// Cheap to clone. Every call fails with [`SchedulerError::Stopped`] once the scheduler
/// has stopped.
#[derive(Clone, Debug)]
pub struct Observer {
    pub(crate) tx: mpsc::UnboundedSender<Event>,
}

impl Observer {
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Ask,
    ) -> Result<T, SchedulerError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Event::Observe(make(tx)))
            .map_err(|_| SchedulerError::Stopped)?;
        rx.await.map_err(|_| SchedulerError::Stopped)
    }

    /// What `Client::scheduler_info` returns.
    pub async fn info(&self) -> Result<SchedulerInfoMsg, SchedulerError> {
        self.ask(Ask::Info).await
    }

    /// Up to `limit` (at most [`MAX_STREAM_REPLY`]) finished tasks with `seq > since`,
    /// oldest first; `since = 0` for all the stream holds.
    pub async fn task_stream(
        &self,
        since: u64,
        limit: usize,
    ) -> Result<TaskStream, SchedulerError> {
        self.ask(|reply| Ask::TaskStream {
            since,
            limit,
            reply,
        })
        .await
    }

    /// The recorded transitions of a key, oldest first (all the bounded log still has).
    pub async fn story(&self, key: &str) -> Result<Vec<TransitionMsg>, SchedulerError> {
        let key = key.to_string();
        self.ask(|reply| Ask::Story { key, reply }).await
    }

    /// The task graph, its tasks and dependencies only if it has at most `limit` tasks
    /// (a larger one costs the scheduler no more than counting it).
    pub async fn graph(&self, limit: usize) -> Result<TaskGraph, SchedulerError> {
        self.ask(|reply| Ask::Graph { limit, reply }).await
    }
}

fn prefix_msg(p: &PrefixInfo) -> TaskPrefixMsg {
    TaskPrefixMsg {
        name: p.name.to_string(),
        states: TaskState::ALL[..7]
            .iter()
            .map(|s| (s.name().to_string(), p.current(*s)))
            .collect(),
        totals: TaskState::ALL
            .iter()
            .map(|s| (s.name().to_string(), p.total(*s)))
            .collect(),
        compute_us: p.compute_us,
        output_bytes: p.output_bytes,
    }
}

fn stream_msg(e: StreamEntry) -> TaskStreamEntryMsg {
    TaskStreamEntryMsg {
        seq: e.seq,
        task: e.task,
        key: e.key.to_string(),
        prefix: e.prefix.to_string(),
        worker: e.worker,
        worker_name: e.worker_name.to_string(),
        start_us: e.start_us,
        stop_us: e.stop_us,
        nbytes: e.nbytes,
        kind: e.kind.name().to_string(),
        peer: match e.kind {
            StreamKind::Transfer { from, .. } => Some(from),
            _ => None,
        },
        peer_name: e.peer_name.to_string(),
        detail: e.kind.detail().to_string(),
    }
}

/// The pairs with the most bytes, at most [`MAX_PEER_ROWS`], largest first.
fn top_peers(pairs: &FxHashMap<(WorkerId, String), (u64, u64)>) -> Vec<PeerBytesMsg> {
    let mut rows: Vec<PeerBytesMsg> = pairs
        .iter()
        .map(|((peer, link), (bytes, micros))| PeerBytesMsg {
            peer: *peer,
            link: link.clone(),
            bytes: *bytes,
            micros: *micros,
        })
        .collect();
    rows.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.peer.cmp(&b.peer)));
    rows.truncate(MAX_PEER_ROWS);
    rows
}

/// A worker's transfers and spills as the core records them: placed on the scheduler's
/// clock by when they were reported (`now_us`). Records naming an unknown link or
/// direction are skipped.
fn activity(records: &[ActivityMsg], now_us: u64) -> Vec<Activity> {
    records
        .iter()
        .filter_map(|a| {
            let kind = match &a.kind {
                ActivityKind::Transfer { from, link } => StreamKind::Transfer {
                    from: *from,
                    link: link.parse::<LinkClass>().ok()?,
                },
                ActivityKind::Spill { direction } => {
                    StreamKind::Spill(SpillDirection::from_name(direction)?)
                }
            };
            Some(Activity {
                task: a.task,
                kind,
                start_us: now_us.saturating_sub(a.start_ago_us),
                stop_us: now_us.saturating_sub(a.stop_ago_us),
                nbytes: a.nbytes,
            })
        })
        .collect()
}

impl Server {
    /// A worker's heartbeat: its figures kept for `scheduler_info`, its transfers and
    /// spills into the task stream, its totals per peer merged.
    pub(crate) fn on_heartbeat(&mut self, w: WorkerId, mut hb: HeartbeatMsg) {
        self.core.on_device_memory(w, hb.device_memory_used);
        let Some(conn) = self.workers.get_mut(&w) else {
            return;
        };
        conn.last_seen = Instant::now();
        for p in std::mem::take(&mut hb.received_from) {
            // Bounded by the peers it fetches from; a pair's totals only grow.
            if conn.received_from.len() < MAX_PAIRS
                || conn.received_from.contains_key(&(p.peer, p.link.clone()))
            {
                conn.received_from
                    .insert((p.peer, p.link), (p.bytes, p.micros));
            }
        }
        let records = std::mem::take(&mut hb.activity);
        conn.heartbeat = Some(hb);
        if !records.is_empty() {
            self.core.on_activity(w, &activity(&records, unix_us()));
        }
    }
}

impl Server {
    /// Answers an observer's question.
    pub(crate) fn on_ask(&self, ask: Ask) {
        match ask {
            Ask::Info(reply) => {
                let _ = reply.send(self.info());
            }
            Ask::TaskStream {
                since,
                limit,
                reply,
            } => {
                let _ = reply.send(self.task_stream(since, limit));
            }
            Ask::Story { key, reply } => {
                let _ = reply.send(self.story(&key));
            }
            Ask::Graph { limit, reply } => {
                let _ = reply.send(self.graph(limit));
            }
        }
    }

    fn graph(&self, limit: usize) -> TaskGraph {
        let total = self.core.task_count() as u64;
        let Some(g) = self.core.graph_view(limit) else {
            return TaskGraph {
                total,
                ..TaskGraph::default()
            };
        };
        TaskGraph {
            total,
            nodes: g
                .nodes
                .into_iter()
                .map(|n| TaskGraphNode {
                    key: n.key.to_string(),
                    prefix: n.prefix.to_string(),
                    state: n.state.name().to_string(),
                    worker: n
                        .worker
                        .map_or_else(String::new, |w| self.core.worker_name(w).to_string()),
                })
                .collect(),
            edges: g.edges,
        }
    }

    /// Answers a client's `GetTaskStream`.
    pub(crate) fn on_get_task_stream(&self, c: ClientId, req: u64, since: u64, limit: u64) {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let TaskStream { entries, last } = self.task_stream(since, limit);
        self.to_client(c, ToClient::TaskStreamReply { req, entries, last });
    }

    /// Answers a client's `Story`.
    pub(crate) fn on_story(&self, c: ClientId, req: u64, key: &str) {
        let transitions = self.story(key);
        self.to_client(c, ToClient::StoryReply { req, transitions });
    }

    pub(crate) fn task_stream(&self, since: u64, limit: usize) -> TaskStream {
        let entries: Vec<TaskStreamEntryMsg> = self
            .core
            .task_stream(since, limit.min(MAX_STREAM_REPLY))
            .into_iter()
            .map(stream_msg)
            .collect();
        let last = if entries.len() == limit.min(MAX_STREAM_REPLY) && limit > 0 {
            entries.last().map_or(since, |e| e.seq)
        } else {
            self.core.task_stream_last()
        };
        TaskStream { entries, last }
    }

    pub(crate) fn story(&self, key: &str) -> Vec<TransitionMsg> {
        self.core
            .story(key)
            .into_iter()
            .map(|t: Transition| TransitionMsg {
                key: t.key.to_string(),
                task: t.task,
                from: t.from.name().to_string(),
                to: t.to.name().to_string(),
                stimulus: t.stimulus.0,
                why: t.why.to_string(),
                worker: t.worker,
                worker_name: t
                    .worker
                    .map_or_else(String::new, |w| self.core.worker_name(w).to_string()),
                time_us: t.time_us,
                error: t.error.as_ref().map(error_msg),
            })
            .collect()
    }

    pub(crate) fn info(&self) -> SchedulerInfoMsg {
        let core = self.core.info();
        let now = Instant::now();
        let workers = core
            .workers
            .iter()
            .filter_map(|wi| {
                let c = self.workers.get(&wi.id)?;
                // Until the first heartbeat: no use, no traffic.
                let hb = c.heartbeat.as_ref();
                let stored = hb.map_or(0, |h| h.stored_bytes);
                let device_bytes = hb.map_or(0, |h| h.device_bytes);
                let disk_bytes = hb.map_or(0, |h| h.disk_bytes);
                Some(WorkerInfoMsg {
                    id: wi.id,
                    name: c.spec.name.clone(),
                    addr: c.addr.clone(),
                    host_id: c.spec.host_id.clone(),
                    pid: c.pid,
                    shm_addr: c.shm_addr.clone(),
                    transport: c.transport.clone(),
                    device: c.device.clone(),
                    device_name: c.device_name.clone(),
                    device_memory_limit: c.device_memory_limit,
                    device_memory_used: hb.map_or(0, |h| h.device_memory_used),
                    device_to_host: hb.map_or(0, |h| h.device_to_host),
                    received: hb.map_or_else(Vec::new, |h| h.received.clone()),
                    spilled: hb.map_or_else(Vec::new, |h| h.spilled.clone()),
                    ran: hb.map_or_else(Vec::new, |h| h.ran.clone()),
                    nthreads: c.spec.nthreads,
                    memory_limit: c.spec.memory_limit,
                    resources: c.spec.resources.clone(),
                    processing: wi.processing,
                    stored_keys: wi.stored_keys,
                    stored_bytes: wi.stored_bytes,
                    fetch_us: wi.fetch_us,
                    status: if wi.retiring {
                        "closing_gracefully"
                    } else {
                        "running"
                    }
                    .into(),
                    executing: hb.map_or(0, |h| h.executing),
                    host_bytes: stored.saturating_sub(device_bytes + disk_bytes),
                    device_bytes,
                    disk_bytes,
                    rss_bytes: hb.map_or(0, |h| h.rss_bytes),
                    last_seen_secs: now.saturating_duration_since(c.last_seen).as_secs_f64(),
                    dashboard: c.dashboard.clone(),
                    utilization: hb.and_then(|h| h.utilization),
                    received_from: top_peers(&c.received_from),
                })
            })
            .collect();
        SchedulerInfoMsg {
            address: self.address.clone(),
            rask_version: RASK_VERSION.into(),
            workers,
            tasks_by_state: core
                .tasks_by_state
                .iter()
                .map(|(n, c)| (n.to_string(), *c))
                .collect(),
            // Datasets hold their keys as clients of their own, which no one connects as.
            clients: core.clients.saturating_sub(self.datasets.len() as u32),
            programs: self.program_status(),
            prefixes: core.prefixes.iter().map(prefix_msg).collect(),
            tasks_completed: core.counters.tasks_completed,
            tasks_erred: core.counters.tasks_erred,
            workers_added: core.counters.workers_added,
            workers_removed: core.counters.workers_removed,
            task_stream_last: core.stream_last,
            now_us: unix_us(),
            started_us: self.started_us,
            dashboard: self.dashboard.clone(),
            host_id: self.host_id.clone(),
            pid: std::process::id(),
        }
    }
}
