//! submit-build: a build request becomes an AWS Batch Fargate job (DESIGN sections 2 and 3).
//!
//! [`plan_job`] is pure: request + config -> the exact SubmitJob input. [`handle`] wraps it with the AWS calls:
//! what became of the last build of the same fingerprint (its build record, failure report, artifact and job,
//! read as build-status reads them: [`status::derive`]), a conditional write of the new build record (the
//! claim), SubmitJob, and the record again with the job id. Nothing reaches Batch for an invalid request, a
//! cached or rejected pinned one, or one whose identical twin is in flight (`building`); `force` always
//! submits. A request that would be answered `cached` or `building` with a build larger than its budget
//! (`max_unzipped_mb`, against the size in the builder's success report) is refused instead ([`check_budget`]).
//!
//! The job gets no AWS credential: just before SubmitJob, [`sign_grants`] presigns the PUT of its artifact
//! (with the metadata of DESIGN section 5 signed in) and of its failure report, and the two grants go into
//! `containerOverrides.environment` ([`crate::grant`]).

use std::{collections::HashMap, sync::Arc};

use serde::Serialize;
use serde_json::Value;
use tracing::{info, warn};

use crate::{
    aws::{AwsFault, error_chain},
    config::Config,
    fast,
    function_error::HandlerError,
    grant::{self, Grants},
    observe::{self as status, State, check_budget},
    records::{self, BuildRecord, Condition, WriteError},
    request::{
        BuildRequest, InvalidRequest, MAX_REQUIREMENTS_OBJECT_BYTES, RequestDraft, Requirements,
        RequirementsInput,
    },
};

pub use crate::{
    artifact::LAYER_VERSION_ARN_TAG,
    plan::{JobPlan, artifact_metadata, plan_job},
};

/// What submit-build needs, built once per cold start and cheap to clone.
#[derive(Clone, Debug)]
pub struct SubmitState {
    pub config: Arc<Config>,
    pub s3: aws_sdk_s3::Client,
    pub batch: aws_sdk_batch::Client,
    /// Checks that a cached build's layer version still exists (one GetLayerVersion): a deleted one is built and
    /// published again rather than answered `cached` with an ARN no function can attach (issue 24 item 4).
    /// `None` skips the check (tests that never publish).
    pub lambda: Option<aws_sdk_lambda::Client>,
    /// Invokes the fast builder (DESIGN section 12); `None`: every build goes to Batch.
    pub invoke: Option<aws_sdk_lambda::Client>,
}

/// Why a submission failed.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The request breaks a rule; nothing was submitted.
    #[error(transparent)]
    InvalidRequest(#[from] InvalidRequest),
    /// An AWS call failed; `fault.kind` says whether a retry can help.
    #[error(transparent)]
    Aws(#[from] AwsFault),
}

impl HandlerError for SubmitError {
    fn error_type(&self) -> &'static str {
        match self {
            SubmitError::InvalidRequest(_) => "InvalidRequest",
            SubmitError::Aws(f) => f.error_type(),
        }
    }
}

/// `submitted`, `building`, `cached` or `rejected` (DESIGN section 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// A new job.
    Submitted,
    /// An identical request's job is queued or running; nothing was submitted.
    Building,
    /// The artifact exists (published or about to be); nothing was submitted.
    Cached,
    /// publish-layer rejected this fingerprint's artifact; nothing was submitted.
    Rejected,
}

/// The response of DESIGN section 2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubmitResponse {
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_queue: Option<String>,
    pub fingerprint: String,
    pub artifact: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer_version_arn: Option<String>,
    /// Why the artifact was rejected (`rejected`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Which path builds it (`function` or `batch`, DESIGN section 12), for `submitted` and `building`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub builder: Option<String>,
    /// Why that path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub builder_reason: Option<String>,
    /// Why the fast builder handed the build to Batch, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handed_over: Option<String>,
}

/// The handler: validate, resolve requirements, check the cache, submit.
pub async fn handle(state: &SubmitState, event: Value) -> Result<SubmitResponse, SubmitError> {
    // The fast builder's on-failure destination: a build it could not finish goes to Batch.
    if let Some((payload, reason)) = fast::from_destination(&event) {
        return hand_over(state, payload, &reason).await;
    }
    let draft = RequestDraft::parse(&event, &state.config)?;
    let request = match draft.requirements.clone() {
        RequirementsInput::Inline(requirements) => draft.into_request(requirements, None),
        RequirementsInput::S3(uri) => {
            let text = read_requirements(state, &uri).await?;
            let requirements = Requirements::parse(&text)?;
            draft.into_request(requirements, Some(uri))
        }
    };
    submit_request(state, request).await
}

