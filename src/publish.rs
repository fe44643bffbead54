//! publish-layer: an uploaded zip becomes a checked layer version, published exactly once (DESIGN section 6).
//!
//! For each record of an S3 event [`handle`] runs: filter (only `ObjectCreated:*` on `.zip` keys under the
//! artifact prefix of the artifact bucket; `s3:TestEvent` messages and everything else are acknowledged and
//! ignored) → form-URL-decode the key → HeadObject (with the record's `versionId`) → [`ArtifactMetadata`] →
//! [`zipcheck::inspect`] over ranged GETs → the exactly-once guard → PublishLayerVersion → tag the zip
//! `layer-version-arn=…`.
//!
//! # Outcomes and failures
//! Every record gets a [`RecordResult`]: `published` or `duplicate` (with the ARN), `rejected` (with a reason)
//! or `ignored` (with why). A permanently bad artifact (missing metadata, not a zip, wrong layout, over the
//! size limit, refused by Lambda as invalid) is tagged `layerforge-status=rejected` and
//! `layerforge-reason=<code>` and does not fail the invocation: retrying can't help. An AWS fault (throttling,
//! 5xx, a missing permission) fails the invocation *after* the other records were processed, so Lambda's
//! retries and on-failure destination keep the event; the records that succeeded come back as `duplicate`
//! on the retry. Object tags are merged, never replaced: the zip's other tags survive.
//!
//! # Exactly once
//! S3 delivers events at least once and may deliver the same one concurrently. The guard is a *claim object*
//! per object version, `.layerforge/claims/<sha256(bucket, key, version)>.json`, in the artifact bucket but
//! outside the artifact prefix (and not ending in `.zip`), so it never triggers the function:
//!
//! 1. Create the claim with `PutObject If-None-Match: *` (`{owner, claimed_at, layer_version_arn: null}`).
//!    Exactly one delivery's write succeeds; the others get 412 (or 409 while a competing conditional write
//!    is in flight). The winner reads the claim back and proceeds only if it still names it: S3 makes the
//!    conditional write atomic, moto checks then writes, and the read-back closes that gap.
//! 2. The winner looks at the layer's latest versions (ListLayerVersions + GetLayerVersion): if one has the
//!    zip's CodeSha256 (`content-sha256` metadata, or S3's full-object SHA-256 checksum), it is adopted
//!    instead of publishing again. This covers a winner that published and crashed before recording the ARN,
//!    and a forced rebuild of identical bytes.
//! 3. The winner publishes, then records the ARN in the claim with `PutObject If-Match: <its ETag>`.
//! 4. A loser reads the claim: with an ARN it returns `duplicate` with that ARN (after making sure the zip is
//!    tagged); with a recorded rejection it returns `rejected`; otherwise it polls with backoff.
//! 5. A claim without an outcome whose lease ([`Guard::lease`], counted from `claimed_at`) has run out
//!    belongs to a crashed or stalled winner: it is taken over with `PutObject If-Match: <ETag read>`, so of
//!    several waiters only one takes over, and the new owner repeats step 2 before publishing. A winner that
//!    fails with an AWS fault releases its claim (lease set to expired) so that the retry can proceed at once.
//! 6. A loser that has waited [`Guard::max_wait`] gives up with a transient error: the invocation fails and
//!    Lambda retries later; nothing is lost and nothing is published twice.
//!
//! The one remaining window: a winner stalled for longer than the lease *between* its CodeSha256 check and
//! its PublishLayerVersion call while another delivery takes over. The lease (2 minutes) is far above the
//! seconds these calls take.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use aws_lambda_events::event::s3::S3EventRecord;
use aws_sdk_s3::{
    primitives::ByteStream,
    types::{ChecksumMode, Tag, Tagging},
};
use lambda_runtime::Diagnostic;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::{
    artifact::{ArtifactKey, ArtifactMetadata, MetadataError},
    aws::{AwsFault, FaultKind, error_chain},
    config::Config,
    zipcheck::{self, InspectError, Limits, RangeReader, ZipProblem},
};

pub use crate::submit::LAYER_VERSION_ARN_TAG;

/// Where claim objects live, relative to the artifact bucket's root.
pub const CLAIM_PREFIX: &str = ".layerforge/claims";
/// Tag on a rejected zip: `rejected`.
pub const STATUS_TAG: &str = "layerforge-status";
/// Tag on a rejected zip: the rejection's short code.
pub const REASON_TAG: &str = "layerforge-reason";

/// Lambda's limits on PublishLayerVersion text fields (characters).
const MAX_DESCRIPTION_CHARS: usize = 256;
const MAX_LICENSE_CHARS: usize = 512;
/// How many of the newest layer versions are compared by CodeSha256 before publishing.
const VERSIONS_TO_COMPARE: i32 = 5;

/// Timing of the exactly-once guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guard {
    /// How long a claim without an outcome protects its owner.
    pub lease: Duration,
    /// How long a losing delivery waits for the winner's outcome before failing (transiently).
    pub max_wait: Duration,
    /// First polling interval; doubles up to `max_poll`.
    pub first_poll: Duration,
    pub max_poll: Duration,
}

impl Default for Guard {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(120),
            max_wait: Duration::from_secs(60),
            first_poll: Duration::from_millis(100),
            max_poll: Duration::from_secs(2),
        }
    }
}

/// What publish-layer needs, built once per cold start and cheap to clone.
#[derive(Clone, Debug)]
pub struct PublishState {
    pub config: Arc<Config>,
    pub s3: aws_sdk_s3::Client,
    pub lambda: aws_sdk_lambda::Client,
    pub guard: Guard,
}

impl PublishState {
    pub fn new(
        config: Arc<Config>,
        s3: aws_sdk_s3::Client,
        lambda: aws_sdk_lambda::Client,
    ) -> Self {
        Self {
            config,
            s3,
            lambda,
            guard: Guard::default(),
        }
    }
}

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
    /// An AWS call failed; `kind` says whether a retry can help.
    #[error(transparent)]
    Aws(#[from] AwsFault),
}

