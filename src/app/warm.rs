//! Warm-up from init: open the TLS connection to every AWS endpoint the cleanup uses before an invocation needs it,
//! and look up the quarantine groups once.
//!
//! On Lambda the first call to each endpoint pays DNS, TCP and a TLS handshake, and the very first one also loads and
//! parses the system's root certificates. At low memory sizes that is CPU-bound and slow; `bench/first_request.py`
//! measures it (see docs/measured.md), and found:
//! - when the event is already waiting as the environment starts (an on-demand cold start, the normal case for this
//!   function), warming does not pay: the first invocation needs the EC2 and ELB connections at once anyway, and the
//!   other handshakes compete with it for the little CPU a small function has, so the time from start to the first
//!   answer stayed the same or grew;
//! - when the environment starts ahead of its first event (provisioned concurrency), the first invocation was up to
//!   2.1 times faster with the connections already open (1.4 times at 512 MB).
//!
//! So it is off unless `WARM_UP=true`; then `main` starts it as a background task at init. What pays in the normal
//! case is memory: see docs/measured.md's recommendation.
//!
//! Only EC2 gets a real API call here (DescribeSecurityGroups for the quarantine groups, which the quarantine step
//! needs anyway). The other endpoints get a *ping*: an SDK request that an interceptor turns, after signing, into an
//! unsigned `GET /` with no body. It opens the connection into the same pool the client uses, but it is no API call:
//! no account can be charged for it, so it never spends a token of the ELB Describe* budget that this function needs
//! at interruption time, never appears in CloudTrail, and needs no IAM permission.

use std::time::{Duration, Instant};

use aws_config::retry::RetryConfig;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextMut;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::ConfigBag;
use aws_smithy_types::error::display::DisplayErrorContext;
use serde::Serialize;

use super::App;

/// The warm-up gives up after this; a slow endpoint is then warmed by the invocation itself.
pub const WARM_UP_LIMIT: Duration = Duration::from_secs(5);

/// Headers that carry the signature or describe the body the ping no longer has.
const DROPPED_HEADERS: [&str; 7] = [
    "authorization",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
    "x-amz-target",
    "content-type",
    "content-length",
];

/// Turns a signed request into an unsigned `GET /` to the same endpoint.
#[derive(Debug)]
struct Ping;

impl Intercept for Ping {
    fn name(&self) -> &'static str {
        "spot-cleanup warm-up ping"
    }

    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request_mut();
        request.set_method("GET")?;
        let root = {
            let uri = request.uri();
            let path_start = uri.find("://").map_or(0, |i| i + 3);
            let authority_end = uri[path_start..].find('/').map_or(uri.len(), |i| path_start + i);
            format!("{}/", &uri[..authority_end])
        };
        request.set_uri(root.as_str())?;
        for name in DROPPED_HEADERS {
            request.headers_mut().remove(name);
        }
        *request.body_mut() = SdkBody::empty();
        Ok(())
    }
}

/// What the warm-up did, for the init log line and for the benchmark.
#[derive(Debug, Default, Serialize)]
pub struct WarmUp {
    /// Endpoints that answered, by client name.
    pub warmed: Vec<&'static str>,
    /// Endpoints that did not answer in time or could not be reached, with why.
    pub failed: Vec<String>,
    /// Whether the quarantine groups were looked up and kept for the first invocation.
    pub quarantine_groups_cached: bool,
    pub ms: u64,
}

/// The task `main` starts at init: warm up, then log what was done.
pub async fn warm_up_in_background(app: &'static App) {
    let report = warm_up(app).await;
    if report.failed.is_empty() {
        tracing::info!(warm_up = ?report, "connections warmed");
    } else {
        tracing::warn!(warm_up = ?report, "some connections could not be warmed; invocations will open them");
    }
}

