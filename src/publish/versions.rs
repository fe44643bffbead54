//! The Lambda side of the exactly-once protocol ([`super::claim`]): finding a version that already holds the
//! content (adoption), checking that a recorded version still exists, and PublishLayerVersion itself.
//!
//! # What adoption costs, and what it gives up
//! Adoption looks for the effect of a PublishLayerVersion whose answer was lost: this delivery's own (a lost
//! answer, a throttled call that landed) or a crashed predecessor's (the claim taken over after its lease). That
//! version was published moments ago, so it is among the newest versions of the layer. `existing_version`
//! therefore reads one ListLayerVersions page of [`ADOPTION_WINDOW`] versions and calls GetLayerVersion (the list
//! items carry no CodeSha256) for them, newest first, until one matches: at most `1 + ADOPTION_WINDOW` calls,
//! whatever the layer's history. A redelivery of published content costs less still: the claim holds the ARN,
//! and `version_exists` checks it with one GetLayerVersion.
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
//! ListLayerVersions documents no order. moto sorts newest first (and ignores `MaxItems`, answering every
//! version); Lambda is commonly relied on to answer newest first too, which the AWS documentation does not state
//! and these tests can't check. So the page is sorted by version number and cut to the window: the cost stays
//! bounded whatever comes back, and were Lambda's order ever another, the effect would be a missed adoption (a
//! second version of the same bytes), never a wrong one: a version is adopted only on a matching CodeSha256.

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

