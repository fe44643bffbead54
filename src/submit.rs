//! submit-build: a build request becomes an AWS Batch Fargate job (DESIGN sections 2 and 3).
//!
//! [`plan_job`] is pure: request + config -> the exact SubmitJob input. [`handle`] wraps it with the two AWS
//! calls: the cache check (HeadObject on the artifact key) and SubmitJob. Nothing reaches Batch for an
//! invalid or cached request.

use std::{collections::HashMap, sync::Arc};

use aws_sdk_batch::types::{ContainerOverrides, ResourceRequirement, ResourceType};
use lambda_runtime::Diagnostic;
use serde::Serialize;
use serde_json::Value;
use tracing::{info, warn};

use crate::{
    artifact::{ArtifactKey, Fingerprint},
    aws::{AwsFault, error_chain},
    config::Config,
    request::{
        BuildRequest, InvalidRequest, MAX_REQUIREMENTS_OBJECT_BYTES, RequestDraft, Requirements,
        RequirementsInput,
    },
};

/// The tag publish-layer puts on a published zip; read back for the `cached` response.
pub const LAYER_VERSION_ARN_TAG: &str = "layer-version-arn";

/// What submit-build needs, built once per cold start and cheap to clone.
#[derive(Clone, Debug)]
pub struct SubmitState {
    pub config: Arc<Config>,
    pub s3: aws_sdk_s3::Client,
    pub batch: aws_sdk_batch::Client,
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

impl SubmitError {
    /// The stable `errorType` callers see.
    pub fn error_type(&self) -> &'static str {
        match self {
            SubmitError::InvalidRequest(_) => "InvalidRequest",
            SubmitError::Aws(f) if f.is_transient() => "Transient",
            SubmitError::Aws(_) => "AwsError",
        }
    }
}

impl From<SubmitError> for Diagnostic {
    fn from(err: SubmitError) -> Self {
        Diagnostic {
            error_type: err.error_type().to_owned(),
            error_message: err.to_string(),
        }
    }
}

/// `submitted` or `cached`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Submitted,
    Cached,
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
}

/// The exact SubmitJob input for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct JobPlan {
    pub job_name: String,
    pub job_queue: String,
    pub job_definition: String,
    /// The layer-builder argv after the program name (the image's ENTRYPOINT is the binary).
    pub command: Vec<String>,
    pub resources: Vec<(ResourceType, String)>,
    pub tags: HashMap<String, String>,
    pub fingerprint: Fingerprint,
    pub key: ArtifactKey,
}

/// Batch's limit on job names.
const MAX_JOB_NAME: usize = 128;

/// Builds the SubmitJob input (DESIGN section 3). The request was validated against this config, so its
/// architecture has a build target; a config without one is reported as an invalid request all the same.
pub fn plan_job(request: &BuildRequest, config: &Config) -> Result<JobPlan, InvalidRequest> {
    let target = config
        .build_target(request.runtime, request.architecture)
        .map_err(|missing| {
            let value = if missing.field == "runtime" {
                request.runtime.as_str()
            } else {
                request.architecture.as_str()
            };
            InvalidRequest::new(missing.field, missing.rule, value)
        })?;
    let fingerprint =
        Fingerprint::compute(&request.requirements, request.runtime, request.architecture);
    let key = ArtifactKey::new(
        &config.artifact_prefix,
        &request.layer_name,
        request.runtime,
        request.architecture,
        &fingerprint,
    );

    let mut job_name = format!(
        "layer-{}-{}-{}",
        request.layer_name,
        request.runtime.compact(),
        request.architecture
    );
    job_name.truncate(MAX_JOB_NAME);

    // `--flag=value`, one element each: a value that begins with `-` (a layer name `-x`, a description
    // `- beta`, a requirements text starting with a comment line `--hash`…) can't be read as an option.
    let mut command = vec![
        format!("--name={}", request.layer_name),
        format!("--requirements={}", request.requirements.to_text()),
        format!("--runtime={}", request.runtime),
        format!("--architecture={}", request.architecture),
        format!("--bucket={}", config.artifact_bucket),
        format!("--key={key}"),
    ];
    // Batch refuses empty command elements: optional flags appear only with a value.
    for (flag, value) in [
        ("--license", &request.license),
        ("--description", &request.description),
    ] {
        if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
            command.push(format!("{flag}={v}"));
        }
    }

    let mut resources = Vec::new();
    if let Some(vcpu) = request.resources.vcpu {
        resources.push((ResourceType::Vcpu, format_vcpu(vcpu)));
    }
    if let Some(memory) = request.resources.memory_mib {
        resources.push((ResourceType::Memory, memory.to_string()));
    }

    let tags = HashMap::from([
        (
            "layerforge:layer-name".to_owned(),
            request.layer_name.to_string(),
        ),
        (
            "layerforge:fingerprint".to_owned(),
            fingerprint.short().to_owned(),
        ),
        ("layerforge:runtime".to_owned(), request.runtime.to_string()),
        (
            "layerforge:architecture".to_owned(),
            request.architecture.to_string(),
        ),
    ]);

    Ok(JobPlan {
        job_name,
        job_queue: target.job_queue.clone(),
        job_definition: target.job_definition.clone(),
        command,
        resources,
        tags,
        fingerprint,
        key,
    })
}