/// One validated request (a single-target request, or one pair of a matrix): the cache check, the claim, and the
/// fast build's invoke or the Batch job.
pub async fn submit_request(
    state: &SubmitState,
    request: BuildRequest,
) -> Result<SubmitResponse, SubmitError> {
    let plan = plan_job(&request, &state.config)?;
    let mut route = fast::route(&request, &state.config)?;
    let artifact = plan.key.s3_uri(&state.config.artifact_bucket);
    let layer_name = request.layer_name.as_str();
    let fingerprint = plan.fingerprint.short();
    let bucket = state.config.artifact_bucket.as_str();
    let response = |status: Status| SubmitResponse {
        status,
        job_id: None,
        job_name: None,
        job_queue: None,
        fingerprint: fingerprint.to_owned(),
        artifact: artifact.clone(),
        layer_version_arn: None,
        reason: None,
        builder: None,
        builder_reason: None,
        handed_over: None,
    };

    let stored = records::read_record(&state.s3, bucket, &plan.key).await?;
    // Whether no artifact is there yet: then its grant may only create it (If-None-Match), never replace it.
    let mut artifact_absent = false;
    if !request.force {
        // What became of the last build of this fingerprint (and whether its artifact exists).
        let record = stored.as_ref().and_then(|s| s.value.clone());
        let job_id = record.as_ref().and_then(|r| r.job_id.clone());
        let job = match &job_id {
            Some(id) => status::describe_job(&state.batch, id).await?,
            None => None,
        };
        let observed = status::observe(&state.s3, bucket, &plan.key, record, job_id, job).await?;
        artifact_absent = observed.artifact.is_none();
        let pinned = request.requirements.all_pinned();
        match status::derive(&observed) {
            Some(v) if v.state.in_flight() => {
                check_budget(&request, &observed, &artifact)?;
                info!(
                    layer_name,
                    fingerprint,
                    artifact,
                    job_id = observed.job_id.as_deref().unwrap_or(""),
                    "an identical build is in flight; nothing submitted"
                );
                return Ok(building(
                    response(Status::Building),
                    observed.record.as_ref(),
                    observed.job.as_ref(),
                ));
            }
            Some(v)
                if pinned
                    && matches!(v.state, State::Built | State::Published)
                    && !crate::publish::versions::deleted(
                        state.lambda.as_ref(),
                        layer_name,
                        v.layer_version_arn.as_deref(),
                    )
                    .await =>
            {
                check_budget(&request, &observed, &artifact)?;
                info!(
                    layer_name,
                    fingerprint, artifact, "artifact exists; no build submitted"
                );
                return Ok(SubmitResponse {
                    layer_version_arn: v.layer_version_arn,
                    ..response(Status::Cached)
                });
            }
            Some(v) if pinned && v.state == State::Rejected => {
                info!(
                    layer_name,
                    fingerprint, artifact, "artifact was rejected; no build submitted"
                );
                return Ok(SubmitResponse {
                    reason: v.reason,
                    ..response(Status::Rejected)
                });
            }
            _ => {}
        }
    }

    // Claim the build record first: of two identical requests at the same moment, one submits.
    let record_key = records::record_key(&plan.key);
    let mut record = BuildRecord::claim(&request, &plan.fingerprint, &plan.key);
    let fast = match (&route, &state.config.fast_builder, &state.invoke) {
        (fast::Route::Function { .. }, Some(fast), Some(invoke)) => {
            record.fast_deadline = Some(record.submitted_at + fast.deadline.as_millis() as i64);
            Some((fast.function.as_str(), invoke))
        }
        (fast::Route::Function { .. }, ..) => {
            route = fast::Route::Batch {
                reason: "submit-build has no client to invoke the fast builder".to_owned(),
            };
            None
        }
        _ => None,
    };
    record.builder = Some(route.builder().to_owned());
    record.builder_reason = Some(route.reason().to_owned());
    let condition = match &stored {
        Some(s) => Condition::Matches(&s.etag),
        None => Condition::Absent,
    };
    let etag =
        match records::write_json(&state.s3, bucket, &record_key, &record, Some(condition)).await {
            Ok(etag) => etag,
            Err(WriteError::Conflict) if !request.force => {
                info!(
                    layer_name,
                    fingerprint, "another submission of this build came first"
                );
                let (record, job) = competitor(state, &plan.key).await?;
                return Ok(building(
                    response(Status::Building),
                    record.as_ref(),
                    job.as_ref(),
                ));
            }
            // `force` always submits: the record is overwritten.
            Err(WriteError::Conflict) => {
                records::write_json(&state.s3, bucket, &record_key, &record, None)
                    .await
                    .map_err(write_fault)?
            }
            Err(WriteError::Aws(fault)) => return Err(fault.into()),
        };

    let now = std::time::SystemTime::now();
    let grants = sign_grants(state, &request, &plan, artifact_absent, now).await;
    if let (Some((function, invoke)), Ok(grants)) = (fast, &grants) {
        let payload = fast::FastBuild::new(
            &request,
            fast::JobSpec::from(&plan),
            grants.environment(),
            bucket,
            &plan.key.to_string(),
        );
        match fast::invoke(invoke, function, &payload).await {
            Ok(()) => {
                info!(
                    layer_name,
                    fingerprint,
                    function,
                    artifact,
                    reason = route.reason(),
                    "fast build invoked"
                );
                return Ok(SubmitResponse {
                    builder: record.builder.clone(),
                    builder_reason: record.builder_reason.clone(),
                    ..response(Status::Submitted)
                });
            }
            Err(fault) => {
                // The job runs instead, with the same grants; the record says why.
                warn!(layer_name, fingerprint, error = %fault, "invoking the fast builder failed; submitting to Batch");
                let why = format!("the fast builder could not be invoked: {fault}");
                record.builder = Some(records::BATCH_BUILDER.to_owned());
                record.handed_over = Some(why.clone());
                record.fast_deadline = None;
                route = fast::Route::Batch { reason: why };
            }
        }
    }
    let submitted = match grants {
        Ok(grants) => submit_job(state, &plan, &grants).await,
        Err(fault) => Err(fault),
    };
    let job_id = match submitted {
        Ok(id) => id,
        Err(fault) => {
            // Release the claim so that a retry submits at once.
            record.submit_error = Some(fault.to_string());
            update_record(
                state,
                bucket,
                &record_key,
                &mut record,
                &etag,
                "the failed submission",
            )
            .await;
            return Err(fault.into());
        }
    };
    record.job_id = Some(job_id.clone());
    record.job_name = Some(plan.job_name.clone());
    record.job_queue = Some(plan.job_queue.clone());
    // The job runs either way; a record that misses its job id reads `failed` after CLAIM_GRACE_MS, and the
    // next identical request then submits again.
    update_record(state, bucket, &record_key, &mut record, &etag, "the job id").await;
    info!(
        layer_name,
        fingerprint,
        job_id,
        job_name = plan.job_name,
        job_queue = plan.job_queue,
        artifact,
        "build submitted"
    );
    Ok(SubmitResponse {
        job_id: Some(job_id),
        job_name: Some(plan.job_name),
        job_queue: Some(plan.job_queue),
        builder: Some(route.builder().to_owned()),
        builder_reason: Some(route.reason().to_owned()),
        handed_over: record.handed_over.clone(),
        ..response(Status::Submitted)
    })
}

