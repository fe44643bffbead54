//! Running pip or uv: the command line for each installer and mode, and a runner that streams the
//! installer's output to the job log while keeping its last lines for the error message.

use std::{
    collections::VecDeque,
    ffi::OsString,
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
};

use tracing::info;

use super::{isolation::Sandbox, platform, python::Interpreter};
use crate::request::{Architecture, Runtime};

/// Which installer runs: the request's type (DESIGN section 1), so the builder, the request and the fingerprint
/// agree on the spelling.
pub use crate::request::Installer;

/// How wheels are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PlatformMode {
    /// The interpreter's own platform; source distributions are built. The interpreter must be the runtime's.
    Native,
    /// Wheels only (`--only-binary=:all:`) for the target architecture and runtime, up to the runtime's
    /// manylinux level ([`platform::Ceiling`]), on any host.
    Cross,
}

impl PlatformMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PlatformMode::Native => "native",
            PlatformMode::Cross => "cross",
        }
    }
}

/// Last lines of the installer's stdout kept for the error message (progress: what it was doing).
pub const STDOUT_TAIL: usize = 10;
/// Last lines of its stderr kept (pip and uv write their errors there). The streams are kept apart so that a
/// burst of progress on stdout can't push the reason out.
pub const STDERR_TAIL: usize = 15;

/// Everything that decides the install command.
#[derive(Debug, Clone)]
pub struct InstallSpec {
    pub installer: Installer,
    pub mode: PlatformMode,
    pub runtime: Runtime,
    pub architecture: Architecture,
    /// Required for pip (it runs as `python -m pip`) and for native uv builds.
    pub interpreter: Option<Interpreter>,
    /// The uv program (`uv` on PATH unless told otherwise).
    pub uv: OsString,
    pub requirements_file: PathBuf,
    pub target: PathBuf,
    /// User, environment and `HOME` of the installer (and of every build backend it runs).
    pub sandbox: Sandbox,
}

/// The installer failed or could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstallError {
    #[error("{program} could not be started: {reason}")]
    Spawn { program: String, reason: String },
    #[error("{installer} install failed ({status}); its last lines:\n{}", tail.join("\n"))]
    Failed {
        installer: &'static str,
        status: String,
        tail: Vec<String>,
    },
    #[error("pip needs a Python interpreter and none was selected")]
    NoInterpreter,
    /// Processes the install left behind could not be ended ([`super::contain::end_leftovers`]).
    #[error("{0}")]
    Survivors(String),
}

/// The installer command for `spec`: program, arguments and environment.
pub fn command(spec: &InstallSpec) -> Result<Command, InstallError> {
    let python_version = spec.runtime.python_version();
    let target = spec.target.as_os_str();
    let requirements = spec.requirements_file.as_os_str();
    let mut cmd = match spec.installer {
        Installer::Pip => {
            let interpreter = spec
                .interpreter
                .as_ref()
                .ok_or(InstallError::NoInterpreter)?;
            let mut cmd = Command::new(&interpreter.path);
            spec.sandbox.apply(&mut cmd);
            cmd.args([
                "-m",
                "pip",
                "install",
                "--no-input",
                "--no-compile",
                "--no-warn-script-location",
            ]);
            cmd.arg("--target").arg(target).arg("-r").arg(requirements);
            if spec.mode == PlatformMode::Cross {
                for tag in platform::ceiling(spec.runtime).pip_platforms(spec.architecture) {
                    cmd.arg("--platform").arg(tag);
                }
                cmd.args(["--implementation", "cp", "--python-version", python_version]);
                cmd.arg("--only-binary=:all:");
            } else if spec.sandbox.wheels_only {
                cmd.arg("--only-binary=:all:");
            }
            cmd
        }
        Installer::Uv => {
            let mut cmd = Command::new(&spec.uv);
            spec.sandbox.apply(&mut cmd);
            // Hard links from uv's cache (uv's own default on Linux; a copy where the cache is on another file
            // system): the builder only reads the tree, so no file of the cache can be altered through it, and
            // linking instead of copying took 40-50 ms instead of 110-210 ms for requests+httpx (11 packages).
            cmd.args(["pip", "install", "--no-progress", "--link-mode", "hardlink"]);
            cmd.arg("--target").arg(target).arg("-r").arg(requirements);
            match spec.mode {
                PlatformMode::Native => {
                    if let Some(interpreter) = &spec.interpreter {
                        cmd.arg("--python").arg(&interpreter.path);
                    }
                    if spec.sandbox.wheels_only {
                        cmd.args(["--only-binary", ":all:"]);
                    }
                }
                PlatformMode::Cross => {
                    // The interpreter to resolve with (any CPython 3 does; the runtime's own when known, for the
                    // console scripts' shebangs); uv finds one on PATH without it.
                    if let Some(interpreter) = &spec.interpreter {
                        cmd.arg("--python").arg(&interpreter.path);
                    }
                    cmd.arg("--python-platform")
                        .arg(platform::ceiling(spec.runtime).uv_platform(spec.architecture));
                    cmd.args(["--python-version", python_version, "--only-binary", ":all:"]);
                }
            }
            cmd
        }
    };
    // No bytecode (it is not shipped), no prompts, and a fixed SOURCE_DATE_EPOCH so sdist builds that honour
    // it are reproducible.
    cmd.env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PIP_ROOT_USER_ACTION", "ignore")
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .env("SOURCE_DATE_EPOCH", "315532800")
        .env("UV_NO_PROGRESS", "1")
        // uv needs an interpreter to resolve with (any CPython 3): the image's, or the fast builder's runtime's.
        // Never one downloaded from outside the package index.
        .env("UV_PYTHON_DOWNLOADS", "never")
        // uv reads RUST_LOG too: our log level must not turn on its resolver tracing.
        .env_remove("RUST_LOG");
    Ok(cmd)
}

