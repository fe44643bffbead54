//! publish-layer: an uploaded zip becomes a checked layer version, published exactly once (DESIGN section 6).
//!
//! One file per job:
//! - [`flow`]: the record flow. For each record of an S3 event [`handle_until`] runs: filter → HeadObject (with
//!   the record's `versionId`) → [`ArtifactMetadata`](crate::artifact::ArtifactMetadata) → the zip check (one
//!   place; its streamed read computes the SHA-256 that is the zip's identity) → the exactly-once publication →
//!   tag the zip `layer-version-arn=…`.
//! - [`event`]: the event shapes (S3 notifications, `s3:TestEvent`, form-encoded keys, which records are ours).
//! - [`claim`]: the exactly-once protocol (claims on content, adoption by CodeSha256, PublishLayerVersion
//!   without blind retries, leases that follow the invocation's deadline). Read it first.
//! - [`versions`]: the Lambda side of it: adoption by CodeSha256 among the newest versions of the layer (a
//!   bounded number of calls whatever its history), whether a recorded version still exists, PublishLayerVersion.
//! - [`latest`]: the latest pointer per layer, runtime and architecture (an S3 truth moved forward only, mirrored
//!   to an SSM parameter), updated after every published or adopted version.
//! - [`faults`]: the one classification of AWS errors into rejections and faults.
//! - [`s3`]: the S3 calls on the artifact (HeadObject, ranged GETs, tags).
//! - [`outcome`]: the answer per record and the errors that fail an invocation.
//! - [`state`] and [`types`]: what the others share (the state, the guard's timing, the object version handled
//!   and the layer to publish), below all of them.
//!
//! # Outcomes and failures
//! Every record gets a [`RecordResult`]: `published` or `duplicate` (with the ARN), `rejected` (with a reason)
//! or `ignored` (with why). A permanently bad artifact (missing metadata, a layer name outside the prefix, not a
//! zip, wrong layout, over a size limit, a `content-sha256` that is not its bytes' SHA-256, refused by Lambda as
//! invalid) is tagged `layerforge-status=rejected` and `layerforge-reason=<code>` and does not fail the
//! invocation: retrying can't help. Everything else is a fault
//! ([`faults::classify`]): throttling, 5xx, timeouts, conflicts, a full code storage quota, access denied. A
//! fault releases the record's claim, records nothing, and fails the invocation *after* the other records were
//! processed, so Lambda's retries and on-failure destination keep the event; the records that succeeded come
//! back as `duplicate` on the retry. Object tags are merged, never replaced: the zip's other tags survive.

pub mod claim;
pub mod event;
pub mod faults;
pub mod flow;
pub mod latest;
pub mod outcome;
pub mod s3;
pub mod share;
pub mod state;
pub mod types;
pub mod versions;

pub use crate::artifact::{LAYER_VERSION_ARN_TAG, REASON_TAG, STATUS_TAG};
pub use claim::{CLAIM_PREFIX, claim_key, lease_until};
pub use event::form_decode;
pub use flow::{handle, handle_until};
pub use latest::{LATEST_PREFIX, parameter_name, pointer_key};
pub use outcome::{Outcome, PublishError, PublishResponse, RecordError, RecordResult, Rejection};
pub use s3::S3Range;
pub use state::{FUNCTION_TIMEOUT, Guard, PublishState};
pub use types::{LayerSpec, ObjectRef, targets_id};
pub use versions::ADOPTION_WINDOW;

#[cfg(test)]
mod tests {
    use aws_lambda_events::event::s3::S3EventRecord;
    use aws_sdk_s3::primitives::ByteStream;
    use serde_json::Value;

    use std::{sync::Arc, time::Duration};

    use super::{
        event::{EventShape, Target, classify_event, parse_record},
        *,
    };
    use crate::{
        artifact::ArtifactKey, artifact::ArtifactMetadata, config::Config, zipcheck::ZipProblem,
    };

    fn config() -> Config {
        Config::from_lookup(|k| (k == "ARTIFACT_BUCKET").then(|| "artifacts".to_owned())).unwrap()
    }

