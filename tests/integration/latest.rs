//! The latest pointer (issue 24 item 1): after each publish, publish-layer moves
//! `/layerforge/<stack>/<layer>/<runtime>/<arch>/latest` forward, never backwards, writes nothing on a
//! redelivery, and concurrent deliveries converge on the highest version. Against moto's S3, Lambda and SSM.

use std::{sync::Arc, time::Duration};

use aws_config::{BehaviorVersion, Region, retry::RetryConfig};
use layerforge::publish::{self, PublishState};
use serde_json::Value;

use crate::{
    fault_proxy::{Action, Canned, FaultProxy, Rule},
    helpers::{self, unique},
    publish::{Fixture, metadata, six_zip},
};

const STACK: &str = "lf-latest";

/// The fixture's handler state, keeping pointers of the stack [`STACK`] through `ssm`.
fn with_pointers(f: &Fixture, ssm: aws_sdk_ssm::Client) -> PublishState {
    let config = helpers::config(&f.bucket, "{}", &[("STACK_NAME", STACK)]);
    PublishState::new(Arc::new(config), f.s3.clone(), f.lambda.clone()).with_ssm(ssm)
}

/// Uploads `zip` as content `fingerprint` of `layer` and returns moto's event for it.
async fn deliver(f: &Fixture, layer: &str, zip: &[u8], fingerprint: &str) -> Value {
    let key = format!("layers/{layer}/python3.12-arm64/{fingerprint}.zip");
    f.upload(&key, zip.to_vec(), metadata(layer, zip, fingerprint), None)
        .await;
    f.event_for(&f.drain().await, &key).await
}

/// The ARN a delivery ended with (published or duplicate).
async fn handled(state: &PublishState, event: Value) -> (String, &'static str) {
    let response = publish::handle(state, event).await.unwrap();
    let outcome = &response.records[0].outcome;
    let arn = outcome
        .layer_version_arn()
        .unwrap_or_else(|| panic!("{response:?}"));
    (arn.to_owned(), outcome.status())
}

/// The parameter's value and version, `None` when there is none.
async fn parameter(ssm: &aws_sdk_ssm::Client, layer: &str, runtime: &str) -> Option<(String, i64)> {
    let name = publish::parameter_name(STACK, layer, runtime, "arm64");
    match ssm.get_parameter().name(&name).send().await {
        Ok(out) => out
            .parameter()
            .map(|p| (p.value().unwrap_or_default().to_owned(), p.version())),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_parameter_not_found()) =>
        {
            None
        }
        Err(e) => panic!("GetParameter {name}: {e:?}"),
    }
}

/// The pointer's truth in S3: (ARN, ETag).
async fn truth(f: &Fixture, layer: &str, runtime: &str) -> (String, String) {
    let out =
        f.s3.get_object()
            .bucket(&f.bucket)
            .key(publish::pointer_key(layer, runtime, "arm64"))
            .send()
            .await
            .unwrap();
    let etag = out.e_tag().unwrap_or_default().to_owned();
    let body: Value =
        serde_json::from_slice(&out.body.collect().await.unwrap().into_bytes()).unwrap();
    (body["layer_version_arn"].as_str().unwrap().to_owned(), etag)
}

#[tokio::test]
async fn the_pointer_resolves_to_the_newest_version_and_never_moves_back() {
    let f = Fixture::new().await;
    let ssm = layerforge::aws::ssm_client(&f.sdk);
    let state = with_pointers(&f, ssm.clone());
    let layer = unique("latest").to_lowercase();

    // Two builds of the layer, in order: the pointer follows, for every runtime the version lists.
    let first = deliver(&f, &layer, &six_zip("latest-1"), "1111111111111111").await;
    let (v1, status) = handled(&state, first.clone()).await;
    assert_eq!(status, "published");
    for runtime in ["python3.12", "python3.13"] {
        assert_eq!(
            parameter(&ssm, &layer, runtime).await.unwrap().0,
            v1,
            "{runtime}"
        );
    }
    let second = deliver(&f, &layer, &six_zip("latest-2"), "2222222222222222").await;
    let (v2, _) = handled(&state, second.clone()).await;
    assert!(v2.ends_with(":2"), "{v2}");
    let (value, version) = parameter(&ssm, &layer, "python3.12").await.unwrap();
    assert_eq!(value, v2);
    let (truth_arn, etag) = truth(&f, &layer, "python3.12").await;
    assert_eq!(truth_arn, v2);

    // v1's event delivered again, late: a duplicate, and the pointer stays on v2 (S3 and SSM untouched).
    let (again, status) = handled(&state, first).await;
    assert_eq!((again.as_str(), status), (v1.as_str(), "duplicate"));
    assert_eq!(
        parameter(&ssm, &layer, "python3.12").await.unwrap(),
        (v2.clone(), version)
    );
    assert_eq!(
        truth(&f, &layer, "python3.12").await,
        (v2.clone(), etag.clone())
    );

    // A redelivery of v2 writes nothing either: the parameter's version stays.
    let (again, status) = handled(&state, second).await;
    assert_eq!((again.as_str(), status), (v2.as_str(), "duplicate"));
    assert_eq!(
        parameter(&ssm, &layer, "python3.12").await.unwrap(),
        (v2.clone(), version)
    );
    assert_eq!(truth(&f, &layer, "python3.12").await, (v2.clone(), etag));

    // An older version whose pointer update comes after a newer one's: v3 is published by a delivery that
    // keeps no pointer (its update still to come), v4 moves the pointer, then v3's redelivery arrives.
    let third = deliver(&f, &layer, &six_zip("latest-3"), "3333333333333333").await;
    let (v3, _) = handled(&f.state, third.clone()).await;
    assert_eq!(parameter(&ssm, &layer, "python3.12").await.unwrap().0, v2);
    let fourth = deliver(&f, &layer, &six_zip("latest-4"), "4444444444444444").await;
    let (v4, _) = handled(&state, fourth).await;
    assert!(v3.ends_with(":3") && v4.ends_with(":4"), "{v3} {v4}");
    let (_, version) = parameter(&ssm, &layer, "python3.12").await.unwrap();
    let (again, status) = handled(&state, third).await;
    assert_eq!((again.as_str(), status), (v3.as_str(), "duplicate"));
    for runtime in ["python3.12", "python3.13"] {
        assert_eq!(truth(&f, &layer, runtime).await.0, v4, "{runtime}");
    }
    assert_eq!(
        parameter(&ssm, &layer, "python3.12").await.unwrap(),
        (v4, version)
    );
}

