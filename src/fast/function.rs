//! The fast builder's handler (DESIGN section 12): the Batch job's own build, run in a Lambda function.
//!
//! The payload's job command is parsed by layer-builder's own argument parser and built by its own library
//! ([`crate::builder::run_with`]) in cross mode: `uv pip install --only-binary :all:` for the target platform
//! and Python version, so no code of any package runs here; then bytecode by this function's interpreter, the
//! ELF ceiling check, the deterministic zip and the upload through the job's grants. The S3 trigger publishes
//! it as it publishes a job's artifact.
//!
//! What can end a fast build:
//! - built: the artifact is uploaded (`outcome: built`);
//! - a requirement has no wheel for the target, or the function's storage is too small: the same job is
//!   submitted to Batch ([`super::submit`]) and the record notes why (`handed_over`);
//! - a failure Batch would have too (an ELF file above the runtime's glibc, over the budget, a requirement that
//!   doesn't resolve): the failure report is uploaded, as a job's would be (`outcome: failed`);
//! - anything that a retry may cure (an upload that kept failing, uv that can't start, a SubmitJob refused for
//!   now): the invocation fails; Lambda retries it, and after the last attempt its on-failure destination,
//!   submit-build, hands the build to Batch. A crash or a timeout takes that way too.

use std::time::Instant;

use serde::Serialize;
use serde_json::Value;
use tracing::{info, warn};

use super::FastBuild;
use crate::{
    builder::{self, BuildError, cli::Args, install::InstallError, platform, report},
    function_error::HandlerError,
    grant::{ARTIFACT_GRANT_ENV, Grant, Grants, REPORT_GRANT_ENV},
    request::{Architecture, Runtime},
};

/// What the fast builder needs, built once per cold start.
#[derive(Clone, Debug)]
pub struct FastState {
    pub s3: aws_sdk_s3::Client,
    pub batch: aws_sdk_batch::Client,
    /// The artifact prefix (`ARTIFACT_PREFIX`), to find the build record of an artifact key.
    pub artifact_prefix: String,
}

/// The invocation's result (asynchronous: it goes to the function's log).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FastOutcome {
    /// `built`, `handed_over` or `failed`.
    pub outcome: &'static str,
    pub artifact: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub seconds: String,
}

/// Why the invocation failed (Lambda retries it, then hands it to the on-failure destination).
#[derive(Debug, thiserror::Error)]
pub enum FastError {
    #[error("not a fast build payload: {0}")]
    Payload(String),
    #[error("the build may succeed on a retry: {0}")]
    Retry(String),
    #[error(transparent)]
    Aws(#[from] crate::aws::AwsFault),
}

impl HandlerError for FastError {
    fn error_type(&self) -> &'static str {
        match self {
            FastError::Payload(_) => "InvalidRequest",
            FastError::Retry(_) => "Transient",
            FastError::Aws(f) => f.error_type(),
        }
    }
}

/// Why a failed install belongs in Batch rather than failing the build: a requirement with no wheel for the
/// target (uv: "has no usable wheels … building from source is disabled"; see `../shared/facts`, section A1), or
/// the function's `/tmp` full.
pub fn hand_over_reason(
    err: &BuildError,
    runtime: Runtime,
    architecture: Architecture,
) -> Option<String> {
    const NO_SPACE: &str =
        "the function's storage ran out (EphemeralStorage): too large for the fast builder";
    match err {
        BuildError::Io { source, .. } if source.raw_os_error() == Some(libc::ENOSPC) => {
            Some(NO_SPACE.to_owned())
        }
        BuildError::Install(InstallError::Failed { tail, .. }) => {
            if tail.iter().any(|l| l.contains("No space left on device")) {
                return Some(NO_SPACE.to_owned());
            }
            let line = tail.iter().find(|l| {
                l.contains("no usable wheels")
                    || l.contains("building from source is disabled")
                    || l.contains("has no wheels with a matching")
            })?;
            let what = no_wheel_requirement(line).unwrap_or_else(|| line.trim().to_owned());
            Some(format!(
                "no wheel for {what} on {} (cp{})",
                platform::ceiling(runtime).uv_platform(architecture),
                runtime.python_version().replace('.', "")
            ))
        }
        _ => None,
    }
}

/// The requirement uv names in its "no usable wheels" line: `Because docopt==0.6.2 has no usable wheels …`,
/// `Because all versions of docopt have no usable wheels …`, `… and x==1 has no usable wheels …`, or the hint's
/// ``Wheels are required for `docopt` because …``.
fn no_wheel_requirement(line: &str) -> Option<String> {
    if let Some(at) = line.find("Wheels are required for `") {
        let rest = &line[at + "Wheels are required for `".len()..];
        return rest.split('`').next().map(str::to_owned);
    }
    let at = line
        .find(" has no usable wheels")
        .or_else(|| line.find(" have no usable wheels"))?;
    let before = &line[..at];
    let start = ["Because ", " and ", "because "]
        .iter()
        .filter_map(|sep| before.rfind(sep).map(|i| i + sep.len()))
        .max()
        .unwrap_or(0);
    let what = before[start..]
        .trim()
        .trim_start_matches("all versions of ")
        .trim_start_matches("only ");
    (!what.is_empty()).then(|| what.to_owned())
}

/// Whether a retry (or Batch, after the last one) may do better than this failure: the upload, uv that could
/// not start, a leftover that could not be ended, a local I/O error.
fn retryable(err: &BuildError) -> bool {
    matches!(
        err,
        BuildError::Upload { .. }
            | BuildError::Io { .. }
            | BuildError::Install(InstallError::Spawn { .. } | InstallError::Survivors(_))
    )
}

