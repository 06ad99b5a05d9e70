//! Shared fixtures for the tests that run against moto: the server itself, SDK clients pointed at it, a fleet of
//! Spot instances behind target groups, and a way to read what was published to SNS.

pub mod fleet;
pub mod identity;
pub mod proxy;
pub mod runtime;
pub mod template;

pub use spot_cleanup_test_support::{Background, free_port, http, wait_for_port};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ec2::config::Credentials;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

pub const REGION: &str = "us-east-1";

pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The project venv's binaries, installed by `scripts/setup test`.
pub fn venv_bin(name: &str) -> PathBuf {
    let path = repo_root().join(".venv/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup test (scripts/test does it for you)",
        path.display()
    );
    path
}

/// A moto server of this test's own, on a free loopback port.
pub struct Moto {
    _process: Background,
    pub endpoint: String,
}

impl Moto {
    pub fn start() -> Moto {
        let port = free_port();
        let child = Command::new(venv_bin("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server starts");
        let process = Background(child);
        wait_for_port(port, "moto_server");
        Moto {
            _process: process,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Environment that points the real SDK (inside the function binary) at this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_REGION", REGION.to_owned()),
            ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ]
    }

    /// SDK configuration for this server, without touching the process environment.
    pub async fn sdk_config(&self) -> SdkConfig {
        sdk_config_for(&self.endpoint).await
    }
}

/// SDK configuration for an endpoint: moto itself, or a proxy in front of it.
pub async fn sdk_config_for(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
        .endpoint_url(endpoint)
        .load()
        .await
}

/// Counts the HTTP requests each client sends, by operation name (retries count once per attempt), and keeps the
/// order they were sent in.
#[derive(Clone, Debug, Default)]
pub struct CallCounter(Arc<Mutex<Vec<String>>>);

impl CallCounter {
    pub fn get(&self, operation: &str) -> usize {
        self.0.lock().unwrap().iter().filter(|o| *o == operation).count()
    }

    pub fn snapshot(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for operation in self.0.lock().unwrap().iter() {
            *counts.entry(operation.clone()).or_default() += 1;
        }
        counts
    }

    /// Every operation sent so far, in order.
    pub fn sequence(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "CallCounter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(metadata) = cfg.load::<Metadata>() {
            self.0.lock().unwrap().push(metadata.name().to_owned());
        }
        Ok(())
    }
}

/// DynamoDB applies the writes to an item one at a time, so of two conditional writes racing for a claim one fails.
/// moto evaluates conditions without a lock on a threaded server, so both can pass; its DynamoDB calls are sent one
/// at a time here instead.
#[derive(Debug)]
struct OneAtATime {
    inner: aws_smithy_runtime_api::client::http::SharedHttpClient,
    turn: Arc<tokio::sync::Mutex<()>>,
}

