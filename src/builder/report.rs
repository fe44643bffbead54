//! The failure report: on any failure after it started, layer-builder leaves a small JSON account of it
//! (exit code, stage, message, the installer's last lines) at [`records::report_key`] of its artifact key,
//! where build-status finds it. Never a zip, outside the artifact prefix: it triggers nothing.
//!
//! Only a build with a destination (`--bucket` and `--key`, as every Batch job has) can report; a failed
//! report upload is logged and does not change the exit code. A Batch job reports through its report grant
//! (no AWS credential, [`crate::grant`]); an expired grant can't report, and build-status then tells the
//! failure from Batch (exit code and log tail).

use tracing::{info, warn};

use super::{error::BuildError, install::InstallError};
use crate::{
    aws,
    grant::{Grant, REPORT_GRANT_ENV},
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
        BuildError::Interpreter(_) | BuildError::UnsupportedInterpreter(_) => "interpreter",
        BuildError::Install(_) => "install",
        BuildError::Bytecode { .. } => "bytecode",
        BuildError::Slim(_) => "slim",
        BuildError::WrongArchitecture { .. }
        | BuildError::NotUniversal(_)
        | BuildError::AboveCeiling { .. }
        | BuildError::TooLarge(_) => "check",
        BuildError::Upload { .. } | BuildError::Grant(crate::grant::GrantError::Expired { .. }) => {
            "upload"
        }
        BuildError::Grant(_) => "arguments",
        BuildError::Io { .. } => "io",
    }
}

/// The report of `err` for the artifact `key`.
pub fn report(err: &BuildError, key: &str, job_id: Option<String>) -> FailureReport {
    let last_lines: &[String] = match err {
        BuildError::Install(InstallError::Failed { tail, .. }) => tail,
        _ => &[],
    };
    let mut report = FailureReport::new(
        job_id,
        err.exit_code(),
        stage(err),
        &err.to_string(),
        last_lines,
        key,
    );
    report.size = err.size_report().cloned();
    report
}

/// Uploads the report of `err` next to where the zip would have gone: with `grant` when the job has one, else
/// with the SDK's credentials.
pub async fn upload(err: &BuildError, bucket: &str, key: &str, grant: Option<&Grant>) {
    let report = report(err, key, job_id());
    put(&report, bucket, key, grant).await
}

/// Uploads a successful build's report (its size report) where a failure report would go, so that
/// build-status and the build record have the size. A failed upload is logged: the layer is built all the same.
pub async fn upload_success(
    size: &crate::size::SizeReport,
    bucket: &str,
    key: &str,
    grant: Option<&Grant>,
) {
    let report = FailureReport::success(job_id(), key, size.clone());
    put(&report, bucket, key, grant).await
}

fn job_id() -> Option<String> {
    std::env::var(JOB_ID_ENV).ok().filter(|v| !v.is_empty())
}

async fn put(report: &FailureReport, bucket: &str, key: &str, grant: Option<&Grant>) {
    let what = if report.succeeded() {
        "build report"
    } else {
        "failure report"
    };
    let report_key = records::report_key(key);
    if let Some(grant) = grant {
        let usable = grant
            .check_target(REPORT_GRANT_ENV, bucket, &report_key)
            .and_then(|()| {
                grant.check_fresh(
                    REPORT_GRANT_ENV,
                    std::time::SystemTime::now(),
                    Default::default(),
                )
            });
        if let Err(e) = usable {
            warn!(bucket, key = report_key, error = %e, what, "no report: the report grant can't be used");
            return;
        }
        let body = serde_json::to_vec(report).unwrap_or_default();
        match super::grant::put_bytes_with_grant(grant, body.into()).await {
            Ok(()) => info!(
                bucket,
                key = report_key,
                what,
                "report uploaded with the report grant"
            ),
            Err(e) => {
                warn!(bucket, key = report_key, error = %e, what, "uploading the report failed")
            }
        }
        return;
    }
    let s3 = aws::s3_client(&aws::sdk_config().await);
    match records::write_json(&s3, bucket, &report_key, report, None).await {
        Ok(_) => info!(bucket, key = report_key, what, "report uploaded"),
        Err(e) => {
            warn!(bucket, key = report_key, error = %e, what, "uploading the report failed")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_names_the_stage_and_keeps_the_installer_lines() {
        let install = BuildError::Install(InstallError::Failed {
            installer: "uv",
            status: "exit status: 1".into(),
            tail: vec![
                "× No solution found".into(),
                "╰─▶ no-such-pkg was not found".into(),
            ],
        });
        let r = report(
            &install,
            "layers/a/python3.12-arm64/0123456789abcdef.zip",
            Some("job-9".into()),
        );
        assert_eq!((r.exit_code, r.stage.as_str()), (3, "install"));
        assert_eq!(r.last_lines.len(), 2);
        assert!(r.message.contains("no-such-pkg"), "{}", r.message);
        assert_eq!(r.job_id.as_deref(), Some("job-9"));
        assert_eq!(
            r.artifact_key,
            "layers/a/python3.12-arm64/0123456789abcdef.zip"
        );

        let too_large = BuildError::TooLarge(Box::new(crate::size::SizeReport::tally(
            &[("a.py".into(), 300_000_000)],
            &[],
            262_144_000,
        )));
        let r = report(&too_large, "k", None);
        assert_eq!((r.exit_code, r.stage.as_str()), (4, "check"));
        assert!(
            r.last_lines.is_empty(),
            "only an install failure has installer lines"
        );
        assert_eq!(stage(&BuildError::Usage("x".into())), "arguments");
    }
}
