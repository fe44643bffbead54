//! submit-build's entry point: a single-target request goes to [`crate::submit::handle`]; a matrix is validated
//! pair by pair (nothing is submitted unless every pair is valid), probed for a universal version, recorded, then
//! submitted pair by pair (or once, universal) with the single-target path's own cache check, claim and job.

use serde::Serialize;
use serde_json::Value;
use tracing::{info, warn};

use super::{MatrixRecord, PairRecord, expand, matrix_id, record_key};
use crate::{
    fast::{self, probe},
    records,
    request::{
        Architecture, BuildRequest, Installer, InvalidRequest, RequestDraft, Requirements,
        RequirementsInput, Runtime, S3Uri, Targets,
    },
    submit::{
        self, Status, SubmitError, SubmitResponse, SubmitState, plan_job, read_requirements,
        submit_request,
    },
};

/// One pair's answer: its target and what became of its build (DESIGN section 2's fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PairResponse {
    pub runtime: Runtime,
    pub architecture: Architecture,
    #[serde(flatten)]
    pub answer: SubmitResponse,
}

/// submit-build's answer to a matrix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MatrixResponse {
    /// `rejected` if a pair is, else `submitted` if a pair is, else `building` if one is, else `cached`.
    pub status: Status,
    pub matrix_id: String,
    pub layer_name: String,
    /// One universal version serves every pair.
    pub universal: bool,
    pub universal_reason: String,
    pub pairs: Vec<PairResponse>,
}

/// The handler of submit-build: a single-target answer (DESIGN section 2) or a matrix answer.
pub async fn handle(state: &SubmitState, event: Value) -> Result<Value, SubmitError> {
    let Some(matrix) = expand(&event, &state.config)? else {
        // Boxed: the single path's future inside this one's is deeper than the compiler's layout query allows in
        // a release build of submit-build ("queries overflow the depth limit").
        return Ok(to_value(&Box::pin(submit::handle(state, event)).await?));
    };
    // Every pair is validated (and its job planned) before anything is written or submitted.
    let mut requests: Vec<BuildRequest> = Vec::with_capacity(matrix.pairs.len());
    let mut fetched: Option<(S3Uri, Requirements)> = None;
    for (&pair, event) in matrix.pairs.iter().zip(&matrix.events) {
        let draft = RequestDraft::parse(event, &state.config).map_err(|e| in_pair(e, pair))?;
        let request = match draft.requirements.clone() {
            RequirementsInput::Inline(requirements) => draft.into_request(requirements, None),
            RequirementsInput::S3(uri) => {
                let requirements = match &fetched {
                    Some((u, r)) if *u == uri => r.clone(),
                    _ => {
                        let text = read_requirements(state, &uri).await?;
                        let parsed = Requirements::parse(&text)?;
                        fetched = Some((uri.clone(), parsed.clone()));
                        parsed
                    }
                };
                draft.into_request(requirements, Some(uri))
            }
        };
        plan_job(&request, &state.config).map_err(|e| in_pair(e, pair))?;
        fast::route(&request, &state.config).map_err(|e| in_pair(e, pair))?;
        requests.push(request);
    }
    let layer_name = requests[0].layer_name.to_string();
    let keys: Vec<_> = requests
        .iter()
        .map(|r| plan_job(r, &state.config).map(|p| p.key))
        .collect::<Result<_, _>>()?;
    let fingerprints: Vec<&str> = keys.iter().map(|k| k.fingerprint.as_str()).collect();
    let id = matrix_id(&layer_name, &fingerprints);

    let bucket = state.config.artifact_bucket.as_str();
    // The same matrix again: its first decision stands (no second probe), unless `force` or `universal: false`.
    let earlier = match (matrix.universal, requests[0].force) {
        (true, false) => records::read_json::<MatrixRecord>(&state.s3, bucket, &record_key(&id))
            .await?
            .and_then(|s| s.value),
        _ => None,
    };
    let decision = match earlier.filter(|r| r.probed) {
        Some(record) => Decision {
            universal: record.universal,
            reason: record.universal_reason,
            probed: true,
        },
        None => decide(state, matrix.universal, &requests).await,
    };
    let (universal, universal_reason) = (decision.universal, decision.reason);
    let universal_request = universal.then(|| universal_request(state, &requests));
    let universal_key = match &universal_request {
        Some(r) => Some(plan_job(r, &state.config)?.key.to_string()),
        None => None,
    };
    info!(
        matrix_id = id,
        layer_name,
        pairs = requests.len(),
        universal,
        universal_reason,
        "matrix planned"
    );
    // The record first: whatever happens to a submission below, build-status can follow every pair.
    let record = MatrixRecord {
        matrix_id: id.clone(),
        layer_name: layer_name.clone(),
        created_at: records::now_millis(),
        universal,
        universal_reason: universal_reason.clone(),
        probed: decision.probed,
        pairs: requests
            .iter()
            .zip(&keys)
            .map(|(r, k)| PairRecord {
                runtime: r.runtime,
                architecture: r.architecture,
                artifact_key: universal_key.clone().unwrap_or_else(|| k.to_string()),
            })
            .collect(),
    };
    records::write_json(&state.s3, bucket, &record_key(&id), &record, None)
        .await
        .map_err(|e| match e {
            records::WriteError::Aws(fault) => SubmitError::Aws(fault),
            records::WriteError::Conflict => SubmitError::Aws(crate::aws::AwsFault {
                operation: "PutObject",
                kind: crate::aws::FaultKind::Transient,
                code: "Conflict".to_owned(),
                message: "an unconditional write conflicted".to_owned(),
                http_status: None,
            }),
        })?;

    let mut pairs = Vec::with_capacity(requests.len());
    match universal_request {
        Some(request) => {
            let answer = Box::pin(submit_request(state, request)).await?;
            for r in &requests {
                pairs.push(PairResponse {
                    runtime: r.runtime,
                    architecture: r.architecture,
                    answer: answer.clone(),
                });
            }
        }
        None => {
            for request in requests {
                let (runtime, architecture) = (request.runtime, request.architecture);
                let answer = Box::pin(submit_request(state, request)).await?;
                pairs.push(PairResponse {
                    runtime,
                    architecture,
                    answer,
                });
            }
        }
    }
    let statuses: Vec<Status> = pairs.iter().map(|p| p.answer.status).collect();
    let status = [Status::Rejected, Status::Submitted, Status::Building]
        .into_iter()
        .find(|s| statuses.contains(s))
        .unwrap_or(Status::Cached);
    Ok(to_value(&MatrixResponse {
        status,
        matrix_id: id,
        layer_name,
        universal,
        universal_reason,
        pairs,
    }))
}

