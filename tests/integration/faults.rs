//! publish-layer under faults: the handler's AWS calls go through [`FaultProxy`] in front of moto, which fails,
//! loses the answer of, delays or hangs chosen calls. Each test counts the layer versions that came out and
//! checks that nothing was tagged rejected (DESIGN section 6: faults are never rejections).

use std::{
    collections::HashMap,
    time::{Duration, SystemTime},
};

use aws_config::{BehaviorVersion, Region, retry::RetryConfig};
use layerforge::publish::{self, FUNCTION_TIMEOUT, Guard, Outcome, PublishState};
use serde_json::Value;

use crate::{
    fault_proxy::{Action, Canned, FaultProxy, Rule, Seen},
    helpers::{self, unique},
    publish::{Fixture, metadata, six_zip},
};

/// An artifact uploaded to the fixture's bucket and the event moto generated for it.
struct Artifact {
    layer: String,
    key: String,
    event: Value,
}

async fn artifact(f: &Fixture, name: &str) -> Artifact {
    let layer = unique(name).to_lowercase();
    let key = format!("layers/{layer}/python3.12-arm64/0123456789abcdef.zip");
    let zip = six_zip(&layer);
    f.upload(
        &key,
        zip.clone(),
        metadata(&layer, &zip, "0123456789abcdef"),
        None,
    )
    .await;
    let bodies = f.drain().await;
    let event = f.event_for(&bodies, &key).await;
    Artifact { layer, key, event }
}

/// A handler state whose clients reach moto through a proxy with `rules`, with quick retries and backoffs.
async fn through_proxy(f: &Fixture, rules: Vec<Rule>) -> (FaultProxy, PublishState) {
    let proxy = FaultProxy::start(helpers::endpoint(), rules).await;
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(helpers::REGION))
        .endpoint_url(&proxy.endpoint)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "testing", "testing", None, None, "moto",
        ))
        // The SDK's standard mode (3 attempts), with a backoff short enough for a test.
        .retry_config(RetryConfig::standard().with_initial_backoff(Duration::from_millis(10)))
        .load()
        .await;
    let mut state = PublishState::new(
        f.state.config.clone(),
        layerforge::aws::s3_client(&sdk),
        layerforge::aws::lambda_client(&sdk),
    );
    state.guard = Guard {
        max_wait: Duration::from_secs(5),
        first_poll: Duration::from_millis(20),
        max_poll: Duration::from_millis(100),
        publish_backoff: Duration::from_millis(20),
        clock_margin: Duration::ZERO,
        ..Guard::default()
    };
    (proxy, state)
}

fn publish_layer_version(s: &Seen<'_>) -> bool {
    s.is_publish_layer_version()
}

/// The claim's creation (`If-None-Match: *`).
fn claim_create(s: &Seen<'_>) -> bool {
    s.is_claim_put("if-none-match")
}

/// The outcome's record or a takeover (`If-Match: <etag>`).
fn claim_record(s: &Seen<'_>) -> bool {
    s.is_claim_put("if-match")
}

async fn assert_not_rejected(f: &Fixture, key: &str) {
    let tags = f.tags(key).await;
    assert!(
        !tags.contains_key(publish::STATUS_TAG) && !tags.contains_key(publish::REASON_TAG),
        "{key} must not be tagged rejected: {tags:?}"
    );
}

fn error_type(err: publish::PublishError) -> String {
    layerforge::function_error::FunctionError::from(err).error_type
}

fn in_ms(ms: u64) -> SystemTime {
    SystemTime::now() + Duration::from_millis(ms)
}

