//! `layerforge`, the user's command line (DESIGN section 10): build a layer, follow it, fetch it, and run the
//! local cloud.
//!
//! The functions are reached with Lambda `Invoke` (RequestResponse): by name (`--submit-function`,
//! `--status-function`), else through the outputs `SubmitBuildFunctionName` / `BuildStatusFunctionName` of the
//! CloudFormation stack `--stack` (default `layerforge`), or, with `--local`, in the local cloud of
//! `layerforge local up` (endpoints from its `state.json`). Credentials, region and endpoint come from the
//! standard AWS settings (`AWS_PROFILE`/`--profile`, `AWS_REGION`/`--region`, `AWS_ENDPOINT_URL`, …).
//!
//! Exit codes: 0 published or cached (or a successful query), 1 failed or rejected, 2 invalid request or
//! usage, 3 AWS or configuration error.

pub mod build;
pub mod fetch;
pub mod image;
pub mod status;

use std::path::PathBuf;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_smithy_types::Blob;
use clap::{Args, Parser, Subcommand};
use serde_json::Value;

use crate::{
    aws::error_chain,
    local::{self, LocalError, State},
};

/// Build Python AWS Lambda layers in the cloud and publish them exactly once.
#[derive(Debug, Parser)]
#[command(name = "layerforge", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub target: Target,
    #[command(subcommand)]
    pub command: Command,
}

/// Where the functions are.
#[derive(Debug, Args)]
#[command(next_help_heading = "Target")]
pub struct Target {
    /// The deployed stack whose outputs name the functions.
    #[arg(
        long,
        global = true,
        env = "LAYERFORGE_STACK",
        default_value = "layerforge"
    )]
    pub stack: String,
    /// The submit-build function (name or ARN), instead of the stack's output.
    #[arg(long, global = true, value_name = "FUNCTION")]
    pub submit_function: Option<String>,
    /// The build-status function (name or ARN), instead of the stack's output.
    #[arg(long, global = true, value_name = "FUNCTION")]
    pub status_function: Option<String>,
    /// Use the local cloud of `layerforge local up`.
    #[arg(long, global = true, conflicts_with_all = ["submit_function", "status_function"])]
    pub local: bool,
    /// The local cloud's directory (default: `.local` in the source tree).
    #[arg(long, global = true, env = "LAYERFORGE_LOCAL_DIR", value_name = "DIR")]
    pub local_dir: Option<PathBuf>,
    /// The AWS profile (default: AWS_PROFILE, else the default profile).
    #[arg(long, global = true)]
    pub profile: Option<String>,
    /// The AWS region (default: AWS_REGION, else the profile's).
    #[arg(long, global = true)]
    pub region: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Ask for a layer: invokes submit-build; with --wait, follows the build until it is published.
    Build(build::BuildArgs),
    /// The state of a build, by job id or artifact (s3://BUCKET/KEY).
    Status(status::StatusArgs),
    /// Download a layer version, verify its CodeSha256 and unpack it (or into SAM CLI's layer cache).
    Fetch(fetch::FetchArgs),
    /// The builder images, built in the stack's CodeBuild projects (no Docker needed).
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// The local cloud: moto with the stack, the functions behind cargo-lambda, a Fargate stand-in.
    #[command(subcommand)]
    Local(LocalCommand),
}

#[derive(Debug, Subcommand)]
pub enum LocalCommand {
    /// Start the local cloud and return; state in DIR/state.json.
    Up,
    /// Stop exactly what `local up` started.
    Down,
    /// The Fargate stand-in and S3-event forwarder (started by `local up`).
    #[command(hide = true)]
    Serve,
}

/// A failure, with the exit code it maps to.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The build failed or was rejected (exit 1).
    #[error("{0}")]
    Failed(String),
    /// The request is invalid: the function's message, naming the field (exit 2).
    #[error("{0}")]
    Invalid(String),
    /// An AWS call or the configuration failed (exit 3).
    #[error("{0}")]
    Aws(String),
}

impl CliError {
    /// A failed AWS call: `call` names the operation and its target, then the error with its sources.
    pub fn aws_call(call: &str, err: &dyn std::error::Error) -> Self {
        CliError::Aws(format!("{call}: {}", error_chain(err)))
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Failed(_) => 1,
            CliError::Invalid(_) => 2,
            CliError::Aws(_) => 3,
        }
    }
}

impl From<LocalError> for CliError {
    fn from(err: LocalError) -> Self {
        CliError::Aws(err.to_string())
    }
}

