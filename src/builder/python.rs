//! Finding the Python interpreter a build uses.
//!
//! `LAYERFORGE_PYTHON` (or `--python`) names one interpreter; otherwise `python3.X` for the runtime, then
//! `python3` and `python` are tried on `PATH`. Each candidate is run to ask its version, so a broken shim
//! (pyenv's `python3.12` without that version installed) is skipped rather than trusted.

use std::{
    ffi::OsString,
    fmt,
    path::PathBuf,
    process::{Command, Stdio},
};

use super::isolation::Sandbox;
use crate::request::Runtime;

/// The environment variable that names the interpreter to use.
pub const PYTHON_ENV: &str = "LAYERFORGE_PYTHON";

/// A working interpreter and its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interpreter {
    /// `sys.executable`: an absolute path.
    pub path: PathBuf,
    /// `platform.python_version()`, e.g. `3.12.7`.
    pub version: String,
}

impl Interpreter {
    /// `X.Y` of the version, e.g. `3.12`.
    pub fn major_minor(&self) -> &str {
        major_minor(&self.version)
    }

    /// Whether this interpreter is the runtime's Python.
    pub fn matches(&self, runtime: Runtime) -> bool {
        self.major_minor() == runtime.python_version()
    }
}

fn major_minor(version: &str) -> &str {
    let mut dots = version.match_indices('.');
    match (dots.next(), dots.next()) {
        (Some(_), Some((second, _))) => &version[..second],
        _ => version,
    }
}

/// What one candidate turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub candidate: String,
    pub outcome: Result<Interpreter, String>,
}

/// No usable interpreter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct InterpreterError {
    /// The runtime asked for; `None` when any Python would do (no `--runtime`).
    pub runtime: Option<Runtime>,
    /// Whether the runtime's version was required (native builds) or any Python would do (cross builds).
    pub exact: bool,
    pub probes: Vec<Probe>,
    /// The interpreter was wanted to compile bytecode (any platform, the runtime's version).
    #[doc(hidden)]
    pub for_bytecode: bool,
}

impl fmt::Display for InterpreterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let (true, Some(runtime)) = (self.for_bytecode, self.runtime) {
            write!(
                f,
                "no Python {} interpreter to compile the layer's bytecode",
                runtime.python_version()
            )?;
        } else if let (true, Some(runtime)) = (self.exact, self.runtime) {
            write!(
                f,
                "no Python {} interpreter for a native {} build",
                runtime.python_version(),
                runtime
            )?;
        } else {
            write!(f, "no working Python interpreter")?;
        }
        let tried: Vec<String> = self
            .probes
            .iter()
            .map(|p| match &p.outcome {
                Ok(i) => format!("{} is {}", p.candidate, i.version),
                Err(e) => format!("{}: {e}", p.candidate),
            })
            .collect();
        write!(f, " (tried: {})", tried.join("; "))?;
        match (self.exact, self.runtime) {
            (true, Some(runtime)) if self.for_bytecode => write!(
                f,
                "; bytecode must come from the runtime's own version (its magic number is per X.Y, whatever the \
                 architecture): set {PYTHON_ENV} to a Python {v} interpreter or put python{v} on PATH (for \
                 example `uv python install {v}`; the Lambda build image of {runtime} has it), or build without \
                 bytecode (--no-bytecode, \"bytecode\": false)",
                v = runtime.python_version()
            )?,
            (true, Some(runtime)) => write!(
                f,
                "; run in the Lambda build image of the runtime (public.ecr.aws/sam/build-{runtime}), set \
                 {PYTHON_ENV} to a Python {} interpreter, or use --platform-mode cross",
                runtime.python_version()
            )?,
            (_, None) => write!(f, "; give --runtime, or set {PYTHON_ENV}")?,
            _ => {}
        }
        Ok(())
    }
}