    fn record(event_name: &str, bucket: &str, key: &str) -> S3EventRecord {
        let raw = serde_json::json!({
            "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
            "eventTime": "2026-01-01T00:00:00.000Z", "eventName": event_name,
            "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": bucket},
                   "object": {"key": key, "size": 10, "eTag": "abc", "versionId": "v1"}}
        });
        parse_record(&raw).unwrap()
    }

    #[test]
    fn keys_are_form_decoded() {
        assert_eq!(
            form_decode("layers/a+b/c%2Bd%20e.zip").unwrap(),
            "layers/a b/c+d e.zip"
        );
        assert_eq!(
            form_decode("layers/caf%C3%A9.zip").unwrap(),
            "layers/café.zip"
        );
        assert!(form_decode("layers/%FF.zip").is_err());
    }

    #[test]
    fn only_created_zips_under_the_prefix_of_the_bucket_are_targets() {
        let c = config();
        let t = Target::from_record(
            &c,
            &record(
                "ObjectCreated:Put",
                "artifacts",
                "layers/x/python3.12-arm64/a.zip",
            ),
        )
        .ok()
        .unwrap();
        assert_eq!(t.key, "layers/x/python3.12-arm64/a.zip");
        assert_eq!(t.version_id.as_deref(), Some("v1"));
        assert!(
            Target::from_record(
                &c,
                &record(
                    "s3:ObjectCreated:CompleteMultipartUpload",
                    "artifacts",
                    "layers/a.zip"
                )
            )
            .is_ok()
        );
        for (name, bucket, key) in [
            ("ObjectRemoved:Delete", "artifacts", "layers/a.zip"),
            ("ObjectCreated:Put", "other", "layers/a.zip"),
            ("ObjectCreated:Put", "artifacts", "layers/a.txt"),
            ("ObjectCreated:Put", "artifacts", "layersx/a.zip"),
            (
                "ObjectCreated:Put",
                "artifacts",
                ".layerforge/claims/x.json",
            ),
        ] {
            let ignored = Target::from_record(&c, &record(name, bucket, key));
            assert!(ignored.is_err(), "{name} {bucket} {key}");
        }
    }

    #[test]
    fn event_shapes_are_told_apart() {
        let test =
            serde_json::json!({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "b"});
        assert!(matches!(classify_event(&test), EventShape::Test));
        assert!(
            matches!(classify_event(&serde_json::json!({"Records": []})), EventShape::Records(r) if r.is_empty())
        );
        assert!(matches!(
            classify_event(&serde_json::json!({"hello": 1})),
            EventShape::Other(_)
        ));
    }

    #[test]
    fn the_sample_event_parses() {
        let raw: Value = serde_json::from_str(include_str!("../../events/s3-put.json")).unwrap();
        let EventShape::Records(records) = classify_event(&raw) else {
            panic!("no records")
        };
        let record = parse_record(&records[0]).unwrap();
        let c = Config::from_lookup(|k| {
            (k == "ARTIFACT_BUCKET").then(|| "layerforge-artifacts".to_owned())
        })
        .unwrap();
        let target = Target::from_record(&c, &record).ok().unwrap();
        assert!(
            ArtifactKey::parse("layers", &target.key).is_some(),
            "{}",
            target.key
        );
    }

    #[test]
    fn layer_spec_defaults_carry_the_fingerprint_and_respect_limits() {
        let metadata = ArtifactMetadata {
            layer_name: "http".into(),
            requirements: "requests==2.32.3".into(),
            license: Some("L".repeat(600)),
            python_version: "3.12".into(),
            compatible_runtimes: vec![crate::request::Runtime::Python312],
            compatible_architectures: vec![],
            fingerprint: Some("0123456789abcdef".into()),
            ..ArtifactMetadata::default()
        };
        let key = ArtifactKey::parse(
            "layers",
            "layers/http/python3.12-x86_64/0123456789abcdef.zip",
        )
        .unwrap();
        let object = ObjectRef {
            bucket: "b".into(),
            key: key.to_string(),
            version_id: None,
        };
        let spec = LayerSpec::new(&metadata, Some(&key), &object);
        assert_eq!(
            spec.description,
            "layerforge 0123456789abcdef: requests==2.32.3"
        );
        assert_eq!(spec.license.as_ref().map(|l| l.chars().count()), Some(512));
        assert_eq!(
            spec.architectures,
            vec![aws_sdk_lambda::types::Architecture::X8664]
        );
        assert_eq!(
            spec.runtimes,
            vec![aws_sdk_lambda::types::Runtime::Python312]
        );

        let long = ArtifactMetadata {
            description: Some("é".repeat(300)),
            ..metadata
        };
        assert_eq!(
            LayerSpec::new(&long, None, &object)
                .description
                .chars()
                .count(),
            256
        );
    }

    #[test]
    fn errors_map_to_stable_diagnostics() {
        let err = PublishError::Transient {
            failed: 1,
            total: 2,
            first: "throttled".into(),
            results: vec![],
        };
        let d = crate::function_error::FunctionError::from(err);
        assert_eq!(d.error_type, "Transient");
        assert!(d.error_message.contains("1 of 2"));
        assert_eq!(
            RecordError::Rejected(Rejection::Zip(ZipProblem::Empty)).error_type(),
            "Rejected"
        );
        assert_eq!(Rejection::Zip(ZipProblem::Empty).code(), "empty-object");
    }

    /// Mocked clients: the SDK versions in Cargo.lock predate `with_test_defaults_v2`, which
    /// `aws_smithy_mocks::mock_client!` calls, so the interceptor is installed by hand (same effect).
    mod mocked {
        use std::sync::Mutex;

        use aws_sdk_lambda::operation::list_layer_versions::ListLayerVersionsOutput;
        use aws_sdk_s3::operation::{
            get_object::GetObjectOutput, head_object::HeadObjectOutput, put_object::PutObjectOutput,
        };
        use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};

        use super::*;

        fn s3(rules: &[&Rule]) -> aws_sdk_s3::Client {
            mock_client!(aws_sdk_s3, RuleMode::MatchAny, rules, |c| c
                .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled()))
        }

        fn lambda(rules: &[&Rule]) -> aws_sdk_lambda::Client {
            mock_client!(aws_sdk_lambda, RuleMode::MatchAny, rules, |c| c
                .retry_config(aws_sdk_lambda::config::retry::RetryConfig::disabled()))
        }

        fn zip() -> Vec<u8> {
            use std::io::Write;
            let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
            w.start_file("python/six.py", zip::write::SimpleFileOptions::default())
                .unwrap();
            w.write_all(b"# six").unwrap();
            w.finish().unwrap().into_inner()
        }

        #[tokio::test]
        async fn throttled_publish_fails_the_invocation_and_releases_the_claim() {
            let zip = Arc::new(zip());
            // The zip's identity is its bytes' digest (the metadata must agree with it).
            let code_sha256 = {
                use base64::Engine;
                use sha2::Digest;
                base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&*zip))
            };
            let key = "layers/six/python3.12-arm64/0123456789abcdef.zip";
            let metadata = ArtifactMetadata {
                layer_name: "six".into(),
                requirements: "six==1.16.0".into(),
                python_version: "3.12".into(),
                compatible_runtimes: vec![crate::request::Runtime::Python312],
                compatible_architectures: vec![crate::request::Architecture::Arm64],
                content_sha256: Some(code_sha256.clone()),
                ..ArtifactMetadata::default()
            }
            .to_s3_metadata();
            // The claim object lives in this cell: PutObject stores it, GetObject of its key returns it.
            let claim: Arc<Mutex<Option<Vec<u8>>>> = Arc::default();

            let head = {
                let len = zip.len() as i64;
                mock!(aws_sdk_s3::Client::head_object).then_output(move || {
                    HeadObjectOutput::builder()
                        .content_length(len)
                        .version_id("v1")
                        .e_tag("\"e1\"")
                        .set_metadata(Some(metadata.clone()))
                        .build()
                })
            };
            let get = {
                let (zip, claim) = (zip.clone(), claim.clone());
                mock!(aws_sdk_s3::Client::get_object).then_compute_output(move |req| {
                    let body = if req.key().is_some_and(|k| k.starts_with(CLAIM_PREFIX)) {
                        claim.lock().unwrap().clone().unwrap_or_default()
                    } else if let Some(range) = req.range() {
                        let (a, b) = range.trim_start_matches("bytes=").split_once('-').unwrap();
                        zip[a.parse::<usize>().unwrap()..=b.parse::<usize>().unwrap()].to_vec()
                    } else {
                        // The streamed check's whole-object GET.
                        zip.to_vec()
                    };
                    GetObjectOutput::builder()
                        .e_tag("\"claim-etag\"")
                        .body(ByteStream::from(body))
                        .build()
                })
            };
            let put = {
                let claim = claim.clone();
                mock!(aws_sdk_s3::Client::put_object).then_compute_output(move |req| {
                    *claim.lock().unwrap() = req.body().bytes().map(<[u8]>::to_vec);
                    PutObjectOutput::builder().e_tag("\"claim-etag\"").build()
                })
            };
            let list = mock!(aws_sdk_lambda::Client::list_layer_versions)
                .then_output(|| ListLayerVersionsOutput::builder().build());
            // Lambda's throttling answer on the wire: HTTP 429.
            let throttled = mock!(aws_sdk_lambda::Client::publish_layer_version)
                .sequence()
                .http_status(
                    429,
                    Some(r#"{"Type":"User","message":"Rate exceeded"}"#.to_owned()),
                )
                .times(3)
                .build();

            let mut state = PublishState::new(
                Arc::new(config()),
                s3(&[&head, &get, &put]),
                lambda(&[&list, &throttled]),
            );
            state.guard.publish_attempts = 2;
            state.guard.publish_backoff = Duration::from_millis(1);
            let mut event: Value =
                serde_json::from_str(include_str!("../../events/s3-put.json")).unwrap();
            event["Records"][0]["s3"]["bucket"]["name"] = Value::from("artifacts");
            event["Records"][0]["s3"]["object"]["key"] = Value::from(key);

            let err = handle(&state, event).await.unwrap_err();
            // Two attempts (the SDK retries none), each after looking for an existing version.
            assert_eq!(throttled.num_calls(), 2);
            assert_eq!(list.num_calls(), 2);
            assert_eq!(err.results()[0].outcome.status(), "failed");
            assert_eq!(err.results()[0].version_id.as_deref(), Some("v1"));
            let diagnostic = crate::function_error::FunctionError::from(err);
            assert_eq!(diagnostic.error_type, "Transient");
            assert!(
                diagnostic.error_message.contains("PublishLayerVersion"),
                "{}",
                diagnostic.error_message
            );

            // The claim was released, not left to block the retry for a whole lease.
            let stored: Value =
                serde_json::from_slice(&claim.lock().unwrap().clone().unwrap()).unwrap();
            assert_eq!(stored["lease_until"], 0);
            assert_eq!(stored["layer_version_arn"], Value::Null);
            assert_eq!(stored["rejected"], Value::Null);
            assert_eq!(stored["key"], key);
            assert_eq!(stored["code_sha256"], code_sha256.as_str());
        }

        #[tokio::test]
        async fn a_test_event_touches_no_aws_api() {
            let state = PublishState::new(Arc::new(config()), s3(&[]), lambda(&[]));
            let event = serde_json::json!({"Service": "Amazon S3", "Event": "s3:TestEvent",
                "Time": "2026-01-01T00:00:00.000Z", "Bucket": "artifacts"});
            let response = handle(&state, event).await.unwrap();
            assert_eq!(response.count("ignored"), 1);
            // Ignored records are answered without any call (the mocks have no rules: any call would fail).
            let other = serde_json::json!({"Records": [{"eventName": "ObjectRemoved:Delete", "eventTime": "2026-01-01T00:00:00Z",
                "s3": {"bucket": {"name": "artifacts"}, "object": {"key": "layers/a.zip"}}}]});
            assert_eq!(handle(&state, other).await.unwrap().count("ignored"), 1);
        }
    }
}
