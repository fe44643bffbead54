//! What publish-layer answers: one [`RecordResult`] per record, the [`Rejection`]s that tag an artifact, and
//! the errors that fail an invocation (each with a stable `errorType`).

use serde::Serialize;

use super::faults::{Verdict, classify};
use crate::{
    artifact::MetadataError, aws::AwsFault, function_error::HandlerError, zipcheck::ZipProblem,
};

/// The handler's answer: one entry per record (or one `ignored` entry for a test event).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublishResponse {
    pub records: Vec<RecordResult>,
}

impl PublishResponse {
    /// How many records ended with `status`.
    pub fn count(&self, status: &str) -> usize {
        self.records
            .iter()
            .filter(|r| r.outcome.status() == status)
            .count()
    }
}

/// What happened to one record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordResult {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// The outcome of one record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Outcome {
    /// This delivery published the layer version.
    Published {
        layer_version_arn: String,
        version: i64,
    },
    /// The object version was already published (by an earlier or concurrent delivery).
    Duplicate { layer_version_arn: String },
    /// The artifact is permanently unfit; it was tagged `layerforge-status=rejected`.
    Rejected { code: String, reason: String },
    /// Not an artifact upload (test event, removal, other key or bucket).
    Ignored { reason: String },
    /// An AWS fault: the invocation fails so that Lambda retries the event.
    Failed { error_type: String, error: String },
}

impl Outcome {
    pub fn status(&self) -> &'static str {
        match self {
            Outcome::Published { .. } => "published",
            Outcome::Duplicate { .. } => "duplicate",
            Outcome::Rejected { .. } => "rejected",
            Outcome::Ignored { .. } => "ignored",
            Outcome::Failed { .. } => "failed",
        }
    }

    /// The layer version ARN of a published or duplicate record.
    pub fn layer_version_arn(&self) -> Option<&str> {
        match self {
            Outcome::Published {
                layer_version_arn, ..
            }
            | Outcome::Duplicate { layer_version_arn } => Some(layer_version_arn),
            _ => None,
        }
    }
}

/// Why an artifact can never be published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error(transparent)]
    Zip(#[from] ZipProblem),
    #[error("metadata layer-name {metadata:?} does not match the key's layer name {key:?}")]
    NameMismatch { metadata: String, key: String },
    #[error(
        "layer name {name:?} is outside this deployment's LAYER_NAME_PREFIX {prefix:?} (it admits {admitted})"
    )]
    OutsidePrefix {
        name: String,
        prefix: String,
        /// The rule in words ([`crate::config::LayerNamePrefix::describe`]).
        admitted: String,
    },
    /// What the upload says its SHA-256 is disagrees with its bytes: it would claim another content's identity.
    #[error(
        "the {claimed_by} says SHA-256 {claimed:?}, but the object's bytes hash to {computed:?}: a zip's identity \
         is its bytes"
    )]
    ContentMismatch {
        claimed_by: &'static str,
        claimed: String,
        computed: String,
    },
    #[error("Lambda refused the layer: {0}")]
    Lambda(String),
    /// Recorded in the claim by the delivery that found the problem.
    #[error("{reason}")]
    Recorded { code: String, reason: String },
}

impl Rejection {
    /// A short stable code (an S3 tag value).
    pub fn code(&self) -> String {
        match self {
            Rejection::Metadata(e) if e.reason == "missing" => "missing-metadata".to_owned(),
            Rejection::Metadata(_) => "bad-metadata".to_owned(),
            Rejection::Zip(p) => p.code().to_owned(),
            Rejection::NameMismatch { .. } => "name-mismatch".to_owned(),
            Rejection::OutsidePrefix { .. } => "outside-layer-name-prefix".to_owned(),
            Rejection::ContentMismatch { .. } => "content-sha256-mismatch".to_owned(),
            Rejection::Lambda(_) => "lambda-refused".to_owned(),
            Rejection::Recorded { code, .. } => code.clone(),
        }
    }
}

/// Why one record could not be handled.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Permanent: tagged and reported, the invocation succeeds.
    #[error("rejected: {0}")]
    Rejected(Rejection),
    /// An AWS call failed: a fault, never a rejection ([`classify`] says whether a retry soon can help).
    #[error(transparent)]
    Aws(#[from] AwsFault),
}

impl RecordError {
    /// The stable `errorType`: `Rejected`, `Transient` or `AwsError`.
    pub fn error_type(&self) -> &'static str {
        match self {
            RecordError::Rejected(_) => "Rejected",
            RecordError::Aws(f) => match classify(f) {
                Verdict::Retry => "Transient",
                // A fault that reaches here is never a rejection: publish turns Lambda's refusals of the artifact
                // into [`Rejection::Lambda`] before they become a `RecordError`.
                Verdict::Fault | Verdict::Reject => "AwsError",
            },
        }
    }
}

impl From<Rejection> for RecordError {
    fn from(r: Rejection) -> Self {
        RecordError::Rejected(r)
    }
}

/// Why an invocation failed: at least one record hit an AWS fault (the others were processed).
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Throttling, 5xx, timeouts, conflicts, a claim still held: Lambda's retry can succeed.
    #[error(
        "{failed} of {total} records hit a transient AWS failure (the event will be retried): {first}"
    )]
    Transient {
        failed: usize,
        total: usize,
        first: String,
        results: Vec<RecordResult>,
    },
    /// AWS refused a call (a full code storage quota, a missing permission): a retry succeeds once an operator
    /// has acted; the on-failure destination keeps the event until then.
    #[error("{failed} of {total} records failed on an AWS error: {first}")]
    Aws {
        failed: usize,
        total: usize,
        first: String,
        results: Vec<RecordResult>,
    },
}

impl HandlerError for PublishError {
    fn error_type(&self) -> &'static str {
        match self {
            PublishError::Transient { .. } => "Transient",
            PublishError::Aws { .. } => "AwsError",
        }
    }
}

impl PublishError {
    /// Every record's outcome, the failed ones included.
    pub fn results(&self) -> &[RecordResult] {
        match self {
            PublishError::Transient { results, .. } | PublishError::Aws { results, .. } => results,
        }
    }
}
