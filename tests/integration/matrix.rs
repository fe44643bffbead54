//! One request, many targets (issue 23, DESIGN section 15) in the local cloud: a compiled set as a 3 x 2 matrix
//! through the CLI publishes six versions, each claiming only its own runtime and architecture (fast path), and
//! the same on the Batch path; a pure set, by direct invoke, publishes one universal version for every pair,
//! whose files import under each Python of this machine, and the Batch path gives it the same bytes; a bad pair
//! submits nothing; a pair that fails fails the whole, by name, and the others still publish.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Read,
    path::PathBuf,
};

use aws_smithy_types::Blob;
use layerforge::{
    fast::{FastBuild, JobSpec, PAYLOAD_FORMAT},
    local::{self, State},
};
use serde_json::{Value, json};

use crate::cli::{Cloud, job_names, layerforge, run, text};
use crate::fastpath::json_of;

/// The Batch jobs submitted so far (the CLI tests' helper runs its own runtime: here on a blocking thread).
async fn jobs(state: &State) -> Vec<String> {
    let state = state.clone();
    tokio::task::spawn_blocking(move || job_names(&state))
        .await
        .unwrap()
}

/// mypyc-compiled wheels for cp311, cp312 and cp313 on manylinux aarch64 and x86_64.
const COMPILED: &str = "charset-normalizer==3.4.0";
/// Pure Python: py3-none-any (or py2.py3) wheels, no markers.
const PURE: &str = "six==1.16.0|idna==3.10";

/// (CompatibleRuntimes, CompatibleArchitectures, CodeSha256) of a layer version in moto.
pub(crate) async fn version_of(state: &State, arn: &str) -> (Vec<String>, Vec<String>, String) {
    let parts: Vec<&str> = arn.split(':').collect();
    let lambda = aws_sdk_lambda::Client::new(&local::sdk_for(&state.moto_endpoint).await);
    let got = lambda
        .get_layer_version()
        .layer_name(parts[6])
        .version_number(parts[7].parse().unwrap())
        .send()
        .await
        .unwrap();
    (
        got.compatible_runtimes()
            .iter()
            .map(|r| r.as_str().to_owned())
            .collect(),
        got.compatible_architectures()
            .iter()
            .map(|a| a.as_str().to_owned())
            .collect(),
        got.content()
            .and_then(|c| c.code_sha256())
            .unwrap_or_default()
            .to_owned(),
    )
}

/// Lambda's on-failure destination record of a fast build of `request` (what submit-build hands to Batch).
pub(crate) fn destination(request: Value, bucket: &str) -> Value {
    let payload = FastBuild {
        layerforge_fast_build: PAYLOAD_FORMAT,
        request,
        job: JobSpec {
            job_name: "unused".into(),
            job_queue: "unused".into(),
            job_definition: "unused".into(),
            command: vec![],
            resources: vec![],
            tags: BTreeMap::new(),
        },
        environment: BTreeMap::new(),
        bucket: bucket.to_owned(),
        artifact_key: String::new(),
    };
    json!({
        "version": "1.0", "timestamp": "2026-12-03T05:00:00.000Z",
        "requestContext": {"requestId": "r-9", "condition": "RetriesExhausted", "approximateInvokeCount": 2,
                           "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:fast-builder:$LATEST"},
        "requestPayload": serde_json::to_value(&payload).unwrap(),
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "responsePayload": {"errorType": "Runtime.ExitError", "errorMessage": "signal: killed"}
    })
}

/// Invokes submit-build directly: (the function error, if any; the answer or the error document).
async fn invoke_raw(state: &State, event: &Value) -> (Option<String>, Value) {
    let invoke = aws_sdk_lambda::Client::new(&local::sdk_for(&state.lambda_endpoint).await);
    let out = invoke
        .invoke()
        .function_name(local::SUBMIT_FUNCTION)
        .payload(Blob::new(event.to_string()))
        .send()
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(out.payload().unwrap().as_ref()).unwrap();
    (out.function_error().map(str::to_owned), body)
}

/// Invokes submit-build directly (not through the CLI) and returns its answer.
pub(crate) async fn submit(state: &State, request: &Value) -> Value {
    let (error, answer) = invoke_raw(state, request).await;
    assert!(error.is_none(), "{answer}");
    answer
}

