//! Upload grants (DESIGN section 16) end to end, with no package index: a stand-in installer (`LAYERFORGE_UV`
//! pointing at a script that writes one module into `--target`) keeps these tests on loopback.
//!
//! - submit-build's job carries its grants in `containerOverrides.environment`, which moto's DescribeJobs gives
//!   back; layer-builder, run with that environment exactly as `layerforge local serve` runs it (no `AWS_*`
//!   variable at all, an empty `HOME`), uploads the zip with the signed metadata, and publish-layer publishes it.
//!   moto doesn't check signatures, so this shows the grant path works and that the builder needed no
//!   credential; the unit tests of `layerforge::grant` show what is signed.
//! - A job that starts after its grants expired, or whose grant names another key, stops before installing.
//! - A grant refused at upload time (S3's 403 `ExpiredToken`, from a loopback stand-in) fails with exit 5 and
//!   says what to do.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::Arc,
};

use layerforge::{
    grant::{ARTIFACT_GRANT_ENV, Grant, REPORT_GRANT_ENV},
    local::serve::builder_env,
    publish::{self, PublishState},
    submit::{self, Status, SubmitState},
};
use serde_json::json;

use crate::helpers;

/// A folder the build user (nobody, when the tests run as root) can enter, with a stand-in `uv` that installs
/// one module and leaves `ran` next to itself.
fn stand_in_uv() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let marker_dir = dir.path().join("marks");
    std::fs::create_dir(&marker_dir).unwrap();
    std::fs::set_permissions(&marker_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let uv = dir.path().join("uv");
    std::fs::write(
        &uv,
        format!(
            "#!/bin/sh\n\
             # Stand-in for `uv pip install … --target DIR -r FILE`: one pure-Python module, no network.\n\
             [ \"$1\" = --version ] && {{ echo 'uv 0.0.0 (stand-in)'; exit 0; }}\n\
             touch '{marks}/ran'\n\
             while [ $# -gt 0 ]; do\n\
               case \"$1\" in --target) shift; target=\"$1\";; esac\n\
               shift\n\
             done\n\
             mkdir -p \"$target/grantdemo\" \"$target/grantdemo-1.0.dist-info\"\n\
             echo 'VALUE = 42' > \"$target/grantdemo/__init__.py\"\n\
             printf 'grantdemo/__init__.py,,\\ngrantdemo-1.0.dist-info/RECORD,,\\n' \
               > \"$target/grantdemo-1.0.dist-info/RECORD\"\n",
            marks = marker_dir.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&uv, std::fs::Permissions::from_mode(0o755)).unwrap();
    (dir, uv)
}

fn installer_ran(uv: &Path) -> bool {
    uv.with_file_name("marks").join("ran").exists()
}

/// layer-builder with `command`, the job environment `job_env` as local serve gives it, `uv` as the installer,
/// and nothing of this process's AWS settings or home.
fn run_job(command: &[String], job_env: &[(String, String)], uv: &Path, home: &Path) -> Output {
    let env = builder_env(
        job_env,
        std::env::vars().map(|(k, _)| k),
        &helpers::endpoint(),
        "job-under-test",
    );
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_layer-builder"));
    for name in &env.remove {
        cmd.env_remove(name);
    }
    let output = cmd
        .args(command)
        .envs(env.set.iter().map(|(k, v)| (k, v)))
        .env("HOME", home)
        .env("LAYERFORGE_UV", uv)
        .env("RUST_LOG", "info")
        .output()
        .expect("layer-builder runs");
    eprintln!(
        "layer-builder -> {}\n--- stdout\n{}--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[tokio::test]
async fn a_job_uploads_through_its_grants_with_no_aws_credential_and_publishes() {
    let sdk = helpers::sdk().await;
    let stack = helpers::batch_stack(&sdk).await;
    let (bucket, queue_url) = helpers::bucket_with_events(&sdk, "grants", Some("layers/")).await;
    let config = Arc::new(helpers::config(&bucket, &stack.build_targets, &[]));
    let s3 = layerforge::aws::s3_client(&sdk);
    let batch = aws_sdk_batch::Client::new(&sdk);
    let submit_state = SubmitState {
        config: config.clone(),
        s3: s3.clone(),
        batch: batch.clone(),
        lambda: None,
        invoke: None,
    };
    let publish_state = PublishState::new(
        config.clone(),
        s3.clone(),
        aws_sdk_lambda::Client::new(&sdk),
    );

    let submitted = submit::handle(
        &submit_state,
        json!({"layer_name": "grant-demo", "requirements": "grantdemo==1.0", "license": "MIT",
               "description": "through a grant", "runtime": "python3.11"}),
    )
    .await
    .unwrap();
    assert_eq!(submitted.status, Status::Submitted);
    let key = submitted
        .artifact
        .strip_prefix(&format!("s3://{bucket}/"))
        .unwrap()
        .to_owned();

    // moto gives the job's environment back with DescribeJobs, as Batch does.
    let described = batch
        .describe_jobs()
        .jobs(submitted.job_id.clone().unwrap())
        .send()
        .await
        .unwrap();
    let (command, job_env) =
        layerforge::local::serve::job_command_and_env(described.jobs()[0].container().unwrap());
    let grant = |var: &str| {
        job_env
            .iter()
            .find(|(k, _)| k == var)
            .map(|(_, v)| Grant::parse(ARTIFACT_GRANT_ENV, v).unwrap())
            .unwrap_or_else(|| panic!("{var} is not in the job's environment: {job_env:?}"))
    };
    let artifact_grant = grant(ARTIFACT_GRANT_ENV);
    assert_eq!(artifact_grant.check_target("A", &bucket, &key), Ok(()));
    assert!(
        grant(REPORT_GRANT_ENV)
            .url
            .contains("/.layerforge/reports/")
    );
    assert!(!command.iter().any(|c| c.contains("X-Amz")), "{command:?}");

    let (_dir, uv) = stand_in_uv();
    let home = tempfile::tempdir().unwrap();
    let built = tokio::task::spawn_blocking({
        let (command, job_env, uv, home) = (
            command.clone(),
            job_env.clone(),
            uv.clone(),
            home.path().to_owned(),
        );
        move || run_job(&command, &job_env, &uv, &home)
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&built.stderr);
    assert!(built.status.success(), "{stderr}");
    assert!(installer_ran(&uv));
    assert!(
        stderr.contains("no AWS credentials loaded")
            && stderr.contains("uploaded with the upload grant"),
        "{stderr}"
    );

    // The object carries the metadata submit-build signed, and publish-layer publishes it.
    let head = s3
        .head_object()
        .bucket(&bucket)
        .key(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_type(), Some("application/zip"));
    let metadata = head.metadata().cloned().unwrap_or_default();
    assert_eq!(
        metadata.get("layer-name").map(String::as_str),
        Some("grant-demo")
    );
    assert_eq!(
        metadata.get("fingerprint").map(String::as_str),
        Some(submitted.fingerprint.as_str())
    );
    assert_eq!(
        metadata.get("license-info").map(String::as_str),
        Some("MIT")
    );
    assert_eq!(
        metadata.get("python-version").map(String::as_str),
        Some("3.11")
    );
    assert_eq!(
        metadata.get("content-sha256"),
        None,
        "the digest is publish-layer's to compute"
    );
    for (name, value) in &artifact_grant.headers {
        if let Some(meta) = name.strip_prefix("x-amz-meta-") {
            assert_eq!(metadata.get(meta), Some(value), "{name}");
        }
    }

    // The build's report (its size, bytecode included) went up through the report grant, at the report key.
    let report = s3
        .get_object()
        .bucket(&bucket)
        .key(layerforge::records::report_key(&key))
        .send()
        .await
        .expect("the success report is at the report key");
    let report: layerforge::records::FailureReport =
        serde_json::from_slice(&report.body.collect().await.unwrap().into_bytes()).unwrap();
    assert!(report.succeeded(), "{report:?}");
    let size = report.size.expect("a success report carries the size");
    assert!(
        size.unzipped_bytes > 0 && size.bytecode_bytes > 0,
        "{size:?}"
    );
    assert_eq!(size.distributions[0].name, "grantdemo", "{size:?}");
    let event = crate::pipeline::event_for(&aws_sdk_sqs::Client::new(&sdk), &queue_url, &key).await;
    let published = publish::handle(&publish_state, event).await.unwrap();
    let arn = published
        .records
        .iter()
        .find_map(|r| r.outcome.layer_version_arn())
        .unwrap_or_else(|| panic!("nothing published: {published:?}"));
    assert!(arn.contains(":layer:grant-demo:"), "{arn}");

    // The grant is visible to whoever may DescribeJobs: replayed with other bytes, it can't replace what the
    // job uploaded (If-None-Match is signed in), and the key keeps its one version.
    let forged_dir = tempfile::tempdir().unwrap();
    let forged = forged_dir.path().join("forged.zip");
    std::fs::write(&forged, b"PK\x05\x06 not the job's zip").unwrap();
    let replay = layerforge::builder::grant::put_with_grant(
        &artifact_grant,
        std::fs::File::open(&forged).unwrap(),
        std::fs::metadata(&forged).unwrap().len(),
        &bucket,
        &key,
    )
    .await
    .expect_err("a replayed grant must not overwrite the artifact");
    let text = replay.to_string();
    assert!(
        text.contains("412") && text.contains("nothing was overwritten"),
        "{text}"
    );
    let versions = s3
        .list_object_versions()
        .bucket(&bucket)
        .prefix(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(versions.versions().len(), 1, "one version of the artifact");
    eprintln!("FIGURES grants: a replayed artifact grant got HTTP 412; 1 object version");
}

/// A grant for `s3://bucket/key` by hand (moto's path style), ending at `expires_at`.
fn grant_json(endpoint: &str, bucket: &str, key: &str, expires_at: u64) -> String {
    Grant {
        url: format!("{endpoint}/{bucket}/{key}?x-id=PutObject"),
        method: "PUT".to_owned(),
        headers: [("content-type".to_owned(), "application/zip".to_owned())].into(),
        expires_at,
    }
    .to_json()
}

fn job_command(bucket: &str, key: &str) -> Vec<String> {
    [
        "--name=late",
        "--requirements=grantdemo==1.0",
        "--runtime=python3.11",
        "--architecture=arm64",
        "--installer=uv",
        &format!("--bucket={bucket}"),
        &format!("--key={key}"),
    ]
    .map(str::to_owned)
    .to_vec()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn a_job_that_starts_after_its_grants_expired_installs_nothing_and_exits_5() {
    let (bucket, key) = (
        "lf-grants",
        "layers/late/python3.12-arm64/0123456789abcdef.zip",
    );
    let endpoint = "http://127.0.0.1:9"; // never reached
    let job_env = vec![
        (
            ARTIFACT_GRANT_ENV.to_owned(),
            grant_json(endpoint, bucket, key, now() - 30),
        ),
        (
            REPORT_GRANT_ENV.to_owned(),
            grant_json(
                endpoint,
                bucket,
                &layerforge::records::report_key(key),
                now() - 30,
            ),
        ),
    ];
    let (_dir, uv) = stand_in_uv();
    let home = tempfile::tempdir().unwrap();
    let out = run_job(&job_command(bucket, key), &job_env, &uv, home.path());
    assert_eq!(out.status.code(), Some(5), "exit 5: upload");
    assert!(!installer_ran(&uv), "nothing was installed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("expired") && stderr.contains("--force"),
        "{stderr}"
    );
    assert!(
        stderr.contains("no report: the report grant can't be used"),
        "an expired report grant isn't tried: {stderr}"
    );
}

#[test]
fn a_grant_for_another_key_is_refused_before_the_install() {
    let (bucket, key) = (
        "lf-grants",
        "layers/late/python3.12-arm64/0123456789abcdef.zip",
    );
    let endpoint = "http://127.0.0.1:9";
    let later = now() + 3600;
    let job_env = vec![
        (
            ARTIFACT_GRANT_ENV.to_owned(),
            grant_json(
                endpoint,
                bucket,
                "layers/victim/python3.12-arm64/0123456789abcdef.zip",
                later,
            ),
        ),
        (
            REPORT_GRANT_ENV.to_owned(),
            grant_json(
                endpoint,
                bucket,
                &layerforge::records::report_key(key),
                later,
            ),
        ),
    ];
    let (_dir, uv) = stand_in_uv();
    let home = tempfile::tempdir().unwrap();
    let out = run_job(&job_command(bucket, key), &job_env, &uv, home.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(!installer_ran(&uv));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("layers/victim/") && stderr.contains("refused"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_grant_refused_at_upload_time_exits_5_and_says_to_run_again() {
    // A loopback stand-in for S3 whose answer to every PUT is the one for expired signing credentials.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut requests = Vec::new();
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && socket.read(&mut byte).await.unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head).into_owned();
            // Read the body too, so that the answer isn't a reset in the middle of the upload.
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_owned())
                })
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0u8; length];
            let _ = socket.read_exact(&mut body).await;
            let body = "<?xml version=\"1.0\"?><Error><Code>ExpiredToken</Code>\
                        <Message>The provided token has expired.</Message></Error>";
            let _ = socket
                .write_all(
                    format!(
                        "HTTP/1.1 403 Forbidden\r\ncontent-type: application/xml\r\ncontent-length: {}\r\n\
                         connection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                )
                .await;
            requests.push(head);
            if requests.len() == 3 {
                break;
            }
        }
        requests
    });

    let (bucket, key) = (
        "lf-grants",
        "layers/late/python3.12-arm64/0123456789abcdef.zip",
    );
    let later = now() + 3600;
    let job_env = vec![
        (
            ARTIFACT_GRANT_ENV.to_owned(),
            grant_json(&endpoint, bucket, key, later),
        ),
        (
            REPORT_GRANT_ENV.to_owned(),
            grant_json(
                &endpoint,
                bucket,
                &layerforge::records::report_key(key),
                later,
            ),
        ),
    ];
    let (_dir, uv) = stand_in_uv();
    let home = tempfile::tempdir().unwrap();
    let out = tokio::task::spawn_blocking({
        let (uv, home) = (uv.clone(), home.path().to_owned());
        move || run_job(&job_command(bucket, key), &job_env, &uv, &home)
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(5));
    assert!(installer_ran(&uv), "the grant was fresh: the build ran");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ExpiredToken") && stderr.contains("--force"),
        "{stderr}"
    );
    let requests = server.await.unwrap();
    let report_put = format!("PUT /{bucket}/.layerforge/reports/{key}.json?");
    assert!(
        requests[0].starts_with(&report_put),
        "first the build's size report, before the zip whose upload triggers publishing: {}",
        requests[0]
    );
    assert!(
        requests[1].starts_with(&format!("PUT /{bucket}/{key}?")),
        "{}",
        requests[1]
    );
    assert!(
        requests[1].contains("content-type: application/zip"),
        "the grant's headers, verbatim"
    );
    assert!(
        requests[2].starts_with(&report_put),
        "then the failure report through its grant: {}",
        requests[2]
    );
}