/// Runs the installer; its stdout and stderr go to our stderr line by line (the job log), and the last
/// [`STDOUT_TAIL`] lines of stdout and [`STDERR_TAIL`] of stderr are kept for the error, in that order.
///
/// `after_exit` runs as soon as the installer has exited, before its output is drained: the builder ends
/// whatever the install left running there ([`super::contain::end_leftovers`]), so a leftover that holds the
/// pipes open can't keep the build waiting. Its error wins over the installer's.
pub fn run(
    installer: &'static str,
    mut cmd: Command,
    after_exit: impl FnOnce() -> Result<(), InstallError>,
) -> Result<(), InstallError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    info!(installer, command = %render(&cmd), "running installer");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| InstallError::Spawn {
            program: program.clone(),
            reason: if e.kind() == std::io::ErrorKind::NotFound {
                "not found (is it installed and on PATH?)".to_owned()
            } else {
                e.to_string()
            },
        })?;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let (status, out_tail, err_tail): (Result<std::io::Result<ExitStatus>, InstallError>, _, _) =
        std::thread::scope(|scope| {
            let out = scope.spawn(|| stdout.map(|s| relay(s, STDOUT_TAIL)).unwrap_or_default());
            let err = scope.spawn(|| stderr.map(|s| relay(s, STDERR_TAIL)).unwrap_or_default());
            let status = child.wait();
            let contained = after_exit();
            (
                contained.map(|()| status),
                out.join().unwrap_or_default(),
                err.join().unwrap_or_default(),
            )
        });
    let status = status?;
    let tail: Vec<String> = out_tail.into_iter().chain(err_tail).collect();
    match status {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(InstallError::Failed {
            installer,
            status: status.to_string(),
            tail,
        }),
        Err(e) => Err(InstallError::Failed {
            installer,
            status: format!("could not be waited for: {e}"),
            tail,
        }),
    }
}

/// The longest line of the installer's output kept whole.
const MAX_LINE: u64 = 64 * 1024;

/// Copies lines of a child's stream to our stderr; returns the last `keep` non-blank lines.
fn relay(stream: impl Read, keep: usize) -> VecDeque<String> {
    let mut tail = VecDeque::with_capacity(keep);
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        // A line is cut at MAX_LINE bytes (the rest comes as the next line): an installer can't exhaust memory
        // with one endless line.
        match (&mut reader).take(MAX_LINE).read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                // Control characters (terminal escapes) become `?`: the installer's output may reach the terminal
                // of whoever runs layer-builder, and must not drive it.
                let line: String = line
                    .trim_end_matches(['\r', '\n'])
                    .chars()
                    .map(|c| if c.is_control() && c != '\t' { '?' } else { c })
                    .collect();
                eprintln!("{line}");
                if line.trim().is_empty() {
                    continue;
                }
                if tail.len() == keep {
                    tail.pop_front();
                }
                tail.push_back(line.to_owned());
            }
        }
    }
    tail
}

