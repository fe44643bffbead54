//! SDK configuration and clients, built once per process and shared (cheap to clone).
//!
//! `AWS_ENDPOINT_URL` (read by `aws-config` itself) points every client at a local endpoint such as moto's
//! server; S3 then needs path-style addressing, which [`s3_client`] turns on whenever an endpoint is set.

use aws_config::{BehaviorVersion, SdkConfig};
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// Loads the shared SDK configuration from the environment (region, credentials, endpoint).
pub async fn sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}

/// The SDK configuration inside Lambda (also under `sam local invoke` and `cargo lambda watch`): Lambda hands a
/// function its role's credentials and its region as environment variables (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`: "Defined runtime environment variables" in the
/// Lambda developer guide), so the functions read only those, and `AWS_ENDPOINT_URL` for a local endpoint.
/// Not going through [`aws_config::ConfigLoader`] keeps its default chains (profile files, SSO, STS web
/// identity, IMDS, ECS, credential processes) out of the function binaries: about 1 MB of each (issue 14).
/// Retries and timeouts are the SDK's defaults (standard mode, 3 attempts; 3.1 s connect timeout).
/// layer-builder (ECS credentials) and the CLI (profiles, SSO) use [`sdk_config`].
pub fn lambda_sdk_config() -> SdkConfig {
    lambda_sdk_config_from(|name| std::env::var(name).ok())
}

fn lambda_sdk_config_from(var: impl Fn(&str) -> Option<String>) -> SdkConfig {
    let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
    let region = var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION"));
    let mut builder = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(region.map(aws_config::Region::new))
        .credentials_provider(aws_sdk_s3::config::SharedCredentialsProvider::new(
            aws_config::environment::EnvironmentVariableCredentialsProvider::new(),
        ))
        .retry_config(aws_config::retry::RetryConfig::standard());
    if let Some(url) = var("AWS_ENDPOINT_URL") {
        builder = builder.endpoint_url(url);
    }
    builder.build()
}

/// An S3 client; path-style when a custom endpoint is configured (moto, LocalStack, MinIO).
pub fn s3_client(sdk: &SdkConfig) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::config::Builder::from(sdk)
        .force_path_style(sdk.endpoint_url().is_some())
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

pub fn batch_client(sdk: &SdkConfig) -> aws_sdk_batch::Client {
    aws_sdk_batch::Client::new(sdk)
}

pub fn lambda_client(sdk: &SdkConfig) -> aws_sdk_lambda::Client {
    aws_sdk_lambda::Client::new(sdk)
}

/// The environment variable naming the endpoint that runs functions (`Invoke`) when it isn't Lambda's own:
/// the local cloud's Lambda front. Unset in AWS.
pub const INVOKE_ENDPOINT_ENV: &str = "LAYERFORGE_INVOKE_ENDPOINT";

/// The Lambda client that invokes functions (submit-build's invocation of the fast builder): Lambda's endpoint,
/// or [`INVOKE_ENDPOINT_ENV`]'s.
pub fn invoke_client(sdk: &SdkConfig) -> aws_sdk_lambda::Client {
    match std::env::var(INVOKE_ENDPOINT_ENV)
        .ok()
        .filter(|v| !v.trim().is_empty())
    {
        Some(url) => aws_sdk_lambda::Client::from_conf(
            aws_sdk_lambda::config::Builder::from(sdk)
                .endpoint_url(url)
                .build(),
        ),
        None => aws_sdk_lambda::Client::new(sdk),
    }
}

/// SSM: the latest pointers' parameters (publish-layer writes them, `layerforge latest` reads them).
pub fn ssm_client(sdk: &SdkConfig) -> aws_sdk_ssm::Client {
    aws_sdk_ssm::Client::new(sdk)
}

pub fn logs_client(sdk: &SdkConfig) -> aws_sdk_cloudwatchlogs::Client {
    aws_sdk_cloudwatchlogs::Client::new(sdk)
}

