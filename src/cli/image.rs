//! `layerforge image build|list`: the builder images, built by the stack's CodeBuild projects (see
//! `layerforge::image`). The stack's outputs name the projects, the repository, the ImageTag and BuildRuntimes.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use clap::{Args, Subcommand};

use super::context::{Context, ResolvedTarget, Target, stack_outputs};
use super::error::CliError;
use crate::{
    image::{self, BuildOptions, ImageClients, ImageError, ImageOutcome, ImageStack},
    request::Runtime,
};

/// Time between two BatchGetBuilds while waiting.
const POLL: Duration = Duration::from_secs(15);

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build the builder images in the stack's CodeBuild projects (no Docker needed): every runtime of the
    /// stack's BuildRuntimes whose image does not exist yet, or those named.
    Build(ImageBuildArgs),
    /// Which runtime x architecture builder images exist in the stack's repository.
    List,
}

#[derive(Debug, Args)]
pub struct ImageBuildArgs {
    /// A runtime to build (repeatable; default: every runtime in the stack's BuildRuntimes).
    #[arg(long = "runtime", value_name = "RUNTIME")]
    pub runtimes: Vec<Runtime>,
    /// Follow the builds until each image exists or a build failed (exit 1).
    #[arg(long)]
    pub wait: bool,
    /// The layerforge source tree whose builder/, src/, Cargo.toml… are built.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub source: PathBuf,
}

fn image_error(err: ImageError) -> CliError {
    match err {
        ImageError::InvalidInput { .. } | ImageError::Sources { .. } => {
            CliError::Invalid(err.to_string())
        }
        ImageError::Aws(_) => CliError::Aws(err.to_string()),
    }
}

/// Every output of the stack, by name.
async fn image_stack_outputs(ctx: &Context) -> Result<BTreeMap<String, String>, CliError> {
    let ResolvedTarget::Named { stack, .. } = &ctx.target else {
        return Err(CliError::Invalid(
            "image: the local cloud has no CodeBuild; layer-builder runs on the host there".into(),
        ));
    };
    stack_outputs(&ctx.sdk, stack, "").await
}

pub async fn run(target: &Target, command: ImageCommand) -> Result<u8, CliError> {
    let ctx = Context::new(target).await?;
    let stack = ImageStack::from_outputs(&image_stack_outputs(&ctx).await?).map_err(image_error)?;
    let clients = ImageClients::new(&ctx.sdk);
    match command {
        ImageCommand::List => {
            for row in image::list_images(&clients.ecr, &stack)
                .await
                .map_err(image_error)?
            {
                println!("{row}");
            }
            Ok(0)
        }
        ImageCommand::Build(args) => {
            let work = tempfile_dir()?;
            let options = BuildOptions {
                source_root: args.source,
                work_dir: work.clone(),
                runtimes: args.runtimes,
                wait: args.wait,
                poll: POLL,
            };
            let result =
                image::build_images(&clients, &stack, &options, &mut |p| eprintln!("{p}")).await;
            let _ = std::fs::remove_dir_all(&work);
            let report = result.map_err(image_error)?;
            for image in &report.images {
                println!("{image}");
            }
            let waiting = report
                .images
                .iter()
                .any(|i| matches!(i.outcome, ImageOutcome::Started { .. }));
            if waiting {
                eprintln!("the builds go on; `layerforge image list` shows what exists");
            }
            Ok(if report.succeeded() { 0 } else { 1 })
        }
    }
}

fn tempfile_dir() -> Result<PathBuf, CliError> {
    let dir = std::env::temp_dir().join(format!("layerforge-image-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| CliError::Aws(format!("{}: {e}", dir.display())))?;
    Ok(dir)
}
