//! Hands a notice to the agent function (spot-cleanup deployed with `ENTRY_POINT=agent`, the only one a node's role
//! may invoke): one asynchronous Invoke (`InvocationType=Event`), retried with bounded backoff until the notice's
//! deadline, after which the instance is gone and retrying has no point.

use std::time::Duration;

use aws_config::environment::EnvironmentVariableRegionProvider;
use aws_config::meta::region::RegionProviderChain;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_lambda::error::DisplayErrorContext;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use chrono::{DateTime, Utc};

/// The first retry waits this long; each next one twice as long, up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Keeps the gaps short enough that a two-minute notice still gets a dozen tries.
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// One hung attempt must not eat the notice.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// How one notice's delivery ended.
#[derive(Debug, PartialEq)]
pub enum Delivery {
    Accepted { attempts: u32 },
    GaveUp { attempts: u32, last_error: String },
}

#[derive(Clone, Debug)]
pub struct Invoker {
    client: aws_sdk_lambda::Client,
    function: String,
}

impl Invoker {
    /// Credentials the standard way (IRSA, Pod Identity, instance profile, environment) and `AWS_ENDPOINT_URL`. The
    /// region is `AWS_REGION` when set, else the instance's own from its identity document.
    pub async fn from_env(function: String, instance_region: &str) -> Self {
        // Not the SDK's default region chain: its last resort asks instance metadata again, which the identity
        // document has already answered.
        let region = RegionProviderChain::first_try(EnvironmentVariableRegionProvider::new())
            .or_else(Region::new(instance_region.to_owned()));
        let shared = aws_config::defaults(BehaviorVersion::latest())
            .region(region)
            // The agent retries with its own backoff until the deadline, so one SDK attempt is one logged attempt.
            .retry_config(RetryConfig::standard().with_max_attempts(1))
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                    .build(),
            )
            .load()
            .await;
        Self {
            client: aws_sdk_lambda::Client::new(&shared),
            function,
        }
    }

    /// Invoke until Lambda accepts the event or `deadline` passes. There is always at least one attempt.
    pub async fn deliver(&self, payload: &[u8], deadline: DateTime<Utc>) -> Delivery {
        let mut backoff = FIRST_BACKOFF;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let sent = self
                .client
                .invoke()
                .function_name(&self.function)
                .invocation_type(InvocationType::Event)
                .payload(Blob::new(payload))
                .send()
                .await;
            let error = match sent {
                Ok(_) => return Delivery::Accepted { attempts },
                Err(e) => DisplayErrorContext(&e).to_string(),
            };
            let left = (deadline - Utc::now()).to_std().unwrap_or_default();
            if left.is_zero() {
                return Delivery::GaveUp {
                    attempts,
                    last_error: error,
                };
            }
            let wait = backoff.min(left);
            tracing::warn!(
                function = %self.function,
                attempt = attempts,
                retry_in_ms = wait.as_millis() as u64,
                error,
                "invoke failed; retrying"
            );
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}
