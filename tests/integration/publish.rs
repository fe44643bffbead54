//! publish-layer against moto: real zips uploaded to a versioned bucket whose notifications go to SQS; the
//! event records moto itself generates are read from the queue and fed to the handler.

use std::{
    collections::HashMap,
    io::{Cursor, Write},
    sync::Arc,
    time::Duration,
};

use aws_config::SdkConfig;
use aws_sdk_s3::primitives::ByteStream;
use base64::Engine;
use layerforge::{
    artifact::{ArtifactMetadata, keys},
    publish::{self, Outcome, PublishState, S3Range},
    request::{Architecture, Runtime},
    zipcheck::{self, Limits},
};
use serde_json::Value;
use sha2::{Digest, Sha256};
use zip::{CompressionMethod, ZipWriter, write::SimpleFileOptions};

use crate::helpers::{self, sdk, unique};

/// A versioned artifact bucket whose `.zip` creations are announced on an SQS queue, and the handler state.
pub(crate) struct Fixture {
    pub(crate) sdk: SdkConfig,
    pub(crate) s3: aws_sdk_s3::Client,
    pub(crate) lambda: aws_sdk_lambda::Client,
    sqs: aws_sdk_sqs::Client,
    pub(crate) bucket: String,
    queue_url: String,
    pub(crate) state: PublishState,
}

impl Fixture {
    pub(crate) async fn new() -> Self {
        let sdk = sdk().await;
        let s3 = layerforge::aws::s3_client(&sdk);
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let lambda = layerforge::aws::lambda_client(&sdk);
        let (bucket, queue_url) = helpers::bucket_with_events(&sdk, "lf-publish", None).await;
        let config = helpers::config(&bucket, "{}", &[]);
        let state = PublishState::new(Arc::new(config), s3.clone(), lambda.clone());
        Self {
            sdk,
            s3,
            lambda,
            sqs,
            bucket,
            queue_url,
            state,
        }
    }

    /// Every message body on the queue, parsed (moto delivers synchronously with the upload).
    pub(crate) async fn drain(&self) -> Vec<Value> {
        let mut bodies = Vec::new();
        loop {
            let out = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await
                .unwrap();
            let messages = out.messages();
            if messages.is_empty() {
                return bodies;
            }
            for m in messages {
                bodies.push(serde_json::from_str(m.body().unwrap()).unwrap());
                self.sqs
                    .delete_message()
                    .queue_url(&self.queue_url)
                    .receipt_handle(m.receipt_handle().unwrap())
                    .send()
                    .await
                    .unwrap();
            }
        }
    }

    /// The message whose (only) record names `key`.
    pub(crate) async fn event_for(&self, bodies: &[Value], key: &str) -> Value {
        bodies
            .iter()
            .find(|b| {
                b["Records"][0]["s3"]["object"]["key"]
                    .as_str()
                    .is_some_and(|k| publish::form_decode(k).unwrap() == key)
            })
            .unwrap_or_else(|| panic!("no event for {key} in {bodies:?}"))
            .clone()
    }

    pub(crate) async fn upload(
        &self,
        key: &str,
        body: Vec<u8>,
        metadata: HashMap<String, String>,
        tagging: Option<&str>,
    ) {
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .set_metadata(Some(metadata))
            .set_tagging(tagging.map(str::to_owned))
            .body(ByteStream::from(body))
            .send()
            .await
            .unwrap();
    }

    pub(crate) async fn tags(&self, key: &str) -> HashMap<String, String> {
        self.s3
            .get_object_tagging()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .unwrap()
            .tag_set()
            .iter()
            .map(|t| (t.key().to_owned(), t.value().to_owned()))
            .collect()
    }

    pub(crate) async fn layer_versions(&self, name: &str) -> Vec<i64> {
        self.lambda
            .list_layer_versions()
            .layer_name(name)
            .send()
            .await
            .unwrap()
            .layer_versions()
            .iter()
            .map(|v| v.version())
            .collect()
    }
}

