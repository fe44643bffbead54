//! `prune-layers`: the optional scheduled pruning (template parameter `PruneSchedule`, off by default): every
//! layer this stack built, by `PRUNE_KEEP`/`PRUNE_OLDER_THAN_DAYS`/`PRUNE_INCLUDE_SHARED` ([`layerforge::prune`]).

use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use layerforge::{aws, config::Config, prune};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    aws::init_tracing();
    let config = Config::from_env()?;
    let policy = prune::scheduled_policy(|k| std::env::var(k).ok())?;
    let sdk = aws::lambda_sdk_config();
    let (s3, lambda) = (aws::s3_client(&sdk), aws::lambda_client(&sdk));
    run(service_fn(move |_event: LambdaEvent<Value>| {
        let (s3, lambda, config, policy) =
            (s3.clone(), lambda.clone(), config.clone(), policy.clone());
        async move {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            let reports = prune::scheduled(&s3, &lambda, &config, &policy, now)
                .await
                .map_err(|e| Error::from(e.to_string()))?;
            Ok::<_, Error>(serde_json::json!({ "layers": reports }))
        }
    }))
    .await
}
