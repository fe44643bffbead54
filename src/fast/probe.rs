//! The matrix's probe (DESIGN section 15): does one copy of a requirement set serve every runtime and architecture
//! of a matrix? The fast builder answers it synchronously for submit-build, before anything is submitted.
//!
//! For each pair it installs the set with uv in cross mode (wheels only, no package code runs), then compares the
//! trees file by file. The set is universal when every pair installed exactly the same files (so no requirement
//! or dependency has a marker that differs between them, and no pair got a wheel of its own), none of them is an
//! ELF file (native code is of one architecture and one Python ABI), and none is a top-level `.pth` file (which
//! Python reads only in a site directory; a universal version's files are in `python/`, which is not one).
//! Anything else, a failed install included, answers "not universal" with the reason: the matrix then builds one
//! version per pair, which is never wrong.

use std::{
    collections::BTreeMap,
    io::Read,
    path::{Path, PathBuf},
    time::Instant,
};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{
    aws::{AwsFault, FaultKind},
    builder::{
        install::{self, InstallSpec, Installer, PlatformMode},
        isolation::Sandbox,
        python::{self, PYTHON_ENV},
        target::uv_program,
        work::WorkDir,
    },
    request::{Architecture, Requirements, Runtime},
};

/// The payload's format; a probe is told from a build by its `layerforge_probe` field.
pub const PROBE_FORMAT: u32 = 1;

/// What submit-build sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    pub layerforge_probe: u32,
    /// The validated requirement lines, as the build would get them.
    pub requirements: String,
    pub targets: Vec<(Runtime, Architecture)>,
}

/// What the fast builder answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeAnswer {
    pub universal: bool,
    /// Why (or why not): names the pair, the file or the distribution.
    pub reason: String,
    /// How long the installs and the comparison took, in milliseconds.
    pub millis: u64,
}

/// Whether `event` is a probe (not a fast build).
pub fn is_probe(event: &Value) -> bool {
    event.get("layerforge_probe").is_some()
}

/// Runs the probe (in the fast builder). An error is a probe that could not run at all (a bad payload, uv or
/// Python missing, a local I/O error); submit-build then builds per pair.
pub fn run(event: Value) -> Result<ProbeAnswer, String> {
    let started = Instant::now();
    let probe: Probe = serde_json::from_value(event).map_err(|e| format!("probe payload: {e}"))?;
    if probe.layerforge_probe != PROBE_FORMAT {
        return Err(format!(
            "probe format {} (this function reads {PROBE_FORMAT})",
            probe.layerforge_probe
        ));
    }
    let requirements = Requirements::parse(&probe.requirements).map_err(|e| e.to_string())?;
    let sandbox = Sandbox::from_env()?;
    // Any CPython 3 resolves for every target; the same one for all pairs, so that console scripts' shebangs
    // don't differ between them.
    let interpreter =
        python::find_default(std::env::var_os(PYTHON_ENV), &sandbox).map_err(|e| e.to_string())?;
    let work = WorkDir::create().map_err(|e| format!("creating the work folder: {e}"))?;
    let requirements_file = work.path().join("requirements.txt");
    std::fs::write(&requirements_file, requirements.to_text())
        .map_err(|e| format!("writing requirements.txt: {e}"))?;
    let home = work.path().join("home");
    std::fs::create_dir(&home).map_err(|e| format!("creating the installer's home: {e}"))?;
    let mut trees: Vec<Tree> = Vec::new();
    for (i, &(runtime, architecture)) in probe.targets.iter().enumerate() {
        let target = work.path().join(format!("t{i}"));
        std::fs::create_dir(&target).map_err(|e| format!("creating {}: {e}", target.display()))?;
        sandbox
            .hand_over(&[home.as_path(), target.as_path()])
            .map_err(|e| format!("handing {} over: {e}", target.display()))?;
        let spec = InstallSpec {
            installer: Installer::Uv,
            mode: PlatformMode::Cross,
            runtime,
            architecture,
            interpreter: Some(interpreter.clone()),
            uv: uv_program(),
            requirements_file: requirements_file.clone(),
            target: target.clone(),
            sandbox: sandbox.clone().with_home(home.clone()),
        };
        let command = install::command(&spec).map_err(|e| e.to_string())?;
        if let Err(e) = install::run("uv", command, || Ok(())) {
            let last = match &e {
                install::InstallError::Failed { tail, .. } => tail
                    .iter()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .map(|l| l.trim().to_owned())
                    .unwrap_or_default(),
                other => other.to_string(),
            };
            return Ok(answer(
                started,
                false,
                format!("the wheels-only install for {runtime}/{architecture} failed: {last}"),
            ));
        }
        let files =
            digest_tree(&target).map_err(|e| format!("reading {}: {e}", target.display()))?;
        trees.push(((runtime, architecture), files));
    }
    let (universal, reason) = compare(&trees);
    Ok(answer(started, universal, reason))
}