/// Runs `candidate` in `sandbox` (as the user the installer will run as) to learn its version and real path.
pub fn probe(candidate: &OsString, sandbox: &Sandbox) -> Result<Interpreter, String> {
    let mut cmd = Command::new(candidate);
    sandbox.apply(&mut cmd);
    let output = cmd
        .args([
            "-c",
            "import platform, sys; print(platform.python_version()); print(sys.executable)",
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                "not found".to_owned()
            } else {
                e.to_string()
            }
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let first = stderr
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no output");
        return Err(format!("does not run ({}: {first})", output.status));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut lines = stdout.lines();
    match (lines.next(), lines.next()) {
        (Some(version), Some(path)) if version.starts_with('3') && !path.is_empty() => {
            Ok(Interpreter {
                path: PathBuf::from(path),
                version: version.trim().to_owned(),
            })
        }
        _ => Err(format!("unexpected answer {stdout:?}")),
    }
}

/// The candidates, in order: the override alone when given, else `python3.X`, `python3`, `python`.
pub fn candidates(runtime: Runtime, override_path: Option<OsString>) -> Vec<OsString> {
    match override_path.filter(|p| !p.is_empty()) {
        Some(path) => vec![path],
        None => vec![
            OsString::from(runtime.as_str()),
            "python3".into(),
            "python".into(),
        ],
    }
}

/// Picks the interpreter. `exact`: it must be the runtime's version (native builds); otherwise the runtime's
/// version is preferred and any Python 3 accepted (pip only resolves for cross builds, it doesn't run code).
pub fn find(
    runtime: Runtime,
    override_path: Option<OsString>,
    exact: bool,
    sandbox: &Sandbox,
) -> Result<Interpreter, InterpreterError> {
    let mut probes = Vec::new();
    for candidate in candidates(runtime, override_path) {
        let outcome = probe(&candidate, sandbox);
        if let Ok(interpreter) = &outcome
            && interpreter.matches(runtime)
        {
            return Ok(interpreter.clone());
        }
        probes.push(Probe {
            candidate: candidate.to_string_lossy().into_owned(),
            outcome,
        });
    }
    if !exact && let Some(interpreter) = probes.iter().find_map(|p| p.outcome.as_ref().ok()) {
        return Ok(interpreter.clone());
    }
    Err(InterpreterError {
        runtime: Some(runtime),
        exact,
        probes,
        for_bytecode: false,
    })
}

/// The Python found here when no runtime is named: the override alone when given, else `python3`, then
/// `python` (the original tool's usage: build for the interpreter found).
pub fn find_default(
    override_path: Option<OsString>,
    sandbox: &Sandbox,
) -> Result<Interpreter, InterpreterError> {
    let candidates = match override_path.filter(|p| !p.is_empty()) {
        Some(path) => vec![path],
        None => vec!["python3".into(), "python".into()],
    };
    let mut probes = Vec::new();
    for candidate in candidates {
        let outcome = probe(&candidate, sandbox);
        if let Ok(interpreter) = outcome {
            return Ok(interpreter);
        }
        probes.push(Probe {
            candidate: candidate.to_string_lossy().into_owned(),
            outcome,
        });
    }
    Err(InterpreterError {
        runtime: None,
        exact: false,
        probes,
        for_bytecode: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn major_minor_cuts_the_patch_level() {
        assert_eq!(major_minor("3.12.7"), "3.12");
        assert_eq!(major_minor("3.13.0rc1"), "3.13");
        assert_eq!(major_minor("3.9"), "3.9");
    }

    #[test]
    fn candidates_prefer_the_runtime_version() {
        assert_eq!(
            candidates(Runtime::Python312, None),
            vec![
                OsString::from("python3.12"),
                "python3".into(),
                "python".into()
            ]
        );
        assert_eq!(
            candidates(Runtime::Python312, Some("/opt/py".into())),
            vec![OsString::from("/opt/py")]
        );
        assert_eq!(
            candidates(Runtime::Python312, Some("".into())).len(),
            3,
            "empty override is unset"
        );
    }

    #[test]
    fn missing_program_is_reported_not_trusted() {
        let sandbox = Sandbox::from_env().unwrap();
        let err = probe(&OsString::from("/nonexistent/python3.99"), &sandbox).unwrap_err();
        assert_eq!(err, "not found");
        let err = find(
            Runtime::Python312,
            Some("/nonexistent/python3.99".into()),
            true,
            &sandbox,
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("no Python 3.12 interpreter"), "{text}");
        assert!(
            text.contains("/nonexistent/python3.99: not found"),
            "{text}"
        );
        assert!(text.contains("--platform-mode cross"), "{text}");
    }

    #[test]
    fn a_non_python_program_is_refused() {
        // `true` runs and prints nothing: not an interpreter.
        let err = probe(&OsString::from("true"), &Sandbox::from_env().unwrap()).unwrap_err();
        assert!(err.starts_with("unexpected answer"), "{err}");
    }
}
