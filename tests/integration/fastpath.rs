//! The fast path (issue 22, DESIGN section 12) in the local cloud: the fast builder runs under cargo-lambda's
//! Runtime API, invoked asynchronously through the Lambda front, and publishes a wheel-only set without a Batch
//! job; a requirement with no wheel is handed to Batch by the function itself; forcing either path works; both
//! paths give the same CodeSha256; a fast build that failed on every attempt comes back to submit-build as its
//! on-failure destination record and goes to Batch.

use layerforge::local::{self, State};
use serde_json::{Value, json};

use crate::cli::{Cloud, job_names, layerforge, run, text};

/// A wheel-only set with a compiled wheel (charset-normalizer's mypyc build), every version pinned: the same
/// request resolves to the same files on both paths.
const WHEELS: &str =
    "requests==2.32.3|charset-normalizer==3.4.0|idna==3.10|urllib3==2.2.3|certifi==2024.8.30";
/// A requirement with no wheel at all (docopt 0.6.2 is published as an sdist only).
const SDIST_ONLY: &str = "docopt==0.6.2";

pub(crate) fn json_of(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            text(&out.stdout),
            text(&out.stderr)
        )
    })
}

/// `layerforge --local build NAME -r REQS --runtime python3.11 --architecture x86_64 --wait --json [extra]`.
fn build(
    local: &std::path::Path,
    name: &str,
    requirements: &str,
    extra: &[&str],
) -> (Value, String) {
    let out = run(layerforge(local)
        .args(["--local", "build", name, "-r", requirements])
        .args(["--runtime", "python3.11", "--architecture", "x86_64"])
        .args(["--wait", "--json", "--poll-interval", "0.5"])
        .args(extra));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{name}: {stderr}");
    (json_of(&out), stderr)
}

/// CodeSha256 of a layer version in moto.
async fn code_sha256(state: &State, arn: &str) -> String {
    crate::matrix::version_of(state, arn).await.2
}

