//! Build records and build-status against moto, through the real handlers: submit-build -> the job's own command
//! (read back with DescribeJobs) run by layer-builder here -> publish-layer on the S3 event moto generated ->
//! build-status by job id and by artifact. moto's Batch marks every job SUCCEEDED at once without running it;
//! the states must still read as in AWS once layer-builder has run the command.

use layerforge::function_error::HandlerError as _;
use std::{process::Command, sync::Arc};

use aws_config::SdkConfig;
use layerforge::{
    publish::{self, PublishState},
    records::{self, RecordOutcome},
    status::{self, State, StatusState},
    submit::{self, Status, SubmitState},
};
use serde_json::{Value, json};

use crate::{helpers, pipeline};

/// The three functions' states over one moto deployment.
struct Deployment {
    bucket: String,
    queue_url: Option<String>,
    job_queue: String,
    submit: SubmitState,
    publish: PublishState,
    status: StatusState,
    batch: aws_sdk_batch::Client,
    sqs: aws_sdk_sqs::Client,
}

async fn deployment(sdk: &SdkConfig, name: &str, with_events: bool) -> Deployment {
    let stack = helpers::batch_stack(sdk).await;
    let (bucket, queue_url) = if with_events {
        let (b, q) = helpers::bucket_with_events(sdk, name, Some("layers/")).await;
        (b, Some(q))
    } else {
        (helpers::bucket(sdk, name).await, None)
    };
    let config = Arc::new(helpers::config(&bucket, &stack.build_targets, &[]));
    let s3 = layerforge::aws::s3_client(sdk);
    let batch = layerforge::aws::batch_client(sdk);
    Deployment {
        bucket,
        queue_url,
        job_queue: stack.arm64.0.clone(),
        submit: SubmitState {
            config: config.clone(),
            s3: s3.clone(),
            batch: batch.clone(),
            // Their cached artifacts carry made-up ARNs: the existence check is pipeline.rs's.
            lambda: None,
            invoke: None,
        },
        publish: PublishState::new(
            config.clone(),
            s3.clone(),
            layerforge::aws::lambda_client(sdk),
        ),
        status: StatusState {
            config,
            s3,
            batch: batch.clone(),
            logs: layerforge::aws::logs_client(sdk),
        },
        batch,
        sqs: aws_sdk_sqs::Client::new(sdk),
    }
}

impl Deployment {
    async fn status(&self, query: Value) -> status::StatusResponse {
        let answer = status::handle(&self.status, query.clone())
            .await
            .unwrap_or_else(|e| panic!("build-status {query}: {e}"));
        // The answers as a caller sees them (`cargo test status:: -- --nocapture`).
        eprintln!(
            "build-status {query} -> {}",
            serde_json::to_string(&answer).unwrap_or_default()
        );
        answer
    }

    async fn by_job(&self, job_id: &str) -> status::StatusResponse {
        self.status(json!({ "job_id": job_id })).await
    }

    async fn by_artifact(&self, artifact: &str) -> status::StatusResponse {
        self.status(json!({ "artifact": artifact })).await
    }

    /// The job's own layer-builder argv, as Batch holds it.
    async fn command(&self, job_id: &str) -> Vec<String> {
        let out = self
            .batch
            .describe_jobs()
            .jobs(job_id)
            .send()
            .await
            .unwrap();
        out.jobs()[0].container().unwrap().command().to_vec()
    }

    fn key_of(&self, artifact: &str) -> String {
        artifact
            .strip_prefix(&format!("s3://{}/", self.bucket))
            .unwrap()
            .to_owned()
    }

    /// Jobs in this deployment's arm64 queue, whatever their status.
    async fn jobs_in_queue(&self) -> Vec<String> {
        use aws_sdk_batch::types::JobStatus;
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
            let out = self
                .batch
                .list_jobs()
                .job_queue(&self.job_queue)
                .job_status(status)
                .send()
                .await
                .unwrap();
            ids.extend(
                out.job_summary_list()
                    .iter()
                    .filter_map(|j| j.job_id().map(str::to_owned)),
            );
        }
        ids
    }
}

