//! `publish-layer`: an S3 upload of a layer zip in, a checked layer version (published once) out.

use std::sync::Arc;

use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use layerforge::{aws, config::Config, function_error::FunctionError, publish};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    aws::init_tracing();
    let config = Arc::new(Config::from_env()?);
    let sdk = aws::lambda_sdk_config();
    let state = publish::PublishState::new(config, aws::s3_client(&sdk), aws::lambda_client(&sdk))
        .with_ssm(aws::ssm_client(&sdk));
    run(service_fn(move |event: LambdaEvent<Value>| {
        let state = state.clone();
        // The invocation's deadline bounds the claims this delivery takes and how long it waits for others.
        async move {
            let deadline = event.context.deadline();
            publish::handle_until(&state, event.payload, Some(deadline))
                .await
                .map_err(FunctionError::from)
        }
    }))
    .await
}
