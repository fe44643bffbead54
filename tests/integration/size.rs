//! The size report past the builder (DESIGN section 13), against moto through the real handlers: a build's size
//! reaches build-status and the build record publish-layer completes, and submit-build refuses a cached or
//! building answer whose build is over the request's `max_unzipped_mb`.

use layerforge::function_error::HandlerError as _;
use std::{process::Command, sync::Arc};

use aws_config::SdkConfig;
use aws_sdk_s3::primitives::ByteStream;
use layerforge::{
    artifact::ArtifactKey,
    publish::{self, Outcome, PublishState},
    records::{self, FailureReport, RecordOutcome},
    request::MIB,
    size::{Distribution, SizeReport},
    status::{self, State, StatusState},
    submit::{self, Status, SubmitError, SubmitState},
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
    s3: aws_sdk_s3::Client,
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
            s3: s3.clone(),
            batch: batch.clone(),
            logs: layerforge::aws::logs_client(sdk),
        },
        s3,
        batch,
        sqs: aws_sdk_sqs::Client::new(sdk),
    }
}

impl Deployment {
    async fn status(&self, query: Value) -> (status::StatusResponse, Value) {
        let answer = status::handle(&self.status, query.clone())
            .await
            .unwrap_or_else(|e| panic!("build-status {query}: {e}"));
        let json = serde_json::to_value(&answer).unwrap();
        eprintln!("build-status {query} -> {json}");
        (answer, json)
    }

    fn key_of(&self, artifact: &str) -> ArtifactKey {
        let key = artifact
            .strip_prefix(&format!("s3://{}/", self.bucket))
            .unwrap();
        ArtifactKey::parse(&self.submit.config.artifact_prefix, key).unwrap()
    }

    async fn record(&self, key: &ArtifactKey) -> records::BuildRecord {
        records::read_record(&self.s3, &self.bucket, key)
            .await
            .unwrap()
            .and_then(|s| s.value)
            .expect("a build record")
    }

    /// Writes the builder's report for `key`, as layer-builder does.
    async fn put_report(&self, key: &ArtifactKey, report: &FailureReport) {
        records::write_json(
            &self.s3,
            &self.bucket,
            &records::report_key(&key.to_string()),
            report,
            None,
        )
        .await
        .unwrap();
    }