fn to_value<T: Serialize>(answer: &T) -> Value {
    serde_json::to_value(answer).unwrap_or_default()
}

/// A pair's error, naming the pair.
fn in_pair(
    err: InvalidRequest,
    (runtime, architecture): (Runtime, Architecture),
) -> InvalidRequest {
    InvalidRequest {
        rule: format!("{} (pair {runtime}/{architecture})", err.rule),
        ..err
    }
}

/// How long submit-build waits for the probe (its own timeout is 90 s): a cold fast builder and the wheels'
/// downloads for every pair take seconds; a probe that hangs must not hold the request.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(45);

/// Whether the matrix is one universal version, why (not), and whether the probe said so.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Decision {
    universal: bool,
    reason: String,
    probed: bool,
}

/// Whether the matrix is one universal version, and why (not). Only the fast builder's probe says yes; any
/// doubt (no probe possible, the probe failing) builds per pair, which is never wrong.
async fn decide(state: &SubmitState, wanted: bool, requests: &[BuildRequest]) -> Decision {
    let first = &requests[0];
    let no = |why: &str| Decision {
        universal: false,
        reason: why.to_owned(),
        probed: false,
    };
    if !wanted {
        return no("the request says \"universal\": false");
    }
    if requests.len() < 2 {
        return no("one pair");
    }
    if first.installer != Installer::Uv {
        return no("the probe installs with uv; a pip request is built per pair");
    }
    if first.options.slim {
        return no("slim checks imports with each runtime's interpreter: built per pair");
    }
    let (Some(fast), Some(invoke)) = (&state.config.fast_builder, &state.invoke) else {
        return no("this deployment has no fast builder to probe the set with (FastBuilder)");
    };
    let payload = probe::Probe {
        layerforge_probe: probe::PROBE_FORMAT,
        requirements: first.requirements.to_text(),
        targets: requests
            .iter()
            .map(|r| (r.runtime, r.architecture))
            .collect(),
    };
    let asked = probe::invoke(invoke, &fast.function, &payload);
    match tokio::time::timeout(PROBE_TIMEOUT, asked).await {
        Err(_) => {
            warn!(
                seconds = PROBE_TIMEOUT.as_secs(),
                "the probe did not answer in time; building per pair"
            );
            no(&format!(
                "the probe did not answer within {} s: built per pair",
                PROBE_TIMEOUT.as_secs()
            ))
        }
        Ok(Ok(answer)) => {
            info!(
                universal = answer.universal,
                reason = answer.reason,
                millis = answer.millis,
                "probe answered"
            );
            Decision {
                universal: answer.universal,
                reason: answer.reason,
                probed: true,
            }
        }
        Ok(Err(fault)) => {
            warn!(error = %fault, "the probe failed; building per pair");
            no(&format!("the probe failed ({fault}): built per pair"))
        }
    }
}

