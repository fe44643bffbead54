//! The fast path (DESIGN section 12): wheel-only builds in a Lambda function, with AWS Batch as the fallback.
//!
//! - [`route`] (pure): which path a request takes. `auto` tries the fast builder unless something only Batch can
//!   do is asked for (pip, slim's import check, a runtime whose bytecode the function can't compile, Batch
//!   resources); `function` and `batch` force a path, and a forced `function` that can't work is an
//!   [`InvalidRequest`] naming `builder`.
//! - [`FastBuild`]: the asynchronous invocation's payload. It carries the Batch job submit-build would have
//!   submitted ([`JobSpec`], with the same upload grants in its environment), so the fast builder builds with
//!   exactly the job's argv and, when it can't, submits that same job itself ([`submit`]) and records the
//!   hand-over ([`record_hand_over`]).
//! - [`from_destination`]: a fast build that crashed or timed out on every attempt comes back to submit-build
//!   as the function's on-failure destination record, with the payload in it; submit-build hands it over.
//! - [`function`]: the fast builder's handler.

pub mod function;
pub mod probe;

use std::collections::BTreeMap;

use aws_sdk_batch::types::{ContainerOverrides, KeyValuePair, ResourceRequirement, ResourceType};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::{info, warn};

use crate::{
    aws::{AwsFault, FaultKind, error_chain},
    config::Config,
    records::{self, BATCH_BUILDER, BuildRecord, Condition, WriteError},
    request::{BuildRequest, BuilderChoice, Installer, InvalidRequest, MIB},
};

/// The payload format; the fast builder refuses another.
pub const PAYLOAD_FORMAT: u32 = 1;

/// Where a request is built, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Function { reason: String },
    Batch { reason: String },
}

impl Route {
    pub fn builder(&self) -> &'static str {
        match self {
            Route::Function { .. } => records::FUNCTION_BUILDER,
            Route::Batch { .. } => BATCH_BUILDER,
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            Route::Function { reason } | Route::Batch { reason } => reason,
        }
    }
}

