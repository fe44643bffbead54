//! The local pipeline's import check (`scripts/import_check.py`, run by `scripts/run-local.sh`) on layers
//! layer-builder really built: distributions whose modules are not named like them, and a foreign architecture.

use std::{path::Path, process::Command};

const BIN: &str = env!("CARGO_BIN_EXE_layer-builder");

fn script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/import_check.py")
}

/// Builds `requirements` for python3.11 on `arch` into `dir/site` (unzipped) and runs the import check there.
fn build_and_check(requirements: &str, arch: &str, dir: &Path) -> (bool, String) {
    let zip = dir.join("layer.zip");
    let built = Command::new(BIN)
        .args([
            "-n",
            "check",
            "-r",
            requirements,
            "--runtime",
            "python3.11",
            "--architecture",
            arch,
        ])
        .args(["--platform-mode", "cross", "--out"])
        .arg(&zip)
        .env_remove("LAYERFORGE_PYTHON")
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let unpacked = dir.join("layer");
    zip::ZipArchive::new(std::fs::File::open(&zip).unwrap())
        .unwrap()
        .extract(&unpacked)
        .unwrap();
    let site = unpacked.join("python/lib/python3.11/site-packages");
    let out = Command::new("python3.11")
        .arg("-I")
        .arg(script())
        .arg(&site)
        .arg(arch)
        .arg("0")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("import check ({requirements}, {arch}):\n{text}");
    (out.status.success(), text)
}

#[test]
fn modules_come_from_the_distributions_not_their_names() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, text) = build_and_check(
        "PyYAML==6.0.2\npython-dateutil==2.9.0.post0\nbeautifulsoup4==4.12.3",
        "x86_64",
        dir.path(),
    );
    assert!(ok, "{text}");
    for (module, dist) in [
        ("yaml", "PyYAML-6.0.2"),
        ("dateutil", "python_dateutil-2.9.0.post0"),
        ("bs4", "beautifulsoup4-4.12.3"),
        ("six", "six-"),
        ("soupsieve", "soupsieve-"),
    ] {
        let line = text
            .lines()
            .find(|l| l.contains(&format!("import {module} ")))
            .unwrap_or_else(|| panic!("{module} not imported: {text}"));
        assert!(line.contains(" ok "), "{line}");
        assert!(line.contains(dist), "{line}");
    }
    assert!(
        !text.contains("import PyYAML") && !text.contains("import beautifulsoup4"),
        "{text}"
    );
}

#[test]
fn a_foreign_architecture_is_reported_not_imported() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, text) = build_and_check("orjson==3.10.7\nsix==1.16.0", "arm64", dir.path());
    assert!(ok, "{text}");
    let orjson = text
        .lines()
        .find(|l| l.contains("orjson"))
        .unwrap_or_default();
    assert!(
        orjson.contains("compiled modules for arm64") && orjson.contains("not imported"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("import six ") && l.contains(" ok ")),
        "pure-Python modules still import: {text}"
    );
}
