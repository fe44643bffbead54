//! Install isolation (issue 11, DESIGN section 4), proven with a real source build: a local sdist whose
//! `setup.py` records what it can see (its environment, its uid, and the environment of every ancestor process it
//! can read, `/proc/1/environ` first) while layer-builder runs with AWS credentials and a container credential URI
//! in its own environment. Served to the installer through `UV_FIND_LINKS` / `PIP_FIND_LINKS` (operator
//! settings, which pass the allowlist); its build backend (setuptools) comes from the package index.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output},
};

const BIN: &str = env!("CARGO_BIN_EXE_layer-builder");
const SECRET: &str = "s3cr3t-do-not-leak";
const CREDENTIALS_URI: &str = "/v2/credentials/0f1e2d3c-do-not-leak";

/// A folder everyone can read, or also write (tempfile makes 0700 folders; the build user must read the sdist
/// and write its report).
fn shared_dir(mode: u32) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode)).unwrap();
    dir
}

/// Writes `probe_pkg-0.1.tar.gz` into `links`; its setup.py writes its findings to `report`.
fn make_sdist(links: &Path, report: &Path) {
    let setup = format!(
        r#"import json, os
from setuptools import setup

def environ_of(pid):
    try:
        with open(f"/proc/{{pid}}/environ", "rb") as f:
            return f.read().decode(errors="replace")
    except OSError as e:
        return type(e).__name__

ancestors = {{}}
pid = os.getpid()
while pid > 1:
    with open(f"/proc/{{pid}}/stat") as f:
        pid = int(f.read().rsplit(")", 1)[1].split()[1])
    ancestors[str(pid)] = environ_of(pid)
report = {{"uid": os.getuid(), "env": dict(os.environ), "proc1": environ_of(1), "ancestors": ancestors}}
with open({report:?}, "w") as f:
    json.dump(report, f)
os.chmod({report:?}, 0o644)
setup(name="probe-pkg", version="0.1", py_modules=["probe_pkg"])
"#,
        report = report.to_str().unwrap()
    );
    let script = r#"
import io, sys, tarfile
out, setup = sys.argv[1], sys.stdin.read()
files = {
    "probe_pkg-0.1/setup.py": setup,
    "probe_pkg-0.1/probe_pkg.py": "VALUE = 1\n",
    "probe_pkg-0.1/PKG-INFO": "Metadata-Version: 2.1\nName: probe-pkg\nVersion: 0.1\n",
    "probe_pkg-0.1/pyproject.toml": '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n',
}
with tarfile.open(out, "w:gz") as tar:
    for name, text in files.items():
        data = text.encode()
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(data))
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .arg(links.join("probe_pkg-0.1.tar.gz"))
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(setup.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "making the sdist");
}

fn build(installer: &str, links: &Path, out: &Path, extra_env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args([
        "-n",
        "probe",
        "-r",
        "probe-pkg==0.1",
        "--runtime",
        "python3.11",
        "--platform-mode",
        "native",
        "--installer",
        installer,
        "--out",
    ])
    .arg(out)
    .env("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    .env("AWS_SECRET_ACCESS_KEY", SECRET)
    .env("AWS_SESSION_TOKEN", SECRET)
    .env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", CREDENTIALS_URI)
    .env(
        "ECS_CONTAINER_METADATA_URI_V4",
        "http://169.254.170.2/v4/do-not-leak",
    )
    .env("UV_FIND_LINKS", links)
    .env("PIP_FIND_LINKS", links)
    .env_remove("LAYERFORGE_PYTHON")
    .env_remove("LAYERFORGE_BUILD_USER");
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let output = cmd.output().unwrap();
    eprintln!(
        "layer-builder ({installer}) -> {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
            .lines()
            .rev()
            .take(12)
            .collect::<Vec<_>>()
            .join("\n")
    );
    output
}

#[test]
fn a_source_build_sees_no_credentials_and_runs_unprivileged() {
    for installer in ["uv", "pip"] {
        let links = shared_dir(0o755);
        let reports = shared_dir(0o1777);
        let report: PathBuf = reports.path().join("report.json");
        make_sdist(links.path(), &report);
        let out = tempfile::tempdir().unwrap();
        let zip = out.path().join("probe.zip");
        let output = build(installer, links.path(), &zip, &[]);
        assert!(
            output.status.success(),
            "{installer}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = std::fs::read_to_string(&report)
            .unwrap_or_else(|e| panic!("{installer}: setup.py ran and reported: {e}"));
        let report: serde_json::Value = serde_json::from_str(&text).unwrap();

        // Nothing credential-like in its environment.
        let env = report["env"].as_object().unwrap();
        let leaked: Vec<&String> = env
            .keys()
            .filter(|k| k.starts_with("AWS_") || k.starts_with("ECS_"))
            .collect();
        assert!(leaked.is_empty(), "{installer}: {leaked:?}");
        assert!(
            !text.contains(SECRET) && !text.contains("do-not-leak"),
            "{installer}: a secret reached the build backend: {text}"
        );
        // Not root, and no ancestor's environment (layer-builder's holds the secrets) is readable.
        assert_ne!(
            report["uid"], 0,
            "{installer}: the build backend ran as root"
        );
        assert_eq!(report["proc1"], "PermissionError", "{installer}");
        let ancestors = report["ancestors"].as_object().unwrap();
        assert!(!ancestors.is_empty());
        // Its HOME is the work folder's, not root's.
        let home = env.get("HOME").and_then(|h| h.as_str()).unwrap_or("");
        assert!(home.contains("layer-builder-"), "{installer}: HOME={home}");
        eprintln!(
            "FIGURES isolation {installer}: uid {}, {} variables, {} ancestors, none readable with a secret",
            report["uid"],
            env.len(),
            ancestors.len()
        );
    }
}

#[test]
fn wheels_only_refuses_a_source_build_naming_the_package() {
    let links = shared_dir(0o755);
    let reports = shared_dir(0o1777);
    let report = reports.path().join("report.json");
    make_sdist(links.path(), &report);
    let out = tempfile::tempdir().unwrap();
    let zip = out.path().join("probe.zip");
    let output = build("uv", links.path(), &zip, &[("LAYERFORGE_WHEELS_ONLY", "1")]);
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("probe-pkg"), "{stderr}");
    assert!(!report.exists(), "setup.py must not have run");
    assert!(!zip.exists());
}