/// The command as a shell-like line, for the log.
pub fn render(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `site-packages` folder of the layer layout under `root`: `python/lib/pythonX.Y/site-packages`.
pub fn site_packages(root: &Path, runtime: Runtime) -> PathBuf {
    root.join(layout_prefix(runtime))
}

/// The layout prefix inside the zip, without a trailing slash.
pub fn layout_prefix(runtime: Runtime) -> String {
    format!("python/lib/{}/site-packages", runtime.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(installer: Installer, mode: PlatformMode) -> InstallSpec {
        InstallSpec {
            installer,
            mode,
            runtime: Runtime::Python312,
            architecture: Architecture::Arm64,
            interpreter: Some(Interpreter {
                path: "/usr/bin/python3.12".into(),
                version: "3.12.7".into(),
            }),
            uv: "uv".into(),
            requirements_file: "/w/requirements.txt".into(),
            target: "/w/python/lib/python3.12/site-packages".into(),
            sandbox: Sandbox {
                user: None,
                home: Some("/w/home".into()),
                env: vec![("PATH".into(), "/usr/bin".into())],
                wheels_only: false,
            },
        }
    }

    #[test]
    fn pip_commands() {
        let native = render(&command(&spec(Installer::Pip, PlatformMode::Native)).unwrap());
        assert_eq!(
            native,
            "/usr/bin/python3.12 -m pip install --no-input --no-compile --no-warn-script-location \
             --target /w/python/lib/python3.12/site-packages -r /w/requirements.txt"
        );
        let cross = render(&command(&spec(Installer::Pip, PlatformMode::Cross)).unwrap());
        assert!(
            cross.contains(
                "-r /w/requirements.txt --platform manylinux_2_34_aarch64 --platform manylinux_2_33_aarch64 "
            ),
            "{cross}"
        );
        assert!(
            cross.ends_with(
                "--platform manylinux_2_5_aarch64 --implementation cp --python-version 3.12 --only-binary=:all:"
            ),
            "{cross}"
        );
        let mut al2 = spec(Installer::Pip, PlatformMode::Cross);
        al2.runtime = Runtime::Python311;
        let cross = render(&command(&al2).unwrap());
        assert!(
            cross.contains("--platform manylinux_2_26_aarch64 --platform manylinux_2_25_aarch64"),
            "{cross}"
        );
        assert!(!cross.contains("manylinux_2_27"), "{cross}");
    }

    #[test]
    fn uv_commands() {
        let native = render(&command(&spec(Installer::Uv, PlatformMode::Native)).unwrap());
        assert!(
            native.starts_with("uv pip install --no-progress --link-mode hardlink --target "),
            "{native}"
        );
        assert!(native.ends_with("--python /usr/bin/python3.12"), "{native}");
        let mut x86 = spec(Installer::Uv, PlatformMode::Cross);
        x86.architecture = Architecture::X86_64;
        x86.interpreter = None;
        let cross = render(&command(&x86).unwrap());
        assert!(
            cross.ends_with(
                "--python-platform x86_64-manylinux_2_34 --python-version 3.12 --only-binary :all:"
            ),
            "{cross}"
        );
        x86.runtime = Runtime::Python310;
        let cross = render(&command(&x86).unwrap());
        assert!(
            cross.ends_with(
                "--python-platform x86_64-manylinux_2_17 --python-version 3.10 --only-binary :all:"
            ),
            "{cross}"
        );
    }

    #[test]
    fn pip_without_interpreter_is_an_error() {
        let mut s = spec(Installer::Pip, PlatformMode::Cross);
        s.interpreter = None;
        assert_eq!(command(&s).unwrap_err(), InstallError::NoInterpreter);
    }

    #[test]
    fn output_lines_are_capped_and_carry_no_terminal_escapes() {
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "printf '\\033[2Jred\\n' >&2; head -c 200000 /dev/zero | tr '\\0' x >&2; exit 1",
        ]);
        let InstallError::Failed { tail, .. } = run("uv", cmd, || Ok(())).unwrap_err() else {
            panic!("expected Failed")
        };
        assert_eq!(
            tail.first().map(String::as_str),
            Some("?[2Jred"),
            "{:?}",
            &tail[..1]
        );
        let long: Vec<usize> = tail[1..].iter().map(String::len).collect();
        assert_eq!(long.iter().sum::<usize>(), 200_000, "{long:?}");
        assert!(long.iter().all(|l| *l as u64 <= MAX_LINE), "{long:?}");
    }

    #[test]
    fn failure_keeps_the_last_lines() {
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "echo 'ERROR: boom' >&2; sleep 0.2; for i in $(seq 1 40); do echo out $i; done; exit 7",
        ]);
        let InstallError::Failed { status, tail, .. } = run("pip", cmd, || Ok(())).unwrap_err()
        else {
            panic!("expected Failed")
        };
        assert!(status.contains('7'), "{status}");
        assert_eq!(tail.len(), STDOUT_TAIL + 1);
        assert_eq!(tail.first().map(String::as_str), Some("out 31"));
        assert_eq!(
            tail.last().map(String::as_str),
            Some("ERROR: boom"),
            "stderr survives a burst of stdout"
        );
    }

    #[test]
    fn missing_program_is_a_spawn_error() {
        let err = run("uv", Command::new("/nonexistent/uv"), || Ok(())).unwrap_err();
        assert!(matches!(err, InstallError::Spawn { .. }), "{err}");
    }

    #[test]
    fn layout() {
        assert_eq!(
            layout_prefix(Runtime::Python311),
            "python/lib/python3.11/site-packages"
        );
        assert_eq!(
            site_packages(Path::new("/w"), Runtime::Python312),
            PathBuf::from("/w/python/lib/python3.12/site-packages")
        );
    }
}
