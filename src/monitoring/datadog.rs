//! Datadog: mute the host, so that its disappearance pages nobody. The host is the instance id, which Datadog's
//! agent and its AWS integration both report as a host name or alias.

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;

use super::http::HttpClient;
use super::secrets::{Key, Secret, SecretClients};
use super::{HostChange, MonitoringError, System, answer_error, notice_action};
use crate::input::Request;

pub const DEFAULT_API_URL: &str = "https://api.datadoghq.com";
/// The mute outlives the instance by an hour: long enough for its last metrics to stop arriving, short enough that a
/// reused host name is not silenced forever.
const MUTE_AFTER_TERMINATION: TimeDelta = TimeDelta::hours(1);

/// When the mute ends, as epoch seconds. Checked: a time at the end of chrono's range mutes until then.
fn mute_end(terminates_at: DateTime<Utc>) -> i64 {
    terminates_at
        .checked_add_signed(MUTE_AFTER_TERMINATION)
        .unwrap_or(terminates_at)
        .timestamp()
}

/// Datadog's settings: its keys as configured (`Secret`), or as read for one invocation (`Key`).
#[derive(Clone, Debug, PartialEq)]
pub struct DatadogConfig<S = Secret> {
    pub api_url: String,
    pub api_key: S,
    pub application_key: S,
}

impl DatadogConfig {
    pub(super) async fn resolve(&self, secrets: Option<&SecretClients>) -> Result<DatadogConfig<Key>, MonitoringError> {
        let api = self.api_key.resolve(secrets).await;
        let application = self.application_key.resolve(secrets).await;
        Ok(DatadogConfig {
            api_url: self.api_url.clone(),
            api_key: Key(api?),
            application_key: Key(application?),
        })
    }
}

impl DatadogConfig<Key> {
    /// Mute the host until an hour after the instance goes.
    pub(super) async fn mute(&self, http: &HttpClient, request: &Request) -> HostChange {
        let host = request.instance_id.as_str();
        let terminates_at = request.trigger.terminates_at(Utc::now()).unwrap_or_else(Utc::now);
        let url = format!("{}/api/v1/host/{host}/mute", self.api_url.trim_end_matches('/'));
        let body = json!({
            "message": format!("spot-cleanup: {} notice for {host}", notice_action(request)),
            "end": mute_end(terminates_at),
            "override": true,
        });
        let headers = [
            ("DD-API-KEY".to_owned(), self.api_key.0.clone()),
            ("DD-APPLICATION-KEY".to_owned(), self.application_key.0.clone()),
        ];
        let answer = http
            .send(http::Method::POST, &url, &headers, Some(body.to_string()))
            .await;
        HostChange::new(System::Datadog, host, "muted", answer_error(answer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mute_ends_an_hour_after_the_instance_even_at_the_end_of_time() {
        let at = DateTime::parse_from_rfc3339("2026-11-21T10:00:00Z").unwrap().to_utc();
        assert_eq!(mute_end(at), at.timestamp() + 3600);
        assert_eq!(mute_end(DateTime::<Utc>::MAX_UTC), DateTime::<Utc>::MAX_UTC.timestamp());
    }
}