fn answer(started: Instant, universal: bool, reason: String) -> ProbeAnswer {
    ProbeAnswer {
        universal,
        reason,
        millis: started.elapsed().as_millis() as u64,
    }
}

/// One pair's installed tree: path -> digest.
pub type Tree = ((Runtime, Architecture), BTreeMap<String, String>);

/// The verdict over the installed trees (path -> digest, where an ELF file's digest starts with `elf:`).
pub fn compare(trees: &[Tree]) -> (bool, String) {
    let Some(((r0, a0), first)) = trees.first() else {
        return (false, "no targets".to_owned());
    };
    for ((runtime, architecture), files) in &trees[1..] {
        let only = |a: &BTreeMap<String, String>, b: &BTreeMap<String, String>| {
            a.keys().find(|k| !b.contains_key(*k)).cloned()
        };
        let (path, has, lacks) = if let Some(p) = only(files, first) {
            (p, format!("{runtime}/{architecture}"), format!("{r0}/{a0}"))
        } else if let Some(p) = only(first, files) {
            (p, format!("{r0}/{a0}"), format!("{runtime}/{architecture}"))
        } else if let Some(p) = files
            .iter()
            .find(|(k, v)| first.get(*k) != Some(v))
            .map(|(k, _)| k.clone())
        {
            return (
                false,
                format!("{p} differs between {r0}/{a0} and {runtime}/{architecture}"),
            );
        } else {
            continue;
        };
        let top = path.split('/').next().unwrap_or(&path);
        return (
            false,
            format!(
                "{top} is installed for {has} and not for {lacks} (a requirement or dependency whose markers or \
                 wheels differ between them)"
            ),
        );
    }
    if let Some(path) = first
        .iter()
        .find(|(_, d)| d.starts_with("elf:"))
        .map(|(p, _)| p)
    {
        return (false, format!("{path} is an ELF file (native code)"));
    }
    if let Some(path) = first
        .keys()
        .find(|p| !p.contains('/') && p.ends_with(".pth"))
    {
        return (
            false,
            format!("{path} is a .pth file, which Python reads only in a site directory"),
        );
    }
    let pairs: Vec<String> = trees.iter().map(|((r, a), _)| format!("{r}/{a}")).collect();
    (
        true,
        format!(
            "the same {} files for {}, no ELF file, no .pth file",
            first.len(),
            pairs.join(", ")
        ),
    )
}

/// Every file under `root` by relative path: its SHA-256 (prefixed `elf:` for an ELF file), or `link:TARGET`.
/// Links are never followed.
fn digest_tree(root: &Path) -> std::io::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut stack: Vec<PathBuf> = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let path = entry.path();
            let kind = entry.file_type()?;
            let rel = path
                .strip_prefix(root)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_symlink() {
                out.insert(
                    rel,
                    format!("link:{}", std::fs::read_link(&path)?.display()),
                );
            } else {
                let mut file = std::fs::File::open(&path)?;
                let mut hasher = Sha256::new();
                let mut buf = vec![0u8; 64 * 1024];
                let mut head = Vec::new();
                loop {
                    let n = file.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    if head.len() < 4 {
                        head.extend_from_slice(&buf[..n.min(4 - head.len())]);
                    }
                    hasher.update(&buf[..n]);
                }
                let elf = if head == b"\x7fELF" { "elf:" } else { "" };
                out.insert(rel, format!("{elf}{}", hex::encode(hasher.finalize())));
            }
        }
    }
    Ok(out)
}

