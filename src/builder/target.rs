//! What a build targets: the runtime, the platform mode and the interpreters (the install's, and the one that
//! compiles the bytecode), and the installer when none is named (DESIGN section 4).

use std::ffi::OsString;

use tracing::{info, warn};

use super::{
    cli::{self, Args, ModeArg},
    error::BuildError,
    install::{self, PlatformMode},
    isolation,
    python::{self, PYTHON_ENV},
};
use crate::request::{Architecture, Runtime};

/// The environment variable naming the uv program.
pub const UV_ENV: &str = "LAYERFORGE_UV";

/// The runtime, the platform mode and the interpreter of this build (DESIGN section 4).
///
/// Without `--runtime` the target is the Python found here (`LAYERFORGE_PYTHON`, else `python3`, `python`), as
/// the original tool built. `auto` is native when a Python of the runtime's version runs here and this machine
/// is of the target architecture, else cross. The interpreter is required and exact for native builds, any
/// Python 3 for pip cross builds, none for uv cross builds (uv resolves for the target by itself).
pub fn resolve_target(
    args: &Args,
    installer: install::Installer,
    architecture: Architecture,
    sandbox: &isolation::Sandbox,
) -> Result<(Runtime, PlatformMode, Option<python::Interpreter>), BuildError> {
    let override_path = std::env::var_os(PYTHON_ENV);
    let host = cli::host_architecture();
    let (runtime, found) = match args.runtime {
        Some(runtime) => (runtime, None),
        None => {
            let interpreter = python::find_default(override_path.clone(), sandbox)?;
            let runtime = format!("python{}", interpreter.major_minor())
                .parse::<Runtime>()
                .map_err(|_| {
                    BuildError::UnsupportedInterpreter(format!(
                        "--runtime: not given, and the Python found here ({}, {}) is not a Lambda runtime \
                         (python3.10 … python3.14); give --runtime",
                        interpreter.path.display(),
                        interpreter.version
                    ))
                })?;
            (runtime, Some(interpreter))
        }
    };
    let exact = |override_path| -> Result<python::Interpreter, BuildError> {
        match &found {
            Some(interpreter) => Ok(interpreter.clone()),
            None => Ok(python::find(runtime, override_path, true, sandbox)?),
        }
    };
    let (mode, interpreter) = match args.platform_mode {
        ModeArg::Native => (PlatformMode::Native, Some(exact(override_path.clone())?)),
        ModeArg::Auto if host == architecture => match exact(override_path.clone()) {
            Ok(interpreter) => (PlatformMode::Native, Some(interpreter)),
            Err(_) => (PlatformMode::Cross, None),
        },
        ModeArg::Auto | ModeArg::Cross => (PlatformMode::Cross, None),
    };
    let interpreter = match (mode, installer, interpreter) {
        (PlatformMode::Native, _, Some(interpreter)) => {
            if host != architecture {
                warn!(
                    host = host.as_str(),
                    %architecture,
                    "native build on a host of another architecture: only pure-Python packages can be right; \
                     every ELF file is checked after the install"
                );
            }
            info!(python = %interpreter.path.display(), version = interpreter.version, "interpreter");
            Some(interpreter)
        }
        (_, install::Installer::Pip, _) => Some(
            found
                .clone()
                .map_or_else(|| python::find(runtime, override_path, false, sandbox), Ok)?,
        ),
        (_, install::Installer::Uv, _) => None,
    };
    info!(%runtime, %architecture, mode = mode.as_str(), requested = ?args.platform_mode, "build target");
    Ok((runtime, mode, interpreter))
}

/// The interpreter that compiles the bytecode: the install's when it is of the runtime's version, else one found
/// here (`LAYERFORGE_PYTHON`, `python3.X`, `python3`, `python`) of that version, of any platform.
pub fn bytecode_interpreter(
    runtime: Runtime,
    install: Option<&python::Interpreter>,
    sandbox: &isolation::Sandbox,
) -> Result<python::Interpreter, BuildError> {
    if let Some(interpreter) = install.filter(|i| i.matches(runtime)) {
        return Ok(interpreter.clone());
    }
    python::find(runtime, std::env::var_os(PYTHON_ENV), true, sandbox)
        .map_err(|e| {
            BuildError::Interpreter(python::InterpreterError {
                for_bytecode: true,
                ..e
            })
        })
        .inspect(|i| info!(python = %i.path.display(), version = i.version, "bytecode interpreter"))
}

/// The uv program: `LAYERFORGE_UV`, else `uv` (looked up on PATH).
pub fn uv_program() -> OsString {
    std::env::var_os(UV_ENV)
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| OsString::from("uv"))
}

/// The installer when none is named: uv when it runs here (`LAYERFORGE_UV`, else `uv` on PATH, as in the
/// image), else pip. Whether the build user can run it too is checked before the install
/// ([`isolation::probe_program`]): a uv only root can run is an error naming it, not a silent switch to pip.
pub fn default_installer() -> install::Installer {
    let runs = std::process::Command::new(uv_program())
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if runs {
        install::Installer::Uv
    } else {
        install::Installer::Pip
    }
}
