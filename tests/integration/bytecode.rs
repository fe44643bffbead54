//! Issue 21 with the real layer-builder and the package index: bytecode that Python uses from a read-only
//! layer, a size budget that names the largest distributions, slim that keeps every import working, and
//! bytecode a package plants that never reaches the zip.
//!
//! Bytecode is compiled by an interpreter of the runtime's version: these tests build for python3.11, the one
//! this machine (and CI's) has; `has_interpreter` says which others run here.

use std::{os::unix::fs::PermissionsExt as _, path::Path, process::Command};

use crate::builder::{builder, has_interpreter, names, open_zip, sha256_hex, summary, tail};

const RUNTIME: &str = "python3.11";
const SITE: &str = "python/lib/python3.11/site-packages";
/// 3.0 MiB unzipped with bytecode, 1.9 MiB without (uv, x86_64, on 2026-12-02).
const REQUESTS: &str = "requests==2.32.3|six==1.16.0";

fn host() -> &'static str {
    if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "x86_64"
    }
}

fn build(requirements: &str, zip: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "--name",
        "bc",
        "--requirements",
        requirements,
        "--runtime",
        RUNTIME,
        "--architecture",
        host(),
        "--installer",
        "uv",
        "--out",
        zip.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    builder(&args, &[])
}

/// Unzips with `unzip`-like semantics (Python's zipfile keeps no dates; the dates don't matter for hash-based
/// bytecode, which is the point), read-only.
fn unpack(zip: &Path, into: &Path) {
    open_zip(zip).extract(into).unwrap();
    for entry in walk(into) {
        let mode = if entry.is_dir() { 0o555 } else { 0o444 };
        std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}

/// `python3.11 -v -c code` with only the layer on the path; returns (stdout, stderr).
fn import_from(site: &Path, code: &str) -> (String, String) {
    let out = Command::new(RUNTIME)
        .args(["-v", "-c", code])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("PYTHONPATH", site)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONNOUSERSITE", "1")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{}", tail(&stderr, 30));
    (stdout, stderr)
}

#[test]
fn every_module_loads_from_the_layers_bytecode_and_the_zip_is_reproducible() {
    assert!(has_interpreter(RUNTIME), "{RUNTIME} must run here");
    let dir = tempfile::tempdir().unwrap();
    let (a, b, off) = (
        dir.path().join("a.zip"),
        dir.path().join("b.zip"),
        dir.path().join("off.zip"),
    );
    let sums = summary(&build(REQUESTS, &a, &[]));
    summary(&build(REQUESTS, &b, &[]));
    let without = summary(&build(REQUESTS, &off, &["--no-bytecode"]));
    assert_eq!(sha256_hex(&a), sha256_hex(&b), "two builds, the same bytes");
    assert_ne!(
        sums["fingerprint"], without["fingerprint"],
        "bytecode is part of the fingerprint"
    );
    assert!(
        sums["bytecode"].starts_with("unchecked-hash (Python 3.11"),
        "{sums:?}"
    );
    assert_eq!(without["bytecode"], "off");
    assert!(
        !names(&off).iter().any(|n| n.ends_with(".pyc")),
        "--no-bytecode ships none"
    );
    let bytecode: u64 = sums["bytecode_bytes"].parse().unwrap();
    let total: u64 = sums["unzipped_bytes"].parse().unwrap();
    let plain: u64 = without["unzipped_bytes"].parse().unwrap();
    assert_eq!(total - bytecode, plain, "bytecode is all that was added");
    assert!(sums["largest"].contains("requests 2.32.3: "), "{sums:?}");

    // Every module of the layer that Python imports comes from its bytecode: none is compiled from source.
    let unpacked = dir.path().join("layer");
    unpack(&a, &unpacked);
    let site = unpacked.join(SITE);
    let (_, verbose) = import_from(&site, "import requests, six; requests.Session()");
    let prefix = site.display().to_string();
    let from_bytecode = verbose
        .lines()
        .filter(|l| l.starts_with("# code object from") && l.contains(&prefix))
        .count();
    // `-v` says "bytecode is stale" (or "bad …", "could not read") for a module it compiles from source.
    let from_source: Vec<&str> = verbose
        .lines()
        .filter(|l| {
            l.contains(&prefix)
                && ["stale", "bad ", "could not", "wrote "]
                    .iter()
                    .any(|w| l.contains(w))
        })
        .collect();
    assert!(from_bytecode >= 30, "{from_bytecode} modules from bytecode");
    assert!(from_source.is_empty(), "{from_source:?}");
    eprintln!(
        "FIGURES bytecode {REQUESTS}: {from_bytecode} modules loaded from the layer's bytecode, 0 compiled; \
         {total} bytes unzipped of which {bytecode} bytecode; sha256 {} (twice)",
        sha256_hex(&a)
    );
}

