//! The worker's error type.

use rask_transport::TransportError;

/// Errors that stop a worker.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Connecting to the scheduler, or its handshake, failed (refused, wrong secret,
    /// another version, …).
    #[error("cannot reach the scheduler at {addr}: {source}")]
    Connect {
        /// The scheduler's address.
        addr: String,
        /// Why.
        source: TransportError,
    },
    /// A connection or listener failed after start-up.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The scheduler closed the connection or told the worker to close; carries why.
    #[error("lost the scheduler connection: {0}")]
    SchedulerLost(String),
    /// The worker's device could not be opened.
    #[error("device {device}: {source}")]
    Device {
        /// The device (`cuda:N`, …).
        device: String,
        /// The device's error.
        source: rask_device::DeviceError,
    },
    /// A worker alone in its process passed the terminate threshold and stops.
    #[error(
        "memory: the process holds {used} bytes, past {:.0}% of the worker's limit of {limit} bytes",
        fraction * 100.0
    )]
    Memory {
        /// The process's memory as the thresholds count it, in bytes.
        used: u64,
        /// The worker's memory limit, in bytes.
        limit: u64,
        /// The terminate threshold, a fraction of `limit`.
        fraction: f64,
    },
    /// The worker's device failed for good (a sticky CUDA error): no op runs on it again
    /// in this process. The worker leaves; its supervisor starts a fresh process.
    #[error("{device} failed for good: {message}")]
    DeviceLost {
        /// The device (`cuda:N`, `sim:N`).
        device: String,
        /// What failed, naming the op and its kernels.
        message: String,
    },
}