/// The one build of a universal matrix: on the first runtime whose bytecode the fast builder compiles (so it can
/// build it), else the first runtime; on arm64 when asked for, else the first architecture. Its version lists
/// every runtime and architecture of the matrix.
fn universal_request(state: &SubmitState, requests: &[BuildRequest]) -> BuildRequest {
    let fast_runtimes: &[Runtime] = state
        .config
        .fast_builder
        .as_ref()
        .map_or(&[], |f| &f.runtimes);
    let runtimes: Vec<Runtime> = requests.iter().map(|r| r.runtime).collect();
    let architectures: Vec<Architecture> = requests.iter().map(|r| r.architecture).collect();
    let runtime = runtimes
        .iter()
        .copied()
        .find(|r| fast_runtimes.contains(r))
        .unwrap_or(runtimes[0]);
    let architecture = if architectures.contains(&Architecture::Arm64) {
        Architecture::Arm64
    } else {
        architectures[0]
    };
    let base = requests
        .iter()
        .find(|r| r.runtime == runtime && r.architecture == architecture)
        .unwrap_or(&requests[0]);
    BuildRequest {
        universal: Some(Targets::new(runtimes, architectures)),
        ..base.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use aws_sdk_lambda::operation::invoke::{InvokeError, InvokeOutput};
    use aws_smithy_mocks::{RuleMode, mock, mock_client};
    use aws_smithy_types::Blob;
    use serde_json::json;

    use super::*;
    use crate::config::Config;

    fn config() -> Arc<Config> {
        let vars = [
            ("ARTIFACT_BUCKET", "b"),
            (
                "BUILD_TARGETS",
                r#"{"arm64": {"job_queue": "q", "job_definition": "d"}, "x86_64": {"job_queue": "q", "job_definition": "d"}}"#,
            ),
            ("FAST_BUILDER_FUNCTION", "fast"),
        ];
        Arc::new(
            Config::from_lookup(|k| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_owned())
            })
            .unwrap(),
        )
    }

    fn requests(config: &Config) -> Vec<BuildRequest> {
        ["arm64", "x86_64"]
            .iter()
            .map(|a| {
                let event =
                    json!({"layer_name": "a", "requirements": "six==1.16.0", "architecture": a});
                let draft = RequestDraft::parse(&event, config).unwrap();
                let RequirementsInput::Inline(r) = draft.requirements.clone() else {
                    panic!("inline")
                };
                draft.into_request(r, None)
            })
            .collect()
    }

    fn state(invoke: aws_sdk_lambda::Client) -> SubmitState {
        SubmitState {
            config: config(),
            s3: mock_client!(aws_sdk_s3, RuleMode::MatchAny, []),
            batch: mock_client!(aws_sdk_batch, RuleMode::MatchAny, []),
            lambda: None,
            invoke: Some(invoke),
        }
    }

    fn lambda(rule: &aws_smithy_mocks::Rule) -> aws_sdk_lambda::Client {
        mock_client!(aws_sdk_lambda, RuleMode::Sequential, [rule], |c| c
            .retry_config(aws_sdk_lambda::config::retry::RetryConfig::disabled()))
    }

    #[tokio::test]
    async fn only_a_probe_that_answers_universal_makes_one_version() {
        let yes = mock!(aws_sdk_lambda::Client::invoke).then_output(|| {
            InvokeOutput::builder()
                .status_code(200)
                .payload(Blob::new(
                    json!({"universal": true, "reason": "the same 9 files", "millis": 800})
                        .to_string(),
                ))
                .build()
        });
        let state = state(lambda(&yes));
        let reqs = requests(&state.config);
        assert_eq!(
            decide(&state, true, &reqs).await,
            Decision {
                universal: true,
                reason: "the same 9 files".to_owned(),
                probed: true
            }
        );
        assert_eq!(yes.num_calls(), 1);
        let universal = universal_request(&state, &reqs);
        assert_eq!(universal.architecture, Architecture::Arm64);
        assert_eq!(
            universal.universal.unwrap().to_string(),
            "python3.12/arm64,x86_64"
        );

        // The function failed (a crash, a bad payload): per pair.
        let crashed = mock!(aws_sdk_lambda::Client::invoke).then_output(|| {
            InvokeOutput::builder()
                .status_code(200)
                .function_error("Unhandled")
                .payload(Blob::new(
                    r#"{"errorType":"ProbeFailed","errorMessage":"no uv"}"#,
                ))
                .build()
        });
        let state = super::tests::state(lambda(&crashed));
        let d = decide(&state, true, &reqs).await;
        assert!(
            !d.universal && !d.probed,
            "a failed probe decides nothing for good"
        );
        assert!(
            d.reason.contains("the probe failed") && d.reason.contains("no uv"),
            "{}",
            d.reason
        );

        // Lambda throttled the invoke: per pair, nothing waits for a retry.
        let throttled = mock!(aws_sdk_lambda::Client::invoke).then_error(|| {
            InvokeError::TooManyRequestsException(
                aws_sdk_lambda::types::error::TooManyRequestsException::builder()
                    .message("Rate exceeded")
                    .build(),
            )
        });
        let state = super::tests::state(lambda(&throttled));
        let d = decide(&state, true, &reqs).await;
        assert!(
            !d.universal && d.reason.contains("the probe failed"),
            "{}",
            d.reason
        );

        // No probe at all: universal false, one pair, pip.
        assert_eq!(
            decide(&state, false, &reqs).await.reason,
            "the request says \"universal\": false"
        );
        assert_eq!(decide(&state, true, &reqs[..1]).await.reason, "one pair");
        assert_eq!(throttled.num_calls(), 1, "no probe for those");
    }
}
