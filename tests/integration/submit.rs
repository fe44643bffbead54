//! submit-build against moto: real SubmitJob calls, read back with DescribeJobs.

use layerforge::function_error::HandlerError as _;
use std::sync::Arc;

use aws_sdk_batch::types::JobStatus;
use aws_sdk_s3::primitives::ByteStream;
use clap::Parser as _;
use layerforge::{
    artifact::{ArtifactKey, Fingerprint},
    request::{Architecture, Installer, LayerName, LayerOptions, Requirements, Runtime},
    submit::{self, Status, SubmitError, SubmitState},
};
use serde_json::{Value, json};

use crate::helpers;

struct Fixture {
    state: SubmitState,
    stack: helpers::BatchStack,
    bucket: String,
    batch: aws_sdk_batch::Client,
    s3: aws_sdk_s3::Client,
}

async fn fixture(extra: &[(&str, &str)]) -> Fixture {
    let sdk = helpers::sdk().await;
    let stack = helpers::batch_stack(&sdk).await;
    let bucket = helpers::bucket(&sdk, "artifacts").await;
    let config = helpers::config(&bucket, &stack.build_targets, extra);
    let s3 = layerforge::aws::s3_client(&sdk);
    let batch = aws_sdk_batch::Client::new(&sdk);
    Fixture {
        state: SubmitState {
            config: Arc::new(config),
            s3: s3.clone(),
            batch: batch.clone(),
            // Their cached artifacts carry made-up ARNs: the existence check is pipeline.rs's.
            lambda: None,
            invoke: None,
        },
        stack,
        bucket,
        batch,
        s3,
    }
}

/// Every job in a queue, whatever its status (moto's jobs succeed at once without Docker).
async fn jobs_in(batch: &aws_sdk_batch::Client, queue: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for status in [
        JobStatus::Submitted,
        JobStatus::Pending,
        JobStatus::Runnable,
        JobStatus::Starting,
        JobStatus::Running,
        JobStatus::Succeeded,
        JobStatus::Failed,
    ] {
        let out = batch
            .list_jobs()
            .job_queue(queue)
            .job_status(status)
            .send()
            .await
            .unwrap();
        ids.extend(
            out.job_summary_list()
                .iter()
                .map(|j| j.job_id().unwrap_or_default().to_owned()),
        );
    }
    ids
}

fn expected_key(
    fx: &Fixture,
    name: &str,
    text: &str,
    runtime: Runtime,
    arch: Architecture,
    installer: Installer,
) -> ArtifactKey {
    let reqs = Requirements::parse(text).unwrap();
    let fp = Fingerprint::compute(&reqs, runtime, arch, installer, LayerOptions::default());
    ArtifactKey::new(
        &fx.state.config.artifact_prefix,
        &LayerName::parse(name).unwrap(),
        runtime,
        arch,
        &fp,
    )
}

