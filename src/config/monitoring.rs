//! The monitoring systems: `DATADOG_*`, `MACKEREL_*`, `MONITORING_WEBHOOK_*`. Each is on when its key or URL is set.

use std::collections::BTreeMap;

use super::{ConfigError, Vars};
use crate::monitoring::mackerel::{self, MackerelAction};
use crate::monitoring::secrets::Secret;
use crate::monitoring::template::Template;
use crate::monitoring::{
    DEFAULT_WEBHOOK_BODY, DatadogConfig, MackerelConfig, MonitoringConfig, WebhookConfig, datadog,
};

pub(super) fn monitoring(vars: &Vars<'_>) -> Result<MonitoringConfig, ConfigError> {
    let set = |name: &str| vars.set(name);
    let invalid = |name: &'static str, value: &str, reason: &'static str| vars.invalid(name, value, reason);
    let url = |name: &'static str, default: &str| -> Result<String, ConfigError> {
        let value = set(name).unwrap_or_else(|| default.to_owned());
        if value.starts_with("https://") || value.starts_with("http://") {
            Ok(value)
        } else {
            Err(invalid(name, &value, "expected an http:// or https:// URL"))
        }
    };

    let datadog = match set("DATADOG_API_KEY") {
        None => None,
        Some(api_key) => Some(DatadogConfig {
            api_url: url("DATADOG_API_URL", datadog::DEFAULT_API_URL)?,
            api_key: Secret::parse(&api_key),
            application_key: Secret::parse(&set("DATADOG_APP_KEY").ok_or(ConfigError::Missing {
                name: "DATADOG_APP_KEY",
                hint: "muting a host needs an application key as well as DATADOG_API_KEY",
            })?),
        }),
    };
    let mackerel = match set("MACKEREL_API_KEY") {
        None => None,
        Some(api_key) => Some(MackerelConfig {
            api_url: url("MACKEREL_API_URL", mackerel::DEFAULT_API_URL)?,
            api_key: Secret::parse(&api_key),
            action: match set("MACKEREL_ACTION").as_deref() {
                None | Some("maintenance") => MackerelAction::Maintenance,
                Some("retire") => MackerelAction::Retire,
                Some(other) => return Err(invalid("MACKEREL_ACTION", other, "expected maintenance or retire")),
            },
        }),
    };
    let webhook = match set("MONITORING_WEBHOOK_URL") {
        None => None,
        Some(_) => {
            let raw_body = set("MONITORING_WEBHOOK_BODY").unwrap_or_else(|| DEFAULT_WEBHOOK_BODY.to_owned());
            let body = Template::parse(&raw_body).map_err(|_| {
                invalid(
                    "MONITORING_WEBHOOK_BODY",
                    &raw_body,
                    "expected a JSON template whose {{placeholders}} are fields of the notice",
                )
            })?;
            let headers = match set("MONITORING_WEBHOOK_HEADERS") {
                None => Vec::new(),
                Some(raw) => serde_json::from_str::<BTreeMap<String, String>>(&raw)
                    .map_err(|_| {
                        invalid(
                            "MONITORING_WEBHOOK_HEADERS",
                            "(not shown: it may hold secrets)",
                            "expected a JSON object of header names to values, ssm:<name> or secretsmanager:<id>",
                        )
                    })?
                    .into_iter()
                    .map(|(name, value)| (name, Secret::parse(&value)))
                    .collect(),
            };
            Some(WebhookConfig {
                url: url("MONITORING_WEBHOOK_URL", "")?,
                body,
                headers,
            })
        }
    };
    Ok(MonitoringConfig {
        datadog,
        mackerel,
        webhook,
    })
}
