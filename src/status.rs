//! build-status: what became of a build (DESIGN section 9).
//!
//! A query names a job (`{"job_id": …}`) or an artifact (`{"artifact": "s3://BUCKET/KEY"}`). [`handle`] gathers
//! what is known about the build ([`observe`]): its build record, the builder's failure report, the artifact
//! and its tags, and the Batch job; [`derive`] (pure) turns that into one state:
//!
//! | state | when |
//! | --- | --- |
//! | `published` | the zip is tagged `layer-version-arn` (or the record says so and the zip exists) |
//! | `rejected` | publish-layer tagged the zip `layerforge-status=rejected`; `reason` says why |
//! | `failed` | the builder's failure report for this job, or Batch's `FAILED` (its statusReason, the container's reason and exit code), or a job that ended without an artifact and with a reason (TerminateJob's), or a submission that never reached Batch |
//! | `built` | the zip exists and publish-layer has not decided yet |
//! | `running` | Batch says STARTING or RUNNING, or SUCCEEDED without a reason while the artifact is not there yet |
//! | `queued` | Batch says SUBMITTED, PENDING or RUNNABLE, or submit-build is between its claim and SubmitJob |
//!
//! What the artifact bucket says comes first, Batch second. In AWS a job that exits 0 has uploaded its zip
//! before it exits, so the artifact is there by the time Batch says SUCCEEDED. moto's Batch marks every job
//! SUCCEEDED at once without running it; the local pipeline runs the job's command afterwards. A SUCCEEDED job
//! with no artifact and no statusReason therefore reads `running` (its command has not delivered yet), and one
//! with a statusReason (an operator's TerminateJob) reads `failed` with that reason: both read as AWS would
//! once layer-builder has run the command.
//!
//! For `failed`, `log_tail` holds the last lines of the job's CloudWatch log stream when they can be read
//! (the group from the job's `awslogs-group` option, else Batch's default `/aws/batch/job`), else the
//! installer's last lines from the failure report. Reading the log never fails the query.
//!
//! `size` is the builder's size report (DESIGN section 13) when its report about this build carries one: every
//! successful build leaves one at the failure report's key before it uploads the zip, and a build over its
//! budget fails with one. A report an older job left at that key (another job id, or written before this
//! build's submission) is not shown.

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;
use tracing::info;

pub use crate::observe::{
    ArtifactView, CLAIM_GRACE_MS, DEFAULT_LOG_GROUP, IMAGE_MISSING_HINT, JobView, LOG_TAIL_LINES,
    Observed, State, Verdict, artifact_view, batch_reason, derive, describe_job, log_tail, observe,
    read_report,
};
use crate::{
    artifact::ArtifactKey,
    aws::AwsFault,
    config::Config,
    function_error::HandlerError,
    records,
    request::{InvalidRequest, S3Uri},
    size::SizeReport,
};

/// The query's fields.
const FIELDS: &[&str] = &["job_id", "artifact"];
/// Batch job ids are UUIDs; anything far longer is not one.
const MAX_JOB_ID: usize = 128;

/// What build-status needs, built once per cold start and cheap to clone.
#[derive(Clone, Debug)]
pub struct StatusState {
    pub config: Arc<Config>,
    pub s3: aws_sdk_s3::Client,
    pub batch: aws_sdk_batch::Client,
    pub logs: aws_sdk_cloudwatchlogs::Client,
}

/// Why a status query failed.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The query breaks a rule (names the field).
    #[error(transparent)]
    InvalidRequest(#[from] InvalidRequest),
    /// Nothing is known about the job or artifact named by `field`.
    #[error("{field}: {message}")]
    NotFound {
        field: &'static str,
        message: String,
    },
    /// An AWS call failed; `fault.kind` says whether a retry can help.
    #[error(transparent)]
    Aws(#[from] AwsFault),
}

impl HandlerError for StatusError {
    fn error_type(&self) -> &'static str {
        match self {
            StatusError::InvalidRequest(_) => "InvalidRequest",
            StatusError::NotFound { .. } => "NotFound",
            StatusError::Aws(f) => f.error_type(),
        }
    }
}

/// A validated query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    Job(String),
    Artifact(ArtifactKey),
}