fn layer_zip(files: &[(&str, &[u8])], stored: bool) -> Vec<u8> {
    let mut w = ZipWriter::new(Cursor::new(Vec::new()));
    let method = if stored {
        CompressionMethod::Stored
    } else {
        CompressionMethod::Deflated
    };
    for (name, data) in files {
        w.start_file(
            *name,
            SimpleFileOptions::default().compression_method(method),
        )
        .unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

pub(crate) fn sha256_b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(bytes))
}

pub(crate) fn metadata(layer: &str, zip: &[u8], fingerprint: &str) -> HashMap<String, String> {
    ArtifactMetadata {
        layer_name: layer.to_owned(),
        requirements: "six==1.16.0".to_owned(),
        license: Some("MIT".to_owned()),
        python_version: "3.12".to_owned(),
        compatible_runtimes: vec![Runtime::Python312, Runtime::Python313],
        compatible_architectures: vec![Architecture::Arm64],
        create_date: "20260101120000000".to_owned(),
        fingerprint: Some(fingerprint.to_owned()),
        content_sha256: Some(sha256_b64(zip)),
        description: None,
        builder_version: Some("test".to_owned()),
    }
    .to_s3_metadata()
}

pub(crate) fn six_zip(marker: &str) -> Vec<u8> {
    layer_zip(
        &[
            (
                "python/lib/python3.12/site-packages/six.py",
                format!("# six {marker}\n").as_bytes(),
            ),
            (
                "python/lib/python3.12/site-packages/six-1.16.0.dist-info/METADATA",
                b"Name: six\n",
            ),
        ],
        false,
    )
}

