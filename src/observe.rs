//! A build's observed state (DESIGN section 9), in one place for the two functions that read it: build-status
//! answers with it, and submit-build reads it before submitting (a build in flight is not submitted twice).
//!
//! [`observe`] gathers what is known about a build: its build record, the builder's report (of a failure, or of a
//! success with its size), the artifact and its tags, and the Batch job ([`describe_job`]); [`derive`] (pure)
//! turns that into one [`State`]. The order of the evidence, and why, is in build-status's module docs
//! ([`crate::status`]). [`check_budget`] (pure) is submit-build's refusal of an existing build larger than a
//! request's budget.

use serde::Serialize;
use tracing::warn;

use crate::{
    artifact::{ArtifactKey, LAYER_VERSION_ARN_TAG, REASON_TAG, STATUS_TAG},
    aws::{AwsFault, error_chain},
    records::{self, BuildRecord, FailureReport, RecordOutcome},
    request::{BuildRequest, InvalidRequest, MIB},
    size::SizeReport,
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

impl Observed {
    /// When the build asked about was submitted: Batch's creation time of its job, else its record's.
    fn submitted_at(&self) -> Option<i64> {
        self.job
            .as_ref()
            .and_then(|j| j.created_at)
            .or(self.record.as_ref().map(|r| r.submitted_at))
    }

    /// The builder's report when it is about this build (its job, or written after its submission): a failure
    /// report or a success report. A report an older job left at the same key is not.
    pub fn report_of_this_build(&self) -> Option<&FailureReport> {
        self.report
            .as_ref()
            .filter(|r| r.is_about(self.job_id.as_deref(), self.submitted_at()))
    }

    /// This build's size report (DESIGN section 13), when the builder's report about it has one: every
    /// successful build's, and a build's that failed over its budget.
    pub fn size(&self) -> Option<&SizeReport> {
        self.report_of_this_build().and_then(|r| r.size.as_ref())
    }

    /// The size of what a request for this build would be given (submit-build's `cached` and `building`): the
    /// builder's success report, any for pinned requirements (the fingerprint fixes the bytes), else only this
    /// build's own (loose requirements may resolve to other bytes).
    pub fn built_size(&self, pinned: bool) -> Option<&SizeReport> {
        let report = if pinned {
            self.report.as_ref()
        } else {
            self.report_of_this_build()
        };
        report
            .filter(|r| r.succeeded())
            .and_then(|r| r.size.as_ref())
    }
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

    // 2. The builder's own account of this job's failure (a success report, its size, is not one).
    let job_id = o.job_id.as_deref();
    if let Some(report) = o.report_of_this_build()
        && !report.succeeded()
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
    if record.with_fast_builder() && job_id.is_none() {
        let deadline = record.fast_deadline.unwrap_or(record.submitted_at);
        return Some(if o.now < deadline {
            Verdict::new(State::Running)
        } else {
            Verdict::failed(
                "the fast builder left no artifact and handed nothing to Batch by its deadline (a crash, \
                 timeout or lost invocation after every retry): submit the request again, or with \
                 \"builder\": \"batch\""
                    .to_owned(),
                None,
            )
        });
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

/// Refuses a request whose budget is below the size of the build it would be answered with (`cached`, or
/// `building`), naming `max_unzipped_mb` with that build's size and largest distributions: the layer it would get
/// is over its budget, and building it again would give the same bytes. The size is the builder's success
/// report ([`Observed::built_size`]); without one (an artifact older than reports, a report that could
/// not be written), nothing is refused.
pub fn check_budget(
    request: &BuildRequest,
    observed: &Observed,
    artifact: &str,
) -> Result<(), InvalidRequest> {
    let budget = request.max_unzipped_bytes;
    match observed.built_size(request.requirements.all_pinned()) {
        Some(size) if size.unzipped_bytes > budget => Err(InvalidRequest::json(
            "max_unzipped_mb",
            format!(
                "the existing build of this request ({artifact}) is over the budget, nothing was submitted: {}",
                SizeReport {
                    budget_bytes: budget,
                    ..size.clone()
                }
                .budget_reason()
            ),
            &serde_json::json!(budget / MIB),
        )),
        _ => Ok(()),
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

/// The builder's report of an artifact key (a failure report, or a successful build's with its size), if it
/// wrote one.
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
