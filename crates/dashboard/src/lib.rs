//! The dashboard: pages a person looks at (status, workers, devices, the task graph, a
//! task's story), the JSON they are drawn from (`/api/v1/…`), `/health` and Prometheus
//! `/metrics`, served over HTTP from the scheduler's process.
//!
//! It stays cheap for the scheduler, whose event loop matters more than any page: the
//! cluster is *sampled* — one [`Snapshot`] at most every [`SAMPLE`], shared by every page
//! and scraper however many are open — and never followed task by task; the task stream
//! is read by cursor, at most [`STREAM_LIMIT`] entries per request; pages poll and draw a
//! bounded number of items, so a graph of a million tasks costs a browser what a small
//! one does; the graph view gets the graph's nodes only up to [`GRAPH_LIMIT`] tasks.
//! Requests are counted per route with one atomic each. Assets are compiled into the
//! binary: it works offline.
//!
//! The scheduler provides the data through a [`Source`]; this crate renders it and knows
//! nothing of the scheduler's internals.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod metrics;
mod pages;
mod requests;
pub mod snapshot;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, MethodRouter};
use axum::Router;

/// What the dashboard serves on: a tcp listener, or one of the caller's (TLS, say).
pub use axum::serve::Listener;
use serde::{Deserialize, Serialize};

use requests::{Requests, Route};

pub use snapshot::{
    Graph, GraphNode, LinkRow, PrefixRow, Snapshot, StoryEntry, StreamEntry, WorkerRow,
    WorkerSnapshot,
};

/// A boxed future, as [`Source`]'s methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where the dashboard's data come from (the scheduler). Errors are shown as written.
pub trait Source: Send + Sync + 'static {
    /// The cluster now.
    fn snapshot(&self) -> BoxFuture<'_, Result<Snapshot, String>>;
    /// Task-stream entries after cursor `since`, at most `limit`, oldest first.
    fn task_stream(
        &self,
        since: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<StreamEntry>, String>>;
    /// The transitions of task `key`, oldest first (those the scheduler still keeps).
    fn story(&self, key: String) -> BoxFuture<'_, Result<Vec<StoryEntry>, String>>;
    /// The task graph, its nodes and edges only if it has at most `limit` tasks.
    fn graph(&self, limit: usize) -> BoxFuture<'_, Result<Graph, String>>;
}

/// The largest graph the graph view draws (and asks the scheduler for).
pub const GRAPH_LIMIT: usize = 2000;

/// How often the cluster is sampled at most, whatever the number of pages polling.
pub const SAMPLE: Duration = Duration::from_millis(250);

/// The most task-stream entries one request returns.
pub const STREAM_LIMIT: usize = 1000;

struct Shared {
    source: Arc<dyn Source>,
    every: Duration,
    last: tokio::sync::Mutex<Option<(Instant, Arc<Snapshot>)>>,
    /// Requests served so far, per route (for `rask_dashboard_requests_total`).
    requests: Requests,
}

impl Shared {
    /// The latest sample, taken now if older than the sampling period (one taker at a
    /// time: the others wait for it and share it).
    async fn sample(&self) -> Result<Arc<Snapshot>, String> {
        let mut last = self.last.lock().await;
        if let Some((at, s)) = &*last {
            if at.elapsed() < self.every {
                return Ok(s.clone());
            }
        }
        let s = Arc::new(self.source.snapshot().await?);
        *last = Some((Instant::now(), s.clone()));
        Ok(s)
    }
}

/// The dashboard's routes over `source`, sampled at most every [`SAMPLE`].
pub fn router(source: Arc<dyn Source>) -> Router {
    router_sampled(source, SAMPLE)
}

/// The dashboard's routes over `source`, sampled at most every `every`.
pub fn router_sampled(source: Arc<dyn Source>, every: Duration) -> Router {
    let shared = Arc::new(Shared {
        source,
        every,
        last: tokio::sync::Mutex::new(None),
        requests: Requests::default(),
    });
    let mut app = Router::new()
        .route("/", get(|| async { Redirect::temporary("/status") }))
        .route("/status", page(Route::Status))
        .route("/workers", page(Route::Workers))
        .route("/devices", page(Route::Devices))
        .route("/graph", page(Route::Graph))
        .route("/task", page(Route::Task))
        .route("/health", get(|| async { "ok" }))
        .route("/metrics", get(metrics_text))
        .route("/api/v1/status", get(status_json))
        .route("/api/v1/get_workers", get(workers_json))
        .route("/api/v1/task_stream", get(stream_json))
        .route("/api/v1/story", get(story_json))
        .route("/api/v1/graph", get(graph_json));
    for (path, ctype, body) in pages::ASSETS {
        app = app.route(path, get(move || async move { pages::asset(ctype, body) }));
    }
    app.with_state(shared)
}