#[tokio::test]
async fn moto_records_publish_reject_and_ignore() {
    let f = Fixture::new().await;
    let good_layer = unique("six").to_lowercase();
    let good_key = format!("layers/{good_layer}/python3.12-arm64/0123456789abcdef.zip");
    let good_zip = six_zip("good");
    f.upload(
        &good_key,
        good_zip.clone(),
        metadata(&good_layer, &good_zip, "0123456789abcdef"),
        Some("team=data"),
    )
    .await;

    // A text file posing as a zip, with perfect metadata: rejected, tagged, nothing published.
    let bad_layer = unique("bad").to_lowercase();
    let bad_key = format!("layers/{bad_layer}/python3.12-arm64/fedcba9876543210.zip");
    let bad_body = b"this is not a zip archive".to_vec();
    f.upload(
        &bad_key,
        bad_body.clone(),
        metadata(&bad_layer, &bad_body, "fedcba9876543210"),
        None,
    )
    .await;

    // A zip with its content outside python/: rejected too.
    let misplaced_layer = unique("misplaced").to_lowercase();
    let misplaced_key = format!("layers/{misplaced_layer}/python3.12-arm64/00000000000000aa.zip");
    let misplaced = layer_zip(&[("site-packages/six.py", b"x")], false);
    f.upload(
        &misplaced_key,
        misplaced.clone(),
        metadata(&misplaced_layer, &misplaced, "00000000000000aa"),
        None,
    )
    .await;

    // The original PublishPythonLambdaLayer.sh wrote only its own keys, `uname -m` architectures, any key name.
    let legacy_layer = unique("legacy").to_lowercase();
    let legacy_key = format!("layers/legacy uploads/{legacy_layer}+v1.zip");
    let legacy_zip = six_zip("legacy");
    let legacy_meta = HashMap::from([
        (keys::LAYER_NAME.to_owned(), legacy_layer.clone()),
        (
            keys::REQUIREMENTS.to_owned(),
            "six==1.16.0|requests".to_owned(),
        ),
        (keys::LICENSE_INFO.to_owned(), "Apache-2.0".to_owned()),
        (keys::PYTHON_VERSION.to_owned(), "3.12.7".to_owned()),
        (
            keys::COMPATIBLE_RUNTIMES.to_owned(),
            "python3.12".to_owned(),
        ),
        (
            keys::COMPATIBLE_ARCHITECTURES.to_owned(),
            "aarch64".to_owned(),
        ),
        (keys::CREATE_DATE.to_owned(), "20240101000000000".to_owned()),
    ]);
    f.upload(&legacy_key, legacy_zip.clone(), legacy_meta, None)
        .await;

    // A zip without any metadata: rejected as missing metadata.
    let bare_key = format!(
        "layers/{}/python3.12-arm64/00000000000000bb.zip",
        unique("bare").to_lowercase()
    );
    f.upload(&bare_key, six_zip("bare"), HashMap::new(), None)
        .await;

    let bodies = f.drain().await;
    // moto's first message is the s3:TestEvent sent when the notification was configured.
    assert_eq!(bodies[0]["Event"], "s3:TestEvent", "{bodies:?}");
    assert_eq!(bodies.len(), 6, "{bodies:?}");

    let mut handled = 0;
    let test = publish::handle(&f.state, bodies[0].clone()).await.unwrap();
    assert_eq!(test.count("ignored"), 1);
    handled += test.records.len();

    // The good zip.
    let event = f.event_for(&bodies, &good_key).await;
    let response = publish::handle(&f.state, event.clone()).await.unwrap();
    handled += response.records.len();
    let [record] = response.records.as_slice() else {
        panic!("{response:?}")
    };
    let Outcome::Published {
        layer_version_arn,
        version,
    } = &record.outcome
    else {
        panic!("{record:?}")
    };
    assert_eq!(*version, 1);
    assert!(
        layer_version_arn.ends_with(&format!(":layer:{good_layer}:1")),
        "{layer_version_arn}"
    );
    assert!(
        record.version_id.is_some(),
        "the version HeadObject saw is reported: {record:?}"
    );
    let got = f
        .lambda
        .get_layer_version()
        .layer_name(&good_layer)
        .version_number(1)
        .send()
        .await
        .unwrap();
    assert_eq!(
        got.compatible_runtimes(),
        &[
            aws_sdk_lambda::types::Runtime::Python312,
            aws_sdk_lambda::types::Runtime::Python313
        ]
    );
    assert_eq!(
        got.compatible_architectures(),
        &[aws_sdk_lambda::types::Architecture::Arm64]
    );
    assert_eq!(got.license_info(), Some("MIT"));
    assert_eq!(
        got.description(),
        Some("layerforge 0123456789abcdef: six==1.16.0")
    );
    // moto computes CodeSha256 as Lambda does: base64 of the raw sha256 of the zip.
    assert_eq!(
        got.content().unwrap().code_sha256(),
        Some(sha256_b64(&good_zip).as_str())
    );
    let tags = f.tags(&good_key).await;
    assert_eq!(tags.get("layer-version-arn"), Some(layer_version_arn));
    assert_eq!(
        tags.get("team").map(String::as_str),
        Some("data"),
        "existing tags are kept: {tags:?}"
    );

    // The same record again: a duplicate with the same ARN, still one version.
    let again = publish::handle(&f.state, event).await.unwrap();
    assert_eq!(again.records[0].outcome.status(), "duplicate");
    assert_eq!(
        again.records[0].outcome.layer_version_arn(),
        Some(layer_version_arn.as_str())
    );
    assert_eq!(f.layer_versions(&good_layer).await, vec![1]);

    // The rejections.
    for (key, layer, code) in [
        (&bad_key, Some(&bad_layer), "not-a-zip"),
        (
            &misplaced_key,
            Some(&misplaced_layer),
            "outside-layer-roots",
        ),
        (&bare_key, None, "missing-metadata"),
    ] {
        let response = publish::handle(&f.state, f.event_for(&bodies, key).await)
            .await
            .unwrap();
        handled += response.records.len();
        match &response.records[0].outcome {
            Outcome::Rejected { code: got, .. } => assert_eq!(got, code, "{key}"),
            other => panic!("{key}: {other:?}"),
        }
        let tags = f.tags(key).await;
        assert_eq!(
            tags.get("layerforge-status").map(String::as_str),
            Some("rejected"),
            "{key}"
        );
        assert_eq!(
            tags.get("layerforge-reason").map(String::as_str),
            Some(code),
            "{key}"
        );
        assert!(!tags.contains_key("layer-version-arn"));
        if let Some(layer) = layer {
            assert!(
                f.layer_versions(layer).await.is_empty(),
                "{layer} must have no version"
            );
        }
    }

    // The original tool's zip: the key has a space and a '+', arriving form-encoded.
    let legacy_event = f.event_for(&bodies, &legacy_key).await;
    let raw_key = legacy_event["Records"][0]["s3"]["object"]["key"]
        .as_str()
        .unwrap();
    assert!(
        raw_key.contains('+') && raw_key.contains("%2B"),
        "moto form-encodes keys: {raw_key}"
    );
    let response = publish::handle(&f.state, legacy_event).await.unwrap();
    handled += response.records.len();
    assert_eq!(
        response.records[0].outcome.status(),
        "published",
        "{response:?}"
    );
    let got = f
        .lambda
        .get_layer_version()
        .layer_name(&legacy_layer)
        .version_number(1)
        .send()
        .await
        .unwrap();
    assert_eq!(
        got.compatible_architectures(),
        &[aws_sdk_lambda::types::Architecture::Arm64]
    );
    assert_eq!(got.license_info(), Some("Apache-2.0"));
    assert_eq!(
        got.content().unwrap().code_sha256(),
        Some(sha256_b64(&legacy_zip).as_str())
    );
    assert_eq!(
        f.tags(&legacy_key)
            .await
            .get("layer-version-arn")
            .map(String::as_str),
        response.records[0].outcome.layer_version_arn()
    );

    assert_eq!(handled, 6);
    eprintln!("records handled: {handled}");
}