/// A fast build that failed on every attempt (its on-failure destination record): unless its artifact exists
/// or it was handed over already, the same build goes to Batch with fresh grants, and the record says why.
async fn hand_over(
    state: &SubmitState,
    payload: fast::FastBuild,
    reason: &str,
) -> Result<SubmitResponse, SubmitError> {
    // A matrix's universal build carries its targets beside the request fields (a caller can't set them).
    let mut event = payload.request.clone();
    let universal = crate::matrix::record::take_universal(&mut event)?;
    let draft = RequestDraft::parse(&event, &state.config)?;
    let RequirementsInput::Inline(requirements) = draft.requirements.clone() else {
        return Err(InvalidRequest::new(
            "requestPayload.request.requirements",
            "a fast build's request has its requirements inline",
            "",
        )
        .into());
    };
    let request = crate::request::BuildRequest {
        universal,
        ..draft.into_request(requirements, None)
    };
    crate::matrix::record::refuse_undecided(&state.s3, &state.config, &request).await??;
    let plan = plan_job(&request, &state.config)?;
    let bucket = state.config.artifact_bucket.as_str();
    let artifact = plan.key.s3_uri(bucket);
    let stored = records::read_record(&state.s3, bucket, &plan.key).await?;
    let record = stored.as_ref().and_then(|s| s.value.clone());
    let artifact_view = status::artifact_view(&state.s3, bucket, &plan.key.to_string()).await?;
    let answer = SubmitResponse {
        status: Status::Building,
        job_id: record.as_ref().and_then(|r| r.job_id.clone()),
        job_name: record.as_ref().and_then(|r| r.job_name.clone()),
        job_queue: record.as_ref().and_then(|r| r.job_queue.clone()),
        fingerprint: plan.fingerprint.short().to_owned(),
        artifact: artifact.clone(),
        layer_version_arn: None,
        reason: None,
        builder: record.as_ref().and_then(|r| r.builder.clone()),
        builder_reason: record.as_ref().and_then(|r| r.builder_reason.clone()),
        handed_over: record.as_ref().and_then(|r| r.handed_over.clone()),
    };
    if artifact_view.is_some() || answer.job_id.is_some() {
        info!(
            artifact,
            reason,
            "the failed fast build has its artifact or its job already; nothing to hand over"
        );
        return Ok(answer);
    }
    let record_key = records::record_key(&plan.key);
    if stored.is_none() {
        // A record lost (or never written): the hand-over writes one, so that build-status can tell.
        let mut claim = BuildRecord::claim(&request, &plan.fingerprint, &plan.key);
        claim.builder = Some(records::FUNCTION_BUILDER.to_owned());
        if let Err(e) = records::write_json(
            &state.s3,
            bucket,
            &record_key,
            &claim,
            Some(Condition::Absent),
        )
        .await
        {
            warn!(record_key, error = %e, "writing the build record of the hand-over failed");
        }
    }
    let grants = sign_grants(state, &request, &plan, true, std::time::SystemTime::now()).await?;
    let job = fast::JobSpec::from(&plan);
    let job_id = fast::submit(&state.batch, &job, &grants.environment()).await?;
    fast::record_hand_over(&state.s3, bucket, &record_key, &job_id, &job, reason).await;
    info!(
        artifact,
        job_id, reason, "failed fast build handed over to Batch"
    );
    Ok(SubmitResponse {
        status: Status::Submitted,
        job_id: Some(job_id),
        job_name: Some(job.job_name),
        job_queue: Some(job.job_queue),
        builder: Some(records::BATCH_BUILDER.to_owned()),
        handed_over: Some(reason.to_owned()),
        ..answer
    })
}

