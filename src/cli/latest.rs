//! `layerforge latest NAME [--runtime R --architecture A]`: the newest layer version of a layer, runtime and
//! architecture, as publish-layer keeps it in the stack's SSM parameter
//! `/layerforge/<stack>/<layer>/<runtime>/<arch>/latest` (DESIGN section 14).

use clap::Args;
use serde_json::json;

use super::context::{Context, ResolvedTarget, Target, print_json};
use super::error::CliError;
use crate::{
    aws::error_chain,
    local,
    publish::parameter_name,
    vocab::{Architecture, Runtime},
};

#[derive(Debug, Args)]
pub struct LatestArgs {
    /// The layer name.
    pub name: String,
    /// Lambda Python runtime.
    #[arg(long, default_value = "python3.12")]
    pub runtime: Runtime,
    /// arm64 or x86_64.
    #[arg(long, default_value = "arm64")]
    pub architecture: Architecture,
    /// Print {"parameter", "layer_version_arn", "version"} as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Prints the ARN the pointer names; a pointer that does not exist (nothing published yet for this layer,
/// runtime and architecture) is exit 2, as a build-status `NotFound` is.
pub async fn run(target: &Target, args: LatestArgs) -> Result<u8, CliError> {
    let ctx = Context::new(target).await?;
    let stack = match &ctx.target {
        ResolvedTarget::Named { stack, .. } => stack.clone(),
        ResolvedTarget::Local => local::STACK.to_owned(),
    };
    let name = parameter_name(
        &stack,
        &args.name,
        args.runtime.as_str(),
        args.architecture.as_str(),
    );
    let ssm = crate::aws::ssm_client(&ctx.sdk);
    let arn = match ssm.get_parameter().name(&name).send().await {
        Ok(out) => out
            .parameter()
            .and_then(|p| p.value())
            .unwrap_or_default()
            .to_owned(),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_parameter_not_found()) =>
        {
            return Err(CliError::Invalid(format!(
                "NotFound: no latest version of {} for {} {} in stack {stack} (parameter {name}): nothing \
                 published yet",
                args.name, args.runtime, args.architecture
            )));
        }
        Err(e) => {
            return Err(CliError::Aws(format!(
                "GetParameter {name}: {}",
                error_chain(&e)
            )));
        }
    };
    if args.json {
        let version = crate::publish::latest::version_of(&arn);
        print_json(&json!({"parameter": name, "layer_version_arn": arn, "version": version}));
    } else {
        println!("{arn}");
    }
    Ok(0)
}