#[tokio::test]
async fn jobs_are_submitted_with_the_exact_command_queue_and_definition() {
    let fx = fixture(&[]).await;
    let cases = [
        (
            json!({"layer_name": "http-clients", "requirements": "requests == 2.32.3|httpx == 0.27.2", "license": "MIT"}),
            Architecture::Arm64,
            Runtime::Python312,
        ),
        (
            json!({"layer_name": "data", "requirements": ["pandas>=2.2,<3", "pyarrow==17.0.0; python_version >= \"3.9\""],
                   "runtime": "python3.13", "architecture": "x86_64", "description": "Data stack", "vcpu": 2, "memory_mib": 8192,
                   "installer": "pip"}),
            Architecture::X86_64,
            Runtime::Python313,
        ),
        // Routed by runtime: each arm64 runtime has its own job definition (its own builder image).
        (
            json!({"layer_name": "old", "requirements": "six==1.16.0", "runtime": "python3.10"}),
            Architecture::Arm64,
            Runtime::Python310,
        ),
        (
            json!({"layer_name": "new", "requirements": "six==1.16.0", "runtime": "python3.14"}),
            Architecture::Arm64,
            Runtime::Python314,
        ),
        // Values that begin with `-` reach the builder intact.
        (
            json!({"layer_name": "-dash", "requirements": "six==1.16.0", "runtime": "python3.11",
                   "description": "- beta", "license": "-MIT-"}),
            Architecture::Arm64,
            Runtime::Python311,
        ),
    ];
    for (event, arch, runtime) in cases {
        let response = submit::handle(&fx.state, event.clone()).await.unwrap();
        assert_eq!(response.status, Status::Submitted);
        let job_id = response.job_id.clone().unwrap();
        let (queue, definition) = fx.stack.target(runtime, arch);

        let described = fx.batch.describe_jobs().jobs(&job_id).send().await.unwrap();
        let job = &described.jobs()[0];
        assert_eq!(job.job_queue(), Some(queue.as_str()));
        assert_eq!(job.job_definition(), Some(definition.as_str()));
        assert_eq!(job.job_name(), response.job_name.as_deref());
        let name = event["layer_name"].as_str().unwrap();
        assert_eq!(
            job.job_name(),
            Some(format!("layer-{name}-{}-{arch}", runtime.compact()).as_str())
        );

        let text = match &event["requirements"] {
            Value::String(s) => s.clone(),
            Value::Array(a) => a
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect::<Vec<_>>()
                .join("\n"),
            _ => unreachable!(),
        };
        // uv unless the request names pip; the installer is part of the fingerprint (and so of the key).
        let installer: Installer = event["installer"].as_str().unwrap_or("uv").parse().unwrap();
        let key = expected_key(&fx, name, &text, runtime, arch, installer);
        assert_eq!(response.artifact, format!("s3://{}/{key}", fx.bucket));
        assert_eq!(response.fingerprint, key.fingerprint);

        let command = job.container().unwrap().command();
        let mut expected: Vec<String> = vec![
            format!("--name={name}"),
            format!(
                "--requirements={}",
                Requirements::parse(&text).unwrap().to_text()
            ),
            format!("--runtime={runtime}"),
            format!("--architecture={arch}"),
            format!("--installer={installer}"),
            format!("--bucket={}", fx.bucket),
            format!("--key={key}"),
        ];
        if let Some(l) = event["license"].as_str() {
            expected.push(format!("--license={l}"));
        }
        if let Some(d) = event["description"].as_str() {
            expected.push(format!("--description={d}"));
        }
        assert_eq!(command, expected.as_slice());
        assert!(command.iter().all(|c| !c.is_empty()));

        // layer-builder's own parser reads the job's command back into the request's values.
        let args = layerforge::builder::cli::Args::try_parse_from(
            std::iter::once("layer-builder").chain(command.iter().map(String::as_str)),
        )
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
        assert_eq!(args.name.as_str(), name);
        assert_eq!(args.runtime, Some(runtime));
        assert_eq!(args.architecture, Some(arch));
        assert_eq!(args.description.as_deref(), event["description"].as_str());
        assert_eq!(args.license.as_deref(), event["license"].as_str());
        // Requirement text reaches the builder unchanged: commas and markers intact.
        assert_eq!(
            args.requirements.as_deref(),
            Some(Requirements::parse(&text).unwrap().to_text().as_str())
        );
        if arch == Architecture::X86_64 {
            assert_eq!(
                args.requirements.as_deref(),
                Some("pandas>=2.2,<3\npyarrow==17.0.0; python_version >= \"3.9\"\n")
            );
        }
        let tags = job.tags().unwrap();
        assert_eq!(
            tags.get("layerforge:layer-name").map(String::as_str),
            Some(name)
        );
        assert_eq!(tags.get("layerforge:fingerprint"), Some(&key.fingerprint));
    }
}

