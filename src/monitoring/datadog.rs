//! Datadog: mute the host, so that its disappearance pages nobody. The host is the instance id, which Datadog's
//! agent and its AWS integration both report as a host name or alias.

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;

use super::http::HttpClient;
use super::{HostChange, System, answer_error};

pub const DEFAULT_API_URL: &str = "https://api.datadoghq.com";
/// The mute outlives the instance by an hour: long enough for its last metrics to stop arriving, short enough that a
/// reused host name is not silenced forever.
const MUTE_AFTER_TERMINATION: TimeDelta = TimeDelta::hours(1);

pub struct Keys {
    pub api: String,
    pub application: String,
}

pub async fn mute(
    http: &HttpClient,
    api_url: &str,
    keys: &Keys,
    host: &str,
    action: &str,
    terminates_at: DateTime<Utc>,
) -> HostChange {
    let url = format!("{}/api/v1/host/{host}/mute", api_url.trim_end_matches('/'));
    let body = json!({
        "message": format!("spot-cleanup: {action} notice for {host}"),
        "end": (terminates_at + MUTE_AFTER_TERMINATION).timestamp(),
        "override": true,
    });
    let headers = [
        ("DD-API-KEY".to_owned(), keys.api.clone()),
        ("DD-APPLICATION-KEY".to_owned(), keys.application.clone()),
    ];
    let answer = http
        .send(http::Method::POST, &url, &headers, Some(body.to_string()))
        .await;
    HostChange::new(System::Datadog, host, "muted", answer_error(answer))
}
