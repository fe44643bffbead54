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
//!
//! This file holds the command line and dispatches it; one file a command ([`build`], [`status`], [`fetch`],
//! [`latest`], [`image`]) over what they share: [`context`] (the target options, the SDK configurations, Invoke)
//! and [`error`] (the failures and their exit codes).

pub mod build;
pub mod context;
pub mod error;
pub mod fetch;
pub mod image;
pub mod latest;
pub mod matrix;
pub mod prune;
pub mod status;

use clap::{Parser, Subcommand};

pub use context::{Context, ResolvedTarget, Target, function_error, invoke_error, print_json};
pub use error::CliError;

use crate::local::{self, State};

/// Build Python AWS Lambda layers in the cloud and publish them exactly once.
#[derive(Debug, Parser)]
#[command(name = "layerforge", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub target: Target,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Ask for a layer: invokes submit-build; with --wait, follows the build until it is published.
    Build(Box<build::BuildArgs>),
    /// The state of a build, by job id or artifact (s3://BUCKET/KEY).
    Status(status::StatusArgs),
    /// Download a layer version, verify its CodeSha256 and unpack it (or into SAM CLI's layer cache).
    Fetch(fetch::FetchArgs),
    /// The newest layer version of a layer, runtime and architecture (the stack's latest pointer in SSM).
    Latest(latest::LatestArgs),
    /// Delete old versions of a layer: never the latest, never one a function of this account references.
    Prune(prune::PruneArgs),
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

/// Runs one command; `Ok` carries the exit code of a command that ran (0, or 1 for a failed build).
pub async fn run(cli: Cli) -> Result<u8, CliError> {
    match cli.command {
        Command::Build(args) => build::run(&cli.target, *args).await,
        Command::Status(args) => status::run(&cli.target, args).await,
        Command::Fetch(args) => fetch::run(&cli.target, args).await,
        Command::Image(command) => image::run(&cli.target, command).await,
        Command::Latest(args) => latest::run(&cli.target, args).await,
        Command::Prune(args) => prune::run(&cli.target, args).await,
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
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
