//! Rask: a distributed task cluster — a scheduler, workers and a client — for Rust.
//!
//! ```no_run
//! use rask::{Arg, Client};
//! let client = Client::new()?; // an in-process local cluster, unless RASK_SCHEDULER_ADDRESS is set
//! let x = client.submit("inc", [Arg::from(41)])?;
//! assert_eq!(x.result_as::<i64>()?, 42);
//! # Ok::<(), rask::Error>(())
//! ```
//!
//! This facade re-exports the client API and owns the cluster managers: the client crate
//! itself never links scheduler or worker code, so in-process clusters live here.

#![warn(missing_docs)]

pub mod adapt;
pub mod affinity;
pub mod array;
pub mod cli;
mod cluster;
mod cluster_error;
pub mod config;
pub mod dashboard;
mod entry;
pub mod gpu_process;
mod progress;
mod report;
pub mod slurm;
pub mod ssh;
pub mod supervise;
pub mod typed;

use std::collections::HashMap;

/// The byte buffers values carry (`Value::Bytes`), re-exported so that programs use the
/// same version.
pub use bytes;
pub use cluster::{ClusterError, LocalCUDACluster, LocalCluster, LocalClusterBuilder};
/// The n-dimensional arrays [`Client::compute_array`] returns, re-exported so that
/// programs use the same version.
pub use ndarray;
pub use rask_client::{
    Arg, ClientError, ClientOptions, FromValue, Future, Graph, IntoArg, IntoArgs, Resource, Submit,
    WorkerInfoMsg, MAP_CHUNK,
};
pub use rask_device::sim::Topology;
pub use rask_kernels::{CudaKernel, Registry};
/// Turns a plain Rust function into a typed op of the cluster; see [`typed`].
pub use rask_macros::op;
pub use rask_proto::msg::SchedulerInfoMsg;
pub use rask_proto::Value;
pub use rask_transport::{Secret, Tls, TlsFiles};

pub use entry::{is_worker_entry_called, worker_entry, WORKER_ENTRY_ARG};
pub use progress::progress;
pub use report::performance_report;

/// The environment variable naming a running scheduler for [`Client::new`].
pub const SCHEDULER_ENV: &str = "RASK_SCHEDULER_ADDRESS";

/// The environment variable naming a scheduler file (`rask scheduler --scheduler-file`)
/// for [`Client::new`], when [`SCHEDULER_ENV`] is not set.
pub const SCHEDULER_FILE_ENV: &str = "RASK_SCHEDULER_FILE";

/// Everything that can go wrong starting a cluster or talking to one.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Talking to the cluster failed (see [`ClientError`]).
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Starting the local cluster failed (see [`ClusterError`]).
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// A connection to a cluster, possibly owning the local cluster it started: submit tasks
/// and graphs, gather results, compute blocked arrays.
pub struct Client {
    client: rask_client::Client,
    /// The cluster [`Client::new`] started; shut down when the client is dropped.
    cluster: Option<LocalCluster>,
}

impl Client {
    /// Computes a blocked array on the cluster and assembles it here (`T` is `f32` or
    /// `f64`, the array's dtype).
    pub fn compute_array<T: rask_kernels::chunk::Pod>(
        &self,
        x: &array::Array,
    ) -> Result<ndarray::ArrayD<T>, ClientError> {
        let chunks = self.gather(&self.submit_array(x)?)?;
        array::assemble(x, chunks)
    }

    /// [`Client::compute_array`], awaitable from any async runtime.
    pub async fn compute_array_async<T: rask_kernels::chunk::Pod>(
        &self,
        x: &array::Array,
    ) -> Result<ndarray::ArrayD<T>, ClientError> {
        let gpus = has_gpus(&self.scheduler_info_async().await?);
        let chunks = self.gather_async(&self.submit_array_on(x, gpus)?).await?;
        array::assemble(x, chunks)
    }

    /// Submits an array's graph; the futures of its chunks, in `chunk_keys` order.
    fn submit_array(&self, x: &array::Array) -> Result<Vec<Future>, ClientError> {
        self.submit_array_on(x, has_gpus(&self.scheduler_info()?))
    }

    /// Submits an array's graph for a cluster with GPU workers or without.
    fn submit_array_on(&self, x: &array::Array, gpus: bool) -> Result<Vec<Future>, ClientError> {
        let g = array::to_graph(x, gpus);
        let keys = x.chunk_keys();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        self.compute(&g, &refs)
    }

