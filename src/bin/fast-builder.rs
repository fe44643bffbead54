//! `fast-builder`: a wheel-only build in a Lambda function (DESIGN section 12). It runs on the managed
//! `python3.12` runtime (whose interpreter compiles the bytecode and runs uv's resolution) and is started by the
//! runtime's `AWS_LAMBDA_EXEC_WRAPPER` instead of the Python bootstrap: it polls the Runtime API itself. The
//! wrapper's arguments (the runtime's own bootstrap command) are ignored.

use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use layerforge::{
    aws,
    config::Config,
    fast::{function, probe},
    function_error::FunctionError,
};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    aws::init_tracing();
    let config = Config::from_env()?;
    let sdk = aws::lambda_sdk_config();
    let state = function::FastState {
        s3: aws::s3_client(&sdk),
        batch: aws::batch_client(&sdk),
        artifact_prefix: config.artifact_prefix.clone(),
    };
    run(service_fn(move |event: LambdaEvent<Value>| {
        let state = state.clone();
        async move {
            // A matrix's probe (DESIGN section 15), answered synchronously; else a fast build.
            let failed = |message: String| FunctionError {
                error_type: "ProbeFailed".to_owned(),
                error_message: message,
            };
            let answer = if probe::is_probe(&event.payload) {
                tokio::task::spawn_blocking(move || probe::run(event.payload))
                    .await
                    .map_err(|e| failed(e.to_string()))?
                    .map_err(failed)
                    .map(|a| serde_json::to_value(a).unwrap_or_default())?
            } else {
                function::handle(&state, event.payload)
                    .await
                    .map(|o| serde_json::to_value(o).unwrap_or_default())
                    .map_err(FunctionError::from)?
            };
            Ok::<Value, FunctionError>(answer)
        }
    }))
    .await
}
