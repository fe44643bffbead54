//! Containment (issue 19): the attacks of the issue, done. A stand-in installer (`LAYERFORGE_UV` pointing at a
//! script, run by a root layer-builder as its build user, exactly as an sdist's `setup.py` runs) installs a small
//! legitimate package and then attacks: it leaves processes behind (double fork + `setsid`) that wait for the
//! installer to exit and then swap a listed file for a link to `/proc/self/environ` and plant links where the
//! zip is written; it plants links in the work folder; it swaps the tree's root (or a parent) for a link to a
//! root-only folder; it links a file of the tree to a root-only secret. Each test checks what came out: no
//! secret in any zip or object, the uploaded object is the checked zip, nothing outside written, no survivor.
//!
//! The attack script learns its mode and where to report through `UV_*` variables, which the sandbox passes
//! (they are the operator's uv settings).

use std::{
    io::Read as _,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::PathBuf,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use sha2::{Digest as _, Sha256};

use crate::helpers;

const BIN: &str = env!("CARGO_BIN_EXE_layer-builder");
const SECRET: &str = "s3cr3t-containment-do-not-leak";

/// The stand-in installer. Modes (UV_ATTACK): `leftover` (a double-forked, setsid survivor swaps files and plants
/// links after the installer exits, holding the output pipes open), `plant` (links planted in the work folder and
/// where the zip goes, by the installer itself), `swap-root` / `swap-parent` (site-packages or `python/lib`
/// replaced by a link to UV_ROOT_ONLY), `link-out` (a file linked to UV_ROOT_ONLY/secret).
const ATTACK: &str = r#"#!/usr/bin/python3
import json, os, sys, time

if "--version" in sys.argv:
    print("uv 0.0.0 (containment stand-in)")
    sys.exit(0)

target = sys.argv[sys.argv.index("--target") + 1]
mode = os.environ["UV_ATTACK"]
shared = os.environ["UV_SHARED"]
root_only = os.environ.get("UV_ROOT_ONLY", "")
work = target
while not os.path.basename(work).startswith("layer-builder-"):
    work = os.path.dirname(work)
report = {"mode": mode, "work": work, "target": target, "tried": {},
          "own_session": os.getsid(0) == os.getpid(),
          "no_new_privs": "NoNewPrivs:\t1" in open("/proc/self/status").read(),
          "max_processes": open("/proc/self/limits").read().split("Max processes")[1].split()[0]}

def attempt(name, fn):
    try:
        fn()
        report["tried"][name] = "done"
    except OSError as e:
        report["tried"][name] = type(e).__name__

def save():
    with open(os.path.join(shared, "report-%d.json" % os.getpid()), "w") as f:
        json.dump(report, f)

# A small, legitimate install.
os.makedirs(os.path.join(target, "good"), exist_ok=True)
with open(os.path.join(target, "good", "__init__.py"), "w") as f:
    f.write("VALUE = 1\n")
info = os.path.join(target, "good-1.0.dist-info")
os.makedirs(info, exist_ok=True)
for name, text in [("METADATA", "Metadata-Version: 2.1\nName: good\nVersion: 1.0\n"),
                   ("top_level.txt", "good\n"), ("RECORD", "")]:
    with open(os.path.join(info, name), "w") as f:
        f.write(text)

def plant_everywhere():
    victim = os.path.join(shared, "victim-of-nobody")
    for place in [os.path.join(work, "layer.zip"), os.path.join(work, "out", "layer.zip"),
                  os.path.join(work, "out")]:
        attempt("link " + place, lambda place=place: os.symlink(victim, place))
    attempt("write " + os.path.join(work, "out", "layer.zip"),
            lambda: open(os.path.join(work, "out", "layer.zip"), "wb").write(b"PK forged"))

if mode == "leftover":
    installer = os.getpid()
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            # The survivor: keeps the installer's stdout and stderr open, waits for the installer to exit,
            # then attacks in a loop.
            with open(os.path.join(shared, "survivor.pid"), "w") as f:
                f.write(str(os.getpid()))
            while os.path.exists("/proc/%d" % installer) and open("/proc/%d/stat" % installer).read().split(")")[-1].split()[0] != "Z":
                time.sleep(0.001)
            swaps = 0
            deadline = time.time() + 120
            init = os.path.join(target, "good", "__init__.py")
            while time.time() < deadline:
                try:
                    os.unlink(init)
                    os.symlink("/proc/self/environ", init)
                    swaps += 1
                except OSError:
                    pass
                plant_everywhere()
                with open(os.path.join(shared, "heartbeat"), "a") as f:
                    f.write("%d\n" % swaps)
                time.sleep(0.002)
            os._exit(0)
        os._exit(0)
    os.wait()
    while not os.path.exists(os.path.join(shared, "survivor.pid")):
        time.sleep(0.001)
elif mode == "plant":
    plant_everywhere()
elif mode == "swap-root":
    attempt("swap site-packages", lambda: (os.rename(target, target + ".real"), os.symlink(root_only, target)))
elif mode == "swap-parent":
    lib = os.path.dirname(os.path.dirname(target))
    attempt("swap python/lib", lambda: (os.rename(lib, lib + ".real"), os.symlink(root_only, lib)))
elif mode == "hardlink":
    attempt("hard link", lambda: os.link(os.environ["UV_VICTIM"], os.path.join(target, "good", "data.txt")))
elif mode == "link-out":
    attempt("link out", lambda: os.symlink(os.path.join(root_only, "secret"), os.path.join(target, "good", "data.txt")))
save()
"#;

/// A folder with `mode` (tempfile makes 0700 folders).
fn dir_with_mode(mode: u32) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode)).unwrap();
    dir
}

