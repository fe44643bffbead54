//! The latest pointer of a layer, runtime and architecture (issue 24 item 1, DESIGN section 14): after every
//! published or adopted version, publish-layer moves the pointer forward, never backwards, and mirrors it to the
//! SSM parameter `/layerforge/<stack>/<layer>/<runtime>/<arch>/latest` (a `String`, the layer version ARN) that
//! CloudFormation and SAM templates resolve with `{{resolve:ssm:…}}`.
//!
//! # The protocol
//! SSM's PutParameter has no compare-and-swap, so the truth lives in S3, where writes can be conditional:
//! `.layerforge/latest/<layer>/<runtime>-<arch>.json` in the artifact bucket (outside the artifact prefix and not
//! ending in `.zip`: writing it triggers nothing), `{layer_version_arn, version}`.
//!
//! 1. Advance: read the truth; when it already names this version or a newer one (by version number, which
//!    Lambda increments per layer name), write nothing. Otherwise replace it conditionally (`If-None-Match: *`
//!    when there is none, `If-Match: <ETag read>` otherwise); a lost race (412/409) reads again. So the truth
//!    only ever moves forward, and a late delivery of an older version changes nothing.
//! 2. Mirror: read the truth, read the parameter, and write the parameter (Overwrite) only when it differs, so a
//!    redelivery bumps no parameter version. Then read the truth again: when it moved meanwhile (a concurrent
//!    publisher advanced it, and its mirror may have landed before ours), mirror again. The last write to the
//!    parameter is therefore always followed by a read that found the truth unchanged, and concurrent
//!    publishers converge on the highest version. While they race the parameter may show the older of their
//!    versions for the moment between two writes; the S3 truth never does.
//! 3. Every delivery that ends `published` or `duplicate` (adoption and redeliveries included) runs both steps,
//!    so a fault here (throttling, 5xx, access denied) fails the record like any other fault: the invocation
//!    fails after the other records, Lambda retries, and the retry, a `duplicate` (the claim holds the ARN),
//!    updates the pointer without publishing anything again.
//!
//! A version lists its runtimes and architectures; there is one pointer per (runtime, architecture) pair.

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::{state::PublishState, types::LayerSpec};
use crate::{
    aws::{AwsFault, FaultKind},
    records::{self, Condition, WriteError},
};

/// Where the pointers' truth lives, relative to the artifact bucket's root.
pub const LATEST_PREFIX: &str = ".layerforge/latest";

/// How often one step re-reads after a lost race before it fails transiently (Lambda then retries).
const ROUNDS: usize = 8;

/// The SSM parameter of a pointer.
pub fn parameter_name(stack: &str, layer: &str, runtime: &str, architecture: &str) -> String {
    format!("/layerforge/{stack}/{layer}/{runtime}/{architecture}/latest")
}

/// The S3 key of a pointer's truth.
pub fn pointer_key(layer: &str, runtime: &str, architecture: &str) -> String {
    format!("{LATEST_PREFIX}/{layer}/{runtime}-{architecture}.json")
}

/// The version number an ARN ends with (`arn:…:layer:NAME:7` → 7).
pub fn version_of(arn: &str) -> Option<i64> {
    arn.rsplit_once(':')
        .and_then(|(_, n)| n.parse::<i64>().ok())
        .filter(|n| *n > 0)
}

/// The truth of one pointer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Pointer {
    layer_version_arn: String,
    version: i64,
}

/// Moves every pointer of `layer` (one per runtime and architecture it lists) to `arn` if that is newer, and
/// mirrors each to its SSM parameter. Nothing happens without an SSM client or a stack name.
pub(super) async fn update(
    state: &PublishState,
    bucket: &str,
    layer: &LayerSpec,
    arn: &str,
) -> Result<(), AwsFault> {
    let (Some(ssm), Some(stack)) = (&state.ssm, &state.config.stack_name) else {
        return Ok(());
    };
    let Some(version) = version_of(arn) else {
        warn!(
            layer_version_arn = arn,
            "the ARN names no version; no latest pointer"
        );
        return Ok(());
    };
    let candidate = Pointer {
        layer_version_arn: arn.to_owned(),
        version,
    };
    for runtime in &layer.runtimes {
        for architecture in &layer.architectures {
            let (runtime, architecture) = (runtime.as_str(), architecture.as_str());
            let key = pointer_key(&layer.name, runtime, architecture);
            advance(state, bucket, &key, &candidate).await?;
            let name = parameter_name(stack, &layer.name, runtime, architecture);
            mirror(state, ssm, bucket, &key, &name).await?;
        }
    }
    Ok(())
}

