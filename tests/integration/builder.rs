//! layer-builder end to end: the real binary, the real package index (PyPI), moto's S3.
//!
//! Needs on PATH: `python3` (3.10 … 3.14, with pip) and `uv`; `MOTO_ENDPOINT` for the upload tests.
//! `scripts/test.sh` provides all three. Timings and hashes are printed (run with `--nocapture` to see them).

use std::{
    collections::HashMap,
    io::Read,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use base64::Engine as _;
use layerforge::{
    artifact::{METADATA_LIMIT_BYTES, keys},
    builder::{
        elf::{EM_AARCH64, EM_X86_64},
        upload::{MULTIPART_THRESHOLD, upload},
    },
};
use sha2::{Digest, Sha256};

use crate::helpers;

const BIN: &str = env!("CARGO_BIN_EXE_layer-builder");
/// Pinned versions with cp312 manylinux2014 wheels for both aarch64 and x86_64.
const COMPILED: &str = "orjson==3.10.7\ncharset-normalizer==3.3.2";

/// Runs layer-builder with `args`; the AWS settings point at moto when `MOTO_ENDPOINT` is set.
pub(crate) fn builder(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("RUST_LOG", "info")
        .env_remove("LAYERFORGE_PYTHON");
    if let Ok(endpoint) = std::env::var("MOTO_ENDPOINT") {
        cmd.env("AWS_ENDPOINT_URL", endpoint)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", helpers::REGION)
            .env_remove("AWS_PROFILE");
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {BIN}: {e}"));
    eprintln!(
        "layer-builder {args:?} -> {}\n--- stdout\n{}--- stderr (tail)\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        tail(&String::from_utf8_lossy(&output.stderr), 15)
    );
    output
}

pub(crate) fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The `key: value` summary lines of a successful run.
pub(crate) fn summary(output: &Output) -> HashMap<String, String> {
    assert!(
        output.status.success(),
        "layer-builder failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The machine's python3 as a Lambda runtime name, e.g. `python3.11`.
fn machine_runtime() -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys; print('python%d.%d' % sys.version_info[:2])",
        ])
        .output()
        .expect("python3 must be on PATH");
    assert!(
        out.status.success(),
        "python3 does not run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let runtime = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        [
            "python3.10",
            "python3.11",
            "python3.12",
            "python3.13",
            "python3.14"
        ]
        .contains(&runtime.as_str()),
        "python3 is {runtime}, not a Lambda runtime"
    );
    runtime
}

/// Whether an interpreter of `runtime`'s version runs here as the user layer-builder installs as (65534 when
/// the tests run as root): the builder can compile that runtime's bytecode.
pub(crate) fn has_interpreter(runtime: &str) -> bool {
    use std::os::unix::process::CommandExt as _;
    let mut cmd = Command::new(runtime);
    cmd.args(["-c", "pass"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        cmd.uid(65_534).gid(65_534);
    }
    cmd.status().is_ok_and(|s| s.success())
}

fn host_architecture() -> &'static str {
    if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "x86_64"
    }
}

pub(crate) fn open_zip(path: &Path) -> zip::ZipArchive<std::fs::File> {
    zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap()
}

pub(crate) fn names(path: &Path) -> Vec<String> {
    let archive = open_zip(path);
    archive.file_names().map(str::to_owned).collect()
}

/// `(name, e_machine)` of every ELF entry of the zip.
fn elf_entries(path: &Path) -> Vec<(String, u16)> {
    let mut archive = open_zip(path);
    let mut out = Vec::new();
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).unwrap();
        let mut header = Vec::new();
        (&mut entry).take(20).read_to_end(&mut header).unwrap();
        if let Some(machine) = layerforge::builder::elf::elf_machine(&header) {
            out.push((entry.name().to_owned(), machine));
        }
    }
    out
}

