//! Build records and failure reports: what became of each build, kept in the artifact bucket next to (never
//! under) the artifact prefix (DESIGN sections 4 and 9).
//!
//! - A *build record*, `.layerforge/builds/<layer>/<runtime>-<arch>/<fingerprint>.json`, one per fingerprint,
//!   holding its latest build: the validated request, the fingerprint, the artifact key, the Batch job, the
//!   times and, once publish-layer has decided, the outcome and the layer's size (from the builder's report).
//!   submit-build writes it with conditional writes
//!   (`If-None-Match: *` for the first build, `If-Match: <ETag read>` to replace it), so that of two identical
//!   requests at the same moment only one submits a job; publish-layer completes it. The build job's role can't
//!   write it.
//! - A *failure report*, `.layerforge/reports/<artifact key>.json`, written by layer-builder on any failure
//!   after it started (exit code, stage, message, the installer's last lines), where the build job's role may
//!   write. It never ends in `.zip` and is outside the artifact prefix, so it triggers nothing. A successful
//!   build leaves its *success report* (exit code 0, its size report) at the same key before it uploads the zip.
//!
//! Neither is the source of truth for publishing: the zip's tags are. The record is the history a caller asks
//! build-status about; when completing it fails, build-status still reads the outcome from the tags.

use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_s3::primitives::ByteStream;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tracing::{info, warn};

use crate::{
    artifact::{ArtifactKey, Fingerprint},
    aws::{AwsFault, FaultKind},
    config::Config,
    publish::outcome,
    request::BuildRequest,
    size::SizeReport,
};

/// Where build records live, relative to the artifact bucket's root.
pub const RECORD_PREFIX: &str = ".layerforge/builds";
/// Where failure reports live, relative to the artifact bucket's root.
pub const REPORT_PREFIX: &str = ".layerforge/reports";
/// The version of the record and report formats.
pub const RECORD_FORMAT: u32 = 1;
/// The stage of a successful build's report.
pub const SUCCESS_STAGE: &str = "built";
/// Most installer lines a failure report keeps.
pub const REPORT_LINES: usize = 40;
/// Longest message a failure report keeps (characters).
const REPORT_MESSAGE_CHARS: usize = 4000;

/// The record key of an artifact: `.layerforge/builds/<layer>/<runtime>-<arch>/<fingerprint>.json`.
pub fn record_key(key: &ArtifactKey) -> String {
    format!(
        "{RECORD_PREFIX}/{}/{}-{}/{}.json",
        key.layer_name, key.runtime, key.architecture, key.fingerprint
    )
}

/// The failure report key of any artifact key: `.layerforge/reports/<artifact key>.json`.
pub fn report_key(artifact_key: &str) -> String {
    format!(
        "{REPORT_PREFIX}/{}.json",
        artifact_key.trim_start_matches('/')
    )
}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The request as validated, kept for the record (DESIGN section 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedRequest {
    /// Requirement lines as written.
    pub requirements: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requirements_s3_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
    #[serde(default)]
    pub force: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpu: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u32>,
    /// Absent in records written before bytecode existed (their zips have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytecode: Option<bool>,
    #[serde(default)]
    pub slim: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unzipped_mb: Option<u64>,
    /// Who may use the versions it publishes (DESIGN section 14): publish-layer grants it on each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<crate::vocab::Share>,
}

impl From<&BuildRequest> for RecordedRequest {
    fn from(r: &BuildRequest) -> Self {
        Self {
            requirements: r
                .requirements
                .lines()
                .iter()
                .map(|l| l.text.clone())
                .collect(),
            requirements_s3_uri: r.requirements_source.as_ref().map(ToString::to_string),
            description: r.description.clone(),
            license: r.license.clone(),
            force: r.force,
            vcpu: r.resources.vcpu,
            memory_mib: r.resources.memory_mib,
            bytecode: Some(r.options.bytecode),
            slim: r.options.slim,
            max_unzipped_mb: Some(r.max_unzipped_bytes / crate::request::MIB),
            share: r.share.clone(),
        }
    }
}

/// What publish-layer decided about the artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum RecordOutcome {
    Published {
        layer_version_arn: String,
        at: i64,
    },
    Rejected {
        code: String,
        reason: String,
        at: i64,
    },
}

