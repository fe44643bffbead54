//! Install isolation (DESIGN section 4): pip/uv and every build backend they run (an sdist's `setup.py` is the
//! caller's code) execute with nothing of the job's identity.
//!
//! - As an unprivileged user when layer-builder runs as root (as in the image): `LAYERFORGE_BUILD_USER`
//!   (`UID:GID`, default `65534:65534`, nobody). Supplementary groups are dropped (std does `setgroups(0)` when a
//!   root parent sets a uid). That user can't read `/proc/1/environ` of the root builder, where the container's
//!   credential URI lives.
//! - With an environment built from an allowlist ([`passes`]): no `AWS_*` variable, no container credential
//!   URI (`AWS_CONTAINER_CREDENTIALS_*`), no `ECS_*`, no upload grant (`LAYERFORGE_*_GRANT`, [`crate::grant`]);
//!   `HOME` and `TMPDIR` point into the work folder, which the user owns. Only layer-builder itself, after the
//!   install, uploads.
//! - `LAYERFORGE_WHEELS_ONLY=1` (the stack's `AllowSourceBuilds=false`) turns source builds off: the installer
//!   gets `--only-binary :all:` in native mode too.
//!
//! The interpreter is probed as the same user, so `auto` never picks one the user can't run (a pyenv Python
//! under a root-only `/root`).

use std::{
    ffi::{OsStr, OsString},
    path::{Path, PathBuf},
    process::Command,
};

/// The variable naming the user the installer runs as, `UID:GID`.
pub const BUILD_USER_ENV: &str = "LAYERFORGE_BUILD_USER";
/// nobody:nogroup on Debian, Amazon Linux and the Lambda build images.
pub const DEFAULT_BUILD_USER: (u32, u32) = (65_534, 65_534);
/// `1`: wheels only, no source builds.
pub const WHEELS_ONLY_ENV: &str = "LAYERFORGE_WHEELS_ONLY";

/// How the installer (and the interpreter probe) run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    /// `(uid, gid)` to switch to; `None` when layer-builder is not root (it can't switch, and already isn't).
    pub user: Option<(u32, u32)>,
    /// `HOME` and `TMPDIR` of the installer; `None` keeps the allowlisted environment only (probes).
    pub home: Option<PathBuf>,
    /// The allowlisted part of layer-builder's environment.
    pub env: Vec<(OsString, OsString)>,
    /// No source builds.
    pub wheels_only: bool,
}

impl Sandbox {
    /// From layer-builder's own environment and identity.
    pub fn from_env() -> Result<Self, String> {
        let user = if effective_uid_is_root() {
            Some(match std::env::var(BUILD_USER_ENV) {
                Ok(v) if !v.trim().is_empty() => parse_user(v.trim())?,
                _ => DEFAULT_BUILD_USER,
            })
        } else {
            tracing::warn!(
                "layer-builder is not root: the installer runs as this same user, which can read this process's \
                 environment and files; build untrusted requirements as root (as in the image), which runs them \
                 as an unprivileged build user"
            );
            None
        };
        Ok(Self {
            user,
            home: None,
            env: std::env::vars_os()
                .filter(|(k, _)| k.to_str().is_some_and(passes))
                .collect(),
            wheels_only: std::env::var(WHEELS_ONLY_ENV).is_ok_and(|v| v.trim() == "1"),
        })
    }

    /// The same sandbox with `HOME`/`TMPDIR` in `home`.
    pub fn with_home(mut self, home: PathBuf) -> Self {
        self.home = Some(home);
        self
    }

    /// Clears `cmd`'s environment to the allowlist, sets `HOME`/`TMPDIR`, and the user. Call first: variables
    /// set on `cmd` afterwards are kept.
    pub fn apply(&self, cmd: &mut Command) {
        cmd.env_clear();
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some(home) = &self.home {
            cmd.env("HOME", home).env("TMPDIR", home);
        }
        if let Some((uid, gid)) = self.user {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(gid);
        }
        use std::os::unix::process::CommandExt;
        // SAFETY: the closure runs in the child between fork and exec (after the uid/gid switch) and calls only
        // async-signal-safe system calls, touching no memory shared with the parent.
        unsafe {
            cmd.pre_exec(confine);
        }
    }