#[tokio::test]
async fn a_lost_publish_answer_is_adopted_never_published_again() {
    let f = Fixture::new().await;
    let a = artifact(&f, "lost").await;
    let b = artifact(&f, "lost-in").await;
    let a_path = format!("/layers/{}/versions", a.layer);
    let b_path = format!("/layers/{}/versions", b.layer);
    let (proxy, mut state) = through_proxy(
        &f,
        vec![
            // Lambda publishes, then the answer is lost (HTTP 500 after the effect).
            Rule::new(
                move |s| s.is_publish_layer_version() && s.path.ends_with(&a_path),
                &[1],
                Action::After(Canned::lambda(500, "ServiceException", "lost")),
            ),
            Rule::new(
                move |s| s.is_publish_layer_version() && s.path.ends_with(&b_path),
                &[1],
                Action::After(Canned::lambda(500, "ServiceException", "lost")),
            ),
        ],
    )
    .await;

    // One attempt per invocation: the first delivery fails (the event is kept) and releases its claim...
    state.guard.publish_attempts = 1;
    let err = publish::handle(&state, a.event.clone()).await.unwrap_err();
    assert_eq!(error_type(err), "Transient");
    assert_eq!(f.layer_versions(&a.layer).await, vec![1]);
    // ... and the next one finds the version by CodeSha256 instead of publishing a second.
    let again = publish::handle(&state, a.event.clone()).await.unwrap();
    assert_eq!(again.records[0].outcome.status(), "duplicate", "{again:?}");
    let arn = again.records[0]
        .outcome
        .layer_version_arn()
        .unwrap()
        .to_owned();
    assert!(arn.ends_with(&format!(":layer:{}:1", a.layer)), "{arn}");
    assert_eq!(f.layer_versions(&a.layer).await, vec![1]);
    assert_eq!(
        proxy.matched(0),
        1,
        "PublishLayerVersion reached Lambda once: never retried, then adopted"
    );
    assert_eq!(f.tags(&a.key).await.get("layer-version-arn"), Some(&arn));
    assert_not_rejected(&f, &a.key).await;

    // With the default three attempts, the same invocation looks again after the lost answer and adopts.
    state.guard.publish_attempts = 3;
    let response = publish::handle(&state, b.event.clone()).await.unwrap();
    assert_eq!(
        response.records[0].outcome.status(),
        "duplicate",
        "{response:?}"
    );
    assert_eq!(f.layer_versions(&b.layer).await, vec![1]);
    assert_eq!(
        proxy.matched(1),
        1,
        "one PublishLayerVersion call for {}",
        b.layer
    );
    assert_not_rejected(&f, &b.key).await;
    eprintln!(
        "lost answer: deliveries 2 + 1, versions {} + {}",
        f.layer_versions(&a.layer).await.len(),
        f.layer_versions(&b.layer).await.len()
    );
}

#[tokio::test]
async fn a_full_code_storage_fails_two_deliveries_then_the_third_publishes() {
    let f = Fixture::new().await;
    let a = artifact(&f, "quota").await;
    let (proxy, state) = through_proxy(
        &f,
        vec![Rule::new(
            publish_layer_version,
            &[1, 2],
            Action::Before(Canned::lambda(
                400,
                "CodeStorageExceededException",
                "Code storage limit exceeded.",
            )),
        )],
    )
    .await;

    for delivery in 1..=2 {
        let err = publish::handle(&state, a.event.clone()).await.unwrap_err();
        assert_eq!(
            err.results()[0].outcome.status(),
            "failed",
            "delivery {delivery}"
        );
        assert!(
            err.to_string().contains("CodeStorageExceededException"),
            "{err}"
        );
        assert_eq!(error_type(err), "AwsError", "delivery {delivery}");
        assert!(f.layer_versions(&a.layer).await.is_empty());
        assert_not_rejected(&f, &a.key).await;
    }
    // The quota is free again: the released claim lets the third delivery publish at once.
    let response = publish::handle(&state, a.event.clone()).await.unwrap();
    assert_eq!(
        response.records[0].outcome.status(),
        "published",
        "{response:?}"
    );
    assert_eq!(f.layer_versions(&a.layer).await, vec![1]);
    assert_eq!(
        proxy.matched(0),
        3,
        "the quota error is not retried within an invocation"
    );
    assert_not_rejected(&f, &a.key).await;
}

#[tokio::test]
async fn throttling_is_retried_after_looking_for_the_version() {
    let f = Fixture::new().await;
    let a = artifact(&f, "throttled").await;
    let (proxy, state) = through_proxy(
        &f,
        vec![
            Rule::new(
                publish_layer_version,
                &[1, 2],
                Action::Before(Canned::lambda(
                    429,
                    "TooManyRequestsException",
                    "Rate exceeded",
                )),
            ),
            Rule::new(
                |s| {
                    s.method == "GET"
                        && s.path.starts_with("/2018-10-31/layers/")
                        && s.path.ends_with("/versions")
                },
                // No nth: only counted, always forwarded.
                &[],
                Action::Hang,
            ),
        ],
    )
    .await;
    let response = publish::handle(&state, a.event.clone()).await.unwrap();
    assert_eq!(
        response.records[0].outcome.status(),
        "published",
        "{response:?}"
    );
    assert_eq!(f.layer_versions(&a.layer).await, vec![1]);
    assert_eq!(proxy.matched(0), 3);
    assert_eq!(
        proxy.matched(1),
        3,
        "ListLayerVersions before each PublishLayerVersion"
    );
    assert_not_rejected(&f, &a.key).await;
}