impl RecordError {
    /// The stable `errorType`: `Rejected`, `Transient` or `AwsError`.
    pub fn error_type(&self) -> &'static str {
        match self {
            RecordError::Rejected(_) => "Rejected",
            RecordError::Aws(f) if f.is_transient() => "Transient",
            RecordError::Aws(_) => "AwsError",
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
    /// Throttling, 5xx, timeouts, a claim still held: Lambda's retry can succeed.
    #[error(
        "{failed} of {total} records hit a transient AWS failure (the event will be retried): {first}"
    )]
    Transient {
        failed: usize,
        total: usize,
        first: String,
        results: Vec<RecordResult>,
    },
    /// AWS refused a call (e.g. a missing permission): needs an operator; the on-failure destination keeps it.
    #[error("{failed} of {total} records failed on an AWS error: {first}")]
    Aws {
        failed: usize,
        total: usize,
        first: String,
        results: Vec<RecordResult>,
    },
}

impl PublishError {
    /// The stable `errorType` Lambda reports.
    pub fn error_type(&self) -> &'static str {
        match self {
            PublishError::Transient { .. } => "Transient",
            PublishError::Aws { .. } => "AwsError",
        }
    }

    /// Every record's outcome, the failed ones included.
    pub fn results(&self) -> &[RecordResult] {
        match self {
            PublishError::Transient { results, .. } | PublishError::Aws { results, .. } => results,
        }
    }
}

impl From<PublishError> for Diagnostic {
    fn from(err: PublishError) -> Self {
        Diagnostic {
            error_type: err.error_type().to_owned(),
            error_message: err.to_string(),
        }
    }
}

/// The handler: every record is handled; AWS faults fail the invocation at the end.
pub async fn handle(state: &PublishState, event: Value) -> Result<PublishResponse, PublishError> {
    let records = match classify_event(&event) {
        EventShape::Test => {
            info!("s3:TestEvent acknowledged");
            return Ok(PublishResponse {
                records: vec![ignored_result("s3:TestEvent")],
            });
        }
        EventShape::Other(why) => {
            warn!(
                why,
                "not an S3 event notification; acknowledged and ignored"
            );
            return Ok(PublishResponse {
                records: vec![ignored_result(why)],
            });
        }
        EventShape::Records(records) => records,
    };

    let mut results = Vec::with_capacity(records.len());
    let mut failures: Vec<RecordError> = Vec::new();
    for raw in records {
        let record = match parse_record(raw) {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "malformed S3 event record; ignored");
                results.push(ignored_result(&format!("malformed record: {e}")));
                continue;
            }
        };
        let target = match Target::from_record(&state.config, &record) {
            Ok(t) => t,
            Err(ignore) => {
                info!(
                    event_name = record.event_name.as_deref().unwrap_or(""),
                    key = record.s3.object.key.as_deref().unwrap_or(""),
                    reason = %ignore.reason,
                    "record ignored"
                );
                results.push(RecordResult {
                    bucket: record.s3.bucket.name.clone(),
                    key: ignore.key,
                    version_id: record.s3.object.version_id.clone(),
                    outcome: Outcome::Ignored {
                        reason: ignore.reason,
                    },
                });
                continue;
            }
        };
        let (version_id, result) = process(state, &target).await;
        if let Ok(outcome) = &result {
            // The outcome goes into the build record too (logged, never failing: the tags are the truth).
            crate::records::complete(&state.s3, &state.config, &target.key, outcome).await;
        }
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(e) => {
                warn!(
                    bucket = target.bucket,
                    key = target.key,
                    error_type = e.error_type(),
                    error = %e,
                    "record failed; the invocation will fail so the event is retried"
                );
                let outcome = Outcome::Failed {
                    error_type: e.error_type().to_owned(),
                    error: e.to_string(),
                };
                failures.push(e);
                outcome
            }
        };
        results.push(RecordResult {
            bucket: Some(target.bucket.clone()),
            key: Some(target.key.clone()),
            version_id,
            outcome,
        });
    }

    if failures.is_empty() {
        return Ok(PublishResponse { records: results });
    }
    let total = results.len();
    let failed = failures.len();
    let first = failures
        .iter()
        .map(ToString::to_string)
        .next()
        .unwrap_or_default();
    if failures.iter().any(|f| f.error_type() == "Transient") {
        Err(PublishError::Transient {
            failed,
            total,
            first,
            results,
        })
    } else {
        Err(PublishError::Aws {
            failed,
            total,
            first,
            results,
        })
    }
}

fn ignored_result(reason: &str) -> RecordResult {
    RecordResult {
        bucket: None,
        key: None,
        version_id: None,
        outcome: Outcome::Ignored {
            reason: reason.to_owned(),
        },
    }
}

/// The shapes a publish-layer input can take.
enum EventShape<'a> {
    /// S3's `{"Service":"Amazon S3","Event":"s3:TestEvent",…}`, sent when notifications are configured.
    Test,
    Records(&'a [Value]),
    Other(&'static str),
}

fn classify_event(event: &Value) -> EventShape<'_> {
    if event.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        return EventShape::Test;
    }
    match event.get("Records").and_then(Value::as_array) {
        Some(records) => EventShape::Records(records),
        None => EventShape::Other("no Records array"),
    }
}

/// One record into the `aws_lambda_events` type. Emitters other than S3 itself (moto, hand-made test events)
/// omit `userIdentity` and `requestParameters`, which the type requires and publish-layer never reads: they
/// default to empty objects.
fn parse_record(raw: &Value) -> Result<S3EventRecord, serde_json::Error> {
    let mut raw = raw.clone();
    if let Some(obj) = raw.as_object_mut() {
        for field in ["userIdentity", "requestParameters"] {
            obj.entry(field)
                .or_insert_with(|| Value::Object(Default::default()));
        }
    }
    serde_json::from_value(raw)
}

/// `+` is a space, then percent-decoding, then UTF-8 (S3 encodes keys in events as HTML forms do).
pub fn form_decode(raw: &str) -> Result<String, std::str::Utf8Error> {
    let spaced = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .map(|k| k.into_owned())
}

/// An object version this function should publish.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    bucket: String,
    key: String,
    version_id: Option<String>,
    etag: Option<String>,
}

/// Why a record is not for this function, with the decoded key when there is one.
struct Ignore {
    reason: String,
    key: Option<String>,
}

