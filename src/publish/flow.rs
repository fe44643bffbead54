//! The record flow: for each record of an event, filter → HeadObject → metadata → zip check (which computes the
//! zip's SHA-256, its identity) → the exactly-once publication ([`super::claim`]) → tag the zip; rejections tag
//! the zip, faults fail the invocation after the other records. A published or duplicate record then moves the
//! layer's latest pointers ([`super::latest`]).

use std::time::{SystemTime, UNIX_EPOCH};

use tracing::{info, warn};

use super::{
    claim,
    event::{EventShape, Target, classify_event, ignored_result, parse_record},
    latest,
    outcome::{Outcome, PublishError, PublishResponse, RecordError, RecordResult, Rejection},
    s3::{Head, S3Range, head_object, merge_tags},
    state::PublishState,
    types::{LayerSpec, ObjectRef},
};
use crate::{
    artifact::{ArtifactKey, ArtifactMetadata, LAYER_VERSION_ARN_TAG, REASON_TAG, STATUS_TAG},
    zipcheck::{self, InspectError},
    zipstream,
};

/// The handler without a known deadline (tests, local runs): claims get [`super::Guard::lease`].
pub async fn handle(
    state: &PublishState,
    event: serde_json::Value,
) -> Result<PublishResponse, PublishError> {
    handle_until(state, event, None).await
}

/// The handler: every record is handled; AWS faults fail the invocation at the end. `deadline` is the
/// invocation's (lambda_runtime's `Context::deadline()`): claims taken by this delivery last until then (plus
/// the clock margin), and waiting for another delivery stops before it.
pub async fn handle_until(
    state: &PublishState,
    event: serde_json::Value,
    deadline: Option<SystemTime>,
) -> Result<PublishResponse, PublishError> {
    let deadline_ms = deadline.map(|d| {
        d.duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    });
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
        let (version_id, result) = process(state, &target, deadline_ms).await;
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

/// One record, start to finish. Returns the object version handled (once known) and the outcome.
async fn process(
    state: &PublishState,
    target: &Target,
    deadline_ms: Option<u64>,
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
    };

    let result = match check_and_publish(state, &object, &head, deadline_ms).await {
        Err(RecordError::Rejected(rejection)) => reject(state, &object, &rejection).await,
        other => other,
    };
    (version_id, result)
}

async fn check_and_publish(
    state: &PublishState,
    object: &ObjectRef,
    head: &Head,
    deadline_ms: Option<u64>,
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
    // The same rule as submit-build's and IAM's: a zip that got here some other way (the original tool, a
    // hand upload) is not published under a name outside the deployment's prefix.
    let prefix = &state.config.layer_name_prefix;
    if !prefix.admits(&metadata.layer_name) {
        return Err(Rejection::OutsidePrefix {
            name: metadata.layer_name.clone(),
            prefix: prefix.to_string(),
            admitted: prefix.describe(),
        }
        .into());
    }
    let streamed = check_zip(state, object, head).await?;
    let code_sha256 = identity(head, &metadata, streamed.code_sha256)?;
    let layer = LayerSpec::new(&metadata, parsed_key.as_ref(), object);
    let outcome = claim::publish_once(state, object, &layer, &code_sha256, deadline_ms).await?;
    if let Some(arn) = outcome.layer_version_arn() {
        merge_tags(
            state,
            object,
            &[(LAYER_VERSION_ARN_TAG, arn.to_owned())],
            &[STATUS_TAG, REASON_TAG],
        )
        .await?;
        // A redelivery (`duplicate`) grants and updates the pointer too: it is how a fault here gets repaired.
        if let Some(share) =
            super::share::of_build(state, &object.bucket, parsed_key.as_ref()).await?
        {
            super::share::grant(state, &layer.name, arn, &share).await?;
        }
        latest::update(state, &object.bucket, &layer, arn).await?;
    }
    Ok(outcome)
}

/// The zip check, in one place: every check of the artifact's bytes runs here, before anything is claimed or
/// published. A problem of the zip is a rejection; a failed read is a fault. Returns what the streamed read saw,
/// the SHA-256 of the bytes included.
async fn check_zip(
    state: &PublishState,
    object: &ObjectRef,
    head: &Head,
) -> Result<zipstream::StreamSummary, RecordError> {
    let reader = S3Range {
        s3: &state.s3,
        bucket: &object.bucket,
        key: &object.key,
        version_id: object.version_id.as_deref(),
        len: head.len,
    };
    let summary = match zipcheck::inspect(&reader, &state.limits).await {
        Ok(s) => s,
        Err(InspectError::Invalid(problem)) => return Err(Rejection::Zip(problem).into()),
        Err(InspectError::Read(fault)) => return Err(fault.into()),
    };
    // Stage two: one streamed GET verifies what any extractor would see (local headers, tiling, CRC-32 and
    // real sizes) against the directory stage one read.
    let version = object.version_id.as_deref();
    let streamed = match zipstream::verify_s3_object(
        &state.s3,
        &object.bucket,
        &object.key,
        version,
        &summary.directory,
    )
    .await
    {
        Ok(streamed) => streamed,
        Err(InspectError::Invalid(problem)) => return Err(Rejection::Zip(problem).into()),
        Err(InspectError::Read(fault)) => return Err(fault.into()),
    };
    info!(
        bucket = object.bucket,
        key = object.key,
        code_sha256 = streamed.code_sha256,
        streamed_bytes = streamed.bytes_read,
        entries = summary.entries,
        unzipped_bytes = summary.uncompressed_bytes,
        object_bytes = head.len,
        bytes_read = summary.bytes_read,
        reads = summary.reads,
        zip64 = summary.zip64,
        "zip checked"
    );
    Ok(streamed)
}

/// The zip's identity: `computed`, the SHA-256 of the bytes the streamed check read (Lambda's CodeSha256 form), by
/// which the claim is taken and an already published version adopted. What the upload says about itself is only
/// compared with it: S3's full-object checksum or the `content-sha256` metadata naming other bytes is a forgery
/// (or a corruption) and a rejection, so no upload can take another content's identity. Metadata without
/// `content-sha256` (the original tool's zips, presigned uploads) is fine.
fn identity(
    head: &Head,
    metadata: &ArtifactMetadata,
    computed: String,
) -> Result<String, Rejection> {
    // A multipart upload's composite checksum ("<base64>-<parts>") is not the object's SHA-256.
    let checksum = head.checksum_sha256.as_ref().filter(|c| !c.contains('-'));
    let content_sha256 = metadata.content_sha256.as_ref().filter(|c| !c.is_empty());
    for (claimed_by, claimed) in [
        ("S3 checksum (x-amz-checksum-sha256)", checksum),
        ("content-sha256 metadata", content_sha256),
    ] {
        if let Some(claimed) = claimed.filter(|c| **c != computed) {
            return Err(Rejection::ContentMismatch {
                claimed_by,
                claimed: claimed.clone(),
                computed,
            });
        }
    }
    Ok(computed)
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