struct Scene {
    /// The stand-in, readable by everyone.
    _tools: tempfile::TempDir,
    uv: PathBuf,
    /// Where the attacker reports (world-writable, sticky).
    shared: tempfile::TempDir,
    /// Root's secrets: a 0700 folder with `secret` in it.
    root_only: tempfile::TempDir,
    /// A root-owned file outside everything, that nothing may change.
    victim_dir: tempfile::TempDir,
}

impl Scene {
    fn new() -> Self {
        let tools = dir_with_mode(0o755);
        let uv = tools.path().join("uv");
        std::fs::write(&uv, ATTACK).unwrap();
        std::fs::set_permissions(&uv, std::fs::Permissions::from_mode(0o755)).unwrap();
        let shared = dir_with_mode(0o1777);
        std::fs::write(shared.path().join("victim-of-nobody"), "untouched").unwrap();
        let root_only = dir_with_mode(0o700);
        std::fs::write(root_only.path().join("secret"), SECRET).unwrap();
        let victim_dir = dir_with_mode(0o755);
        std::fs::write(victim_dir.path().join("victim"), "root's file").unwrap();
        // Root's, but one the build user may read and write: with fs.protected_hardlinks=1 it may hard-link it.
        let shared_victim = victim_dir.path().join("shared-victim");
        std::fs::write(&shared_victim, SECRET).unwrap();
        std::fs::set_permissions(&shared_victim, std::fs::Permissions::from_mode(0o666)).unwrap();
        Self {
            _tools: tools,
            uv,
            shared,
            root_only,
            victim_dir,
        }
    }

