//! The AWS clients, built once at init and shared by reference across invocations, each with the retry mode its
//! service's throttling calls for.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};

/// ELB Describe* calls share one token bucket per account and region with every other tool in the account, so the
/// ELB client uses adaptive retry: it slows its own send rate when throttled instead of retrying in a storm.
const ELB_MAX_ATTEMPTS: u32 = 8;
const EC2_MAX_ATTEMPTS: u32 = 10;
const SNS_MAX_ATTEMPTS: u32 = 4;
/// Backoff never grows past this: the whole job has two minutes.
const MAX_BACKOFF: Duration = Duration::from_secs(4);
/// One attempt that hangs longer than this is abandoned and retried.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// The function's own SDK configuration: region, credentials and `AWS_ENDPOINT_URL` loaded the standard way, with the
/// attempt timeout every client shares.
pub async fn load_shared() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(
            TimeoutConfig::builder()
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .build(),
        )
        .load()
        .await
}

#[derive(Clone, Debug)]
pub struct Clients {
    pub elb: aws_sdk_elasticloadbalancingv2::Client,
    pub autoscaling: aws_sdk_autoscaling::Client,
    pub ec2: aws_sdk_ec2::Client,
    pub sns: aws_sdk_sns::Client,
    /// The registration index's table; unused when the index is off.
    pub dynamodb: aws_sdk_dynamodb::Client,
    /// The records' HMAC key (`RECORD_KEY_ID`); unused without one.
    pub kms: aws_sdk_kms::Client,
}

impl Clients {
    pub fn from_shared(shared: &SdkConfig) -> Self {
        let elb = aws_sdk_elasticloadbalancingv2::config::Builder::from(shared)
            .retry_config(
                RetryConfig::adaptive()
                    .with_max_attempts(ELB_MAX_ATTEMPTS)
                    .with_max_backoff(MAX_BACKOFF),
            )
            .build();
        // EC2 throttles each mutating action at a few per second once its burst is spent, and a batch of instances
        // spends it fast; adaptive retry slows the client down instead of giving up after a few quick tries.
        let ec2 = aws_sdk_ec2::config::Builder::from(shared)
            .retry_config(
                RetryConfig::adaptive()
                    .with_max_attempts(EC2_MAX_ATTEMPTS)
                    .with_max_backoff(MAX_BACKOFF),
            )
            .build();
        let autoscaling = aws_sdk_autoscaling::config::Builder::from(shared)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(EC2_MAX_ATTEMPTS)
                    .with_max_backoff(MAX_BACKOFF),
            )
            .build();
        let sns = aws_sdk_sns::config::Builder::from(shared)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(SNS_MAX_ATTEMPTS)
                    .with_max_backoff(MAX_BACKOFF),
            )
            .build();
        let dynamodb = aws_sdk_dynamodb::config::Builder::from(shared)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(EC2_MAX_ATTEMPTS)
                    .with_max_backoff(MAX_BACKOFF),
            )
            .build();
        let kms = aws_sdk_kms::config::Builder::from(shared)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(SNS_MAX_ATTEMPTS)
                    .with_max_backoff(MAX_BACKOFF),
            )
            .build();
        Clients {
            kms: aws_sdk_kms::Client::from_conf(kms),
            elb: aws_sdk_elasticloadbalancingv2::Client::from_conf(elb),
            autoscaling: aws_sdk_autoscaling::Client::from_conf(autoscaling),
            ec2: aws_sdk_ec2::Client::from_conf(ec2),
            sns: aws_sdk_sns::Client::from_conf(sns),
            dynamodb: aws_sdk_dynamodb::Client::from_conf(dynamodb),
        }
    }
}