impl aws_smithy_runtime_api::client::http::HttpClient for OneAtATime {
    fn http_connector(
        &self,
        settings: &aws_smithy_runtime_api::client::http::HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> aws_smithy_runtime_api::client::http::SharedHttpConnector {
        aws_smithy_runtime_api::client::http::SharedHttpConnector::new(OneConnector {
            inner: self.inner.http_connector(settings, components),
            turn: self.turn.clone(),
        })
    }
}

#[derive(Debug)]
struct OneConnector {
    inner: aws_smithy_runtime_api::client::http::SharedHttpConnector,
    turn: Arc<tokio::sync::Mutex<()>>,
}

impl aws_smithy_runtime_api::client::http::HttpConnector for OneConnector {
    fn call(
        &self,
        request: aws_smithy_runtime_api::client::orchestrator::HttpRequest,
    ) -> aws_smithy_runtime_api::client::http::HttpConnectorFuture {
        let (inner, turn) = (self.inner.clone(), self.turn.clone());
        aws_smithy_runtime_api::client::http::HttpConnectorFuture::new(async move {
            let _turn = turn.lock().await;
            inner.call(request).await
        })
    }
}

/// The function's clients against moto, with every request counted (and DynamoDB's sent one at a time, as DynamoDB
/// serializes an item's writes: see `OneAtATime`).
pub fn counted_clients(shared: &SdkConfig) -> (spot_cleanup::Clients, CallCounter) {
    let counter = CallCounter::default();
    let clients = spot_cleanup::Clients::from_shared(shared);
    let elb = aws_sdk_elasticloadbalancingv2::Client::from_conf(
        clients.elb.config().to_builder().interceptor(counter.clone()).build(),
    );
    let ec2 = aws_sdk_ec2::Client::from_conf(clients.ec2.config().to_builder().interceptor(counter.clone()).build());
    let sns = aws_sdk_sns::Client::from_conf(clients.sns.config().to_builder().interceptor(counter.clone()).build());
    let autoscaling = aws_sdk_autoscaling::Client::from_conf(
        clients
            .autoscaling
            .config()
            .to_builder()
            .interceptor(counter.clone())
            .build(),
    );
    // The ELB client's HTTP client is the paced one over the function's own: the one to send DynamoDB calls through.
    let inner = clients
        .elb
        .config()
        .http_client()
        .expect("the function's clients name their HTTP client");
    // The wave's roster client takes its turns with the other: one table.
    let turn: Arc<tokio::sync::Mutex<()>> = Arc::default();
    let one_at_a_time = |client: &aws_sdk_dynamodb::Client| {
        let config = client
            .config()
            .to_builder()
            .interceptor(counter.clone())
            .http_client(OneAtATime {
                inner: inner.clone(),
                turn: turn.clone(),
            })
            .build();
        aws_sdk_dynamodb::Client::from_conf(config)
    };
    let dynamodb = one_at_a_time(&clients.dynamodb);
    let roster = one_at_a_time(&clients.roster);
    (
        spot_cleanup::Clients {
            elb,
            ec2,
            sns,
            autoscaling,
            dynamodb,
            roster,
            table_breaker: clients.table_breaker.clone(),
            kms: clients.kms.clone(),
            budget: clients.budget.clone(),
            elb_budget: clients.elb_budget.clone(),
        },
        counter,
    )
}

/// The registration index's table, shaped as template.yaml declares it: pk and sk, both strings, on demand.
pub async fn create_index_table(shared: &SdkConfig, name: &str) {
    use aws_sdk_dynamodb::types::{AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType};
    let dynamodb = aws_sdk_dynamodb::Client::new(shared);
    let attribute = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .unwrap()
    };
    let key = |name: &str, kind: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .unwrap()
    };
    dynamodb
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute("pk"))
        .attribute_definitions(attribute("sk"))
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .send()
        .await
        .unwrap();
}

/// A sample event from `events/`, with its instance id swapped for one of the fleet's and its times moved to now, as
/// if the interruption notice had just been given.
pub fn event_for(file: &str, instance_id: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(repo_root().join("events").join(file)).expect("sample event exists");
    let text = text.replace("i-0123456789abcdef0", instance_id);
    let mut event: serde_json::Value = serde_json::from_str(&text).expect("sample event is JSON");
    let now = chrono::Utc::now();
    let rfc3339 = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    if event.get("detail-type").is_some() {
        event["time"] = rfc3339(now).into();
    } else if event.get("time").is_some() {
        event["time"] = rfc3339(now + chrono::Duration::seconds(120)).into();
    }
    // The message an Auto Scaling lifecycle hook sends straight to SQS says when in `Time`.
    if event.get("Time").is_some() {
        event["Time"] = rfc3339(now).into();
    }
    event
}

/// A sample from `events/` as text, with the instance id swapped for `instance_id` and every time in it (nested
/// messages' too: they are escaped JSON inside JSON) moved into the current minute.
pub fn live_sample(file: &str, instance_id: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(repo_root().join("events").join(file)).expect("sample exists");
    let minute = chrono::Utc::now().format("%Y-%m-%dT%H:%M:").to_string();
    let text = text
        .replace("i-0123456789abcdef0", instance_id)
        .replace("2026-11-21T10:00:", &minute);
    serde_json::from_str(&text).expect("sample is JSON")
}

/// The (target group name, target id, port) of every target a summary says was removed.
pub fn removed(summary: &spot_cleanup::Summary) -> std::collections::BTreeSet<fleet::Registration> {
    summary
        .removed
        .iter()
        .map(|t| (t.target_group_name.clone(), t.target_id.clone(), t.port))
        .collect()
}
