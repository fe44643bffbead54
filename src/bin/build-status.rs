//! `build-status`: a job id or an artifact in, the build's state (queued … published, failed, rejected) out.

use std::sync::Arc;

use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use layerforge::{aws, config::Config, function_error::FunctionError, status};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    aws::init_tracing();
    let config = Arc::new(Config::from_env()?);
    let sdk = aws::lambda_sdk_config();
    let state = status::StatusState {
        config,
        s3: aws::s3_client(&sdk),
        batch: aws::batch_client(&sdk),
        logs: aws::logs_client(&sdk),
    };
    run(service_fn(move |event: LambdaEvent<Value>| {
        let state = state.clone();
        async move {
            layerforge::matrix::status::handle(&state, event.payload)
                .await
                .map_err(FunctionError::from)
        }
    }))
    .await
}
