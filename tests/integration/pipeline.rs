//! The whole pipeline against moto, through the same handlers as in AWS: submit-build -> Batch job (read back
//! with DescribeJobs) -> layer-builder run here with exactly the job's command -> the S3 event moto generated ->
//! publish-layer -> a layer version whose packages import. `scripts/run-local.sh` runs the same steps through
//! cargo-lambda's Runtime API.

use std::{path::Path, process::Command, sync::Arc, time::Duration};

use base64::Engine;
use layerforge::{
    publish::{self, PublishState},
    samcache,
    submit::{self, Status, SubmitState},
};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::helpers;

/// The S3 event message moto generated for `key` (skipping its `s3:TestEvent` and other keys' events).
pub(crate) async fn event_for(sqs: &aws_sdk_sqs::Client, queue_url: &str, key: &str) -> Value {
    for _ in 0..30 {
        let out = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        for message in out.messages() {
            let body: Value = serde_json::from_str(message.body().unwrap()).unwrap();
            sqs.delete_message()
                .queue_url(queue_url)
                .receipt_handle(message.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
            let for_key = body["Records"].as_array().is_some_and(|records| {
                // Event keys are form-URL-encoded (moto encodes '/' too).
                records.iter().any(|r| {
                    r["s3"]["object"]["key"]
                        .as_str()
                        .and_then(|k| publish::form_decode(k).ok())
                        .as_deref()
                        == Some(key)
                })
            });
            if for_key {
                return body;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("no S3 event for {key} on {queue_url}");
}

/// Runs the builder binary with the job's argv and environment as `layerforge local serve` does: a job with
/// upload grants gets no AWS variable at all.
pub(crate) fn run_builder(
    command: &[String],
    job_env: &[(String, String)],
) -> std::process::Output {
    let env = layerforge::local::serve::builder_env(
        job_env,
        std::env::vars().map(|(k, _)| k),
        &helpers::endpoint(),
        "pipeline-job",
    );
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_layer-builder"));
    for name in &env.remove {
        cmd.env_remove(name);
    }
    cmd.args(command)
        .envs(env.set.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("layer-builder runs")
}

fn unzip(zip: &[u8], into: &Path) {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip)).unwrap();
    archive.extract(into).unwrap();
}

#[tokio::test]
async fn a_build_request_becomes_a_published_layer_that_imports() {
    let sdk = helpers::sdk().await;
    let stack = helpers::batch_stack(&sdk).await;
    let (bucket, queue_url) = helpers::bucket_with_events(&sdk, "pipeline", Some("layers/")).await;
    let config = Arc::new(helpers::config(&bucket, &stack.build_targets, &[]));
    let s3 = layerforge::aws::s3_client(&sdk);
    let batch = aws_sdk_batch::Client::new(&sdk);
    let lambda = aws_sdk_lambda::Client::new(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let submit_state = SubmitState {
        config: config.clone(),
        s3: s3.clone(),
        batch: batch.clone(),
        lambda: Some(lambda.clone()),
        invoke: None,
    };
    let publish_state = PublishState::new(config.clone(), s3.clone(), lambda.clone());

    // 1. submit-build with the local demo's request (docs/local-cloud.md).
    let request: Value =
        serde_json::from_str(include_str!("../../events/local-demo.json")).unwrap();
    let submitted = submit::handle(&submit_state, request.clone())
        .await
        .unwrap();
    assert_eq!(submitted.status, Status::Submitted);
    let key = submitted
        .artifact
        .strip_prefix(&format!("s3://{bucket}/"))
        .unwrap()
        .to_owned();

    // 2. The job's own command, read back from Batch, drives the builder.
    let job = batch
        .describe_jobs()
        .jobs(submitted.job_id.clone().unwrap())
        .send()
        .await
        .unwrap();
    let (command, job_env) =
        layerforge::local::serve::job_command_and_env(job.jobs()[0].container().unwrap());
    assert_eq!(job.jobs()[0].job_queue(), Some(stack.arm64.0.as_str()));
    assert!(
        job_env
            .iter()
            .any(|(k, _)| k == layerforge::grant::ARTIFACT_GRANT_ENV),
        "the job carries its upload grants: {job_env:?}"
    );
    let built = run_builder(&command, &job_env);
    assert!(
        built.status.success(),
        "layer-builder {command:?} failed: {}\n{}",
        String::from_utf8_lossy(&built.stdout),
        String::from_utf8_lossy(&built.stderr)
    );

    // 3. The event moto generated for the upload, fed to publish-layer.
    let event = event_for(&sqs, &queue_url, &key).await;
    let published = publish::handle(&publish_state, event).await.unwrap();
    let arn = published
        .records
        .iter()
        .find_map(|r| r.outcome.layer_version_arn())
        .unwrap_or_else(|| panic!("nothing published: {published:?}"))
        .to_owned();
    assert!(arn.contains(":layer:local-demo:"), "{arn}");

    // 4. The layer version is the zip: same CodeSha256, runtimes and architecture of the request.
    let zip = s3
        .get_object()
        .bucket(&bucket)
        .key(&key)
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .to_vec();
    let version: i64 = arn.rsplit(':').next().unwrap().parse().unwrap();
    let layer = lambda
        .get_layer_version()
        .layer_name("local-demo")
        .version_number(version)
        .send()
        .await
        .unwrap();
    let content = layer.content().unwrap();
    assert_eq!(
        content.code_sha256(),
        Some(
            base64::engine::general_purpose::STANDARD
                .encode(Sha256::digest(&zip))
                .as_str()
        )
    );
    assert_eq!(content.code_size(), zip.len() as i64);
    assert_eq!(
        layer
            .compatible_runtimes()
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>(),
        ["python3.11"]
    );
    assert_eq!(
        layer
            .compatible_architectures()
            .iter()
            .map(|a| a.as_str())
            .collect::<Vec<_>>(),
        ["arm64"]
    );

    // The packages import from the unpacked layer, laid out where sam local looks for it.
    let cache_root = tempfile::tempdir().unwrap();
    let layer_dir = cache_root
        .path()
        .join(samcache::layer_dir_name(&arn).unwrap());
    unzip(&zip, &layer_dir);
    let site = layer_dir.join("python/lib/python3.11/site-packages");
    let import = Command::new("python3.11")
        .args(["-I", "-c", "import sys; sys.path.insert(0, sys.argv[1]); import six, attrs, idna; print(six.__file__)"])
        .arg(&site)
        .output()
        .expect("python3.11 runs");
    assert!(
        import.status.success(),
        "{}",
        String::from_utf8_lossy(&import.stderr)
    );
    assert!(
        String::from_utf8_lossy(&import.stdout).starts_with(site.to_str().unwrap()),
        "six came from the layer"
    );

    // 5. The same pinned request again: cached, with the published ARN, and no second job.
    let again = submit::handle(&submit_state, request.clone())
        .await
        .unwrap();
    assert_eq!(again.status, Status::Cached);
    assert_eq!(again.layer_version_arn.as_deref(), Some(arn.as_str()));
    assert_eq!(again.artifact, submitted.artifact);

    // 6. The version is deleted (issue 24 item 4): the same request builds again instead of answering `cached`
    //    with an ARN no function can attach, and its zip (the same bytes) publishes a new version.
    lambda
        .delete_layer_version()
        .layer_name("local-demo")
        .version_number(version)
        .send()
        .await
        .unwrap();
    let rebuilt = submit::handle(&submit_state, request).await.unwrap();
    assert_eq!(rebuilt.status, Status::Submitted, "{rebuilt:?}");
    assert_eq!(rebuilt.artifact, submitted.artifact, "the same fingerprint");
    let job = batch
        .describe_jobs()
        .jobs(rebuilt.job_id.clone().unwrap())
        .send()
        .await
        .unwrap();
    let (command, job_env) =
        layerforge::local::serve::job_command_and_env(job.jobs()[0].container().unwrap());
    let built = run_builder(&command, &job_env);
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let event = event_for(&sqs, &queue_url, &key).await;
    let published = publish::handle(&publish_state, event).await.unwrap();
    let new_arn = published
        .records
        .iter()
        .find_map(|r| r.outcome.layer_version_arn())
        .unwrap_or_else(|| panic!("nothing published again: {published:?}"))
        .to_owned();
    assert_ne!(new_arn, arn, "a new version, not the deleted one");
    let versions = lambda
        .list_layer_versions()
        .layer_name("local-demo")
        .send()
        .await
        .unwrap();
    let numbers: Vec<i64> = versions
        .layer_versions()
        .iter()
        .map(|v| v.version())
        .collect();
    assert_eq!(numbers, [version + 1], "one live version");
    eprintln!("FIGURES pipeline: {arn} deleted; the same request published {new_arn}");
}