/// JSON logs for Lambda (CloudWatch), level from `RUST_LOG` (default `info`); no ANSI, no timestamps
/// (Lambda adds its own).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .try_init();
}

/// How an AWS failure should be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// Throttling, 5xx, timeouts, connection failures: retrying later can succeed.
    Transient,
    /// The service refused the call for a reason retrying won't change (access denied, bad parameter).
    Permanent,
}

/// A failed AWS call, with the operation, the service's error code and whether it is worth retrying.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{operation} failed ({kind:?}): {code}: {message}")]
pub struct AwsFault {
    pub operation: &'static str,
    pub kind: FaultKind,
    pub code: String,
    pub message: String,
    pub http_status: Option<u16>,
}

impl AwsFault {
    /// Classifies an SDK error: no response, throttling codes and 5xx are transient.
    pub fn from_sdk<E, R>(operation: &'static str, err: &SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug + HttpStatus,
    {
        let http_status = err.raw_response().map(HttpStatus::status);
        let (code, message) = match err {
            SdkError::ServiceError(service) => (
                service.err().code().unwrap_or("Unknown").to_owned(),
                service.err().message().unwrap_or("").to_owned(),
            ),
            other => ("NoResponse".to_owned(), error_chain(other)),
        };
        let transient = match err {
            SdkError::TimeoutError(_)
            | SdkError::DispatchFailure(_)
            | SdkError::ResponseError(_) => true,
            SdkError::ServiceError(_) => {
                http_status.is_some_and(|s| s >= 500 || s == 429)
                    || THROTTLING_CODES.contains(&code.as_str())
            }
            _ => false,
        };
        Self {
            operation,
            kind: if transient {
                FaultKind::Transient
            } else {
                FaultKind::Permanent
            },
            code,
            message,
            http_status,
        }
    }

    pub fn is_transient(&self) -> bool {
        self.kind == FaultKind::Transient
    }

    /// The `errorType` a function answers a fault with: `Transient` when a retry can help, else `AwsError`.
    pub fn error_type(&self) -> &'static str {
        if self.is_transient() {
            "Transient"
        } else {
            "AwsError"
        }
    }
}

/// The error codes AWS services use for throttling (the SDK's own retry classifier list).
const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "RequestThrottled",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
    "ServiceUnavailable",
    "InternalError",
    "InternalFailure",
];

/// The HTTP status of a raw response, whatever the SDK's response type.
pub trait HttpStatus {
    fn status(&self) -> u16;
}

impl HttpStatus for aws_smithy_runtime_api::http::Response {
    fn status(&self) -> u16 {
        self.status().as_u16()
    }
}

/// The error and its sources on one line: SDK errors hide the useful part in the chain.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> SdkConfig {
        lambda_sdk_config_from(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn lambda_config_comes_from_the_runtime_environment() {
        let sdk = config(&[
            ("AWS_REGION", "eu-west-1"),
            ("AWS_DEFAULT_REGION", "us-east-2"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:5000"),
        ]);
        assert_eq!(sdk.region().map(|r| r.as_ref()), Some("eu-west-1"));
        assert_eq!(sdk.endpoint_url(), Some("http://127.0.0.1:5000"));
        assert!(sdk.credentials_provider().is_some());
        assert!(sdk.behavior_version().is_some());
        assert_eq!(
            sdk.retry_config().map(|r| r.max_attempts()),
            Some(3),
            "the SDK's standard retries"
        );
    }

    #[test]
    fn lambda_config_without_endpoint_or_region_variables() {
        let sdk = config(&[
            ("AWS_DEFAULT_REGION", "us-east-2"),
            ("AWS_ENDPOINT_URL", " "),
        ]);
        assert_eq!(sdk.region().map(|r| r.as_ref()), Some("us-east-2"));
        assert_eq!(sdk.endpoint_url(), None, "a blank endpoint is no endpoint");
        let sdk = config(&[]);
        assert_eq!(sdk.region(), None);
    }
}
