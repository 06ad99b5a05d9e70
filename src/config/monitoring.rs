//! The monitoring systems: `DATADOG_*`, `MACKEREL_*`, `MONITORING_WEBHOOK_*`. Each is on when its key or URL is set.
//! Their URLs are HTTPS: the keys go with every call. Plain HTTP is accepted only to the loopback address, where
//! nothing leaves the host (a local proxy or agent, and the tests).

use std::collections::BTreeMap;

use super::settings::*;
use super::{ConfigError, Vars};
use crate::monitoring::secrets::Secret;
use crate::monitoring::template::Template;
use crate::monitoring::{DatadogConfig, MackerelConfig, MonitoringConfig, SystemConfig, WebhookConfig};

pub(super) fn monitoring(vars: &Vars<'_>) -> Result<MonitoringConfig, ConfigError> {
    let systems = [datadog(vars)?, mackerel(vars)?, webhook(vars)?];
    Ok(MonitoringConfig {
        systems: systems.into_iter().flatten().collect(),
    })
}

/// `DATADOG_API_KEY`, `DATADOG_APP_KEY` and `DATADOG_API_URL`.
fn datadog(vars: &Vars<'_>) -> Result<Option<SystemConfig>, ConfigError> {
    let Some(api_key) = vars.set(&DATADOG_API_KEY) else {
        return Ok(None);
    };
    Ok(Some(SystemConfig::Datadog(DatadogConfig {
        api_url: url(vars, &DATADOG_API_URL)?,
        api_key: Secret::parse(&api_key),
        // Required once Datadog is on.
        application_key: Secret::parse(vars.required(&DATADOG_APP_KEY)?.trim()),
    })))
}

/// `MACKEREL_API_KEY`, `MACKEREL_API_URL` and `MACKEREL_ACTION`.
fn mackerel(vars: &Vars<'_>) -> Result<Option<SystemConfig>, ConfigError> {
    let Some(api_key) = vars.set(&MACKEREL_API_KEY) else {
        return Ok(None);
    };
    Ok(Some(SystemConfig::Mackerel(MackerelConfig {
        api_url: url(vars, &MACKEREL_API_URL)?,
        api_key: Secret::parse(&api_key),
        action: vars.choice(&MACKEREL_ACTION)?,
    })))
}

/// `MONITORING_WEBHOOK_URL`, `MONITORING_WEBHOOK_BODY` and `MONITORING_WEBHOOK_HEADERS`.
fn webhook(vars: &Vars<'_>) -> Result<Option<SystemConfig>, ConfigError> {
    if vars.set(&MONITORING_WEBHOOK_URL).is_none() {
        return Ok(None);
    }
    let reason = "expected a JSON template whose {{placeholders}} are fields of the notice";
    let body = vars.text(&MONITORING_WEBHOOK_BODY).unwrap_or_default();
    let body = Template::parse(&body).map_err(|_| vars.invalid(&MONITORING_WEBHOOK_BODY, &body, reason))?;
    let reason = "expected a JSON object of header names to values, ssm:<name> or secretsmanager:<id>";
    let headers = vars.text(&MONITORING_WEBHOOK_HEADERS).unwrap_or_default();
    let headers: BTreeMap<String, String> = serde_json::from_str(&headers)
        .map_err(|_| vars.invalid(&MONITORING_WEBHOOK_HEADERS, "(not shown: it may hold secrets)", reason))?;
    Ok(Some(SystemConfig::Webhook(WebhookConfig {
        url: url(vars, &MONITORING_WEBHOOK_URL)?,
        body,
        headers: headers
            .into_iter()
            .map(|(name, value)| (name, Secret::parse(&value)))
            .collect(),
    })))
}

/// The URL `setting` sets, or its default: HTTPS, or plain HTTP to the loopback only.
fn url(vars: &Vars<'_>, setting: &Setting<Text>) -> Result<String, ConfigError> {
    let value = vars.text(setting).unwrap_or_default();
    if is_https_or_loopback(&value) {
        return Ok(value);
    }
    let reason = "expected an https:// URL (keys travel with every call; http:// only to this host's loopback)";
    Err(vars.invalid(setting, &value, reason))
}

/// `https://...`, or `http://` to 127.0.0.1, `[::1]` or localhost (with or without a port), and nothing else.
fn is_https_or_loopback(url: &str) -> bool {
    if url.starts_with("https://") && url.len() > "https://".len() {
        return true;
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // No user info: `http://127.0.0.1@evil.example` names evil.example.
    if authority.contains('@') {
        return false;
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    matches!(host, "127.0.0.1" | "::1" | "localhost")
}

#[cfg(test)]
mod tests {
    use super::is_https_or_loopback;

    #[test]
    fn monitoring_urls_are_https_or_loopback_only() {
        for good in [
            "https://api.datadoghq.com",
            "https://hooks.example.com/x?y=1",
            "http://127.0.0.1:8080/hooks",
            "http://localhost",
            "http://[::1]:9/",
        ] {
            assert!(is_https_or_loopback(good), "{good}");
        }
        for bad in [
            "http://api.datadoghq.com",
            "http://127.0.0.1@evil.example/",
            "http://127.0.0.1.evil.example/",
            "http://localhost.evil.example",
            "ftp://x",
            "https://",
            "api.datadoghq.com",
            "HTTP://example.com",
        ] {
            assert!(!is_https_or_loopback(bad), "{bad}");
        }
    }
}
