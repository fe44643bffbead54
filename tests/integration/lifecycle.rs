//! A layer's life after publishing (issue 24, items 4 and 5): adoption stays cheap however many versions the
//! layer has, and a published version that was deleted is published again, once. The handler's calls go through
//! [`FaultProxy`] in front of moto, which counts the Lambda calls by operation.

use std::{io::Write, time::Duration};

use aws_config::{BehaviorVersion, Region, retry::RetryConfig};
use aws_sdk_lambda::primitives::Blob;
use layerforge::publish::{self, ADOPTION_WINDOW, Guard, Outcome, PublishState};
use serde_json::Value;

use crate::{
    fault_proxy::{Action, Canned, FaultProxy, Rule, Seen},
    helpers::{self, unique},
    publish::{Fixture, metadata, six_zip},
};

/// Rules 0 to 2 count ListLayerVersions, GetLayerVersion and PublishLayerVersion; `extra` come after them.
const LIST: usize = 0;
const GET: usize = 1;
const PUBLISH: usize = 2;

fn is_list(s: &Seen<'_>) -> bool {
    s.method == "GET" && s.path.starts_with("/2018-10-31/layers/") && s.path.ends_with("/versions")
}

fn is_get(s: &Seen<'_>) -> bool {
    s.method == "GET" && s.path.starts_with("/2018-10-31/layers/") && s.path.contains("/versions/")
}

/// Counted, always forwarded.
fn count(matcher: fn(&Seen<'_>) -> bool) -> Rule {
    Rule::new(matcher, &[], Action::Delay(Duration::ZERO))
}

/// A handler state whose clients reach moto through a proxy counting the Lambda calls (then `extra`).
async fn counted(f: &Fixture, extra: Vec<Rule>) -> (FaultProxy, PublishState) {
    let mut rules = vec![
        count(is_list),
        count(is_get),
        count(|s| s.is_publish_layer_version()),
    ];
    rules.extend(extra);
    let proxy = FaultProxy::start(helpers::endpoint(), rules).await;
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(helpers::REGION))
        .endpoint_url(&proxy.endpoint)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "testing", "testing", None, None, "moto",
        ))
        .retry_config(RetryConfig::standard().with_initial_backoff(Duration::from_millis(10)))
        .load()
        .await;
    let mut state = PublishState::new(
        f.state.config.clone(),
        layerforge::aws::s3_client(&sdk),
        layerforge::aws::lambda_client(&sdk),
    );
    state.guard = Guard {
        max_wait: Duration::from_secs(10),
        first_poll: Duration::from_millis(20),
        max_poll: Duration::from_millis(100),
        publish_backoff: Duration::from_millis(20),
        clock_margin: Duration::ZERO,
        ..Guard::default()
    };
    (proxy, state)
}

/// The Lambda calls counted so far: (list, get, publish).
fn calls(proxy: &FaultProxy) -> (usize, usize, usize) {
    (
        proxy.matched(LIST),
        proxy.matched(GET),
        proxy.matched(PUBLISH),
    )
}

/// Uploads `zip` for `layer` under `fingerprint` (again: a new object version) and returns moto's event for it.
async fn deliver(f: &Fixture, layer: &str, zip: &[u8], fingerprint: &str) -> (String, Value) {
    let key = format!("layers/{layer}/python3.12-arm64/{fingerprint}.zip");
    f.upload(&key, zip.to_vec(), metadata(layer, zip, fingerprint), None)
        .await;
    let event = f.event_for(&f.drain().await, &key).await;
    (key, event)
}