pub(crate) fn sha256_hex(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

#[test]
fn native_pure_python_layer_imports_and_rebuilds_byte_identical() {
    let runtime = machine_runtime();
    let site = format!("python/lib/{runtime}/site-packages");
    let dir = tempfile::tempdir().unwrap();
    let zips: Vec<PathBuf> = (1..=2)
        .map(|i| dir.path().join(format!("six-{i}.zip")))
        .collect();
    let mut sums = Vec::new();
    for zip in &zips {
        let output = builder(
            &[
                "--name",
                "six",
                "--requirements",
                "six==1.16.0",
                "--runtime",
                &runtime,
                "--architecture",
                host_architecture(),
                "--out",
                zip.to_str().unwrap(),
            ],
            &[],
        );
        sums.push(summary(&output));
    }

    let entries = names(&zips[0]);
    assert!(entries.contains(&format!("{site}/six.py")), "{entries:?}");
    assert!(
        entries.contains(&format!("{site}/six-1.16.0.dist-info/METADATA")),
        "{entries:?}"
    );
    assert!(
        entries.iter().all(|n| n.starts_with(&format!("{site}/"))),
        "{entries:?}"
    );
    // Bytecode of the runtime's version, hash-based (PEP 552 flags 0b01: unchecked-hash), beside its source,
    // and nothing else of the kind.
    let tag = format!("cpython-3{}", &runtime[8..]);
    let pyc_name = format!("{site}/__pycache__/six.{tag}.pyc");
    let pycs: Vec<&String> = entries.iter().filter(|n| n.ends_with(".pyc")).collect();
    assert_eq!(pycs, [&pyc_name], "{entries:?}");
    let mut pyc = Vec::new();
    open_zip(&zips[0])
        .by_name(&pyc_name)
        .unwrap()
        .read_to_end(&mut pyc)
        .unwrap();
    assert_eq!(
        u32::from_le_bytes(pyc[4..8].try_into().unwrap()),
        0b01,
        "unchecked-hash"
    );
    let mut sorted = entries.clone();
    sorted.sort();
    assert_eq!(entries, sorted, "entries are sorted");
    let mut archive = open_zip(&zips[0]);
    for i in 0..archive.len() {
        let entry = archive.by_index(i).unwrap();
        assert_eq!(entry.unix_mode(), Some(0o100_644), "{}", entry.name());
        assert_eq!(
            entry.last_modified().map(|t| t.year()),
            Some(1980),
            "{}",
            entry.name()
        );
    }

    // Unzipped, the module imports from the layer's site-packages.
    let extracted = dir.path().join("extracted");
    archive.extract(&extracted).unwrap();
    let out = Command::new("python3")
        .args([
            "-v",
            "-c",
            "import six; print(six.__version__); print(six.__file__)",
        ])
        .env("PYTHONPATH", extracted.join(&site))
        .env("PYTHONNOUSERSITE", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("1.16.0\n"), "{stdout}");
    assert!(
        stdout.contains(extracted.to_str().unwrap()),
        "six came from the layer: {stdout}"
    );
    // Python loaded six from the layer's bytecode, whatever the dates of the unpacked files (1980).
    let verbose = String::from_utf8_lossy(&out.stderr);
    let loaded = format!("code object from '{}'", extracted.join(&pyc_name).display());
    assert!(
        verbose.contains(&loaded),
        "{loaded} not in:\n{}",
        tail(&verbose, 40)
    );

    // Byte-identical rebuild.
    let (a, b) = (sha256_hex(&zips[0]), sha256_hex(&zips[1]));
    assert_eq!(a, b, "two builds of the same pinned set differ");
    assert_eq!(sums[0]["sha256_hex"], a);
    assert_eq!(sums[0]["content_sha256"], sums[1]["content_sha256"]);
    eprintln!(
        "FIGURES native pip six==1.16.0 {runtime}: zip {} bytes, unzipped {}, sha256 {a} (both builds), \
         install {}s/{}s, total {}s/{}s",
        sums[0]["zipped_bytes"],
        sums[0]["unzipped_bytes"],
        sums[0]["install_seconds"],
        sums[1]["install_seconds"],
        sums[0]["total_seconds"],
        sums[1]["total_seconds"]
    );
}

fn cross_build(installer: &str, architecture: &str, expected: u16) {
    let dir = tempfile::tempdir().unwrap();
    let zip = dir.path().join("compiled.zip");
    let output = builder(
        &[
            "--name",
            "compiled",
            "--requirements",
            COMPILED,
            "--runtime",
            "python3.12",
            "--architecture",
            architecture,
            "--platform-mode",
            "cross",
            "--installer",
            installer,
            // No Python 3.12 here to compile bytecode with: the ELF checks are what this test is about.
            "--no-bytecode",
            "--out",
            zip.to_str().unwrap(),
        ],
        &[],
    );
    let sums = summary(&output);
    let entries = names(&zip);
    for package in ["orjson/__init__.py", "charset_normalizer/__init__.py"] {
        let name = format!("python/lib/python3.12/site-packages/{package}");
        assert!(entries.contains(&name), "{name} missing: {entries:?}");
    }
    let elves = elf_entries(&zip);
    let shared: Vec<&(String, u16)> = elves.iter().filter(|(n, _)| n.ends_with(".so")).collect();
    assert!(
        shared.len() >= 2,
        "orjson and charset-normalizer ship .so files: {elves:?}"
    );
    assert!(
        shared.iter().all(|(n, _)| n.contains(&format!(
            "cpython-312-{}",
            if expected == EM_AARCH64 {
                "aarch64"
            } else {
                "x86_64"
            }
        ))),
        "{shared:?}"
    );
    for (name, machine) in &elves {
        assert_eq!(*machine, expected, "{name}");
    }
    eprintln!(
        "FIGURES cross {installer} {architecture} python3.12 orjson+charset-normalizer: zip {} bytes, unzipped {}, \
         {} entries, {} ELF files, install {}s, total {}s, sha256 {}",
        sums["zipped_bytes"],
        sums["unzipped_bytes"],
        sums["entries"],
        elves.len(),
        sums["install_seconds"],
        sums["total_seconds"],
        sums["sha256_hex"]
    );
}

#[test]
fn cross_build_for_arm64_has_only_aarch64_elf_files() {
    cross_build("pip", "arm64", EM_AARCH64);
}

#[test]
fn cross_build_for_x86_64_has_only_x86_64_elf_files() {
    cross_build("pip", "x86_64", EM_X86_64);
}

#[test]
fn uv_cross_build_for_arm64_has_only_aarch64_elf_files() {
    cross_build("uv", "arm64", EM_AARCH64);
}

#[test]
fn uv_native_build_matches_pip_layout() {
    let runtime = machine_runtime();
    let dir = tempfile::tempdir().unwrap();
    let zip = dir.path().join("six-uv.zip");
    let output = builder(
        &[
            "-n",
            "six",
            "-r",
            "six==1.16.0",
            "--runtime",
            &runtime,
            "--architecture",
            host_architecture(),
            "--installer",
            "uv",
            "--out",
            zip.to_str().unwrap(),
        ],
        &[],
    );
    let sums = summary(&output);
    let entries = names(&zip);
    let site = format!("python/lib/{runtime}/site-packages");
    assert!(entries.contains(&format!("{site}/six.py")), "{entries:?}");
    assert!(
        entries.contains(&format!("{site}/six-1.16.0.dist-info/INSTALLER")),
        "{entries:?}"
    );
    let mut archive = open_zip(&zip);
    let mut installer = String::new();
    archive
        .by_name(&format!("{site}/six-1.16.0.dist-info/INSTALLER"))
        .unwrap()
        .read_to_string(&mut installer)
        .unwrap();
    assert_eq!(installer.trim(), "uv");
    eprintln!(
        "FIGURES native uv six==1.16.0 {runtime}: zip {} bytes, install {}s, total {}s",
        sums["zipped_bytes"], sums["install_seconds"], sums["total_seconds"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn upload_with_the_original_short_options() {
    let sdk = helpers::sdk().await;
    let s3 = layerforge::aws::s3_client(&sdk);
    let bucket = helpers::bucket(&sdk, "lf-builder").await;
    let runtime = machine_runtime();
    let arch = host_architecture();
    let requirements = "six==1.16.0|attrs==24.2.0 ; python_version >= \"3.8\"";
    let output = tokio::task::spawn_blocking({
        let (bucket, runtime) = (bucket.clone(), runtime.clone());
        move || {
            builder(
                &[
                    "-n",
                    "legacy_layer",
                    "-r",
                    requirements,
                    "-s",
                    &bucket,
                    "-k",
                    "python",
                    "-l",
                    "MIT",
                    "--runtime",
                    &runtime,
                    "--architecture",
                    arch,
                    "--description",
                    "six and attrs — pinned",
                ],
                &[],
            )
        }
    })
    .await
    .unwrap();
    let sums = summary(&output);
    let artifact = &sums["artifact"];
    let key = artifact
        .strip_prefix(&format!("s3://{bucket}/"))
        .expect("artifact in the bucket");
    assert!(
        key.starts_with(&format!("python/legacy_layer/{runtime}-{arch}/")),
        "{key}"
    );
    assert!(
        key.ends_with(&format!("{}.zip", sums["fingerprint"])),
        "{key}"
    );
    assert!(
        !sums.contains_key("zip"),
        "an upload without --out keeps no local zip"
    );

    let head = s3
        .head_object()
        .bucket(&bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_type(), Some("application/zip"));
    let metadata = head.metadata().cloned().unwrap_or_default();
    for k in keys::ALL {
        assert!(
            metadata.get(*k).is_some_and(|v| !v.is_empty()),
            "metadata {k} missing: {metadata:?}"
        );
    }
    let total: usize = metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
    assert!(total <= METADATA_LIMIT_BYTES, "metadata is {total} bytes");
    assert_eq!(metadata[keys::LAYER_NAME], "legacy_layer");
    assert_eq!(metadata[keys::LICENSE_INFO], "MIT");
    assert_eq!(metadata[keys::COMPATIBLE_RUNTIMES], runtime);
    assert_eq!(metadata[keys::COMPATIBLE_ARCHITECTURES], arch);
    assert!(
        metadata[keys::PYTHON_VERSION].starts_with(runtime.trim_start_matches("python")),
        "{metadata:?}"
    );
    assert_eq!(metadata[keys::FINGERPRINT], sums["fingerprint"]);
    assert_eq!(metadata[keys::BUILDER_VERSION], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        metadata[keys::REQUIREMENTS],
        "six==1.16.0|attrs==24.2.0 ; python_version >= \"3.8\""
    );
    assert_eq!(metadata[keys::CREATE_DATE].len(), 17, "YYYYmmddHHMMSSmmm");
    assert!(
        metadata[keys::CREATE_DATE].starts_with("20"),
        "{metadata:?}"
    );

    // The metadata's content-sha256 is the uploaded object's.
    let body = s3
        .get_object()
        .bucket(&bucket)
        .key(key)
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap();
    let bytes = body.into_bytes();
    let sha = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&bytes));
    assert_eq!(metadata[keys::CONTENT_SHA256], sha);
    assert_eq!(sums["content_sha256"], sha);
    assert_eq!(sums["zipped_bytes"], bytes.len().to_string());
    let archive = zip::ZipArchive::new(std::io::Cursor::new(bytes.to_vec())).unwrap();
    let site = format!("python/lib/{runtime}/site-packages");
    assert!(
        archive
            .file_names()
            .any(|n| n == format!("{site}/attrs/__init__.py"))
    );
    assert!(archive.file_names().any(|n| n == format!("{site}/six.py")));
}

#[tokio::test]
async fn large_zips_go_up_in_parts_with_their_metadata() {
    let sdk = helpers::sdk().await;
    let s3 = layerforge::aws::s3_client(&sdk);
    let bucket = helpers::bucket(&sdk, "lf-multipart").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.zip");
    let size = MULTIPART_THRESHOLD as usize * 2 + 12_345;
    let content: Vec<u8> = (0..size)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3])
        .collect();
    std::fs::write(&path, &content).unwrap();
    let metadata = HashMap::from([(keys::LAYER_NAME.to_owned(), "big".to_owned())]);
    let uploaded = upload(
        &s3,
        &std::fs::File::open(&path).unwrap(),
        size as u64,
        &bucket,
        "layers/big/python3.12-arm64/0123456789abcdef.zip",
        metadata,
    )
    .await
    .unwrap();
    assert!(uploaded.multipart);
    let object = s3
        .get_object()
        .bucket(&bucket)
        .key(&uploaded.key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        object
            .metadata()
            .and_then(|m| m.get(keys::LAYER_NAME))
            .map(String::as_str),
        Some("big")
    );
    assert_eq!(object.content_type(), Some("application/zip"));
    let body = object.body.collect().await.unwrap().into_bytes();
    assert_eq!(body.len(), size);
    assert!(
        body.as_ref() == content.as_slice(),
        "the parts reassemble the file"
    );
    let uploads = s3
        .list_multipart_uploads()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    assert!(
        uploads.uploads().is_empty(),
        "no multipart upload is left open"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_package_exits_3_and_uploads_nothing() {
    let sdk = helpers::sdk().await;
    let s3 = layerforge::aws::s3_client(&sdk);
    let bucket = helpers::bucket(&sdk, "lf-fail").await;
    let runtime = machine_runtime();
    let output = tokio::task::spawn_blocking({
        let bucket = bucket.clone();
        move || {
            builder(
                &[
                    "--name",
                    "missing",
                    "--requirements",
                    "layerforge-no-such-package-3f2a9c==1.0.0",
                    "--installer",
                    "pip",
                    "--runtime",
                    &runtime,
                    "--architecture",
                    host_architecture(),
                    "--bucket",
                    &bucket,
                    "--key",
                    "layers/missing/x.zip",
                ],
                &[],
            )
        }
    })
    .await
    .unwrap();
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let error = stderr
        .lines()
        .find(|l| l.starts_with("layer-builder: error:"))
        .unwrap_or_default();
    assert!(error.contains("pip install failed"), "{stderr}");
    let reason = stderr
        .split("layer-builder: error:")
        .nth(1)
        .unwrap_or_default();
    assert!(
        reason.contains("No matching distribution found for layerforge-no-such-package-3f2a9c"),
        "{reason}"
    );
    assert!(output.stdout.is_empty(), "no summary on failure");
    // No zip: only the failure report, where build-status looks for it.
    let listed = s3.list_objects_v2().bucket(&bucket).send().await.unwrap();
    let keys: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(
        keys,
        [".layerforge/reports/layers/missing/x.zip.json"],
        "only the failure report was uploaded"
    );
    let body = s3
        .get_object()
        .bucket(&bucket)
        .key(keys[0])
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    let report: layerforge::records::FailureReport = serde_json::from_slice(&body).unwrap();
    assert_eq!((report.exit_code, report.stage.as_str()), (3, "install"));
    assert!(
        report.message.contains("layerforge-no-such-package-3f2a9c"),
        "{}",
        report.message
    );
    assert!(!report.last_lines.is_empty(), "the installer's last lines");
}

#[test]
fn bad_arguments_exit_2_with_a_usage_line() {
    for args in [
        &["--requirements", "six==1.16.0"][..],
        &[
            "--name",
            "x",
            "--requirements",
            "six==1.16.0",
            "--architecture",
            "sparc",
        ],
        &[
            "--name",
            "x",
            "--requirements=-e git+https://example.com/x.git",
        ],
        &[
            "--name",
            "x",
            "--requirements",
            "six @ https://example.com/six.whl",
        ],
        &[
            "--name",
            "x",
            "--requirements",
            "six==1.16.0",
            "--description",
            &"d".repeat(300),
        ],
        &["--name", "x", "-p", "/nonexistent/requirements.txt"],
    ] {
        let output = builder(args, &[]);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("Usage: layer-builder"),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains("error:"), "{args:?}: {stderr}");
    }
}

#[test]
fn native_build_needs_the_runtime_interpreter() {
    // python3 is not 3.14 here (machine_runtime is asserted 3.10-3.13 in practice): a native 3.14 build refuses.
    let runtime = machine_runtime();
    let other = if runtime == "python3.14" {
        "python3.10"
    } else {
        "python3.14"
    };
    let output = builder(
        &[
            "--name",
            "x",
            "--requirements",
            "six==1.16.0",
            "--runtime",
            other,
            "--platform-mode",
            "native",
            "--out",
            "/nonexistent/x.zip",
        ],
        &[("LAYERFORGE_PYTHON", "python3")],
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "no Python {} interpreter",
            &other["python".len()..]
        )),
        "{stderr}"
    );
    assert!(stderr.contains("--platform-mode cross"), "{stderr}");
}

