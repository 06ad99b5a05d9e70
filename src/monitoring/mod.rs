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

use chrono::{SecondsFormat, Utc};
use tokio::task::JoinSet;

use crate::changes::{HostChange, System};
use crate::input::{InstanceId, Request};
pub use error::MonitoringError;
use http::{Answer, HttpClient};
use mackerel::MackerelAction;
use secrets::{Secret, SecretClients};
use template::Template;

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

#[derive(Clone, Debug, PartialEq)]
pub struct DatadogConfig {
    pub api_url: String,
    pub api_key: Secret,
    pub application_key: Secret,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MackerelConfig {
    pub api_url: String,
    pub api_key: Secret,
    pub action: MackerelAction,
}

#[derive(Clone, Debug, PartialEq)]
pub struct WebhookConfig {
    pub url: String,
    pub body: Template,
    pub headers: Vec<(String, Secret)>,
}

/// Which systems to tell; each is on when its key (or URL) is set.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MonitoringConfig {
    pub datadog: Option<DatadogConfig>,
    pub mackerel: Option<MackerelConfig>,
    pub webhook: Option<WebhookConfig>,
}

impl MonitoringConfig {
    pub fn is_empty(&self) -> bool {
        self.datadog.is_none() && self.mackerel.is_none() && self.webhook.is_none()
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
                changes
                    .entry(request.instance_id.clone())
                    .or_default()
                    .extend(self.all_failed(request, &MonitoringError::NoHttps));
            }
            return changes;
        };
        let keys = self.resolve_secrets().await;
        let mut calls = JoinSet::new();
        for request in requests {
            self.spawn_calls(&mut calls, &http, &keys, &request);
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

    /// One call per configured system for one instance, each in a task of its own.
    fn spawn_calls(
        &self,
        calls: &mut JoinSet<(InstanceId, HostChange)>,
        http: &HttpClient,
        keys: &ResolvedSecrets,
        request: &Request,
    ) {
        let fields = fields(request);
        let host = request.instance_id.to_string();
        let id = request.instance_id.clone();
        let terminates_at = request.trigger.terminates_at(Utc::now()).unwrap_or_else(Utc::now);
        if let Some(datadog) = &self.config.datadog {
            let (http, url, keys) = (http.clone(), datadog.api_url.clone(), keys.datadog.clone());
            let (host, action, id) = (host.clone(), fields["action"].clone(), id.clone());
            calls.spawn(async move {
                let change = match keys {
                    Ok((api, application)) => {
                        let keys = datadog::Keys { api, application };
                        datadog::mute(&http, &url, &keys, &host, &action, terminates_at).await
                    }
                    Err(e) => HostChange::new(System::Datadog, &host, "muted", Err(e)),
                };
                (id, change)
            });
        }
        if let Some(mackerel) = &self.config.mackerel {
            let (http, url, key, action) = (
                http.clone(),
                mackerel.api_url.clone(),
                keys.mackerel.clone(),
                mackerel.action,
            );
            let (host, id) = (host.clone(), id.clone());
            calls.spawn(async move {
                let change = match key {
                    Ok(key) => mackerel::disable(&http, &url, &key, &host, action).await,
                    Err(e) => HostChange::new(System::Mackerel, &host, action.as_str(), Err(e)),
                };
                (id, change)
            });
        }
        if let Some(webhook) = &self.config.webhook {
            let (http, url, body, headers) = (
                http.clone(),
                webhook.url.clone(),
                webhook.body.clone(),
                keys.webhook_headers.clone(),
            );
            calls.spawn(async move {
                let change = match headers {
                    Ok(headers) => webhook::notify(&http, &url, &headers, &body, &fields).await,
                    Err(e) => HostChange::new(System::Webhook, id.as_str(), "notified", Err(e)),
                };
                (id, change)
            });
        }
    }

    fn all_failed(&self, request: &Request, error: &MonitoringError) -> Vec<HostChange> {
        let host = request.instance_id.as_str();
        let mut out = Vec::new();
        if self.config.datadog.is_some() {
            out.push(HostChange::new(System::Datadog, host, "muted", Err(error)));
        }
        if let Some(m) = &self.config.mackerel {
            out.push(HostChange::new(System::Mackerel, host, m.action.as_str(), Err(error)));
        }
        if self.config.webhook.is_some() {
            out.push(HostChange::new(System::Webhook, host, "notified", Err(error)));
        }
        out
    }

    /// Each secret is read once per invocation, whatever the batch size.
    async fn resolve_secrets(&self) -> ResolvedSecrets {
        let mut resolved = ResolvedSecrets::default();
        if let Some(d) = &self.config.datadog {
            resolved.datadog = match (
                d.api_key.resolve(self.secrets.as_ref()).await,
                d.application_key.resolve(self.secrets.as_ref()).await,
            ) {
                (Ok(api), Ok(app)) => Ok((api, app)),
                (Err(e), _) | (_, Err(e)) => Err(e.into()),
            };
        }
        if let Some(m) = &self.config.mackerel {
            resolved.mackerel = m.api_key.resolve(self.secrets.as_ref()).await.map_err(Into::into);
        }
        if let Some(w) = &self.config.webhook {
            let mut headers = Vec::new();
            for (name, secret) in &w.headers {
                match secret.resolve(self.secrets.as_ref()).await {
                    Ok(value) => headers.push((name.clone(), value)),
                    Err(e) => {
                        resolved.webhook_headers = Err(MonitoringError::Header {
                            name: name.clone(),
                            error: e,
                        });
                        return resolved;
                    }
                }
            }
            resolved.webhook_headers = Ok(headers);
        }
        resolved
    }
}

struct ResolvedSecrets {
    datadog: Result<(String, String), MonitoringError>,
    mackerel: Result<String, MonitoringError>,
    webhook_headers: Result<Vec<(String, String)>, MonitoringError>,
}

impl Default for ResolvedSecrets {
    fn default() -> Self {
        Self {
            datadog: Err(MonitoringError::NotConfigured),
            mackerel: Err(MonitoringError::NotConfigured),
            webhook_headers: Err(MonitoringError::NotConfigured),
        }
    }
}

/// The notice's fields, for the webhook template and the systems' messages.
pub fn fields(request: &Request) -> BTreeMap<&'static str, String> {
    let trigger = &request.trigger;
    let text = |v: Option<String>| v.unwrap_or_default();
    let action = trigger.action.map_or("terminate", |a| a.as_str()).to_owned();
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