/// The handler: build, or hand over, or report the failure.
pub async fn handle(state: &FastState, event: Value) -> Result<FastOutcome, FastError> {
    let started = Instant::now();
    let payload: FastBuild =
        serde_json::from_value(event).map_err(|e| FastError::Payload(e.to_string()))?;
    if payload.layerforge_fast_build != super::PAYLOAD_FORMAT {
        return Err(FastError::Payload(format!(
            "format {} (this function reads {})",
            payload.layerforge_fast_build,
            super::PAYLOAD_FORMAT
        )));
    }
    let grant = |var: &'static str| {
        let json = payload
            .environment
            .get(var)
            .ok_or_else(|| FastError::Payload(format!("no {var} in the environment")))?;
        Grant::parse(var, json).map_err(|e| FastError::Payload(e.to_string()))
    };
    let grants = Grants {
        artifact: grant(ARTIFACT_GRANT_ENV)?,
        report: grant(REPORT_GRANT_ENV)?,
    };
    // The job's own argv, wheels only for the target whatever this host is.
    let argv = std::iter::once("layer-builder".to_owned())
        .chain(payload.job.command.iter().cloned())
        .chain(std::iter::once("--platform-mode=cross".to_owned()));
    let args = <Args as clap::Parser>::try_parse_from(argv)
        .map_err(|e| FastError::Payload(format!("the job's command: {e}")))?;
    let (runtime, architecture) = (
        args.runtime.unwrap_or(Runtime::Python312),
        args.architecture(),
    );
    let artifact = format!("s3://{}/{}", payload.bucket, payload.artifact_key);
    let seconds = || format!("{:.3}", started.elapsed().as_secs_f64());
    info!(artifact, %runtime, %architecture, "fast build");

    let err = match builder::run_with(args, Some(grants.clone())).await {
        Ok(outcome) => {
            info!(
                artifact,
                seconds = started.elapsed().as_secs_f64(),
                "fast build uploaded"
            );
            return Ok(FastOutcome {
                outcome: "built",
                artifact,
                content_sha256: Some(outcome.content_sha256()),
                job_id: None,
                reason: None,
                seconds: seconds(),
            });
        }
        Err(err) => err,
    };
    if let Some(reason) = hand_over_reason(&err, runtime, architecture) {
        // The same job submit-build planned, with the same grants: a fault here fails the invocation, and the
        // retry (or the on-failure destination) submits it.
        let job_id = super::submit(&state.batch, &payload.job, &payload.environment()).await?;
        match payload.record_key(&state.artifact_prefix) {
            Some(record_key) => {
                super::record_hand_over(
                    &state.s3,
                    &payload.bucket,
                    &record_key,
                    &job_id,
                    &payload.job,
                    &reason,
                )
                .await
            }
            None => warn!(
                key = payload.artifact_key,
                "not an artifact key of this prefix; hand-over not recorded"
            ),
        }
        info!(artifact, job_id, reason, "handed over to Batch");
        return Ok(FastOutcome {
            outcome: "handed_over",
            artifact,
            content_sha256: None,
            job_id: Some(job_id),
            reason: Some(reason),
            seconds: seconds(),
        });
    }
    if retryable(&err) {
        warn!(artifact, error = %err, "fast build failed; the invocation fails so that it is retried");
        return Err(FastError::Retry(err.to_string()));
    }
    // A failure Batch would have too: reported where build-status reads it, as a job reports it.
    warn!(artifact, exit_code = err.exit_code(), error = %err, "fast build failed");
    report::upload(
        &err,
        &payload.bucket,
        &payload.artifact_key,
        Some(&grants.report),
    )
    .await;
    Ok(FastOutcome {
        outcome: "failed",
        artifact,
        content_sha256: None,
        job_id: None,
        reason: Some(err.to_string()),
        seconds: seconds(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn install_failed(lines: &[&str]) -> BuildError {
        BuildError::Install(InstallError::Failed {
            installer: "uv",
            status: "exit status: 1".into(),
            tail: lines.iter().map(|l| (*l).to_owned()).collect(),
        })
    }

    #[test]
    fn no_wheel_is_handed_over_naming_the_requirement_and_the_platform() {
        let reason = |lines: &[&str]| {
            hand_over_reason(
                &install_failed(lines),
                Runtime::Python312,
                Architecture::Arm64,
            )
        };
        assert_eq!(
            reason(&[
                "  × No solution found when resolving dependencies:",
                "  ╰─▶ Because docopt==0.6.2 has no usable wheels and you require docopt==0.6.2, we can conclude that your requirements are unsatisfiable.",
            ])
            .as_deref(),
            Some("no wheel for docopt==0.6.2 on aarch64-manylinux_2_34 (cp312)")
        );
        assert_eq!(
            reason(&["  ╰─▶ Because all versions of psycopg2 have no usable wheels and you require psycopg2, we can conclude that your requirements are unsatisfiable."]).as_deref(),
            Some("no wheel for psycopg2 on aarch64-manylinux_2_34 (cp312)")
        );
        assert_eq!(
            reason(&["      hint: Wheels are required for `lxml` because building from source is disabled for all packages (i.e., with `--no-build`)"]).as_deref(),
            Some("no wheel for lxml on aarch64-manylinux_2_34 (cp312)")
        );
        assert!(
            reason(&["error: No solution: nope==9 was not found in the package registry"])
                .is_none(),
            "an unknown package fails in Batch too"
        );
        let full = BuildError::Io {
            context: "writing the zip".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOSPC),
        };
        assert!(
            hand_over_reason(&full, Runtime::Python312, Architecture::Arm64)
                .unwrap()
                .contains("EphemeralStorage")
        );
        assert!(retryable(&full) && !retryable(&install_failed(&["x"])));
    }
}
