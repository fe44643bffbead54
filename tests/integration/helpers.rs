//! Fixtures against moto's server: the local AWS every integration test talks to over HTTP.
//!
//! `MOTO_ENDPOINT` (e.g. `http://127.0.0.1:5055`) must point at a running `moto_server`; `scripts/test.sh`
//! starts one. A missing server is a test failure, never a skip.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use layerforge::config::Config;

pub const REGION: &str = "us-east-1";
pub const ACCOUNT: &str = "123456789012";

/// The moto server's base URL; panics (fails the test) when it is not configured.
pub fn endpoint() -> String {
    match std::env::var("MOTO_ENDPOINT") {
        Ok(v) if !v.is_empty() => v.trim_end_matches('/').to_owned(),
        _ => panic!(
            "MOTO_ENDPOINT is not set: integration tests need moto's server (run scripts/test.sh, which starts it)"
        ),
    }
}

/// SDK configuration pointing at moto with dummy credentials.
pub async fn sdk() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(endpoint())
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "testing", "testing", None, None, "moto",
        ))
        .load()
        .await
}

/// A name no other test (or earlier run against the same server) uses.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{n}-{:x}", std::process::id(), nanos % 0xfffff)
}

/// What the SAM template would create for the builds (the library's provisioning, see
/// `layerforge::local::provision`): per architecture a Fargate queue and job definition.
pub use layerforge::local::provision::BatchStack;

/// Provisions, in moto, under a name no other test uses: service and job roles, network, a FARGATE compute
/// environment, one job queue and one job definition per architecture (`runtimePlatform` ARM64 / X86_64).
pub async fn batch_stack(sdk: &SdkConfig) -> BatchStack {
    let moto = layerforge::local::moto::Moto::new(&endpoint()).expect("MOTO_ENDPOINT");
    layerforge::local::provision::batch_stack(sdk, &moto, &unique("lf"))
        .await
        .expect("provision the Batch stack in moto")
}

/// A new bucket in moto.
pub async fn bucket(sdk: &SdkConfig, prefix: &str) -> String {
    let s3 = layerforge::aws::s3_client(sdk);
    let name = unique(prefix).to_lowercase();
    s3.create_bucket()
        .bucket(&name)
        .send()
        .await
        .expect("create bucket");
    name
}

/// A [`Config`] for this deployment, as the template's environment would give it.
pub fn config(bucket: &str, build_targets: &str, extra: &[(&str, &str)]) -> Config {
    let mut vars: Vec<(String, String)> = vec![
        ("ARTIFACT_BUCKET".into(), bucket.into()),
        ("BUILD_TARGETS".into(), build_targets.into()),
    ];
    vars.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    Config::from_lookup(|k| {
        vars.iter()
            .find(|(name, _)| name == k)
            .map(|(_, v)| v.clone())
    })
    .expect("config")
}

/// A versioned bucket whose `ObjectCreated` events for `.zip` keys (under `key_prefix`, when given) go to a new SQS
/// queue, as the template's S3 event does: (bucket, queue URL). moto's first message on it is an `s3:TestEvent`.
pub async fn bucket_with_events(
    sdk: &SdkConfig,
    name: &str,
    key_prefix: Option<&str>,
) -> (String, String) {
    let bucket = unique(name).to_lowercase();
    let queue = unique(&format!("{name}-events"));
    let queue_url =
        layerforge::local::provision::bucket_with_events(sdk, &bucket, &queue, key_prefix)
            .await
            .expect("provision a bucket with S3 events in moto");
    (bucket, queue_url)
}