/// Validates a raw query: exactly one of `job_id` / `artifact`, no other field; an artifact in this
/// deployment's bucket, under its prefix, in the key scheme.
pub fn parse_query(event: &Value, config: &Config) -> Result<Query, InvalidRequest> {
    let Value::Object(map) = event else {
        return Err(InvalidRequest::new(
            "request",
            "must be a JSON object with job_id or artifact",
            &event.to_string(),
        ));
    };
    if let Some(unknown) = map.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(InvalidRequest::new(
            unknown.as_str(),
            format!("unknown field; expected one of {}", FIELDS.join(", ")),
            unknown,
        ));
    }
    let text = |field: &str| -> Result<Option<String>, InvalidRequest> {
        match map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => {
                Err(InvalidRequest::new(field, "must not be empty", s))
            }
            Some(Value::String(s)) => Ok(Some(s.trim().to_owned())),
            Some(other) => Err(InvalidRequest::new(
                field,
                "must be a string",
                &other.to_string(),
            )),
        }
    };
    match (text("job_id")?, text("artifact")?) {
        (Some(_), Some(_)) => Err(InvalidRequest::new(
            "job_id",
            "give job_id or artifact, not both",
            &event.to_string(),
        )),
        (None, None) => Err(InvalidRequest::new(
            "request",
            "give job_id or artifact",
            &event.to_string(),
        )),
        (Some(job_id), None) => {
            if job_id.len() > MAX_JOB_ID
                || !job_id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ':')
            {
                // A UUID; an array child's id adds ":<index>".
                return Err(InvalidRequest::new(
                    "job_id",
                    "must be a Batch job id (letters, digits, '-', ':')",
                    &job_id,
                ));
            }
            Ok(Query::Job(job_id))
        }
        (None, Some(artifact)) => {
            let uri = S3Uri::parse(&artifact)
                .map_err(|rule| InvalidRequest::new("artifact", rule, &artifact))?;
            if uri.bucket != config.artifact_bucket {
                return Err(InvalidRequest::new(
                    "artifact",
                    format!(
                        "must be in this deployment's artifact bucket {}",
                        config.artifact_bucket
                    ),
                    &artifact,
                ));
            }
            let key = ArtifactKey::parse(&config.artifact_prefix, &uri.key).ok_or_else(|| {
                InvalidRequest::new(
                    "artifact",
                    format!(
                        "must be a layer artifact s3://{}/{}/NAME/RUNTIME-ARCH/FINGERPRINT.zip",
                        config.artifact_bucket, config.artifact_prefix
                    ),
                    &artifact,
                )
            })?;
            Ok(Query::Artifact(key))
        }
    }
}

/// The answer of DESIGN section 9.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusResponse {
    pub state: State,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    pub artifact: String,
    pub layer_name: String,
    pub runtime: String,
    pub architecture: String,
    pub fingerprint: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer_version_arn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_tail: Option<Vec<String>>,
    /// Batch's own word for the job (SUBMITTED … SUCCEEDED, FAILED), when it knows the job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_status: Option<String>,
    /// The builder's size report (DESIGN section 13), when its report about this build has one: a successful
    /// build's (`built`, `published`, `rejected`) or one that failed over its budget.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<SizeReport>,
    /// Which path builds it (DESIGN section 12): `function` (the fast builder) or `batch`, from the record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub builder: Option<String>,
    /// Why that path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub builder_reason: Option<String>,
    /// Why the fast builder handed it to Batch, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handed_over: Option<String>,
    /// Who may use its versions (the request's `share`, granted by publish-layer on each).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub share: Option<crate::vocab::Share>,
}