    /// Gives `paths` (the work folder and what the installer writes into) to the build user.
    pub fn hand_over(&self, paths: &[&Path]) -> std::io::Result<()> {
        if let Some((uid, gid)) = self.user {
            for path in paths {
                std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
            }
        }
        Ok(())
    }
}

/// What every process of the sandbox starts with (issue 19), in the child before exec:
/// - its own session (`setsid`): no controlling terminal, so it can't push input into a root shell's terminal
///   (`TIOCSTI`) or get its signals;
/// - `no_new_privs`: a setuid program it runs gains nothing;
/// - no core dumps, and at most [`MAX_PROCESSES`] processes of its user (a fork bomb can't outrun the kill
///   after the install).
fn confine() -> std::io::Result<()> {
    // SAFETY: plain system calls on integers and a local struct.
    unsafe {
        if libc::setsid() < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        let nproc = libc::rlimit {
            rlim_cur: MAX_PROCESSES,
            rlim_max: MAX_PROCESSES,
        };
        if libc::setrlimit(libc::RLIMIT_CORE, &core) != 0
            || libc::setrlimit(libc::RLIMIT_NPROC, &nproc) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The most processes the build user may have at once (`RLIMIT_NPROC` counts every process of the user): pip,
/// uv and a build backend with its compilers use a few dozen.
pub const MAX_PROCESSES: libc::rlim_t = 4096;

/// Checks that the build user can run `program` (`--version`, in the sandbox's environment, as that user), so a
/// tool only root can reach fails before the install with a message naming the path, the user and the fix,
/// instead of `could not be started: Permission denied` halfway (issue 19).
pub fn probe_program(program: &OsStr, sandbox: &Sandbox) -> Result<(), String> {
    let mut cmd = Command::new(program);
    sandbox.apply(&mut cmd);
    let shown = resolve_on_path(program, sandbox).map_or_else(
        || program.to_string_lossy().into_owned(),
        |p| p.display().to_string(),
    );
    let user = sandbox.user.map_or_else(
        || "this user".to_owned(),
        |(u, g)| format!("the build user {u}:{g}"),
    );
    let fix = "install it where that user can read and run it (every folder on the way needs o+x, e.g. \
               /usr/local/bin), point LAYERFORGE_UV at such a copy, or set LAYERFORGE_BUILD_USER to a user that can";
    let result = cmd
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output();
    match result {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "{shown} can't be run by {user} ({}: {}); {fix}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("{shown} can't be run by {user} ({e}); {fix}")),
    }
}

/// A copy of `program` that the build user can run, for a root whose tools live under a root-only home (the
/// local cloud of a checkout in `/root`): `<temp>/layerforge-tools-<sha256[:16]>/<name>`, a folder and a file
/// owned by root that nobody else can write (`0755`). An existing folder of that name is used only if it is
/// exactly that (a real folder owned by root, not writable by others, holding a file of the same digest);
/// anything else there is an error, never followed or overwritten.
pub fn stage_for_build_user(program: &Path) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use sha2::{Digest, Sha256};

    let bytes = std::fs::read(program)?;
    let digest = hex::encode(Sha256::digest(&bytes));
    let name = program.file_name().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "a program path with no name",
        )
    })?;
    let temp = std::fs::canonicalize(std::env::temp_dir())?;
    let dir = temp.join(format!("layerforge-tools-{}", &digest[..16]));
    let staged = dir.join(name);
    let trusted = |m: &std::fs::Metadata| m.uid() == 0 && m.mode() & 0o022 == 0;
    let refuse = |what: &str| {
        std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!("{}: {what}; remove it and retry", dir.display()),
        )
    };
    match std::fs::create_dir(&dir) {
        Ok(()) => std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let m = std::fs::symlink_metadata(&dir)?;
            if !m.is_dir() || !trusted(&m) {
                return Err(refuse("exists and is not a folder only root can write"));
            }
            if let Ok(m) = std::fs::symlink_metadata(&staged) {
                if m.is_file() && trusted(&m) && std::fs::read(&staged).is_ok_and(|b| b == bytes) {
                    return Ok(staged);
                }
                return Err(refuse("holds another file of that name"));
            }
        }
        Err(e) => return Err(e),
    }
    let partial = dir.join(format!(
        ".{}.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    {
        use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o755)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&partial)?;
        file.write_all(&bytes)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o755))?;
        file.sync_all()?;
    }
    std::fs::rename(&partial, &staged)?;
    Ok(staged)
}