    /// Computes an array's chunks and keeps them on the workers; new expressions on the
    /// result start from them instead of recomputing.
    pub fn persist_array(&self, x: &array::Array) -> Result<array::Persisted, ClientError> {
        let futures = self.submit_array(x)?;
        for f in &futures {
            f.wait()?;
        }
        Ok(array::Persisted::new(x.from_existing(x.name()), futures))
    }

    /// [`Client::persist_array`], awaitable from any async runtime.
    pub async fn persist_array_async(
        &self,
        x: &array::Array,
    ) -> Result<array::Persisted, ClientError> {
        let gpus = has_gpus(&self.scheduler_info_async().await?);
        let futures = self.submit_array_on(x, gpus)?;
        for f in &futures {
            f.wait_async().await?;
        }
        Ok(array::Persisted::new(x.from_existing(x.name()), futures))
    }

    /// Connects to `$RASK_SCHEDULER_ADDRESS` if set, else to the scheduler named in the
    /// file `$RASK_SCHEDULER_FILE` if set, otherwise starts an in-process
    /// [`LocalCluster`] (threads) with the built-in ops and the program's typed ops.
    pub fn new() -> Result<Client, Error> {
        match std::env::var(SCHEDULER_ENV) {
            Ok(addr) if !addr.is_empty() => Ok(Client::connect(&addr)?),
            _ => match std::env::var_os(SCHEDULER_FILE_ENV) {
                Some(f) if !f.is_empty() => Ok(Client::from_scheduler_file(f.as_ref())?),
                _ => {
                    let cluster = LocalCluster::builder().build()?;
                    Ok(Client::for_cluster(cluster)?)
                }
            },
        }
    }

    /// Connects to the scheduler whose address `rask scheduler --scheduler-file` wrote
    /// to `path`.
    pub fn from_scheduler_file(path: &std::path::Path) -> Result<Client, ClientError> {
        let addr = cli::read_scheduler_file(path).map_err(ClientError::Other)?;
        Client::connect(&addr)
    }

    /// Connects to a running scheduler, knowing the built-in ops and the program's typed
    /// ops (`#[rask::op]`).
    pub fn connect(addr: &str) -> Result<Client, ClientError> {
        Client::connect_with_registry(addr, &Registry::program())
    }

    /// Connects with a registry of the program's own ops (the cluster's workers must have
    /// the same registry; the handshake checks). The cluster's secret, if any, comes from
    /// `RASK_AUTH_FILE` or `RASK_AUTH_SECRET`; TLS settings from `RASK_TLS_CA` (and
    /// `RASK_TLS_CERT`, `RASK_TLS_KEY` where the cluster requires client certificates).
    pub fn connect_with_registry(addr: &str, registry: &Registry) -> Result<Client, ClientError> {
        let mut opts = ClientOptions {
            registry: Some(registry.info()),
            program: entry::program_source(registry),
            ..ClientOptions::default()
        };
        opts.conn.auth = Secret::from_env().map_err(|e| ClientError::Other(e.to_string()))?;
        opts.conn.tls = tls_from_env()?;
        Client::connect_with(addr, opts)
    }

    /// Connects with explicit options (registry, secret, limits).
    pub fn connect_with(addr: &str, opts: ClientOptions) -> Result<Client, ClientError> {
        Ok(Client {
            client: rask_client::Client::connect_with(addr, opts)?,
            cluster: None,
        })
    }

    /// [`Client::connect`], awaitable from any async runtime.
    pub async fn connect_async(addr: &str) -> Result<Client, ClientError> {
        Client::connect_with_registry_async(addr, &Registry::program()).await
    }

    /// [`Client::connect_with_registry`], awaitable from any async runtime.
    pub async fn connect_with_registry_async(
        addr: &str,
        registry: &Registry,
    ) -> Result<Client, ClientError> {
        let mut opts = ClientOptions {
            registry: Some(registry.info()),
            program: entry::program_source(registry),
            ..ClientOptions::default()
        };
        opts.conn.auth = Secret::from_env().map_err(|e| ClientError::Other(e.to_string()))?;
        opts.conn.tls = tls_from_env()?;
        Ok(Client {
            client: rask_client::Client::connect_with_async(addr, opts).await?,
            cluster: None,
        })
    }

    /// Connects to a local cluster and keeps it alive as long as the client.
    pub fn for_cluster(cluster: LocalCluster) -> Result<Client, ClientError> {
        let opts = ClientOptions {
            registry: Some(cluster.registry().info()),
            program: entry::program_source(cluster.registry()),
            ..cluster.client_options()
        };
        let mut c = Client::connect_with(cluster.scheduler_address(), opts)?;
        c.cluster = Some(cluster);
        Ok(c)
    }

