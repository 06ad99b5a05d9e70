//! A generic webhook: POST a JSON body rendered from a template, with headers whose secret values come from SSM
//! Parameter Store or Secrets Manager.

use super::http::HttpClient;
use super::secrets::{Key, Secret, SecretClients};
use super::template::Template;
use super::{HostChange, MonitoringError, System, answer_error, fields};
use crate::input::Request;

/// The webhook's settings: its headers' values as configured (`Secret`), or as read for one invocation (`Key`).
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookConfig<S = Secret> {
    pub url: String,
    pub body: Template,
    pub headers: Vec<(String, S)>,
}

impl WebhookConfig {
    pub(super) async fn resolve(&self, secrets: Option<&SecretClients>) -> Result<WebhookConfig<Key>, MonitoringError> {
        let mut headers = Vec::new();
        for (name, secret) in &self.headers {
            let value = secret.resolve(secrets).await.map_err(|error| MonitoringError::Header {
                name: name.clone(),
                error,
            })?;
            headers.push((name.clone(), Key(value)));
        }
        Ok(WebhookConfig {
            url: self.url.clone(),
            body: self.body.clone(),
            headers,
        })
    }
}

impl WebhookConfig<Key> {
    /// POST the notice, rendered from the body's template.
    pub(super) async fn notify(&self, http: &HttpClient, request: &Request) -> HostChange {
        let headers: Vec<(String, String)> = self.headers.iter().map(|(n, v)| (n.clone(), v.0.clone())).collect();
        let result = match self.body.render(&fields(request)) {
            Ok(body) => answer_error(http.send(http::Method::POST, &self.url, &headers, Some(body)).await),
            Err(e) => Err(e.into()),
        };
        HostChange::new(System::Webhook, request.instance_id.as_str(), "notified", result)
    }
}