#[tokio::test]
async fn one_event_with_many_records_reports_each() {
    let f = Fixture::new().await;
    let layer = unique("multi").to_lowercase();
    let good_key = format!("layers/{layer}/python3.12-arm64/1111111111111111.zip");
    let zip = six_zip("multi");
    f.upload(
        &good_key,
        zip.clone(),
        metadata(&layer, &zip, "1111111111111111"),
        None,
    )
    .await;
    let bad_key = format!("layers/{layer}/python3.12-arm64/2222222222222222.zip");
    f.upload(
        &bad_key,
        Vec::new(),
        metadata(&layer, b"", "2222222222222222"),
        None,
    )
    .await;
    let bodies = f.drain().await;

    // One event carrying both records plus a removal and a malformed record: the bad one never blocks the good.
    let mut records = vec![
        f.event_for(&bodies, &bad_key).await["Records"][0].clone(),
        f.event_for(&bodies, &good_key).await["Records"][0].clone(),
    ];
    let mut removed = records[1].clone();
    removed["eventName"] = Value::from("ObjectRemoved:Delete");
    records.push(removed);
    records.push(serde_json::json!({"eventName": "ObjectCreated:Put"}));
    let response = publish::handle(&f.state, serde_json::json!({ "Records": records }))
        .await
        .unwrap();
    let statuses: Vec<&str> = response
        .records
        .iter()
        .map(|r| r.outcome.status())
        .collect();
    assert_eq!(
        statuses,
        ["rejected", "published", "ignored", "ignored"],
        "{response:?}"
    );
    assert!(
        matches!(&response.records[0].outcome, Outcome::Rejected { code, .. } if code == "empty-object")
    );
    assert_eq!(f.layer_versions(&layer).await, vec![1]);
    let json = serde_json::to_value(&response).unwrap();
    assert_eq!(json["records"][1]["status"], "published");
    assert!(
        json["records"][1]["layer_version_arn"]
            .as_str()
            .unwrap()
            .contains(&layer)
    );
}