/// One build of one fingerprint (the latest).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildRecord {
    pub format: u32,
    pub layer_name: String,
    pub runtime: String,
    pub architecture: String,
    /// All 64 hex digits.
    pub fingerprint: String,
    pub artifact_key: String,
    pub request: RecordedRequest,
    /// `None` between the claim and SubmitJob's answer.
    #[serde(default)]
    pub job_id: Option<String>,
    #[serde(default)]
    pub job_name: Option<String>,
    #[serde(default)]
    pub job_queue: Option<String>,
    /// SubmitJob failed: the build never reached Batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submit_error: Option<String>,
    /// Epoch milliseconds.
    pub submitted_at: i64,
    pub updated_at: i64,
    #[serde(default)]
    pub outcome: Option<RecordOutcome>,
    /// The layer's size (DESIGN section 13), from the builder's success report, filled by publish-layer when it
    /// completes the record; absent in older records and when the report could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<SizeReport>,
    /// Which path builds it (DESIGN section 12): `function` (the fast builder) or `batch`; absent in records
    /// written before the fast builder existed (Batch built them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builder: Option<String>,
    /// Why that path: the route submit-build chose, e.g. `wheel-only candidate` or `slim: …`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builder_reason: Option<String>,
    /// Why the fast builder handed the build to Batch (e.g. `no wheel for lxml==5.3.0 on manylinux_2_34
    /// aarch64`); then `builder` is `batch` and `job_id` the job it submitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handed_over: Option<String>,
    /// Epoch milliseconds by which a fast build has its artifact or was handed over; after it, `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fast_deadline: Option<i64>,
}

impl BuildRecord {
    /// The claim submit-build writes before SubmitJob (no job yet).
    pub fn claim(request: &BuildRequest, fingerprint: &Fingerprint, key: &ArtifactKey) -> Self {
        let now = now_millis();
        Self {
            format: RECORD_FORMAT,
            layer_name: key.layer_name.clone(),
            runtime: key.runtime.to_string(),
            architecture: key.architecture.to_string(),
            fingerprint: fingerprint.full().to_owned(),
            artifact_key: key.to_string(),
            request: RecordedRequest::from(request),
            job_id: None,
            job_name: None,
            job_queue: None,
            submit_error: None,
            submitted_at: now,
            updated_at: now,
            outcome: None,
            size: None,
            builder: None,
            builder_reason: None,
            handed_over: None,
            fast_deadline: None,
        }
    }

    /// Whether the fast builder has the build (no job, not handed over).
    pub fn with_fast_builder(&self) -> bool {
        self.builder.as_deref() == Some(FUNCTION_BUILDER) && self.job_id.is_none()
    }
}

/// `builder` of a record (and of submit-build's and build-status's answers) built by the fast builder.
pub const FUNCTION_BUILDER: &str = "function";
/// `builder` of a build that runs in AWS Batch.
pub const BATCH_BUILDER: &str = "batch";

/// layer-builder's account of a failed build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureReport {
    pub format: u32,
    /// `AWS_BATCH_JOB_ID` of the job that failed, when it ran under Batch.
    #[serde(default)]
    pub job_id: Option<String>,
    pub exit_code: u8,
    /// `arguments`, `requirements`, `interpreter`, `install`, `check`, `upload` or `io`.
    pub stage: String,
    pub message: String,
    /// The installer's last lines (empty when the install was not what failed).
    #[serde(default)]
    pub last_lines: Vec<String>,
    pub artifact_key: String,
    /// Epoch milliseconds (when the build ended: `failed_at` for a success report too, the name kept for old
    /// readers).
    pub failed_at: i64,
    /// The size report (DESIGN section 13): on every successful build, and on a build over its budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<SizeReport>,
}

impl FailureReport {
    pub fn new(
        job_id: Option<String>,
        exit_code: u8,
        stage: &str,
        message: &str,
        last_lines: &[String],
        artifact_key: &str,
    ) -> Self {
        let skip = last_lines.len().saturating_sub(REPORT_LINES);
        Self {
            format: RECORD_FORMAT,
            job_id,
            exit_code,
            stage: stage.to_owned(),
            message: message.chars().take(REPORT_MESSAGE_CHARS).collect(),
            last_lines: last_lines[skip..].to_vec(),
            artifact_key: artifact_key.to_owned(),
            failed_at: now_millis(),
            size: None,
        }
    }

