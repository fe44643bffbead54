//! The examples in `events/` as a new user tries them, against the local cloud (`layerforge local up`): every
//! `events/build-request*.json` builds to `published` as shipped, with the runtime and architecture it asks for,
//! and every `events/invalid/*.json` is refused. Invoked with boto3 (the tools' venv), as a user of the AWS
//! CLI or boto3 would: the local cloud's Lambda endpoint answers a function error as Lambda does (200 with
//! `X-Amz-Function-Error`, one HTTP attempt), not as cargo-lambda does (500, which clients retry).

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use aws_smithy_types::Blob;
use layerforge::local::{self, State};
use serde_json::{Value, json};

use crate::cli::{Cloud, front_function_errors, job_names, layerforge, listening, run, text};

/// Invokes each `{"function", "payload"}` of the JSON array on stdin with boto3 at the endpoint `argv[1]`, with
/// botocore's standard retries (a 500 would be tried up to 5 times), and prints one JSON line per invocation.
const BOTO3_INVOKE: &str = r#"
import json, sys
import boto3
from botocore.config import Config

client = boto3.client(
    "lambda",
    endpoint_url=sys.argv[1],
    region_name="us-east-1",
    aws_access_key_id="testing",
    aws_secret_access_key="testing",
    config=Config(retries={"mode": "standard", "max_attempts": 5}),
)
for call in json.load(sys.stdin):
    r = client.invoke(FunctionName=call["function"], Payload=json.dumps(call["payload"]).encode())
    print(json.dumps({
        "status": r["StatusCode"],
        "function_error": r.get("FunctionError"),
        "payload": json.loads(r["Payload"].read()),
        "retry_attempts": r["ResponseMetadata"]["RetryAttempts"],
        "http_status": r["ResponseMetadata"]["HTTPStatusCode"],
    }))
"#;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The files `dir/PREFIX*.json`, sorted.
fn events(dir: &Path, prefix: &str) -> Vec<(String, Value)> {
    let mut found: Vec<(String, Value)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "json")
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(prefix))
        })
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let event = serde_json::from_str(&std::fs::read_to_string(&p).unwrap())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, event)
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

/// boto3's answers to `calls` at `endpoint`.
fn boto3_invoke(endpoint: &str, calls: &[(&str, &Value)]) -> Vec<Value> {
    let python = root().join(".tools/venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run scripts/bootstrap.sh (it installs boto3)",
        python.display()
    );
    let input: Vec<Value> = calls
        .iter()
        .map(|(function, payload)| json!({"function": function, "payload": payload}))
        .collect();
    let mut child = Command::new(python)
        .args(["-I", "-c", BOTO3_INVOKE, endpoint])
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_PROFILE")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the venv's python runs");
    serde_json::to_writer(child.stdin.take().unwrap(), &input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "boto3: {}", text(&out.stderr));
    let answers: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(answers.len(), calls.len(), "{}", text(&out.stderr));
    answers
}

