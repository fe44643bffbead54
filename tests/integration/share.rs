//! Sharing (issue 24 item 2): a request's `share` is validated by submit-build's parser (naming the field), kept in
//! the build record, granted by publish-layer on the version it publishes (one statement per account, one for the
//! organization), once: a redelivered event adds nothing. build-status answers it. Against moto's S3 and Lambda.

use std::sync::Arc;

use layerforge::{
    plan, publish,
    records::{self, BuildRecord, Condition},
    request::RequestDraft,
    status,
};
use serde_json::{Value, json};

use crate::{
    helpers::{self, unique},
    publish::{Fixture, metadata, six_zip},
};

const TARGETS: &str = r#"{"arm64":{"job_queue":"q","job_definition":"d"}}"#;

/// The statements of a version's policy: (Sid, Principal, the organization condition).
async fn statements(
    f: &Fixture,
    layer: &str,
    version: i64,
) -> Vec<(String, String, Option<String>)> {
    let out = f
        .lambda
        .get_layer_version_policy()
        .layer_name(layer)
        .version_number(version)
        .send()
        .await
        .unwrap();
    let policy: Value = serde_json::from_str(out.policy().unwrap_or("{}")).unwrap();
    let mut found: Vec<(String, String, Option<String>)> = policy["Statement"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|s| {
            let principal = match &s["Principal"] {
                Value::String(p) => p.clone(),
                other => other["AWS"].as_str().unwrap_or_default().to_owned(),
            };
            let org = s["Condition"]["StringEquals"]["aws:PrincipalOrgID"]
                .as_str()
                .map(str::to_owned);
            (
                s["Sid"].as_str().unwrap_or_default().to_owned(),
                principal,
                org,
            )
        })
        .collect();
    found.sort();
    found
}

#[test]
fn share_is_validated_naming_the_field() {
    let config = helpers::config("artifacts", TARGETS, &[]);
    let refused = |share: Value| {
        RequestDraft::parse(
            &json!({"layer_name": "a", "requirements": "six==1.16.0", "share": share}),
            &config,
        )
        .unwrap_err()
        .field
    };
    assert_eq!(refused(json!({"accounts": ["12345"]})), "share.accounts[0]");
    assert_eq!(
        refused(json!({"accounts": ["111122223333", "abc"]})),
        "share.accounts[1]"
    );
    assert_eq!(
        refused(json!({"accounts": "111122223333"})),
        "share.accounts"
    );
    assert_eq!(
        refused(json!({"organization_id": "o-short"})),
        "share.organization_id"
    );
    assert_eq!(
        refused(json!({"organization_id": "O-ABCDEFGHIJ"})),
        "share.organization_id"
    );
    assert_eq!(refused(json!({"public": "yes"})), "share.public");
    assert_eq!(refused(json!({"acounts": []})), "share.acounts");
    assert_eq!(refused(json!(["111122223333"])), "share");
    let ok = RequestDraft::parse(
        &json!({"layer_name": "a", "requirements": "six==1.16.0",
                "share": {"accounts": ["222233334444", "111122223333", "111122223333"],
                          "organization_id": "o-abcdefghij"}}),
        &config,
    )
    .unwrap();
    let share = ok.share.unwrap();
    assert_eq!(
        share.accounts,
        ["111122223333", "222233334444"],
        "sorted, once each"
    );
    assert_eq!(share.statements().len(), 3);
}

/// A shared build of `layer` as the pipeline leaves it: submit-build's record of the request (the claim it writes
/// before the job, with `share`), then the job's zip uploaded at its key. Returns the plan and moto's S3 event.
async fn shared_build(
    f: &Fixture,
    config: &layerforge::config::Config,
    layer: &str,
    requirements: &str,
    marker: &str,
) -> (plan::JobPlan, Value) {
    let draft = RequestDraft::parse(
        &json!({"layer_name": layer, "requirements": requirements,
                "share": {"accounts": ["111122223333", "444455556666"], "organization_id": "o-abcdefghij"}}),
        config,
    )
    .unwrap();
    let layerforge::request::RequirementsInput::Inline(parsed) = draft.requirements.clone() else {
        panic!("inline")
    };
    let request = draft.into_request(parsed, None);
    let plan = plan::plan_job(&request, config).unwrap();
    records::write_json(
        &f.s3,
        &f.bucket,
        &records::record_key(&plan.key),
        &BuildRecord::claim(&request, &plan.fingerprint, &plan.key),
        Some(Condition::Absent),
    )
    .await
    .unwrap();
    let key = plan.key.to_string();
    let zip = six_zip(marker);
    f.upload(
        &key,
        zip.clone(),
        metadata(layer, &zip, plan.fingerprint.short()),
        None,
    )
    .await;
    let event = f.event_for(&f.drain().await, &key).await;
    (plan, event)
}