    /// The report a successful build leaves at the same key (its report grant writes only that key): exit code
    /// 0, stage [`SUCCESS_STAGE`], and the size report. Readers tell it from a failure by [`Self::succeeded`].
    pub fn success(job_id: Option<String>, artifact_key: &str, size: SizeReport) -> Self {
        let mut report = Self::new(job_id, 0, SUCCESS_STAGE, "built", &[], artifact_key);
        report.size = Some(size);
        report
    }

    /// Whether the build succeeded (a success report, not a failure).
    pub fn succeeded(&self) -> bool {
        self.exit_code == 0
    }

    /// Whether this report is about `job_id` (submitted at `submitted_at`): the job ids match, or, for a report
    /// written outside Batch, it was written after the submission.
    pub fn is_about(&self, job_id: Option<&str>, submitted_at: Option<i64>) -> bool {
        match (&self.job_id, job_id) {
            (Some(reported), Some(job)) => reported == job,
            _ => submitted_at.is_none_or(|t| self.failed_at >= t),
        }
    }
}

/// A JSON object read back with its ETag (for a conditional replacement). `value` is `None` when the object
/// exists but can't be read as `T` (it is then replaced, conditionally, like any other).
#[derive(Debug, Clone)]
pub struct Stored<T> {
    pub value: Option<T>,
    pub etag: String,
}

/// The condition of a write.
#[derive(Debug, Clone, Copy)]
pub enum Condition<'a> {
    /// `If-None-Match: *`: create only.
    Absent,
    /// `If-Match: <etag>`: replace only this exact content.
    Matches(&'a str),
}

/// Why a conditional write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Someone else's write came first (412, or 409 while a competing conditional write is in flight).
    #[error("the object changed since it was read")]
    Conflict,
    #[error(transparent)]
    Aws(#[from] AwsFault),
}

fn is_precondition_failure(fault: &AwsFault) -> bool {
    matches!(fault.http_status, Some(412 | 409))
        || fault.code == "PreconditionFailed"
        || fault.code == "ConditionalRequestConflict"
}

