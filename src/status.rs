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

use std::sync::Arc;

use lambda_runtime::Diagnostic;
use serde::Serialize;
use serde_json::Value;
use tracing::{info, warn};

use crate::{
    artifact::ArtifactKey,
    aws::{AwsFault, error_chain},
    config::Config,
    publish::{REASON_TAG, STATUS_TAG},
    records::{self, BuildRecord, FailureReport, RecordOutcome},
    request::{InvalidRequest, S3Uri},
    submit::LAYER_VERSION_ARN_TAG,
};

/// Batch's log group when a job definition names none.
/// Source: AWS Batch API reference, ContainerDetail.logStreamName ("The log group for Batch jobs is
/// /aws/batch/job"), and the user guide's awslogs page (`awslogs-group`: "If this isn't specified, the
/// /aws/batch/job log group is used").
pub const DEFAULT_LOG_GROUP: &str = "/aws/batch/job";
/// How many lines of the job's log a `failed` answer carries.
pub const LOG_TAIL_LINES: i32 = 20;
/// A record without a job younger than this is a submission in progress (`queued`); older, it never reached
/// Batch (`failed`). submit-build's own timeout is 30 s.
pub const CLAIM_GRACE_MS: i64 = 120_000;
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

impl StatusError {
    /// The stable `errorType` callers see.
    pub fn error_type(&self) -> &'static str {
        match self {
            StatusError::InvalidRequest(_) => "InvalidRequest",
            StatusError::NotFound { .. } => "NotFound",
            StatusError::Aws(f) if f.is_transient() => "Transient",
            StatusError::Aws(_) => "AwsError",
        }
    }
}

impl From<StatusError> for Diagnostic {
    fn from(err: StatusError) -> Self {
        Diagnostic {
            error_type: err.error_type().to_owned(),
            error_message: err.to_string(),
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

/// The states of DESIGN section 9.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Queued,
    Running,
    Failed,
    Built,
    Published,
    Rejected,
}

impl State {
    /// Whether the build may still produce its artifact.
    pub fn in_flight(self) -> bool {
        matches!(self, State::Queued | State::Running)
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
}

/// What Batch says about a job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobView {
    pub job_id: String,
    pub job_name: Option<String>,
    pub job_queue: Option<String>,
    /// SUBMITTED, PENDING, RUNNABLE, STARTING, RUNNING, SUCCEEDED or FAILED.
    pub status: String,
    pub status_reason: Option<String>,
    pub container_reason: Option<String>,
    pub exit_code: Option<i32>,
    pub log_group: Option<String>,
    pub log_stream: Option<String>,
    /// Epoch milliseconds.
    pub created_at: Option<i64>,
    /// `--bucket` and `--key` of the job's layer-builder command.
    pub bucket: Option<String>,
    pub key: Option<String>,
}

/// The artifact's tags, when it exists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArtifactView {
    pub layer_version_arn: Option<String>,
    /// The rejection code publish-layer tagged, when it rejected the zip.
    pub rejected: Option<String>,
}

/// Everything known about one build.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    pub record: Option<BuildRecord>,
    pub report: Option<FailureReport>,
    pub artifact: Option<ArtifactView>,
    /// The job asked about, or the record's.
    pub job_id: Option<String>,
    /// Batch's view of that job; `None` when Batch does not know it (or there is none).
    pub job: Option<JobView>,
    /// Epoch milliseconds.
    pub now: i64,
}

/// The state and what explains it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub state: State,
    pub reason: Option<String>,
    pub exit_code: Option<i32>,
    pub layer_version_arn: Option<String>,
    /// The installer's last lines from the failure report.
    pub report_lines: Vec<String>,
}

impl Verdict {
    fn new(state: State) -> Self {
        Self {
            state,
            reason: None,
            exit_code: None,
            layer_version_arn: None,
            report_lines: Vec::new(),
        }
    }

    fn failed(reason: String, exit_code: Option<i32>) -> Self {
        Self {
            reason: Some(reason),
            exit_code,
            ..Self::new(State::Failed)
        }
    }
}

