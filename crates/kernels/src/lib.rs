//! The op registry: named functions that tasks run, the built-in ones (scalar arithmetic,
//! `sum`, `sleep`, `fail`, …) and the user's own, registered in Rust and compiled into both
//! the client and the worker binaries.
//!
//! Rust cannot ship closures over the network, so a task names its op; the handshake
//! compares registry fingerprints so that a client never submits an op its workers lack.
//! This crate runs ops; it does no I/O.
//!
//! # Layout
//!
//! - [`Registry`] (`registry`): named ops, their fingerprint, calling them; the built-in
//!   scalar ops are in `builtin`, the `array.*` ops and the [`chunk::Chunk`] they work on
//!   in [`chunk`].
//! - [`cpu`]: the CPU twins of the CUDA kernels, and the kernels' element types.
//! - [`plan`]: device plans (kernel launches and GEMMs) of the `array.*` ops, lowered from
//!   a typed op, run on the host by the CPU twins or on a simulated GPU.
//! - [`gpu`] (feature `cuda`): plans run on a CUDA GPU from a thread of its own.
//! - [`Accelerator`]: what a worker's device offers; [`OutputAlloc`]: where outputs go.
//! - [`cuda_sources`]: `cuda/*.cu`, embedded; `code`: the identity of this program's code;
//!   [`exactness`]: how closely each kernel on a GPU matches its CPU twin.

#![warn(missing_docs)]

mod accelerator;
mod builtin;
pub mod busy;
pub mod chunk;
mod code;
pub mod cpu;
pub mod cuda_sources;
mod error;
mod exactness;
#[cfg(feature = "cuda")]
pub mod gpu;
mod output;
pub mod plan;
mod registry;

pub use accelerator::{import_lent, map_host_bytes, Accelerator};
pub use code::{code_identity, identity_of as code_identity_of, CodeError};
pub use error::{KernelError, LaunchError, OpError, PlanError};
pub use exactness::{exactness, plan_exactness, ulps_apart, Exactness};
pub use output::{output_bytes, OutputAlloc, OutputBuf};
pub use rask_proto::fnv1a;
pub use registry::{CudaKernel, OpFn, Registry};
