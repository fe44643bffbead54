//! Bytecode that stays valid on Lambda (issue 21, DESIGN section 13).
//!
//! Lambda unpacks a layer under `/opt`, read-only: a module without valid bytecode is compiled on every cold
//! start, and the result thrown away. Timestamp-based bytecode (pip's default) is stale on arrival, because
//! the zip's entries carry a fixed date. So the builder compiles every module to **hash-based** bytecode
//! (PEP 552) with an interpreter of the runtime's own version (the magic number is per X.Y; bytecode does not
//! depend on the architecture, so a cross build's interpreter may be of any platform).
//!
//! The mode is `unchecked-hash`: the interpreter loads the `.pyc` without reading its source again. `/opt` is
//! read-only, so the source can't change under its bytecode, and `checked-hash` would read and hash every
//! source file on every cold start (PEP 552, "the interpreter will ... hash the source file"; `benchmarks` in
//! docs/benchmarks.md measures both). Everything that could vary between two builds is fixed: the file names
//! in the code objects are the paths on Lambda (`/opt/python/lib/pythonX.Y/site-packages/…`, compileall's
//! `stripdir`/`prependdir`), the hash seed is 0 (frozenset constants are marshalled in hash order before
//! Python 3.11), one process compiles every module in a fixed order (see [`SCRIPT`]), and every `__pycache__`
//! the install left (other interpreters', a wheel's own) is removed first, so what the zip holds is exactly what
//! this step wrote ([`super::tree::collect_with`] also keeps a `.pyc` only beside its source).
//!
//! The step runs as the build user, in the install's sandbox, before the tree is taken back: it reads only
//! what the install wrote and runs no package code (compiling is not importing).

use std::{path::Path, process::Command};

use super::{install, isolation::Sandbox, python::Interpreter};
use crate::vocab::Runtime;

/// The invalidation mode of the bytecode the builder writes (see the module's documentation).
pub const INVALIDATION_MODE: &str = "unchecked-hash";

/// The folder Lambda unpacks the layer's site-packages to: the file name bytecode records for each module.
pub fn lambda_site_packages(runtime: Runtime) -> String {
    format!("/opt/{}", install::layout_prefix(runtime))
}

/// `cpython-312` for python3.12: the tag in the names of the runtime's bytecode files.
pub fn cache_tag(runtime: Runtime) -> String {
    format!("cpython-{}", runtime.python_version().replace('.', ""))
}

/// Checks the interpreter's cache tag and that no folder from the tree's root down to site-packages is a link (a
/// swapped folder is refused here as the builder refuses it after taking the tree back), removes every `__pycache__` under the tree (a folder it can't list or
/// remove is an error: a planted `.pyc` can't survive by hiding behind permissions), then compiles every module
/// of it in this one process (from Python 3.12 a module's bytecode can depend on what the same process compiled
/// before it: CPython issue 129724, so a worker pool would make the bytes depend on timing). Prints one line,
/// `layerforge-bytecode removed=N ok=True|False`; a module that doesn't compile (Python 2 syntax, a template
/// named `.py`) gets no bytecode and is named on stdout, which is not a failure: importing it would fail too.
const SCRIPT: &str = r#"
import compileall, os, py_compile, shutil, sys
root, dest, tag, tree = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
if sys.implementation.cache_tag != tag:
    sys.exit(f"this interpreter writes {sys.implementation.cache_tag} bytecode, the runtime needs {tag}")
path = tree
for part in [""] + os.path.relpath(root, tree).split(os.sep):
    path = os.path.join(path, part) if part else path
    if os.path.islink(path):
        sys.exit(f"{path} is a symbolic link: refused (the install tree's folders must be real ones)")
def fail(error):
    raise error
removed = 0
for top, dirs, files in os.walk(root, onerror=fail):
    if "__pycache__" in dirs:
        dirs.remove("__pycache__")
        path = os.path.join(top, "__pycache__")
        if os.path.islink(path):
            os.unlink(path)
        else:
            shutil.rmtree(path)
        removed += 1
ok = compileall.compile_dir(
    root, quiet=1, force=True, workers=1, stripdir=root, prependdir=dest,
    invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
print(f"layerforge-bytecode removed={removed} ok={ok}", flush=True)
"#;

/// The compile command: `interpreter` (the runtime's version) over `target` (site-packages of the tree), in
/// `sandbox`.
pub fn command(
    interpreter: &Interpreter,
    runtime: Runtime,
    tree: &Path,
    target: &Path,
    sandbox: &Sandbox,
) -> Command {
    let mut cmd = Command::new(&interpreter.path);
    sandbox.apply(&mut cmd);
    // `-s -B` and a cwd of `/`: no user site, no bytecode of our own, and nothing the install could have
    // planted (its home, the tree) on sys.path. Not `-I`: it would ignore PYTHONHASHSEED.
    cmd.args(["-s", "-B", "-c", SCRIPT])
        .arg(target)
        .arg(lambda_site_packages(runtime))
        .arg(cache_tag(runtime))
        .arg(tree)
        .current_dir("/");
    for name in [
        "PYTHONPATH",
        "PYTHONHOME",
        "PYTHONSTARTUP",
        "PYTHONUSERBASE",
        "PYTHONINSPECT",
        "PYTHONOPTIMIZE",
        "PYTHONPYCACHEPREFIX",
    ] {
        cmd.env_remove(name);
    }
    cmd.env("PYTHONHASHSEED", "0")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("SOURCE_DATE_EPOCH", "315532800");
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths_are_lambdas() {
        assert_eq!(cache_tag(Runtime::Python312), "cpython-312");
        assert_eq!(cache_tag(Runtime::Python310), "cpython-310");
        assert_eq!(
            lambda_site_packages(Runtime::Python313),
            "/opt/python/lib/python3.13/site-packages"
        );
    }

    #[test]
    fn the_command_fixes_the_hash_seed_and_keeps_the_tree_off_sys_path() {
        let interpreter = Interpreter {
            path: "/usr/bin/python3.12".into(),
            version: "3.12.7".into(),
        };
        let sandbox = Sandbox {
            user: None,
            home: None,
            env: vec![("PYTHONPATH".into(), "/evil".into())],
            wheels_only: false,
        };
        let cmd = command(
            &interpreter,
            Runtime::Python312,
            Path::new("/w/tree"),
            Path::new("/w/tree/python/lib/python3.12/site-packages"),
            &sandbox,
        );
        let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy()).collect();
        assert_eq!(&args[..3], ["-s", "-B", "-c"]);
        assert_eq!(args[4], "/w/tree/python/lib/python3.12/site-packages");
        assert_eq!(args[5], "/opt/python/lib/python3.12/site-packages");
        assert_eq!(args[6], "cpython-312");
        assert_eq!(args[7], "/w/tree");
        assert_eq!(cmd.get_current_dir(), Some(Path::new("/")));
        let envs: Vec<_> = cmd.get_envs().collect();
        assert!(envs.contains(&("PYTHONHASHSEED".as_ref(), Some("0".as_ref()))));
        assert!(
            !envs.iter().any(|(k, v)| *k == "PYTHONPATH" && v.is_some()),
            "{envs:?}"
        );
    }
}