    /// The local cluster this client started, if any.
    pub fn cluster(&self) -> Option<&LocalCluster> {
        self.cluster.as_ref()
    }
}

/// The TLS settings of `RASK_TLS_*`, loaded; `None` when none is set.
pub fn tls_from_env() -> Result<Option<rask_transport::Tls>, ClientError> {
    rask_transport::TlsFiles::from_env()
        .and_then(|f| f.load())
        .map_err(|e| ClientError::Other(e.to_string()))
}

/// Whether any worker drives a GPU (real or simulated).
fn has_gpus(info: &SchedulerInfoMsg) -> bool {
    info.workers
        .iter()
        .any(|w| w.device != "host" && !w.device.is_empty())
}

/// The client API itself ([`rask_client::Client`]'s), forwarded.
impl Client {
    /// The scheduler's address.
    pub fn scheduler_address(&self) -> &str {
        self.client.scheduler_address()
    }

    /// Runs `op` on the cluster with these arguments: a dynamic op by name with [`Arg`]s
    /// (`submit("inc", [Arg::from(1)])`, a `Future<Value>`), or a typed op with a tuple of
    /// its argument types (`submit(hits, (seed, n))`, a `Future` of its output); futures
    /// among the arguments are dependencies.
    pub fn submit<O: Submit<A>, A>(
        &self,
        op: O,
        args: A,
    ) -> Result<Future<O::Output>, ClientError> {
        self.client.submit(op, args)
    }

    /// Runs `op` once per item (each item the arguments of one task, as for
    /// [`Client::submit`]), in submissions of up to [`MAP_CHUNK`] tasks, each sent once
    /// built (see [`rask_client::Client::map`]).
    pub fn map<O, I, A>(&self, op: O, items: I) -> Result<Vec<Future<O::Output>>, ClientError>
    where
        O: Submit<A>,
        I: IntoIterator<Item = A>,
    {
        self.client.map(op, items)
    }

    /// Submits a graph and returns futures for `outputs` (keys of the graph, or keys of
    /// futures this client holds).
    pub fn compute(&self, graph: &Graph, outputs: &[&str]) -> Result<Vec<Future>, ClientError> {
        self.client.compute(graph, outputs)
    }

    /// The dict-style form: runs a graph and returns the values of `outputs`.
    pub fn get(&self, graph: &Graph, outputs: &[&str]) -> Result<Vec<Value>, ClientError> {
        self.client.get(graph, outputs)
    }

    /// [`Client::get`], awaitable from any async runtime.
    pub async fn get_async(
        &self,
        graph: &Graph,
        outputs: &[&str],
    ) -> Result<Vec<Value>, ClientError> {
        self.client.get_async(graph, outputs).await
    }