#[tokio::test]
async fn invalid_requests_leave_no_job_behind() {
    let fx = fixture(&[]).await;
    let bad = [
        json!({"layer_name": "x", "requirements": "six\n--index-url https://evil.example/simple"}),
        json!({"layer_name": "x y", "requirements": "six"}),
        json!({"layer_name": "x", "requirements": "six", "licence": "MIT"}),
        json!({"layer_name": "x", "requirements": "six", "architecture": "sparc"}),
        json!({"layer_name": "x", "requirements": "six", "runtime": "python3.9"}),
        json!({"layer_name": "x", "requirements": "git+https://github.com/psf/requests"}),
        json!({"layer_name": "x", "requirements_s3_uri": "s3://not-allowed-bucket/requirements.txt"}),
    ];
    for event in bad {
        match submit::handle(&fx.state, event.clone()).await {
            Err(e @ SubmitError::InvalidRequest(_)) => assert_eq!(e.error_type(), "InvalidRequest"),
            other => panic!("{event} -> {other:?}"),
        }
    }
    for arch in Architecture::ALL {
        let jobs = jobs_in(&fx.batch, &fx.stack.target(Runtime::Python312, arch).0).await;
        assert!(jobs.is_empty(), "{arch}: {jobs:?}");
    }
}

#[tokio::test]
async fn pinned_builds_that_exist_are_cached_unless_forced() {
    let fx = fixture(&[]).await;
    let text = "six==1.16.0";
    let key = expected_key(
        &fx,
        "cached",
        text,
        Runtime::Python312,
        Architecture::Arm64,
        Installer::Uv,
    );
    let arn = "arn:aws:lambda:us-east-1:123456789012:layer:cached:3";
    fx.s3
        .put_object()
        .bucket(&fx.bucket)
        .key(key.to_string())
        .body(ByteStream::from_static(b"PK\x05\x06"))
        .tagging(format!("layer-version-arn={}", urlencode(arn)))
        .send()
        .await
        .unwrap();

    let response = submit::handle(
        &fx.state,
        json!({"layer_name": "cached", "requirements": text}),
    )
    .await
    .unwrap();
    assert_eq!(response.status, Status::Cached);
    assert_eq!(response.layer_version_arn.as_deref(), Some(arn));
    assert_eq!(response.job_id, None);
    let queue = &fx.stack.arm64.0;
    assert!(
        jobs_in(&fx.batch, queue).await.is_empty(),
        "a cached request submits nothing"
    );

    let forced = submit::handle(
        &fx.state,
        json!({"layer_name": "cached", "requirements": text, "force": true}),
    )
    .await
    .unwrap();
    assert_eq!(forced.status, Status::Submitted);
    assert_eq!(
        jobs_in(&fx.batch, queue).await,
        vec![forced.job_id.clone().unwrap()]
    );

    // An unpinned set can resolve differently tomorrow: never served from the cache.
    let loose = "six>=1.16";
    let loose_key = expected_key(
        &fx,
        "cached",
        loose,
        Runtime::Python312,
        Architecture::Arm64,
        Installer::Uv,
    );
    fx.s3
        .put_object()
        .bucket(&fx.bucket)
        .key(loose_key.to_string())
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap();
    let response = submit::handle(
        &fx.state,
        json!({"layer_name": "cached", "requirements": loose}),
    )
    .await
    .unwrap();
    assert_eq!(response.status, Status::Submitted);
    assert_eq!(jobs_in(&fx.batch, queue).await.len(), 2);
}