#[tokio::test]
async fn a_shared_build_has_its_grants_on_its_version_once() {
    let f = Fixture::new().await;
    let layer = unique("share").to_lowercase();
    let config = Arc::new(helpers::config(&f.bucket, TARGETS, &[]));
    // The job's zip arrives; publish-layer publishes it and grants the share.
    let (plan, event) = shared_build(
        &f,
        &config,
        &layer,
        &format!("six==1.16.0\n# {layer}"),
        &layer,
    )
    .await;
    let state = publish::PublishState::new(config.clone(), f.s3.clone(), f.lambda.clone());
    let first = publish::handle(&state, event.clone()).await.unwrap();
    let arn = first.records[0]
        .outcome
        .layer_version_arn()
        .unwrap_or_else(|| panic!("{first:?}"))
        .to_owned();
    let version: i64 = arn.rsplit(':').next().unwrap().parse().unwrap();
    let expected = vec![
        (
            "layerforge-account-111122223333".to_owned(),
            "111122223333".to_owned(),
            None,
        ),
        (
            "layerforge-account-444455556666".to_owned(),
            "444455556666".to_owned(),
            None,
        ),
        (
            "layerforge-org-o-abcdefghij".to_owned(),
            "*".to_owned(),
            Some("o-abcdefghij".to_owned()),
        ),
    ];
    let granted = statements(&f, &layer, version).await;
    assert_eq!(
        granted.iter().map(|s| s.0.clone()).collect::<Vec<_>>(),
        expected.iter().map(|s| s.0.clone()).collect::<Vec<_>>()
    );
    for ((_, principal, org), (_, want_principal, want_org)) in granted.iter().zip(&expected) {
        assert!(
            principal.contains(want_principal.as_str()),
            "{principal} / {want_principal}"
        );
        if want_org.is_some() {
            // moto may keep the condition in another shape; the statement id and principal `*` are checked.
            assert!(org.is_none() || org == want_org, "{org:?}");
        }
    }

    // The same event delivered twice more: a duplicate, and not one statement more.
    for _ in 0..2 {
        let again = publish::handle(&state, event.clone()).await.unwrap();
        assert_eq!(again.records[0].outcome.status(), "duplicate", "{again:?}");
    }
    assert_eq!(statements(&f, &layer, version).await.len(), 3);

    // A new build of the layer (other content, its own record with the same share): its version is granted too,
    // as grants don't carry over from one version to the next.
    let (_, event2) = shared_build(
        &f,
        &config,
        &layer,
        &format!("six==1.15.0\n# {layer} v2"),
        &format!("{layer}-2"),
    )
    .await;
    let published = publish::handle(&state, event2).await.unwrap();
    let arn2 = published.records[0]
        .outcome
        .layer_version_arn()
        .unwrap()
        .to_owned();
    let version2: i64 = arn2.rsplit(':').next().unwrap().parse().unwrap();
    assert_eq!(version2, version + 1);
    assert_eq!(statements(&f, &layer, version2).await.len(), 3);
    assert_eq!(statements(&f, &layer, version).await.len(), 3);

    // build-status answers the share, from the record.
    let status_state = status::StatusState {
        config,
        s3: f.s3.clone(),
        batch: aws_sdk_batch::Client::new(&f.sdk),
        logs: aws_sdk_cloudwatchlogs::Client::new(&f.sdk),
    };
    let answer = status::handle(
        &status_state,
        json!({"artifact": plan.key.s3_uri(&f.bucket)}),
    )
    .await
    .unwrap();
    let share = answer.share.expect("build-status answers the share");
    assert_eq!(share.accounts, ["111122223333", "444455556666"]);
    assert_eq!(share.organization_id.as_deref(), Some("o-abcdefghij"));
    assert_eq!(answer.layer_version_arn.as_deref(), Some(arn.as_str()));
}
