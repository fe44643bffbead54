//! `slim`'s riskier part (DESIGN section 13, issue 21 item 4): a distribution's test folders (`pkg/tests/`,
//! `pkg/sub/tests/`; never `test/`, which is a runtime API in some packages, Django's `django.test`) leave the
//! zip only where the runtime's interpreter verifies that every top-level module of
//! every distribution still imports without them; a distribution whose import needs its tests keeps them.
//!
//! The check imports the layer's modules, so it runs package code: as the build user, in the install's
//! sandbox, over the tree taken back (root's, so nothing can be changed through it), with a deadline, and only
//! when asked (`slim`), never in a wheels-only deployment (which promises that no package code runs). A check
//! that can't finish (a deadline, a crash, something left running) fails the build rather than make the zip
//! depend on timing. It needs an interpreter of the runtime's version on a host of the layer's architecture
//! (a native library loads only there); elsewhere the tests are kept, and the report says why. Hiding instead
//! of deleting: a finder placed first on `sys.meta_path` refuses any module under a hidden folder, so the check
//! sees the tree as the zip will hold it, and the tree stays as it is.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read as _, Write as _},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde::Deserialize;
use tracing::{info, warn};

use super::{contain, isolation::Sandbox, python::Interpreter, tree::Collected};
use crate::size::SlimItem;

/// The slim kind of test folders, as the report names it.
pub const SLIM_TESTS: &str = "tests folders (imports verified)";
/// The longest the import check may take; past it the tests are kept.
pub const CHECK_DEADLINE: Duration = Duration::from_secs(300);
/// Folder names taken for test folders (below a distribution's top-level package, never at the top).
const TEST_DIRS: [&str; 1] = ["tests"];

/// Imports each module of `modules` with the folders of `hidden` refused; prints a JSON object of the modules
/// that failed (`{"name": "ExceptionType: message"}`).
const SCRIPT: &str = r#"
import importlib, importlib.machinery, json, sys
data = json.load(sys.stdin)
sys.path.insert(0, data["site"])
hidden = tuple(h.rstrip("/") + "/" for h in data["hidden"])
class Hide:
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        if spec is not None and hidden:
            for loc in [spec.origin or ""] + list(spec.submodule_search_locations or []):
                if loc and (loc + "/").startswith(hidden):
                    raise ModuleNotFoundError(f"{name} is in a removed folder", name=name)
        return None
    @classmethod
    def invalidate_caches(cls):
        pass
if hidden:
    sys.meta_path.insert(0, Hide)
failed = {}
for module in data["modules"]:
    try:
        importlib.import_module(module)
    except BaseException as e:
        failed[module] = f"{type(e).__name__}: {e}"[:300]
sys.stdout.write("layerforge-imports " + json.dumps(failed) + "\n")
"#;

/// One distribution's test folders and top-level modules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub distribution: String,
    /// Folders relative to site-packages, `pkg/tests`.
    pub dirs: Vec<String>,
}

/// What the check decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// Folders (relative to site-packages) left out of the zip.
    pub removed: Vec<String>,
    /// Why each kept distribution's tests stay.
    pub kept: Vec<String>,
}

/// The test folders of each distribution (by the `RECORD`s of `collected`, whose names start with `prefix/`),
/// and every distribution's top-level modules.
pub fn candidates(
    collected: &Collected,
    prefix: &str,
    records: &BTreeMap<String, Vec<String>>,
) -> (Vec<Candidate>, Vec<String>) {
    let prefix = format!("{}/", prefix.trim_end_matches('/'));
    // A package is owned by the distribution whose RECORD has its __init__.py: a namespace package (no
    // __init__.py, shared by several distributions) is nobody's, and its folders are never candidates.
    let mut owner: BTreeMap<String, &str> = BTreeMap::new();
    let mut modules = BTreeSet::new();
    for (dist, paths) in records {
        for path in paths {
            if let Some(module) = top_module(path, paths) {
                if path.ends_with("/__init__.py") {
                    owner.entry(module.clone()).or_insert(dist);
                }
                modules.insert(module);
            }
        }
    }
    let mut dirs: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for file in &collected.files {
        let Some(relative) = file.name.strip_prefix(&prefix) else {
            continue;
        };
        let parts: Vec<&str> = relative.split('/').collect();
        // A test folder below a top-level package: parts[i] for i >= 1, with a file under it.
        if let Some(i) = (1..parts.len().saturating_sub(1)).find(|&i| TEST_DIRS.contains(&parts[i]))
            && let Some(dist) = owner.get(parts[0]).copied()
        {
            dirs.entry(dist).or_default().insert(parts[..=i].join("/"));
        }
    }
    let candidates = dirs
        .into_iter()
        .map(|(dist, dirs)| Candidate {
            distribution: dist.to_owned(),
            // A folder inside another one that is already listed goes with it.
            dirs: dirs
                .iter()
                .filter(|d| {
                    !dirs
                        .iter()
                        .any(|o| o != *d && d.starts_with(&format!("{o}/")))
                })
                .cloned()
                .collect(),
        })
        .collect();
    (candidates, modules.into_iter().collect())
}

