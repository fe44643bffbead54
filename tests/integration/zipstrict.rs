//! The strict two-stage zip reading (issue 11): the issue's archives, made by hand, are each refused with their
//! named reason, first by the pure checks, then through publish-layer against moto (rejected, tagged, no layer
//! version); zips from Info-ZIP's `zip -r` (directory entries, extra fields, data descriptors when streamed)
//! and Python's `zipfile` pass both stages and are published.
//!
//! The fixtures under `tests/fixtures/` were made by Info-ZIP Zip 3.0 (`zip -r layer.zip python bin` and
//! `zip -r - python bin`) and CPython 3.11's `zipfile` (`ZIP_DEFLATED`, directories included, one `writestr`).

use std::{collections::HashMap, sync::Arc};

use aws_sdk_s3::primitives::ByteStream;
use layerforge::{
    artifact::ArtifactMetadata,
    publish::{self, Outcome, PublishState, REASON_TAG, STATUS_TAG},
    request::{Architecture, Runtime},
    zipcheck::{self, InspectError, Limits, ZipProblem},
    zipstream,
};
use serde_json::Value;

use crate::{
    helpers::{self, sdk, unique},
    zipcraft,
};

/// Good zips made by real tools.
fn fixtures() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("zip-r", include_bytes!("../fixtures/zip-r.zip").to_vec()),
        (
            "zip-r-stream",
            include_bytes!("../fixtures/zip-r-stream.zip").to_vec(),
        ),
        (
            "python-zipfile",
            include_bytes!("../fixtures/python-zipfile.zip").to_vec(),
        ),
    ]
}

/// Both stages over bytes in memory: the entry count, or the problem's code.
pub async fn strict(bytes: &[u8]) -> Result<usize, ZipProblem> {
    let summary = zipcheck::inspect(bytes, &Limits::default())
        .await
        .map_err(|e| match e {
            InspectError::Invalid(p) => p,
            InspectError::Read(never) => match never {},
        })?;
    let streamed = zipstream::verify(bytes, &summary.directory)
        .await
        .map_err(|e| match e {
            InspectError::Invalid(p) => p,
            InspectError::Read(io) => panic!("a memory read failed: {io}"),
        })?;
    assert_eq!(streamed.entries as u64, summary.entries);
    Ok(streamed.entries)
}

#[tokio::test]
async fn the_issue_archives_are_refused_with_their_reason() {
    for (what, bytes, code) in zipcraft::issue_archives() {
        let err = strict(&bytes).await.unwrap_err();
        assert_eq!(err.code(), code, "{what}: {err}");
    }
    // Each is an attack only on the rule that names it: the same bytes made honest are accepted.
    let honest = zipcraft::zip(&[
        zipcraft::file("python/ok.py", b"print('ok')\n"),
        zipcraft::file("python/pkg/mod.py", b"x = 1\n"),
    ]);
    assert_eq!(strict(&honest).await, Ok(2));
}

