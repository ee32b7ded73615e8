//! The one error type of the crate.

use std::fmt;

/// Why an artefact could not be generated, or a tool's output not understood.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeployError {
    /// A field of a spec holds a value that cannot be deployed.
    Invalid {
        /// The field, as named in the spec (e.g. `walltime`, `name`).
        field: &'static str,
        /// The offending value, as given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `sbatch`'s output holds no job id.
    NoJobId {
        /// The output, as given.
        output: String,
    },
}

impl DeployError {
    pub(crate) fn invalid(
        field: &'static str,
        value: impl fmt::Display,
        reason: impl Into<String>,
    ) -> DeployError {
        DeployError::Invalid {
            field,
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for DeployError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Debug formatting quotes the value and shows newlines and control
            // characters escaped, so the message stays on one line.
            DeployError::Invalid {
                field,
                value,
                reason,
            } => write!(f, "invalid {field} {value:?}: {reason}"),
            DeployError::NoJobId { output } => {
                write!(f, "no job id in sbatch's output {output:?}")
            }
        }
    }
}

impl std::error::Error for DeployError {}