    /// Runs layer-builder as root with the stand-in, failing the test if it doesn't return within two minutes
    /// (a leftover holding the output pipes would keep it waiting).
    fn build(&self, attack: &str, destination: &[&str]) -> Output {
        let host = if cfg!(target_arch = "aarch64") {
            "arm64"
        } else {
            "x86_64"
        };
        let mut cmd = Command::new(BIN);
        cmd.args([
            "-n",
            "contained",
            "-r",
            "good==1.0",
            "--runtime",
            "python3.11",
            "--architecture",
            host,
            "--platform-mode",
            "cross",
            "--installer",
            "uv",
        ])
        .args(destination)
        .env("LAYERFORGE_UV", &self.uv)
        .env("UV_ATTACK", attack)
        .env("UV_SHARED", self.shared.path())
        .env("UV_ROOT_ONLY", self.root_only.path())
        .env("UV_VICTIM", self.victim_dir.path().join("shared-victim"))
        .env("LAYERFORGE_TEST_SECRET", SECRET)
        .env("AWS_ENDPOINT_URL", helpers::endpoint())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_SESSION_TOKEN", SECRET)
        .env("AWS_REGION", helpers::REGION)
        .env_remove("LAYERFORGE_BUILD_USER")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let readers = (
            std::thread::spawn(move || {
                let mut b = Vec::new();
                let _ = out.read_to_end(&mut b);
                b
            }),
            std::thread::spawn(move || {
                let mut b = Vec::new();
                let _ = err.read_to_end(&mut b);
                b
            }),
        );
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > Duration::from_secs(120) {
                let _ = child.kill();
                panic!(
                    "{attack}: layer-builder did not return in 120 s (a leftover kept it waiting)"
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let output = Output {
            status,
            stdout: readers.0.join().unwrap(),
            stderr: readers.1.join().unwrap(),
        };
        eprintln!(
            "layer-builder ({attack}) -> {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .rev()
                .take(8)
                .collect::<Vec<_>>()
                .join("\n")
        );
        output
    }

    /// What the stand-in and its survivors reported.
    fn reports(&self) -> Vec<serde_json::Value> {
        std::fs::read_dir(self.shared.path())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("report-"))
            .map(|e| serde_json::from_str(&std::fs::read_to_string(e.path()).unwrap()).unwrap())
            .collect()
    }

    /// Nothing outside the build changed: root's victim and the attacker's own link target.
    fn assert_nothing_outside_written(&self) {
        assert_eq!(
            std::fs::read_to_string(self.victim_dir.path().join("victim")).unwrap(),
            "root's file"
        );
        assert_eq!(
            std::fs::read_to_string(self.shared.path().join("victim-of-nobody")).unwrap(),
            "untouched",
            "root wrote through a link the build user planted"
        );
    }
}

/// Every entry of a zip, inflated.
fn entries(zip: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip)).unwrap();
    (0..archive.len())
        .map(|i| {
            let mut entry = archive.by_index(i).unwrap();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            (entry.name().to_owned(), data)
        })
        .collect()
}

fn assert_no_secret(what: &str, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    assert!(!text.contains(SECRET), "{what}: a secret leaked");
    assert!(
        !text.contains("AWS_SESSION_TOKEN") && !text.contains("LAYERFORGE_TEST_SECRET"),
        "{what}: an environment leaked"
    );
}