impl Target {
    fn from_record(config: &Config, record: &S3EventRecord) -> Result<Self, Ignore> {
        let ignore = |reason: String, key: Option<String>| Ignore { reason, key };
        let event_name = record.event_name.as_deref().unwrap_or("");
        let event_name = event_name.strip_prefix("s3:").unwrap_or(event_name);
        let raw_key = record.s3.object.key.as_deref().unwrap_or("");
        let key =
            form_decode(raw_key).map_err(|_| ignore("the key is not UTF-8".to_owned(), None))?;
        if !event_name.starts_with("ObjectCreated:") {
            return Err(ignore(
                format!("event {event_name:?} is not ObjectCreated:*"),
                Some(key),
            ));
        }
        let bucket = record.s3.bucket.name.clone().unwrap_or_default();
        if bucket != config.artifact_bucket {
            return Err(ignore(
                format!("bucket {bucket:?} is not the artifact bucket"),
                Some(key),
            ));
        }
        let prefix = format!("{}/", config.artifact_prefix);
        if !key.starts_with(&prefix) || !key.ends_with(".zip") {
            return Err(ignore(
                format!("key is not a .zip under {prefix}"),
                Some(key),
            ));
        }
        Ok(Self {
            bucket,
            key,
            version_id: record
                .s3
                .object
                .version_id
                .clone()
                .filter(|v| !v.is_empty()),
            etag: record.s3.object.e_tag.clone().filter(|v| !v.is_empty()),
        })
    }
}

/// The object as HeadObject saw it.
struct Head {
    version_id: Option<String>,
    etag: Option<String>,
    len: u64,
    metadata: HashMap<String, String>,
    /// S3's full-object SHA-256 (base64), when the upload carried one.
    checksum_sha256: Option<String>,
}

/// One record, start to finish. Returns the object version handled (once known) and the outcome.
async fn process(
    state: &PublishState,
    target: &Target,
) -> (Option<String>, Result<Outcome, RecordError>) {
    let head = match head_object(state, target).await {
        Ok(Some(h)) => h,
        Err(fault) => return (target.version_id.clone(), Err(fault.into())),
        Ok(None) => {
            info!(
                bucket = target.bucket,
                key = target.key,
                "object no longer exists; ignored"
            );
            let outcome = Outcome::Ignored {
                reason: "the object (version) no longer exists".to_owned(),
            };
            return (target.version_id.clone(), Ok(outcome));
        }
    };
    // Without a versionId in the record (unversioned bucket, or an emitter that omits it) the version HeadObject
    // saw is the one checked, claimed and published.
    let version_id = target
        .version_id
        .clone()
        .or_else(|| head.version_id.clone());
    let object = ObjectRef {
        bucket: target.bucket.clone(),
        key: target.key.clone(),
        version_id: version_id.clone(),
        identity: version_id
            .clone()
            .or_else(|| head.etag.clone())
            .or_else(|| target.etag.clone())
            .unwrap_or_else(|| "unversioned".to_owned()),
    };

    let result = match check_and_publish(state, &object, &head).await {
        Err(RecordError::Rejected(rejection)) => reject(state, &object, &rejection).await,
        other => other,
    };
    (version_id, result)
}

/// The object version being handled.
#[derive(Debug, Clone)]
struct ObjectRef {
    bucket: String,
    key: String,
    version_id: Option<String>,
    /// What makes this upload distinct: the version id, else the ETag.
    identity: String,
}

async fn check_and_publish(
    state: &PublishState,
    object: &ObjectRef,
    head: &Head,
) -> Result<Outcome, RecordError> {
    let metadata = ArtifactMetadata::from_s3_metadata(&head.metadata).map_err(Rejection::from)?;
    let parsed_key = ArtifactKey::parse(&state.config.artifact_prefix, &object.key);
    if let Some(k) = &parsed_key
        && k.layer_name != metadata.layer_name
    {
        return Err(Rejection::NameMismatch {
            metadata: metadata.layer_name.clone(),
            key: k.layer_name.clone(),
        }
        .into());
    }

    let reader = S3Range {
        s3: &state.s3,
        bucket: &object.bucket,
        key: &object.key,
        version_id: object.version_id.as_deref(),
        len: head.len,
    };
    let summary = match zipcheck::inspect(&reader, &Limits::default()).await {
        Ok(s) => s,
        Err(InspectError::Invalid(problem)) => return Err(Rejection::Zip(problem).into()),
        Err(InspectError::Read(fault)) => return Err(fault.into()),
    };
    info!(
        bucket = object.bucket,
        key = object.key,
        entries = summary.entries,
        unzipped_bytes = summary.uncompressed_bytes,
        object_bytes = head.len,
        bytes_read = summary.bytes_read,
        reads = summary.reads,
        zip64 = summary.zip64,
        "zip checked"
    );

    let code_sha256 = metadata
        .content_sha256
        .clone()
        .or_else(|| head.checksum_sha256.clone().filter(|c| !c.contains('-')));
    let layer = LayerSpec::new(&metadata, parsed_key.as_ref(), object);
    let outcome = publish_once(state, object, &layer, code_sha256.as_deref()).await?;
    if let Some(arn) = outcome.layer_version_arn() {
        merge_tags(
            state,
            object,
            &[(LAYER_VERSION_ARN_TAG, arn.to_owned())],
            &[STATUS_TAG, REASON_TAG],
        )
        .await?;
    }
    Ok(outcome)
}

/// Tags a rejected zip and logs why; a tagging fault that is not transient does not hide the rejection.
async fn reject(
    state: &PublishState,
    object: &ObjectRef,
    rejection: &Rejection,
) -> Result<Outcome, RecordError> {
    let code = rejection.code();
    warn!(bucket = object.bucket, key = object.key, code, reason = %rejection, "artifact rejected");
    match merge_tags(
        state,
        object,
        &[
            (STATUS_TAG, "rejected".to_owned()),
            (REASON_TAG, code.clone()),
        ],
        &[],
    )
    .await
    {
        Ok(()) => {}
        Err(fault) if fault.is_transient() => return Err(fault.into()),
        Err(fault) => {
            warn!(bucket = object.bucket, key = object.key, error = %fault, "tagging the rejected zip failed")
        }
    }
    Ok(Outcome::Rejected {
        code,
        reason: rejection.to_string(),
    })
}