#[tokio::test]
async fn requirements_from_s3_are_validated_and_passed_on() {
    let sdk = helpers::sdk().await;
    let reqs_bucket = helpers::bucket(&sdk, "team-reqs").await;
    let fx = fixture(&[("ALLOWED_REQUIREMENTS_BUCKETS", &reqs_bucket)]).await;
    let text = "# team requirements\nrequests==2.32.3\nhttpx==0.27.2  # pinned\n";
    fx.s3
        .put_object()
        .bucket(&reqs_bucket)
        .key("app/requirements.txt")
        .body(ByteStream::from_static(text.as_bytes()))
        .send()
        .await
        .unwrap();
    fx.s3
        .put_object()
        .bucket(&reqs_bucket)
        .key("app/bad.txt")
        .body(ByteStream::from_static(
            b"requests==2.32.3\n--extra-index-url https://evil.example/simple\n",
        ))
        .send()
        .await
        .unwrap();

    let uri = format!("s3://{reqs_bucket}/app/requirements.txt");
    let response = submit::handle(
        &fx.state,
        json!({"layer_name": "from-s3", "requirements_s3_uri": uri}),
    )
    .await
    .unwrap();
    let inline = submit::handle(
        &fx.state,
        json!({"layer_name": "from-s3", "requirements": "requests==2.32.3|httpx==0.27.2"}),
    )
    .await
    .unwrap();
    assert_eq!(
        response.fingerprint, inline.fingerprint,
        "the fingerprint covers the file's content"
    );
    assert_eq!(
        (inline.status, &inline.job_id),
        (submit::Status::Building, &response.job_id),
        "the same build is in flight: nothing submitted"
    );
    let described = fx
        .batch
        .describe_jobs()
        .jobs(response.job_id.unwrap())
        .send()
        .await
        .unwrap();
    let command = described.jobs()[0].container().unwrap().command();
    assert!(
        command
            .iter()
            .any(|c| c == "--requirements=requests==2.32.3\nhttpx==0.27.2\n")
    );
    assert!(
        !command
            .iter()
            .any(|c| c.starts_with("--requirements-s3-uri")),
        "the builder gets validated text, not the file"
    );

    let err = submit::handle(&fx.state, json!({"layer_name": "from-s3", "requirements_s3_uri": format!("s3://{reqs_bucket}/app/bad.txt")}))
        .await
        .unwrap_err();
    let SubmitError::InvalidRequest(invalid) = err else {
        panic!("{err:?}")
    };
    assert_eq!(invalid.field, "requirements");
    assert!(invalid.rule.starts_with("line 2"), "{invalid}");

    let err = submit::handle(&fx.state, json!({"layer_name": "from-s3", "requirements_s3_uri": format!("s3://{reqs_bucket}/missing.txt")}))
        .await
        .unwrap_err();
    let SubmitError::InvalidRequest(invalid) = err else {
        panic!("{err:?}")
    };
    assert_eq!(invalid.field, "requirements_s3_uri");
    assert_eq!(
        jobs_in(&fx.batch, &fx.stack.arm64.0).await.len(),
        1,
        "only the first valid request was submitted (the second is the same build)"
    );
}

fn urlencode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[tokio::test]
async fn a_look_alike_of_the_prefix_is_refused_and_leaves_no_job() {
    let fx = fixture(&[("LAYER_NAME_PREFIX", "team-a")]).await;
    let queue = &fx.stack.arm64.0;
    let err = submit::handle(
        &fx.state,
        json!({"layer_name": "team-admin-x", "requirements": "six==1.16.0"}),
    )
    .await
    .unwrap_err();
    assert_eq!(err.error_type(), "InvalidRequest");
    let SubmitError::InvalidRequest(invalid) = err else {
        panic!("{err:?}")
    };
    assert_eq!(invalid.field, "layer_name");
    assert!(invalid.rule.contains("LAYER_NAME_PREFIX"), "{invalid}");
    assert!(jobs_in(&fx.batch, queue).await.is_empty());

    // The names the prefix owns are built.
    for name in ["team-a-x", "team-a_x", "team-a"] {
        submit::handle(
            &fx.state,
            json!({"layer_name": name, "requirements": "six==1.16.0"}),
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: {e:?}"));
    }
    assert_eq!(jobs_in(&fx.batch, queue).await.len(), 3);
}