/// Fargate takes vCPU as a decimal string: `0.25`, `1`, `2`.
fn format_vcpu(vcpu: f64) -> String {
    let text = format!("{vcpu:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// The handler: validate, resolve requirements, check the cache, submit.
pub async fn handle(state: &SubmitState, event: Value) -> Result<SubmitResponse, SubmitError> {
    let draft = RequestDraft::parse(&event, &state.config)?;
    let request = match draft.requirements.clone() {
        RequirementsInput::Inline(requirements) => draft.into_request(requirements, None),
        RequirementsInput::S3(uri) => {
            let text = read_requirements(state, &uri).await?;
            let requirements = Requirements::parse(&text)?;
            draft.into_request(requirements, Some(uri))
        }
    };
    let plan = plan_job(&request, &state.config)?;
    let artifact = plan.key.s3_uri(&state.config.artifact_bucket);
    let layer_name = request.layer_name.as_str();
    let fingerprint = plan.fingerprint.short();

    if request.requirements.all_pinned()
        && !request.force
        && let Some(layer_version_arn) = cached_artifact(state, &plan.key.to_string()).await?
    {
        info!(
            layer_name,
            fingerprint, artifact, "artifact exists; no build submitted"
        );
        return Ok(SubmitResponse {
            status: Status::Cached,
            job_id: None,
            job_name: None,
            job_queue: None,
            fingerprint: fingerprint.to_owned(),
            artifact,
            layer_version_arn,
        });
    }

    let job_id = submit_job(state, &plan).await?;
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
        status: Status::Submitted,
        job_id: Some(job_id),
        job_name: Some(plan.job_name),
        job_queue: Some(plan.job_queue),
        fingerprint: fingerprint.to_owned(),
        artifact,
        layer_version_arn: None,
    })
}

/// Sends the planned SubmitJob; returns the job id.
pub async fn submit_job(state: &SubmitState, plan: &JobPlan) -> Result<String, AwsFault> {
    let mut overrides = ContainerOverrides::builder().set_command(Some(plan.command.clone()));
    for (kind, value) in &plan.resources {
        overrides = overrides.resource_requirements(
            ResourceRequirement::builder()
                .r#type(kind.clone())
                .value(value)
                .build(),
        );
    }
    let output = state
        .batch
        .submit_job()
        .job_name(&plan.job_name)
        .job_queue(&plan.job_queue)
        .job_definition(&plan.job_definition)
        .container_overrides(overrides.build())
        .set_tags(Some(plan.tags.clone()))
        .propagate_tags(true)
        .send()
        .await
        .map_err(|e| {
            let fault = AwsFault::from_sdk("SubmitJob", &e);
            warn!(
                job_name = plan.job_name,
                job_queue = plan.job_queue,
                error = error_chain(&e),
                transient = fault.is_transient(),
                "SubmitJob failed"
            );
            fault
        })?;
    Ok(output.job_id().unwrap_or_default().to_owned())
}

