//! The monitoring step: at notice time, tell the monitoring systems that the host is going, so that its
//! disappearance pages nobody. Datadog (mute), Mackerel (maintenance or retire) and a generic webhook are built in.
//!
//! It runs alongside the cleanup, never before it: deregistration and quarantine do not wait for it, and its
//! failures are reported in the summary (`monitoring`, and a warning) without changing the cleanup's outcome.

pub mod datadog;
pub mod error;
pub mod http;
pub mod mackerel;
pub mod secrets;
pub mod template;
pub mod webhook;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{SecondsFormat, Utc};
use tokio::task::JoinSet;

use crate::changes::{HostChange, System};
use crate::input::{InstanceId, Request};
pub use datadog::DatadogConfig;
pub use error::MonitoringError;
use http::{Answer, HttpClient};
pub use mackerel::MackerelConfig;
use secrets::{Key, Secret, SecretClients};
pub use webhook::WebhookConfig;

/// The body a webhook gets when `MONITORING_WEBHOOK_BODY` is not set.
pub const DEFAULT_WEBHOOK_BODY: &str = r#"{"instance_id": "{{instance_id}}", "action": "{{action}}", "event_id": "{{event_id}}", "terminates_at": "{{terminates_at}}"}"#;

/// A 2xx answer is success; anything else is an error that quotes the start of the body.
fn answer_error(answer: Result<Answer, error::HttpError>) -> Result<(), MonitoringError> {
    match answer {
        Ok(a) if (200..300).contains(&a.status) => Ok(()),
        Ok(a) => Err(MonitoringError::Refused {
            status: a.status,
            body: a.body.chars().take(200).collect(),
        }),
        Err(e) => Err(e.into()),
    }
}

/// One monitoring system, with its settings: its secrets as configured (`Secret`), or as read for one invocation
/// (`Key`). Every list of the systems is this enum, one line per arm.
#[derive(Clone, Debug, PartialEq)]
pub enum SystemConfig<S = Secret> {
    Datadog(DatadogConfig<S>),
    Mackerel(MackerelConfig<S>),
    Webhook(WebhookConfig<S>),
}

impl<S> SystemConfig<S> {
    fn system(&self) -> System {
        match self {
            SystemConfig::Datadog(_) => System::Datadog,
            SystemConfig::Mackerel(_) => System::Mackerel,
            SystemConfig::Webhook(_) => System::Webhook,
        }
    }

    /// What the system is asked to do to the host, as the summary names it.
    fn action(&self) -> &'static str {
        match self {
            SystemConfig::Datadog(_) => "muted",
            SystemConfig::Mackerel(mackerel) => mackerel.action.as_str(),
            SystemConfig::Webhook(_) => "notified",
        }
    }

    /// The answer for a host this system could not be told about.
    fn failed(&self, request: &Request, error: &MonitoringError) -> HostChange {
        HostChange::new(self.system(), request.instance_id.as_str(), self.action(), Err(error))
    }
}

impl SystemConfig {
    /// The system's secrets, read once per invocation whatever the batch size.
    async fn resolve(&self, secrets: Option<&SecretClients>) -> Result<SystemConfig<Key>, MonitoringError> {
        Ok(match self {
            SystemConfig::Datadog(datadog) => SystemConfig::Datadog(datadog.resolve(secrets).await?),
            SystemConfig::Mackerel(mackerel) => SystemConfig::Mackerel(mackerel.resolve(secrets).await?),
            SystemConfig::Webhook(webhook) => SystemConfig::Webhook(webhook.resolve(secrets).await?),
        })
    }
}

impl SystemConfig<Key> {
    async fn tell(&self, http: &HttpClient, request: &Request) -> HostChange {
        match self {
            SystemConfig::Datadog(datadog) => datadog.mute(http, request).await,
            SystemConfig::Mackerel(mackerel) => mackerel.disable(http, request).await,
            SystemConfig::Webhook(webhook) => webhook.notify(http, request).await,
        }
    }
}