/// `n` versions of `layer` published directly (small zips whose bytes are not any artifact's).
async fn seed_versions(f: &Fixture, layer: &str, n: usize) {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    w.start_file("python/seed.py", zip::write::SimpleFileOptions::default())
        .unwrap();
    w.write_all(b"# an old version\n").unwrap();
    let seed = w.finish().unwrap().into_inner();
    for _ in 0..n {
        f.lambda
            .publish_layer_version()
            .layer_name(layer)
            .content(
                aws_sdk_lambda::types::LayerVersionContentInput::builder()
                    .zip_file(Blob::new(seed.clone()))
                    .build(),
            )
            .send()
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn adoption_costs_a_bounded_number_of_calls_however_long_the_history() {
    const HISTORY: usize = 1_000;
    let f = Fixture::new().await;
    let layer = unique("history").to_lowercase();
    let started = std::time::Instant::now();
    seed_versions(&f, &layer, HISTORY).await;
    eprintln!("seeded {HISTORY} versions in {:?}", started.elapsed());
    assert_eq!(f.layer_versions(&layer).await.len(), HISTORY);

    let second = six_zip("history-b");
    let (_, lost_event) = deliver(&f, &layer, &second, "bbbbbbbbbbbbbbbb").await;
    let lost_path = format!("/layers/{layer}/versions");
    let (proxy, state) = counted(
        &f,
        // The second content's first PublishLayerVersion lands and its answer is lost.
        vec![Rule::new(
            move |s| s.is_publish_layer_version() && s.path.ends_with(&lost_path),
            &[2],
            Action::After(Canned::lambda(500, "ServiceException", "lost")),
        )],
    )
    .await;

    // A new content: one page of the newest versions, GetLayerVersion for each, then one publish.
    let first = six_zip("history-a");
    let (key, event) = deliver(&f, &layer, &first, "aaaaaaaaaaaaaaaa").await;
    let response = publish::handle(&state, event.clone()).await.unwrap();
    let Outcome::Published { version, .. } = &response.records[0].outcome else {
        panic!("{response:?}")
    };
    assert_eq!(*version, HISTORY as i64 + 1);
    let (list, get, published) = calls(&proxy);
    let total = list + get + published;
    eprintln!(
        "FIGURES {HISTORY} versions: a new content publishes with {total} Lambda calls \
         ({list} ListLayerVersions, {get} GetLayerVersion, {published} PublishLayerVersion)"
    );
    assert_eq!((list, published), (1, 1));
    assert!(
        get <= ADOPTION_WINDOW as usize,
        "{get} GetLayerVersion calls for {HISTORY} versions"
    );

    // The same artifact again: the claim answers; one GetLayerVersion checks that its version still exists.
    let again = publish::handle(&state, event).await.unwrap();
    assert_eq!(again.records[0].outcome.status(), "duplicate", "{again:?}");
    let (list2, get2, published2) = calls(&proxy);
    let redelivery = (list2 - list, get2 - get, published2 - published);
    eprintln!(
        "FIGURES {HISTORY} versions: a redelivery costs {} Lambda call(s)",
        redelivery.0 + redelivery.1 + redelivery.2
    );
    assert_eq!(redelivery, (0, 1, 0));
    assert_eq!(
        f.tags(&key).await.get(publish::LAYER_VERSION_ARN_TAG),
        response.records[0]
            .outcome
            .layer_version_arn()
            .map(str::to_owned)
            .as_ref()
    );

    // A lost PublishLayerVersion answer is still found among the newest versions and adopted, not republished.
    let lost = publish::handle(&state, lost_event).await.unwrap();
    assert_eq!(lost.records[0].outcome.status(), "duplicate", "{lost:?}");
    assert!(
        lost.records[0]
            .outcome
            .layer_version_arn()
            .is_some_and(|arn| arn.ends_with(&format!(":{}", HISTORY + 2))),
        "{lost:?}"
    );
    assert_eq!(f.layer_versions(&layer).await.len(), HISTORY + 2);
    let (list3, get3, published3) = calls(&proxy);
    let adoption = (list3 - list2) + (get3 - get2) + (published3 - published2);
    eprintln!("FIGURES {HISTORY} versions: a lost answer is adopted with {adoption} Lambda calls");
    assert_eq!(
        published3 - published2,
        1,
        "PublishLayerVersion reached Lambda once"
    );
    assert!(
        adoption <= 2 * (1 + ADOPTION_WINDOW as usize) + 1,
        "{adoption}"
    );
}

#[tokio::test]
async fn a_deleted_version_is_published_again_once() {
    let f = Fixture::new().await;
    let layer = unique("deleted").to_lowercase();
    let zip = six_zip("deleted");
    let (key, event) = deliver(&f, &layer, &zip, "dddddddddddddddd").await;
    let first = publish::handle(&f.state, event).await.unwrap();
    assert_eq!(first.records[0].outcome.status(), "published", "{first:?}");
    let dead = first.records[0]
        .outcome
        .layer_version_arn()
        .unwrap()
        .to_owned();
    f.lambda
        .delete_layer_version()
        .layer_name(&layer)
        .version_number(1)
        .send()
        .await
        .unwrap();
    // What GetLayerVersion answers for it: the code the handler recognises.
    let err = f
        .lambda
        .get_layer_version()
        .layer_name(&layer)
        .version_number(1)
        .send()
        .await
        .unwrap_err();
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_resource_not_found_exception()),
        "{err:?}"
    );
    assert!(f.layer_versions(&layer).await.is_empty());

    // A new build of the same bytes (e.g. forced): a new object version, delivered six times at once while the
    // winner's PublishLayerVersion takes a second.
    let (_, event) = deliver(&f, &layer, &zip, "dddddddddddddddd").await;
    let (proxy, state) = counted(
        &f,
        vec![Rule::new(
            |s| s.is_publish_layer_version(),
            &[1],
            Action::Delay(Duration::from_secs(1)),
        )],
    )
    .await;
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let (state, event) = (state.clone(), event.clone());
        tasks.push(tokio::spawn(
            async move { publish::handle(&state, event).await },
        ));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap().unwrap().records.remove(0).outcome);
    }
    let status = |s: &str| outcomes.iter().filter(|o| o.status() == s).count();
    assert_eq!(
        (status("published"), status("duplicate")),
        (1, 5),
        "{outcomes:?}"
    );
    assert_eq!(proxy.matched(PUBLISH), 1);
    assert_eq!(f.layer_versions(&layer).await, vec![2], "one new version");
    let arn = outcomes[0].layer_version_arn().unwrap().to_owned();
    assert_ne!(arn, dead);
    assert!(
        outcomes
            .iter()
            .all(|o| o.layer_version_arn() == Some(arn.as_str()))
    );
    assert_eq!(
        f.tags(&key).await.get(publish::LAYER_VERSION_ARN_TAG),
        Some(&arn)
    );

    // Later deliveries answer the new version, and publish nothing.
    let later = publish::handle(&state, event).await.unwrap();
    assert_eq!(
        later.records[0].outcome.layer_version_arn(),
        Some(arn.as_str())
    );
    assert_eq!(f.layer_versions(&layer).await, vec![2]);
    eprintln!(
        "deleted version: 7 deliveries after the delete, {} PublishLayerVersion call(s)",
        proxy.matched(PUBLISH)
    );
}
