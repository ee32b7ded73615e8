//! What the dashboard shows, as plain data: a [`Snapshot`] of the cluster (sampled by the
//! scheduler, at most once per refresh however many pages are open), task-stream entries
//! and a task's story. The scheduler fills them; this crate only renders them.

use serde::Serialize;

/// The cluster at one instant.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Snapshot {
    /// The scheduler's address.
    pub address: String,
    /// Rask's version.
    pub version: String,
    /// Seconds since the scheduler started.
    pub uptime_s: f64,
    /// Clients connected now.
    pub clients: u64,
    /// The workers connected now.
    pub workers: Vec<WorkerRow>,
    /// Tasks in each state now (`waiting`, `processing`, `memory`, `erred`, …).
    pub tasks: Vec<(String, u64)>,
    /// Progress per task prefix.
    pub prefixes: Vec<PrefixRow>,
    /// Tasks finished since the scheduler started (for a tasks-per-second line).
    pub tasks_completed: u64,
    /// Workers that joined, and that left, since the scheduler started.
    pub workers_added: u64,
    /// See [`Snapshot::workers_added`].
    pub workers_removed: u64,
    /// Bytes moved between pairs of workers so far, by link (the device-to-device
    /// transfer matrix), largest first; at most a bounded number of pairs.
    pub links: Vec<LinkRow>,
}

/// Bytes one worker received from another over one link class, so far.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LinkRow {
    /// The sender's name.
    pub from: String,
    /// The receiver's name.
    pub to: String,
    /// The link class: `nvlink`, `pcie`, `shm`, `tcp`, `local`.
    pub link: String,
    /// Bytes received.
    pub bytes: u64,
    /// Seconds the transfers took, in total (from request to arrival).
    pub seconds: f64,
}

/// One worker.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct WorkerRow {
    /// Its name.
    pub name: String,
    /// Where it serves data.
    pub address: String,
    /// Its host.
    pub host: String,
    /// Its device: `host`, `sim:N`, `cuda:N`.
    pub device: String,
    /// The device's product name (`NVIDIA H200`, `simulated GPU`), empty for the host.
    pub device_name: String,
    /// Executor threads.
    pub threads: u64,
    /// Tasks running or queued on it now.
    pub processing: u64,
    /// Bytes of values it holds in host memory now (on a GPU worker: what was spilled or
    /// produced to the host).
    pub memory: u64,
    /// Bytes it moved from its device to host memory so far (a running total).
    pub spilled_host: u64,
    /// Bytes of its values spilled to disk now.
    pub spilled_disk: u64,
    /// Its memory limit in bytes (0: none).
    pub memory_limit: u64,
    /// Device memory in use and its limit (0 and 0 for the host).
    pub device_memory: u64,
    /// See [`WorkerRow::device_memory`].
    pub device_memory_limit: u64,
    /// GPU utilization in percent, where NVML gives it.
    pub utilization: Option<f64>,
    /// How data reaches it (`auto`, `shm`, `tcp`).
    pub transport: String,
    /// Bytes it received from peers, by link class (`nvlink`, `pcie`, `shm`, `tcp`, `local`).
    pub received: Vec<(String, u64)>,
    /// Seconds since its last heartbeat.
    pub last_seen_s: f64,
    /// Its own HTTP server (`/metrics`, `/health`) as `http://host:port`, empty if none.
    pub dashboard: String,
}

/// Progress of the tasks of one prefix (the op, or the key's name part).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PrefixRow {
    /// The prefix.
    pub prefix: String,
    /// Tasks of it in each state now.
    pub waiting: u64,
    /// See [`PrefixRow::waiting`].
    pub processing: u64,
    /// See [`PrefixRow::waiting`].
    pub memory: u64,
    /// See [`PrefixRow::waiting`].
    pub erred: u64,
    /// Tasks of it released so far (a running total).
    pub released: u64,
    /// Seconds its tasks computed, in total.
    pub compute_s: f64,
    /// Bytes of its outputs, in total.
    pub output_bytes: u64,
}

/// One finished task in the task stream.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StreamEntry {
    /// Its position in the stream (increasing; a poller asks for what follows the last).
    pub cursor: u64,
    /// The task's key.
    pub key: String,
    /// Its prefix.
    pub prefix: String,
    /// The worker that ran it.
    pub worker: String,
    /// When it started and stopped, in seconds since the scheduler started.
    pub start_s: f64,
    /// See [`StreamEntry::start_s`].
    pub stop_s: f64,
    /// `compute`, `transfer` or `spill`.
    pub kind: String,
    /// For a transfer, the worker it came from (empty otherwise).
    pub peer: String,
    /// For a transfer its link class (`nvlink`, `pcie`, `shm`, `tcp`, `local`); for a
    /// spill its direction (`device->host`, `device->disk`, `host->disk`); empty for
    /// computing.
    pub detail: String,
    /// Bytes moved (a transfer, a spill) or produced (computing).
    pub nbytes: u64,
}

/// The task graph the scheduler holds, for the graph view of small graphs.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Graph {
    /// The number of tasks the scheduler holds now.
    pub total: u64,
    /// The tasks, when `total` is at most the limit asked for; empty otherwise (a graph
    /// too large to draw is not sent).
    pub nodes: Vec<GraphNode>,
    /// Dependencies: `(i, j)` when `nodes[j]` reads `nodes[i]`'s result.
    pub edges: Vec<(u32, u32)>,
}

/// One task in a [`Graph`].
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct GraphNode {
    /// Its key.
    pub key: String,
    /// Its prefix.
    pub prefix: String,
    /// Its state (`released`, `waiting`, `queued`, `no-worker`, `processing`, `memory`,
    /// `erred`).
    pub state: String,
    /// The worker running or holding it, if any.
    pub worker: String,
}

/// One transition of a task (its story).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StoryEntry {
    /// Seconds since the scheduler started.
    pub at_s: f64,
    /// The state it left and the one it entered.
    pub from: String,
    /// See [`StoryEntry::from`].
    pub to: String,
    /// Why (the stimulus: `task-finished`, `worker-lost`, …, or the error of an erred task).
    pub why: String,
    /// The worker concerned, if any.
    pub worker: String,
}

/// One worker, as its own `/metrics` tells it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct WorkerSnapshot {
    /// Its name.
    pub name: String,
    /// Executor threads.
    pub threads: u64,
    /// Its tasks by state (`executing`, `ready`, `fetching`, `memory`, …).
    pub tasks: Vec<(String, u64)>,
    /// Bytes of values it holds in host memory (Dask's "managed").
    pub managed: u64,
    /// Its process's memory beyond that (Dask's "unmanaged").
    pub unmanaged: u64,
    /// Bytes spilled, by direction (`device->host`, `host->disk`, `disk->device`, …).
    pub spilled: Vec<(String, u64)>,
    /// Its device (`host`, `sim:N`, `cuda:N`), device memory in use and the limit.
    pub device: String,
    /// See [`WorkerSnapshot::device`].
    pub device_memory: u64,
    /// See [`WorkerSnapshot::device`].
    pub device_memory_limit: u64,
    /// Bytes received from peers, by link class.
    pub received: Vec<(String, u64)>,
    /// Seconds spent receiving from peers (request to arrival, summed), by link class.
    pub transfer_seconds: Vec<(String, f64)>,
    /// GPU utilization in percent over the last heartbeat, where known.
    pub utilization: Option<f64>,
}