/// Which systems to tell, in the order of `System`; each is on when its key (or URL) is set.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MonitoringConfig {
    pub systems: Vec<SystemConfig>,
}

impl MonitoringConfig {
    pub fn is_empty(&self) -> bool {
        self.systems.is_empty()
    }
}

/// Everything the step needs, cheap to clone into a task of its own.
#[derive(Clone, Debug)]
pub struct Monitoring {
    config: MonitoringConfig,
    secrets: Option<SecretClients>,
    http: Option<HttpClient>,
}

impl Monitoring {
    pub fn new(config: MonitoringConfig, secrets: Option<SecretClients>) -> Self {
        // Without a system there is nothing to call, so no TLS set-up either.
        let http = if config.is_empty() {
            None
        } else {
            HttpClient::new()
                .inspect_err(|e| tracing::error!(error = %e, "the monitoring step cannot make HTTPS calls"))
                .ok()
        };
        Self { config, secrets, http }
    }

    /// Tell every configured system about every instance, all at once. The answer has one entry per system and
    /// instance; nothing at all when no system is configured.
    pub async fn disable_hosts(self, requests: Vec<Request>) -> HashMap<InstanceId, Vec<HostChange>> {
        let mut changes: HashMap<InstanceId, Vec<HostChange>> = HashMap::new();
        if self.config.is_empty() || requests.is_empty() {
            return changes;
        }
        let Some(http) = self.http.clone() else {
            for request in &requests {
                let failed = self
                    .config
                    .systems
                    .iter()
                    .map(|s| s.failed(request, &MonitoringError::NoHttps));
                changes.entry(request.instance_id.clone()).or_default().extend(failed);
            }
            return changes;
        };
        let mut ready = Vec::new();
        for system in &self.config.systems {
            ready.push(
                system
                    .resolve(self.secrets.as_ref())
                    .await
                    .map_err(|e| (system.clone(), e)),
            );
        }
        let ready = Arc::new(ready);
        let mut calls = JoinSet::new();
        for request in requests {
            for at in 0..ready.len() {
                let (ready, http, request) = (ready.clone(), http.clone(), request.clone());
                calls.spawn(async move {
                    let change = match &ready[at] {
                        Ok(system) => system.tell(&http, &request).await,
                        Err((system, error)) => system.failed(&request, error),
                    };
                    (request.instance_id, change)
                });
            }
        }
        while let Some(done) = calls.join_next().await {
            match done {
                Ok((id, change)) => {
                    tracing::info!(
                        step = "monitoring",
                        instance_id = id.as_str(),
                        system = ?change.system,
                        action = change.action,
                        ok = change.ok,
                        error = change.error.as_deref().unwrap_or(""),
                        "monitoring told"
                    );
                    changes.entry(id).or_default().push(change);
                }
                Err(e) => tracing::error!(step = "monitoring", error = %e, "a monitoring call panicked"),
            }
        }
        for list in changes.values_mut() {
            list.sort_by_key(|c| c.system as u8);
        }
        changes
    }
}

/// What the notice announces: the trigger's action, `terminate` when it names none.
fn notice_action(request: &Request) -> &'static str {
    request.trigger.action.map_or("terminate", |a| a.as_str())
}

/// The notice's fields, for the webhook template and the systems' messages.
pub fn fields(request: &Request) -> BTreeMap<&'static str, String> {
    let trigger = &request.trigger;
    let text = |v: Option<String>| v.unwrap_or_default();
    let action = notice_action(request).to_owned();
    let now = Utc::now();
    BTreeMap::from([
        ("instance_id", request.instance_id.to_string()),
        ("action", action),
        ("trigger", trigger.label().to_owned()),
        ("event_id", text(trigger.event_id.clone())),
        ("region", text(trigger.region.clone())),
        ("account", text(trigger.account.clone())),
        (
            "terminates_at",
            text(
                trigger
                    .terminates_at(now)
                    .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true)),
            ),
        ),
        ("notified_at", now.to_rfc3339_opts(SecondsFormat::Secs, true)),
    ])
}
