//! `submit-build`: a build request in, an AWS Batch job (or a cached artifact) out.

use std::sync::Arc;

use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use layerforge::{aws, config::Config, function_error::FunctionError, submit};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    aws::init_tracing();
    let config = Arc::new(Config::from_env()?);
    let sdk = aws::lambda_sdk_config();
    let state = submit::SubmitState {
        config,
        s3: aws::s3_client(&sdk),
        batch: aws::batch_client(&sdk),
        lambda: Some(aws::lambda_client(&sdk)),
        invoke: Some(aws::invoke_client(&sdk)),
    };
    run(service_fn(move |event: LambdaEvent<Value>| {
        let state = state.clone();
        async move {
            layerforge::matrix::submit::handle(&state, event.payload)
                .await
                .map_err(FunctionError::from)
        }
    }))
    .await
}
