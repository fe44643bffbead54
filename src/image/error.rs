//! How an image command fails: [`ImageError`], with a stable [`ImageError::error_type`].

use std::path::PathBuf;

use crate::aws::AwsFault;

/// Why an image command failed.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// An argument or a stack output breaks a rule (names the field).
    #[error("{field}: {message}")]
    InvalidInput {
        field: &'static str,
        message: String,
    },
    /// The builder's sources could not be read or packed.
    #[error("builder sources: {path}: {source}")]
    Sources {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An AWS call failed; `fault.kind` says whether a retry can help.
    #[error(transparent)]
    Aws(#[from] AwsFault),
}

impl ImageError {
    /// A stable name for the kind of failure.
    pub fn error_type(&self) -> &'static str {
        match self {
            ImageError::InvalidInput { .. } => "InvalidInput",
            ImageError::Sources { .. } => "Sources",
            ImageError::Aws(f) if f.is_transient() => "Transient",
            ImageError::Aws(_) => "AwsError",
        }
    }
}