async fn versions_of(state: &State, layer: &str) -> usize {
    let lambda = aws_sdk_lambda::Client::new(&local::sdk_for(&state.moto_endpoint).await);
    lambda
        .list_layer_versions()
        .layer_name(layer)
        .send()
        .await
        .map(|o| o.layer_versions().len())
        .unwrap_or(0)
}

/// Every Python 3.10-3.14 interpreter of this machine: on PATH, and pyenv's installed versions (not its shims).
fn pythons() -> Vec<(String, PathBuf)> {
    let mut found: Vec<(String, PathBuf)> = Vec::new();
    let pyenv = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pyenv")));
    for minor in 10..=14 {
        let name = format!("python3.{minor}");
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(root) = &pyenv
            && let Ok(entries) = std::fs::read_dir(root.join("versions"))
        {
            for e in entries.flatten() {
                candidates.push(e.path().join("bin").join(&name));
            }
        }
        candidates.push(PathBuf::from(&name));
        for candidate in candidates {
            let ok = std::process::Command::new(&candidate)
                .args(["-c", "import sys; print(sys.version)"])
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                found.push((name.clone(), candidate));
                break;
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn a_matrix_publishes_a_version_per_pair_for_native_code_and_one_universal_version_for_pure_python()
 {
    let dir = tempfile::tempdir().unwrap();
    let local_dir = dir.path().join("local");
    let up = run(layerforge(&local_dir).args(["local", "up"]));
    let _cloud = Cloud {
        dir: local_dir.clone(),
    };
    assert_eq!(up.status.code(), Some(0), "local up: {}", text(&up.stderr));
    let state = State::load(&local_dir).unwrap();
    let sdk = local::sdk_for(&state.moto_endpoint).await;
    let s3 = aws_sdk_s3::Client::new(&sdk);
    let bucket = state.stack.bucket.clone();
    let matrices = || async {
        s3.list_objects_v2()
            .bucket(&bucket)
            .prefix(".layerforge/matrices/")
            .send()
            .await
            .unwrap()
            .key_count()
            .unwrap_or(0)
    };

    // 1. Bad pairs: nothing is submitted, no matrix recorded.
    let bad = run(layerforge(&local_dir)
        .args(["--local", "build", "bad-matrix", "-r", COMPILED])
        .args(["--runtime", "python3.12", "--runtime", "python2.7"]));
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad.stderr));
    assert!(
        text(&bad.stderr).contains("runtimes[1]"),
        "{}",
        text(&bad.stderr)
    );
    let bad = run(layerforge(&local_dir)
        .args(["--local", "build", "bad-matrix", "-r", COMPILED, "--slim"])
        .args(["--runtime", "python3.11", "--runtime", "python3.12"])
        .args(["--builder", "function"]));
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad.stderr));
    assert!(
        text(&bad.stderr).contains("builder") && text(&bad.stderr).contains("(pair python3.11/"),
        "{}",
        text(&bad.stderr)
    );
    assert_eq!(matrices().await, 0);
    assert!(jobs(&state).await.is_empty(), "{:?}", jobs(&state).await);

    // 2. A compiled set, 3 runtimes x 2 architectures, through the CLI: six versions, each claiming only its pair
    //    (bytecode off, so every pair builds in the fast builder, which has one Python here).
    let runtimes = ["python3.11", "python3.12", "python3.13"];
    let architectures = ["arm64", "x86_64"];
    let mut cmd = layerforge(&local_dir);
    cmd.args([
        "--local",
        "build",
        "native-matrix",
        "-r",
        COMPILED,
        "--no-bytecode",
    ]);
    for r in runtimes {
        cmd.args(["--runtime", r]);
    }
    for a in architectures {
        cmd.args(["--architecture", a]);
    }
    let out = run(cmd.args(["--wait", "--json", "--poll-interval", "0.5"]));
    let progress = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{progress}");
    let native = json_of(&out);
    assert_eq!(native["state"], "published", "{native}");
    assert_eq!(native["universal"], false, "{native}");
    assert!(
        native["universal_reason"]
            .as_str()
            .unwrap()
            .contains("ELF file (native code)")
            || native["universal_reason"]
                .as_str()
                .unwrap()
                .contains("is installed for"),
        "{native}"
    );
    let pairs = native["pairs"].as_array().unwrap();
    assert_eq!(pairs.len(), 6, "{native}");
    let mut arns = BTreeSet::new();
    for p in pairs {
        assert_eq!(p["state"], "published", "{p}");
        assert_eq!(p["builder"], "function", "{p}");
        let arn = p["layer_version_arn"].as_str().unwrap();
        arns.insert(arn.to_owned());
        let (rts, archs, _) = version_of(&state, arn).await;
        assert_eq!(rts, vec![p["runtime"].as_str().unwrap()], "{p}");
        assert_eq!(archs, vec![p["architecture"].as_str().unwrap()], "{p}");
        // One progress line per pair.
        assert!(
            progress.contains(&format!(
                "{}/{}: published",
                p["runtime"].as_str().unwrap(),
                p["architecture"].as_str().unwrap()
            )),
            "{progress}"
        );
    }
    assert_eq!(arns.len(), 6, "six versions: {arns:?}");
    assert_eq!(versions_of(&state, "native-matrix").await, 6);
    assert!(
        jobs(&state).await.is_empty(),
        "the fast path submits no job"
    );
    // build-status by matrix id, through `layerforge status`.
    let id = native["matrix_id"].as_str().unwrap();
    let status = run(layerforge(&local_dir).args(["--local", "status", id]));
    assert_eq!(status.status.code(), Some(0), "{}", text(&status.stderr));
    let lines = text(&status.stdout);
    assert!(lines.starts_with("state: published"), "{lines}");
    assert_eq!(lines.matches(": published arn:").count(), 6, "{lines}");

    // 3. The same on the Batch path (2 pairs): one job per pair, each version its own pair.
    let out = run(layerforge(&local_dir)
        .args([
            "--local",
            "build",
            "native-batch",
            "-r",
            COMPILED,
            "--no-bytecode",
        ])
        .args(["--runtime", "python3.11", "--runtime", "python3.12"])
        .args(["--architecture", "x86_64", "--builder", "batch"])
        .args(["--wait", "--json", "--poll-interval", "0.5"]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let batch = json_of(&out);
    for p in batch["pairs"].as_array().unwrap() {
        assert_eq!(p["builder"], "batch", "{p}");
        let (rts, archs, _) = version_of(&state, p["layer_version_arn"].as_str().unwrap()).await;
        assert_eq!(
            (rts, archs),
            (
                vec![p["runtime"].as_str().unwrap().to_owned()],
                vec!["x86_64".to_owned()]
            )
        );
    }
    assert_eq!(jobs(&state).await.len(), 2, "{:?}", jobs(&state).await);

    // 4. A pure set by direct invoke of submit-build: one universal build for all six pairs.
    let request = json!({"layer_name": "pure-matrix", "requirements": PURE,
        "runtimes": runtimes, "architectures": architectures});
    let answer = submit(&state, &request).await;
    assert_eq!(answer["universal"], true, "{answer}");
    assert!(
        answer["universal_reason"]
            .as_str()
            .unwrap()
            .starts_with("the same "),
        "{answer}"
    );
    let submitted = answer["pairs"].as_array().unwrap();
    assert_eq!(submitted.len(), 6);
    let artifacts: BTreeSet<&str> = submitted
        .iter()
        .map(|p| p["artifact"].as_str().unwrap())
        .collect();
    assert_eq!(
        artifacts.len(),
        1,
        "one artifact serves every pair: {answer}"
    );
    let id = answer["matrix_id"].as_str().unwrap();
    let status = run(layerforge(&local_dir).args(["--local", "status", id, "--json"]));
    let mut status = json_of(&status);
    for _ in 0..120 {
        if ["published", "failed", "rejected"].contains(&status["state"].as_str().unwrap_or("")) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        status = json_of(&run(
            layerforge(&local_dir).args(["--local", "status", id, "--json"])
        ));
    }
    assert_eq!(status["state"], "published", "{status}");
    let arn = status["pairs"][0]["layer_version_arn"]
        .as_str()
        .unwrap()
        .to_owned();
    for p in status["pairs"].as_array().unwrap() {
        assert_eq!(p["layer_version_arn"], arn.as_str(), "{p}");
    }
    assert_eq!(
        versions_of(&state, "pure-matrix").await,
        1,
        "published once"
    );
    let (rts, archs, pure_sha) = version_of(&state, &arn).await;
    assert_eq!(rts, runtimes, "every runtime");
    assert_eq!(archs, architectures, "both architectures");

    // The files are in python/, where every Python runtime imports them; they import under each Python here.
    let artifact = artifacts.iter().next().unwrap().to_string();
    let key = artifact.trim_start_matches(&format!("s3://{bucket}/"));
    let body = s3
        .get_object()
        .bucket(&bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    let bytes = body.body.collect().await.unwrap().into_bytes();
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes.to_vec())).unwrap();
    let names: Vec<String> = (0..zip.len())
        .map(|i| zip.by_index(i).unwrap().name().to_owned())
        .collect();
    assert!(names.contains(&"python/six.py".to_owned()), "{names:?}");
    assert!(
        names.iter().all(|n| !n.starts_with("python/lib/")),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n.ends_with(".cpython-311.pyc")),
        "the build runtime's bytecode: {names:?}"
    );
    let opt = tempfile::tempdir().unwrap();
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).unwrap();
        let path = opt.path().join(entry.name());
        if entry.is_dir() {
            continue;
        }
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        std::fs::write(&path, data).unwrap();
    }
    let site = opt.path().join("python");
    // Each requested runtime whose Python this machine has (python3.11 always; pyenv's others when installed).
    let pythons: Vec<_> = pythons()
        .into_iter()
        .filter(|(n, _)| runtimes.contains(&n.as_str()))
        .collect();
    assert!(
        pythons.iter().any(|(n, _)| n == "python3.11"),
        "python3.11 is this machine's Python: {pythons:?}"
    );
    for (name, python) in &pythons {
        // /opt/python is on sys.path in every Python runtime (Lambda developer guide, "Packaging your layer
        // content"); -I keeps this machine's own site-packages out.
        let out = std::process::Command::new(python)
            .args(["-I", "-B", "-c"])
            .arg(format!(
                "import sys; sys.path.insert(0, {:?}); import six, idna; print(six.__file__); print(idna.__file__)",
                site.display().to_string()
            ))
            .output()
            .unwrap();
        let printed = text(&out.stdout);
        assert!(out.status.success(), "{name}: {}", text(&out.stderr));
        assert!(
            printed
                .lines()
                .all(|l| l.starts_with(&site.display().to_string())),
            "{name} imported from the layer: {printed}"
        );
        eprintln!(
            "universal layer imports under {name} ({})",
            python.display()
        );
    }

    // The same request again: the matrix's first decision stands, every pair is cached, nothing is published.
    let again = submit(&state, &request).await;
    assert_eq!(again["matrix_id"], id, "{again}");
    assert_eq!(
        again["universal_reason"], answer["universal_reason"],
        "{again}"
    );
    assert_eq!(again["status"], "cached", "{again}");
    for p in again["pairs"].as_array().unwrap() {
        assert_eq!(p["status"], "cached", "{p}");
        assert_eq!(p["layer_version_arn"], arn.as_str(), "{p}");
    }
    assert_eq!(versions_of(&state, "pure-matrix").await, 1);

    // A universal build comes back to submit-build only as its own fast build's destination record; one whose
    // targets no probe decided (a forged record: anyio needs exceptiongroup on python3.10 only) is refused, and
    // the genuine one (this matrix's) goes through: its artifact exists, so nothing is submitted.
    let targets = "python3.11,python3.12,python3.13/arm64,x86_64";
    let forged = destination(
        json!({"layer_name": "forged", "requirements": "anyio==4.6.2\n", "runtime": "python3.11",
            "architecture": "arm64", "universal_targets": "python3.10,python3.11/arm64,x86_64"}),
        &bucket,
    );
    let (error, body) = invoke_raw(&state, &forged).await;
    assert_eq!(error.as_deref(), Some("Unhandled"), "{body}");
    assert_eq!(body["errorType"], "InvalidRequest", "{body}");
    assert!(
        body["errorMessage"]
            .as_str()
            .unwrap()
            .contains("universal_targets"),
        "{body}"
    );
    let genuine = destination(
        json!({"layer_name": "pure-matrix", "requirements": PURE.replace('|', "\n"), "runtime": "python3.11",
            "architecture": "arm64", "universal_targets": targets}),
        &bucket,
    );
    let answer = submit(&state, &genuine).await;
    assert_eq!(answer["status"], "building", "{answer}");
    assert_eq!(answer["artifact"], artifact.as_str(), "{answer}");
    assert!(
        jobs(&state).await.len() == 2,
        "nothing submitted for either"
    );

    // 5. The universal build on the Batch path gives the same bytes.
    let out = run(layerforge(&local_dir)
        .args([
            "--local",
            "build",
            "pure-batch",
            "-r",
            PURE,
            "--builder",
            "batch",
        ])
        .args([
            "--runtime",
            "python3.11",
            "--runtime",
            "python3.12",
            "--runtime",
            "python3.13",
        ])
        .args(["--architecture", "arm64", "--architecture", "x86_64"])
        .args(["--wait", "--json", "--poll-interval", "0.5"]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let pure_batch = json_of(&out);
    assert_eq!(pure_batch["universal"], true, "{pure_batch}");
    assert_eq!(pure_batch["pairs"][0]["builder"], "batch", "{pure_batch}");
    let (_, _, batch_sha) = version_of(
        &state,
        pure_batch["pairs"][0]["layer_version_arn"]
            .as_str()
            .unwrap(),
    )
    .await;
    assert_eq!(
        pure_sha, batch_sha,
        "the same universal zip from both paths"
    );
    assert_eq!(versions_of(&state, "pure-batch").await, 1);
    assert_eq!(jobs(&state).await.len(), 3, "{:?}", jobs(&state).await);

    // 5b. The same pure set per pair without bytecode: both architectures' zips hold the same bytes, and each
    //     still gets its own version, listing its own architecture (the exactly-once identity is the bytes and
    //     the targets, not the bytes alone).
    let out = run(layerforge(&local_dir)
        .args([
            "--local",
            "build",
            "pure-per-pair",
            "-r",
            PURE,
            "--no-bytecode",
            "--no-universal",
        ])
        .args([
            "--runtime",
            "python3.11",
            "--architecture",
            "arm64",
            "--architecture",
            "x86_64",
        ])
        .args(["--wait", "--json", "--poll-interval", "0.5"]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let per_pair = json_of(&out);
    assert_eq!(per_pair["universal"], false, "{per_pair}");
    let mut shas = BTreeSet::new();
    for p in per_pair["pairs"].as_array().unwrap() {
        let (rts, archs, sha) = version_of(&state, p["layer_version_arn"].as_str().unwrap()).await;
        assert_eq!(rts, vec!["python3.11"], "{p}");
        assert_eq!(archs, vec![p["architecture"].as_str().unwrap()], "{p}");
        shas.insert(sha);
    }
    assert_eq!(shas.len(), 1, "the same bytes for both: {shas:?}");
    assert_eq!(versions_of(&state, "pure-per-pair").await, 2);

    // 6. One pair fails: the whole is failed, naming the pair; the other pair's version is published and printed;
    //    exit 1. Django 6.0 (pure Python) requires Python >= 3.12, so python3.11 has no installable version; the
    //    probe's install fails for that pair too, so the matrix is built per pair.
    let out = run(layerforge(&local_dir)
        .args([
            "--local",
            "build",
            "half-matrix",
            "-r",
            "django==6.0",
            "--no-bytecode",
        ])
        .args(["--runtime", "python3.11", "--runtime", "python3.12"])
        .args([
            "--architecture",
            "x86_64",
            "--wait",
            "--poll-interval",
            "0.5",
        ]));
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr
            .contains("one version per pair (the wheels-only install for python3.11/x86_64 failed"),
        "{stderr}"
    );
    let printed: Vec<&str> = stdout.lines().collect();
    assert_eq!(printed.len(), 1, "{stdout}");
    assert!(
        printed[0].starts_with("python3.12/x86_64\tarn:"),
        "{stdout}"
    );
    assert!(stderr.contains("python3.11/x86_64: failed: "), "{stderr}");
    let id = stderr
        .split_whitespace()
        .find(|w| w.starts_with("m-"))
        .unwrap()
        .trim_end_matches(':');
    let status = json_of(&run(
        layerforge(&local_dir).args(["--local", "status", id, "--json"])
    ));
    assert_eq!(status["state"], "failed", "{status}");
    let failed = status["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{status}");
    assert!(
        failed[0]
            .as_str()
            .unwrap()
            .starts_with("python3.11/x86_64: "),
        "{status}"
    );
    assert_eq!(versions_of(&state, "half-matrix").await, 1);
}
