//! What every part of publish-layer shares: its state (clients, configuration, the zip check's bounds) and the
//! timing of the exactly-once protocol ([`Guard`]).

use std::{sync::Arc, time::Duration};

use crate::{config::Config, zipcheck::Limits};

/// publish-layer's function timeout: template.yaml's `PublishLayerFunction` `Timeout` is this value (checked by
/// the integration tests), and a claim whose owner's deadline is unknown lasts this long plus the clock margin.
pub const FUNCTION_TIMEOUT: Duration = Duration::from_secs(120);

/// Timing of the exactly-once protocol; every value is injectable so that tests run in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guard {
    /// How long a claim protects its owner when the owner's deadline is unknown.
    pub lease: Duration,
    /// Added to the owner's deadline: how far clocks (Lambda's deadline, the other deliveries') may disagree.
    pub clock_margin: Duration,
    /// How long a losing delivery waits for the winner's outcome at most before failing (transiently).
    pub max_wait: Duration,
    /// Time kept before the invocation's deadline to report a failure instead of being cut off.
    pub deadline_reserve: Duration,
    /// First polling interval of a loser; doubles up to `max_poll`.
    pub first_poll: Duration,
    pub max_poll: Duration,
    /// PublishLayerVersion calls per invocation at most (after retryable failures, each preceded by the look
    /// for an existing version with the CodeSha256).
    pub publish_attempts: u32,
    /// Wait before the second attempt; doubles for each further one.
    pub publish_backoff: Duration,
}

/// The clock margin added to a claim's owner's deadline.
const CLOCK_MARGIN: Duration = Duration::from_secs(10);
/// Kept free before the deadline.
const DEADLINE_RESERVE: Duration = Duration::from_secs(5);

impl Default for Guard {
    fn default() -> Self {
        Self {
            lease: FUNCTION_TIMEOUT + CLOCK_MARGIN,
            clock_margin: CLOCK_MARGIN,
            // A loser may wait out a crashed winner's lease within its own invocation.
            max_wait: FUNCTION_TIMEOUT - DEADLINE_RESERVE,
            deadline_reserve: DEADLINE_RESERVE,
            first_poll: Duration::from_millis(100),
            max_poll: Duration::from_secs(2),
            publish_attempts: 3,
            publish_backoff: Duration::from_secs(1),
        }
    }
}

/// What publish-layer needs, built once per cold start and cheap to clone.
#[derive(Clone, Debug)]
pub struct PublishState {
    pub config: Arc<Config>,
    pub s3: aws_sdk_s3::Client,
    pub lambda: aws_sdk_lambda::Client,
    /// Where the latest pointers are mirrored ([`super::latest`]); `None` (or no `STACK_NAME`): no pointer.
    pub ssm: Option<aws_sdk_ssm::Client>,
    pub guard: Guard,
    /// The zip check's bounds ([`Limits::default`]; tests lower them).
    pub limits: Limits,
}

impl PublishState {
    pub fn new(
        config: Arc<Config>,
        s3: aws_sdk_s3::Client,
        lambda: aws_sdk_lambda::Client,
    ) -> Self {
        Self {
            config,
            s3,
            lambda,
            ssm: None,
            guard: Guard::default(),
            limits: Limits::default(),
        }
    }

    /// The same state keeping latest pointers through `ssm` (when the configuration names the stack).
    pub fn with_ssm(mut self, ssm: aws_sdk_ssm::Client) -> Self {
        self.ssm = Some(ssm);
        self
    }
}