/// Runs layer-builder with the job's command in the environment Batch gives a job (`AWS_BATCH_JOB_ID`).
fn run_job(command: &[String], job_id: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_layer-builder"))
        .args(command)
        .env("AWS_ENDPOINT_URL", helpers::endpoint())
        .env("AWS_REGION", helpers::REGION)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_BATCH_JOB_ID", job_id)
        .output()
        .expect("layer-builder runs")
}

/// A python3.11 arm64 request: this machine has a Python 3.11 for the builder's cross build, as in the pipeline test.
fn request(name: &str, requirements: &str) -> Value {
    json!({
        "layer_name": name,
        "requirements": requirements,
        "runtime": "python3.11",
        "architecture": "arm64",
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_build_reads_running_built_then_published_by_job_and_by_artifact() {
    let sdk = helpers::sdk().await;
    let d = deployment(&sdk, "status-ok", true).await;
    let name = helpers::unique("ok");
    let submitted = submit::handle(&d.submit, request(&name, "six==1.16.0"))
        .await
        .unwrap();
    assert_eq!(submitted.status, Status::Submitted);
    let job_id = submitted.job_id.clone().unwrap();

    // The record: the validated request, fingerprint, artifact key and job, no outcome yet.
    let key =
        layerforge::artifact::ArtifactKey::parse("layers", &d.key_of(&submitted.artifact)).unwrap();
    let record = records::read_record(&d.submit.s3, &d.bucket, &key)
        .await
        .unwrap()
        .and_then(|s| s.value)
        .expect("a build record");
    assert_eq!(record.job_id.as_deref(), Some(job_id.as_str()));
    assert_eq!(record.request.requirements, ["six==1.16.0"]);
    assert!(record.fingerprint.starts_with(&submitted.fingerprint));
    assert_eq!(record.outcome, None);

    // moto says SUCCEEDED at once; the command has not run: running.
    let before = d.by_job(&job_id).await;
    assert_eq!(before.state, State::Running, "{before:?}");
    assert_eq!(before.job_status.as_deref(), Some("SUCCEEDED"));

    let command = d.command(&job_id).await;
    let built = run_job(&command, &job_id);
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let after_build = d.by_job(&job_id).await;
    assert_eq!(after_build.state, State::Built, "{after_build:?}");

    let event = pipeline::event_for(
        &d.sqs,
        d.queue_url.as_deref().unwrap(),
        &d.key_of(&submitted.artifact),
    )
    .await;
    let published = publish::handle(&d.publish, event).await.unwrap();
    let arn = published.records[0]
        .outcome
        .layer_version_arn()
        .expect("published")
        .to_owned();

    let by_job = d.by_job(&job_id).await;
    let by_artifact = d.by_artifact(&submitted.artifact).await;
    for answer in [&by_job, &by_artifact] {
        assert_eq!(answer.state, State::Published, "{answer:?}");
        assert_eq!(answer.layer_version_arn.as_deref(), Some(arn.as_str()));
        assert_eq!(answer.job_id.as_deref(), Some(job_id.as_str()));
        assert_eq!(answer.artifact, submitted.artifact);
        assert_eq!(
            (
                answer.layer_name.as_str(),
                answer.runtime.as_str(),
                answer.architecture.as_str()
            ),
            (name.as_str(), "python3.11", "arm64")
        );
    }
    // publish-layer completed the record.
    let record = records::read_record(&d.submit.s3, &d.bucket, &key)
        .await
        .unwrap()
        .and_then(|s| s.value)
        .unwrap();
    assert!(
        matches!(&record.outcome, Some(RecordOutcome::Published { layer_version_arn, .. }) if *layer_version_arn == arn),
        "{:?}",
        record.outcome
    );
    // And the same pinned request is now cached with that ARN.
    let again = submit::handle(&d.submit, request(&name, "six==1.16.0"))
        .await
        .unwrap();
    assert_eq!(again.status, Status::Cached);
    assert_eq!(again.layer_version_arn.as_deref(), Some(arn.as_str()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_package_that_does_not_exist_reads_failed_naming_it_and_is_submitted_again() {
    const MISSING: &str = "layerforge-no-such-package-7c41d0";
    let sdk = helpers::sdk().await;
    let d = deployment(&sdk, "status-fail", false).await;
    let name = helpers::unique("missing");
    let requirements = format!("{MISSING}==1.0.0");
    let submitted = submit::handle(&d.submit, request(&name, &requirements))
        .await
        .unwrap();
    let job_id = submitted.job_id.clone().unwrap();
    let built = run_job(&d.command(&job_id).await, &job_id);
    assert_eq!(built.status.code(), Some(3), "the builder's real exit");

    for answer in [
        d.by_job(&job_id).await,
        d.by_artifact(&submitted.artifact).await,
    ] {
        assert_eq!(answer.state, State::Failed, "{answer:?}");
        assert_eq!(answer.exit_code, Some(3));
        let reason = answer.reason.as_deref().unwrap_or_default();
        assert!(
            reason.starts_with("install: ") && reason.contains(MISSING),
            "{reason}"
        );
        let tail = answer.log_tail.clone().unwrap_or_default();
        assert!(tail.iter().any(|l| l.contains(MISSING)), "{tail:?}");
    }
    // No zip was uploaded.
    let head = d
        .submit
        .s3
        .head_object()
        .bucket(&d.bucket)
        .key(d.key_of(&submitted.artifact))
        .send()
        .await;
    assert!(head.is_err(), "no artifact after a failed build");

    // The same request after a failed job: a new job.
    let again = submit::handle(&d.submit, request(&name, &requirements))
        .await
        .unwrap();
    assert_eq!(again.status, Status::Submitted);
    assert_ne!(again.job_id.as_deref(), Some(job_id.as_str()));
    // The old report is about the old job: the new one reads running, not failed.
    let fresh = d.by_job(again.job_id.as_deref().unwrap()).await;
    assert_eq!(fresh.state, State::Running, "{fresh:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_terminated_job_reads_failed_with_the_operators_reason() {
    let sdk = helpers::sdk().await;
    let d = deployment(&sdk, "status-term", false).await;
    let name = helpers::unique("term");
    let submitted = submit::handle(&d.submit, request(&name, "six==1.16.0"))
        .await
        .unwrap();
    let job_id = submitted.job_id.clone().unwrap();
    d.batch
        .terminate_job()
        .job_id(&job_id)
        .reason("stopped by the operator: wrong pin")
        .send()
        .await
        .unwrap();
    for answer in [
        d.by_job(&job_id).await,
        d.by_artifact(&submitted.artifact).await,
    ] {
        assert_eq!(answer.state, State::Failed, "{answer:?}");
        assert!(
            answer
                .reason
                .as_deref()
                .unwrap_or_default()
                .contains("stopped by the operator: wrong pin"),
            "{answer:?}"
        );
    }
    // A terminated job does not block the next identical request.
    let again = submit::handle(&d.submit, request(&name, "six==1.16.0"))
        .await
        .unwrap();
    assert_eq!(again.status, Status::Submitted);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rejected_artifact_reads_rejected_and_is_not_cached() {
    let sdk = helpers::sdk().await;
    let d = deployment(&sdk, "status-rej", true).await;
    let name = helpers::unique("rej");
    let submitted = submit::handle(&d.submit, request(&name, "six==1.16.0"))
        .await
        .unwrap();
    let key = d.key_of(&submitted.artifact);
    // What a broken builder might upload: not a zip, no metadata.
    d.submit
        .s3
        .put_object()
        .bucket(&d.bucket)
        .key(&key)
        .body(aws_sdk_s3::primitives::ByteStream::from_static(
            b"not a zip",
        ))
        .send()
        .await
        .unwrap();
    let event = pipeline::event_for(&d.sqs, d.queue_url.as_deref().unwrap(), &key).await;
    let published = publish::handle(&d.publish, event).await.unwrap();
    assert_eq!(published.count("rejected"), 1, "{published:?}");

    let answer = d.by_artifact(&submitted.artifact).await;
    assert_eq!(answer.state, State::Rejected, "{answer:?}");
    let reason = answer.reason.clone().unwrap_or_default();
    // The full reason comes from the build record publish-layer completed (the tag holds only the code).
    let record = records::read_record(
        &d.submit.s3,
        &d.bucket,
        &layerforge::artifact::ArtifactKey::parse("layers", &key).unwrap(),
    )
    .await
    .unwrap()
    .and_then(|s| s.value)
    .unwrap();
    let Some(RecordOutcome::Rejected {
        code,
        reason: recorded,
        ..
    }) = &record.outcome
    else {
        panic!("the record has no rejection: {:?}", record.outcome)
    };
    assert_eq!(code, "missing-metadata");
    assert_eq!(&reason, recorded);
    assert!(reason.contains("layer-name"), "{reason}");
    assert_eq!(
        d.by_job(submitted.job_id.as_deref().unwrap()).await.state,
        State::Rejected
    );

    let jobs_before = d.jobs_in_queue().await.len();
    let again = submit::handle(&d.submit, request(&name, "six==1.16.0"))
        .await
        .unwrap();
    assert_eq!(again.status, Status::Rejected, "not cached: {again:?}");
    assert_eq!(again.reason.as_deref(), Some(reason.as_str()));
    assert_eq!(again.job_id, None);
    assert_eq!(
        d.jobs_in_queue().await.len(),
        jobs_before,
        "nothing submitted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_identical_request_in_flight_is_building_with_one_job_and_force_submits() {
    let sdk = helpers::sdk().await;
    let d = deployment(&sdk, "status-dup", false).await;
    let name = helpers::unique("dup");
    // Unpinned: the in-flight check applies to every request, pinned or not.
    let first = submit::handle(&d.submit, request(&name, "six>=1.16"))
        .await
        .unwrap();
    assert_eq!(first.status, Status::Submitted);
    let second = submit::handle(&d.submit, request(&name, "six>=1.16"))
        .await
        .unwrap();
    assert_eq!(second.status, Status::Building, "{second:?}");
    assert_eq!(second.job_id, first.job_id);
    assert_eq!(second.job_name, first.job_name);
    assert_eq!(second.artifact, first.artifact);
    assert_eq!(
        d.jobs_in_queue().await,
        [first.job_id.clone().unwrap()],
        "one job in Batch"
    );

    let mut forced = request(&name, "six>=1.16");
    forced["force"] = json!(true);
    let third = submit::handle(&d.submit, forced).await.unwrap();
    assert_eq!(third.status, Status::Submitted, "force always submits");
    assert_eq!(d.jobs_in_queue().await.len(), 2);
    // The record now follows the forced build.
    let by_artifact = d.by_artifact(&first.artifact).await;
    assert_eq!(by_artifact.job_id, third.job_id);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_queries_are_invalid_or_not_found_naming_the_field() {
    let sdk = helpers::sdk().await;
    let d = deployment(&sdk, "status-bad", false).await;
    let artifact = format!(
        "s3://{}/layers/nothing/python3.12-arm64/0123456789abcdef.zip",
        d.bucket
    );
    let cases = [
        (json!({}), "InvalidRequest", "request"),
        (
            json!({"job_id": "a", "artifact": artifact}),
            "InvalidRequest",
            "job_id",
        ),
        (
            json!({"job_id": "a", "wait": true}),
            "InvalidRequest",
            "wait",
        ),
        (
            json!({"artifact": "s3://another-bucket/layers/nothing/python3.12-arm64/0123456789abcdef.zip"}),
            "InvalidRequest",
            "artifact",
        ),
        (
            json!({"job_id": "00000000-0000-0000-0000-000000000000"}),
            "NotFound",
            "job_id",
        ),
        (json!({"artifact": artifact}), "NotFound", "artifact"),
    ];
    for (query, error_type, field) in cases {
        let err = status::handle(&d.status, query.clone()).await.unwrap_err();
        assert_eq!(err.error_type(), error_type, "{query}: {err}");
        assert!(
            err.to_string().starts_with(&format!("{field}: ")),
            "{query}: {err}"
        );
    }
}