#[tokio::test]
async fn s3_5xx_on_the_claim_write_is_recognised_as_our_own_claim() {
    let f = Fixture::new().await;
    let a = artifact(&f, "claim5xx").await;
    let b = artifact(&f, "claim5xx-before").await;
    let (proxy, state) = through_proxy(
        &f,
        vec![
            // The claim is written, the answer lost: the SDK's retry gets 412 from our own claim.
            Rule::new(
                claim_create,
                &[1],
                Action::After(Canned::s3(503, "SlowDown")),
            ),
        ],
    )
    .await;
    let response = publish::handle(&state, a.event.clone()).await.unwrap();
    assert_eq!(
        response.records[0].outcome.status(),
        "published",
        "{response:?}"
    );
    assert_eq!(
        proxy.matched(0),
        2,
        "the SDK retried the conditional write once"
    );
    assert_eq!(f.layer_versions(&a.layer).await, vec![1]);
    assert_not_rejected(&f, &a.key).await;

    // 503 before the write (no effect): the SDK's retry writes it.
    let (proxy, state) = through_proxy(
        &f,
        vec![Rule::new(
            claim_create,
            &[1],
            Action::Before(Canned::s3(503, "SlowDown")),
        )],
    )
    .await;
    let response = publish::handle(&state, b.event.clone()).await.unwrap();
    assert_eq!(
        response.records[0].outcome.status(),
        "published",
        "{response:?}"
    );
    assert_eq!(proxy.matched(0), 2);
    assert_eq!(f.layer_versions(&b.layer).await, vec![1]);
    assert_not_rejected(&f, &b.key).await;
}

#[tokio::test]
async fn s3_5xx_on_the_arn_record_fails_the_invocation_and_the_next_delivery_adopts() {
    let f = Fixture::new().await;
    let a = artifact(&f, "record5xx").await;
    let (proxy, state) = through_proxy(
        &f,
        // Every attempt of the SDK (three) to record the ARN fails.
        vec![Rule::new(
            claim_record,
            &[1, 2, 3],
            Action::Before(Canned::s3(500, "InternalError")),
        )],
    )
    .await;
    let err = publish::handle_until(&state, a.event.clone(), Some(in_ms(500)))
        .await
        .unwrap_err();
    assert_eq!(error_type(err), "Transient");
    assert_eq!(proxy.matched(0), 3);
    assert_eq!(f.layer_versions(&a.layer).await, vec![1]);

    // The first delivery's lease (its deadline) runs out; the next takes the claim over and adopts.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let response = publish::handle(&state, a.event.clone()).await.unwrap();
    assert_eq!(
        response.records[0].outcome.status(),
        "duplicate",
        "{response:?}"
    );
    assert_eq!(f.layer_versions(&a.layer).await, vec![1]);
    assert_eq!(
        f.tags(&a.key)
            .await
            .get("layer-version-arn")
            .map(String::as_str),
        response.records[0].outcome.layer_version_arn()
    );
    assert_not_rejected(&f, &a.key).await;
}