/// The PublishLayerVersion input, from metadata (and the key, for what old metadata lacks).
#[derive(Debug, Clone, PartialEq)]
struct LayerSpec {
    name: String,
    runtimes: Vec<aws_sdk_lambda::types::Runtime>,
    architectures: Vec<aws_sdk_lambda::types::Architecture>,
    license: Option<String>,
    description: String,
}

impl LayerSpec {
    fn new(metadata: &ArtifactMetadata, key: Option<&ArtifactKey>, object: &ObjectRef) -> Self {
        let mut architectures: Vec<_> = metadata
            .compatible_architectures
            .iter()
            .map(|a| aws_sdk_lambda::types::Architecture::from(a.as_str()))
            .collect();
        if architectures.is_empty()
            && let Some(k) = key
        {
            architectures.push(aws_sdk_lambda::types::Architecture::from(
                k.architecture.as_str(),
            ));
        }
        let fingerprint = metadata
            .fingerprint
            .clone()
            .or_else(|| key.map(|k| k.fingerprint.clone()));
        let description = match (&metadata.description, &fingerprint) {
            (Some(d), _) => d.clone(),
            (None, Some(fp)) => format!("layerforge {fp}: {}", metadata.requirements),
            (None, None) => format!(
                "from s3://{}/{}: {}",
                object.bucket, object.key, metadata.requirements
            ),
        };
        Self {
            name: metadata.layer_name.clone(),
            runtimes: metadata
                .compatible_runtimes
                .iter()
                .map(|r| aws_sdk_lambda::types::Runtime::from(r.as_str()))
                .collect(),
            architectures,
            license: metadata
                .license
                .as_deref()
                .map(|l| truncate_chars(l, MAX_LICENSE_CHARS))
                .filter(|l| !l.is_empty()),
            description: truncate_chars(
                description.trim_end_matches([':', ' ']),
                MAX_DESCRIPTION_CHARS,
            ),
        }
    }
}

fn truncate_chars(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// Ranged GETs of one object version: the [`RangeReader`] [`zipcheck::inspect`] uses in production.
#[derive(Debug, Clone, Copy)]
pub struct S3Range<'a> {
    pub s3: &'a aws_sdk_s3::Client,
    pub bucket: &'a str,
    pub key: &'a str,
    pub version_id: Option<&'a str>,
    /// The object's length, from HeadObject.
    pub len: u64,
}

impl RangeReader for S3Range<'_> {
    type Error = AwsFault;

    fn len(&self) -> u64 {
        self.len
    }

    async fn read(&self, start: u64, len: u64) -> Result<Vec<u8>, AwsFault> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let range = format!("bytes={start}-{}", start + len - 1);
        let out = self
            .s3
            .get_object()
            .bucket(self.bucket)
            .key(self.key)
            .set_version_id(self.version_id.map(str::to_owned))
            .range(&range)
            .send()
            .await
            .map_err(|e| AwsFault::from_sdk("GetObject", &e))?;
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| body_fault("GetObject", &e))?
            .into_bytes();
        if bytes.len() as u64 != len {
            // The object changed, or the server ignored the range: not a property of the zip.
            return Err(AwsFault {
                operation: "GetObject",
                kind: FaultKind::Transient,
                code: "ShortRangeRead".to_owned(),
                message: format!("{range} returned {} bytes", bytes.len()),
                http_status: None,
            });
        }
        Ok(bytes.to_vec())
    }
}

fn body_fault(operation: &'static str, e: &dyn std::error::Error) -> AwsFault {
    AwsFault {
        operation,
        kind: FaultKind::Transient,
        code: "BodyReadFailed".to_owned(),
        message: error_chain(e),
        http_status: None,
    }
}

/// HeadObject; `None` when the object (version) is gone.
async fn head_object(state: &PublishState, target: &Target) -> Result<Option<Head>, AwsFault> {
    let result = state
        .s3
        .head_object()
        .bucket(&target.bucket)
        .key(&target.key)
        .set_version_id(target.version_id.clone())
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await;
    let out = match result {
        Ok(o) => o,
        Err(e) => {
            let fault = AwsFault::from_sdk("HeadObject", &e);
            if e.as_service_error().is_some_and(|s| s.is_not_found())
                || fault.http_status == Some(404)
            {
                return Ok(None);
            }
            return Err(fault);
        }
    };
    Ok(Some(Head {
        version_id: out
            .version_id()
            .filter(|v| !v.is_empty() && *v != "null")
            .map(str::to_owned),
        etag: out.e_tag().map(|e| e.trim_matches('"').to_owned()),
        len: u64::try_from(out.content_length().unwrap_or(0)).unwrap_or(0),
        metadata: out.metadata().cloned().unwrap_or_default(),
        checksum_sha256: out.checksum_sha256().map(str::to_owned),
    }))
}

