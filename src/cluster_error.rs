//! Why a cluster could not be started.

use rask_client::ClientError;

/// Why a local cluster could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// GPUs were asked for and none could be found.
    #[error("{0}; a LocalCUDACluster needs a GPU here, or simulated GPUs (sim_gpus)")]
    NoGpus(rask_device::DeviceError),
    /// `CUDA_VISIBLE_DEVICES` names no GPU or MIG instance of this machine, names one
    /// twice, or hides them all (the message names the entry).
    #[error("{0}")]
    VisibleDevices(String),
    /// The cluster's secret could not be read or written.
    #[error("the cluster's secret: {0}")]
    Secret(String),
    /// The cluster's TLS settings could not be loaded (the message names the file).
    #[error("the cluster's TLS: {0}")]
    Tls(String),
    /// The scheduler did not start.
    #[error("cannot start the scheduler: {0}")]
    Scheduler(String),
    /// A worker did not start.
    #[error("worker {name}: {reason}")]
    Worker {
        /// The worker's name.
        name: String,
        /// Why it did not start.
        reason: String,
    },
    /// A worker process exited before it joined the scheduler (what it printed is on
    /// standard error, which worker processes share with this program).
    #[error("worker process {name} exited before joining the scheduler ({status}); its error is on standard error")]
    WorkerExited {
        /// The worker and its device, as in `worker-0 (sim:0)`.
        name: String,
        /// How it exited.
        status: std::process::ExitStatus,
    },
    /// A process of a cluster on other hosts (over ssh, as a batch job) did not start or
    /// ended.
    #[error("{what}: {reason}")]
    Remote {
        /// Which process: its host and role, or the job.
        what: String,
        /// Why, with what it printed last.
        reason: String,
    },
    /// No worker program to start worker processes with.
    #[error("{0}")]
    WorkerBinary(String),
    /// Talking to the cluster's own scheduler failed while starting it.
    #[error(transparent)]
    Client(#[from] ClientError),
}