#[tokio::test]
async fn a_layer_name_outside_the_prefix_is_rejected_not_published() {
    let mut f = Fixture::new().await;
    let config = helpers::config(&f.bucket, "{}", &[("LAYER_NAME_PREFIX", "team-a-")]);
    f.state = PublishState::new(Arc::new(config), f.s3.clone(), f.lambda.clone());
    let outside = unique("team-b-").to_lowercase();
    let inside = unique("team-a-").to_lowercase();
    let zip = six_zip("prefix");
    let mut keys = Vec::new();
    for layer in [&outside, &inside] {
        let key = format!("layers/{layer}/python3.12-arm64/3333333333333333.zip");
        f.upload(
            &key,
            zip.clone(),
            metadata(layer, &zip, "3333333333333333"),
            None,
        )
        .await;
        keys.push(key);
    }
    let bodies = f.drain().await;
    let mut statuses = Vec::new();
    for key in &keys {
        let event = f.event_for(&bodies, key).await;
        let response = publish::handle(&f.state, event).await.unwrap();
        statuses.push(response.records[0].outcome.status().to_owned());
    }
    assert_eq!(statuses, ["rejected", "published"]);
    let tags = f.tags(&keys[0]).await;
    assert_eq!(
        tags.get("layerforge-status").map(String::as_str),
        Some("rejected")
    );
    assert_eq!(
        tags.get("layerforge-reason").map(String::as_str),
        Some("outside-layer-name-prefix")
    );
    assert!(f.layer_versions(&outside).await.is_empty());
    assert_eq!(f.layer_versions(&inside).await, vec![1]);
}

#[tokio::test]
async fn concurrent_duplicate_deliveries_publish_one_version() {
    let f = Fixture::new().await;
    let layer = unique("race").to_lowercase();
    let key = format!("layers/{layer}/python3.12-arm64/3333333333333333.zip");
    let zip = six_zip("race");
    f.upload(
        &key,
        zip.clone(),
        metadata(&layer, &zip, "3333333333333333"),
        None,
    )
    .await;
    let bodies = f.drain().await;
    let event = f.event_for(&bodies, &key).await;

    const DELIVERIES: usize = 8;
    let mut tasks = Vec::new();
    for _ in 0..DELIVERIES {
        let state = f.state.clone();
        let event = event.clone();
        tasks.push(tokio::spawn(
            async move { publish::handle(&state, event).await },
        ));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap().unwrap().records.remove(0).outcome);
    }
    let published = outcomes
        .iter()
        .filter(|o| o.status() == "published")
        .count();
    let duplicates = outcomes
        .iter()
        .filter(|o| o.status() == "duplicate")
        .count();
    assert_eq!((published, duplicates), (1, DELIVERIES - 1), "{outcomes:?}");
    let arns: std::collections::BTreeSet<_> = outcomes
        .iter()
        .map(|o| o.layer_version_arn().unwrap())
        .collect();
    assert_eq!(
        arns.len(),
        1,
        "every delivery reports the same ARN: {arns:?}"
    );
    let versions = f.layer_versions(&layer).await;
    assert_eq!(
        versions,
        vec![1],
        "exactly one layer version after {DELIVERIES} concurrent deliveries"
    );
    eprintln!(
        "versions after {DELIVERIES} concurrent deliveries: {}",
        versions.len()
    );
}