/// Sets `set` and removes `remove` on the object version's tags, keeping every other tag (PutObjectTagging
/// replaces the whole set).
async fn merge_tags(
    state: &PublishState,
    object: &ObjectRef,
    set: &[(&str, String)],
    remove: &[&str],
) -> Result<(), AwsFault> {
    let current = state
        .s3
        .get_object_tagging()
        .bucket(&object.bucket)
        .key(&object.key)
        .set_version_id(object.version_id.clone())
        .send()
        .await
        .map_err(|e| AwsFault::from_sdk("GetObjectTagging", &e))?;
    let existing: Vec<(String, String)> = current
        .tag_set()
        .iter()
        .map(|t| (t.key().to_owned(), t.value().to_owned()))
        .collect();
    let mut merged: Vec<(String, String)> = existing
        .iter()
        .filter(|(k, _)| !remove.contains(&k.as_str()) && !set.iter().any(|(s, _)| s == k))
        .cloned()
        .collect();
    merged.extend(set.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    let mut sorted_existing = existing.clone();
    sorted_existing.sort();
    let mut sorted_merged = merged.clone();
    sorted_merged.sort();
    if sorted_existing == sorted_merged {
        return Ok(());
    }
    let build_fault = |e: &dyn std::error::Error| AwsFault {
        operation: "PutObjectTagging",
        kind: FaultKind::Permanent,
        code: "InvalidTag".to_owned(),
        message: error_chain(e),
        http_status: None,
    };
    let tags = merged
        .into_iter()
        .map(|(k, v)| {
            Tag::builder()
                .key(k)
                .value(v)
                .build()
                .map_err(|e| build_fault(&e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let tagging = Tagging::builder()
        .set_tag_set(Some(tags))
        .build()
        .map_err(|e| build_fault(&e))?;
    state
        .s3
        .put_object_tagging()
        .bucket(&object.bucket)
        .key(&object.key)
        .set_version_id(object.version_id.clone())
        .tagging(tagging)
        .send()
        .await
        .map_err(|e| AwsFault::from_sdk("PutObjectTagging", &e))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// The exactly-once guard.

/// The claim object's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Claim {
    bucket: String,
    key: String,
    identity: String,
    owner: String,
    /// Unix milliseconds; the lease runs from here. 0 marks a released claim.
    claimed_at: u64,
    #[serde(default)]
    layer_version_arn: Option<String>,
    #[serde(default)]
    rejected: Option<RecordedRejection>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct RecordedRejection {
    code: String,
    reason: String,
}

/// The claim object's key for an object version.
pub fn claim_key(bucket: &str, key: &str, identity: &str) -> String {
    let digest = Sha256::digest(format!("{bucket}\n{key}\n{identity}"));
    format!("{CLAIM_PREFIX}/{}.json", hex::encode(digest))
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A token no other delivery uses.
fn new_owner() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{:x}-{:x}-{}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The result of a conditional claim write.
enum Write {
    /// Written.
    Done,
    /// The precondition failed: someone else's write came first.
    Lost,
}

fn is_precondition_failure(fault: &AwsFault) -> bool {
    // 412: the condition is false. 409: S3's ConditionalRequestConflict while another conditional write to
    // the key is in flight: the other writer wins or retries, either way not us now.
    matches!(fault.http_status, Some(412 | 409))
        || fault.code == "PreconditionFailed"
        || fault.code == "ConditionalRequestConflict"
}

async fn write_claim(
    state: &PublishState,
    bucket: &str,
    claim_key: &str,
    claim: &Claim,
    condition: Condition<'_>,
) -> Result<Write, AwsFault> {
    let body = serde_json::to_vec(claim).map_err(|e| AwsFault {
        operation: "PutObject",
        kind: FaultKind::Permanent,
        code: "SerializeClaim".to_owned(),
        message: e.to_string(),
        http_status: None,
    })?;
    let mut request = state
        .s3
        .put_object()
        .bucket(bucket)
        .key(claim_key)
        .content_type("application/json")
        .body(ByteStream::from(body));
    request = match condition {
        Condition::Absent => request.if_none_match("*"),
        Condition::Matches(etag) => request.if_match(etag),
    };
    match request.send().await {
        Ok(_) => Ok(Write::Done),
        Err(e) => {
            let fault = AwsFault::from_sdk("PutObject", &e);
            if is_precondition_failure(&fault) {
                Ok(Write::Lost)
            } else {
                Err(fault)
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Condition<'a> {
    /// `If-None-Match: *`: create only.
    Absent,
    /// `If-Match: <etag>`: replace only this exact content.
    Matches(&'a str),
}

/// The claim and its ETag, or `None` when there is none.
async fn read_claim(
    state: &PublishState,
    bucket: &str,
    claim_key: &str,
) -> Result<Option<(Claim, String)>, AwsFault> {
    let out = match state
        .s3
        .get_object()
        .bucket(bucket)
        .key(claim_key)
        .send()
        .await
    {
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
    let etag = out.e_tag().unwrap_or_default().trim_matches('"').to_owned();
    let bytes = out
        .body
        .collect()
        .await
        .map_err(|e| body_fault("GetObject", &e))?
        .into_bytes();
    match serde_json::from_slice::<Claim>(&bytes) {
        Ok(claim) => Ok(Some((claim, etag))),
        Err(e) => {
            // Unreadable: treat it as a released claim so that it is taken over (conditionally) and rewritten.
            warn!(claim_key, error = %e, "unreadable claim object; it will be taken over");
            Ok(Some((
                Claim {
                    bucket: bucket.to_owned(),
                    key: String::new(),
                    identity: String::new(),
                    owner: String::new(),
                    claimed_at: 0,
                    layer_version_arn: None,
                    rejected: None,
                },
                etag,
            )))
        }
    }
}

/// Claims the object version, then publishes (winner) or waits for the winner's outcome (loser).
async fn publish_once(
    state: &PublishState,
    object: &ObjectRef,
    layer: &LayerSpec,
    code_sha256: Option<&str>,
) -> Result<Outcome, RecordError> {
    let key = claim_key(&object.bucket, &object.key, &object.identity);
    let owner = new_owner();
    let guard = state.guard;
    let started = now_millis();
    let mut poll = guard.first_poll;
    let fresh = |at: u64| Claim {
        bucket: object.bucket.clone(),
        key: object.key.clone(),
        identity: object.identity.clone(),
        owner: owner.clone(),
        claimed_at: at,
        layer_version_arn: None,
        rejected: None,
    };

    // Create, or else read what is there.
    let mut attempt = write_claim(
        state,
        &object.bucket,
        &key,
        &fresh(now_millis()),
        Condition::Absent,
    )
    .await?;
    loop {
        if let Write::Done = attempt {
            match confirm_owner(state, &object.bucket, &key, &owner).await? {
                Some(etag) => {
                    return win(
                        state,
                        object,
                        layer,
                        code_sha256,
                        &key,
                        fresh(now_millis()),
                        &etag,
                    )
                    .await;
                }
                None => info!(
                    claim = key,
                    owner, "claim write was overtaken by a concurrent one"
                ),
            }
        }

        let Some((claim, etag)) = read_claim(state, &object.bucket, &key).await? else {
            // Gone (deleted by an operator or a lifecycle rule): claim again.
            attempt = write_claim(
                state,
                &object.bucket,
                &key,
                &fresh(now_millis()),
                Condition::Absent,
            )
            .await?;
            continue;
        };
        if let Some(arn) = claim.layer_version_arn {
            info!(
                bucket = object.bucket,
                key = object.key,
                layer_version_arn = arn,
                "already published"
            );
            return Ok(Outcome::Duplicate {
                layer_version_arn: arn,
            });
        }
        if let Some(r) = claim.rejected {
            return Err(Rejection::Recorded {
                code: r.code,
                reason: r.reason,
            }
            .into());
        }
        let now = now_millis();
        let lease_ms = u64::try_from(guard.lease.as_millis()).unwrap_or(u64::MAX);
        if claim.claimed_at.saturating_add(lease_ms) <= now {
            warn!(
                claim = key,
                previous_owner = claim.owner,
                claimed_at = claim.claimed_at,
                "claim lease expired without an outcome; taking it over"
            );
            attempt = write_claim(
                state,
                &object.bucket,
                &key,
                &fresh(now),
                Condition::Matches(&etag),
            )
            .await?;
            continue;
        }
        let waited = now.saturating_sub(started);
        if u128::from(waited) >= guard.max_wait.as_millis() {
            return Err(AwsFault {
                operation: "PublishLayerVersion",
                kind: FaultKind::Transient,
                code: "ClaimHeld".to_owned(),
                message: format!(
                    "another delivery ({}) holds the claim {key} since {} and has not finished after {waited} ms",
                    claim.owner, claim.claimed_at
                ),
                http_status: None,
            }
            .into());
        }
        tokio::time::sleep(poll).await;
        poll = (poll * 2).min(guard.max_poll);
        attempt = Write::Lost;
    }
}

/// Reads the claim back: `Some(etag)` when it names `owner`.
async fn confirm_owner(
    state: &PublishState,
    bucket: &str,
    key: &str,
    owner: &str,
) -> Result<Option<String>, AwsFault> {
    Ok(read_claim(state, bucket, key)
        .await?
        .filter(|(claim, _)| {
            claim.owner == owner && claim.layer_version_arn.is_none() && claim.rejected.is_none()
        })
        .map(|(_, etag)| etag))
}

/// The winner's part: adopt an identical existing version or publish, then record the outcome in the claim.
async fn win(
    state: &PublishState,
    object: &ObjectRef,
    layer: &LayerSpec,
    code_sha256: Option<&str>,
    claim_key: &str,
    mut claim: Claim,
    etag: &str,
) -> Result<Outcome, RecordError> {
    let published = match code_sha256 {
        Some(sha) => existing_version(state, &layer.name, sha).await,
        None => Ok(None),
    };
    let result = match published {
        Ok(Some(arn)) => {
            info!(
                layer = layer.name,
                layer_version_arn = arn,
                "an identical layer version exists; adopted"
            );
            Ok(Outcome::Duplicate {
                layer_version_arn: arn,
            })
        }
        Ok(None) => publish(state, object, layer, code_sha256).await,
        Err(fault) => Err(RecordError::from(fault)),
    };

    match &result {
        Ok(outcome) => claim.layer_version_arn = outcome.layer_version_arn().map(str::to_owned),
        Err(RecordError::Rejected(r)) => {
            claim.rejected = Some(RecordedRejection {
                code: r.code(),
                reason: r.to_string(),
            })
        }
        // Release: a retry (this event's or a concurrent delivery's) may take over at once.
        Err(RecordError::Aws(_)) => claim.claimed_at = 0,
    }
    match write_claim(
        state,
        &object.bucket,
        claim_key,
        &claim,
        Condition::Matches(etag),
    )
    .await
    {
        Ok(Write::Done) => {}
        Ok(Write::Lost) => warn!(
            claim = claim_key,
            "the claim changed hands while this delivery held it (lease expired?); outcome not recorded"
        ),
        Err(fault) => {
            // The layer version exists; the next delivery adopts it by CodeSha256 or waits out the lease.
            warn!(claim = claim_key, error = %fault, "recording the outcome in the claim failed");
            if result.is_ok() {
                return Err(fault.into());
            }
        }
    }
    result
}

/// The newest layer version (among the last few) whose CodeSha256 is `sha`.
async fn existing_version(
    state: &PublishState,
    layer_name: &str,
    sha: &str,
) -> Result<Option<String>, AwsFault> {
    let list = state
        .lambda
        .list_layer_versions()
        .layer_name(layer_name)
        .max_items(VERSIONS_TO_COMPARE)
        .send()
        .await
        .map_err(|e| AwsFault::from_sdk("ListLayerVersions", &e))?;
    for item in list
        .layer_versions()
        .iter()
        .take(VERSIONS_TO_COMPARE as usize)
    {
        let version = item.version();
        let got = state
            .lambda
            .get_layer_version()
            .layer_name(layer_name)
            .version_number(version)
            .send()
            .await
            .map_err(|e| AwsFault::from_sdk("GetLayerVersion", &e))?;
        if got.content().and_then(|c| c.code_sha256()) == Some(sha)
            && let Some(arn) = got.layer_version_arn()
        {
            return Ok(Some(arn.to_owned()));
        }
    }
    Ok(None)
}

/// PublishLayerVersion with S3 content. Lambda's own validation refusals are rejections.
async fn publish(
    state: &PublishState,
    object: &ObjectRef,
    layer: &LayerSpec,
    code_sha256: Option<&str>,
) -> Result<Outcome, RecordError> {
    let content = aws_sdk_lambda::types::LayerVersionContentInput::builder()
        .s3_bucket(&object.bucket)
        .s3_key(&object.key)
        .set_s3_object_version(object.version_id.clone())
        .build();
    let out = state
        .lambda
        .publish_layer_version()
        .layer_name(&layer.name)
        .description(&layer.description)
        .content(content)
        .set_compatible_runtimes(Some(layer.runtimes.clone()))
        .set_compatible_architectures(Some(layer.architectures.clone()).filter(|a| !a.is_empty()))
        .set_license_info(layer.license.clone())
        .send()
        .await;
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            let fault = AwsFault::from_sdk("PublishLayerVersion", &e);
            let invalid = e.as_service_error().is_some_and(|s| {
                s.is_invalid_parameter_value_exception() || s.is_code_storage_exceeded_exception()
            }) && !fault.is_transient();
            if invalid {
                return Err(Rejection::Lambda(format!("{}: {}", fault.code, fault.message)).into());
            }
            return Err(fault.into());
        }
    };
    let arn = out.layer_version_arn().unwrap_or_default().to_owned();
    if arn.is_empty() {
        return Err(AwsFault {
            operation: "PublishLayerVersion",
            kind: FaultKind::Transient,
            code: "NoArn".to_owned(),
            message: "the response carries no LayerVersionArn".to_owned(),
            http_status: None,
        }
        .into());
    }
    let reported = out.content().and_then(|c| c.code_sha256());
    if let (Some(expected), Some(reported)) = (code_sha256, reported)
        && expected != reported
    {
        warn!(
            layer_version_arn = arn,
            expected, reported, "CodeSha256 differs from the zip's content-sha256 metadata"
        );
    }
    info!(
        bucket = object.bucket,
        key = object.key,
        layer = layer.name,
        layer_version_arn = arn,
        version = out.version(),
        "layer version published"
    );
    Ok(Outcome::Published {
        layer_version_arn: arn,
        version: out.version(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::from_lookup(|k| (k == "ARTIFACT_BUCKET").then(|| "artifacts".to_owned())).unwrap()
    }

    fn record(event_name: &str, bucket: &str, key: &str) -> S3EventRecord {
        let raw = serde_json::json!({
            "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
            "eventTime": "2026-01-01T00:00:00.000Z", "eventName": event_name,
            "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": bucket},
                   "object": {"key": key, "size": 10, "eTag": "abc", "versionId": "v1"}}
        });
        parse_record(&raw).unwrap()
    }

    #[test]
    fn keys_are_form_decoded() {
        assert_eq!(
            form_decode("layers/a+b/c%2Bd%20e.zip").unwrap(),
            "layers/a b/c+d e.zip"
        );
        assert_eq!(
            form_decode("layers/caf%C3%A9.zip").unwrap(),
            "layers/café.zip"
        );
        assert!(form_decode("layers/%FF.zip").is_err());
    }

    #[test]
    fn only_created_zips_under_the_prefix_of_the_bucket_are_targets() {
        let c = config();
        let t = Target::from_record(
            &c,
            &record(
                "ObjectCreated:Put",
                "artifacts",
                "layers/x/python3.12-arm64/a.zip",
            ),
        )
        .ok()
        .unwrap();
        assert_eq!(t.key, "layers/x/python3.12-arm64/a.zip");
        assert_eq!(t.version_id.as_deref(), Some("v1"));
        assert!(
            Target::from_record(
                &c,
                &record(
                    "s3:ObjectCreated:CompleteMultipartUpload",
                    "artifacts",
                    "layers/a.zip"
                )
            )
            .is_ok()
        );
        for (name, bucket, key) in [
            ("ObjectRemoved:Delete", "artifacts", "layers/a.zip"),
            ("ObjectCreated:Put", "other", "layers/a.zip"),
            ("ObjectCreated:Put", "artifacts", "layers/a.txt"),
            ("ObjectCreated:Put", "artifacts", "layersx/a.zip"),
            (
                "ObjectCreated:Put",
                "artifacts",
                ".layerforge/claims/x.json",
            ),
        ] {
            let ignored = Target::from_record(&c, &record(name, bucket, key));
            assert!(ignored.is_err(), "{name} {bucket} {key}");
        }
    }

    #[test]
    fn event_shapes_are_told_apart() {
        let test =
            serde_json::json!({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "b"});
        assert!(matches!(classify_event(&test), EventShape::Test));
        assert!(
            matches!(classify_event(&serde_json::json!({"Records": []})), EventShape::Records(r) if r.is_empty())
        );
        assert!(matches!(
            classify_event(&serde_json::json!({"hello": 1})),
            EventShape::Other(_)
        ));
    }

    #[test]
    fn the_sample_event_parses() {
        let raw: Value = serde_json::from_str(include_str!("../events/s3-put.json")).unwrap();
        let EventShape::Records(records) = classify_event(&raw) else {
            panic!("no records")
        };
        let record = parse_record(&records[0]).unwrap();
        let c = Config::from_lookup(|k| {
            (k == "ARTIFACT_BUCKET").then(|| "layerforge-artifacts".to_owned())
        })
        .unwrap();
        let target = Target::from_record(&c, &record).ok().unwrap();
        assert!(
            ArtifactKey::parse("layers", &target.key).is_some(),
            "{}",
            target.key
        );
    }

    #[test]
    fn layer_spec_defaults_carry_the_fingerprint_and_respect_limits() {
        let metadata = ArtifactMetadata {
            layer_name: "http".into(),
            requirements: "requests==2.32.3".into(),
            license: Some("L".repeat(600)),
            python_version: "3.12".into(),
            compatible_runtimes: vec![crate::request::Runtime::Python312],
            compatible_architectures: vec![],
            fingerprint: Some("0123456789abcdef".into()),
            ..ArtifactMetadata::default()
        };
        let key = ArtifactKey::parse(
            "layers",
            "layers/http/python3.12-x86_64/0123456789abcdef.zip",
        )
        .unwrap();
        let object = ObjectRef {
            bucket: "b".into(),
            key: key.to_string(),
            version_id: None,
            identity: "e".into(),
        };
        let spec = LayerSpec::new(&metadata, Some(&key), &object);
        assert_eq!(
            spec.description,
            "layerforge 0123456789abcdef: requests==2.32.3"
        );
        assert_eq!(spec.license.as_ref().map(|l| l.chars().count()), Some(512));
        assert_eq!(
            spec.architectures,
            vec![aws_sdk_lambda::types::Architecture::X8664]
        );
        assert_eq!(
            spec.runtimes,
            vec![aws_sdk_lambda::types::Runtime::Python312]
        );

        let long = ArtifactMetadata {
            description: Some("é".repeat(300)),
            ..metadata
        };
        assert_eq!(
            LayerSpec::new(&long, None, &object)
                .description
                .chars()
                .count(),
            256
        );
    }

    #[test]
    fn claim_keys_differ_per_version_and_stay_outside_the_prefix() {
        let a = claim_key("b", "layers/x.zip", "v1");
        assert_ne!(a, claim_key("b", "layers/x.zip", "v2"));
        assert!(a.starts_with(".layerforge/claims/") && a.ends_with(".json"));
    }

    #[test]
    fn errors_map_to_stable_diagnostics() {
        let err = PublishError::Transient {
            failed: 1,
            total: 2,
            first: "throttled".into(),
            results: vec![],
        };
        let d = Diagnostic::from(err);
        assert_eq!(d.error_type, "Transient");
        assert!(d.error_message.contains("1 of 2"));
        assert_eq!(
            RecordError::Rejected(Rejection::Zip(ZipProblem::Empty)).error_type(),
            "Rejected"
        );
        assert_eq!(Rejection::Zip(ZipProblem::Empty).code(), "empty-object");
    }

    /// Mocked clients: the SDK versions in Cargo.lock predate `with_test_defaults_v2`, which
    /// `aws_smithy_mocks::mock_client!` calls, so the interceptor is installed by hand (same effect).
    mod mocked {
        use std::sync::Mutex;

        use aws_sdk_lambda::operation::list_layer_versions::ListLayerVersionsOutput;
        use aws_sdk_s3::operation::{
            get_object::GetObjectOutput, head_object::HeadObjectOutput, put_object::PutObjectOutput,
        };
        use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};

        use super::*;

        fn s3(rules: &[&Rule]) -> aws_sdk_s3::Client {
            mock_client!(aws_sdk_s3, RuleMode::MatchAny, rules, |c| c
                .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled()))
        }

        fn lambda(rules: &[&Rule]) -> aws_sdk_lambda::Client {
            mock_client!(aws_sdk_lambda, RuleMode::MatchAny, rules, |c| c
                .retry_config(aws_sdk_lambda::config::retry::RetryConfig::disabled()))
        }

        fn zip() -> Vec<u8> {
            use std::io::Write;
            let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
            w.start_file("python/six.py", zip::write::SimpleFileOptions::default())
                .unwrap();
            w.write_all(b"# six").unwrap();
            w.finish().unwrap().into_inner()
        }

        #[tokio::test]
        async fn throttled_publish_fails_the_invocation_and_releases_the_claim() {
            let zip = Arc::new(zip());
            let key = "layers/six/python3.12-arm64/0123456789abcdef.zip";
            let metadata = ArtifactMetadata {
                layer_name: "six".into(),
                requirements: "six==1.16.0".into(),
                python_version: "3.12".into(),
                compatible_runtimes: vec![crate::request::Runtime::Python312],
                compatible_architectures: vec![crate::request::Architecture::Arm64],
                content_sha256: Some("c2l4".into()),
                ..ArtifactMetadata::default()
            }
            .to_s3_metadata();
            // The claim object lives in this cell: PutObject stores it, GetObject of its key returns it.
            let claim: Arc<Mutex<Option<Vec<u8>>>> = Arc::default();

            let head = {
                let len = zip.len() as i64;
                mock!(aws_sdk_s3::Client::head_object).then_output(move || {
                    HeadObjectOutput::builder()
                        .content_length(len)
                        .version_id("v1")
                        .e_tag("\"e1\"")
                        .set_metadata(Some(metadata.clone()))
                        .build()
                })
            };
            let get = {
                let (zip, claim) = (zip.clone(), claim.clone());
                mock!(aws_sdk_s3::Client::get_object).then_compute_output(move |req| {
                    let body = if req.key().is_some_and(|k| k.starts_with(CLAIM_PREFIX)) {
                        claim.lock().unwrap().clone().unwrap_or_default()
                    } else {
                        let range = req.range().unwrap().trim_start_matches("bytes=");
                        let (a, b) = range.split_once('-').unwrap();
                        zip[a.parse::<usize>().unwrap()..=b.parse::<usize>().unwrap()].to_vec()
                    };
                    GetObjectOutput::builder()
                        .e_tag("\"claim-etag\"")
                        .body(ByteStream::from(body))
                        .build()
                })
            };
            let put = {
                let claim = claim.clone();
                mock!(aws_sdk_s3::Client::put_object).then_compute_output(move |req| {
                    *claim.lock().unwrap() = req.body().bytes().map(<[u8]>::to_vec);
                    PutObjectOutput::builder().e_tag("\"claim-etag\"").build()
                })
            };
            let list = mock!(aws_sdk_lambda::Client::list_layer_versions)
                .then_output(|| ListLayerVersionsOutput::builder().build());
            // Lambda's throttling answer on the wire: HTTP 429.
            let throttled = mock!(aws_sdk_lambda::Client::publish_layer_version)
                .sequence()
                .http_status(
                    429,
                    Some(r#"{"Type":"User","message":"Rate exceeded"}"#.to_owned()),
                )
                .times(3)
                .build();

            let state = PublishState::new(
                Arc::new(config()),
                s3(&[&head, &get, &put]),
                lambda(&[&list, &throttled]),
            );
            let mut event: Value =
                serde_json::from_str(include_str!("../events/s3-put.json")).unwrap();
            event["Records"][0]["s3"]["bucket"]["name"] = Value::from("artifacts");
            event["Records"][0]["s3"]["object"]["key"] = Value::from(key);

            let err = handle(&state, event).await.unwrap_err();
            assert_eq!(throttled.num_calls(), 1);
            assert_eq!(err.results()[0].outcome.status(), "failed");
            assert_eq!(err.results()[0].version_id.as_deref(), Some("v1"));
            let diagnostic = Diagnostic::from(err);
            assert_eq!(diagnostic.error_type, "Transient");
            assert!(
                diagnostic.error_message.contains("PublishLayerVersion"),
                "{}",
                diagnostic.error_message
            );

            // The claim was released, not left to block the retry for a whole lease.
            let stored: Claim =
                serde_json::from_slice(&claim.lock().unwrap().clone().unwrap()).unwrap();
            assert_eq!(stored.claimed_at, 0);
            assert_eq!(stored.layer_version_arn, None);
            assert_eq!(stored.key, key);
        }

        #[tokio::test]
        async fn a_test_event_touches_no_aws_api() {
            let state = PublishState::new(Arc::new(config()), s3(&[]), lambda(&[]));
            let event = serde_json::json!({"Service": "Amazon S3", "Event": "s3:TestEvent",
                "Time": "2026-01-01T00:00:00.000Z", "Bucket": "artifacts"});
            let response = handle(&state, event).await.unwrap();
            assert_eq!(response.count("ignored"), 1);
            // Ignored records are answered without any call (the mocks have no rules: any call would fail).
            let other = serde_json::json!({"Records": [{"eventName": "ObjectRemoved:Delete", "eventTime": "2026-01-01T00:00:00Z",
                "s3": {"bucket": {"name": "artifacts"}, "object": {"key": "layers/a.zip"}}}]});
            assert_eq!(handle(&state, other).await.unwrap().count("ignored"), 1);
        }
    }
}