/// `Some(arn-or-none)` when the artifact exists; `None` when it does not.
async fn cached_artifact(
    state: &SubmitState,
    key: &str,
) -> Result<Option<Option<String>>, AwsFault> {
    let bucket = &state.config.artifact_bucket;
    match state.s3.head_object().bucket(bucket).key(key).send().await {
        Ok(_) => {}
        Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => return Ok(None),
        Err(e) => {
            let fault = AwsFault::from_sdk("HeadObject", &e);
            warn!(
                bucket,
                key,
                error = error_chain(&e),
                transient = fault.is_transient(),
                "cache check failed"
            );
            return Err(fault);
        }
    }
    let tags = state
        .s3
        .get_object_tagging()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| {
            let fault = AwsFault::from_sdk("GetObjectTagging", &e);
            warn!(
                bucket,
                key,
                error = error_chain(&e),
                "reading the artifact's tags failed"
            );
            fault
        })?;
    Ok(Some(
        tags.tag_set()
            .iter()
            .find(|t| t.key() == LAYER_VERSION_ARN_TAG)
            .map(|t| t.value().to_owned()),
    ))
}

/// Reads a requirements file named by `requirements_s3_uri`; a missing object is the caller's error.
async fn read_requirements(
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
    use aws_sdk_batch::operation::submit_job::{SubmitJobError, SubmitJobOutput};
    use aws_sdk_s3::operation::head_object::HeadObjectError;
    use aws_smithy_mocks::{RuleMode, mock, mock_client};
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

    fn request(event: Value) -> BuildRequest {
        let draft = RequestDraft::parse(&event, &config()).unwrap();
        let RequirementsInput::Inline(reqs) = draft.requirements.clone() else {
            panic!("inline")
        };
        draft.into_request(reqs, None)
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

        let no_resources = plan_job(
            &request(json!({"layer_name": "a", "requirements": "six"})),
            &config(),
        )
        .unwrap();
        assert!(
            no_resources.resources.is_empty(),
            "resourceRequirements only when asked for"
        );
        assert_eq!(format_vcpu(2.0), "2");
        assert_eq!(format_vcpu(0.25), "0.25");
    }

    #[tokio::test]
    async fn throttled_submit_job_is_retried_then_succeeds() {
        let head = mock!(aws_sdk_s3::Client::head_object).then_error(|| {
            HeadObjectError::NotFound(aws_sdk_s3::types::error::NotFound::builder().build())
        });
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
            s3: mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&head]),
            batch: mock_client!(aws_sdk_batch, RuleMode::Sequential, [&submit], |c| c
                .retry_config(retries())),
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
        assert_eq!(head.num_calls(), 1, "pinned: the cache was checked first");
    }

    #[tokio::test]
    async fn persistent_throttling_fails_the_invocation_as_transient() {
        let submit = mock!(aws_sdk_batch::Client::submit_job)
            .sequence()
            .error(throttled)
            .repeatedly()
            .build();
        let state = SubmitState {
            config: config(),
            s3: mock_client!(aws_sdk_s3, []),
            batch: mock_client!(aws_sdk_batch, RuleMode::Sequential, [&submit], |c| c
                .retry_config(retries())),
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
        let diagnostic = Diagnostic::from(err);
        assert_eq!(diagnostic.error_type, "Transient");
        assert!(diagnostic.error_message.contains("SubmitJob"));
    }

    #[tokio::test]
    async fn s3_server_error_on_the_cache_check_submits_nothing() {
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
            s3: mock_client!(aws_sdk_s3, RuleMode::Sequential, [&head], |c| c
                .retry_config(retries())),
            batch: mock_client!(aws_sdk_batch, RuleMode::MatchAny, [&submit]),
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
        let state = SubmitState {
            config: config(),
            s3: mock_client!(aws_sdk_s3, []),
            batch: mock_client!(aws_sdk_batch, RuleMode::MatchAny, [&submit]),
        };
        let err = handle(&state, json!({"layer_name": "a", "requirements": "six"}))
            .await
            .unwrap_err();
        assert_eq!(err.error_type(), "AwsError");
    }
}