/// `arn:aws:lambda:REGION:ACCOUNT:layer:NAME:VERSION` -> (NAME, VERSION).
fn layer_of(arn: &str) -> (String, i64) {
    let parts: Vec<&str> = arn.split(':').collect();
    assert!(
        parts.len() == 8 && parts[5] == "layer",
        "not a layer version ARN: {arn}"
    );
    (parts[6].to_owned(), parts[7].parse().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_example_builds_as_shipped_and_invoke_answers_as_lambda() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let local_dir = dir.path().join("local");
    let up = run(layerforge(&local_dir).args(["local", "up"]));
    let _cloud = Cloud {
        dir: local_dir.clone(),
    };
    assert_eq!(up.status.code(), Some(0), "local up: {}", text(&up.stderr));
    let state = State::load(&local_dir).unwrap();
    assert_ne!(state.lambda_endpoint, state.runtime_api_endpoint);
    let serve = state.processes.iter().find(|p| p.name == "serve").unwrap();
    let front_port = serve.port.expect("serve listens: the Lambda front");
    assert!(listening(front_port));
    assert_eq!(
        state.lambda_endpoint,
        format!("http://127.0.0.1:{front_port}")
    );

    // Bytecode needs an interpreter of the example's runtime (the Lambda build image of each runtime has one;
    // this machine may lack it): such an example goes with "bytecode": false, and the log says which.
    let examples: Vec<(String, Value)> = events(&root().join("events"), "build-request")
        .into_iter()
        .map(|(name, mut event)| {
            let runtime = event["runtime"].as_str().unwrap_or("python3.12").to_owned();
            if !crate::builder::has_interpreter(&runtime) {
                eprintln!("{name}: no {runtime} here to compile bytecode with: sent with \"bytecode\": false");
                event["bytecode"] = json!(false);
            }
            (name, event)
        })
        .collect();
    let invalid = events(&root().join("events/invalid"), "");
    assert!(
        examples.len() >= 7 && invalid.len() >= 5,
        "{examples:?} {invalid:?}"
    );

    // The S3 example reads its requirements from the local cloud's bucket: upload the shipped file there.
    let moto = local::sdk_for(&state.moto_endpoint).await;
    let s3 = aws_sdk_s3::Client::new(&moto);
    for (name, event) in &examples {
        if let Some(uri) = event["requirements_s3_uri"].as_str() {
            let (bucket, key) = uri
                .strip_prefix("s3://")
                .and_then(|rest| rest.split_once('/'))
                .unwrap();
            assert_eq!(
                bucket, state.stack.bucket,
                "{name} names the local cloud's bucket"
            );
            let file = root().join("events/requirements").join(
                Path::new(key)
                    .file_name()
                    .unwrap_or_else(|| panic!("{name}: {key}")),
            );
            let body = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            s3.put_object()
                .bucket(bucket)
                .key(key)
                .body(body.into())
                .send()
                .await
                .unwrap();
        }
    }

    // 1. boto3 with the invalid requests: 200, FunctionError, errorType InvalidRequest, one HTTP attempt each
    //    (botocore counts no retry; the front saw each once).
    let calls: Vec<(&str, &Value)> = invalid
        .iter()
        .map(|(_, e)| (local::SUBMIT_FUNCTION, e))
        .collect();
    let answers = boto3_invoke(&state.lambda_endpoint, &calls);
    for ((name, _), answer) in invalid.iter().zip(&answers) {
        assert_eq!(answer["status"], 200, "{name}: {answer}");
        assert_eq!(answer["http_status"], 200, "{name}: {answer}");
        assert_eq!(answer["function_error"], "Unhandled", "{name}: {answer}");
        assert_eq!(
            answer["payload"]["errorType"], "InvalidRequest",
            "{name}: {answer}"
        );
        assert!(
            answer["payload"]["errorMessage"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{name}: {answer}"
        );
        assert_eq!(answer["retry_attempts"], 0, "{name}: {answer}");
    }
    assert_eq!(
        front_function_errors(&local_dir, local::SUBMIT_FUNCTION),
        invalid.len(),
        "the front answered each invalid request once"
    );

    // 2. boto3 submits every example: 200, no FunctionError, submitted.
    let calls: Vec<(&str, &Value)> = examples
        .iter()
        .map(|(_, e)| (local::SUBMIT_FUNCTION, e))
        .collect();
    let answers = boto3_invoke(&state.lambda_endpoint, &calls);
    let mut jobs = Vec::new();
    for ((name, event), answer) in examples.iter().zip(&answers) {
        assert_eq!(answer["status"], 200, "{name}: {answer}");
        assert!(answer["function_error"].is_null(), "{name}: {answer}");
        assert_eq!(answer["retry_attempts"], 0, "{name}: {answer}");
        assert_eq!(answer["payload"]["status"], "submitted", "{name}: {answer}");
        // A Batch job, or the fast builder (no job; followed by its artifact).
        let query = match answer["payload"]["job_id"].as_str() {
            Some(job_id) => json!({ "job_id": job_id }),
            None => {
                assert_eq!(answer["payload"]["builder"], "function", "{name}: {answer}");
                json!({ "artifact": answer["payload"]["artifact"] })
            }
        };
        jobs.push((name.clone(), event.clone(), query));
    }
    let submitted = Instant::now();

    // 3. Each build to `published`, followed with build-status through the front (the SDK for Rust).
    let invoke = aws_sdk_lambda::Client::new(&local::sdk_for(&state.lambda_endpoint).await);
    let lambda = aws_sdk_lambda::Client::new(&moto);
    let deadline = submitted + Duration::from_secs(20 * 60);
    let mut timings = Vec::new();
    for (name, event, query) in &jobs {
        let answer = loop {
            let out = invoke
                .invoke()
                .function_name(local::STATUS_FUNCTION)
                .payload(Blob::new(query.to_string()))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{name}: build-status: {e:?}"));
            let answer: Value = serde_json::from_slice(out.payload().unwrap().as_ref()).unwrap();
            assert!(out.function_error().is_none(), "{name}: {answer}");
            assert_eq!(out.status_code(), 200, "{name}: {answer}");
            match answer["state"].as_str() {
                Some("published" | "failed" | "rejected") => break answer,
                _ if Instant::now() > deadline => panic!("{name}: not published in time: {answer}"),
                _ => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        };
        let log = match answer["job_id"].as_str() {
            Some(job_id) => {
                std::fs::read_to_string(local_dir.join("jobs").join(format!("{job_id}.log")))
                    .unwrap_or_default()
            }
            None => {
                std::fs::read_to_string(local_dir.join(format!("{}.log", local::FAST_FUNCTION)))
                    .unwrap_or_default()
            }
        };
        assert_eq!(
            answer["state"], "published",
            "{name}: {answer}\njob log:\n{log}"
        );
        timings.push(format!(
            "{name}: {:.0} s",
            submitted.elapsed().as_secs_f64()
        ));

        // The layer version in moto has the example's name, runtime and architecture.
        let arn = answer["layer_version_arn"].as_str().unwrap();
        let (layer, version) = layer_of(arn);
        assert_eq!(
            layer,
            event["layer_name"].as_str().unwrap(),
            "{name}: {arn}"
        );
        let got = lambda
            .get_layer_version()
            .layer_name(&layer)
            .version_number(version)
            .send()
            .await
            .unwrap();
        let runtimes: Vec<&str> = got
            .compatible_runtimes()
            .iter()
            .map(|r| r.as_str())
            .collect();
        let architectures: Vec<&str> = got
            .compatible_architectures()
            .iter()
            .map(|a| a.as_str())
            .collect();
        assert_eq!(
            runtimes,
            [event["runtime"].as_str().unwrap()],
            "{name}: {arn}"
        );
        assert_eq!(
            architectures,
            [event["architecture"].as_str().unwrap()],
            "{name}: {arn}"
        );
    }
    eprintln!(
        "examples published ({} of them, {:.0} s after local up; times since submission: {})",
        jobs.len(),
        started.elapsed().as_secs_f64(),
        timings.join(", ")
    );

    // The invalid requests submitted nothing: one Batch job per example the fast builder didn't build, one version
    // per example's layer.
    let state_for_jobs = state.clone();
    let names = tokio::task::spawn_blocking(move || job_names(&state_for_jobs))
        .await
        .unwrap();
    let batch_built = jobs
        .iter()
        .filter(|(_, _, q)| q.get("job_id").is_some())
        .count();
    assert_eq!(names.len(), batch_built, "{names:?}");
    for (name, event) in &examples {
        let versions = lambda
            .list_layer_versions()
            .layer_name(event["layer_name"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(versions.layer_versions().len(), 1, "{name}: {versions:?}");
    }

    let down = run(layerforge(&local_dir).args(["local", "down"]));
    assert_eq!(down.status.code(), Some(0), "{}", text(&down.stderr));
    assert!(
        !listening(front_port),
        "the front stopped with `local down`"
    );
}