fn process_alive(pid: i32) -> bool {
    // A zombie is dead: only its entry is left until its parent reaps it.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next())
            != Some("Z")
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leftover_process_and_planted_links_change_nothing_that_is_uploaded() {
    let sdk = helpers::sdk().await;
    let s3 = layerforge::aws::s3_client(&sdk);
    let bucket = helpers::bucket(&sdk, "lf-contain").await;
    let key = "layers/contained/python3.11-x86_64/0123456789abcdef.zip";
    for attack in ["leftover", "plant"] {
        let scene = Scene::new();
        let output = tokio::task::block_in_place(|| {
            scene.build(attack, &["--bucket", &bucket, "--key", key])
        });
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();

        // No survivor: the leftover is dead once layer-builder has returned.
        if attack == "leftover" {
            let pid: i32 = std::fs::read_to_string(scene.shared.path().join("survivor.pid"))
                .expect("the survivor started")
                .trim()
                .parse()
                .unwrap();
            assert!(
                !process_alive(pid),
                "{attack}: pid {pid} survived the build"
            );
            let beats =
                std::fs::read_to_string(scene.shared.path().join("heartbeat")).unwrap_or_default();
            std::thread::sleep(Duration::from_millis(300));
            let later =
                std::fs::read_to_string(scene.shared.path().join("heartbeat")).unwrap_or_default();
            assert_eq!(
                beats, later,
                "{attack}: something still writes after the build"
            );
            eprintln!(
                "FIGURES containment leftover: survivor pid {pid} dead; it attacked {} time(s) before it was killed",
                beats.lines().count()
            );
        }
        scene.assert_nothing_outside_written();
        // Every plant in root's folders was refused; the installer ran in its own session (no terminal of
        // root's to push input into), with no_new_privs (a setuid program gains nothing) and a process cap.
        for report in scene.reports() {
            assert_eq!(report["own_session"], true, "{report}");
            assert_eq!(report["no_new_privs"], true, "{report}");
            assert_eq!(report["max_processes"], "4096", "{report}");
            for (what, result) in report["tried"].as_object().unwrap() {
                assert_ne!(result, "done", "{attack}: the build user could {what}");
            }
        }

        if !output.status.success() {
            // The only acceptable failure: the survivor swapped a file before it was killed, and the link it left
            // was refused, never followed.
            assert_eq!(attack, "leftover", "{stderr}");
            assert!(stderr.contains("symbolic link"), "{stderr}");
            continue;
        }
        // The object in S3 is the zip that was checked: its bytes' SHA-256 is what the summary and the metadata
        // say, and it holds exactly the legitimate install.
        let object = s3
            .get_object()
            .bucket(&bucket)
            .key(key)
            .send()
            .await
            .unwrap();
        let metadata = object.metadata().cloned().unwrap_or_default();
        let bytes = object.body.collect().await.unwrap().into_bytes().to_vec();
        let sha = base64_sha256(&bytes);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            stdout.contains(&format!("content_sha256: {sha}")),
            "{attack}: {stdout}"
        );
        assert_eq!(
            metadata.get("content-sha256").map(String::as_str),
            Some(sha.as_str()),
            "{attack}"
        );
        assert_no_secret(attack, &bytes);
        let files = entries(&bytes);
        for (name, data) in &files {
            assert_no_secret(name, data);
        }
        let init = files
            .iter()
            .find(|(n, _)| n.ends_with("site-packages/good/__init__.py"))
            .expect("the legitimate module is in the zip");
        assert_eq!(init.1, b"VALUE = 1\n", "{attack}");
        // The package's four files and the builder's own bytecode of its module.
        assert!(
            files
                .iter()
                .any(|(n, _)| n.ends_with("good/__pycache__/__init__.cpython-311.pyc")),
            "{attack}"
        );
        assert_eq!(
            files.len(),
            5,
            "{attack}: {:?}",
            files.iter().map(|f| &f.0).collect::<Vec<_>>()
        );
    }
}

fn base64_sha256(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(bytes))
}