/// Completes our claimed record (the version `etag`, now). A failed write is logged, never fatal: what happened
/// (a job, or a failed submission) stands either way, and the record's grace period covers a missing update.
async fn update_record(
    state: &SubmitState,
    bucket: &str,
    record_key: &str,
    record: &mut BuildRecord,
    etag: &str,
    what: &str,
) {
    record.updated_at = records::now_millis();
    if let Err(e) = records::write_json(
        &state.s3,
        bucket,
        record_key,
        &*record,
        Some(Condition::Matches(etag)),
    )
    .await
    {
        warn!(record_key, job_id = record.job_id.as_deref().unwrap_or(""), error = %e, "recording {what} failed");
    }
}

/// A `building` answer with the in-flight job.
fn building(
    response: SubmitResponse,
    record: Option<&BuildRecord>,
    job: Option<&status::JobView>,
) -> SubmitResponse {
    SubmitResponse {
        job_id: job
            .map(|j| j.job_id.clone())
            .or_else(|| record.and_then(|r| r.job_id.clone())),
        job_name: job
            .and_then(|j| j.job_name.clone())
            .or_else(|| record.and_then(|r| r.job_name.clone())),
        job_queue: job
            .and_then(|j| j.job_queue.clone())
            .or_else(|| record.and_then(|r| r.job_queue.clone())),
        builder: record.and_then(|r| r.builder.clone()),
        builder_reason: record.and_then(|r| r.builder_reason.clone()),
        handed_over: record.and_then(|r| r.handed_over.clone()),
        ..response
    }
}

