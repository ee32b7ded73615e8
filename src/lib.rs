//! Rask: a distributed task cluster — a scheduler, workers and a client — for Rust.
//!
//! ```no_run
//! use rask::{Arg, Client};
//! let client = Client::new()?; // an in-process local cluster, unless RASK_SCHEDULER_ADDRESS is set
//! let x = client.submit("inc", [Arg::from(41)])?;
//! assert_eq!(x.result_as::<i64>()?, 42);
//! # Ok::<(), rask::ClientError>(())
//! ```
//!
//! This facade re-exports the client API and owns the cluster managers: the client crate
//! itself never links scheduler or worker code, so in-process clusters live here.

pub mod affinity;
pub mod array;
pub mod cli;
mod cluster;
pub mod gpu_process;

use std::ops::Deref;

pub use cluster::{LocalCUDACluster, LocalCluster, LocalClusterBuilder};
pub use rask_client::{
    Arg, ClientError, ClientOptions, FromValue, Future, Graph, Resource, WorkerInfoMsg,
};
pub use rask_device::sim::Topology;
pub use rask_kernels::{CudaKernel, Registry};
pub use rask_proto::msg::SchedulerInfoMsg;
pub use rask_proto::Value;
pub use rask_transport::Secret;

/// The environment variable naming a running scheduler for [`Client::new`].
pub const SCHEDULER_ENV: &str = "RASK_SCHEDULER_ADDRESS";

/// A client, possibly owning the local cluster it started. Dereferences to
/// [`rask_client::Client`] for the whole API (`submit`, `map`, `gather`, `compute`, …).
pub struct Client {
    client: rask_client::Client,
    /// The cluster [`Client::new`] started; shut down when the client is dropped.
    cluster: Option<LocalCluster>,
}

impl Client {
    /// Computes a blocked array on the cluster and assembles it here (`T` is `f32` or
    /// `f64`, the array's dtype).
    pub fn compute_array<T: rask_kernels::array::Pod>(
        &self,
        x: &array::Array,
    ) -> Result<ndarray::ArrayD<T>, ClientError> {
        let chunks = self.gather(&self.submit_array(x)?)?;
        array::assemble(x, chunks)
    }

    /// [`Client::compute_array`], awaitable from any async runtime.
    pub async fn compute_array_async<T: rask_kernels::array::Pod>(
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

    /// Connects to `$RASK_SCHEDULER_ADDRESS` if set, otherwise starts an in-process
    /// [`LocalCluster`] (threads) with the built-in ops.
    pub fn new() -> Result<Client, ClientError> {
        match std::env::var(SCHEDULER_ENV) {
            Ok(addr) if !addr.is_empty() => Client::connect(&addr),
            _ => {
                let cluster = LocalCluster::builder().build()?;
                Client::for_cluster(cluster)
            }
        }
    }

    /// Connects to a running scheduler with the built-in op registry.
    pub fn connect(addr: &str) -> Result<Client, ClientError> {
        Client::connect_with_registry(addr, &Registry::builtin())
    }

    /// Connects with a registry of the program's own ops (the cluster's workers must have
    /// the same registry; the handshake checks). The cluster's secret, if any, comes from
    /// `RASK_AUTH_FILE` or `RASK_AUTH_SECRET`.
    pub fn connect_with_registry(addr: &str, registry: &Registry) -> Result<Client, ClientError> {
        let mut opts = ClientOptions {
            registry: Some(registry.info()),
            ..ClientOptions::default()
        };
        opts.conn.auth = Secret::from_env().map_err(|e| ClientError::Other(e.to_string()))?;
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
        Client::connect_with_registry_async(addr, &Registry::builtin()).await
    }

    /// [`Client::connect_with_registry`], awaitable from any async runtime.
    pub async fn connect_with_registry_async(
        addr: &str,
        registry: &Registry,
    ) -> Result<Client, ClientError> {
        let mut opts = ClientOptions {
            registry: Some(registry.info()),
            ..ClientOptions::default()
        };
        opts.conn.auth = Secret::from_env().map_err(|e| ClientError::Other(e.to_string()))?;
        Ok(Client {
            client: rask_client::Client::connect_with_async(addr, opts).await?,
            cluster: None,
        })
    }

    /// Connects to a local cluster and keeps it alive as long as the client.
    pub fn for_cluster(cluster: LocalCluster) -> Result<Client, ClientError> {
        let mut opts = ClientOptions {
            registry: Some(cluster.registry().info()),
            ..ClientOptions::default()
        };
        opts.conn.auth = cluster.secret().cloned();
        let mut c = Client::connect_with(cluster.scheduler_address(), opts)?;
        c.cluster = Some(cluster);
        Ok(c)
    }

    /// The local cluster this client started, if any.
    pub fn cluster(&self) -> Option<&LocalCluster> {
        self.cluster.as_ref()
    }
}

/// Whether any worker drives a GPU (real or simulated).
fn has_gpus(info: &SchedulerInfoMsg) -> bool {
    info.workers
        .iter()
        .any(|w| w.device != "host" && !w.device.is_empty())
}

impl Deref for Client {
    type Target = rask_client::Client;

    fn deref(&self) -> &rask_client::Client {
        &self.client
    }
}