#[test]
fn native_build_for_another_architecture_refuses_foreign_elf_files() {
    // On this host a native install of a compiled package gets the host's wheel: wrong for the other arch.
    let runtime = machine_runtime();
    let other = if host_architecture() == "arm64" {
        "x86_64"
    } else {
        "arm64"
    };
    let dir = tempfile::tempdir().unwrap();
    let zip = dir.path().join("wrong.zip");
    let output = builder(
        &[
            "--name",
            "wrong",
            "--requirements",
            "orjson==3.10.7",
            "--runtime",
            &runtime,
            "--architecture",
            other,
            "--platform-mode",
            "native",
            "--out",
            zip.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("orjson/orjson.cpython-"), "{stderr}");
    assert!(stderr.contains("--platform-mode cross"), "{stderr}");
    assert!(
        !zip.exists(),
        "no zip is written for a wrong-architecture tree"
    );
}

/// An x86_64 cp3XX wheel whose extension needs more than glibc 2.26: numpy 2.3.0 ships only `manylinux_2_28`
/// wheels for x86_64.
const NEEDS_GLIBC_2_28: &str = "numpy==2.3.0";

#[test]
fn a_wheel_above_glibc_2_26_is_refused_for_python311_and_accepted_for_python312() {
    assert_eq!(
        host_architecture(),
        "x86_64",
        "numpy 2.3.0's manylinux_2_28 wheels are x86_64's"
    );
    let dir = tempfile::tempdir().unwrap();
    // python3.11 (Amazon Linux 2, glibc 2.26): a native install on this glibc 2.36 host takes the 2_28 wheel,
    // and the ELF check refuses it before anything is written.
    let refused = dir.path().join("np311.zip");
    let output = builder(
        &[
            "-n",
            "np",
            "-r",
            NEEDS_GLIBC_2_28,
            "--runtime",
            "python3.11",
            "--architecture",
            "x86_64",
            "--platform-mode",
            "native",
            "--installer",
            "uv",
            "--out",
            refused.to_str().unwrap(),
        ],
        &[("LAYERFORGE_PYTHON", "python3.11")],
    );
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "numpy/_core/_multiarray_umath.cpython-311-x86_64-linux-gnu.so needs GLIBC_2."
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("above GLIBC_2.26 (Amazon Linux 2)"),
        "{stderr}"
    );
    assert!(stderr.contains("python3.11 runtime"), "{stderr}");
    assert!(!refused.exists(), "nothing is written above the ceiling");

    // python3.11 in cross mode asks only for wheels up to glibc 2.26: there is none, the install fails.
    let output = builder(
        &[
            "-n",
            "np",
            "-r",
            NEEDS_GLIBC_2_28,
            "--runtime",
            "python3.11",
            "--architecture",
            "x86_64",
            "--platform-mode",
            "cross",
            "--installer",
            "uv",
            "--out",
            refused.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(3));
    assert!(!refused.exists());

    // python3.12 (Amazon Linux 2023, glibc 2.34) runs it: cross builds with uv and with pip take the wheel.
    for installer in ["uv", "pip"] {
        let zip = dir.path().join(format!("np312-{installer}.zip"));
        let output = builder(
            &[
                "-n",
                "np",
                "-r",
                NEEDS_GLIBC_2_28,
                "--runtime",
                "python3.12",
                "--architecture",
                "x86_64",
                "--installer",
                installer,
                "--no-bytecode",
                "--out",
                zip.to_str().unwrap(),
            ],
            &[],
        );
        let sums = summary(&output);
        assert_eq!(sums["runtime"], "python3.12");
        assert_eq!(sums["platform_mode"], "cross", "auto: no Python 3.12 here");
        let elves = elf_entries(&zip);
        assert!(
            elves.iter().any(|(n, m)| n
                .ends_with("numpy/_core/_multiarray_umath.cpython-312-x86_64-linux-gnu.so")
                && *m == EM_X86_64),
            "{elves:?}"
        );
        assert_eq!(sums["elf_files"], elves.len().to_string());
        eprintln!(
            "FIGURES {installer} cross python3.12 x86_64 {NEEDS_GLIBC_2_28}: {} ELF files checked, zip {} bytes, \
             install {}s, check {}s, zip {}s",
            sums["elf_files"],
            sums["zipped_bytes"],
            sums["install_seconds"],
            sums["check_seconds"],
            sums["zip_seconds"]
        );
    }
}

#[test]
fn cross_builds_for_every_runtime_and_architecture() {
    // MarkupSafe 3.0.3 has a cp3XX manylinux wheel per Python version and architecture.
    let dir = tempfile::tempdir().unwrap();
    let mut built = Vec::new();
    for runtime in [
        "python3.10",
        "python3.11",
        "python3.12",
        "python3.13",
        "python3.14",
    ] {
        for (architecture, machine, expected) in [
            ("arm64", "aarch64", EM_AARCH64),
            ("x86_64", "x86_64", EM_X86_64),
        ] {
            let zip = dir.path().join(format!("ms-{runtime}-{architecture}.zip"));
            // Bytecode where an interpreter of the runtime's version runs here (any architecture: bytecode
            // doesn't depend on it), none elsewhere.
            let bytecode = has_interpreter(runtime);
            let mut args = vec![
                "-n",
                "markupsafe",
                "-r",
                "markupsafe==3.0.3",
                "--runtime",
                runtime,
                "--architecture",
                architecture,
                "--platform-mode",
                "cross",
                "--installer",
                "uv",
                "--out",
                zip.to_str().unwrap(),
            ];
            if !bytecode {
                args.push("--no-bytecode");
            }
            let output = builder(&args, &[]);
            let sums = summary(&output);
            let tag = format!("cpython-3{}", &runtime[8..]);
            let pyc = format!(
                "python/lib/{runtime}/site-packages/markupsafe/__pycache__/__init__.{tag}.pyc"
            );
            assert_eq!(
                names(&zip).contains(&pyc),
                bytecode,
                "{runtime}/{architecture}: bytecode {bytecode}"
            );
            assert_eq!(sums["runtime"], runtime);
            let site = format!("python/lib/{runtime}/site-packages/");
            let entries = names(&zip);
            assert!(entries.iter().all(|n| n.starts_with(&site)), "{entries:?}");
            assert!(entries.contains(&format!("{site}markupsafe/__init__.py")));
            let elves = elf_entries(&zip);
            let abi = format!("cpython-3{}-{machine}-linux-gnu.so", &runtime[8..]);
            assert!(
                !elves.is_empty()
                    && elves
                        .iter()
                        .all(|(n, m)| n.ends_with(&abi) && *m == expected),
                "{runtime}/{architecture}: {elves:?}"
            );
            built.push(format!(
                "{runtime}/{architecture}: {} ELF, bytecode {}",
                elves.len(),
                sums["bytecode"]
            ));
        }
    }
    eprintln!("FIGURES cross builds: {}", built.join(", "));
}

#[test]
fn without_runtime_the_interpreter_found_decides() {
    // The original tool's usage: no --runtime, no --architecture.
    let runtime = machine_runtime();
    let dir = tempfile::tempdir().unwrap();
    let zip = dir.path().join("x.zip");
    let output = builder(
        &[
            "-r",
            "six==1.16.0",
            "-n",
            "x",
            "--out",
            zip.to_str().unwrap(),
        ],
        &[],
    );
    let sums = summary(&output);
    assert_eq!(sums["runtime"], runtime);
    assert_eq!(sums["platform_mode"], "native");
    assert!(
        names(&zip).contains(&format!("python/lib/{runtime}/site-packages/six.py")),
        "{:?}",
        names(&zip)
    );
}

#[test]
fn auto_mode_builds_a_foreign_architecture_in_cross_mode() {
    let runtime = machine_runtime();
    let (other, expected) = if host_architecture() == "arm64" {
        ("x86_64", EM_X86_64)
    } else {
        ("arm64", EM_AARCH64)
    };
    let dir = tempfile::tempdir().unwrap();
    let zip = dir.path().join("foreign.zip");
    let output = builder(
        &[
            "--name",
            "foreign",
            "--requirements",
            "orjson==3.10.7",
            "--runtime",
            &runtime,
            "--architecture",
            other,
            "--installer",
            "uv",
            "--out",
            zip.to_str().unwrap(),
        ],
        &[],
    );
    let sums = summary(&output);
    assert_eq!(sums["platform_mode"], "cross");
    let elves = elf_entries(&zip);
    assert!(!elves.is_empty());
    assert!(elves.iter().all(|(_, m)| *m == expected), "{elves:?}");
}

/// A universal build (a matrix's one version for every pair, DESIGN section 15) of a set with native code fails
/// and writes no zip: no version can claim an architecture or runtime its ELF files weren't built for, even when
/// the builder is told the set is universal. A pure set builds, with its files under `python/`.
#[test]
fn a_universal_build_refuses_native_code_and_lays_a_pure_set_out_under_python() {
    let dir = tempfile::tempdir().unwrap();
    let zip = dir.path().join("u.zip");
    let zip_arg = zip.to_str().unwrap();
    let universal_build = |requirements: &str| {
        builder(
            &[
                "--name",
                "u",
                "--requirements",
                requirements,
                "--runtime",
                "python3.11",
                "--architecture",
                "x86_64",
                "--platform-mode",
                "cross",
                "--no-bytecode",
                "--universal=python3.11,python3.12/arm64,x86_64",
                "--out",
                zip_arg,
            ],
            &[],
        )
    };
    let output = universal_build("charset-normalizer==3.4.0");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("not universal:") && stderr.contains("ELF file(s) (native code)"),
        "{stderr}"
    );
    assert!(!zip.exists(), "no zip for a native set");

    let output = universal_build("six==1.16.0");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut archive = zip::ZipArchive::new(std::fs::File::open(&zip).unwrap()).unwrap();
    let names: Vec<String> = (0..archive.len())
        .map(|i| archive.by_index(i).unwrap().name().to_owned())
        .collect();
    assert!(names.contains(&"python/six.py".to_owned()), "{names:?}");
    assert!(
        names.iter().all(|n| !n.starts_with("python/lib/")),
        "{names:?}"
    );
}