/// The names Python's `zipfile` reads from `bytes` (the `python3` on PATH, as the builder tests use).
fn python_names(bytes: &[u8]) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("python3")
        .args([
            "-c",
            "import io, sys, zipfile; print(zipfile.ZipFile(io.BytesIO(sys.stdin.buffer.read())).namelist())",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 must be on PATH");
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "zipfile could not read the archive");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn the_directory_attacks_show_python_zipfile_another_file() {
    // What the declared directory lists (and a reader of the classic end record sees)...
    let declared = zipcraft::zip(&[zipcraft::file("python/ok.py", b"")]);
    assert_eq!(python_names(&declared), "['python/ok.py']");
    // ...and what Python's zipfile reads instead: the hidden directory's entry.
    for bytes in [
        zipcraft::second_directory(),
        zipcraft::end_record_in_comment(),
        zipcraft::needless_zip64(),
    ] {
        assert_eq!(python_names(&bytes), "['python/ev.py']");
    }
}

#[tokio::test]
async fn the_local_name_attack_passes_stage_one_and_is_caught_by_stage_two() {
    let bytes = zipcraft::local_name_differs();
    let summary = zipcheck::inspect(bytes.as_slice(), &Limits::default())
        .await
        .unwrap();
    assert_eq!(summary.entries, 2);
    assert_eq!(
        strict(&bytes).await,
        Err(ZipProblem::LocalHeaderMismatch {
            name: "python/ok.py".into(),
            field: "name"
        })
    );
}

#[tokio::test]
async fn zips_of_zip_r_and_python_zipfile_pass_both_stages() {
    for (what, bytes) in fixtures() {
        let entries = strict(&bytes)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        // python/, lib/, python3.12/, site-packages/, dist-info/, METADATA, six.py, pkg/, __init__.py, bin/,
        // bin/tool (+ one `writestr` file in the Python one).
        let expected = if what == "python-zipfile" { 12 } else { 11 };
        assert_eq!(entries, expected, "{what}");
    }
    // The fixtures have what the issue asks for: directory entries, extra fields, data descriptors.
    let [(_, zip_r), (_, streamed), _] = fixtures().try_into().unwrap();
    let directory = zipcheck::inspect(zip_r.as_slice(), &Limits::default())
        .await
        .unwrap()
        .directory;
    assert!(directory.entries.iter().any(|e| e.name.ends_with('/')));
    assert!(zip_r.windows(2).any(|w| w == b"UT"), "Info-ZIP's UT extra");
    let streamed_dir = zipcheck::inspect(streamed.as_slice(), &Limits::default())
        .await
        .unwrap()
        .directory;
    assert!(streamed_dir.entries.iter().any(|e| e.flags & 0x8 != 0));
}

fn metadata(layer: &str) -> HashMap<String, String> {
    ArtifactMetadata {
        layer_name: layer.to_owned(),
        requirements: "six==1.16.0".to_owned(),
        python_version: "3.12".to_owned(),
        compatible_runtimes: vec![Runtime::Python312],
        compatible_architectures: vec![Architecture::Arm64],
        create_date: "20260101120000000".to_owned(),
        ..ArtifactMetadata::default()
    }
    .to_s3_metadata()
}

#[tokio::test]
async fn publish_layer_rejects_the_issue_archives_and_publishes_real_tools_zips() {
    let sdk = sdk().await;
    let s3 = layerforge::aws::s3_client(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let lambda = layerforge::aws::lambda_client(&sdk);
    let (bucket, queue_url) = helpers::bucket_with_events(&sdk, "lf-zipstrict", None).await;
    let state = PublishState::new(
        Arc::new(helpers::config(&bucket, "{}", &[])),
        s3.clone(),
        lambda.clone(),
    );

    // (key, layer, expected reason code or None for published)
    let mut uploads: Vec<(String, String, Option<&str>)> = Vec::new();
    let bad = zipcraft::issue_archives()
        .into_iter()
        .map(|(what, bytes, code)| (what, bytes, Some(code)));
    let good = fixtures()
        .into_iter()
        .map(|(what, bytes)| (what, bytes, None));
    for (i, (what, bytes, code)) in bad.chain(good).enumerate() {
        let layer = unique(&format!("zs-{what}")).to_lowercase();
        let key = format!("layers/{layer}/python3.12-arm64/{i:016x}.zip");
        s3.put_object()
            .bucket(&bucket)
            .key(&key)
            .set_metadata(Some(metadata(&layer)))
            .body(ByteStream::from(bytes))
            .send()
            .await
            .unwrap();
        uploads.push((key, layer, code));
    }

    // moto's notifications, one message per upload (after its s3:TestEvent).
    let mut bodies: Vec<Value> = Vec::new();
    loop {
        let out = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        if out.messages().is_empty() {
            break;
        }
        for m in out.messages() {
            bodies.push(serde_json::from_str(m.body().unwrap()).unwrap());
            sqs.delete_message()
                .queue_url(&queue_url)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }

    for (key, layer, code) in &uploads {
        let event = bodies
            .iter()
            .find(|b| {
                b["Records"][0]["s3"]["object"]["key"]
                    .as_str()
                    .is_some_and(|k| publish::form_decode(k).unwrap() == *key)
            })
            .unwrap_or_else(|| panic!("no event for {key}"))
            .clone();
        let response = publish::handle(&state, event)
            .await
            .unwrap_or_else(|e| panic!("{key}: {e:?}"));
        let [record] = response.records.as_slice() else {
            panic!("{response:?}")
        };
        let tags: HashMap<String, String> = s3
            .get_object_tagging()
            .bucket(&bucket)
            .key(key)
            .send()
            .await
            .unwrap()
            .tag_set()
            .iter()
            .map(|t| (t.key().to_owned(), t.value().to_owned()))
            .collect();
        let versions = lambda
            .list_layer_versions()
            .layer_name(layer)
            .send()
            .await
            .unwrap()
            .layer_versions()
            .len();
        match code {
            Some(code) => {
                let Outcome::Rejected { code: got, .. } = &record.outcome else {
                    panic!("{key}: {record:?}")
                };
                assert_eq!(got, code, "{key}");
                assert_eq!(tags.get(STATUS_TAG).map(String::as_str), Some("rejected"));
                assert_eq!(tags.get(REASON_TAG).map(String::as_str), Some(*code));
                assert_eq!(versions, 0, "{key}: no layer version");
            }
            None => {
                assert!(
                    matches!(record.outcome, Outcome::Published { version: 1, .. }),
                    "{key}: {record:?}"
                );
                assert_eq!(tags.get(STATUS_TAG), None, "{key}");
                assert_eq!(versions, 1, "{key}");
            }
        }
    }
}
