//! The Lambda side of the exactly-once protocol ([`super::claim`]): finding a version that already holds the
//! content (adoption), checking that a recorded version still exists, and PublishLayerVersion itself.
//!
//! # What adoption costs, and what it gives up
//! Adoption looks for the effect of a PublishLayerVersion whose answer was lost: this delivery's own (a lost
//! answer, a throttled call that landed) or a crashed predecessor's (the claim taken over after its lease). That
//! version was published moments ago, so it is among the newest versions of the layer. [`existing_version`]
//! therefore reads one ListLayerVersions page of [`ADOPTION_WINDOW`] versions and calls GetLayerVersion (the list
//! items carry no CodeSha256) for them, newest first, until one matches: at most `1 + ADOPTION_WINDOW` calls,
//! whatever the layer's history. A redelivery of published content costs less still: the claim holds the ARN,
//! and [`version_exists`] checks it with one GetLayerVersion.
//!
//! What the bound gives up: a version with the same CodeSha256 that is older than the newest
//! [`ADOPTION_WINDOW`] versions of the layer is not found, and the content is published again (a second version
//! with the same bytes, nothing worse). That happens only when the claim does not answer, that is when
//! - the claim object was lost entirely (deleted by hand or by a lifecycle rule on `.layerforge/`) after the
//!   version was published, and more than [`ADOPTION_WINDOW`] versions of the layer came after it; or
//! - a winner published and then crashed (or failed to record the ARN), and before this content was delivered
//!   again more than [`ADOPTION_WINDOW`] other versions of the same layer name were published (Lambda's
//!   asynchronous retries come within minutes, but a re-drive from the failure queue can come days later).
//!
//! ListLayerVersions documents no order; Lambda and moto both answer newest first. The page is sorted by version
//! number all the same, so what is looked at is the newest of what came back (moto ignores `MaxItems` and
//! answers every version: the sort and the cut keep the cost bounded there too).

use aws_sdk_lambda::config::retry::RetryConfig;
use tracing::{info, warn};

use super::{
    faults::{Verdict, classify},
    outcome::{Outcome, RecordError, Rejection},
    state::PublishState,
    types::{LayerSpec, ObjectRef},
};
use crate::aws::{AwsFault, FaultKind};

/// How many of the newest versions of a layer adoption looks through (one ListLayerVersions page; 50 is the
/// API's largest). The version adoption exists for was published within the last lease (the function's
/// timeout, two minutes) by this content's claim holder; 20 leaves room for 19 other versions of the same layer
/// name published in that time (other runtimes and architectures of the layer, other requirement sets, each a
/// whole Fargate build), and keeps a new content's look-up, which must read them all, at 21 calls.
pub const ADOPTION_WINDOW: i32 = 20;

/// The newest of the layer's newest [`ADOPTION_WINDOW`] versions whose CodeSha256 is `sha`.
pub(super) async fn existing_version(
    state: &PublishState,
    layer_name: &str,
    sha: &str,
) -> Result<Option<String>, AwsFault> {
    let page = state
        .lambda
        .list_layer_versions()
        .layer_name(layer_name)
        .max_items(ADOPTION_WINDOW)
        .send()
        .await
        .map_err(|e| AwsFault::from_sdk("ListLayerVersions", &e))?;
    let mut numbers: Vec<i64> = page.layer_versions().iter().map(|v| v.version()).collect();
    numbers.sort_unstable_by(|a, b| b.cmp(a));
    numbers.truncate(usize::try_from(ADOPTION_WINDOW).unwrap_or(usize::MAX));
    for number in numbers {
        let got = match state
            .lambda
            .get_layer_version()
            .layer_name(layer_name)
            .version_number(number)
            .send()
            .await
        {
            Ok(got) => got,
            // Deleted between the list and now: not a candidate.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                continue;
            }
            Err(e) => return Err(AwsFault::from_sdk("GetLayerVersion", &e)),
        };
        if got.content().and_then(|c| c.code_sha256()) == Some(sha)
            && let Some(arn) = got.layer_version_arn()
        {
            return Ok(Some(arn.to_owned()));
        }
    }
    Ok(None)
}

/// Whether the layer version `arn` (of `layer_name`) still exists: one GetLayerVersion. A deleted version
/// (`ResourceNotFoundException`, HTTP 404) can't be attached to a function any more, so a claim naming it no
/// longer answers for its content. An ARN that names no version number is treated as deleted.
pub(super) async fn version_exists(
    state: &PublishState,
    layer_name: &str,
    arn: &str,
) -> Result<bool, AwsFault> {
    let Some(number) = arn
        .rsplit_once(':')
        .and_then(|(_, n)| n.parse::<i64>().ok())
    else {
        warn!(
            layer = layer_name,
            layer_version_arn = arn,
            "the recorded ARN names no version"
        );
        return Ok(false);
    };
    match state
        .lambda
        .get_layer_version()
        .layer_name(layer_name)
        .version_number(number)
        .send()
        .await
    {
        Ok(_) => Ok(true),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception()) =>
        {
            Ok(false)
        }
        Err(e) => Err(AwsFault::from_sdk("GetLayerVersion", &e)),
    }
}

/// PublishLayerVersion with S3 content, never retried by the SDK (the call is not idempotent: a retry after a
/// lost answer publishes a second version). Lambda's refusals of the artifact are rejections.
pub(super) async fn publish(
    state: &PublishState,
    object: &ObjectRef,
    layer: &LayerSpec,
    code_sha256: &str,
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
        .customize()
        .config_override(
            aws_sdk_lambda::config::Builder::default().retry_config(RetryConfig::disabled()),
        )
        .send()
        .await;
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            let fault = AwsFault::from_sdk("PublishLayerVersion", &e);
            if classify(&fault) == Verdict::Reject {
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
    if let Some(reported) = out.content().and_then(|c| c.code_sha256())
        && reported != code_sha256
    {
        warn!(
            layer_version_arn = arn,
            expected = code_sha256,
            reported,
            "CodeSha256 differs from the zip's content-sha256 metadata"
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