#[tokio::test]
async fn object_versions_of_the_same_bytes_delivered_concurrently_give_one_version() {
    let f = Fixture::new().await;
    let layer = unique("retried-batch").to_lowercase();
    let key = format!("layers/{layer}/python3.12-arm64/0123456789abcdef.zip");
    let zip = six_zip(&layer);
    // A retried Batch attempt uploads the same bytes again: a second object version.
    for _ in 0..2 {
        f.upload(
            &key,
            zip.clone(),
            metadata(&layer, &zip, "0123456789abcdef"),
            None,
        )
        .await;
    }
    let event = f.event_for(&f.drain().await, &key).await;
    let versions: Vec<String> =
        f.s3.list_object_versions()
            .bucket(&f.bucket)
            .prefix(&key)
            .send()
            .await
            .unwrap()
            .versions()
            .iter()
            .map(|v| v.version_id().unwrap().to_owned())
            .collect();
    assert_eq!(versions.len(), 2, "{versions:?}");
    assert_ne!(versions[0], versions[1]);
    // Each delivery names its object version, as S3's records do.
    let events: Vec<Value> = versions
        .iter()
        .map(|v| {
            let mut e = event.clone();
            e["Records"][0]["s3"]["object"]["versionId"] = Value::from(v.as_str());
            e
        })
        .collect();

    // PublishLayerVersion takes a second: every other delivery arrives while the winner holds the claim.
    let (_proxy, state) = through_proxy(
        &f,
        vec![Rule::new(
            publish_layer_version,
            &[1],
            Action::Delay(Duration::from_secs(1)),
        )],
    )
    .await;
    let mut tasks = Vec::new();
    for _ in 0..3 {
        for event in &events {
            let (state, event) = (state.clone(), event.clone());
            tasks.push(tokio::spawn(
                async move { publish::handle(&state, event).await },
            ));
        }
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap().unwrap().records.remove(0).outcome);
    }
    let count = |status: &str| outcomes.iter().filter(|o| o.status() == status).count();
    assert_eq!(
        (count("published"), count("duplicate")),
        (1, 5),
        "{outcomes:?}"
    );
    assert_eq!(f.layer_versions(&layer).await, vec![1]);
    let arn = outcomes[0].layer_version_arn().unwrap();
    for version in &versions {
        let tags: HashMap<String, String> =
            f.s3.get_object_tagging()
                .bucket(&f.bucket)
                .key(&key)
                .version_id(version)
                .send()
                .await
                .unwrap()
                .tag_set()
                .iter()
                .map(|t| (t.key().to_owned(), t.value().to_owned()))
                .collect();
        assert_eq!(
            tags.get("layer-version-arn").map(String::as_str),
            Some(arn),
            "{version}"
        );
        assert!(
            !tags.contains_key(publish::STATUS_TAG),
            "{version}: {tags:?}"
        );
    }
    eprintln!(
        "2 object versions x 3 deliveries: {} layer version(s)",
        f.layer_versions(&layer).await.len()
    );
}

#[tokio::test]
async fn a_crash_between_publish_and_record_is_adopted_by_the_next_delivery() {
    let f = Fixture::new().await;
    let a = artifact(&f, "crash").await;
    let (proxy, state) = through_proxy(
        &f,
        // The ARN record never gets an answer: the delivery dies there (a crash after publishing).
        vec![Rule::new(claim_record, &[1], Action::Hang)],
    )
    .await;
    let deadline = in_ms(300);
    let first = {
        let (state, event) = (state.clone(), a.event.clone());
        tokio::spawn(async move { publish::handle_until(&state, event, Some(deadline)).await })
    };
    // Wait until it has published and is recording (however slow the machine), then crash it.
    for _ in 0..400 {
        if proxy.matched(0) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        proxy.matched(0),
        1,
        "the first delivery reached the ARN record"
    );
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    assert_eq!(f.layer_versions(&a.layer).await, vec![1]);
    if let Ok(left) = deadline.duration_since(SystemTime::now()) {
        tokio::time::sleep(left).await;
    }

    // After the crashed delivery's deadline its claim is taken over, and the version adopted.
    let response = publish::handle(&state, a.event.clone()).await.unwrap();
    assert_eq!(
        response.records[0].outcome.status(),
        "duplicate",
        "{response:?}"
    );
    assert_eq!(f.layer_versions(&a.layer).await, vec![1]);
    assert_eq!(
        f.tags(&a.key)
            .await
            .get("layer-version-arn")
            .map(String::as_str),
        response.records[0].outcome.layer_version_arn()
    );
    assert_not_rejected(&f, &a.key).await;
}

