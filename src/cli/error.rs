//! How a command fails: [`CliError`], each kind with the exit code it maps to (1 failed or rejected, 2 invalid
//! request or usage, 3 AWS or configuration error).

use crate::{aws::error_chain, local::LocalError};

/// A failure, with the exit code it maps to.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The build failed or was rejected (exit 1).
    #[error("{0}")]
    Failed(String),
    /// The request is invalid: the function's message, naming the field (exit 2).
    #[error("{0}")]
    Invalid(String),
    /// An AWS call or the configuration failed (exit 3).
    #[error("{0}")]
    Aws(String),
}

impl CliError {
    /// A failed AWS call: `call` names the operation and its target, then the error with its sources.
    pub fn aws_call(call: &str, err: &dyn std::error::Error) -> Self {
        CliError::Aws(format!("{call}: {}", error_chain(err)))
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Failed(_) => 1,
            CliError::Invalid(_) => 2,
            CliError::Aws(_) => 3,
        }
    }
}

impl From<LocalError> for CliError {
    fn from(err: LocalError) -> Self {
        CliError::Aws(err.to_string())
    }
}