/// The newest of the layer's newest [`ADOPTION_WINDOW`] versions whose CodeSha256 is `sha` and whose compatible
/// runtimes and architectures are `layer`'s: the same bytes published for other targets are another version.
pub(super) async fn existing_version(
    state: &PublishState,
    layer: &LayerSpec,
    sha: &str,
) -> Result<Option<String>, AwsFault> {
    let layer_name = layer.name.as_str();
    let targets = layer.targets();
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
        let runtimes: Vec<&str> = got
            .compatible_runtimes()
            .iter()
            .map(|r| r.as_str())
            .collect();
        let architectures: Vec<&str> = got
            .compatible_architectures()
            .iter()
            .map(|a| a.as_str())
            .collect();
        if got.content().and_then(|c| c.code_sha256()) == Some(sha)
            && super::types::targets_id(&runtimes, &architectures) == targets
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
pub(crate) async fn version_exists(
    lambda: &aws_sdk_lambda::Client,
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
    match lambda
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

/// submit-build's check: whether the layer version a cached build was published as has been deleted since (GetLayerVersion answers
/// ResourceNotFoundException). The build then runs again: its zip (the same bytes, over the old object as a
/// forced build writes it) reaches publish-layer, which publishes a new version for a claim whose version is
/// gone. A check that fails for any other reason answers `cached` as before.
pub(crate) async fn deleted(
    lambda: Option<&aws_sdk_lambda::Client>,
    layer_name: &str,
    arn: Option<&str>,
) -> bool {
    let (Some(lambda), Some(arn)) = (lambda, arn) else {
        return false;
    };
    match version_exists(lambda, layer_name, arn).await {
        Ok(exists) => {
            if !exists {
                info!(
                    layer_name,
                    layer_version_arn = arn,
                    "the published version was deleted; building again"
                );
            }
            !exists
        }
        Err(fault) => {
            warn!(layer_name, layer_version_arn = arn, error = %fault, "could not check the published version");
            false
        }
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use aws_sdk_lambda::operation::{
        get_layer_version::GetLayerVersionOutput, list_layer_versions::ListLayerVersionsOutput,
    };
    use aws_sdk_lambda::types::{LayerVersionContentOutput, LayerVersionsListItem};
    use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};

    use super::*;
    use crate::config::Config;

    fn state(rules: &[&Rule]) -> PublishState {
        let config =
            Config::from_lookup(|k| (k == "ARTIFACT_BUCKET").then(|| "artifacts".to_owned()))
                .unwrap();
        let s3 = mock_client!(aws_sdk_s3, RuleMode::MatchAny, &[], |c| c
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled()));
        let lambda = mock_client!(aws_sdk_lambda, RuleMode::MatchAny, rules, |c| c
            .retry_config(RetryConfig::disabled()));
        PublishState::new(Arc::new(config), s3, lambda)
    }

    /// Lambda's answer for a deleted version: HTTP 404, `ResourceNotFoundException`.
    fn not_found() -> Option<String> {
        Some(
            r#"{"__type":"ResourceNotFoundException","Type":"User","message":"does not exist"}"#
                .to_owned(),
        )
    }

    #[tokio::test]
    async fn a_deleted_version_does_not_exist_and_a_throttled_check_is_a_fault() {
        let arn = "arn:aws:lambda:us-east-1:123456789012:layer:six:7";
        let found = mock!(aws_sdk_lambda::Client::get_layer_version)
            .match_requests(|r| r.version_number() == Some(7))
            .then_output(|| GetLayerVersionOutput::builder().build());
        let state_found = state(&[&found]);
        assert!(
            version_exists(&state_found.lambda, "six", arn)
                .await
                .unwrap()
        );

        let gone = mock!(aws_sdk_lambda::Client::get_layer_version)
            .sequence()
            .http_status(404, not_found())
            .build();
        let state_gone = state(&[&gone]);
        assert!(
            !version_exists(&state_gone.lambda, "six", arn)
                .await
                .unwrap()
        );
        // An ARN without a version number names nothing that can be attached: no call.
        assert!(
            !version_exists(
                &state_gone.lambda,
                "six",
                "arn:aws:lambda:us-east-1:1:layer:six"
            )
            .await
            .unwrap()
        );
        assert_eq!(gone.num_calls(), 1);

        let throttled = mock!(aws_sdk_lambda::Client::get_layer_version)
            .sequence()
            .http_status(
                429,
                Some(r#"{"Type":"User","message":"Rate exceeded"}"#.to_owned()),
            )
            .build();
        let fault = version_exists(&state(&[&throttled]).lambda, "six", arn)
            .await
            .unwrap_err();
        assert!(fault.is_transient(), "{fault}");
    }

    #[tokio::test]
    async fn adoption_reads_one_page_and_looks_at_the_newest_versions_only() {
        // A page in no particular order and longer than asked for (moto answers every version, ignoring
        // MaxItems): versions 1 to WINDOW + 5. The window is WINDOW + 5 down to 6; version 6 holds the content, and
        // so does version 5, just beyond the window.
        let newest = i64::from(ADOPTION_WINDOW) + 5;
        let items: Vec<LayerVersionsListItem> = [5_i64, 1, newest, 6]
            .into_iter()
            .chain((2..=4).chain(7..newest))
            .map(|v| LayerVersionsListItem::builder().version(v).build())
            .collect();
        let list = mock!(aws_sdk_lambda::Client::list_layer_versions)
            .match_requests(|r| r.max_items() == Some(ADOPTION_WINDOW) && r.marker().is_none())
            .then_output(move || {
                ListLayerVersionsOutput::builder()
                    .set_layer_versions(Some(items.clone()))
                    .next_marker("more")
                    .build()
            });
        let get = mock!(aws_sdk_lambda::Client::get_layer_version).then_compute_output(|r| {
            let v = r.version_number().unwrap_or_default();
            let sha = match v {
                6 | 7 => "match",
                5 => "beyond",
                _ => "other",
            };
            // Version 7 holds the same bytes for another architecture: not this artifact's version.
            let architecture = if v == 7 {
                aws_sdk_lambda::types::Architecture::X8664
            } else {
                aws_sdk_lambda::types::Architecture::Arm64
            };
            GetLayerVersionOutput::builder()
                .version(v)
                .compatible_architectures(architecture)
                .layer_version_arn(format!("arn:aws:lambda:us-east-1:1:layer:six:{v}"))
                .content(
                    LayerVersionContentOutput::builder()
                        .code_sha256(sha)
                        .build(),
                )
                .build()
        });
        let state = state(&[&list, &get]);
        let layer = LayerSpec {
            name: "six".into(),
            runtimes: vec![],
            architectures: vec![aws_sdk_lambda::types::Architecture::Arm64],
            license: None,
            description: String::new(),
        };
        let found = existing_version(&state, &layer, "match").await.unwrap();
        assert_eq!(
            found.as_deref(),
            Some("arn:aws:lambda:us-east-1:1:layer:six:6")
        );
        // Newest first: version 7 (the bytes for x86_64) passed over, the whole window read (6 is its oldest).
        let window = usize::try_from(ADOPTION_WINDOW).unwrap();
        assert_eq!(get.num_calls(), window);
        assert_eq!(list.num_calls(), 1, "one page, never the next");

        // Content only in version 5, beyond the window: not found (what the bound gives up), in a bounded cost.
        let none = existing_version(&state, &layer, "beyond").await.unwrap();
        assert_eq!(none, None);
        assert_eq!(get.num_calls(), 2 * window);
        assert_eq!(list.num_calls(), 2);
    }
}