    /// The values of these futures, fetched from the workers holding them; blocks. While
    /// they are computed, a progress bar is drawn when standard error is a terminal
    /// ([`progress`]; `RASK_PROGRESS=off` never draws it).
    pub fn gather<T: 'static>(&self, futures: &[Future<T>]) -> Result<Vec<T>, ClientError> {
        if progress::automatic() && !futures.iter().all(|f| f.done()) {
            progress(futures)?;
        }
        self.client.gather(futures)
    }

    /// The values of these futures; awaitable from any async runtime.
    pub async fn gather_async<T>(&self, futures: &[Future<T>]) -> Result<Vec<T>, ClientError> {
        self.client.gather_async(futures).await
    }

    /// Where each key's data lives: key → worker addresses.
    pub fn who_has<T>(
        &self,
        futures: &[Future<T>],
    ) -> Result<HashMap<String, Vec<String>>, ClientError> {
        self.client.who_has(futures)
    }

    /// [`Client::who_has`], awaitable from any async runtime.
    pub async fn who_has_async<T>(
        &self,
        futures: &[Future<T>],
    ) -> Result<HashMap<String, Vec<String>>, ClientError> {
        self.client.who_has_async(futures).await
    }

    /// Where each key's data lives, with the device: key → (worker address, device).
    pub fn who_has_devices<T>(
        &self,
        futures: &[Future<T>],
    ) -> Result<HashMap<String, Vec<(String, String)>>, ClientError> {
        self.client.who_has_devices(futures)
    }

    /// The scheduler's view: workers (resources, load), task counts by state, clients.
    pub fn scheduler_info(&self) -> Result<SchedulerInfoMsg, ClientError> {
        self.client.scheduler_info()
    }

    /// [`Client::scheduler_info`], awaitable from any async runtime.
    pub async fn scheduler_info_async(&self) -> Result<SchedulerInfoMsg, ClientError> {
        self.client.scheduler_info_async().await
    }

    /// Finished tasks after cursor `since` (0: all the scheduler keeps), at most `limit`,
    /// oldest first, and the cursor to ask from next (see `/api/v1/task_stream`).
    pub fn get_task_stream(
        &self,
        since: u64,
        limit: u64,
    ) -> Result<rask_proto::observe::TaskStream, ClientError> {
        self.client.get_task_stream(since, limit)
    }

    /// The recorded transitions of `key`, oldest first: from and to which state, why,
    /// on which worker, when, and the error of a task that erred.
    pub fn story(&self, key: &str) -> Result<Vec<rask_proto::observe::TransitionMsg>, ClientError> {
        self.client.story(key)
    }

    /// Sends `n` empty messages through the scheduler to its workers and back; the time
    /// they took: the message path's ceiling, with no scheduling. See
    /// [`rask_client::Client::echo`].
    pub fn echo(&self, n: u64) -> Result<std::time::Duration, ClientError> {
        self.client.echo(n)
    }

    /// Blocks until the scheduler has at least `n` workers.
    pub fn wait_for_workers(&self, n: usize) -> Result<(), ClientError> {
        self.client.wait_for_workers(n)
    }

    /// [`Client::wait_for_workers`], awaitable from any async runtime.
    pub async fn wait_for_workers_async(&self, n: usize) -> Result<(), ClientError> {
        self.client.wait_for_workers_async(n).await
    }

    /// Number of keys this client holds futures for.
    pub fn held_keys(&self) -> usize {
        self.client.held_keys()
    }

    /// Shuts the cluster down (the scheduler and every worker), as Dask's
    /// `Client.shutdown`; does not wait for it.
    pub fn shutdown(&self) -> Result<(), ClientError> {
        self.client.shutdown()
    }

    /// Retires workers gracefully (their data moves first); the names of those retired.
    pub fn retire_workers(&self, names: &[String]) -> Result<Vec<String>, ClientError> {
        self.client.retire_workers(names)
    }

    /// [`Client::retire_workers`], awaitable from any async runtime.
    pub async fn retire_workers_async(&self, names: &[String]) -> Result<Vec<String>, ClientError> {
        self.client.retire_workers_async(names).await
    }

    /// The number of workers the cluster should have (Dask's `adaptive_target`).
    pub fn adaptive_target(&self, target: std::time::Duration) -> Result<usize, ClientError> {
        self.client.adaptive_target(target)
    }

    /// [`Client::adaptive_target`], awaitable from any async runtime.
    pub async fn adaptive_target_async(
        &self,
        target: std::time::Duration,
    ) -> Result<usize, ClientError> {
        self.client.adaptive_target_async(target).await
    }

    /// The workers to retire to bring the cluster down to `target` workers, best first.
    pub fn workers_to_close(&self, target: usize) -> Result<Vec<String>, ClientError> {
        self.client.workers_to_close(target)
    }

    /// [`Client::workers_to_close`], awaitable from any async runtime.
    pub async fn workers_to_close_async(&self, target: usize) -> Result<Vec<String>, ClientError> {
        self.client.workers_to_close_async(target).await
    }

    /// Publishes `futures` as the dataset `name` (Dask's `publish_dataset`): the scheduler
    /// keeps their values for any client until unpublished; a name taken is refused
    /// unless `replace`.
    pub fn publish_dataset<T>(
        &self,
        name: &str,
        futures: &[Future<T>],
        replace: bool,
    ) -> Result<(), ClientError> {
        self.client.publish_dataset(name, futures, replace)
    }

    /// Futures for the dataset `name`'s values, in the order published.
    pub fn get_dataset(&self, name: &str) -> Result<Vec<Future>, ClientError> {
        self.client.get_dataset(name)
    }

    /// [`Client::get_dataset`], awaitable from any async runtime.
    pub async fn get_dataset_async(&self, name: &str) -> Result<Vec<Future>, ClientError> {
        self.client.get_dataset_async(name).await
    }

    /// The names of the published datasets, sorted.
    pub fn list_datasets(&self) -> Result<Vec<String>, ClientError> {
        self.client.list_datasets()
    }

    /// Unpublishes the dataset `name`.
    pub fn unpublish_dataset(&self, name: &str) -> Result<(), ClientError> {
        self.client.unpublish_dataset(name)
    }
}
