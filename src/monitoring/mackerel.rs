//! Mackerel: find the host by its custom identifier (the instance id), then set it to maintenance, which silences
//! its alerts, or retire it, which removes it.

use serde::Deserialize;

use super::http::HttpClient;
use super::secrets::{Key, Secret, SecretClients};
use super::{HostChange, MonitoringError, System, answer_error};
use crate::input::Request;

pub const DEFAULT_API_URL: &str = "https://api.mackerelio.com";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MackerelAction {
    Maintenance,
    Retire,
}

impl MackerelAction {
    pub fn as_str(self) -> &'static str {
        match self {
            MackerelAction::Maintenance => "maintenance",
            MackerelAction::Retire => "retired",
        }
    }
}

/// Mackerel's settings: its key as configured (`Secret`), or as read for one invocation (`Key`).
#[derive(Clone, Debug, PartialEq)]
pub struct MackerelConfig<S = Secret> {
    pub api_url: String,
    pub api_key: S,
    pub action: MackerelAction,
}

impl MackerelConfig {
    pub(super) async fn resolve(
        &self,
        secrets: Option<&SecretClients>,
    ) -> Result<MackerelConfig<Key>, MonitoringError> {
        Ok(MackerelConfig {
            api_url: self.api_url.clone(),
            api_key: Key(self.api_key.resolve(secrets).await?),
            action: self.action,
        })
    }
}

#[derive(Deserialize)]
struct Hosts {
    hosts: Vec<Host>,
}

#[derive(Deserialize)]
struct Host {
    id: String,
}

impl MackerelConfig<Key> {
    /// Set the host to maintenance, or retire it.
    pub(super) async fn disable(&self, http: &HttpClient, request: &Request) -> HostChange {
        let (instance_id, action) = (request.instance_id.as_str(), self.action);
        let base = self.api_url.trim_end_matches('/');
        let headers = [("X-Api-Key".to_owned(), self.api_key.0.clone())];
        let change = |result| HostChange::new(System::Mackerel, instance_id, action.as_str(), result);
        let url = format!("{base}/api/v0/hosts?customIdentifier={instance_id}");
        let found = match http.send(http::Method::GET, &url, &headers, None).await {
            Ok(answer) if answer.status == 200 => {
                serde_json::from_str::<Hosts>(&answer.body).map_err(|e| MonitoringError::HostList(e.to_string()))
            }
            other => Err(answer_error(other).err().unwrap_or(MonitoringError::Refused {
                status: 200,
                body: String::new(),
            })),
        };
        let host_id = match found.map(|h| h.hosts.into_iter().next()) {
            Ok(Some(host)) => host.id,
            Ok(None) => return change(Err(MonitoringError::NoSuchHost(instance_id.to_owned()))),
            Err(e) => return change(Err(e)),
        };
        let (url, body) = match action {
            MackerelAction::Maintenance => (
                format!("{base}/api/v0/hosts/{host_id}/status"),
                r#"{"status":"maintenance"}"#,
            ),
            MackerelAction::Retire => (format!("{base}/api/v0/hosts/{host_id}/retire"), "{}"),
        };
        let answer = http
            .send(http::Method::POST, &url, &headers, Some(body.to_owned()))
            .await;
        change(answer_error(answer))
    }
}