/// The state of a build from what was observed (see the module docs for the order); `None` when nothing
/// at all is known.
pub fn derive(o: &Observed) -> Option<Verdict> {
    let record = o.record.as_ref();
    let record_outcome = record.and_then(|r| r.outcome.as_ref());

    // 1. publish-layer's decision, from the zip's tags (the record's copy when a tag is missing).
    if let Some(artifact) = &o.artifact {
        let recorded_arn = match record_outcome {
            Some(RecordOutcome::Published {
                layer_version_arn, ..
            }) => Some(layer_version_arn.clone()),
            _ => None,
        };
        if let Some(arn) = artifact.layer_version_arn.clone().or(recorded_arn) {
            return Some(Verdict {
                layer_version_arn: Some(arn),
                ..Verdict::new(State::Published)
            });
        }
        if let Some(code) = &artifact.rejected {
            let reason = match record_outcome {
                Some(RecordOutcome::Rejected { reason, .. }) => reason.clone(),
                _ => format!("publish-layer rejected the artifact ({code})"),
            };
            return Some(Verdict {
                reason: Some(reason),
                ..Verdict::new(State::Rejected)
            });
        }
    }

    // 2. The builder's own account of this job's failure.
    let job_id = o.job_id.as_deref();
    let submitted_at = o
        .job
        .as_ref()
        .and_then(|j| j.created_at)
        .or(record.map(|r| r.submitted_at));
    if let Some(report) = &o.report
        && report.is_about(job_id, submitted_at)
    {
        return Some(Verdict {
            report_lines: report.last_lines.clone(),
            ..Verdict::failed(
                format!("{}: {}", report.stage, report.message),
                Some(i32::from(report.exit_code)),
            )
        });
    }

    // 3. Batch's FAILED: image pull errors, out of memory, timeouts, Spot reclaim, TerminateJob.
    if let Some(job) = &o.job
        && job.status == "FAILED"
    {
        return Some(Verdict::failed(batch_reason(job), job.exit_code));
    }

    // 4. A zip publish-layer has not decided on yet.
    if o.artifact.is_some() {
        return Some(Verdict::new(State::Built));
    }

    // 5. Batch's progress.
    if let Some(job) = &o.job {
        return Some(match job.status.as_str() {
            "SUBMITTED" | "PENDING" | "RUNNABLE" => Verdict::new(State::Queued),
            "SUCCEEDED" => match &job.status_reason {
                Some(reason) => Verdict::failed(
                    format!("the job ended without an artifact: {reason}"),
                    job.exit_code.filter(|c| *c != 0),
                ),
                None => Verdict::new(State::Running),
            },
            // STARTING, RUNNING and any state Batch adds later.
            _ => Verdict::new(State::Running),
        });
    }

    // 6. What the record alone says.
    let record = record?;
    if let Some(error) = &record.submit_error {
        return Some(Verdict::failed(
            format!("the job could not be submitted: {error}"),
            None,
        ));
    }
    match job_id {
        Some(id) => Some(Verdict::failed(
            format!(
                "Batch does not know job {id} (it keeps finished jobs for about 7 days) and it left no artifact"
            ),
            None,
        )),
        None if o.now - record.submitted_at < CLAIM_GRACE_MS => Some(Verdict::new(State::Queued)),
        None => Some(Verdict::failed(
            "the submission never reached Batch".to_owned(),
            None,
        )),
    }
}

/// What a job that could not pull its image is told: the usual cause is a stack whose images were never built.
pub const IMAGE_MISSING_HINT: &str = "the job's builder image could not be pulled: it is missing from the \
     repository (not built yet for this runtime and ImageTag) or not pullable by the execution role; build it \
     with `layerforge image build --wait` and check with `layerforge image list`";

/// Batch's reasons on one line: statusReason, the container's reason, the exit code; when the image could not
/// be pulled (ECS's `CannotPullContainerError`), what to do about it.
pub fn batch_reason(job: &JobView) -> String {
    let mut parts = Vec::new();
    if let Some(r) = &job.status_reason {
        parts.push(r.clone());
    }
    if let Some(r) = &job.container_reason {
        parts.push(format!("container: {r}"));
    }
    if let Some(code) = job.exit_code {
        parts.push(format!("exit code {code}"));
    }
    // ECS stops a task whose image it can't pull with stoppedReason "CannotPullContainerError: …" (Amazon ECS
    // developer guide, "CannotPullContainer task errors"); Batch passes it on as the job's or container's reason.
    let pull_failed = [&job.status_reason, &job.container_reason]
        .into_iter()
        .flatten()
        .any(|r| r.contains("CannotPullContainerError"));
    if pull_failed {
        parts.push(IMAGE_MISSING_HINT.to_owned());
    }
    if parts.is_empty() {
        "Batch reports the job FAILED without a reason".to_owned()
    } else {
        parts.join("; ")
    }
}

/// HeadObject + GetObjectTagging of the artifact; `None` when there is no artifact.
pub async fn artifact_view(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> Result<Option<ArtifactView>, AwsFault> {
    match s3.head_object().bucket(bucket).key(key).send().await {
        Ok(_) => {}
        Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => return Ok(None),
        Err(e) => {
            let fault = AwsFault::from_sdk("HeadObject", &e);
            if fault.http_status == Some(404) {
                return Ok(None);
            }
            warn!(
                bucket,
                key,
                error = error_chain(&e),
                "reading the artifact failed"
            );
            return Err(fault);
        }
    }
    let tags = s3
        .get_object_tagging()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| {
            warn!(
                bucket,
                key,
                error = error_chain(&e),
                "reading the artifact's tags failed"
            );
            AwsFault::from_sdk("GetObjectTagging", &e)
        })?;
    let tag = |name: &str| {
        tags.tag_set()
            .iter()
            .find(|t| t.key() == name)
            .map(|t| t.value().to_owned())
    };
    Ok(Some(ArtifactView {
        layer_version_arn: tag(LAYER_VERSION_ARN_TAG),
        rejected: (tag(STATUS_TAG).as_deref() == Some("rejected"))
            .then(|| tag(REASON_TAG).unwrap_or_else(|| "no reason tagged".to_owned())),
    }))
}