/// Step 1: the truth moves to `candidate` if it is newer, conditionally.
async fn advance(
    state: &PublishState,
    bucket: &str,
    key: &str,
    candidate: &Pointer,
) -> Result<(), AwsFault> {
    for _ in 0..ROUNDS {
        let stored = records::read_json::<Pointer>(&state.s3, bucket, key).await?;
        let condition = match &stored {
            Some(s)
                if s.value
                    .as_ref()
                    .is_some_and(|p| p.version >= candidate.version) =>
            {
                return Ok(());
            }
            // An unreadable truth is replaced like an older one.
            Some(s) => Condition::Matches(&s.etag),
            None => Condition::Absent,
        };
        match records::write_json(&state.s3, bucket, key, candidate, Some(condition)).await {
            Ok(_) => {
                info!(
                    pointer = key,
                    layer_version_arn = candidate.layer_version_arn,
                    "latest pointer moved forward"
                );
                return Ok(());
            }
            Err(WriteError::Conflict) => continue,
            Err(WriteError::Aws(fault)) => return Err(fault),
        }
    }
    Err(contended("PutObject", key))
}

/// Step 2: the parameter follows the truth; written only when it differs, again while the truth moves.
async fn mirror(
    state: &PublishState,
    ssm: &aws_sdk_ssm::Client,
    bucket: &str,
    key: &str,
    name: &str,
) -> Result<(), AwsFault> {
    let mut truth = read_truth(state, bucket, key).await?;
    for _ in 0..ROUNDS {
        let Some(pointer) = &truth else {
            return Ok(());
        };
        if current_value(ssm, name).await?.as_deref() != Some(pointer.layer_version_arn.as_str()) {
            ssm.put_parameter()
                .name(name)
                .value(&pointer.layer_version_arn)
                .r#type(aws_sdk_ssm::types::ParameterType::String)
                .overwrite(true)
                .send()
                .await
                .map_err(|e| AwsFault::from_sdk("PutParameter", &e))?;
            info!(
                parameter = name,
                layer_version_arn = pointer.layer_version_arn,
                "latest parameter written"
            );
        }
        let again = read_truth(state, bucket, key).await?;
        if again == truth {
            return Ok(());
        }
        truth = again;
    }
    Err(contended("PutParameter", name))
}

async fn read_truth(
    state: &PublishState,
    bucket: &str,
    key: &str,
) -> Result<Option<Pointer>, AwsFault> {
    Ok(records::read_json::<Pointer>(&state.s3, bucket, key)
        .await?
        .and_then(|s| s.value))
}

/// The parameter's value, `None` when there is none.
async fn current_value(ssm: &aws_sdk_ssm::Client, name: &str) -> Result<Option<String>, AwsFault> {
    match ssm.get_parameter().name(name).send().await {
        Ok(out) => Ok(out.parameter().and_then(|p| p.value()).map(str::to_owned)),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_parameter_not_found()) =>
        {
            Ok(None)
        }
        Err(e) => Err(AwsFault::from_sdk("GetParameter", &e)),
    }
}

fn contended(operation: &'static str, what: &str) -> AwsFault {
    AwsFault {
        operation,
        kind: FaultKind::Transient,
        code: "LatestPointerContended".to_owned(),
        message: format!("{what} kept moving over {ROUNDS} rounds; the retry converges"),
        http_status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_keys_follow_the_layout() {
        assert_eq!(
            parameter_name("layerforge", "layerforge-http", "python3.12", "arm64"),
            "/layerforge/layerforge/layerforge-http/python3.12/arm64/latest"
        );
        let key = pointer_key("layerforge-http", "python3.12", "arm64");
        assert_eq!(
            key,
            ".layerforge/latest/layerforge-http/python3.12-arm64.json"
        );
        assert!(!key.ends_with(".zip"));
    }

    #[test]
    fn the_version_is_the_arns_last_segment() {
        let arn = "arn:aws:lambda:eu-west-1:111111111111:layer:http:12";
        assert_eq!(version_of(arn), Some(12));
        assert_eq!(version_of("arn:aws:lambda:eu-west-1:1:layer:http"), None);
        assert_eq!(version_of("nope"), None);
    }
}
