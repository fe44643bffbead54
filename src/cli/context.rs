//! What every command works with: where the functions are ([`Target`], the global options), the AWS side
//! resolved from it ([`Context`]: SDK configurations, the functions' names, Invoke and how its failures map to a
//! [`CliError`]), and the one JSON object `--json` prints.

use std::{collections::BTreeMap, path::PathBuf};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_smithy_types::Blob;
use clap::Args;
use serde_json::Value;

use super::error::CliError;
use crate::{
    aws::error_chain,
    local::{self, State},
};

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

/// The two functions the commands invoke.
#[derive(Clone, Copy)]
enum Function {
    Submit,
    Status,
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
        self.function_name(Function::Submit).await
    }

    /// The build-status function's name.
    pub async fn status_function(&self) -> Result<String, CliError> {
        self.function_name(Function::Status).await
    }

    /// A function's name: the local cloud's, else the one its option gave, else the stack's output.
    async fn function_name(&self, function: Function) -> Result<String, CliError> {
        let (local_name, output, option) = match function {
            Function::Submit => (
                local::SUBMIT_FUNCTION,
                "SubmitBuildFunctionName",
                "--submit-function",
            ),
            Function::Status => (
                local::STATUS_FUNCTION,
                "BuildStatusFunctionName",
                "--status-function",
            ),
        };
        let ResolvedTarget::Named {
            submit,
            status,
            stack,
        } = &self.target
        else {
            return Ok(local_name.into());
        };
        let given = match function {
            Function::Submit => submit,
            Function::Status => status,
        };
        match given {
            Some(f) => Ok(f.clone()),
            None => stack_output(&self.sdk, stack, output, option).await,
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

/// Every output of `stack`, by name (DescribeStacks). A failure names the call, the stack and the error with
/// its sources, then `hint`.
pub async fn stack_outputs(
    sdk: &SdkConfig,
    stack: &str,
    hint: &str,
) -> Result<BTreeMap<String, String>, CliError> {
    let described = aws_sdk_cloudformation::Client::new(sdk)
        .describe_stacks()
        .stack_name(stack)
        .send()
        .await
        .map_err(|e| CliError::Aws(format!("DescribeStacks {stack}: {}{hint}", error_chain(&e))))?;
    Ok(described
        .stacks()
        .first()
        .map(|s| {
            s.outputs()
                .iter()
                .filter_map(|o| Some((o.output_key()?.to_owned(), o.output_value()?.to_owned())))
                .collect()
        })
        .unwrap_or_default())
}

/// The stack output `output`, which names a function (else the option `option` does).
async fn stack_output(
    sdk: &SdkConfig,
    stack: &str,
    output: &str,
    option: &str,
) -> Result<String, CliError> {
    let hint =
        format!(" (deploy the stack, pass --stack NAME, or name the function with {option})");
    stack_outputs(sdk, stack, &hint)
        .await?
        .remove(output)
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
}