/// Where `program` is found on the sandbox's PATH (for messages); a program with a `/` is itself.
pub fn resolve_on_path(program: &OsStr, sandbox: &Sandbox) -> Option<PathBuf> {
    if program.as_encoded_bytes().contains(&b'/') {
        return Some(PathBuf::from(program));
    }
    let path = sandbox
        .env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v)?;
    std::env::split_paths(path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.exists())
}

/// Whether a variable of layer-builder's environment reaches the installer: locale, proxies, CA bundles and the
/// operator's pip/uv settings (index URL, no-cache); never credentials or container metadata.
pub fn passes(name: &str) -> bool {
    matches!(
        name,
        "PATH"
            | "LANG"
            | "TZ"
            | "SOURCE_DATE_EPOCH"
            | "SSL_CERT_FILE"
            | "SSL_CERT_DIR"
            | "REQUESTS_CA_BUNDLE"
            | "HTTP_PROXY"
            | "HTTPS_PROXY"
            | "NO_PROXY"
            | "http_proxy"
            | "https_proxy"
            | "no_proxy"
    ) || name.starts_with("LC_")
        || name.starts_with("PIP_")
        || name.starts_with("UV_")
}

fn parse_user(text: &str) -> Result<(u32, u32), String> {
    let bad = || format!("{BUILD_USER_ENV}: expected UID:GID (numbers, not 0), got {text:?}");
    let (uid, gid) = text.split_once(':').ok_or_else(bad)?;
    let (uid, gid): (u32, u32) = (
        uid.parse().map_err(|_| bad())?,
        gid.parse().map_err(|_| bad())?,
    );
    if uid == 0 || gid == 0 {
        return Err(bad());
    }
    Ok((uid, gid))
}

fn effective_uid_is_root() -> bool {
    // SAFETY: geteuid has no preconditions and can't fail.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allowlisted_variables_pass() {
        for name in [
            "PATH",
            "LANG",
            "LC_ALL",
            "PIP_INDEX_URL",
            "UV_NO_CACHE",
            "HTTPS_PROXY",
        ] {
            assert!(passes(name), "{name}");
        }
        for name in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "AWS_CONTAINER_AUTHORIZATION_TOKEN",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_PROFILE",
            "ECS_CONTAINER_METADATA_URI_V4",
            "HOME",
            "LAYERFORGE_PYTHON",
            "PYTHONPATH",
            "LD_PRELOAD",
            // The upload grants: whoever holds one writes the artifact (DESIGN section 16).
            crate::grant::ARTIFACT_GRANT_ENV,
            crate::grant::REPORT_GRANT_ENV,
        ] {
            assert!(!passes(name), "{name}");
        }
    }

    #[test]
    fn build_user_is_two_nonzero_ids() {
        assert_eq!(parse_user("1000:1000"), Ok((1000, 1000)));
        for bad in ["0:0", "1000", "nobody:nogroup", "1000:0", ""] {
            assert!(parse_user(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn apply_clears_the_environment_and_sets_home() {
        let sandbox = Sandbox {
            user: None,
            home: Some("/w/home".into()),
            env: vec![("PATH".into(), "/usr/bin".into())],
            wheels_only: false,
        };
        let mut cmd = Command::new("true");
        cmd.env("AWS_SECRET_ACCESS_KEY", "x");
        sandbox.apply(&mut cmd);
        let envs: Vec<(String, Option<String>)> = cmd
            .get_envs()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.map(|v| v.to_string_lossy().into_owned()),
                )
            })
            .collect();
        assert!(
            !envs.iter().any(|(k, _)| k == "AWS_SECRET_ACCESS_KEY"),
            "{envs:?}"
        );
        assert!(envs.contains(&("HOME".into(), Some("/w/home".into()))));
        assert!(envs.contains(&("PATH".into(), Some("/usr/bin".into()))));
    }
}