/// The importable top-level name of a `RECORD` path, if it is one: `pkg/__init__.py` -> `pkg`, `mod.py` ->
/// `mod`, `_ext.cpython-312-x86_64-linux-gnu.so` -> `_ext`.
fn top_module(path: &str, all: &[String]) -> Option<String> {
    let identifier = |s: &str| {
        !s.is_empty()
            && !s.starts_with(|c: char| c.is_ascii_digit())
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    match path.split_once('/') {
        Some((top, "__init__.py")) if identifier(top) => Some(top.to_owned()),
        Some((top, _))
            if identifier(top) && all.iter().any(|p| p == &format!("{top}/__init__.py")) =>
        {
            None // named once, by its __init__.py
        }
        Some(_) => None,
        None => {
            let stem = path.strip_suffix(".py").or_else(|| {
                path.ends_with(".so")
                    .then(|| path.split('.').next().unwrap_or_default())
            })?;
            identifier(stem).then(|| stem.to_owned())
        }
    }
}

/// Decides which test folders leave: imports every module with all of them hidden, keeps the tests of each
/// distribution whose module then fails (but imports with nothing hidden), and checks again until nothing
/// more fails. Any failure of the check itself keeps every test folder.
pub fn decide(
    interpreter: &Interpreter,
    site: &Path,
    candidates: &[Candidate],
    modules: &[String],
    sandbox: &Sandbox,
) -> Result<Decision, String> {
    if candidates.is_empty() {
        return Ok(Decision::default());
    }
    let keep_all = |why: String| Decision {
        removed: Vec::new(),
        kept: vec![format!("every tests folder: {why}")],
    };
    let started = Instant::now();
    let baseline = check(interpreter, site, &[], modules, sandbox, started)?;
    // A module that fails with everything in place can't vouch for its distribution's tests: they stay.
    let mut kept: BTreeMap<String, String> = BTreeMap::new();
    for (module, error) in &baseline {
        for c in candidates.iter().filter(|c| {
            c.dirs
                .iter()
                .any(|d| d.split('/').next() == Some(module.as_str()))
        }) {
            kept.insert(
                c.distribution.clone(),
                format!("import {module} fails even with them ({error}), so it can't be verified"),
            );
        }
    }
    for _ in 0..candidates.len() + 1 {
        let hidden: Vec<String> = candidates
            .iter()
            .filter(|c| !kept.contains_key(&c.distribution))
            .flat_map(|c| c.dirs.iter().map(|d| site.join(d).display().to_string()))
            .collect();
        if hidden.is_empty() {
            break;
        }
        let failed = check(interpreter, site, &hidden, modules, sandbox, started)?;
        let new: Vec<(&String, &String)> = failed
            .iter()
            .filter(|(m, _)| !baseline.contains_key(*m))
            .collect();
        if new.is_empty() {
            break;
        }
        let mut blamed = false;
        for (module, error) in new {
            // The distribution whose test folders lie in the failing module's package.
            let owners: Vec<&Candidate> = candidates
                .iter()
                .filter(|c| {
                    !kept.contains_key(&c.distribution)
                        && c.dirs
                            .iter()
                            .any(|d| d.split('/').next() == Some(module.as_str()))
                })
                .collect();
            for c in owners {
                kept.insert(
                    c.distribution.clone(),
                    format!("import {module} needs them ({error})"),
                );
                blamed = true;
            }
        }
        if !blamed {
            return Ok(keep_all(
                "an import failed without them and no distribution could be named".into(),
            ));
        }
    }
    let removed = candidates
        .iter()
        .filter(|c| !kept.contains_key(&c.distribution))
        .flat_map(|c| c.dirs.clone())
        .collect();
    info!(
        seconds = started.elapsed().as_secs_f64(),
        kept = kept.len(),
        "slim: imports verified"
    );
    Ok(Decision {
        removed,
        kept: kept
            .into_iter()
            .map(|(dist, why)| format!("{dist} tests: {why}"))
            .collect(),
    })
}

#[derive(Deserialize)]
struct Failures(BTreeMap<String, String>);

/// One run of the import check; `Err` when it could not run or give an answer in time.
fn check(
    interpreter: &Interpreter,
    site: &Path,
    hidden: &[String],
    modules: &[String],
    sandbox: &Sandbox,
    started: Instant,
) -> Result<BTreeMap<String, String>, String> {
    let mut cmd = Command::new(&interpreter.path);
    sandbox.apply(&mut cmd);
    cmd.args(["-I", "-B", "-c", SCRIPT])
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("the import check could not start: {e}"))?;
    let input = serde_json::json!({"site": site, "hidden": hidden, "modules": modules});
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input.to_string().as_bytes());
    }
    let mut stdout = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(out) = stdout.as_mut() {
            let _ = out.take(16 * 1024 * 1024).read_to_string(&mut text);
        }
        text
    });
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if started.elapsed() > CHECK_DEADLINE => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(_) => break None,
        }
    };
    // Whatever the imports started is ended, as after the install.
    if let Err(e) = contain::end_leftovers() {
        warn!(error = %e, "slim: ending what the import check left");
        return Err(format!(
            "what the import check left could not be ended: {e}"
        ));
    }
    let text = reader.join().unwrap_or_default();
    let Some(status) = status else {
        return Err(format!(
            "the import check took more than {} s",
            CHECK_DEADLINE.as_secs()
        ));
    };
    let line = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("layerforge-imports "))
        .ok_or_else(|| format!("the import check gave no answer ({status})"))?;
    serde_json::from_str::<Failures>(line)
        .map(|f| f.0)
        .map_err(|e| format!("the import check's answer is unreadable: {e}"))
}