#[tokio::test]
async fn concurrent_deliveries_converge_on_the_highest_version() {
    const CONTENTS: usize = 6;
    let f = Fixture::new().await;
    let ssm = layerforge::aws::ssm_client(&f.sdk);
    let state = with_pointers(&f, ssm.clone());
    let layer = unique("latest-race").to_lowercase();

    // Six versions published without their pointer updates, then every delivery at once, twice each.
    let mut events = Vec::new();
    let mut newest = String::new();
    for i in 0..CONTENTS {
        let event = deliver(
            &f,
            &layer,
            &six_zip(&format!("race-{i}")),
            &format!("{i:016x}"),
        )
        .await;
        newest = handled(&f.state, event.clone()).await.0;
        events.push(event);
    }
    assert!(parameter(&ssm, &layer, "python3.12").await.is_none());
    let tasks: Vec<_> = events
        .iter()
        .chain(events.iter().rev())
        .map(|event| {
            let (state, event) = (state.clone(), event.clone());
            tokio::spawn(async move { publish::handle(&state, event).await })
        })
        .collect();
    for task in tasks {
        let response = task.await.unwrap().unwrap();
        assert_eq!(response.records[0].outcome.status(), "duplicate");
    }
    assert!(newest.ends_with(&format!(":{CONTENTS}")), "{newest}");
    for runtime in ["python3.12", "python3.13"] {
        assert_eq!(truth(&f, &layer, runtime).await.0, newest, "{runtime}");
        assert_eq!(
            parameter(&ssm, &layer, runtime).await.unwrap().0,
            newest,
            "{runtime}"
        );
    }
    assert_eq!(f.layer_versions(&layer).await.len(), CONTENTS);
}

#[tokio::test]
async fn a_fault_in_the_pointer_update_fails_the_delivery_and_its_retry_publishes_nothing_twice() {
    let f = Fixture::new().await;
    let layer = unique("latest-fault").to_lowercase();
    // Every PutParameter of the first delivery is throttled (the SDK's three attempts).
    let proxy = FaultProxy::start(
        helpers::endpoint(),
        vec![Rule::new(
            |s| {
                s.headers
                    .get("x-amz-target")
                    .is_some_and(|t| t == "AmazonSSM.PutParameter")
            },
            &[1, 2, 3],
            Action::Before(Canned::lambda(400, "ThrottlingException", "Rate exceeded")),
        )],
    )
    .await;
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(helpers::REGION))
        .endpoint_url(&proxy.endpoint)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "testing", "testing", None, None, "moto",
        ))
        .retry_config(RetryConfig::standard().with_initial_backoff(Duration::from_millis(10)))
        .load()
        .await;
    let ssm = layerforge::aws::ssm_client(&sdk);
    let state = with_pointers(&f, ssm.clone());

    let event = deliver(&f, &layer, &six_zip("latest-fault"), "5555555555555555").await;
    let err = publish::handle(&state, event.clone()).await.unwrap_err();
    assert_eq!(err.results()[0].outcome.status(), "failed");
    assert_eq!(
        layerforge::function_error::FunctionError::from(err).error_type,
        "Transient"
    );
    assert_eq!(proxy.matched(0), 3);
    assert!(parameter(&ssm, &layer, "python3.12").await.is_none());

    // Lambda's retry: a duplicate (the claim holds the ARN) that writes the pointer; one version in all.
    let (arn, status) = handled(&state, event).await;
    assert_eq!(status, "duplicate");
    assert!(matches!(f.layer_versions(&layer).await.as_slice(), [1]));
    assert_eq!(parameter(&ssm, &layer, "python3.12").await.unwrap().0, arn);
    assert_eq!(parameter(&ssm, &layer, "python3.13").await.unwrap().0, arn);
}
