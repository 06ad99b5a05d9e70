//! A generic webhook: POST a JSON body rendered from a template, with headers whose secret values come from SSM
//! Parameter Store or Secrets Manager.

use std::collections::BTreeMap;

use super::http::HttpClient;
use super::template::Template;
use super::{HostChange, System, answer_error};

pub async fn notify(
    http: &HttpClient,
    url: &str,
    headers: &[(String, String)],
    body: &Template,
    fields: &BTreeMap<&str, String>,
) -> HostChange {
    let host = fields.get("instance_id").cloned().unwrap_or_default();
    let result = match body.render(fields) {
        Ok(body) => answer_error(http.send(http::Method::POST, url, headers, Some(body)).await),
        Err(e) => Err(e.into()),
    };
    HostChange::new(System::Webhook, &host, "notified", result)
}