/// Leaves the removed folders out of `collected`; returns what that saved.
pub fn apply(collected: &mut Collected, prefix: &str, removed: &[String]) -> Option<SlimItem> {
    if removed.is_empty() {
        return None;
    }
    let prefix = prefix.trim_end_matches('/');
    let dirs: Vec<String> = removed.iter().map(|d| format!("{prefix}/{d}/")).collect();
    let (mut files, mut bytes) = (0usize, 0u64);
    collected.files.retain(|f| {
        let gone = dirs.iter().any(|d| f.name.starts_with(d.as_str()));
        if gone {
            files += 1;
            let len = f.expect.map_or(0, |id| id.len);
            bytes += len;
            collected.unzipped_bytes -= len;
        }
        !gone
    });
    Some(SlimItem {
        what: SLIM_TESTS.to_owned(),
        files,
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::archive::ZipSource;

    fn collected(names: &[&str]) -> Collected {
        Collected {
            files: names
                .iter()
                .map(|n| ZipSource {
                    name: format!("p/{n}"),
                    path: n.into(),
                    executable: false,
                    expect: Some(contain::FileId {
                        dev: 0,
                        ino: 0,
                        len: 10,
                        ctime: (0, 0),
                    }),
                })
                .collect(),
            unzipped_bytes: 10 * names.len() as u64,
            skipped: 0,
            slimmed: Vec::new(),
        }
    }

    #[test]
    fn test_folders_below_packages_are_found_by_distribution_with_the_top_level_modules() {
        let c = collected(&[
            "numpy/__init__.py",
            "numpy/tests/test_a.py",
            "numpy/core/tests/test_b.py",
            "numpy/core/tests/data/x.npy",
            "numpy/testing/test/helpers.py",
            "google/cloud/tests/test_ns.py",
            "tests/top_level_is_not_a_package_test.py",
            "six.py",
            "_cffi_backend.cpython-312-x86_64-linux-gnu.so",
        ]);
        let records: BTreeMap<String, Vec<String>> = [
            (
                "numpy".to_owned(),
                vec![
                    "numpy/__init__.py".to_owned(),
                    "numpy/tests/test_a.py".to_owned(),
                    "numpy-2.1.3.dist-info/RECORD".to_owned(),
                ],
            ),
            ("six".to_owned(), vec!["six.py".to_owned()]),
            (
                "google-cloud-x".to_owned(),
                vec!["google/cloud/tests/test_ns.py".to_owned()],
            ),
            (
                "cffi".to_owned(),
                vec!["_cffi_backend.cpython-312-x86_64-linux-gnu.so".to_owned()],
            ),
        ]
        .into();
        let (candidates, modules) = candidates(&c, "p", &records);
        assert_eq!(
            candidates,
            [Candidate {
                distribution: "numpy".into(),
                dirs: vec!["numpy/core/tests".into(), "numpy/tests".into()],
            }]
        );
        assert_eq!(modules, ["_cffi_backend", "numpy", "six"]);
    }

    #[test]
    fn removed_folders_leave_the_zip_with_their_bytes_counted() {
        let mut c = collected(&[
            "numpy/__init__.py",
            "numpy/tests/test_a.py",
            "numpy/tests/__pycache__/test_a.cpython-312.pyc",
            "numpy/testsuite.py",
        ]);
        let item = apply(&mut c, "p", &["numpy/tests".into()]).unwrap();
        assert_eq!((item.files, item.bytes), (2, 20));
        let names: Vec<&str> = c.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["p/numpy/__init__.py", "p/numpy/testsuite.py"]);
        assert_eq!(c.unzipped_bytes, 20);
        assert!(apply(&mut c, "p", &[]).is_none());
    }
}