/// The record a competing submission wrote, once it names its job (a few short waits: SubmitJob takes
/// well under a second).
async fn competitor(
    state: &SubmitState,
    key: &crate::artifact::ArtifactKey,
) -> Result<(Option<BuildRecord>, Option<status::JobView>), SubmitError> {
    let bucket = state.config.artifact_bucket.as_str();
    let mut record = None;
    for attempt in 0..10 {
        record = records::read_record(&state.s3, bucket, key)
            .await?
            .and_then(|s| s.value);
        if let Some(job_id) = record.as_ref().and_then(|r| r.job_id.clone()) {
            let job = status::describe_job(&state.batch, &job_id).await?;
            return Ok((record, job));
        }
        if attempt < 9 {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
    Ok((record, None))
}

fn write_fault(e: WriteError) -> SubmitError {
    match e {
        WriteError::Aws(fault) => fault.into(),
        WriteError::Conflict => AwsFault {
            operation: "PutObject",
            kind: crate::aws::FaultKind::Transient,
            code: "ConditionalRequestConflict".to_owned(),
            message: "the build record changed during the write".to_owned(),
            http_status: Some(409),
        }
        .into(),
    }
}

/// Presigns the job's two writes with this function's credentials (DESIGN section 16): the artifact key
/// (`application/zip`, the metadata signed in) and its failure report (`application/json`), valid for
/// [`Config::upload_grant`] from `now`. The role needs `s3:PutObject` on both keys: a presigned request acts
/// with the signer's permissions.
///
/// With `artifact_absent` (no artifact at the key when the request was looked at), the artifact's grant carries
/// `If-None-Match: *`: it creates the object once and can't be replayed over it.
pub async fn sign_grants(
    state: &SubmitState,
    request: &BuildRequest,
    plan: &JobPlan,
    artifact_absent: bool,
    now: std::time::SystemTime,
) -> Result<Grants, AwsFault> {
    let bucket = state.config.artifact_bucket.as_str();
    let key = plan.key.to_string();
    let lifetime = state.config.upload_grant;
    let fault = |e: grant::PresignError| {
        warn!(bucket, key = e.key, error = e.reason, "presigning failed");
        AwsFault {
            operation: "PresignPutObject",
            kind: crate::aws::FaultKind::Permanent,
            code: "PresignFailed".to_owned(),
            message: e.to_string(),
            http_status: None,
        }
    };
    let metadata = artifact_metadata(request, plan, now).to_s3_metadata();
    let artifact = grant::presign_put(
        &state.s3,
        grant::Put {
            bucket,
            key: &key,
            content_type: "application/zip",
            metadata,
            only_new: artifact_absent,
        },
        now,
        lifetime,
    )
    .await
    .map_err(fault)?;
    let report = grant::presign_put(
        &state.s3,
        grant::Put {
            bucket,
            key: &records::report_key(&key),
            content_type: "application/json",
            metadata: HashMap::new(),
            only_new: false,
        },
        now,
        lifetime,
    )
    .await
    .map_err(fault)?;
    info!(
        key,
        expires_at = artifact.expires_at,
        lifetime_seconds = lifetime.as_secs(),
        "upload grants signed"
    );
    Ok(Grants { artifact, report })
}

/// Sends the planned SubmitJob, the grants in the container's environment; returns the job id.
pub async fn submit_job(
    state: &SubmitState,
    plan: &JobPlan,
    grants: &Grants,
) -> Result<String, AwsFault> {
    fast::submit(
        &state.batch,
        &fast::JobSpec::from(plan),
        &grants.environment(),
    )
    .await
}

/// Reads a requirements file named by `requirements_s3_uri`; a missing object is the caller's error.
pub async fn read_requirements(
    state: &SubmitState,
    uri: &crate::request::S3Uri,
) -> Result<String, SubmitError> {
    let object = match state
        .s3
        .get_object()
        .bucket(&uri.bucket)
        .key(&uri.key)
        .send()
        .await
    {
        Ok(o) => o,
        Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
            return Err(InvalidRequest::new(
                "requirements_s3_uri",
                "no such object",
                &uri.to_string(),
            )
            .into());
        }
        Err(e) => {
            let fault = AwsFault::from_sdk("GetObject", &e);
            if fault.http_status == Some(404) || fault.code == "NoSuchBucket" {
                return Err(InvalidRequest::new(
                    "requirements_s3_uri",
                    "no such object",
                    &uri.to_string(),
                )
                .into());
            }
            warn!(
                uri = uri.to_string(),
                error = error_chain(&e),
                "reading requirements failed"
            );
            return Err(fault.into());
        }
    };
    if object.content_length().unwrap_or(0) > MAX_REQUIREMENTS_OBJECT_BYTES {
        return Err(InvalidRequest::new(
            "requirements_s3_uri",
            format!("the object is larger than {MAX_REQUIREMENTS_OBJECT_BYTES} bytes"),
            &uri.to_string(),
        )
        .into());
    }
    let bytes = object.body.collect().await.map_err(|e| AwsFault {
        operation: "GetObject",
        kind: crate::aws::FaultKind::Transient,
        code: "BodyReadFailed".to_owned(),
        message: e.to_string(),
        http_status: None,
    })?;
    String::from_utf8(bytes.to_vec()).map_err(|_| {
        InvalidRequest::new(
            "requirements_s3_uri",
            "the object is not UTF-8 text",
            &uri.to_string(),
        )
        .into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::ArtifactMetadata;
    use aws_sdk_batch::operation::submit_job::{SubmitJobError, SubmitJobOutput};
    use aws_sdk_batch::types::ResourceType;
    use aws_sdk_s3::operation::{
        get_object::GetObjectError, head_object::HeadObjectError, put_object::PutObjectOutput,
    };
    use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
    use aws_smithy_runtime_api::http::{Response as HttpResponse, StatusCode};
    use aws_smithy_types::{body::SdkBody, error::ErrorMetadata, retry::RetryConfig};
    use serde_json::json;
    use std::time::Duration;

    fn config() -> Arc<Config> {
        Arc::new(
            Config::from_lookup(|k| match k {
                "ARTIFACT_BUCKET" => Some("artifacts".into()),
                "BUILD_TARGETS" => Some(
                    r#"{"arm64":{"job_queue":"q-arm","job_definition":"d-arm"},"x86_64":{"job_queue":"q-x86","job_definition":"d-x86"}}"#
                        .into(),
                ),
                _ => None,
            })
            .unwrap(),
        )
    }

    fn retries() -> RetryConfig {
        RetryConfig::standard()
            .with_max_attempts(3)
            .with_initial_backoff(Duration::from_millis(1))
            .with_max_backoff(Duration::from_millis(5))
    }

    fn throttled() -> SubmitJobError {
        SubmitJobError::generic(
            ErrorMetadata::builder()
                .code("ThrottlingException")
                .message("Rate exceeded")
                .build(),
        )
    }

    /// S3 with no build record, report or artifact, where record writes succeed: (get, put, head) rules.
    fn empty_bucket() -> (Rule, Rule, Rule) {
        let get = mock!(aws_sdk_s3::Client::get_object)
            .sequence()
            .error(|| {
                GetObjectError::NoSuchKey(aws_sdk_s3::types::error::NoSuchKey::builder().build())
            })
            .repeatedly()
            .build();
        // Build record writes only: the presigned grants go through the same client, but are never sent.
        let put = mock!(aws_sdk_s3::Client::put_object)
            .match_requests(|input| {
                input
                    .key()
                    .is_some_and(|k| k.starts_with(".layerforge/builds/"))
            })
            .sequence()
            .output(|| PutObjectOutput::builder().e_tag("\"etag-1\"").build())
            .repeatedly()
            .build();
        let head = mock!(aws_sdk_s3::Client::head_object)
            .sequence()
            .error(|| {
                HeadObjectError::NotFound(aws_sdk_s3::types::error::NotFound::builder().build())
            })
            .repeatedly()
            .build();
        (get, put, head)
    }

    /// The grants: presigned through the S3 client (the mock sees them), never sent.
    fn presigned() -> Rule {
        mock!(aws_sdk_s3::Client::put_object)
            .match_requests(|input| {
                !input
                    .key()
                    .is_some_and(|k| k.starts_with(".layerforge/builds/"))
            })
            .sequence()
            .output(|| PutObjectOutput::builder().build())
            .repeatedly()
            .build()
    }

    fn request(event: Value) -> BuildRequest {
        let draft = RequestDraft::parse(&event, &config()).unwrap();
        let RequirementsInput::Inline(reqs) = draft.requirements.clone() else {
            panic!("inline")
        };
        draft.into_request(reqs, None)
    }

    /// A success report of 60.5 MiB (numpy 60 MiB, six 0.5 MiB) by `job_id`.
    fn built(job_id: &str) -> records::FailureReport {
        use crate::size::{Distribution, SizeReport};
        const MIB: u64 = crate::request::MIB;
        let size = SizeReport::tally(
            &[
                ("numpy/x.so".to_owned(), 60 * MIB),
                ("six.py".to_owned(), MIB / 2),
            ],
            &[
                Distribution::from_record("numpy-2.1.3.dist-info", "numpy/x.so,,\n"),
                Distribution::from_record("six-1.16.0.dist-info", "six.py,,\n"),
            ],
            crate::request::LAMBDA_UNZIPPED_LIMIT,
        );
        records::FailureReport::success(Some(job_id.to_owned()), "k", size)
    }

    #[test]
    fn a_budget_below_the_existing_builds_size_is_refused_naming_it() {
        let artifact = "s3://artifacts/layers/np/python3.12-arm64/f.zip";
        let observed = |report: Option<records::FailureReport>| status::Observed {
            report,
            job_id: Some("job-1".into()),
            ..status::Observed::default()
        };
        let pinned = |budget: u64| {
            request(
                json!({"layer_name": "np", "requirements": "numpy==2.1.3|six==1.16.0",
                           "max_unzipped_mb": budget}),
            )
        };
        let err = check_budget(&pinned(50), &observed(Some(built("job-0"))), artifact).unwrap_err();
        assert_eq!(err.field, "max_unzipped_mb");
        assert_eq!(err.value, "\"50\"");
        for part in [
            artifact,
            "nothing was submitted",
            "60.5 MiB unzipped",
            "over its budget of 50.0 MiB",
            "numpy 2.1.3: 60.0 MiB",
            "six 1.16.0: 0.5 MiB",
        ] {
            assert!(err.rule.contains(part), "{part}: {err}");
        }
        // At or above the size, or with no size known, it is answered as before.
        assert_eq!(
            check_budget(&pinned(61), &observed(Some(built("job-0"))), artifact),
            Ok(())
        );
        assert_eq!(check_budget(&pinned(50), &observed(None), artifact), Ok(()));
        let mut failed = built("job-1");
        failed.exit_code = 4;
        assert_eq!(
            check_budget(&pinned(50), &observed(Some(failed)), artifact),
            Ok(()),
            "only a success report gives the size"
        );
        // Unpinned requirements may resolve to other bytes: only the build in flight's own report counts.
        let loose =
            request(json!({"layer_name": "np", "requirements": "numpy>=2", "max_unzipped_mb": 50}));
        assert_eq!(
            check_budget(&loose, &observed(Some(built("job-0"))), artifact),
            Ok(())
        );
        assert_eq!(
            check_budget(&loose, &observed(Some(built("job-1"))), artifact)
                .unwrap_err()
                .field,
            "max_unzipped_mb"
        );
    }

    #[test]
    fn plan_is_the_contract_of_design_section_3() {
        let plan = plan_job(
            &request(json!({"layer_name": "http-clients", "requirements": "requests == 2.32.3|httpx == 0.27.2", "vcpu": 0.5, "memory_mib": 2048})),
            &config(),
        )
        .unwrap();
        assert_eq!(plan.job_name, "layer-http-clients-python312-arm64");
        assert_eq!(
            (plan.job_queue.as_str(), plan.job_definition.as_str()),
            ("q-arm", "d-arm")
        );
        assert_eq!(
            plan.command[0..2],
            [
                "--name=http-clients",
                "--requirements=requests == 2.32.3\nhttpx == 0.27.2\n"
            ]
        );
        assert_eq!(plan.command.last().unwrap(), &format!("--key={}", plan.key));
        assert!(
            !plan.command.iter().any(|c| c.starts_with("--license")),
            "no flag without a value"
        );
        assert_eq!(
            plan.resources,
            vec![
                (ResourceType::Vcpu, "0.5".to_owned()),
                (ResourceType::Memory, "2048".to_owned())
            ]
        );
        assert_eq!(
            plan.key.to_string(),
            format!(
                "layers/http-clients/python3.12-arm64/{}.zip",
                plan.fingerprint.short()
            )
        );

        assert!(
            plan.command.contains(&"--installer=uv".to_owned()),
            "uv unless the request names pip: {:?}",
            plan.command
        );
        let pip = plan_job(
            &request(json!({"layer_name": "http-clients", "requirements": "requests == 2.32.3|httpx == 0.27.2", "installer": "pip"})),
            &config(),
        )
        .unwrap();
        assert!(pip.command.contains(&"--installer=pip".to_owned()));
        assert_ne!(
            pip.fingerprint, plan.fingerprint,
            "the installer is part of the fingerprint"
        );
        // The builder reads back exactly what was planned.
        let args = <crate::builder::cli::Args as clap::Parser>::try_parse_from(
            std::iter::once("layer-builder".to_owned()).chain(pip.command.iter().cloned()),
        )
        .unwrap();
        assert_eq!(args.installer, Some(crate::request::Installer::Pip));

        let no_resources = plan_job(
            &request(json!({"layer_name": "a", "requirements": "six"})),
            &config(),
        )
        .unwrap();
        assert!(
            no_resources.resources.is_empty(),
            "resourceRequirements only when asked for"
        );
        assert_eq!(crate::plan::format_vcpu(2.0), "2");
        assert_eq!(crate::plan::format_vcpu(0.25), "0.25");
    }

    #[tokio::test]
    async fn throttled_submit_job_is_retried_then_succeeds() {
        let (get, put, head) = empty_bucket();
        let grants = presigned();
        let submit = mock!(aws_sdk_batch::Client::submit_job)
            .sequence()
            .error(throttled)
            .output(|| {
                SubmitJobOutput::builder()
                    .job_id("job-1")
                    .job_name("n")
                    .job_arn("arn")
                    .build()
            })
            .build();
        let state = SubmitState {
            config: config(),
            s3: mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&get, &put, &head, &grants]),
            batch: mock_client!(aws_sdk_batch, RuleMode::Sequential, [&submit], |c| c
                .retry_config(retries())),
            lambda: None,
            invoke: None,
        };
        let response = handle(
            &state,
            json!({"layer_name": "a", "requirements": "six==1.16.0"}),
        )
        .await
        .unwrap();
        assert_eq!(response.status, Status::Submitted);
        assert_eq!(response.job_id.as_deref(), Some("job-1"));
        assert_eq!(submit.num_calls(), 2, "one throttled attempt, one success");
        assert_eq!(head.num_calls(), 1, "the artifact was checked first");
        assert_eq!(
            put.num_calls(),
            2,
            "the record: claimed before SubmitJob, completed with the job id after"
        );
    }

    #[tokio::test]
    async fn the_job_gets_its_grants_in_the_environment_and_none_in_the_command() {
        use aws_sdk_batch::operation::submit_job::SubmitJobInput;
        use std::sync::{Arc, Mutex};
        let (get, put, head) = empty_bucket();
        let grants = presigned();
        let seen: Arc<Mutex<Option<SubmitJobInput>>> = Arc::default();
        let captured = Arc::clone(&seen);
        let submit = mock!(aws_sdk_batch::Client::submit_job)
            .match_requests(move |input| {
                *captured.lock().unwrap() = Some(input.clone());
                true
            })
            .then_output(|| {
                SubmitJobOutput::builder()
                    .job_id("job-1")
                    .job_name("n")
                    .job_arn("arn")
                    .build()
            });
        let state = SubmitState {
            config: config(),
            s3: mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&get, &put, &head, &grants]),
            batch: mock_client!(aws_sdk_batch, RuleMode::MatchAny, [&submit]),
            lambda: None,
            invoke: None,
        };
        let started = std::time::SystemTime::now();
        let response = handle(
            &state,
            json!({"layer_name": "a", "requirements": "six==1.16.0", "license": "MIT"}),
        )
        .await
        .unwrap();
        assert_eq!(response.status, Status::Submitted);
        let input = seen.lock().unwrap().clone().expect("SubmitJob was called");
        let overrides = input.container_overrides().unwrap();
        let key = response.artifact.strip_prefix("s3://artifacts/").unwrap();

        assert!(
            !overrides
                .command()
                .iter()
                .any(|c| c.contains("X-Amz") || c.contains("GRANT")),
            "no grant in the command (the build user can read /proc/PID/cmdline): {:?}",
            overrides.command()
        );
        assert!(overrides.command().contains(&format!("--key={key}")));
        let env: HashMap<&str, &str> = overrides
            .environment()
            .iter()
            .map(|kv| (kv.name().unwrap(), kv.value().unwrap()))
            .collect();
        assert_eq!(env.len(), 2, "{env:?}");
        let artifact =
            grant::Grant::parse(grant::ARTIFACT_GRANT_ENV, env[grant::ARTIFACT_GRANT_ENV]).unwrap();
        let report =
            grant::Grant::parse(grant::REPORT_GRANT_ENV, env[grant::REPORT_GRANT_ENV]).unwrap();
        assert_eq!(artifact.check_target("A", "artifacts", key), Ok(()));
        assert_eq!(
            report.check_target("R", "artifacts", &records::report_key(key)),
            Ok(())
        );
        assert_eq!(artifact.headers["content-type"], "application/zip");
        assert_eq!(report.headers["content-type"], "application/json");
        assert!(
            !report.headers.keys().any(|k| k.starts_with("x-amz-meta-")),
            "a report carries no artifact metadata"
        );

        // The metadata publish-layer reads, signed in; no digest (publish-layer takes it from the bytes).
        let metadata: HashMap<String, String> = artifact
            .headers
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("x-amz-meta-")?.to_owned(), v.clone())))
            .collect();
        let parsed = ArtifactMetadata::from_s3_metadata(&metadata).unwrap();
        assert_eq!(parsed.layer_name, "a");
        assert_eq!(parsed.requirements, "six==1.16.0");
        assert_eq!(parsed.python_version, "3.12");
        assert_eq!(parsed.license.as_deref(), Some("MIT"));
        assert_eq!(
            parsed.fingerprint.as_deref(),
            Some(response.fingerprint.as_str())
        );
        assert_eq!(parsed.content_sha256, None);
        let signed = artifact.signed_headers();
        for name in artifact.headers.keys() {
            assert!(signed.contains(name), "{name} not signed: {signed:?}");
        }

        let lifetime = config().upload_grant.as_secs();
        let started = started
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(
            (started..=started + 2).contains(&(artifact.expires_at - lifetime)),
            "valid for UPLOAD_GRANT_SECONDS from the submission"
        );
        assert_eq!(artifact.url_expiry(), Some(artifact.expires_at));
    }

    #[tokio::test]
    async fn persistent_throttling_fails_the_invocation_as_transient() {
        let submit = mock!(aws_sdk_batch::Client::submit_job)
            .sequence()
            .error(throttled)
            .repeatedly()
            .build();
        let (get, put, head) = empty_bucket();
        let grants = presigned();
        let state = SubmitState {
            config: config(),
            s3: mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&get, &put, &head, &grants]),
            batch: mock_client!(aws_sdk_batch, RuleMode::Sequential, [&submit], |c| c
                .retry_config(retries())),
            lambda: None,
            invoke: None,
        };
        let err = handle(&state, json!({"layer_name": "a", "requirements": "six>=1"}))
            .await
            .unwrap_err();
        assert_eq!(err.error_type(), "Transient");
        let SubmitError::Aws(fault) = &err else {
            panic!("{err:?}")
        };
        assert_eq!(fault.code, "ThrottlingException");
        assert_eq!(submit.num_calls(), 3);
        assert_eq!(
            put.num_calls(),
            2,
            "the claim, then the record of the failed submission (so a retry submits at once)"
        );
        let diagnostic = crate::function_error::FunctionError::from(err);
        assert_eq!(diagnostic.error_type, "Transient");
        assert!(diagnostic.error_message.contains("SubmitJob"));
    }

    #[tokio::test]
    async fn s3_server_error_on_the_cache_check_submits_nothing() {
        let (get, _, _) = empty_bucket();
        let head = mock!(aws_sdk_s3::Client::head_object)
            .sequence()
            .http_response(|| {
                HttpResponse::new(StatusCode::try_from(503).unwrap(), SdkBody::empty())
            })
            .repeatedly()
            .build();
        let submit = mock!(aws_sdk_batch::Client::submit_job).then_output(|| {
            SubmitJobOutput::builder()
                .job_id("never")
                .job_name("n")
                .job_arn("arn")
                .build()
        });
        let state = SubmitState {
            config: config(),
            s3: mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&get, &head], |c| c
                .retry_config(retries())),
            batch: mock_client!(aws_sdk_batch, RuleMode::MatchAny, [&submit]),
            lambda: None,
            invoke: None,
        };
        let err = handle(
            &state,
            json!({"layer_name": "a", "requirements": "six==1.16.0"}),
        )
        .await
        .unwrap_err();
        assert_eq!(err.error_type(), "Transient", "{err}");
        let SubmitError::Aws(fault) = &err else {
            panic!("{err:?}")
        };
        assert_eq!(fault.http_status, Some(503));
        assert_eq!(fault.operation, "HeadObject");
        assert_eq!(head.num_calls(), 3, "the SDK retried the 5xx");
        assert_eq!(submit.num_calls(), 0, "no job without a cache answer");
    }

    #[tokio::test]
    async fn access_denied_is_not_transient() {
        let submit = mock!(aws_sdk_batch::Client::submit_job).then_error(|| {
            SubmitJobError::ClientException(
                aws_sdk_batch::types::error::ClientException::builder()
                    .message("not authorized")
                    .build(),
            )
        });
        let (get, put, head) = empty_bucket();
        let grants = presigned();
        let state = SubmitState {
            config: config(),
            s3: mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&get, &put, &head, &grants]),
            batch: mock_client!(aws_sdk_batch, RuleMode::MatchAny, [&submit]),
            lambda: None,
            invoke: None,
        };
        let err = handle(&state, json!({"layer_name": "a", "requirements": "six"}))
            .await
            .unwrap_err();
        assert_eq!(err.error_type(), "AwsError");
    }
}
