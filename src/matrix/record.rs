//! A matrix's id and record (DESIGN section 15), and the check that a universal build is one submit-build decided.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{
    aws::AwsFault,
    config::Config,
    fast::UNIVERSAL_FIELD,
    plan::plan_job,
    records,
    request::{Architecture, BuildRequest, InvalidRequest, Runtime, Targets},
};

const FIELD: &str = "requestPayload.request.universal_targets";

/// The universal targets a fast build's request event carries ([`UNIVERSAL_FIELD`]), removed from `event`.
pub fn take_universal(event: &mut Value) -> Result<Option<Targets>, InvalidRequest> {
    match event
        .as_object_mut()
        .and_then(|m| m.remove(UNIVERSAL_FIELD))
    {
        Some(Value::String(text)) => Targets::parse(&text)
            .map(Some)
            .map_err(|rule| InvalidRequest::new(FIELD, rule, &text)),
        Some(other) => Err(InvalidRequest::json(FIELD, "must be a string", &other)),
        None => Ok(None),
    }
}

/// A universal build that no probe decided ([`universal_decided`]) is an invalid request naming its targets.
pub async fn refuse_undecided(
    s3: &aws_sdk_s3::Client,
    config: &Config,
    request: &BuildRequest,
) -> Result<Result<(), InvalidRequest>, AwsFault> {
    let Some(targets) = &request.universal else {
        return Ok(Ok(()));
    };
    Ok(if universal_decided(s3, config, request).await? {
        Ok(())
    } else {
        Err(InvalidRequest::new(
            FIELD,
            "no matrix of this layer was probed universal for these targets",
            &targets.to_string(),
        ))
    })
}

/// Where matrix records live in the artifact bucket (outside the artifact prefix; the build job can't write).
pub const MATRIX_PREFIX: &str = ".layerforge/matrices";

/// The matrix id: the layer name and every pair's fingerprint, so the same request names the same matrix.
pub fn matrix_id(layer_name: &str, fingerprints: &[&str]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(format!("layerforge-matrix\n{layer_name}\n"));
    for fp in fingerprints {
        hasher.update(format!("{fp}\n"));
    }
    format!("m-{}", &hex::encode(hasher.finalize())[..16])
}

/// Whether `id` has the form [`matrix_id`] gives (so it can't name another key).
pub fn valid_id(id: &str) -> bool {
    id.len() == 18
        && id.starts_with("m-")
        && id[2..]
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

/// The matrix record's key.
pub fn record_key(id: &str) -> String {
    format!("{MATRIX_PREFIX}/{id}.json")
}

/// One pair of a matrix record: which artifact serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairRecord {
    pub runtime: Runtime,
    pub architecture: Architecture,
    /// The artifact's key (the universal one for every pair of a universal matrix).
    pub artifact_key: String,
}

/// `.layerforge/matrices/<id>.json`, written by submit-build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatrixRecord {
    pub matrix_id: String,
    pub layer_name: String,
    pub created_at: i64,
    /// Whether one universal version serves every pair.
    pub universal: bool,
    /// Why (the probe's answer, or why there was no probe).
    pub universal_reason: String,
    /// Whether the fast builder's probe answered (a probe that failed or timed out decides nothing for good: the
    /// same request probes again).
    #[serde(default)]
    pub probed: bool,
    pub pairs: Vec<PairRecord>,
}

/// Whether `request` (a universal build, [`BuildRequest::universal`]) is the one version of a matrix whose probe
/// submit-build ran: the matrix record of its pairs says universal, with this artifact for every pair. A build
/// that comes back to submit-build (a fast build's on-failure destination record) is handed to Batch as universal
/// only then, so no caller can have a set published for targets nobody probed.
pub async fn universal_decided(
    s3: &aws_sdk_s3::Client,
    config: &Config,
    request: &BuildRequest,
) -> Result<bool, AwsFault> {
    let Some(targets) = &request.universal else {
        return Ok(false);
    };
    let Ok(universal) = plan_job(request, config) else {
        return Ok(false);
    };
    let mut fingerprints = Vec::new();
    for &runtime in &targets.runtimes {
        for &architecture in &targets.architectures {
            let pair = BuildRequest {
                runtime,
                architecture,
                universal: None,
                ..request.clone()
            };
            match plan_job(&pair, config) {
                Ok(plan) => fingerprints.push(plan.key.fingerprint),
                Err(_) => return Ok(false),
            }
        }
    }
    let refs: Vec<&str> = fingerprints.iter().map(String::as_str).collect();
    let id = matrix_id(request.layer_name.as_str(), &refs);
    let key = universal.key.to_string();
    Ok(
        records::read_json::<MatrixRecord>(s3, &config.artifact_bucket, &record_key(&id))
            .await?
            .and_then(|s| s.value)
            .is_some_and(|r| r.universal && r.pairs.iter().all(|p| p.artifact_key == key)),
    )
}