/// A page's route: the shell, its request counted as `route`.
fn page(route: Route) -> MethodRouter<Arc<Shared>> {
    get(move |State(s): State<Arc<Shared>>| async move {
        s.requests.count(route);
        pages::page()
    })
}

/// Serves the dashboard on `listener` (a [`tokio::net::TcpListener`], or a listener
/// handing on TLS connections) until the runtime stops (or accepting fails).
pub async fn serve(listener: impl Listener<Addr: std::fmt::Debug>, source: Arc<dyn Source>) {
    serve_until(listener, source, std::future::pending()).await
}

/// Serves the dashboard on `listener` until `stop` completes (connections in progress
/// finish first).
pub async fn serve_until(
    listener: impl Listener<Addr: std::fmt::Debug>,
    source: Arc<dyn Source>,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let served = axum::serve(listener, router(source)).with_graceful_shutdown(stop);
    if let Err(e) = served.await {
        tracing::warn!("the dashboard stopped: {e}");
    }
}

/// A worker's own HTTP server: `/health` and Prometheus `/metrics` from `snapshot`, called
/// once per scrape (a worker's numbers are its own, cheap to read).
pub async fn serve_worker(
    listener: impl Listener<Addr: std::fmt::Debug>,
    snapshot: Arc<dyn Fn() -> WorkerSnapshot + Send + Sync>,
) {
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(move || {
                let snapshot = snapshot.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
                        metrics::worker(&snapshot()),
                    )
                }
            }),
        );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::warn!("the worker's HTTP server stopped: {e}");
    }
}

fn json<T: serde::Serialize>(v: &T) -> Response {
    match serde_json::to_vec(v) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => unavailable(e.to_string()),
    }
}

fn unavailable(why: String) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, why).into_response()
}

async fn metrics_text(State(s): State<Arc<Shared>>) -> Response {
    s.requests.count(Route::Metrics);
    match s.sample().await {
        Ok(snap) => {
            let mut text = metrics::scheduler(&snap);
            text.push_str(&metrics::dashboard_requests(&s.requests.counts()));
            ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response()
        }
        Err(e) => unavailable(e),
    }
}

async fn status_json(State(s): State<Arc<Shared>>) -> Response {
    s.requests.count(Route::ApiStatus);
    match s.sample().await {
        Ok(snap) => json(&*snap),
        Err(e) => unavailable(e),
    }
}

async fn workers_json(State(s): State<Arc<Shared>>) -> Response {
    s.requests.count(Route::ApiGetWorkers);
    match s.sample().await {
        Ok(snap) => json(&snap.workers),
        Err(e) => unavailable(e),
    }
}

#[derive(Deserialize)]
struct StreamQuery {
    #[serde(default)]
    since: u64,
    limit: Option<usize>,
}

async fn stream_json(State(s): State<Arc<Shared>>, Query(q): Query<StreamQuery>) -> Response {
    s.requests.count(Route::ApiTaskStream);
    let limit = q.limit.unwrap_or(STREAM_LIMIT).min(STREAM_LIMIT);
    match s.source.task_stream(q.since, limit).await {
        Ok(mut entries) => {
            entries.truncate(limit);
            json(&entries)
        }
        Err(e) => unavailable(e),
    }
}

#[derive(Deserialize)]
struct StoryQuery {
    key: String,
}

async fn story_json(State(s): State<Arc<Shared>>, Query(q): Query<StoryQuery>) -> Response {
    s.requests.count(Route::ApiStory);
    match s.source.story(q.key).await {
        Ok(entries) => json(&entries),
        Err(e) => unavailable(e),
    }
}

/// `/api/v1/graph`'s answer: the graph and the limit the view draws up to.
#[derive(Serialize)]
struct GraphReply {
    /// [`GRAPH_LIMIT`]: the page says it when the graph is larger.
    limit: usize,
    #[serde(flatten)]
    graph: Graph,
}

async fn graph_json(State(s): State<Arc<Shared>>) -> Response {
    s.requests.count(Route::ApiGraph);
    match s.source.graph(GRAPH_LIMIT).await {
        Ok(graph) => json(&GraphReply {
            limit: GRAPH_LIMIT,
            graph: bounded(graph, GRAPH_LIMIT),
        }),
        Err(e) => unavailable(e),
    }
}

/// `graph` as sent to a browser: no nodes nor edges when it has more than `limit` tasks
/// (whatever the source returned), and no edge naming a node that is not there.
fn bounded(mut graph: Graph, limit: usize) -> Graph {
    if graph.total > limit as u64 || graph.nodes.len() > limit {
        graph.total = graph.total.max(graph.nodes.len() as u64);
        graph.nodes = Vec::new();
        graph.edges = Vec::new();
    }
    let n = graph.nodes.len() as u64;
    graph
        .edges
        .retain(|&(i, j)| u64::from(i) < n && u64::from(j) < n && i != j);
    graph
}

#[cfg(test)]
mod tests;
