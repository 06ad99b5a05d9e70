//! The monitoring step against stand-ins for Datadog, Mackerel and a webhook (a local HTTP server that records every
//! request), with secrets kept in moto's SSM Parameter Store and Secrets Manager: each system gets exactly the request
//! its API documents, a failure is reported per system, and a failing system never holds the cleanup back.

use crate::common;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::Moto;
use common::fleet::Fleet;
use common::http::{HttpServer, Reply, Request as Seen};
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};
use spot_cleanup::Config;
use spot_cleanup::changes::{HostChange, System};
use spot_cleanup::config::ConfigError;
use spot_cleanup::input::{Action, Source};
use spot_cleanup::input::{InstanceId, Request, Trigger};
use spot_cleanup::monitoring::secrets::SecretClients;
use spot_cleanup::monitoring::{Monitoring, MonitoringConfig};
use spot_cleanup::{App, Summary, handle};

const INSTANCE: &str = "i-0123456789abcdef0";

/// The monitoring settings `vars` give, read the way the function reads its environment.
fn config(vars: &[(&str, String)]) -> Result<MonitoringConfig, ConfigError> {
    let mut vars: HashMap<&str, String> = vars.iter().cloned().collect();
    vars.insert(
        "SNS_TOPIC_ARN",
        "arn:aws:sns:us-east-1:123456789012:spot-cleanup".into(),
    );
    vars.insert("QUARANTINE_SECURITY_GROUP_ID", "sg-0123abcd".into());
    Config::from_lookup(|name: &str| vars.get(name).cloned()).map(|c| c.monitoring)
}

/// An EventBridge interruption warning given at 01:00:00, so the instance goes at 01:02:00.
fn warning() -> Request {
    Request {
        instance_id: InstanceId::parse(INSTANCE).unwrap(),
        trigger: Trigger {
            event_source: Some("aws.ec2".into()),
            detail_type: Some("EC2 Spot Instance Interruption Warning".into()),
            action: Some(Action::Terminate),
            event_id: Some("7e1c1a3e-0000-4000-8000-000000000001".into()),
            event_time: Some("2026-11-22T01:00:00Z".parse().unwrap()),
            region: Some("us-east-1".into()),
            account: Some("123456789012".into()),
            ..Trigger::from_source(Source::EventBridge)
        },
        identity: None,
    }
}

fn body(request: &Seen) -> Value {
    serde_json::from_slice(&request.body).unwrap_or_else(|e| panic!("JSON body ({e}): {}", request.body_text()))
}

fn find<'a>(seen: &'a [Seen], method: &str, path: &str) -> &'a Seen {
    seen.iter()
        .find(|r| r.method == method && r.path == path)
        .unwrap_or_else(|| panic!("no {method} {path} among {seen:#?}"))
}

async fn secret_clients(moto: &Moto) -> SecretClients {
    SecretClients::from_shared(&moto.sdk_config().await)
}

