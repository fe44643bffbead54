//! The failure report: on any failure after it started, layer-builder leaves a small JSON account of it
//! (exit code, stage, message, the installer's last lines) at [`records::report_key`] of its artifact key,
//! where build-status finds it. Never a zip, outside the artifact prefix: it triggers nothing.
//!
//! Only a build with a destination (`--bucket` and `--key`, as every Batch job has) can report; a failed
//! report upload is logged and does not change the exit code.

use tracing::{info, warn};

use super::{BuildError, install::InstallError};
use crate::{
    aws,
    records::{self, FailureReport},
};

/// Set by AWS Batch in every job container.
/// Source: AWS Batch user guide, "AWS Batch job environment variables" (`AWS_BATCH_JOB_ID`).
pub const JOB_ID_ENV: &str = "AWS_BATCH_JOB_ID";

/// The stage a failure happened in.
pub fn stage(err: &BuildError) -> &'static str {
    match err {
        BuildError::Usage(_) => "arguments",
        BuildError::InvalidRequirements(_) | BuildError::RequirementsSource { .. } => {
            "requirements"
        }
        BuildError::Interpreter(_) => "interpreter",
        BuildError::Install(_) => "install",
        BuildError::WrongArchitecture { .. } | BuildError::TooLarge { .. } => "check",
        BuildError::Upload { .. } => "upload",
        BuildError::Io { .. } => "io",
    }
}

/// The report of `err` for the artifact `key`.
pub fn report(err: &BuildError, key: &str, job_id: Option<String>) -> FailureReport {
    let last_lines: &[String] = match err {
        BuildError::Install(InstallError::Failed { tail, .. }) => tail,
        _ => &[],
    };
    FailureReport::new(
        job_id,
        err.exit_code(),
        stage(err),
        &err.to_string(),
        last_lines,
        key,
    )
}

/// Uploads the report of `err` next to where the zip would have gone.
pub async fn upload(err: &BuildError, bucket: &str, key: &str) {
    let job_id = std::env::var(JOB_ID_ENV).ok().filter(|v| !v.is_empty());
    let report = report(err, key, job_id);
    let report_key = records::report_key(key);
    let s3 = aws::s3_client(&aws::sdk_config().await);
    match records::write_json(&s3, bucket, &report_key, &report, None).await {
        Ok(_) => info!(bucket, key = report_key, "failure report uploaded"),
        Err(e) => {
            warn!(bucket, key = report_key, error = %e, "uploading the failure report failed")
        }
    }
}
