//! The worker's error type.

use rask_transport::TransportError;

/// Errors that stop a worker.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot reach the scheduler at {addr}: {source}")]
    Connect {
        addr: String,
        source: TransportError,
    },
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("lost the scheduler connection: {0}")]
    SchedulerLost(String),
    #[error("device {device}: {source}")]
    Device {
        device: String,
        source: rask_device::DeviceError,
    },
    #[error(
        "memory: the process holds {used} bytes, past {:.0}% of the worker's limit of {limit} bytes",
        fraction * 100.0
    )]
    Memory {
        used: u64,
        limit: u64,
        fraction: f64,
    },
}