/// DescribeJobs for one job; `None` when Batch does not know it.
pub async fn describe_job(
    batch: &aws_sdk_batch::Client,
    job_id: &str,
) -> Result<Option<JobView>, AwsFault> {
    let out = batch
        .describe_jobs()
        .jobs(job_id)
        .send()
        .await
        .map_err(|e| {
            warn!(job_id, error = error_chain(&e), "DescribeJobs failed");
            AwsFault::from_sdk("DescribeJobs", &e)
        })?;
    let Some(job) = out.jobs().iter().find(|j| j.job_id() == Some(job_id)) else {
        return Ok(None);
    };
    let container = job.container();
    // The last attempt's container has the reason when the job-level container detail lacks it.
    let attempt = job.attempts().last().and_then(|a| a.container());
    let command = container.map(|c| c.command()).unwrap_or_default();
    // The command is layer-builder's argv (`--key=K` or `--key K`): read it with layer-builder's own parser.
    let parsed = {
        use clap::Parser as _;
        crate::builder::cli::Args::try_parse_from(
            std::iter::once("layer-builder").chain(command.iter().map(String::as_str)),
        )
        .ok()
    };
    Ok(Some(JobView {
        job_id: job_id.to_owned(),
        job_name: job.job_name().map(str::to_owned),
        job_queue: job.job_queue().map(str::to_owned),
        status: job
            .status()
            .map(|s| s.as_str().to_owned())
            .unwrap_or_default(),
        status_reason: job.status_reason().map(str::to_owned),
        container_reason: container
            .and_then(|c| c.reason())
            .or(attempt.and_then(|a| a.reason()))
            .map(str::to_owned),
        exit_code: container
            .and_then(|c| c.exit_code())
            .or(attempt.and_then(|a| a.exit_code())),
        log_group: container
            .and_then(|c| c.log_configuration())
            .and_then(|l| l.options())
            .and_then(|o| o.get("awslogs-group"))
            .cloned(),
        log_stream: container
            .and_then(|c| c.log_stream_name())
            .or(attempt.and_then(|a| a.log_stream_name()))
            .map(str::to_owned),
        created_at: job.created_at(),
        bucket: parsed.as_ref().and_then(|a| a.bucket.clone()),
        key: parsed.as_ref().and_then(|a| a.key.clone()),
    }))
}

/// The failure report of an artifact key, if the builder wrote one.
pub async fn read_report(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    artifact_key: &str,
) -> Result<Option<FailureReport>, AwsFault> {
    Ok(
        records::read_json::<FailureReport>(s3, bucket, &records::report_key(artifact_key))
            .await?
            .and_then(|s| s.value),
    )
}

/// Gathers the report and the artifact's tags around a record and a job already read.
pub async fn observe(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &ArtifactKey,
    record: Option<BuildRecord>,
    job_id: Option<String>,
    job: Option<JobView>,
) -> Result<Observed, AwsFault> {
    let artifact_key = key.to_string();
    let report = read_report(s3, bucket, &artifact_key).await?;
    let artifact = artifact_view(s3, bucket, &artifact_key).await?;
    Ok(Observed {
        record,
        report,
        artifact,
        job_id,
        job,
        now: records::now_millis(),
    })
}

/// The last lines of a job's log stream; `None` (logged) when they can't be read.
pub async fn log_tail(
    logs: &aws_sdk_cloudwatchlogs::Client,
    group: &str,
    stream: &str,
) -> Option<Vec<String>> {
    match logs
        .get_log_events()
        .log_group_name(group)
        .log_stream_name(stream)
        .start_from_head(false)
        .limit(LOG_TAIL_LINES)
        .send()
        .await
    {
        Ok(out) => Some(
            out.events()
                .iter()
                .filter_map(|e| e.message())
                .map(|m| m.trim_end().to_owned())
                .collect(),
        ),
        Err(e) => {
            warn!(
                group,
                stream,
                error = error_chain(&e),
                "the job's log can't be read; answering without it"
            );
            None
        }
    }
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
        job_status: observed.job.map(|j| j.status),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
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
            },
            job_id: job_id.map(str::to_owned),
            job_name: None,
            job_queue: None,
            submit_error: None,
            submitted_at,
            updated_at: submitted_at,
            outcome: None,
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
        let diagnostic = Diagnostic::from(err);
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
