//! What the scheduler shows of itself: `scheduler_info`, the task stream and `story(key)`,
//! answered to clients and to an in-process [`Observer`] (the dashboard) alike, by the
//! main loop from the core's aggregated and bounded records. Nothing here changes the
//! cluster's state; each answer is built once per request, never per task.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rask_proto::msg::{SchedulerInfoMsg, ToClient, WorkerInfoMsg};
use rask_proto::observe::{TaskPrefixMsg, TaskStream, TaskStreamEntryMsg, TransitionMsg};
use rask_proto::{ClientId, RASK_VERSION};
use rask_scheduler_core::{PrefixInfo, StreamEntry, TaskState, Transition};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::conn::Event;
use crate::route::error_msg;
use crate::server::Server;
use crate::SchedulerError;

/// The most task-stream entries one answer carries, whatever the limit asked.
pub const MAX_STREAM_REPLY: usize = 10_000;

/// Microseconds since the Unix epoch: the clock of task-stream entries and transitions.
pub(crate) fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A server for the dashboard, run in the scheduler's process on its runtime: given the
/// listener bound to [`SchedulerConfig::dashboard`](crate::SchedulerConfig::dashboard)
/// and an [`Observer`], it serves until the scheduler stops (its future is then dropped).
/// It keeps the scheduler crate independent of the dashboard's.
#[derive(Clone)]
pub struct DashboardServer(
    /// The function the scheduler calls once, at start.
    pub Arc<dyn Fn(TcpListener, Observer) -> DashboardFuture + Send + Sync>,
);

/// What a [`DashboardServer`] returns: the server's whole life.
pub type DashboardFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

impl DashboardServer {
    /// Wraps a serving function.
    pub fn new<F, Fut>(f: F) -> Self
    where
        F: Fn(TcpListener, Observer) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        DashboardServer(Arc::new(move |l, o| Box::pin(f(l, o))))
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
            clients: core.clients,
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
        }
    }
}
