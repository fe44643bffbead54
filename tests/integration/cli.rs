//! The `layerforge` binary against the local cloud it starts (`local up`: its own moto server, cargo-lambda's
//! Runtime API, the Fargate stand-in and the S3-event forwarder), and its usage errors.

use std::{
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use layerforge::local::{self, State};
use serde_json::Value;

pub(crate) fn layerforge(local_dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_layerforge"));
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("LAYERFORGE_LOCAL_DIR", local_dir)
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("LAYERFORGE_ROOT");
    command
}

pub(crate) fn run(command: &mut Command) -> Output {
    command.output().expect("layerforge runs")
}

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e}): {}\nstderr: {}",
            text(&out.stdout),
            text(&out.stderr)
        )
    })
}

pub(crate) fn listening(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(300)).is_ok()
}

/// Stops the local cloud when the test ends, also on a failed assertion.
pub(crate) struct Cloud {
    pub(crate) dir: PathBuf,
}

impl Drop for Cloud {
    fn drop(&mut self) {
        if State::path(&self.dir).exists() {
            let _ = run(layerforge(&self.dir).args(["local", "down"]));
        }
    }
}

#[test]
fn usage_errors_exit_2_and_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&[], "Usage"),
        (&["build", "demo"], "--requirements"),
        (
            &[
                "build",
                "demo",
                "-r",
                "six",
                "--requirements-s3-uri",
                "s3://b/k",
            ],
            "cannot be used with",
        ),
        (
            &["build", "demo", "-r", "six", "--installer", "conda"],
            "installer",
        ),
        (&["status"], "JOB_ID"),
        (
            &["fetch", "arn:aws:lambda:us-east-1:123456789012:function:f"],
            "LAYER_VERSION_ARN",
        ),
        (
            &[
                "--local",
                "--submit-function",
                "f",
                "build",
                "demo",
                "-r",
                "six",
            ],
            "cannot be used with",
        ),
        (&["local", "sideways"], "sideways"),
    ];
    for (args, needle) in cases {
        let out = run(layerforge(dir.path()).args(*args));
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains(needle),
            "{args:?}: {needle:?} not in {}",
            text(&out.stderr)
        );
        assert!(out.stdout.is_empty(), "{args:?}: {}", text(&out.stdout));
    }
    let version = run(layerforge(dir.path()).arg("--version"));
    assert_eq!(version.status.code(), Some(0));
    assert_eq!(
        text(&version.stdout).trim(),
        format!("layerforge {}", env!("CARGO_PKG_VERSION"))
    );
    // --local without a local cloud: a configuration error (3) that says what to do.
    let out = run(layerforge(dir.path()).args(["--local", "status", "job-1"]));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("layerforge local up"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_local_cloud_builds_follows_fetches_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("local");
    // Root with a checkout under a root-only home (issue 19): the uv the local cloud finds is in a 0700 folder,
    // where the build user can't run it; the local cloud gives its jobs a copy that user can run.
    let hidden = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        hidden.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let uv = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join("uv"))
        .find(|p| p.is_file())
        .expect("uv on PATH (scripts/bootstrap.sh installs it)");
    let hidden_uv = hidden.path().join("uv");
    std::fs::copy(&uv, &hidden_uv).unwrap();
    let up = run(layerforge(&local)
        .env("LAYERFORGE_UV", &hidden_uv)
        .args(["local", "up"]));
    let _cloud = Cloud { dir: local.clone() };
    assert_eq!(up.status.code(), Some(0), "local up: {}", text(&up.stderr));
    let state = State::load(&local).expect("local up wrote state.json");
    let ports: Vec<u16> = state.processes.iter().filter_map(|p| p.port).collect();
    assert_eq!(
        ports.len(),
        3,
        "moto, cargo-lambda and serve (the Lambda front) listen: {:?}",
        state.processes
    );
    assert!(ports.iter().all(|p| listening(*p)));

    // A requirements file with comments and inline comments, built for this host (x86_64, python3.11).
    let requirements = dir.path().join("requirements.txt");
    std::fs::write(
        &requirements,
        "# a small pure-Python layer\n\nsix==1.16.0   # inline comment\nidna==3.10 # another\n",
    )
    .unwrap();
    let built = run(layerforge(&local).args([
        "--local",
        "build",
        "cli-demo",
        "--requirements-file",
        requirements.to_str().unwrap(),
        "--runtime",
        "python3.11",
        "--architecture",
        "x86_64",
        // The Batch path (the Fargate stand-in); tests/integration/fastpath.rs follows the fast builder.
        "--builder",
        "batch",
        "--wait",
        "--json",
    ]));
    assert_eq!(
        built.status.code(),
        Some(0),
        "build --wait: {}",
        text(&built.stderr)
    );
    let result = json_of(&built);
    assert_eq!(result["state"], "published", "{result}");
    assert_eq!(result["submit"]["status"], "submitted", "{result}");
    let arn = result["layer_version_arn"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(arn.contains(":layer:cli-demo:"), "{result}");
    let job_id = result["submit"]["job_id"].as_str().unwrap().to_owned();
    let serve_log = std::fs::read_to_string(local.join("serve.log")).unwrap_or_default();
    assert!(
        serve_log.contains("jobs use a copy it can run"),
        "the hidden uv was staged for the build user: {serve_log}"
    );

    // status of that job.
    let status = run(layerforge(&local).args(["--local", "status", &job_id, "--json"]));
    assert_eq!(status.status.code(), Some(0), "{}", text(&status.stderr));
    let answer = json_of(&status);
    assert_eq!(answer["state"], "published", "{answer}");
    assert_eq!(answer["layer_version_arn"], arn.as_str(), "{answer}");

    // A package that does not exist: the build fails (exit 1) and the reason names it.
    let missing = "layerforge-no-such-package-4d1f";
    let failed = run(layerforge(&local).args([
        "--local",
        "build",
        "cli-missing",
        "-r",
        &format!("{missing}==1.0"),
        "--runtime",
        "python3.11",
        "--architecture",
        "x86_64",
        "--wait",
        "--json",
    ]));
    assert_eq!(failed.status.code(), Some(1), "{}", text(&failed.stderr));
    let result = json_of(&failed);
    assert_eq!(result["state"], "failed", "{result}");
    assert!(
        result.to_string().contains(missing),
        "the failure names the package: {result}"
    );

    // An invalid request: exit 2, the field named, nothing submitted.
    let invalid = run(layerforge(&local).args([
        "--local",
        "build",
        "cli-invalid",
        "-r",
        "six==1.16.0|--index-url https://example.com/simple",
    ]));
    assert_eq!(invalid.status.code(), Some(2), "{}", text(&invalid.stderr));
    assert!(
        text(&invalid.stderr).contains("requirements"),
        "{}",
        text(&invalid.stderr)
    );
    assert!(
        text(&invalid.stderr).contains("InvalidRequest"),
        "{}",
        text(&invalid.stderr)
    );
    // The SDK for Rust made one attempt: the front answered the function error as Lambda does (200 with
    // X-Amz-Function-Error), not with cargo-lambda's 500, which the SDK retries as a fault of the service.
    assert_eq!(
        front_function_errors(&local, local::SUBMIT_FUNCTION),
        1,
        "one Invoke of submit-build answered with a function error"
    );
    let jobs = job_names(&state);
    assert!(
        jobs.iter().any(|j| j.starts_with("layer-cli-demo-")),
        "{jobs:?}"
    );
    assert!(
        !jobs.iter().any(|j| j.starts_with("layer-cli-invalid")),
        "{jobs:?}"
    );

    // fetch --sam-cache: SAM's folder name, the layer's files, the image tag; the packages import.
    let cache = dir.path().join("sam-cache");
    let fetched = run(layerforge(&local)
        .env("LAYERFORGE_SAM_CACHE", &cache)
        .args(["--local", "fetch", &arn, "--sam-cache", "--json"]));
    assert_eq!(fetched.status.code(), Some(0), "{}", text(&fetched.stderr));
    let result = json_of(&fetched);
    let folder = cache.join(layerforge::samcache::layer_dir_name(&arn).unwrap());
    assert_eq!(result["directory"], folder.to_str().unwrap(), "{result}");
    assert!(
        folder
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("cli-demo-")
    );
    let site = folder.join("python/lib/python3.11/site-packages");
    assert!(site.join("six.py").is_file(), "{result}");
    assert!(site.join("idna/__init__.py").is_file(), "{result}");
    assert!(
        result["sam_image"]
            .as_str()
            .unwrap_or_default()
            .starts_with("samcli/lambda-python:3.11-x86_64-"),
        "{result}"
    );
    let import = Command::new("python3.11")
        .args([
            "-I",
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1]); import six, idna; print(six.__file__)",
        ])
        .arg(&site)
        .output()
        .expect("python3.11 runs");
    assert!(
        text(&import.stdout).starts_with(site.to_str().unwrap()),
        "{}",
        text(&import.stderr)
    );

    // local down: every process stopped, nothing listening, the state file gone.
    let down = run(layerforge(&local).args(["local", "down"]));
    assert_eq!(down.status.code(), Some(0), "{}", text(&down.stderr));
    assert!(!State::path(&local).exists());
    for p in &state.processes {
        assert!(
            !Path::new(&format!("/proc/{}", p.pid)).exists() || !alive(p.pid),
            "{} still runs",
            p.name
        );
    }
    for port in ports {
        assert!(!listening(port), "port {port} still listens");
    }
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
        })
        .is_some_and(|zombie| !zombie)
}

/// The names of every job in the local cloud's queues.
pub(crate) fn job_names(state: &State) -> Vec<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let sdk = layerforge::local::sdk_for(&state.moto_endpoint).await;
        let batch = aws_sdk_batch::Client::new(&sdk);
        let mut names = Vec::new();
        for queue in state.stack.batch.queues() {
            for status in [
                "SUBMITTED",
                "PENDING",
                "RUNNABLE",
                "STARTING",
                "RUNNING",
                "SUCCEEDED",
                "FAILED",
            ] {
                let out = batch
                    .list_jobs()
                    .job_queue(queue)
                    .job_status(status.into())
                    .send()
                    .await
                    .unwrap();
                names.extend(
                    out.job_summary_list()
                        .iter()
                        .filter_map(|j| j.job_name().map(str::to_owned)),
                );
            }
        }
        names
    })
}

/// How many Invokes of `function` the local cloud's Lambda front answered as a function error (its log lines in
/// `serve.log`).
pub(crate) fn front_function_errors(local_dir: &Path, function: &str) -> usize {
    let needle =
        format!("front: POST /2015-03-31/functions/{function}/invocations: function error");
    std::fs::read_to_string(local_dir.join("serve.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&needle))
        .count()
}