/// Warm every endpoint at once, for at most `WARM_UP_LIMIT`. Never fails: whatever is not warmed is warmed by the
/// first invocation, as if there had been no warm-up.
pub async fn warm_up(app: &App) -> WarmUp {
    let started = Instant::now();
    let clients = &app.home_place.clients;
    let dynamodb = async {
        if app.home_place.table.is_none() {
            return ("dynamodb", Ok(false));
        }
        ("dynamodb", ping_dynamodb(&clients.dynamodb).await)
    };
    let ec2 = async {
        let looked_up = app.home_place.quarantine_groups.get(&clients.ec2).await;
        ("ec2", looked_up.map(|_| true).map_err(|e| NotWarmed(e.to_string())))
    };
    let elb = async { ("elb", ping_elb(&clients.elb).await) };
    let sns = async { ("sns", ping_sns(&clients.sns).await) };
    let autoscaling = async { ("autoscaling", ping_autoscaling(&clients.autoscaling).await) };

    let mut report = WarmUp::default();
    let all = async { tokio::join!(ec2, elb, sns, autoscaling, dynamodb) };
    match tokio::time::timeout(WARM_UP_LIMIT, all).await {
        Ok((ec2, elb, sns, autoscaling, dynamodb)) => {
            report.quarantine_groups_cached = matches!(ec2.1, Ok(true));
            for (name, outcome) in [ec2, elb, sns, autoscaling, dynamodb] {
                match outcome {
                    Ok(true) => report.warmed.push(name),
                    Ok(false) => {}
                    Err(reason) => report.failed.push(format!("{name}: {reason}")),
                }
            }
        }
        Err(_) => report
            .failed
            .push(format!("not finished within {} ms", WARM_UP_LIMIT.as_millis())),
    }
    report.ms = started.elapsed().as_millis() as u64;
    report
}

// Each ping is one call, without retries, turned into a bare `GET /` by the `Ping` interceptor.

async fn ping_elb(elb: &aws_sdk_elasticloadbalancingv2::Client) -> Result<bool, NotWarmed> {
    let config = aws_sdk_elasticloadbalancingv2::config::Builder::default()
        .retry_config(RetryConfig::disabled())
        .interceptor(Ping);
    answered(
        elb.describe_target_groups()
            .customize()
            .config_override(config)
            .send()
            .await,
    )
}

async fn ping_sns(sns: &aws_sdk_sns::Client) -> Result<bool, NotWarmed> {
    let config = aws_sdk_sns::config::Builder::default()
        .retry_config(RetryConfig::disabled())
        .interceptor(Ping);
    answered(sns.list_topics().customize().config_override(config).send().await)
}

async fn ping_autoscaling(autoscaling: &aws_sdk_autoscaling::Client) -> Result<bool, NotWarmed> {
    let config = aws_sdk_autoscaling::config::Builder::default()
        .retry_config(RetryConfig::disabled())
        .interceptor(Ping);
    let request = autoscaling.describe_auto_scaling_groups().customize();
    answered(request.config_override(config).send().await)
}

async fn ping_dynamodb(dynamodb: &aws_sdk_dynamodb::Client) -> Result<bool, NotWarmed> {
    let config = aws_sdk_dynamodb::config::Builder::default()
        .retry_config(RetryConfig::disabled())
        .interceptor(Ping);
    answered(dynamodb.list_tables().customize().config_override(config).send().await)
}

/// Why an endpoint was not warmed: no answer came back (DNS, TCP, TLS, a timeout), or the quarantine groups could
/// not be looked up.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct NotWarmed(String);

/// A ping has done its job when the endpoint answered at all, whatever it said; it fails when no answer came back.
fn answered<T, E, R>(result: Result<T, SdkError<E, R>>) -> Result<bool, NotWarmed>
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match result {
        Ok(_) | Err(SdkError::ServiceError(_) | SdkError::ResponseError(_)) => Ok(true),
        Err(e) => Err(NotWarmed(DisplayErrorContext(&e).to_string())),
    }
}