#[tokio::test]
async fn a_stale_claim_is_taken_over_and_a_live_one_waited_for() {
    let f = Fixture::new().await;
    let layer = unique("stale").to_lowercase();
    let key = format!("layers/{layer}/python3.12-arm64/4444444444444444.zip");
    let zip = six_zip("stale");
    f.upload(
        &key,
        zip.clone(),
        metadata(&layer, &zip, "4444444444444444"),
        None,
    )
    .await;
    let bodies = f.drain().await;
    let event = f.event_for(&bodies, &key).await;
    // The claim names the content (layer name + CodeSha256), whichever object version delivers it.
    let claim_key = publish::claim_key(&f.bucket, &layer, &sha256_b64(&zip), TARGETS);
    let put_claim = |lease_until: u64| {
        let body = serde_json::json!({
            "layer_name": layer, "code_sha256": sha256_b64(&zip), "bucket": f.bucket, "key": key,
            "owner": "someone-else", "lease_until": lease_until, "layer_version_arn": null
        });
        f.s3.put_object()
            .bucket(&f.bucket)
            .key(&claim_key)
            .body(ByteStream::from(body.to_string().into_bytes()))
            .send()
    };

    // A live claim (just taken by another delivery that never finishes): waited for, then a transient failure.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    put_claim(now + 3_600_000).await.unwrap();
    let mut impatient = f.state.clone();
    impatient.guard.max_wait = Duration::from_millis(600);
    let started = std::time::Instant::now();
    let err = publish::handle(&impatient, event.clone())
        .await
        .unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(600));
    assert_eq!(
        layerforge::function_error::FunctionError::from(err).error_type,
        "Transient"
    );
    assert!(f.layer_versions(&layer).await.is_empty());

    // The same claim with its lease run out: its owner crashed. Taken over and published.
    put_claim(now - 1).await.unwrap();
    let response = publish::handle(&f.state, event.clone()).await.unwrap();
    assert_eq!(
        response.records[0].outcome.status(),
        "published",
        "{response:?}"
    );
    assert_eq!(f.layer_versions(&layer).await, vec![1]);

    // A claim lost with the ARN (e.g. deleted): the CodeSha256 check adopts the existing version.
    f.s3.delete_object()
        .bucket(&f.bucket)
        .key(&claim_key)
        .send()
        .await
        .unwrap();
    let response = publish::handle(&f.state, event).await.unwrap();
    assert_eq!(
        response.records[0].outcome.status(),
        "duplicate",
        "{response:?}"
    );
    assert_eq!(f.layer_versions(&layer).await, vec![1]);
}

#[tokio::test]
async fn moto_honours_conditional_puts() {
    let f = Fixture::new().await;
    let key = ".layerforge/claims/conditional-check.json";
    let first =
        f.s3.put_object()
            .bucket(&f.bucket)
            .key(key)
            .if_none_match("*")
            .body(ByteStream::from_static(b"{}"))
            .send()
            .await
            .unwrap();
    let err =
        f.s3.put_object()
            .bucket(&f.bucket)
            .key(key)
            .if_none_match("*")
            .body(ByteStream::from_static(b"{}"))
            .send()
            .await
            .unwrap_err();
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 412);
    let err =
        f.s3.put_object()
            .bucket(&f.bucket)
            .key(key)
            .if_match("\"0000\"")
            .body(ByteStream::from_static(b"{\"a\":1}"))
            .send()
            .await
            .unwrap_err();
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 412);
    f.s3.put_object()
        .bucket(&f.bucket)
        .key(key)
        .if_match(first.e_tag().unwrap())
        .body(ByteStream::from_static(b"{\"a\":2}"))
        .send()
        .await
        .unwrap();
    // Claims end in .json: no notification reached the queue for them.
    let bodies = f.drain().await;
    assert!(
        bodies.iter().all(|b| b.get("Records").is_none()),
        "{bodies:?}"
    );
    let _ = &f.sdk;
}