#[tokio::test(flavor = "multi_thread")]
async fn wheel_sets_build_in_the_function_sdists_go_to_batch_and_both_give_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let local_dir = dir.path().join("local");
    let up = run(layerforge(&local_dir).args(["local", "up"]));
    let _cloud = Cloud {
        dir: local_dir.clone(),
    };
    assert_eq!(up.status.code(), Some(0), "local up: {}", text(&up.stderr));
    let state = State::load(&local_dir).unwrap();
    assert!(
        state
            .processes
            .iter()
            .any(|p| p.name == local::FAST_FUNCTION),
        "{:?}",
        state.processes
    );

    // 1. A wheel-only set: the fast builder, no job.
    let (fast, progress) = build(&local_dir, "fast-wheels", WHEELS, &[]);
    assert_eq!(fast["state"], "published", "{fast}");
    assert_eq!(fast["builder"], "function", "{fast}");
    assert_eq!(fast["submit"]["builder"], "function", "{fast}");
    assert!(fast["submit"]["job_id"].is_null(), "{fast}");
    assert!(fast["job_id"].is_null(), "{fast}");
    assert!(
        progress.contains("[function]"),
        "progress names the path: {progress}"
    );

    // `layerforge prune` through the CLI against the local cloud: the only version is the newest, kept.
    let pruned = run(layerforge(&local_dir).args([
        "--local",
        "prune",
        "fast-wheels",
        "--keep",
        "1",
        "--dry-run",
        "--json",
    ]));
    assert_eq!(pruned.status.code(), Some(0), "{}", text(&pruned.stderr));
    let report = json_of(&pruned);
    assert_eq!(report["versions"][0]["decision"], "kept", "{report}");
    assert_eq!(
        report["versions"][0]["reason"], "the newest version",
        "{report}"
    );
    assert_eq!(
        report["versions"][0]["layer_version_arn"], fast["layer_version_arn"],
        "{report}"
    );

    // 2. The same request forced to Batch (another layer name: the same fingerprint, another artifact).
    let (batch, _) = build(&local_dir, "batch-wheels", WHEELS, &["--builder", "batch"]);
    assert_eq!(batch["state"], "published", "{batch}");
    assert_eq!(batch["builder"], "batch", "{batch}");
    assert!(batch["job_id"].is_string(), "{batch}");
    assert_eq!(fast["fingerprint"], batch["fingerprint"]);

    // 3. Byte for byte the same layer: Batch's native install (this host is x86_64 with python3.11) and the
    //    function's cross, wheels-only install.
    let fast_sha = code_sha256(&state, fast["layer_version_arn"].as_str().unwrap()).await;
    let batch_sha = code_sha256(&state, batch["layer_version_arn"].as_str().unwrap()).await;
    assert!(!fast_sha.is_empty());
    assert_eq!(fast_sha, batch_sha, "CodeSha256 of the two paths");

    // 4. No wheel: the fast builder hands the same job to Batch, which builds the sdist.
    let (sdist, progress) = build(&local_dir, "fast-sdist", SDIST_ONLY, &[]);
    assert_eq!(sdist["state"], "published", "{sdist}");
    assert_eq!(sdist["submit"]["builder"], "function", "{sdist}");
    assert_eq!(sdist["builder"], "batch", "{sdist}");
    let why = sdist["handed_over"].as_str().unwrap_or_default();
    assert!(
        why.starts_with("no wheel for docopt==0.6.2 on x86_64-manylinux"),
        "{sdist}"
    );
    assert!(
        progress.contains("handed over: no wheel for docopt"),
        "{progress}"
    );

    // 5. Forcing the function on what only Batch can build is refused, naming the field.
    let refused = run(layerforge(&local_dir)
        .args(["--local", "build", "fast-slim", "-r", "six==1.16.0"])
        .args(["--runtime", "python3.11", "--slim", "--builder", "function"]));
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stderr));
    assert!(
        text(&refused.stderr).contains("builder") && text(&refused.stderr).contains("slim"),
        "{}",
        text(&refused.stderr)
    );

    // 6. A fast build that failed on every attempt: Lambda sends its destination record to submit-build, which
    //    submits the same build to Batch.
    let request = json!({"layer_name": "fast-crashed", "requirements": "six==1.16.0\n",
        "runtime": "python3.11", "architecture": "x86_64", "builder": "batch"});
    let record = crate::matrix::destination(request, &state.stack.bucket);
    let answer = crate::matrix::submit(&state, &record).await;
    assert_eq!(answer["status"], "submitted", "{answer}");
    assert!(answer["job_id"].is_string(), "{answer}");
    let status = run(layerforge(&local_dir).args([
        "--local",
        "status",
        answer["artifact"].as_str().unwrap(),
        "--json",
    ]));
    let status = json_of(&status);
    assert_eq!(status["builder"], "batch", "{status}");
    assert!(
        status["handed_over"]
            .as_str()
            .unwrap_or_default()
            .contains("RetriesExhausted, 2 attempt(s)): Runtime.ExitError: signal: killed"),
        "{status}"
    );
    // The same record delivered again submits nothing more (the record names the job).
    let again = crate::matrix::submit(&state, &record).await;
    assert_eq!(again["status"], "building", "{again}");
    assert_eq!(again["job_id"], answer["job_id"], "{again}");

    // Jobs: the forced, the handed-over and the failed-over build; never the fast one.
    let state_for_jobs = state.clone();
    let names = tokio::task::spawn_blocking(move || job_names(&state_for_jobs))
        .await
        .unwrap();
    let count = |prefix: &str| names.iter().filter(|n| n.starts_with(prefix)).count();
    assert_eq!(count("layer-fast-wheels-"), 0, "{names:?}");
    assert_eq!(count("layer-batch-wheels-"), 1, "{names:?}");
    assert_eq!(count("layer-fast-sdist-"), 1, "{names:?}");
    assert_eq!(count("layer-fast-crashed-"), 1, "{names:?}");
}