/// Asks the fast builder, synchronously (`RequestResponse`). A function error is a fault: the caller builds per
/// pair.
pub async fn invoke(
    lambda: &aws_sdk_lambda::Client,
    function: &str,
    probe: &Probe,
) -> Result<ProbeAnswer, AwsFault> {
    let fault = |code: &str, message: String| AwsFault {
        operation: "Invoke",
        kind: FaultKind::Permanent,
        code: code.to_owned(),
        message,
        http_status: None,
    };
    let body =
        serde_json::to_vec(probe).map_err(|e| fault("PayloadNotSerializable", e.to_string()))?;
    let out = lambda
        .invoke()
        .function_name(function)
        .invocation_type(aws_sdk_lambda::types::InvocationType::RequestResponse)
        .payload(aws_smithy_types::Blob::new(body))
        .send()
        .await
        .map_err(|e| AwsFault::from_sdk("Invoke", &e))?;
    let payload = out
        .payload()
        .map(|b| b.as_ref().to_vec())
        .unwrap_or_default();
    if let Some(error) = out.function_error() {
        return Err(fault(
            "FunctionError",
            format!("{error}: {}", String::from_utf8_lossy(&payload)),
        ));
    }
    serde_json::from_slice(&payload).map_err(|e| fault("BadProbeAnswer", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> BTreeMap<String, String> {
        files
            .iter()
            .map(|(p, d)| ((*p).to_owned(), (*d).to_owned()))
            .collect()
    }

    const A: (Runtime, Architecture) = (Runtime::Python311, Architecture::Arm64);
    const B: (Runtime, Architecture) = (Runtime::Python310, Architecture::X86_64);

    #[test]
    fn the_same_pure_files_everywhere_are_universal() {
        let pure = tree(&[("six.py", "aa"), ("six-1.16.0.dist-info/RECORD", "bb")]);
        let (universal, reason) = compare(&[(A, pure.clone()), (B, pure)]);
        assert!(universal, "{reason}");
        assert!(reason.contains("the same 2 files"), "{reason}");
    }

    #[test]
    fn a_dependency_for_one_pair_only_is_named() {
        let base = tree(&[("anyio/__init__.py", "aa")]);
        let mut more = base.clone();
        more.insert("exceptiongroup/__init__.py".into(), "cc".into());
        let (universal, reason) = compare(&[(A, base), (B, more)]);
        assert!(!universal);
        assert_eq!(
            reason,
            "exceptiongroup is installed for python3.10/x86_64 and not for python3.11/arm64 (a requirement or \
             dependency whose markers or wheels differ between them)"
        );
    }

    #[test]
    fn native_code_pth_files_and_different_bytes_are_not_universal() {
        let native = tree(&[("m/_speedups.so", "elf:aa")]);
        let (universal, reason) = compare(&[(A, native.clone()), (B, native)]);
        assert!(!universal);
        assert_eq!(reason, "m/_speedups.so is an ELF file (native code)");

        let pth = tree(&[("distutils-precedence.pth", "aa")]);
        let (universal, reason) = compare(&[(A, pth.clone()), (B, pth)]);
        assert!(!universal && reason.starts_with("distutils-precedence.pth is a .pth file"));

        let (universal, reason) =
            compare(&[(A, tree(&[("m.py", "aa")])), (B, tree(&[("m.py", "bb")]))]);
        assert!(!universal);
        assert_eq!(
            reason,
            "m.py differs between python3.11/arm64 and python3.10/x86_64"
        );
    }

    #[test]
    fn a_real_tree_is_digested_with_elf_files_marked_and_links_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("pkg")).unwrap();
        std::fs::write(dir.path().join("pkg/a.py"), "x = 1\n").unwrap();
        std::fs::write(dir.path().join("pkg/b.so"), b"\x7fELF\x02\x01\x01").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("pkg/l")).unwrap();
        let files = digest_tree(dir.path()).unwrap();
        assert_eq!(files.len(), 3);
        assert!(files["pkg/b.so"].starts_with("elf:"));
        assert!(!files["pkg/a.py"].starts_with("elf:"));
        assert_eq!(files["pkg/l"], "link:/etc/passwd");
    }
}