#[tokio::test]
async fn each_system_gets_exactly_its_documented_request_with_secrets_from_ssm_and_secrets_manager() {
    let moto = Moto::start();
    let secrets = secret_clients(&moto).await;
    secrets
        .ssm
        .put_parameter()
        .name("/spot-cleanup/datadog-api-key")
        .value("dd-api-secret")
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .unwrap();
    secrets
        .secrets
        .create_secret()
        .name("spot-cleanup/webhook-token")
        .secret_string("Bearer hook-token")
        .send()
        .await
        .unwrap();
    let api = HttpServer::start(|request| match (request.method.as_str(), request.path.as_str()) {
        ("POST", "/api/v1/host/i-0123456789abcdef0/mute") => {
            Reply::new(200, r#"{"action":"Muted","hostname":"i-0123456789abcdef0"}"#)
        }
        ("GET", "/api/v0/hosts?customIdentifier=i-0123456789abcdef0") => {
            Reply::new(200, r#"{"hosts":[{"id":"3Ab1cDe","name":"ip-10-0-0-1"}]}"#)
        }
        ("POST", "/api/v0/hosts/3Ab1cDe/status") => Reply::new(200, r#"{"success":true}"#),
        ("POST", "/hooks/spot") => Reply::new(204, ""),
        _ => Reply::new(404, "unexpected"),
    });
    let config = config(&[
        ("DATADOG_API_KEY", "ssm:/spot-cleanup/datadog-api-key".into()),
        ("DATADOG_APP_KEY", "dd-app-key".into()),
        ("DATADOG_API_URL", api.url()),
        ("MACKEREL_API_KEY", "mkr-key".into()),
        ("MACKEREL_API_URL", api.url()),
        ("MONITORING_WEBHOOK_URL", format!("{}/hooks/spot", api.url())),
        (
            "MONITORING_WEBHOOK_BODY",
            r#"{"text": "{{instance_id}} goes ({{action}}) at {{terminates_at}}", "event": "{{event_id}}", "account": "{{account}}"}"#.into(),
        ),
        (
            "MONITORING_WEBHOOK_HEADERS",
            r#"{"Authorization": "secretsmanager:spot-cleanup/webhook-token", "X-Team": "platform"}"#.into(),
        ),
    ])
    .unwrap();

    let changes = Monitoring::new(config, Some(secrets))
        .disable_hosts(vec![warning()])
        .await;

    let ok = |system, action: &str| HostChange {
        system,
        host: INSTANCE.into(),
        action: action.into(),
        ok: true,
        error: None,
    };
    assert_eq!(
        changes[&InstanceId::parse(INSTANCE).unwrap()],
        vec![
            ok(System::Datadog, "muted"),
            ok(System::Mackerel, "maintenance"),
            ok(System::Webhook, "notified")
        ]
    );
    let seen = api.requests();
    assert_eq!(seen.len(), 4, "{seen:#?}");

    let mute = find(&seen, "POST", "/api/v1/host/i-0123456789abcdef0/mute");
    assert_eq!(
        mute.header("dd-api-key"),
        Some("dd-api-secret"),
        "the key read from SSM"
    );
    assert_eq!(mute.header("dd-application-key"), Some("dd-app-key"));
    assert_eq!(mute.header("content-type"), Some("application/json"));
    let until: DateTime<Utc> = "2026-11-22T02:02:00Z".parse().unwrap();
    assert_eq!(
        body(mute),
        json!({
            "message": "spot-cleanup: terminate notice for i-0123456789abcdef0",
            "end": until.timestamp(),
            "override": true,
        }),
        "muted until an hour after termination"
    );

    let lookup = find(&seen, "GET", "/api/v0/hosts?customIdentifier=i-0123456789abcdef0");
    assert_eq!(lookup.header("x-api-key"), Some("mkr-key"));
    assert!(lookup.body.is_empty());
    let status = find(&seen, "POST", "/api/v0/hosts/3Ab1cDe/status");
    assert_eq!(status.header("x-api-key"), Some("mkr-key"));
    assert_eq!(body(status), json!({"status": "maintenance"}));

    let hook = find(&seen, "POST", "/hooks/spot");
    assert_eq!(
        hook.header("authorization"),
        Some("Bearer hook-token"),
        "the value read from Secrets Manager"
    );
    assert_eq!(hook.header("x-team"), Some("platform"));
    assert_eq!(
        body(hook),
        json!({
            "text": "i-0123456789abcdef0 goes (terminate) at 2026-11-22T01:02:00Z",
            "event": "7e1c1a3e-0000-4000-8000-000000000001",
            "account": "123456789012",
        })
    );
}

#[tokio::test]
async fn failures_are_reported_per_system_and_mackerel_can_retire_instead() {
    let moto = Moto::start();
    let api = HttpServer::start(|request| match (request.method.as_str(), request.path.as_str()) {
        ("POST", "/api/v1/host/i-0123456789abcdef0/mute") => Reply::new(403, r#"{"errors":["Forbidden"]}"#),
        ("GET", "/api/v0/hosts?customIdentifier=i-0123456789abcdef0") => Reply::new(200, r#"{"hosts":[{"id":"9Zz"}]}"#),
        ("POST", "/api/v0/hosts/9Zz/retire") => Reply::new(200, r#"{"success":true}"#),
        _ => Reply::new(404, "unexpected"),
    });
    let config = config(&[
        ("DATADOG_API_KEY", "dd".into()),
        ("DATADOG_APP_KEY", "app".into()),
        ("DATADOG_API_URL", api.url()),
        ("MACKEREL_API_KEY", "mkr".into()),
        ("MACKEREL_API_URL", format!("{}/", api.url())),
        ("MACKEREL_ACTION", "retire".into()),
        ("MONITORING_WEBHOOK_URL", format!("{}/hooks/spot", api.url())),
        (
            "MONITORING_WEBHOOK_HEADERS",
            r#"{"Authorization": "ssm:/no/such/parameter"}"#.into(),
        ),
    ])
    .unwrap();

    let changes = Monitoring::new(config, Some(secret_clients(&moto).await))
        .disable_hosts(vec![warning()])
        .await;
    let changes = &changes[&InstanceId::parse(INSTANCE).unwrap()];

    assert_eq!(changes.len(), 3);
    assert!(!changes[0].ok);
    assert_eq!(
        changes[0].error.as_deref(),
        Some(r#"answered 403: {"errors":["Forbidden"]}"#)
    );
    assert_eq!((changes[1].action.as_str(), changes[1].ok), ("retired", true));
    assert!(!changes[2].ok);
    let error = changes[2].error.as_deref().unwrap();
    assert!(
        error.contains("ParameterNotFound") && error.contains("Authorization"),
        "{error}"
    );

    let seen = api.requests();
    assert_eq!(body(find(&seen, "POST", "/api/v0/hosts/9Zz/retire")), json!({}));
    assert!(
        seen.iter().all(|r| r.path != "/hooks/spot"),
        "without its secret header the webhook is not called"
    );
}

#[test]
fn configuration_errors_name_the_variable() {
    let name = |r: Result<MonitoringConfig, ConfigError>| match r {
        Err(ConfigError::Missing { name, .. } | ConfigError::Invalid { name, .. }) => name,
        Ok(_) => "accepted",
    };
    assert_eq!(
        config(&[]).unwrap(),
        MonitoringConfig::default(),
        "nothing is told by default"
    );
    assert_eq!(name(config(&[("DATADOG_API_KEY", "k".into())])), "DATADOG_APP_KEY");
    assert_eq!(
        name(config(&[
            ("MACKEREL_API_KEY", "k".into()),
            ("MACKEREL_ACTION", "delete".into())
        ])),
        "MACKEREL_ACTION"
    );
    assert_eq!(
        name(config(&[
            ("MONITORING_WEBHOOK_URL", "https://example.com/h".into()),
            ("MONITORING_WEBHOOK_BODY", r#"{"x": "{{password}}"}"#.into()),
        ])),
        "MONITORING_WEBHOOK_BODY"
    );
    assert_eq!(
        name(config(&[
            ("MONITORING_WEBHOOK_URL", "https://example.com/h".into()),
            ("MONITORING_WEBHOOK_HEADERS", "Authorization: x".into()),
        ])),
        "MONITORING_WEBHOOK_HEADERS"
    );
    assert_eq!(
        name(config(&[("MONITORING_WEBHOOK_URL", "example.com/h".into())])),
        "MONITORING_WEBHOOK_URL"
    );
    // Keys travel with every call: plain HTTP only to this host's loopback.
    assert_eq!(
        name(config(&[(
            "MONITORING_WEBHOOK_URL",
            "http://hooks.example.com/h".into()
        )])),
        "MONITORING_WEBHOOK_URL"
    );
    assert_eq!(
        name(config(&[
            ("DATADOG_API_KEY", "ssm:/spot-cleanup/dd".into()),
            ("DATADOG_APP_KEY", "ssm:/spot-cleanup/app".into()),
            ("DATADOG_API_URL", "http://api.datadoghq.com".into()),
        ])),
        "DATADOG_API_URL"
    );
    assert_eq!(
        name(config(&[("MONITORING_WEBHOOK_URL", "http://127.0.0.1:9/h".into())])),
        "accepted"
    );
}

/// Longer than a cleanup of one instance against moto takes, shorter than the monitoring step's 10 s timeout.
const DATADOG_DELAY: Duration = Duration::from_secs(6);

#[tokio::test]
async fn a_failing_monitoring_system_never_holds_back_deregistration_or_quarantine() {
    let moto = Moto::start();
    let fleet = Fleet::build(&moto.sdk_config().await, 1).await;
    // Datadog answers late, then fails: the cleanup must not wait for it before its own work.
    let api = HttpServer::start(|_| Reply::new(500, "datadog is down").delayed(DATADOG_DELAY));
    let mut config = fleet.config(false);
    config.monitoring = self::config(&[
        ("DATADOG_API_KEY", "dd".into()),
        ("DATADOG_APP_KEY", "app".into()),
        ("DATADOG_API_URL", api.url()),
    ])
    .unwrap();
    let app = App::new(config, spot_cleanup::Clients::from_shared(&moto.sdk_config().await));
    let node = &fleet.spot[0];
    let before = fleet.registrations().await;
    let ours = fleet.registrations_of(node, &before);

    let started = Instant::now();
    let cleanup = handle(
        &app,
        LambdaEvent::new(
            common::event_for("spot-interruption-terminate.json", &node.id),
            Context::default(),
        ),
    );
    // Watch AWS while the invocation runs: when did the node leave its groups and get walled off?
    let quarantined: BTreeSet<String> = node.enis.iter().cloned().collect();
    let watch = async {
        loop {
            let gone = fleet.registrations_of(node, &fleet.registrations().await).is_empty();
            if gone && fleet.enis_in_group(node, &fleet.quarantine_group).await == quarantined {
                return started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let (answer, walled_off_after) = tokio::join!(cleanup, watch);
    let answer = answer.expect("the cleanup succeeds although Datadog failed");
    assert!(
        walled_off_after < DATADOG_DELAY,
        "deregistered and quarantined {walled_off_after:?} after the start, not before Datadog's answer ({DATADOG_DELAY:?})"
    );
    let summary: Summary = serde_json::from_value(answer).unwrap();

    assert_eq!(summary.outcome.as_str(), "cleaned", "{summary:#?}");
    assert_eq!(fleet.registrations().await, before.difference(&ours).cloned().collect());
    assert_eq!(
        fleet.enis_in_group(node, &fleet.quarantine_group).await,
        node.enis.iter().cloned().collect()
    );
    assert_eq!(summary.monitoring.len(), 1);
    assert_eq!(summary.monitoring[0].system, System::Datadog);
    assert!(!summary.monitoring[0].ok);
    assert!(
        summary
            .warnings
            .iter()
            .any(|w| w.contains("Datadog") && w.contains("datadog is down")),
        "{:?}",
        summary.warnings
    );
    let published = fleet.published().await;
    let message: Value = serde_json::from_str(published[0]["Message"].as_str().expect("an SNS envelope")).unwrap();
    assert_eq!(message["monitoring"][0]["ok"], false, "the SNS summary says so too");
    assert_eq!(api.requests()[0].path, format!("/api/v1/host/{}/mute", node.id));
}