/// Reads a JSON object; `None` when there is none.
pub async fn read_json<T: DeserializeOwned>(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> Result<Option<Stored<T>>, AwsFault> {
    let out = match s3.get_object().bucket(bucket).key(key).send().await {
        Ok(o) => o,
        Err(e) => {
            if e.as_service_error().is_some_and(|s| s.is_no_such_key()) {
                return Ok(None);
            }
            let fault = AwsFault::from_sdk("GetObject", &e);
            if fault.http_status == Some(404) {
                return Ok(None);
            }
            return Err(fault);
        }
    };
    let etag = out.e_tag().unwrap_or_default().to_owned();
    let bytes = out
        .body
        .collect()
        .await
        .map_err(|e| AwsFault {
            operation: "GetObject",
            kind: FaultKind::Transient,
            code: "BodyReadFailed".to_owned(),
            message: e.to_string(),
            http_status: None,
        })?
        .into_bytes();
    let value = match serde_json::from_slice::<T>(&bytes) {
        Ok(v) => Some(v),
        Err(e) => {
            warn!(bucket, key, error = %e, "unreadable JSON object; treated as absent");
            None
        }
    };
    Ok(Some(Stored { value, etag }))
}

/// Writes a JSON object under `condition`; returns the new ETag.
pub async fn write_json<T: Serialize>(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    value: &T,
    condition: Option<Condition<'_>>,
) -> Result<String, WriteError> {
    let body = serde_json::to_vec(value).map_err(|e| AwsFault {
        operation: "PutObject",
        kind: FaultKind::Permanent,
        code: "Serialize".to_owned(),
        message: e.to_string(),
        http_status: None,
    })?;
    let mut request = s3
        .put_object()
        .bucket(bucket)
        .key(key)
        .content_type("application/json")
        .body(ByteStream::from(body));
    request = match condition {
        Some(Condition::Absent) => request.if_none_match("*"),
        Some(Condition::Matches(etag)) => request.if_match(etag),
        None => request,
    };
    match request.send().await {
        Ok(out) => Ok(out.e_tag().unwrap_or_default().to_owned()),
        Err(e) => {
            let fault = AwsFault::from_sdk("PutObject", &e);
            if is_precondition_failure(&fault) {
                Err(WriteError::Conflict)
            } else {
                Err(fault.into())
            }
        }
    }
}

/// The build record of an artifact, if any.
pub async fn read_record(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &ArtifactKey,
) -> Result<Option<Stored<BuildRecord>>, AwsFault> {
    read_json(s3, bucket, &record_key(key)).await
}

/// publish-layer's half: records the outcome of `artifact_key` in its build record, with the layer's size from
/// the builder's success report about the record's build ([`FailureReport::is_about`]). Never fails the
/// invocation: the zip's tags already carry the outcome, and build-status reads them first; a missing or
/// unreadable report leaves the record without a size. A key outside the layerforge scheme (the original tool's
/// zips) or without a record is left alone.
pub async fn complete(
    s3: &aws_sdk_s3::Client,
    config: &Config,
    artifact_key: &str,
    outcome: &outcome::Outcome,
) {
    let now = now_millis();
    let recorded = match outcome {
        outcome::Outcome::Published {
            layer_version_arn, ..
        }
        | outcome::Outcome::Duplicate { layer_version_arn } => RecordOutcome::Published {
            layer_version_arn: layer_version_arn.clone(),
            at: now,
        },
        outcome::Outcome::Rejected { code, reason } => RecordOutcome::Rejected {
            code: code.clone(),
            reason: reason.clone(),
            at: now,
        },
        outcome::Outcome::Ignored { .. } | outcome::Outcome::Failed { .. } => return,
    };
    let Some(key) = ArtifactKey::parse(&config.artifact_prefix, artifact_key) else {
        return;
    };
    let bucket = config.artifact_bucket.as_str();
    let record_key = record_key(&key);
    // Read once, when a record is to be completed.
    let mut report: Option<Option<FailureReport>> = None;
    // A few rounds: a competing writer (another delivery, a new submission) may change the record between
    // the read and the conditional write.
    for _ in 0..3 {
        let stored = match read_json::<BuildRecord>(s3, bucket, &record_key).await {
            Ok(Some(s)) => s,
            Ok(None) => {
                info!(record_key, "no build record to complete");
                return;
            }
            Err(fault) => {
                warn!(record_key, error = %fault, "reading the build record failed; its outcome stays on the zip's tags");
                return;
            }
        };
        let Some(mut record) = stored.value else {
            return;
        };
        let same = match (&record.outcome, &recorded) {
            (
                Some(RecordOutcome::Published {
                    layer_version_arn: a,
                    ..
                }),
                RecordOutcome::Published {
                    layer_version_arn: b,
                    ..
                },
            ) => a == b,
            (
                Some(RecordOutcome::Rejected { code: a, .. }),
                RecordOutcome::Rejected { code: b, .. },
            ) => a == b,
            _ => false,
        };
        if same {
            return;
        }
        if report.is_none() {
            report = Some(read_build_report(s3, bucket, artifact_key).await);
        }
        if let Some(size) = report
            .as_ref()
            .and_then(Option::as_ref)
            .and_then(|r| size_of_build(r, &record))
        {
            record.size = Some(size.clone());
        }
        record.outcome = Some(recorded.clone());
        record.updated_at = now;
        match write_json(
            s3,
            bucket,
            &record_key,
            &record,
            Some(Condition::Matches(&stored.etag)),
        )
        .await
        {
            Ok(_) => {
                info!(
                    record_key,
                    outcome = ?recorded,
                    unzipped_bytes = record.size.as_ref().map(|s| s.unzipped_bytes),
                    "build record completed"
                );
                return;
            }
            Err(WriteError::Conflict) => continue,
            Err(WriteError::Aws(fault)) => {
                warn!(record_key, error = %fault, "completing the build record failed; its outcome stays on the zip's tags");
                return;
            }
        }
    }
    warn!(record_key, "the build record kept changing; not completed");
}

/// The builder's report of `artifact_key`; `None` (logged) when there is none or it can't be read.
async fn read_build_report(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    artifact_key: &str,
) -> Option<FailureReport> {
    let key = report_key(artifact_key);
    match read_json::<FailureReport>(s3, bucket, &key).await {
        Ok(Some(stored)) => stored.value,
        Ok(None) => {
            info!(
                report_key = key,
                "no build report; the record is completed without a size"
            );
            None
        }
        Err(fault) => {
            warn!(report_key = key, error = %fault, "reading the build report failed; the record is completed without a size");
            None
        }
    }
}

/// The size a record keeps: the success report's, when the report is about the record's build (not an older
/// job's left at the same key).
pub fn size_of_build<'a>(
    report: &'a FailureReport,
    record: &BuildRecord,
) -> Option<&'a SizeReport> {
    report
        .is_about(record.job_id.as_deref(), Some(record.submitted_at))
        .then_some(report)
        .filter(|r| r.succeeded())
        .and_then(|r| r.size.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ArtifactKey {
        ArtifactKey::parse(
            "layers",
            "layers/http/python3.12-arm64/0123456789abcdef.zip",
        )
        .unwrap()
    }

    #[test]
    fn records_and_reports_stay_outside_the_prefix_and_never_end_in_zip() {
        assert_eq!(
            record_key(&key()),
            ".layerforge/builds/http/python3.12-arm64/0123456789abcdef.json"
        );
        let report = report_key(&key().to_string());
        assert_eq!(
            report,
            ".layerforge/reports/layers/http/python3.12-arm64/0123456789abcdef.zip.json"
        );
        for k in [record_key(&key()), report] {
            assert!(!k.starts_with("layers/") && !k.ends_with(".zip"), "{k}");
            assert!(ArtifactKey::parse("layers", &k).is_none());
        }
    }

    #[test]
    fn a_report_is_about_its_job_or_a_later_submission() {
        let mut report = FailureReport::new(Some("job-1".into()), 3, "install", "m", &[], "k");
        assert!(report.is_about(Some("job-1"), Some(i64::MAX)));
        assert!(!report.is_about(Some("job-2"), Some(0)), "another job's");
        report.job_id = None;
        assert!(report.is_about(Some("job-2"), Some(report.failed_at - 1)));
        assert!(
            !report.is_about(Some("job-2"), Some(report.failed_at + 1)),
            "older than the submission"
        );
    }

    #[test]
    fn reports_keep_the_last_lines_and_a_bounded_message() {
        let lines: Vec<String> = (0..100).map(|i| format!("line {i}")).collect();
        let report = FailureReport::new(None, 3, "install", &"x".repeat(10_000), &lines, "k");
        assert_eq!(report.last_lines.len(), REPORT_LINES);
        assert_eq!(report.last_lines.last().unwrap(), "line 99");
        assert_eq!(report.message.chars().count(), REPORT_MESSAGE_CHARS);
    }
}