#[test]
fn a_layer_over_its_budget_fails_naming_the_largest_and_blames_bytecode_only_when_it_is_the_cause()
{
    let dir = tempfile::tempdir().unwrap();
    let zip = dir.path().join("over.zip");
    // 2 MiB: over with bytecode (3.0 MiB), within without it (1.9 MiB).
    let out = build(REQUESTS, &zip, &["--max-unzipped-mb", "2"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(!zip.exists(), "nothing is written over the budget");
    for expected in [
        "over its budget of 2.0 MiB (2097152 bytes) (max_unzipped_mb)",
        "largest: ",
        "urllib3 ",
        "Bytecode (",
        "--no-bytecode",
    ] {
        assert!(stderr.contains(expected), "{expected:?} not in {stderr}");
    }
    // Without bytecode the same budget holds it.
    summary(&build(
        REQUESTS,
        &zip,
        &["--max-unzipped-mb", "2", "--no-bytecode"],
    ));
    // 1 MiB: over either way; bytecode is not blamed.
    let out = build(
        REQUESTS,
        &dir.path().join("o.zip"),
        &["--max-unzipped-mb", "1"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(!stderr.contains("Bytecode ("), "{stderr}");
    assert!(stderr.contains("--slim"), "{stderr}");
}

#[test]
fn a_runtime_without_an_interpreter_here_is_named_before_the_install() {
    // python3.11 named for a python3.13 layer: the wrong magic number; the build stops at once.
    let dir = tempfile::tempdir().unwrap();
    let zip = dir.path().join("x.zip");
    let out = builder(
        &[
            "--name",
            "bc",
            "--requirements",
            "six==1.16.0",
            "--runtime",
            "python3.13",
            "--out",
            zip.to_str().unwrap(),
        ],
        &[("LAYERFORGE_PYTHON", RUNTIME)],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for expected in [
        "no Python 3.13 interpreter to compile the layer's bytecode",
        "is 3.11",
        "LAYERFORGE_PYTHON",
        "--no-bytecode",
    ] {
        assert!(stderr.contains(expected), "{expected:?} not in {stderr}");
    }
    assert!(!stderr.contains("running installer"), "{stderr}");
    assert!(!zip.exists());
}

#[test]
fn bytecode_a_package_plants_never_reaches_the_zip() {
    // A stand-in installer writes a module and, beside it, bytecode of other code in the runtime's own tag
    // (unchecked-hash: Python would load it without looking at the source) plus an "other interpreter's" file.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let planted = dir.path().join("planted.pyc");
    let src = dir.path().join("planted.py");
    std::fs::write(&src, "VALUE = 'planted'\n").unwrap();
    let compiled = Command::new(RUNTIME)
        .args([
            "-c",
            "import py_compile, sys; py_compile.compile(sys.argv[1], cfile=sys.argv[2], \
             invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)",
        ])
        .arg(&src)
        .arg(&planted)
        .status()
        .unwrap();
    assert!(compiled.success());
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o644)).unwrap();
    let uv = dir.path().join("uv");
    std::fs::write(
        &uv,
        format!(
            "#!/bin/sh\n\
             [ \"$1\" = --version ] && {{ echo 'uv 0.0.0 (stand-in)'; exit 0; }}\n\
             while [ $# -gt 0 ]; do case \"$1\" in --target) shift; target=\"$1\";; esac; shift; done\n\
             mkdir -p \"$target/evil/__pycache__\"\n\
             echo \"VALUE = 'source'\" > \"$target/evil/__init__.py\"\n\
             cp '{planted}' \"$target/evil/__pycache__/__init__.cpython-311.pyc\"\n\
             echo junk > \"$target/evil/__pycache__/__init__.cpython-39.pyc\"\n",
            planted = planted.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&uv, std::fs::Permissions::from_mode(0o755)).unwrap();

    let zip = dir.path().join("evil.zip");
    let out = builder(
        &[
            "--name",
            "evil",
            "--requirements",
            "evil==1.0",
            "--runtime",
            RUNTIME,
            "--architecture",
            host(),
            "--platform-mode",
            "cross",
            "--installer",
            "uv",
            "--out",
            zip.to_str().unwrap(),
        ],
        &[("LAYERFORGE_UV", uv.to_str().unwrap())],
    );
    summary(&out);
    let entries = names(&zip);
    let pycs: Vec<&String> = entries.iter().filter(|n| n.ends_with(".pyc")).collect();
    assert_eq!(
        pycs,
        [&format!("{SITE}/evil/__pycache__/__init__.cpython-311.pyc")],
        "only the builder's own"
    );
    let unpacked = dir.path().join("layer");
    unpack(&zip, &unpacked);
    let (stdout, _) = import_from(&unpacked.join(SITE), "import evil; print(evil.VALUE)");
    assert_eq!(
        stdout.trim(),
        "source",
        "the bytecode is the source's, not the planted one"
    );
}

#[test]
fn slim_removes_scripts_and_stubs_and_every_distribution_still_imports() {
    let dir = tempfile::tempdir().unwrap();
    let (full, slim) = (dir.path().join("full.zip"), dir.path().join("slim.zip"));
    let set = "httpx==0.27.2|attrs==24.2.0";
    let full_sums = summary(&build(set, &full, &[]));
    let slim_sums = summary(&build(set, &slim, &["--slim"]));
    assert_ne!(full_sums["fingerprint"], slim_sums["fingerprint"]);
    let (full_names, slim_names) = (names(&full), names(&slim));
    assert!(
        full_names
            .iter()
            .any(|n| n.starts_with(&format!("{SITE}/bin/")))
    );
    assert!(full_names.iter().any(|n| n.ends_with(".pyi")));
    assert!(
        !slim_names
            .iter()
            .any(|n| n.starts_with(&format!("{SITE}/bin/")) || n.ends_with(".pyi")),
        "{slim_names:?}"
    );
    let dist_infos = |names: &[String]| -> Vec<String> {
        names
            .iter()
            .filter(|n| n.contains(".dist-info/"))
            .cloned()
            .collect()
    };
    assert_eq!(
        dist_infos(&full_names),
        dist_infos(&slim_names),
        "dist-info stays"
    );
    let line = &slim_sums["slim"];
    assert!(
        line.contains("bin/ (console scripts)") && line.contains("*.pyi (type stubs)"),
        "{line}"
    );
    let saved = full_sums["unzipped_bytes"].parse::<u64>().unwrap()
        - slim_sums["unzipped_bytes"].parse::<u64>().unwrap();
    assert!(saved > 0);
    let unpacked = dir.path().join("layer");
    unpack(&slim, &unpacked);
    let (stdout, _) = import_from(
        &unpacked.join(SITE),
        "import httpx, attrs, attr, importlib.metadata as m; print(m.version('httpx'), m.version('attrs'))",
    );
    assert_eq!(stdout.trim(), "0.27.2 24.2.0");
    eprintln!("FIGURES slim {set}: {line}; {saved} bytes fewer unzipped");
}

/// A stand-in uv that installs two pure packages: `keeper`, whose import needs its own tests folder, and
/// `loose`, whose tests nothing imports; each with a RECORD.
fn two_packages_uv(dir: &Path) -> std::path::PathBuf {
    let uv = dir.join("uv");
    std::fs::write(
        &uv,
        "#!/bin/sh\n\
         [ \"$1\" = --version ] && { echo 'uv 0.0.0 (stand-in)'; exit 0; }\n\
         while [ $# -gt 0 ]; do case \"$1\" in --target) shift; t=\"$1\";; esac; shift; done\n\
         mkdir -p \"$t/keeper/tests\" \"$t/loose/tests\" \"$t/keeper-1.0.dist-info\" \"$t/loose-2.0.dist-info\"\n\
         echo 'from .tests import fixture' > \"$t/keeper/__init__.py\"\n\
         echo '' > \"$t/keeper/tests/__init__.py\"\n\
         echo 'VALUE = 1' > \"$t/keeper/tests/fixture.py\"\n\
         echo 'X = 2' > \"$t/loose/__init__.py\"\n\
         echo 'def test_x(): pass' > \"$t/loose/tests/test_x.py\"\n\
         printf 'keeper/__init__.py,,\\nkeeper/tests/__init__.py,,\\nkeeper/tests/fixture.py,,\\n' > \"$t/keeper-1.0.dist-info/RECORD\"\n\
         printf 'loose/__init__.py,,\\nloose/tests/test_x.py,,\\n' > \"$t/loose-2.0.dist-info/RECORD\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&uv, std::fs::Permissions::from_mode(0o755)).unwrap();
    uv
}

fn slim_build(uv: &Path, zip: &Path, architecture: &str) -> std::process::Output {
    builder(
        &[
            "--name",
            "slim",
            "--requirements",
            "keeper==1.0|loose==2.0",
            "--runtime",
            RUNTIME,
            "--architecture",
            architecture,
            "--platform-mode",
            "cross",
            "--installer",
            "uv",
            "--slim",
            "--out",
            zip.to_str().unwrap(),
        ],
        &[("LAYERFORGE_UV", uv.to_str().unwrap())],
    )
}

#[test]
fn slim_removes_tests_only_where_every_import_still_works() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let uv = two_packages_uv(dir.path());
    let zip = dir.path().join("slim.zip");
    let sums = summary(&slim_build(&uv, &zip, host()));
    let entries = names(&zip);
    assert!(
        !entries.iter().any(|n| n.contains("/loose/tests/")),
        "loose's tests go: {entries:?}"
    );
    assert!(
        entries.contains(&format!("{SITE}/keeper/tests/fixture.py")),
        "keeper's import needs its tests: {entries:?}"
    );
    let line = &sums["slim"];
    assert!(
        line.contains("tests folders (imports verified) (2 files"),
        "{line}"
    );
    assert!(
        line.contains("kept keeper tests: import keeper needs them"),
        "{line}"
    );
    let unpacked = dir.path().join("layer");
    unpack(&zip, &unpacked);
    let (stdout, _) = import_from(
        &unpacked.join(SITE),
        "import keeper, loose; print(keeper.fixture.VALUE, loose.X)",
    );
    assert_eq!(stdout.trim(), "1 2");

    // For another architecture than this host's, nothing can be verified: the tests stay, and the report says why.
    let other = if host() == "x86_64" {
        "arm64"
    } else {
        "x86_64"
    };
    let zip = dir.path().join("other.zip");
    let sums = summary(&slim_build(&uv, &zip, other));
    assert!(names(&zip).iter().any(|n| n.contains("/loose/tests/")));
    assert!(
        sums["slim"]
            .contains("tests folders of keeper, loose: their imports can't be verified here"),
        "{}",
        sums["slim"]
    );
}