#[tokio::test]
async fn only_lambdas_refusal_of_the_artifact_is_a_rejection() {
    let f = Fixture::new().await;
    let refused = artifact(&f, "refused").await;
    let unreadable = artifact(&f, "unreadable").await;
    let (refused_path, unreadable_path) = (
        format!("/layers/{}/versions", refused.layer),
        format!("/layers/{}/versions", unreadable.layer),
    );
    let (proxy, state) = through_proxy(
        &f,
        vec![
            Rule::new(
                move |s| s.is_publish_layer_version() && s.path.ends_with(&refused_path),
                &[1, 2],
                Action::Before(Canned::lambda(
                    400,
                    "InvalidParameterValueException",
                    "Unzipped size must be smaller than 262144000 bytes",
                )),
            ),
            // Lambda could not read the S3 content: the deployment's fault, not the artifact's.
            Rule::new(
                move |s| s.is_publish_layer_version() && s.path.ends_with(&unreadable_path),
                &[1],
                Action::Before(Canned::lambda(
                    400,
                    "InvalidParameterValueException",
                    "Error occurred while GetObject. S3 Error Code: AccessDenied. S3 Error Message: Access Denied",
                )),
            ),
        ],
    )
    .await;

    let response = publish::handle(&state, refused.event.clone())
        .await
        .unwrap();
    assert!(
        matches!(&response.records[0].outcome, publish::Outcome::Rejected { code, .. } if code == "lambda-refused"),
        "{response:?}"
    );
    let tags = f.tags(&refused.key).await;
    assert_eq!(
        tags.get(publish::STATUS_TAG).map(String::as_str),
        Some("rejected")
    );
    assert_eq!(
        tags.get(publish::REASON_TAG).map(String::as_str),
        Some("lambda-refused")
    );
    // The rejection is recorded in the claim: a redelivery answers it without calling Lambda again.
    let again = publish::handle(&state, refused.event.clone())
        .await
        .unwrap();
    assert_eq!(again.records[0].outcome.status(), "rejected", "{again:?}");
    assert_eq!(proxy.matched(0), 1);
    assert!(f.layer_versions(&refused.layer).await.is_empty());

    let err = publish::handle(&state, unreadable.event.clone())
        .await
        .unwrap_err();
    assert_eq!(error_type(err), "AwsError");
    assert!(f.layer_versions(&unreadable.layer).await.is_empty());
    assert_not_rejected(&f, &unreadable.key).await;
    // Once Lambda can read the bucket again, the next delivery publishes.
    let response = publish::handle(&state, unreadable.event.clone())
        .await
        .unwrap();
    assert_eq!(
        response.records[0].outcome.status(),
        "published",
        "{response:?}"
    );
    assert_eq!(f.layer_versions(&unreadable.layer).await, vec![1]);
    assert_not_rejected(&f, &unreadable.key).await;
}

/// One definition: the lease without a known deadline is the function's timeout (plus the clock margin), and
/// the template deploys publish-layer with that timeout.
#[test]
fn the_template_timeout_is_the_lease_definition() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("template.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let template: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let timeout = &template["Resources"]["PublishLayerFunction"]["Properties"]["Timeout"];
    assert_eq!(
        timeout.as_u64(),
        Some(FUNCTION_TIMEOUT.as_secs()),
        "template.yaml PublishLayerFunction Timeout must be publish::FUNCTION_TIMEOUT"
    );
    let guard = Guard::default();
    assert_eq!(guard.lease, FUNCTION_TIMEOUT + guard.clock_margin);
    assert!(
        guard.max_wait < FUNCTION_TIMEOUT,
        "a loser gives up before its own timeout"
    );
    // With a deadline, the lease is that deadline plus the margin, whatever the time of the claim.
    assert_eq!(
        publish::lease_until(5, Some(1_000), &guard),
        1_000 + guard.clock_margin.as_millis() as u64
    );
}

#[tokio::test]
async fn an_object_larger_than_any_layer_is_rejected_without_reading_it() {
    let f = Fixture::new().await;
    let a = artifact(&f, "oversized").await;
    let len = six_zip(&a.layer).len() as u64;
    // Every GetObject of the artifact (ranged or streamed), not its tagging: counted, never failed.
    let object_path = format!("/{}/{}", f.bucket, a.key);
    let rules = vec![Rule::new(
        move |s| s.method == "GET" && s.path == object_path && !s.query.contains("tagging"),
        &[],
        Action::Delay(Duration::ZERO),
    )];
    let (proxy, mut state) = through_proxy(&f, rules).await;
    // The deployment's limit is 315 MiB (zipcheck::MAX_OBJECT_BYTES); a limit one byte under this zip stands in
    // for an object over it without uploading 315 MiB to moto.
    state.limits.max_object_bytes = len - 1;
    let response = publish::handle(&state, a.event.clone()).await.unwrap();
    match &response.records[0].outcome {
        Outcome::Rejected { code, reason } => {
            assert_eq!(code, "object-too-large");
            assert!(reason.contains(&len.to_string()), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(proxy.matched(0), 0, "the body was read");
    let tags = f.tags(&a.key).await;
    assert_eq!(
        tags.get("layerforge-reason").map(String::as_str),
        Some("object-too-large")
    );
    assert!(f.layer_versions(&a.layer).await.is_empty());

    // The counter sees reads: under the default limit the same object is read (ranged, then streamed) and
    // published.
    state.limits = Default::default();
    let response = publish::handle(&state, a.event).await.unwrap();
    assert_eq!(response.records[0].outcome.status(), "published");
    assert!(proxy.matched(0) >= 2, "{}", proxy.matched(0));
    assert_eq!(f.layer_versions(&a.layer).await, vec![1]);
}
