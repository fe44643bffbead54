//! The local cloud: AWS for layerforge on one machine, without an account or Docker (DESIGN sections 8, 10).
//!
//! `layerforge local up` starts, each in its own process group and logging under the local directory
//! (`.local/` of the source tree unless `--local-dir`/`LAYERFORGE_LOCAL_DIR` says otherwise):
//! 1. moto's server on a free loopback port, with the stack provisioned in it ([`provision`]);
//! 2. `cargo lambda watch --only-lambda-apis`, the Lambda Runtime API emulator, and this build's function
//!    binaries (`submit-build`, `build-status`, `publish-layer`, next to `layerforge`) polling it, each with the
//!    template's environment pointed at moto; a Lambda `Invoke` with the SDK's endpoint set to it runs the
//!    function of that name. (Started by cargo-lambda instead, the functions would be rebuilt with
//!    `cargo run`, whose feature set differs from `cargo test`'s: minutes of compiling on a first invoke.)
//! 3. `layerforge local serve` ([`serve`]): the Lambda endpoint, a front before cargo-lambda's that answers
//!    `Invoke` as Lambda does (a function error is 200 with `X-Amz-Function-Error`, [`front`]); the Fargate
//!    stand-in (moto's Batch jobs SUCCEED at once and run nothing, so each submitted job's own command runs here
//!    with `layer-builder`); and the forwarder of the bucket's S3 event records (delivered to SQS by moto) to
//!    `publish-layer`.
//!
//! Endpoints and PIDs go to `state.json` ([`State`]); `layerforge local down` stops exactly those processes
//! (their process groups, after checking each PID still runs the program it started) and checks that nothing
//! listens on their ports any more. moto keeps everything in memory: `down` forgets all layers.

pub mod cloud;
pub mod front;
pub mod moto;
pub mod provision;
pub mod serve;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use provision::LocalStack;

/// The names the local functions answer to (cargo-lambda serves each binary under its name).
pub const SUBMIT_FUNCTION: &str = "submit-build";
pub const STATUS_FUNCTION: &str = "build-status";
pub const PUBLISH_FUNCTION: &str = "publish-layer";
/// The fast builder (DESIGN section 12): runs here as the others do, and is invoked asynchronously through the
/// front.
pub const FAST_FUNCTION: &str = "fast-builder";
/// Its retries after a failed attempt, as template.yaml's `FastBuilderRetryAttempts` default.
pub const FAST_BUILDER_RETRIES: u32 = 1;

/// The stack name of the local cloud (bucket `layerforge-artifacts`, …).
pub const STACK: &str = "layerforge";

/// What `local up` started, as written to `state.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The source tree `cargo lambda watch` runs in.
    pub root: PathBuf,
    /// moto's server: every AWS service but Lambda Invoke.
    pub moto_endpoint: String,
    /// Lambda Invoke of the three functions, answered as Lambda does: the front that `local serve` runs
    /// before cargo-lambda ([`front`]).
    pub lambda_endpoint: String,
    /// cargo-lambda's Runtime API, which the functions poll and the front forwards to.
    pub runtime_api_endpoint: String,
    pub stack: LocalStack,
    pub processes: Vec<Process>,
}

/// One background process `local up` started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    pub name: String,
    pub pid: u32,
    /// A word of its command line, checked before it is signalled (a PID can be reused after a reboot).
    pub program: String,
    /// The loopback port it listens on, if any.
    pub port: Option<u16>,
    pub log: PathBuf,
}

/// A local-cloud failure, naming what failed.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("{0}")]
    Setup(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the local cloud is not running ({0} is missing): run `layerforge local up`")]
    NotUp(PathBuf),
    #[error("{path}: not a local cloud state file: {source}")]
    BadState {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("provisioning moto: {0}")]
    Provision(#[from] provision::ProvisionError),
}

impl LocalError {
    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LocalError + '_ {
        move |source| LocalError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// The source tree: `LAYERFORGE_ROOT`, else the nearest ancestor of the current directory holding both
/// `Cargo.toml` and `template.yaml`.
pub fn project_root() -> Option<PathBuf> {
    if let Some(root) = std::env::var_os("LAYERFORGE_ROOT").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(root));
    }
    let cwd = std::env::current_dir().ok()?;
    cwd.ancestors()
        .find(|d| d.join("Cargo.toml").is_file() && d.join("template.yaml").is_file())
        .map(Path::to_path_buf)
}

/// The local directory: the option/env value, else `.local` in the source tree, else `./.local`.
pub fn local_dir(option: Option<&Path>) -> PathBuf {
    match option {
        Some(dir) => dir.to_owned(),
        None => project_root()
            .unwrap_or_else(|| PathBuf::from("."))
            .join(".local"),
    }
}

impl State {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("state.json")
    }

    /// Reads `DIR/state.json`.
    pub fn load(dir: &Path) -> Result<State, LocalError> {
        let path = Self::path(dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(LocalError::NotUp(path));
            }
            Err(e) => return Err(LocalError::io(&path)(e)),
        };
        serde_json::from_str(&text).map_err(|source| LocalError::BadState { path, source })
    }

    /// Writes `DIR/state.json` (through a temporary file, so a reader never sees half of it).
    pub fn save(&self, dir: &Path) -> Result<(), LocalError> {
        let path = Self::path(dir);
        let tmp = dir.join("state.json.tmp");
        let text = serde_json::to_string_pretty(self).map_err(|source| LocalError::BadState {
            path: path.clone(),
            source,
        })?;
        std::fs::write(&tmp, text).map_err(LocalError::io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(LocalError::io(&path))
    }
}

/// SDK configuration for moto (or any local endpoint): dummy credentials, the local region.
pub async fn sdk_for(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(moto::REGION))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "testing", "testing", None, None, "local",
        ))
        .load()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_through_its_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(State::load(dir.path()), Err(LocalError::NotUp(_))));
        let state = State {
            root: "/src".into(),
            moto_endpoint: "http://127.0.0.1:1".into(),
            lambda_endpoint: "http://127.0.0.1:2".into(),
            runtime_api_endpoint: "http://127.0.0.1:3".into(),
            stack: LocalStack {
                name: "layerforge".into(),
                bucket: "b".into(),
                prefix: "layers".into(),
                queue_url: "q".into(),
                batch: provision::BatchStack {
                    build_targets: "{}".into(),
                    arm64: ("qa".into(), "da".into()),
                    arm64_by_runtime: vec![(crate::request::Runtime::Python312, "d312".into())],
                    x86_64: ("qx".into(), "dx".into()),
                },
            },
            processes: vec![Process {
                name: "moto".into(),
                pid: 42,
                program: "moto_server".into(),
                port: Some(1),
                log: "/l".into(),
            }],
        };
        state.save(dir.path()).unwrap();
        assert_eq!(State::load(dir.path()).unwrap(), state);
        std::fs::write(State::path(dir.path()), "{").unwrap();
        assert!(matches!(
            State::load(dir.path()),
            Err(LocalError::BadState { .. })
        ));
    }
}