/// What keeps a request from the fast builder, if anything (the first obstacle found).
fn obstacle(request: &BuildRequest, config: &Config) -> Option<String> {
    let Some(fast) = &config.fast_builder else {
        return Some(
            "this deployment has no fast builder (FAST_BUILDER_FUNCTION is not set)".to_owned(),
        );
    };
    if request.installer != Installer::Uv {
        return Some("installer pip: the fast builder installs with uv only".to_owned());
    }
    if request.options.slim {
        return Some(
            "slim: its import check runs the packages' code, which only a Batch job may do"
                .to_owned(),
        );
    }
    if request.resources.vcpu.is_some() || request.resources.memory_mib.is_some() {
        return Some("vcpu/memory_mib size a Batch job".to_owned());
    }
    if request.options.bytecode && !fast.runtimes.contains(&request.runtime) {
        return Some(format!(
            "bytecode for {}: the fast builder has an interpreter of {} only (FAST_BUILDER_RUNTIMES); \
             \"bytecode\": false would build there",
            request.runtime,
            fast.runtimes
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    None
}

/// The path of `request` (DESIGN section 12); a forced `function` the fast builder can't build is refused.
pub fn route(request: &BuildRequest, config: &Config) -> Result<Route, InvalidRequest> {
    match (request.builder, obstacle(request, config)) {
        (BuilderChoice::Batch, _) => Ok(Route::Batch {
            reason: "asked for (builder: batch)".to_owned(),
        }),
        (BuilderChoice::Function, Some(why)) => Err(InvalidRequest::new(
            "builder",
            format!("the fast builder can't build this request: {why}; use \"auto\" or \"batch\""),
            "function",
        )),
        (BuilderChoice::Function, None) => Ok(Route::Function {
            reason: "asked for (builder: function); a requirement without a wheel still goes to Batch"
                .to_owned(),
        }),
        (BuilderChoice::Auto, Some(why)) => Ok(Route::Batch { reason: why }),
        (BuilderChoice::Auto, None) => Ok(Route::Function {
            reason: "auto: wheels only in a Lambda function first; a requirement without a wheel goes to Batch"
                .to_owned(),
        }),
    }
}

/// The Batch job of a build, as data: what submit-build plans, and what the fast builder submits when it hands
/// the build over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    pub job_name: String,
    pub job_queue: String,
    pub job_definition: String,
    /// The layer-builder argv after the program name.
    pub command: Vec<String>,
    /// `(VCPU|MEMORY, value)`.
    #[serde(default)]
    pub resources: Vec<(String, String)>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// SubmitJob of `spec`, `environment` (the upload grants) in the container's overrides; the job id.
pub async fn submit(
    batch: &aws_sdk_batch::Client,
    spec: &JobSpec,
    environment: &[(String, String)],
) -> Result<String, AwsFault> {
    let mut overrides = ContainerOverrides::builder().set_command(Some(spec.command.clone()));
    for (name, value) in environment {
        overrides = overrides.environment(KeyValuePair::builder().name(name).value(value).build());
    }
    for (kind, value) in &spec.resources {
        overrides = overrides.resource_requirements(
            ResourceRequirement::builder()
                .r#type(ResourceType::from(kind.as_str()))
                .value(value)
                .build(),
        );
    }
    let output = batch
        .submit_job()
        .job_name(&spec.job_name)
        .job_queue(&spec.job_queue)
        .job_definition(&spec.job_definition)
        .container_overrides(overrides.build())
        .set_tags(Some(spec.tags.clone().into_iter().collect()))
        .propagate_tags(true)
        .send()
        .await
        .map_err(|e| {
            let fault = AwsFault::from_sdk("SubmitJob", &e);
            warn!(
                job_name = spec.job_name,
                job_queue = spec.job_queue,
                error = error_chain(&e),
                transient = fault.is_transient(),
                "SubmitJob failed"
            );
            fault
        })?;
    Ok(output.job_id().unwrap_or_default().to_owned())
}

/// The fast builder's invocation payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FastBuild {
    /// [`PAYLOAD_FORMAT`].
    pub layerforge_fast_build: u32,
    /// The request as a submit-build event (requirements inline, as validated; `builder: batch`): what
    /// submit-build plans again when the fast builder failed for good.
    pub request: Value,
    /// The Batch job of this build.
    pub job: JobSpec,
    /// The upload grants (the job's environment): the fast builder writes through them too.
    pub environment: BTreeMap<String, String>,
    pub bucket: String,
    pub artifact_key: String,
}

impl FastBuild {
    pub fn new(
        request: &BuildRequest,
        job: JobSpec,
        environment: Vec<(String, String)>,
        bucket: &str,
        artifact_key: &str,
    ) -> Self {
        Self {
            layerforge_fast_build: PAYLOAD_FORMAT,
            request: request_event(request),
            job,
            environment: environment.into_iter().collect(),
            bucket: bucket.to_owned(),
            artifact_key: artifact_key.to_owned(),
        }
    }

    pub fn environment(&self) -> Vec<(String, String)> {
        self.environment
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The build record's key (`.layerforge/builds/…`), from the artifact key.
    pub fn record_key(&self, prefix: &str) -> Option<String> {
        crate::artifact::ArtifactKey::parse(prefix, &self.artifact_key)
            .map(|k| records::record_key(&k))
    }
}

/// The field of a fast build's request that carries a universal build's targets ([`BuildRequest::universal`]):
/// not a request field, so a caller can't set it.
pub const UNIVERSAL_FIELD: &str = "universal_targets";

/// `request` as a submit-build event that validates to the same request (requirements inline), for Batch.
pub fn request_event(request: &BuildRequest) -> Value {
    let mut event = json!({
        "layer_name": request.layer_name.as_str(),
        "requirements": request.requirements.to_text(),
        "runtime": request.runtime.as_str(),
        "architecture": request.architecture.as_str(),
        "installer": request.installer.as_str(),
        "bytecode": request.options.bytecode,
        "slim": request.options.slim,
        "max_unzipped_mb": request.max_unzipped_bytes / MIB,
        "builder": BuilderChoice::Batch.as_str(),
    });
    for (field, value) in [
        ("description", &request.description),
        ("license", &request.license),
    ] {
        if let Some(v) = value {
            event[field] = json!(v);
        }
    }
    if let Some(share) = &request.share {
        event["share"] = json!(share);
    }
    if let Some(targets) = &request.universal {
        event[UNIVERSAL_FIELD] = json!(targets.to_string());
    }
    if let Some(v) = request.resources.vcpu {
        event["vcpu"] = json!(v);
    }
    if let Some(v) = request.resources.memory_mib {
        event["memory_mib"] = json!(v);
    }
    event
}

/// Invokes the fast builder asynchronously (`InvocationType: Event`: Lambda queues the event, retries a failed
/// attempt and sends the last failure to the on-failure destination; the caller waits for nothing).
pub async fn invoke(
    lambda: &aws_sdk_lambda::Client,
    function: &str,
    payload: &FastBuild,
) -> Result<(), AwsFault> {
    let body = serde_json::to_vec(payload).map_err(|e| AwsFault {
        operation: "Invoke",
        kind: FaultKind::Permanent,
        code: "PayloadNotSerializable".to_owned(),
        message: e.to_string(),
        http_status: None,
    })?;
    let out = lambda
        .invoke()
        .function_name(function)
        .invocation_type(aws_sdk_lambda::types::InvocationType::Event)
        .payload(aws_smithy_types::Blob::new(body))
        .send()
        .await
        .map_err(|e| AwsFault::from_sdk("Invoke", &e))?;
    // Lambda answers an accepted asynchronous invocation with 202 (API reference, Invoke: StatusCode).
    if out.status_code() != 202 {
        return Err(AwsFault {
            operation: "Invoke",
            kind: FaultKind::Transient,
            code: "NotAccepted".to_owned(),
            message: format!("asynchronous invoke answered {}", out.status_code()),
            http_status: Some(out.status_code() as u16),
        });
    }
    Ok(())
}

/// Records a hand-over in the build record: the job, `builder: batch` and why. Conditional on the record read
/// (a few tries when another write came between); a failed write is logged, never fatal (the job runs either
/// way, and build-status finds it by the artifact's report and Batch).
pub async fn record_hand_over(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    record_key: &str,
    job_id: &str,
    job: &JobSpec,
    reason: &str,
) {
    for _ in 0..3 {
        let stored = match records::read_json::<BuildRecord>(s3, bucket, record_key).await {
            Ok(Some(stored)) => stored,
            Ok(None) => {
                warn!(
                    record_key,
                    job_id, "no build record to note the hand-over in"
                );
                return;
            }
            Err(e) => {
                warn!(record_key, job_id, error = %e, "reading the build record failed");
                return;
            }
        };
        let Some(mut record) = stored.value else {
            warn!(record_key, "unreadable build record; hand-over not noted");
            return;
        };
        record.job_id = Some(job_id.to_owned());
        record.job_name = Some(job.job_name.clone());
        record.job_queue = Some(job.job_queue.clone());
        record.builder = Some(BATCH_BUILDER.to_owned());
        record.handed_over = Some(reason.to_owned());
        record.updated_at = records::now_millis();
        match records::write_json(
            s3,
            bucket,
            record_key,
            &record,
            Some(Condition::Matches(&stored.etag)),
        )
        .await
        {
            Ok(_) => {
                info!(record_key, job_id, reason, "hand-over recorded");
                return;
            }
            Err(WriteError::Conflict) => continue,
            Err(WriteError::Aws(e)) => {
                warn!(record_key, job_id, error = %e, "recording the hand-over failed");
                return;
            }
        }
    }
    warn!(
        record_key,
        job_id, "the build record kept changing; hand-over not noted"
    );
}

/// A Lambda on-failure destination record of the fast builder (its payload, and why it failed), or `None`.
///
/// The record's shape: `requestContext` (`condition`: `RetriesExhausted` or `EventAgeExceeded`,
/// `approximateInvokeCount`), `requestPayload` (the event), `responsePayload` (the last error). Source: AWS
/// Lambda developer guide, "Capturing records of Lambda asynchronous invocations" (example invocation record).
pub fn from_destination(event: &Value) -> Option<(FastBuild, String)> {
    let context = event.get("requestContext")?;
    let payload: FastBuild = serde_json::from_value(event.get("requestPayload")?.clone()).ok()?;
    if payload.layerforge_fast_build != PAYLOAD_FORMAT {
        return None;
    }
    let condition = context
        .get("condition")
        .and_then(Value::as_str)
        .unwrap_or("unknown condition");
    let attempts = context
        .get("approximateInvokeCount")
        .and_then(Value::as_u64)
        .unwrap_or(1);
    let response = event.get("responsePayload");
    let error = |field: &str| {
        response
            .and_then(|r| r.get(field))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let mut reason = format!("the fast builder failed ({condition}, {attempts} attempt(s))");
    let (kind, message) = (error("errorType"), error("errorMessage"));
    if !kind.is_empty() || !message.is_empty() {
        let message: String = message.chars().take(500).collect();
        reason.push_str(&format!(": {kind}: {message}"));
    }
    Some((payload, reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(fast: Option<&str>) -> Config {
        Config::from_lookup(|k| match k {
            "ARTIFACT_BUCKET" => Some("artifacts".into()),
            "FAST_BUILDER_FUNCTION" => fast.map(str::to_owned),
            "BUILD_TARGETS" => {
                Some(r#"{"arm64":{"job_queue":"q-arm","job_definition":"d-arm"}}"#.to_owned())
            }
            _ => None,
        })
        .unwrap()
    }

    fn request(event: Value, config: &Config) -> Result<BuildRequest, InvalidRequest> {
        let draft = crate::request::RequestDraft::parse(&event, config)?;
        let crate::request::RequirementsInput::Inline(r) = draft.requirements.clone() else {
            panic!("inline")
        };
        Ok(draft.into_request(r, None))
    }

    fn routed(event: Value, config: &Config) -> Result<Route, InvalidRequest> {
        route(&request(event, config)?, config)
    }

    #[test]
    fn auto_tries_the_function_unless_only_batch_can_build_it() {
        let fast = config(Some("fast-builder"));
        let base =
            json!({"layer_name": "a", "requirements": "six==1.16.0", "runtime": "python3.12"});
        assert_eq!(routed(base.clone(), &fast).unwrap().builder(), "function");
        for (extra, why) in [
            (json!({"installer": "pip"}), "installer pip"),
            (json!({"slim": true}), "slim"),
            (json!({"memory_mib": 2048}), "vcpu/memory_mib"),
            (json!({"runtime": "python3.13"}), "bytecode for python3.13"),
        ] {
            let mut event = base.clone();
            for (k, v) in extra.as_object().unwrap() {
                event[k] = v.clone();
            }
            let route = routed(event.clone(), &fast).unwrap();
            assert_eq!(route.builder(), "batch", "{extra}");
            assert!(route.reason().contains(why), "{extra}: {route:?}");
            // Forcing the function is refused, naming the field and why.
            event["builder"] = json!("function");
            let err = routed(event, &fast).unwrap_err();
            assert_eq!(err.field, "builder");
            assert!(err.rule.contains(why), "{err}");
        }
        // Without bytecode, any runtime builds in the function.
        let mut event = base.clone();
        event["runtime"] = json!("python3.13");
        event["bytecode"] = json!(false);
        assert_eq!(routed(event, &fast).unwrap().builder(), "function");
        // Forcing Batch, or a deployment without a fast builder.
        let mut event = base.clone();
        event["builder"] = json!("batch");
        assert_eq!(routed(event, &fast).unwrap().builder(), "batch");
        assert_eq!(
            routed(base.clone(), &config(None)).unwrap().builder(),
            "batch"
        );
        let mut event = base;
        event["builder"] = json!("lambda");
        assert_eq!(routed(event, &fast).unwrap_err().field, "builder");
    }

    #[test]
    fn the_payloads_request_validates_to_the_same_build_for_batch() {
        let config = config(Some("fast-builder"));
        let original = request(
            json!({"layer_name": "a", "requirements": "six==1.16.0\n# c\nidna>=3", "runtime": "python3.12",
                   "description": "d", "license": "MIT", "max_unzipped_mb": 100, "force": true}),
            &config,
        )
        .unwrap();
        let again = request(request_event(&original), &config).unwrap();
        assert_eq!(again.builder, BuilderChoice::Batch);
        assert!(!again.force);
        let fingerprint = |r: &BuildRequest| {
            crate::artifact::Fingerprint::compute(
                &r.requirements,
                r.runtime,
                r.architecture,
                r.installer,
                r.options,
            )
        };
        assert_eq!(fingerprint(&again), fingerprint(&original));
        assert_eq!(
            (again.description, again.license, again.max_unzipped_bytes),
            (
                original.description,
                original.license,
                original.max_unzipped_bytes
            )
        );
    }

    #[test]
    fn a_destination_record_gives_back_the_payload_and_why() {
        let payload = FastBuild {
            layerforge_fast_build: PAYLOAD_FORMAT,
            request: json!({"layer_name": "a"}),
            job: JobSpec {
                job_name: "layer-a".into(),
                job_queue: "q".into(),
                job_definition: "d".into(),
                command: vec!["--name=a".into()],
                resources: vec![],
                tags: BTreeMap::new(),
            },
            environment: BTreeMap::new(),
            bucket: "b".into(),
            artifact_key: "layers/a/python3.12-arm64/0123456789abcdef.zip".into(),
        };
        let record = json!({
            "version": "1.0", "timestamp": "2026-12-03T05:00:00.000Z",
            "requestContext": {"requestId": "r", "functionArn": "arn:aws:lambda:us-east-1:1:function:f:$LATEST",
                               "condition": "RetriesExhausted", "approximateInvokeCount": 3},
            "requestPayload": serde_json::to_value(&payload).unwrap(),
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
            "responsePayload": {"errorType": "Runtime.ExitError", "errorMessage": "signal: killed"}
        });
        let (back, reason) = from_destination(&record).unwrap();
        assert_eq!(back, payload);
        assert_eq!(
            reason,
            "the fast builder failed (RetriesExhausted, 3 attempt(s)): Runtime.ExitError: signal: killed"
        );
        assert_eq!(
            back.record_key("layers").as_deref(),
            Some(".layerforge/builds/a/python3.12-arm64/0123456789abcdef.json")
        );
        // A build request is not a destination record.
        assert!(from_destination(&json!({"layer_name": "a", "requirements": "six"})).is_none());
    }
}