#[test]
fn a_swapped_tree_root_or_parent_and_a_link_out_are_refused_and_nothing_leaks() {
    for (attack, names) in [
        ("swap-root", "site-packages"),
        ("swap-parent", "python/lib"),
        ("link-out", "data.txt"),
    ] {
        let scene = Scene::new();
        let out_dir = tempfile::tempdir().unwrap();
        let zip = out_dir.path().join("layer.zip");
        let output = scene.build(attack, &["--out", zip.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let reports = scene.reports();
        assert_eq!(reports.len(), 1, "{attack}: the stand-in ran");
        assert!(
            reports[0]["tried"]
                .as_object()
                .unwrap()
                .values()
                .all(|v| v == "done"),
            "{attack}: the attack itself must have worked: {}",
            reports[0]
        );
        assert!(!output.status.success(), "{attack}: built anyway");
        assert!(
            stderr.contains("symbolic link") && stderr.contains(names.rsplit('/').next().unwrap()),
            "{attack}: the error names the link: {stderr}"
        );
        assert!(!zip.exists(), "{attack}: a zip was written");
        assert_no_secret(attack, &output.stdout);
        assert_no_secret(attack, &output.stderr);
        scene.assert_nothing_outside_written();
        // Root's secret folder is still root's alone.
        let meta = std::fs::metadata(scene.root_only.path()).unwrap();
        assert_eq!((meta.uid(), meta.mode() & 0o777), (0, 0o700), "{attack}");
    }
}

/// Issue 19 item 6: a uv only root can reach fails before the install, naming the path, the user and the fix.
#[test]
fn an_installer_the_build_user_cannot_run_is_named_before_the_install() {
    let scene = Scene::new();
    let hidden = dir_with_mode(0o700);
    let uv = hidden.path().join("uv");
    std::fs::copy(&scene.uv, &uv).unwrap();
    std::fs::set_permissions(&uv, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let zip = out_dir.path().join("layer.zip");
    let mut cmd = Command::new(BIN);
    let output = cmd
        .args([
            "-n",
            "hidden",
            "-r",
            "good==1.0",
            "--runtime",
            "python3.11",
            "--platform-mode",
            "cross",
            "--installer",
            "uv",
            "--out",
        ])
        .arg(&zip)
        .env("LAYERFORGE_UV", &uv)
        .env("UV_ATTACK", "plant")
        .env("UV_SHARED", scene.shared.path())
        .env_remove("LAYERFORGE_BUILD_USER")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    for part in [uv.to_str().unwrap(), "65534:65534", "LAYERFORGE_UV", "o+x"] {
        assert!(stderr.contains(part), "{part} missing: {stderr}");
    }
    assert!(
        scene.reports().is_empty(),
        "the installer must not have run"
    );
    assert!(!zip.exists());

    // The local cloud's answer for a checkout under a root-only home: a staged copy the build user can run.
    let staged = layerforge::builder::isolation::stage_for_build_user(&uv).unwrap();
    for dir in staged.ancestors().skip(1) {
        let meta = std::fs::metadata(dir).unwrap();
        assert!(
            meta.mode() & 0o001 != 0,
            "{} can't be passed",
            dir.display()
        );
    }
    let meta = std::fs::symlink_metadata(&staged).unwrap();
    assert_eq!(
        (meta.uid(), meta.mode() & 0o022),
        (0, 0),
        "root's, and only root writes it"
    );
    assert_eq!(
        layerforge::builder::isolation::stage_for_build_user(&uv).unwrap(),
        staged,
        "staging again reuses the same copy"
    );
    let sandbox = layerforge::builder::isolation::Sandbox::from_env().unwrap();
    layerforge::builder::isolation::probe_program(staged.as_os_str(), &sandbox).unwrap();
}

/// Issue 19 review: a hard link planted in the tree to a file from outside (root's, world-writable). Taking the
/// tree back must not change that file (owner, mode) nor zip its content: the build is refused, naming it.
#[test]
fn a_hard_link_to_a_file_from_outside_is_refused_and_the_file_left_alone() {
    let scene = Scene::new();
    let out_dir = tempfile::tempdir().unwrap();
    let zip = out_dir.path().join("layer.zip");
    let output = scene.build("hardlink", &["--out", zip.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let reports = scene.reports();
    assert_eq!(
        reports[0]["tried"]["hard link"], "done",
        "the attack itself must have worked: {}",
        reports[0]
    );
    assert!(!output.status.success(), "built anyway: {stderr}");
    assert!(
        stderr.contains("data.txt") && stderr.contains("not to the build user"),
        "the error names the file: {stderr}"
    );
    assert!(!zip.exists(), "a zip was written");
    assert_no_secret("hardlink", &output.stdout);
    let victim = scene.victim_dir.path().join("shared-victim");
    let meta = std::fs::metadata(&victim).unwrap();
    assert_eq!(
        (meta.uid(), meta.mode() & 0o777),
        (0, 0o666),
        "the file outside the tree was changed"
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), SECRET);
}

/// The output path of a local build (`--out`) planted as a link to a root-owned file: root never writes through
/// it; the zip replaces the link.
#[test]
fn a_link_planted_at_the_output_path_is_replaced_not_written_through() {
    let scene = Scene::new();
    let out_dir = dir_with_mode(0o1777);
    let zip = out_dir.path().join("layer.zip");
    let victim = scene.victim_dir.path().join("victim");
    std::os::unix::fs::symlink(&victim, &zip).unwrap();
    let output = scene.build("plant", &["--out", zip.to_str().unwrap()]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    scene.assert_nothing_outside_written();
    let meta = std::fs::symlink_metadata(&zip).unwrap();
    assert!(meta.is_file(), "the link was replaced by the zip");
    let files = entries(&std::fs::read(&zip).unwrap());
    assert!(files.iter().any(|(n, _)| n.ends_with("good/__init__.py")));
    let leftovers: Vec<_> = std::fs::read_dir(out_dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "no partial file left: {leftovers:?}");
}