#[cfg(test)]
mod completion_tests {
    //! publish-layer's completion of a record, against mocked S3: the size comes from the builder's success
    //! report about the record's build, and a report that is missing, unreadable or another job's leaves the
    //! record completed without it.

    use super::*;
    use crate::size::Distribution;
    use aws_sdk_s3::{
        operation::{
            get_object::{GetObjectError, GetObjectOutput},
            put_object::PutObjectOutput,
        },
        types::error::NoSuchKey,
    };
    use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
    use aws_smithy_types::error::ErrorMetadata;

    const KEY: &str = "layers/http/python3.12-arm64/0123456789abcdef.zip";

    fn config() -> Config {
        Config::from_lookup(|k| (k == "ARTIFACT_BUCKET").then(|| "artifacts".to_owned())).unwrap()
    }

    fn record(job_id: &str) -> BuildRecord {
        BuildRecord {
            format: RECORD_FORMAT,
            layer_name: "http".into(),
            runtime: "python3.12".into(),
            architecture: "arm64".into(),
            fingerprint: "0123456789abcdef".repeat(4),
            artifact_key: KEY.into(),
            request: RecordedRequest {
                requirements: vec!["six==1.16.0".into()],
                requirements_s3_uri: None,
                description: None,
                license: None,
                force: false,
                vcpu: None,
                memory_mib: None,
                bytecode: Some(true),
                slim: false,
                max_unzipped_mb: Some(250),
                share: None,
            },
            job_id: Some(job_id.into()),
            job_name: None,
            job_queue: None,
            submit_error: None,
            submitted_at: 1_000,
            updated_at: 1_000,
            outcome: None,
            size: None,
            builder: None,
            builder_reason: None,
            handed_over: None,
            fast_deadline: None,
        }
    }

    fn size() -> SizeReport {
        SizeReport::tally(
            &[("six.py".to_owned(), 34_549)],
            &[Distribution::from_record(
                "six-1.16.0.dist-info",
                "six.py,,\n",
            )],
            crate::vocab::LAMBDA_UNZIPPED_LIMIT,
        )
    }

