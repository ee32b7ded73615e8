//! Deployment artefacts for a Rask cluster, as text: a Slurm job script that starts
//! workers (the shape of dask-jobqueue's `SLURMCluster` scripts, see [`slurm`]) and the
//! Kubernetes manifests of a static cluster (a scheduler Deployment and Service plus a
//! worker Deployment, see [`k8s`]).
//!
//! This crate is pure: it builds strings and validates the specs they come from. It does
//! no I/O, starts no process and talks to no cluster; submitting a script (`sbatch`) or
//! applying manifests (`kubectl apply -f`) is the caller's business. Every invalid value
//! is reported as a [`DeployError`] naming the field and the value.
//!
//! ```
//! use rask_deploy::slurm::SlurmJob;
//!
//! let mut job = SlurmJob::new("tcp://10.0.0.1:8786", 8, 16 << 30);
//! job.partition = Some("gpu".into());
//! let script = job.job_script().unwrap();
//! assert!(script.contains("#SBATCH --mem=16G\n"));
//! assert!(script.contains(" --nthreads 2 --memory-limit 4294967296 --nworkers 4 "));
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
pub mod k8s;
mod shell;
pub mod slurm;
mod yaml;

pub use error::DeployError;
pub use shell::shell_quote;