#[tokio::test]
async fn a_large_zip_is_checked_with_a_constant_number_of_bytes() {
    let f = Fixture::new().await;
    let layer = unique("large").to_lowercase();
    let key = format!("layers/{layer}/python3.12-arm64/5555555555555555.zip");
    // 3 x 8 MiB stored: the object is 24 MiB, the check reads the tail and the central directory only.
    let chunk: Vec<u8> = (0..8 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let zip = layer_zip(
        &[
            ("python/big/a.bin", chunk.as_slice()),
            ("python/big/b.bin", chunk.as_slice()),
            ("python/big/c.bin", chunk.as_slice()),
        ],
        true,
    );
    let len = zip.len() as u64;
    f.upload(
        &key,
        zip.clone(),
        metadata(&layer, &zip, "5555555555555555"),
        None,
    )
    .await;
    let summary = zipcheck::inspect(
        &S3Range {
            s3: &f.s3,
            bucket: &f.bucket,
            key: &key,
            version_id: None,
            len,
        },
        &Limits::default(),
    )
    .await
    .unwrap();
    assert_eq!(summary.entries, 3);
    assert_eq!(summary.uncompressed_bytes, 3 * 8 * 1024 * 1024);
    assert!(
        summary.bytes_read <= 65_557 + summary.central_directory_bytes,
        "{summary}"
    );
    eprintln!(
        "large zip: {len} bytes, {} bytes read in {} requests",
        summary.bytes_read, summary.reads
    );

    let bodies = f.drain().await;
    let response = publish::handle(&f.state, f.event_for(&bodies, &key).await)
        .await
        .unwrap();
    assert_eq!(
        response.records[0].outcome.status(),
        "published",
        "{response:?}"
    );
}

/// The targets of [`metadata`]'s artifacts, as a claim names them.
const TARGETS: &str = "python3.12,python3.13/arm64";

/// The claim object of (layer, CodeSha256): its bytes, or `None` when there is none.
async fn claim_bytes(f: &Fixture, layer: &str, code_sha256: &str) -> Option<Vec<u8>> {
    let key = publish::claim_key(&f.bucket, layer, code_sha256, TARGETS);
    match f.s3.get_object().bucket(&f.bucket).key(&key).send().await {
        Ok(out) => Some(out.body.collect().await.unwrap().into_bytes().to_vec()),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => None,
        Err(e) => panic!("GetObject {key}: {e:?}"),
    }
}

#[tokio::test]
async fn a_forged_content_sha256_is_rejected_and_takes_no_identity() {
    let f = Fixture::new().await;
    let layer = unique("forged").to_lowercase();
    let (zip_a, zip_b) = (six_zip("a"), six_zip("b"));
    let (sha_a, sha_b) = (sha256_b64(&zip_a), sha256_b64(&zip_b));
    let key_a = format!("layers/{layer}/python3.12-arm64/aaaaaaaaaaaaaaaa.zip");
    let key_b = format!("layers/{layer}/python3.12-arm64/bbbbbbbbbbbbbbbb.zip");
    let key_c = format!("layers/{layer}/python3.12-arm64/cccccccccccccccc.zip");

    // A is published: its claim holds its identity and its ARN.
    f.upload(
        &key_a,
        zip_a.clone(),
        metadata(&layer, &zip_a, "aaaaaaaaaaaaaaaa"),
        None,
    )
    .await;
    let bodies = f.drain().await;
    let response = publish::handle(&f.state, f.event_for(&bodies, &key_a).await)
        .await
        .unwrap();
    let arn_a = response.records[0]
        .outcome
        .layer_version_arn()
        .expect("A is published")
        .to_owned();
    let claim_a = claim_bytes(&f, &layer, &sha_a).await.expect("A's claim");
    let tags_a = f.tags(&key_a).await;

    // B: a valid zip, other bytes, whose metadata names A's SHA-256 (what a stolen job credential could upload).
    let mut forged = metadata(&layer, &zip_b, "bbbbbbbbbbbbbbbb");
    forged.insert(keys::CONTENT_SHA256.to_owned(), sha_a.clone());
    f.upload(&key_b, zip_b.clone(), forged, None).await;
    let bodies = f.drain().await;
    let response = publish::handle(&f.state, f.event_for(&bodies, &key_b).await)
        .await
        .unwrap();
    match &response.records[0].outcome {
        Outcome::Rejected { code, reason } => {
            assert_eq!(code, "content-sha256-mismatch");
            assert!(
                reason.contains(&sha_a) && reason.contains(&sha_b),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
    let tags = f.tags(&key_b).await;
    assert_eq!(
        tags.get("layerforge-status").map(String::as_str),
        Some("rejected")
    );
    assert_eq!(
        tags.get("layerforge-reason").map(String::as_str),
        Some("content-sha256-mismatch")
    );
    assert!(
        !tags.contains_key(publish::LAYER_VERSION_ARN_TAG),
        "{tags:?}"
    );
    // Nothing published, A's identity untouched, and no claim taken under either digest by B.
    assert_eq!(f.layer_versions(&layer).await, vec![1]);
    assert_eq!(claim_bytes(&f, &layer, &sha_a).await, Some(claim_a));
    assert_eq!(f.tags(&key_a).await, tags_a);
    assert_eq!(
        tags_a.get(publish::LAYER_VERSION_ARN_TAG),
        Some(&arn_a),
        "{tags_a:?}"
    );
    assert_eq!(claim_bytes(&f, &layer, &sha_b).await, None);

    // The same bytes without content-sha256 (the original tool's zips, presigned uploads): the computed digest
    // is the identity, and B publishes as itself.
    let mut honest = metadata(&layer, &zip_b, "cccccccccccccccc");
    honest.remove(keys::CONTENT_SHA256);
    f.upload(&key_c, zip_b.clone(), honest, None).await;
    let bodies = f.drain().await;
    let response = publish::handle(&f.state, f.event_for(&bodies, &key_c).await)
        .await
        .unwrap();
    assert_eq!(
        response.records[0].outcome.status(),
        "published",
        "{response:?}"
    );
    assert_ne!(
        response.records[0].outcome.layer_version_arn(),
        Some(arn_a.as_str())
    );
    assert_eq!(f.layer_versions(&layer).await.len(), 2);
    assert!(claim_bytes(&f, &layer, &sha_b).await.is_some());
}

#[tokio::test]
async fn a_look_alike_of_the_prefix_is_rejected_and_its_segments_published() {
    let mut f = Fixture::new().await;
    // `team-a…` unique to this run; the look-alike continues it without a separator, as team-admin-x does team-a.
    let prefix = unique("team-a").to_lowercase();
    let config = helpers::config(&f.bucket, "{}", &[("LAYER_NAME_PREFIX", &prefix)]);
    f.state = PublishState::new(Arc::new(config), f.s3.clone(), f.lambda.clone());
    let look_alike = format!("{prefix}dmin-x");
    let owned = [format!("{prefix}-x"), format!("{prefix}_x"), prefix.clone()];
    let zip = six_zip("look-alike");
    let mut keys = Vec::new();
    for layer in std::iter::once(&look_alike).chain(&owned) {
        let key = format!("layers/{layer}/python3.12-arm64/4444444444444444.zip");
        f.upload(
            &key,
            zip.clone(),
            metadata(layer, &zip, "4444444444444444"),
            None,
        )
        .await;
        keys.push(key);
    }
    let bodies = f.drain().await;
    let mut statuses = Vec::new();
    for key in &keys {
        let response = publish::handle(&f.state, f.event_for(&bodies, key).await)
            .await
            .unwrap();
        statuses.push(response.records[0].outcome.status());
    }
    assert_eq!(
        statuses,
        ["rejected", "published", "published", "published"]
    );
    assert_eq!(
        f.tags(&keys[0])
            .await
            .get("layerforge-reason")
            .map(String::as_str),
        Some("outside-layer-name-prefix")
    );
    assert!(f.layer_versions(&look_alike).await.is_empty());
    for layer in &owned {
        assert_eq!(f.layer_versions(layer).await, vec![1], "{layer}");
    }
}
