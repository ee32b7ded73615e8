//! Errors of running ops.

/// Errors from running ops.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    #[error("unknown op {0:?}")]
    UnknownOp(String),
    #[error("op {op:?} failed: {message}")]
    Failed { op: String, message: String },
    #[error("the CUDA kernel of op {op:?} does not compile:\n{log}")]
    Compile { op: String, log: String },
}