/// Runs one command; `Ok` carries the exit code of a command that ran (0, or 1 for a failed build).
pub async fn run(cli: Cli) -> Result<u8, CliError> {
    match cli.command {
        Command::Build(args) => build::run(&cli.target, args).await,
        Command::Status(args) => status::run(&cli.target, args).await,
        Command::Fetch(args) => fetch::run(&cli.target, args).await,
        Command::Image(command) => image::run(&cli.target, command).await,
        Command::Local(LocalCommand::Up) => {
            let root = local::project_root().ok_or_else(|| {
                CliError::Aws(
                    "`layerforge local up` runs in the layerforge source tree (Cargo.toml and template.yaml): \
                     cd there or set LAYERFORGE_ROOT"
                        .into(),
                )
            })?;
            let dir = local::local_dir(cli.target.local_dir.as_deref());
            let state = local::cloud::up(&root, &dir).await?;
            eprintln!("local cloud up ({}):", State::path(&dir).display());
            eprintln!(
                "  moto (S3, Batch, SQS, Lambda layers): {}",
                state.moto_endpoint
            );
            eprintln!(
                "  functions ({}, {}, {}): {}",
                local::SUBMIT_FUNCTION,
                local::STATUS_FUNCTION,
                local::PUBLISH_FUNCTION,
                state.lambda_endpoint
            );
            for p in &state.processes {
                eprintln!("  {} pid {} (log {})", p.name, p.pid, p.log.display());
            }
            eprintln!("use it with `layerforge --local …`; stop it with `layerforge local down`");
            Ok(0)
        }
        Command::Local(LocalCommand::Down) => {
            let dir = local::local_dir(cli.target.local_dir.as_deref());
            for line in local::cloud::down(&dir)? {
                eprintln!("  {line}");
            }
            eprintln!("local cloud down");
            Ok(0)
        }
        Command::Local(LocalCommand::Serve) => {
            let dir = local::local_dir(cli.target.local_dir.as_deref());
            local::serve::serve(&dir).await?;
            Ok(0)
        }
    }
}

/// The AWS side of a command: SDK configurations and the functions' names.
pub struct Context {
    /// For every service but Invoke (in the local cloud: moto).
    pub sdk: SdkConfig,
    /// For Lambda Invoke (in the local cloud: its Lambda front, before cargo-lambda's Runtime API).
    pub invoke: aws_sdk_lambda::Client,
    pub target: ResolvedTarget,
    /// The local cloud, with `--local`.
    pub local: Option<State>,
}

/// How the functions are found.
pub enum ResolvedTarget {
    Named {
        submit: Option<String>,
        status: Option<String>,
        stack: String,
    },
    Local,
}

impl Context {
    pub async fn new(target: &Target) -> Result<Self, CliError> {
        if target.local {
            let dir = local::local_dir(target.local_dir.as_deref());
            let state = State::load(&dir)?;
            let sdk = local::sdk_for(&state.moto_endpoint).await;
            let invoke = aws_sdk_lambda::Client::new(&local::sdk_for(&state.lambda_endpoint).await);
            return Ok(Self {
                sdk,
                invoke,
                target: ResolvedTarget::Local,
                local: Some(state),
            });
        }
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(profile) = &target.profile {
            loader = loader.profile_name(profile);
        }
        if let Some(region) = &target.region {
            loader = loader.region(Region::new(region.clone()));
        }
        let sdk = loader.load().await;
        if sdk.region().is_none() {
            return Err(CliError::Aws(
                "no AWS region: set AWS_REGION, --region or a profile's region".into(),
            ));
        }
        let invoke = aws_sdk_lambda::Client::new(&sdk);
        Ok(Self {
            sdk,
            invoke,
            target: ResolvedTarget::Named {
                submit: target.submit_function.clone(),
                status: target.status_function.clone(),
                stack: target.stack.clone(),
            },
            local: None,
        })
    }

    /// The submit-build function's name.
    pub async fn submit_function(&self) -> Result<String, CliError> {
        match &self.target {
            ResolvedTarget::Local => Ok(local::SUBMIT_FUNCTION.into()),
            ResolvedTarget::Named {
                submit: Some(f), ..
            } => Ok(f.clone()),
            ResolvedTarget::Named { stack, .. } => {
                stack_output(
                    &self.sdk,
                    stack,
                    "SubmitBuildFunctionName",
                    "--submit-function",
                )
                .await
            }
        }
    }

    /// The build-status function's name.
    pub async fn status_function(&self) -> Result<String, CliError> {
        match &self.target {
            ResolvedTarget::Local => Ok(local::STATUS_FUNCTION.into()),
            ResolvedTarget::Named {
                status: Some(f), ..
            } => Ok(f.clone()),
            ResolvedTarget::Named { stack, .. } => {
                stack_output(
                    &self.sdk,
                    stack,
                    "BuildStatusFunctionName",
                    "--status-function",
                )
                .await
            }
        }
    }

