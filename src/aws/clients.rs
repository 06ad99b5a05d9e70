//! The AWS clients, built once at init and shared by reference across invocations, each with its retry policy
//! (`retry::Policy`), the pacing of its action classes (`paced`), and for the dependencies off the safety path a
//! breaker (`breaker`). The table has two clients: one as a dependency (the claim, the index), and one for the wave's
//! roster, whose calls coordinate the cleanups of a wave and are not given up like a dependency's.

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_smithy_runtime_api::client::http::SharedHttpClient;

use super::breaker::Breaker;
use super::paced::{Ec2Budget, ElbBudget, Meter, PacedClient};
use super::retry::{CallBudget, Policy};

/// One attempt that hangs longer than this is abandoned, for the clients without a policy of their own (the secret
/// stores, STS).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// The function's own SDK configuration: region, credentials and `AWS_ENDPOINT_URL` loaded the standard way.
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
    /// The same table for the wave's roster (`Policy::COORDINATION`): no breaker.
    pub roster: aws_sdk_dynamodb::Client,
    /// Whether `dynamodb`'s breaker has opened in this invocation: a cleanup then does not join a wave.
    pub table_breaker: Breaker,
    /// The records' HMAC key (`RECORD_KEY_ID`); unused without one.
    pub kms: aws_sdk_kms::Client,
    /// The invocation every client's retries and breakers go by; the handler begins each one.
    pub budget: CallBudget,
    /// This place's ELB budget, as every ELB attempt spends it at the connector: the wave asks it when a call could
    /// go before it composes one.
    pub elb_budget: ElbBudget,
}

/// ELB Describe* calls per second when no rate is configured: the reads' share of the account's 10 a second.
pub const DEFAULT_DESCRIBE_RATE: u32 = 8;

/// The HTTPS client the SDK would make for itself (hyper 1, rustls with aws-lc, the proxy from the environment), made
/// here so that the paced connector can wrap it: the shared configuration holds no HTTP client unless one was given.
fn default_http_client() -> SharedHttpClient {
    use aws_smithy_http_client::proxy::ProxyConfig;
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    use aws_smithy_http_client::{Builder, ConnectorBuilder};
    Builder::new().build_with_connector_fn(|settings, components| {
        let mut connector = ConnectorBuilder::default().tls_provider(Provider::Rustls(CryptoMode::AwsLc));
        connector.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            connector.set_sleep_impl(components.sleep_impl());
        }
        connector.set_proxy_config(Some(ProxyConfig::from_env()));
        connector.build()
    })
}

/// One service's config builder from the shared configuration, with `policy`'s retries and timeouts, the deadline
/// classifier, and, when `pacing` is given, the paced connector over `http` with the interceptor that tags attempts.
macro_rules! configured {
    ($service:ident, $shared:expr, $http:expr, $policy:expr, $budget:expr, $pacing:expr) => {{
        let policy: Policy = $policy;
        let builder = $service::config::Builder::from($shared)
            .retry_config(policy.retry_config())
            .retry_partition(policy.partition())
            .timeout_config(policy.timeouts())
            .retry_classifier(policy.classifier($budget));
        let meter: Option<Meter> = $pacing;
        match meter {
            Some(meter) => builder
                .http_client(PacedClient($http.clone()))
                .interceptor(meter.interceptor()),
            None => builder,
        }
    }};
}

impl Clients {
    /// Clients over `shared`, with a budget of their own and the default Describe* rate.
    pub fn from_shared(shared: &SdkConfig) -> Self {
        Clients::going_by(shared, &CallBudget::default(), DEFAULT_DESCRIBE_RATE)
    }

    /// Clients of one place (region and account) over `shared`, going by the process's `budget`, allowing themselves
    /// `describe_rate` ELB Describe* calls per second (`ELB_DESCRIBE_RATE`).
    pub fn going_by(shared: &SdkConfig, budget: &CallBudget, describe_rate: u32) -> Self {
        let elb_budget = ElbBudget::new(describe_rate);
        let http = shared.http_client().unwrap_or_else(default_http_client);
        let elb = configured!(
            aws_sdk_elasticloadbalancingv2,
            shared,
            http,
            Policy::ELB,
            budget,
            Some(Meter::Elb(elb_budget.clone()))
        );
        let ec2 = configured!(
            aws_sdk_ec2,
            shared,
            http,
            Policy::EC2,
            budget,
            Some(Meter::Ec2(Ec2Budget::new()))
        );
        let autoscaling = configured!(aws_sdk_autoscaling, shared, http, Policy::AUTOSCALING, budget, None);
        let sns = configured!(aws_sdk_sns, shared, http, Policy::SNS, budget, None);
        let table_breaker = Breaker::new("DynamoDB", budget);
        let dynamodb = configured!(aws_sdk_dynamodb, shared, http, Policy::DYNAMODB, budget, None)
            .interceptor(table_breaker.clone());
        let roster = configured!(aws_sdk_dynamodb, shared, http, Policy::COORDINATION, budget, None);
        let kms =
            configured!(aws_sdk_kms, shared, http, Policy::KMS, budget, None).interceptor(Breaker::new("KMS", budget));
        Clients {
            elb: aws_sdk_elasticloadbalancingv2::Client::from_conf(elb.build()),
            autoscaling: aws_sdk_autoscaling::Client::from_conf(autoscaling.build()),
            ec2: aws_sdk_ec2::Client::from_conf(ec2.build()),
            sns: aws_sdk_sns::Client::from_conf(sns.build()),
            dynamodb: aws_sdk_dynamodb::Client::from_conf(dynamodb.build()),
            roster: aws_sdk_dynamodb::Client::from_conf(roster.build()),
            table_breaker,
            kms: aws_sdk_kms::Client::from_conf(kms.build()),
            budget: budget.clone(),
            elb_budget,
        }
    }
}