    fn success(job_id: &str) -> FailureReport {
        let mut r = FailureReport::success(Some(job_id.into()), KEY, size());
        r.failed_at = 2_000;
        r
    }

    fn get_json(key: String, body: Vec<u8>) -> Rule {
        mock!(aws_sdk_s3::Client::get_object)
            .match_requests(move |r| r.key() == Some(key.as_str()))
            .then_output(move || {
                GetObjectOutput::builder()
                    .e_tag("\"e\"")
                    .body(body.clone().into())
                    .build()
            })
    }

    /// What publish-layer writes back, read from the conditional PutObject.
    fn written(put: &aws_sdk_s3::operation::put_object::PutObjectInput) -> Option<BuildRecord> {
        put.body()
            .bytes()
            .and_then(|b| serde_json::from_slice(b).ok())
    }

    /// Completes the record of job-1 as published with the report rule `report`; whether the record written
    /// has a size.
    async fn complete_with(report: Rule) -> Option<SizeReport> {
        let stored = get_json(
            record_key(&ArtifactKey::parse("layers", KEY).unwrap()),
            serde_json::to_vec(&record("job-1")).unwrap(),
        );
        let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
        let put = {
            let seen = seen.clone();
            mock!(aws_sdk_s3::Client::put_object)
                .match_requests(move |r| {
                    *seen.lock().unwrap() = written(r);
                    r.if_match() == Some("\"e\"")
                })
                .then_output(|| PutObjectOutput::builder().e_tag("\"f\"").build())
        };
        let s3 = mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&stored, &report, &put]);
        let outcome = outcome::Outcome::Published {
            layer_version_arn: "arn:aws:lambda:us-east-1:123456789012:layer:http:1".into(),
            version: 1,
        };
        complete(&s3, &config(), KEY, &outcome).await;
        assert_eq!(put.num_calls(), 1, "the record is completed either way");
        let record = seen.lock().unwrap().take().expect("a record written");
        assert!(
            matches!(record.outcome, Some(RecordOutcome::Published { .. })),
            "{:?}",
            record.outcome
        );
        record.size
    }

    #[tokio::test]
    async fn the_record_keeps_the_size_of_its_builds_success_report() {
        let report = get_json(
            report_key(KEY),
            serde_json::to_vec(&success("job-1")).unwrap(),
        );
        assert_eq!(complete_with(report).await, Some(size()));
    }

    #[tokio::test]
    async fn without_a_readable_report_of_its_build_the_record_is_completed_without_a_size() {
        let cases: Vec<(&str, Rule)> = vec![
            (
                "no report",
                mock!(aws_sdk_s3::Client::get_object)
                    .match_requests(|r| r.key() == Some(report_key(KEY).as_str()))
                    .then_error(|| GetObjectError::NoSuchKey(NoSuchKey::builder().build())),
            ),
            (
                "a role that can't read reports",
                mock!(aws_sdk_s3::Client::get_object)
                    .match_requests(|r| r.key() == Some(report_key(KEY).as_str()))
                    .then_error(|| {
                        GetObjectError::generic(
                            ErrorMetadata::builder()
                                .code("AccessDenied")
                                .message("Access Denied")
                                .build(),
                        )
                    }),
            ),
            ("not JSON", get_json(report_key(KEY), b"<html>".to_vec())),
            (
                "an older job's report",
                get_json(
                    report_key(KEY),
                    serde_json::to_vec(&success("job-0")).unwrap(),
                ),
            ),
        ];
        for (name, report) in cases {
            assert_eq!(complete_with(report).await, None, "{name}");
        }
    }

    #[test]
    fn only_a_success_report_about_the_records_build_gives_its_size() {
        let record = record("job-1");
        assert_eq!(size_of_build(&success("job-1"), &record), Some(&size()));
        assert_eq!(size_of_build(&success("job-0"), &record), None);
        let mut over = FailureReport::new(Some("job-1".into()), 4, "check", "over", &[], KEY);
        over.size = Some(size());
        assert_eq!(size_of_build(&over, &record), None, "a failure's");
        // Written outside Batch: about the build when written after its submission.
        let mut local = success("job-1");
        local.job_id = None;
        assert_eq!(size_of_build(&local, &record), Some(&size()));
        local.failed_at = 999;
        assert_eq!(size_of_build(&local, &record), None);
    }
}