    /// Invokes `function` with `payload` (RequestResponse) and returns its JSON answer. A function error
    /// whose `errorType` is `InvalidRequest` or `NotFound` is [`CliError::Invalid`]; others are
    /// [`CliError::Aws`], with the function's `errorType` and `errorMessage`.
    pub async fn invoke(&self, function: &str, payload: &Value) -> Result<Value, CliError> {
        let out = self
            .invoke
            .invoke()
            .function_name(function)
            .payload(Blob::new(payload.to_string()))
            .send()
            .await
            .map_err(|e| invoke_error(function, &e))?;
        let body = out.payload().map(|p| p.as_ref()).unwrap_or_default();
        let answer: Value = serde_json::from_slice(body).map_err(|e| {
            CliError::Aws(format!(
                "{function} answered with something that is not JSON ({e}): {:.300}",
                String::from_utf8_lossy(body)
            ))
        })?;
        match out.function_error() {
            None => Ok(answer),
            Some(kind) => Err(function_error(function, kind, &answer)),
        }
    }
}

/// A failed Invoke. cargo-lambda's Runtime API answers a function error with HTTP 500 and the
/// `{"errorType", "errorMessage"}` body (AWS answers 200 with `X-Amz-Function-Error`; seen with cargo-lambda
/// 1.9.2), so such a body is read as the function's error wherever it comes from.
pub fn invoke_error(
    function: &str,
    err: &aws_smithy_runtime_api::client::result::SdkError<
        aws_sdk_lambda::operation::invoke::InvokeError,
        aws_smithy_runtime_api::http::Response,
    >,
) -> CliError {
    let body = err
        .raw_response()
        .and_then(|r| r.body().bytes())
        .map(|b| String::from_utf8_lossy(b).into_owned());
    if let Some(answer) = body
        .as_deref()
        .and_then(|b| serde_json::from_str::<Value>(b).ok())
        && answer.get("errorType").is_some()
    {
        return function_error(function, "Unhandled", &answer);
    }
    let detail = body.map(|b| format!(" ({b:.300})")).unwrap_or_default();
    CliError::Aws(format!("Invoke {function}: {}{detail}", error_chain(err)))
}

/// Maps a function error's `errorType`/`errorMessage` to a [`CliError`].
pub fn function_error(function: &str, kind: &str, answer: &Value) -> CliError {
    let error_type = answer["errorType"].as_str().unwrap_or(kind);
    let message = answer["errorMessage"]
        .as_str()
        .unwrap_or("(no errorMessage)");
    match error_type {
        "InvalidRequest" | "NotFound" => CliError::Invalid(format!("{error_type}: {message}")),
        _ => CliError::Aws(format!("{function} failed: {error_type}: {message}")),
    }
}

async fn stack_output(
    sdk: &SdkConfig,
    stack: &str,
    output: &str,
    option: &str,
) -> Result<String, CliError> {
    let cfn = aws_sdk_cloudformation::Client::new(sdk);
    let described = cfn
        .describe_stacks()
        .stack_name(stack)
        .send()
        .await
        .map_err(|e| {
            CliError::Aws(format!(
                "DescribeStacks {stack}: {} (deploy the stack, pass --stack NAME, or name the function with {option})",
                error_chain(&e)
            ))
        })?;
    described
        .stacks()
        .first()
        .and_then(|s| {
            s.outputs()
                .iter()
                .find(|o| o.output_key() == Some(output))
                .and_then(|o| o.output_value())
        })
        .map(str::to_owned)
        .ok_or_else(|| {
            CliError::Aws(format!(
                "stack {stack} has no output {output} (name the function with {option})"
            ))
        })
}

/// Prints `value` as one JSON object on stdout.
pub fn print_json(value: &Value) {
    println!("{value}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn function_errors_map_to_exit_codes() {
        let invalid = serde_json::json!({"errorType": "InvalidRequest", "errorMessage": "layer_name: must match"});
        let e = function_error("f", "Unhandled", &invalid);
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("layer_name"), "{e}");
        let other =
            serde_json::json!({"errorType": "Transient", "errorMessage": "SubmitJob failed"});
        let e = function_error("f", "Unhandled", &other);
        assert_eq!(e.exit_code(), 3);
        assert!(e.to_string().contains("SubmitJob failed"), "{e}");
    }

    #[test]
    fn local_conflicts_with_named_functions() {
        let parsed = Cli::try_parse_from([
            "layerforge",
            "--local",
            "--submit-function",
            "f",
            "status",
            "j",
        ]);
        assert!(parsed.is_err());
    }
}