    /// An artifact publish-layer has tagged with `arn`.
    async fn put_published(&self, key: &ArtifactKey, arn: &str) {
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(key.to_string())
            .body(ByteStream::from_static(b"PK\x05\x06"))
            .tagging(format!(
                "layer-version-arn={}",
                arn.replace(':', "%3A").replace('/', "%2F")
            ))
            .send()
            .await
            .unwrap();
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

/// A python3.11 arm64 request (this machine has a Python 3.11 for the builder's cross build).
fn request(name: &str, requirements: &str) -> Value {
    json!({
        "layer_name": name,
        "requirements": requirements,
        "runtime": "python3.11",
        "architecture": "arm64",
    })
}

/// A size report of 60.5 MiB: numpy 60 MiB, six 0.5 MiB.
fn sixty_mib() -> SizeReport {
    SizeReport::tally(
        &[
            ("numpy/x.so".to_owned(), 60 * MIB),
            ("six.py".to_owned(), MIB / 2),
        ],
        &[
            Distribution::from_record("numpy-2.1.3.dist-info", "numpy/x.so,,\n"),
            Distribution::from_record("six-1.16.0.dist-info", "six.py,,\n"),
        ],
        layerforge::request::LAMBDA_UNZIPPED_LIMIT,
    )
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

#[tokio::test(flavor = "multi_thread")]
async fn a_builds_size_reaches_build_status_and_the_record_publish_layer_completes() {
    let sdk = helpers::sdk().await;
    let d = deployment(&sdk, "size-ok", true).await;
    let name = helpers::unique("size");
    let submitted = submit::handle(&d.submit, request(&name, "six==1.16.0"))
        .await
        .unwrap();
    let job_id = submitted.job_id.clone().unwrap();
    let key = d.key_of(&submitted.artifact);

    // Before the job ran: no report, no size.
    let (running, json) = d.status(json!({ "job_id": job_id })).await;
    assert_eq!(running.state, State::Running);
    assert!(json.get("size").is_none(), "{json}");

    let described = d.batch.describe_jobs().jobs(&job_id).send().await.unwrap();
    let command = described.jobs()[0].container().unwrap().command().to_vec();
    let built = run_job(&command, &job_id);
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );

    let (answer, json) = d.status(json!({ "job_id": job_id })).await;
    assert_eq!(answer.state, State::Built, "{json}");
    let size = answer.size.clone().expect("a built build has its size");
    assert_eq!(size.distributions[0].name, "six", "{size:?}");
    assert!(
        size.unzipped_bytes > 0 && size.bytecode_bytes > 0,
        "{size:?}"
    );
    assert_eq!(
        size.budget_bytes,
        layerforge::request::LAMBDA_UNZIPPED_LIMIT
    );
    assert_eq!(json["size"], serde_json::to_value(&size).unwrap());

    let event =
        pipeline::event_for(&d.sqs, d.queue_url.as_deref().unwrap(), &key.to_string()).await;
    let published = publish::handle(&d.publish, event).await.unwrap();
    assert!(
        published.records[0].outcome.layer_version_arn().is_some(),
        "{published:?}"
    );

    for query in [
        json!({ "job_id": job_id }),
        json!({ "artifact": submitted.artifact }),
    ] {
        let (answer, _) = d.status(query.clone()).await;
        assert_eq!(answer.state, State::Published, "{query}");
        assert_eq!(answer.size.as_ref(), Some(&size), "{query}");
    }
    let record = d.record(&key).await;
    assert!(
        matches!(record.outcome, Some(RecordOutcome::Published { .. })),
        "{:?}",
        record.outcome
    );
    assert_eq!(record.size, Some(size), "the record keeps the size");
}

#[tokio::test]
async fn the_record_keeps_the_size_only_of_its_own_builds_report() {
    let sdk = helpers::sdk().await;
    let d = deployment(&sdk, "size-record", false).await;
    let arn = "arn:aws:lambda:us-east-1:123456789012:layer:size:1";
    let outcome = Outcome::Published {
        layer_version_arn: arn.to_owned(),
        version: 1,
    };
    for (case, report) in [
        ("its build's success report", Some("own")),
        ("an older job's report", Some("job-0")),
        ("no report", None),
    ] {
        let name = helpers::unique("rec");
        let submitted = submit::handle(&d.submit, request(&name, "six==1.16.0"))
            .await
            .unwrap();
        let job_id = submitted.job_id.unwrap();
        let key = d.key_of(&submitted.artifact);
        if let Some(author) = report {
            let author = if author == "own" { &job_id } else { author };
            let report =
                FailureReport::success(Some(author.to_owned()), &key.to_string(), sixty_mib());
            d.put_report(&key, &report).await;
        }
        d.put_published(&key, arn).await;
        records::complete(&d.s3, &d.submit.config, &key.to_string(), &outcome).await;
        let record = d.record(&key).await;
        assert!(
            matches!(&record.outcome, Some(RecordOutcome::Published { layer_version_arn, .. }) if layer_version_arn == arn),
            "{case}: {:?}",
            record.outcome
        );
        let want = (report == Some("own")).then(sixty_mib);
        assert_eq!(record.size, want, "{case}");
        // build-status says the same.
        let (answer, _) = d.status(json!({ "artifact": submitted.artifact })).await;
        assert_eq!(answer.state, State::Published, "{case}");
        assert_eq!(answer.size, want, "{case}");
    }
}

#[tokio::test]
async fn a_cached_build_over_the_requests_budget_is_refused_and_force_rebuilds() {
    let sdk = helpers::sdk().await;
    let d = deployment(&sdk, "size-cache", false).await;
    let name = helpers::unique("cache");
    let requirements = "numpy==2.1.3|six==1.16.0";
    let arn = "arn:aws:lambda:us-east-1:123456789012:layer:cache:1";
    let with = |extra: Value| {
        let mut r = request(&name, requirements);
        r.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        r
    };

    // Submitted once (the key), then built and published elsewhere: the artifact and its success report.
    let first = submit::handle(&d.submit, request(&name, requirements))
        .await
        .unwrap();
    let key = d.key_of(&first.artifact);
    let first_job = first.job_id.unwrap();
    d.put_report(
        &key,
        &FailureReport::success(Some(first_job.clone()), &key.to_string(), sixty_mib()),
    )
    .await;
    d.put_published(&key, arn).await;

    let err = submit::handle(&d.submit, with(json!({"max_unzipped_mb": 50})))
        .await
        .unwrap_err();
    assert_eq!(err.error_type(), "InvalidRequest", "{err}");
    let SubmitError::InvalidRequest(invalid) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(invalid.field, "max_unzipped_mb");
    for part in [
        first.artifact.as_str(),
        "60.5 MiB unzipped",
        "over its budget of 50.0 MiB",
        "numpy 2.1.3: 60.0 MiB",
        "nothing was submitted",
    ] {
        assert!(err.to_string().contains(part), "{part}: {err}");
    }
    assert_eq!(d.jobs_in_queue().await, [first_job], "nothing submitted");

    // A budget the build fits, or the default one: cached as before.
    for extra in [json!({"max_unzipped_mb": 61}), json!({})] {
        let cached = submit::handle(&d.submit, with(extra.clone()))
            .await
            .unwrap();
        assert_eq!(cached.status, Status::Cached, "{extra}");
        assert_eq!(cached.layer_version_arn.as_deref(), Some(arn));
    }

    // force builds again (and the builder will judge the budget).
    let forced = submit::handle(
        &d.submit,
        with(json!({"max_unzipped_mb": 50, "force": true})),
    )
    .await
    .unwrap();
    assert_eq!(forced.status, Status::Submitted);
    assert_eq!(d.jobs_in_queue().await.len(), 2);
}

#[tokio::test]
async fn without_a_report_a_cached_build_is_not_blocked_and_a_building_one_is_judged_by_its_own() {
    let sdk = helpers::sdk().await;
    let d = deployment(&sdk, "size-building", false).await;
    let arn = "arn:aws:lambda:us-east-1:123456789012:layer:old:1";

    // An artifact older than size reports: cached whatever the budget.
    let old = helpers::unique("old");
    let first = submit::handle(&d.submit, request(&old, "six==1.16.0"))
        .await
        .unwrap();
    d.put_published(&d.key_of(&first.artifact), arn).await;
    let mut small = request(&old, "six==1.16.0");
    small["max_unzipped_mb"] = json!(1);
    let cached = submit::handle(&d.submit, small).await.unwrap();
    assert_eq!(cached.status, Status::Cached);

    // A build in flight (moto's job reads running until its command has run) whose report is there already.
    let name = helpers::unique("inflight");
    let submitted = submit::handle(&d.submit, request(&name, "numpy>=2"))
        .await
        .unwrap();
    let job_id = submitted.job_id.unwrap();
    let key = d.key_of(&submitted.artifact);
    let mut small = request(&name, "numpy>=2");
    small["max_unzipped_mb"] = json!(50);
    // An older job's report is not this build's size: building, as before.
    d.put_report(
        &key,
        &FailureReport::success(Some("job-0".into()), &key.to_string(), sixty_mib()),
    )
    .await;
    let building = submit::handle(&d.submit, small.clone()).await.unwrap();
    assert_eq!(building.status, Status::Building);
    assert_eq!(building.job_id.as_deref(), Some(job_id.as_str()));
    // Its own: refused.
    d.put_report(
        &key,
        &FailureReport::success(Some(job_id.clone()), &key.to_string(), sixty_mib()),
    )
    .await;
    let err = submit::handle(&d.submit, small).await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("max_unzipped_mb: the existing build"),
        "{err}"
    );
    let in_queue = d.jobs_in_queue().await;
    assert_eq!(in_queue.len(), 2, "{in_queue:?}");
}