/// The handler: query -> the build's state.
pub async fn handle(state: &StatusState, event: Value) -> Result<StatusResponse, StatusError> {
    let config = &state.config;
    let bucket = config.artifact_bucket.as_str();
    let (key, asked_job) = match parse_query(&event, config)? {
        Query::Artifact(key) => (key, None),
        Query::Job(job_id) => {
            let job = describe_job(&state.batch, &job_id)
                .await?
                .ok_or_else(|| StatusError::NotFound {
                    field: "job_id",
                    message: format!(
                        "Batch knows no job {job_id} (it keeps finished jobs for about 7 days; ask by artifact)"
                    ),
                })?;
            let key = job
                .key
                .as_deref()
                .filter(|_| job.bucket.as_deref() == Some(bucket))
                .and_then(|k| ArtifactKey::parse(&config.artifact_prefix, k))
                .ok_or_else(|| StatusError::NotFound {
                    field: "job_id",
                    message: format!("job {job_id} is not a layer build of this deployment"),
                })?;
            (key, Some(job))
        }
    };
    let record = records::read_record(&state.s3, bucket, &key)
        .await?
        .and_then(|s| s.value);
    let (job_id, job) = match asked_job {
        Some(job) => (Some(job.job_id.clone()), Some(job)),
        None => {
            let job_id = record.as_ref().and_then(|r| r.job_id.clone());
            let job = match &job_id {
                Some(id) => describe_job(&state.batch, id).await?,
                None => None,
            };
            (job_id, job)
        }
    };
    let observed = observe(&state.s3, bucket, &key, record, job_id, job).await?;
    let artifact = key.s3_uri(bucket);
    let verdict = derive(&observed).ok_or_else(|| StatusError::NotFound {
        field: "artifact",
        message: format!("no build and no artifact at {artifact}"),
    })?;

    let mut log_lines = None;
    if verdict.state == State::Failed
        && let Some(job) = &observed.job
        && let Some(stream) = &job.log_stream
    {
        let group = job.log_group.as_deref().unwrap_or(DEFAULT_LOG_GROUP);
        log_lines = log_tail(&state.logs, group, stream).await;
    }
    if log_lines.as_ref().is_none_or(Vec::is_empty) && !verdict.report_lines.is_empty() {
        log_lines = Some(verdict.report_lines.clone());
    }

    info!(
        artifact,
        job_id = observed.job_id.as_deref().unwrap_or(""),
        state = ?verdict.state,
        "build status"
    );
    Ok(StatusResponse {
        state: verdict.state,
        job_id: observed.job_id.clone(),
        artifact,
        layer_name: key.layer_name.clone(),
        runtime: key.runtime.to_string(),
        architecture: key.architecture.to_string(),
        fingerprint: key.fingerprint.clone(),
        layer_version_arn: verdict.layer_version_arn,
        reason: verdict.reason,
        exit_code: verdict.exit_code,
        log_tail: log_lines.filter(|l| !l.is_empty()),
        size: observed.size().cloned(),
        builder: observed.record.as_ref().and_then(|r| r.builder.clone()),
        builder_reason: observed
            .record
            .as_ref()
            .and_then(|r| r.builder_reason.clone()),
        handed_over: observed.record.as_ref().and_then(|r| r.handed_over.clone()),
        share: observed
            .record
            .as_ref()
            .and_then(|r| r.request.share.clone()),
        job_status: observed.job.map(|j| j.status),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{BuildRecord, FailureReport};
    use aws_sdk_batch::{
        operation::describe_jobs::{DescribeJobsError, DescribeJobsOutput},
        types::{ContainerDetail, JobDetail, JobStatus, LogConfiguration, LogDriver},
    };
    use aws_sdk_cloudwatchlogs::{
        operation::get_log_events::{GetLogEventsError, GetLogEventsOutput},
        types::OutputLogEvent,
    };
    use aws_sdk_s3::operation::{get_object::GetObjectError, head_object::HeadObjectError};
    use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
    use aws_smithy_types::{error::ErrorMetadata, retry::RetryConfig};
    use serde_json::json;
    use std::time::Duration;

    const KEY: &str = "layers/http/python3.12-arm64/0123456789abcdef.zip";

    fn config() -> Config {
        Config::from_lookup(|k| match k {
            "ARTIFACT_BUCKET" => Some("artifacts".into()),
            _ => None,
        })
        .unwrap()
    }

    fn key() -> ArtifactKey {
        ArtifactKey::parse("layers", KEY).unwrap()
    }

    fn job(status: &str) -> JobView {
        JobView {
            job_id: "job-1".into(),
            status: status.into(),
            created_at: Some(1_000),
            ..JobView::default()
        }
    }

    fn record(job_id: Option<&str>, submitted_at: i64) -> BuildRecord {
        BuildRecord {
            format: 1,
            layer_name: "http".into(),
            runtime: "python3.12".into(),
            architecture: "arm64".into(),
            fingerprint: "0123456789abcdef".repeat(4),
            artifact_key: KEY.into(),
            request: records::RecordedRequest {
                requirements: vec!["six==1.16.0".into()],
                requirements_s3_uri: None,
                description: None,
                license: None,
                force: false,
                vcpu: None,
                memory_mib: None,
                bytecode: Some(true),
                slim: false,
                max_unzipped_mb: None,
                share: None,
            },
            job_id: job_id.map(str::to_owned),
            job_name: None,
            job_queue: None,
            submit_error: None,
            submitted_at,
            updated_at: submitted_at,
            outcome: None,
            size: None,
            builder: None,
            builder_reason: None,
            handed_over: None,
            fast_deadline: None,
        }
    }

    fn report(job_id: Option<&str>) -> FailureReport {
        let mut r = FailureReport::new(
            job_id.map(str::to_owned),
            3,
            "install",
            "uv install failed: no-such-pkg was not found",
            &["error: no-such-pkg".to_owned()],
            KEY,
        );
        r.failed_at = 2_000;
        r
    }

    fn state_of(o: &Observed) -> (State, Option<String>) {
        let v = derive(o).expect("a verdict");
        (v.state, v.reason)
    }

    #[test]
    fn states_follow_the_artifact_first_then_the_report_then_batch() {
        let base = Observed {
            record: Some(record(Some("job-1"), 1_000)),
            job_id: Some("job-1".into()),
            now: 5_000,
            ..Observed::default()
        };
        let published = ArtifactView {
            layer_version_arn: Some("arn:layer:1".into()),
            rejected: None,
        };
        let rejected = ArtifactView {
            layer_version_arn: None,
            rejected: Some("not-a-zip".into()),
        };
        let cases: Vec<(&str, Observed, State)> = vec![
            (
                "queued",
                Observed {
                    job: Some(job("RUNNABLE")),
                    ..base.clone()
                },
                State::Queued,
            ),
            (
                "running",
                Observed {
                    job: Some(job("RUNNING")),
                    ..base.clone()
                },
                State::Running,
            ),
            (
                "moto: SUCCEEDED at once, the command has not run yet",
                Observed {
                    job: Some(job("SUCCEEDED")),
                    ..base.clone()
                },
                State::Running,
            ),
            (
                "built",
                Observed {
                    job: Some(job("SUCCEEDED")),
                    artifact: Some(ArtifactView::default()),
                    ..base.clone()
                },
                State::Built,
            ),
            (
                "published",
                Observed {
                    job: Some(job("SUCCEEDED")),
                    artifact: Some(published.clone()),
                    ..base.clone()
                },
                State::Published,
            ),
            (
                "published wins over a later job's failure",
                Observed {
                    job: Some(job("FAILED")),
                    artifact: Some(published),
                    ..base.clone()
                },
                State::Published,
            ),
            (
                "rejected",
                Observed {
                    artifact: Some(rejected),
                    ..base.clone()
                },
                State::Rejected,
            ),
            (
                "the report of this job",
                Observed {
                    job: Some(job("SUCCEEDED")),
                    report: Some(report(Some("job-1"))),
                    ..base.clone()
                },
                State::Failed,
            ),
            (
                "another job's report is not this job's failure",
                Observed {
                    job: Some(job("RUNNING")),
                    report: Some(report(Some("job-0"))),
                    ..base.clone()
                },
                State::Running,
            ),
            (
                "Batch FAILED",
                Observed {
                    job: Some(job("FAILED")),
                    ..base.clone()
                },
                State::Failed,
            ),
            (
                "a claim being submitted",
                Observed {
                    record: Some(record(None, 4_000)),
                    job_id: None,
                    ..base.clone()
                },
                State::Queued,
            ),
            (
                "a claim that never reached Batch",
                Observed {
                    record: Some(record(None, 4_000)),
                    job_id: None,
                    now: 4_000 + CLAIM_GRACE_MS,
                    ..base.clone()
                },
                State::Failed,
            ),
            ("a job Batch forgot", base.clone(), State::Failed),
        ];
        for (name, observed, want) in cases {
            assert_eq!(state_of(&observed).0, want, "{name}");
        }
        assert_eq!(derive(&Observed::default()), None, "nothing known");
    }

    #[test]
    fn a_job_that_could_not_pull_its_image_says_to_build_it() {
        // Batch puts ECS's stoppedReason in the job's statusReason when the task never started.
        let mut missing = job("FAILED");
        missing.status_reason = Some(
            "CannotPullContainerError: pull image manifest has been retried 5 time(s): failed to resolve ref \
             123456789012.dkr.ecr.us-east-1.amazonaws.com/builder:python3.13-0.1.0: not found"
                .into(),
        );
        let v = derive(&Observed {
            job: Some(missing),
            ..Observed::default()
        })
        .unwrap();
        assert_eq!(v.state, State::Failed);
        let reason = v.reason.unwrap_or_default();
        assert!(reason.starts_with("CannotPullContainerError: "), "{reason}");
        assert!(
            reason.ends_with(&format!("; {IMAGE_MISSING_HINT}")),
            "{reason}"
        );
        assert!(reason.contains("layerforge image build --wait"), "{reason}");
    }

    #[test]
    fn failed_carries_the_reason_of_its_source() {
        let mut terminated = job("SUCCEEDED");
        terminated.status_reason = Some("operator: wrong requirements".into());
        let o = Observed {
            job: Some(terminated),
            job_id: Some("job-1".into()),
            ..Observed::default()
        };
        let (state, reason) = state_of(&o);
        assert_eq!(
            state,
            State::Failed,
            "a job stopped with a reason and no artifact"
        );
        assert!(reason.unwrap().contains("operator: wrong requirements"));

        let mut oom = job("FAILED");
        oom.status_reason = Some("Essential container in task exited".into());
        oom.container_reason =
            Some("OutOfMemoryError: Container killed due to memory usage".into());
        oom.exit_code = Some(137);
        let v = derive(&Observed {
            job: Some(oom),
            ..Observed::default()
        })
        .unwrap();
        assert_eq!(
            v.reason.as_deref(),
            Some(
                "Essential container in task exited; container: OutOfMemoryError: Container killed due to memory usage; exit code 137"
            )
        );
        assert_eq!(v.exit_code, Some(137));

        let v = derive(&Observed {
            report: Some(report(Some("job-1"))),
            job_id: Some("job-1".into()),
            ..Observed::default()
        })
        .unwrap();
        assert_eq!(v.exit_code, Some(3));
        assert!(
            v.reason
                .unwrap()
                .starts_with("install: uv install failed: no-such-pkg")
        );
        assert_eq!(v.report_lines, ["error: no-such-pkg"]);
    }

    #[test]
    fn bad_queries_name_the_field() {
        let config = config();
        let field = |event: Value| parse_query(&event, &config).unwrap_err().field;
        assert_eq!(field(json!({})), "request");
        assert_eq!(field(json!("job-1")), "request");
        assert_eq!(
            field(json!({"job_id": "a", "artifact": format!("s3://artifacts/{KEY}")})),
            "job_id"
        );
        assert_eq!(field(json!({"job_id": "a", "verbose": true})), "verbose");
        assert_eq!(field(json!({"job_id": ""})), "job_id");
        assert_eq!(field(json!({"job_id": 7})), "job_id");
        assert_eq!(field(json!({"job_id": "a b"})), "job_id");
        assert_eq!(
            field(json!({"artifact": format!("s3://other/{KEY}")})),
            "artifact"
        );
        assert_eq!(
            field(json!({"artifact": "s3://artifacts/.layerforge/builds/x.json"})),
            "artifact"
        );
        assert_eq!(
            field(json!({"artifact": "https://example.com/x.zip"})),
            "artifact"
        );
        assert_eq!(
            parse_query(
                &json!({"artifact": format!("s3://artifacts/{KEY}")}),
                &config
            )
            .unwrap(),
            Query::Artifact(key())
        );
        assert_eq!(
            parse_query(&json!({"job_id": "8a1b-22"}), &config).unwrap(),
            Query::Job("8a1b-22".into())
        );
    }

    #[test]
    fn the_sample_queries_parse_with_the_sample_environment() {
        let env: Value = serde_json::from_str(include_str!("../events/env.json")).unwrap();
        let vars = &env["BuildStatusFunction"];
        let config = Config::from_lookup(|k| vars[k].as_str().map(str::to_owned)).unwrap();
        let query = |text: &str| parse_query(&serde_json::from_str(text).unwrap(), &config);
        assert!(matches!(
            query(include_str!("../events/status-job.json")),
            Ok(Query::Job(_))
        ));
        let Ok(Query::Artifact(key)) = query(include_str!("../events/status-artifact.json")) else {
            panic!("the artifact sample does not parse")
        };
        assert_eq!(key.layer_name, "http-clients");
        assert_eq!(
            query(include_str!("../events/status-invalid-both.json"))
                .unwrap_err()
                .field,
            "job_id"
        );
    }

    /// 5.0 MiB in two distributions, over a budget of 4 MiB.
    fn size_report(budget_bytes: u64) -> SizeReport {
        use crate::size::Distribution;
        const MIB: u64 = crate::request::MIB;
        SizeReport::tally(
            &[
                ("big/a.py".to_owned(), 3 * MIB),
                ("big/__pycache__/a.cpython-312.pyc".to_owned(), MIB),
                ("s.py".to_owned(), MIB),
            ],
            &[
                Distribution::from_record("big-1.0.dist-info", "big/a.py,,\n"),
                Distribution::from_record("small-2.0.dist-info", "s.py,,\n"),
            ],
            budget_bytes,
        )
    }

    fn success_report(job_id: &str) -> FailureReport {
        let mut r = FailureReport::success(
            Some(job_id.to_owned()),
            KEY,
            size_report(crate::request::LAMBDA_UNZIPPED_LIMIT),
        );
        r.failed_at = 2_000;
        r
    }

    #[test]
    fn the_size_is_this_builds_report_only() {
        let published = ArtifactView {
            layer_version_arn: Some("arn:layer:1".into()),
            rejected: None,
        };
        let base = Observed {
            record: Some(record(Some("job-1"), 1_000)),
            job_id: Some("job-1".into()),
            job: Some(job("SUCCEEDED")),
            now: 5_000,
            ..Observed::default()
        };
        let size = size_report(crate::request::LAMBDA_UNZIPPED_LIMIT);
        for (name, artifact, want) in [
            ("built", ArtifactView::default(), State::Built),
            ("published", published.clone(), State::Published),
        ] {
            let o = Observed {
                artifact: Some(artifact),
                report: Some(success_report("job-1")),
                ..base.clone()
            };
            assert_eq!(
                state_of(&o).0,
                want,
                "{name}: a success report is no failure"
            );
            assert_eq!(o.size(), Some(&size), "{name}");
        }
        let older = Observed {
            artifact: Some(published),
            report: Some(success_report("job-0")),
            ..base.clone()
        };
        assert_eq!(state_of(&older).0, State::Published);
        assert_eq!(older.size(), None, "another job's report");

        // Over the budget: the failure report carries the size.
        let mut over = report(Some("job-1"));
        over.exit_code = 4;
        over.stage = "check".into();
        over.size = Some(size_report(4 * crate::request::MIB));
        let o = Observed {
            job: Some(job("FAILED")),
            report: Some(over),
            ..base.clone()
        };
        assert_eq!(state_of(&o).0, State::Failed);
        assert_eq!(
            o.size().map(|s| s.budget_bytes),
            Some(4 * crate::request::MIB)
        );
        // A failure without one (the install failed) has none.
        let o = Observed {
            report: Some(report(Some("job-1"))),
            ..base.clone()
        };
        assert_eq!(o.size(), None);
    }

    /// S3 holding this build's record (job-1), the builder's report `report` and a published artifact.
    fn published_s3(report: FailureReport) -> Vec<Rule> {
        use aws_sdk_s3::{
            operation::{
                get_object::GetObjectOutput, get_object_tagging::GetObjectTaggingOutput,
                head_object::HeadObjectOutput,
            },
            primitives::ByteStream,
            types::Tag,
        };
        let record = serde_json::to_vec(&record(Some("job-1"), 1_000)).unwrap();
        let report = serde_json::to_vec(&report).unwrap();
        let record_key = records::record_key(&key());
        let report_key = records::report_key(KEY);
        vec![
            mock!(aws_sdk_s3::Client::get_object)
                .match_requests(move |r| r.key() == Some(record_key.as_str()))
                .then_output(move || {
                    GetObjectOutput::builder()
                        .e_tag("\"r\"")
                        .body(ByteStream::from(record.clone()))
                        .build()
                }),
            mock!(aws_sdk_s3::Client::get_object)
                .match_requests(move |r| r.key() == Some(report_key.as_str()))
                .then_output(move || {
                    GetObjectOutput::builder()
                        .e_tag("\"p\"")
                        .body(ByteStream::from(report.clone()))
                        .build()
                }),
            mock!(aws_sdk_s3::Client::head_object)
                .match_requests(|r| r.key() == Some(KEY))
                .then_output(|| HeadObjectOutput::builder().build()),
            mock!(aws_sdk_s3::Client::get_object_tagging).then_output(|| {
                GetObjectTaggingOutput::builder()
                    .tag_set(
                        Tag::builder()
                            .key(crate::artifact::LAYER_VERSION_ARN_TAG)
                            .value("arn:aws:lambda:us-east-1:123456789012:layer:http:1")
                            .build()
                            .unwrap(),
                    )
                    .build()
                    .unwrap()
            }),
        ]
    }

    fn succeeded_job() -> DescribeJobsOutput {
        let container = ContainerDetail::builder()
            .command("--name=http")
            .command("--requirements=six==1.16.0")
            .command("--bucket=artifacts")
            .command(format!("--key={KEY}"))
            .exit_code(0)
            .build();
        DescribeJobsOutput::builder()
            .jobs(
                JobDetail::builder()
                    .job_id("job-1")
                    .job_name("layer-http-python312-arm64")
                    .job_queue("q")
                    .job_definition("d")
                    .status(JobStatus::Succeeded)
                    .started_at(0)
                    .created_at(1_000)
                    .container(container)
                    .build(),
            )
            .build()
    }

    async fn answer_with(report: FailureReport, query: Value) -> (StatusResponse, Value) {
        let s3 = published_s3(report);
        let describe = mock!(aws_sdk_batch::Client::describe_jobs).then_output(succeeded_job);
        let state = StatusState {
            config: Arc::new(config()),
            s3: mock_client!(aws_sdk_s3, RuleMode::MatchAny, &s3),
            batch: mock_client!(aws_sdk_batch, RuleMode::MatchAny, [&describe]),
            logs: mock_client!(aws_sdk_cloudwatchlogs, []),
        };
        let answer = handle(&state, query).await.unwrap();
        let json = serde_json::to_value(&answer).unwrap();
        (answer, json)
    }

    #[tokio::test]
    async fn a_published_build_answers_with_the_size_of_its_success_report() {
        for query in [
            json!({"job_id": "job-1"}),
            json!({"artifact": format!("s3://artifacts/{KEY}")}),
        ] {
            let (answer, json) = answer_with(success_report("job-1"), query.clone()).await;
            assert_eq!(answer.state, State::Published, "{query}");
            assert_eq!(answer.reason, None, "{query}");
            let size = size_report(crate::request::LAMBDA_UNZIPPED_LIMIT);
            assert_eq!(answer.size.as_ref(), Some(&size), "{query}");
            // The whole report, as the builder wrote it.
            assert_eq!(
                json["size"],
                serde_json::to_value(&size).unwrap(),
                "{query}"
            );
            assert_eq!(json["size"]["distributions"][0]["name"], "big");
            assert_eq!(json["size"]["unzipped_bytes"], 5 * crate::request::MIB);
        }
    }

    #[tokio::test]
    async fn a_report_of_another_job_gives_no_size() {
        let (answer, json) = answer_with(success_report("job-0"), json!({"job_id": "job-1"})).await;
        assert_eq!(answer.state, State::Published);
        assert_eq!(answer.size, None);
        assert!(json.get("size").is_none(), "{json}");
        // The other fields stay as they were.
        let mut fields: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            [
                "architecture",
                "artifact",
                "fingerprint",
                "job_id",
                "job_status",
                "layer_name",
                "layer_version_arn",
                "runtime",
                "state"
            ]
        );
    }

    fn retries() -> RetryConfig {
        RetryConfig::standard()
            .with_max_attempts(3)
            .with_initial_backoff(Duration::from_millis(1))
            .with_max_backoff(Duration::from_millis(5))
    }

    fn failed_job() -> DescribeJobsOutput {
        let container = ContainerDetail::builder()
            .command("--name=np")
            .command("--requirements=numpy==2.3.0")
            .command("--bucket=artifacts")
            .command(format!("--key={KEY}"))
            .reason("CannotPullContainerError: pull access denied")
            .log_stream_name("builder/default/abc")
            .log_configuration(
                LogConfiguration::builder()
                    .log_driver(LogDriver::Awslogs)
                    .options("awslogs-group", "/aws/batch/layerforge/layer-builder")
                    .build(),
            )
            .build();
        DescribeJobsOutput::builder()
            .jobs(
                JobDetail::builder()
                    .job_id("job-1")
                    .job_name("layer-http-python312-arm64")
                    .job_queue("q")
                    .job_definition("d")
                    .status(JobStatus::Failed)
                    .status_reason("Task failed to start")
                    .started_at(0)
                    .created_at(1_000)
                    .container(container)
                    .build(),
            )
            .build()
    }

    /// S3 holding nothing for this build (no record, report or artifact).
    fn empty_s3() -> (Rule, Rule) {
        let get = mock!(aws_sdk_s3::Client::get_object)
            .sequence()
            .error(|| {
                GetObjectError::NoSuchKey(aws_sdk_s3::types::error::NoSuchKey::builder().build())
            })
            .repeatedly()
            .build();
        let head = mock!(aws_sdk_s3::Client::head_object)
            .sequence()
            .error(|| {
                HeadObjectError::NotFound(aws_sdk_s3::types::error::NotFound::builder().build())
            })
            .repeatedly()
            .build();
        (get, head)
    }

    fn throttled() -> DescribeJobsError {
        DescribeJobsError::generic(
            ErrorMetadata::builder()
                .code("TooManyRequestsException")
                .message("Too Many Requests")
                .build(),
        )
    }

    #[tokio::test]
    async fn an_unreadable_log_leaves_the_batch_reason_and_no_tail() {
        let (get, head) = empty_s3();
        let describe = mock!(aws_sdk_batch::Client::describe_jobs).then_output(failed_job);
        let logs = mock!(aws_sdk_cloudwatchlogs::Client::get_log_events)
            .match_requests(|r| {
                r.log_group_name() == Some("/aws/batch/layerforge/layer-builder")
                    && r.log_stream_name() == Some("builder/default/abc")
            })
            .then_error(|| {
                GetLogEventsError::generic(
                    ErrorMetadata::builder()
                        .code("AccessDeniedException")
                        .message("not authorized to perform logs:GetLogEvents")
                        .build(),
                )
            });
        let state = StatusState {
            config: Arc::new(config()),
            s3: mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&get, &head]),
            batch: mock_client!(aws_sdk_batch, RuleMode::MatchAny, [&describe]),
            logs: mock_client!(aws_sdk_cloudwatchlogs, RuleMode::MatchAny, [&logs]),
        };
        let answer = handle(&state, json!({"job_id": "job-1"})).await.unwrap();
        assert_eq!(answer.state, State::Failed);
        assert_eq!(
            answer.reason.as_deref(),
            Some(
                format!(
                    "Task failed to start; container: CannotPullContainerError: pull access denied; \
                     {IMAGE_MISSING_HINT}"
                )
                .as_str()
            )
        );
        assert!(
            IMAGE_MISSING_HINT.contains("layerforge image build"),
            "the reason says how to build the image"
        );
        assert_eq!(answer.log_tail, None);
        assert_eq!(
            logs.num_calls(),
            1,
            "the log was tried, in the job's own group"
        );
        assert_eq!(answer.artifact, format!("s3://artifacts/{KEY}"));
        assert_eq!(answer.job_status.as_deref(), Some("FAILED"));
    }

    #[tokio::test]
    async fn a_readable_log_gives_its_last_lines() {
        let (get, head) = empty_s3();
        let describe = mock!(aws_sdk_batch::Client::describe_jobs).then_output(failed_job);
        let logs = mock!(aws_sdk_cloudwatchlogs::Client::get_log_events)
            .match_requests(|r| {
                r.start_from_head() == Some(false) && r.limit() == Some(LOG_TAIL_LINES)
            })
            .then_output(|| {
                GetLogEventsOutput::builder()
                    .events(OutputLogEvent::builder().message("pulling image\n").build())
                    .events(OutputLogEvent::builder().message("denied").build())
                    .build()
            });
        let state = StatusState {
            config: Arc::new(config()),
            s3: mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&get, &head]),
            batch: mock_client!(aws_sdk_batch, RuleMode::MatchAny, [&describe]),
            logs: mock_client!(aws_sdk_cloudwatchlogs, RuleMode::MatchAny, [&logs]),
        };
        let answer = handle(&state, json!({"job_id": "job-1"})).await.unwrap();
        assert_eq!(
            answer.log_tail,
            Some(vec!["pulling image".to_owned(), "denied".to_owned()])
        );
    }

    #[tokio::test]
    async fn throttled_describe_jobs_is_retried_then_answers() {
        let (get, head) = empty_s3();
        let describe = mock!(aws_sdk_batch::Client::describe_jobs)
            .sequence()
            .error(throttled)
            .output(failed_job)
            .build();
        let logs = mock!(aws_sdk_cloudwatchlogs::Client::get_log_events)
            .then_output(|| GetLogEventsOutput::builder().build());
        let state = StatusState {
            config: Arc::new(config()),
            s3: mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&get, &head]),
            batch: mock_client!(aws_sdk_batch, RuleMode::Sequential, [&describe], |c| c
                .retry_config(retries())),
            logs: mock_client!(aws_sdk_cloudwatchlogs, RuleMode::MatchAny, [&logs]),
        };
        let answer = handle(&state, json!({"job_id": "job-1"})).await.unwrap();
        assert_eq!(answer.state, State::Failed);
        assert_eq!(describe.num_calls(), 2, "one throttled attempt, one answer");
    }

    #[tokio::test]
    async fn persistent_throttling_of_describe_jobs_is_transient() {
        let describe = mock!(aws_sdk_batch::Client::describe_jobs)
            .sequence()
            .error(throttled)
            .repeatedly()
            .build();
        let state = StatusState {
            config: Arc::new(config()),
            s3: mock_client!(aws_sdk_s3, []),
            batch: mock_client!(aws_sdk_batch, RuleMode::Sequential, [&describe], |c| c
                .retry_config(retries())),
            logs: mock_client!(aws_sdk_cloudwatchlogs, []),
        };
        let err = handle(&state, json!({"job_id": "job-1"}))
            .await
            .unwrap_err();
        assert_eq!(err.error_type(), "Transient", "{err}");
        assert_eq!(describe.num_calls(), 3);
        let diagnostic = crate::function_error::FunctionError::from(err);
        assert!(
            diagnostic.error_message.contains("DescribeJobs"),
            "{}",
            diagnostic.error_message
        );
    }

    #[tokio::test]
    async fn an_unknown_job_is_not_found_naming_job_id() {
        let describe = mock!(aws_sdk_batch::Client::describe_jobs)
            .then_output(|| DescribeJobsOutput::builder().build());
        let state = StatusState {
            config: Arc::new(config()),
            s3: mock_client!(aws_sdk_s3, []),
            batch: mock_client!(aws_sdk_batch, RuleMode::MatchAny, [&describe]),
            logs: mock_client!(aws_sdk_cloudwatchlogs, []),
        };
        let err = handle(&state, json!({"job_id": "nope"})).await.unwrap_err();
        assert_eq!(err.error_type(), "NotFound");
        assert!(err.to_string().starts_with("job_id: "), "{err}");
    }
}
