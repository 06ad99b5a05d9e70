//! Why a monitoring system could not be told. Each one names the system's part that failed; none quotes a secret or
//! a URL's path, which can carry one.

use super::secrets::SecretError;
use super::template::TemplateError;

/// A transport failure of the HTTPS client.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum HttpError {
    #[error("no TLS root certificates: {0}")]
    NoRoots(String),
    #[error("cannot build the request to {host}: {reason}")]
    Request { host: String, reason: String },
    #[error("request to {host} failed: {reason}")]
    Transport { host: String, reason: String },
    #[error("request to {host} failed: no answer within {seconds} s")]
    Timeout { host: String, seconds: u64 },
}

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum MonitoringError {
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The system answered, but not with success: its status and the start of its body.
    #[error("answered {status}: {body}")]
    Refused { status: u16, body: String },
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("header {name}: {error}")]
    Header { name: String, error: SecretError },
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("Mackerel's host list is not the expected JSON: {0}")]
    HostList(String),
    #[error("no Mackerel host has customIdentifier {0}")]
    NoSuchHost(String),
    #[error("no HTTPS client: the system's TLS root certificates could not be loaded")]
    NoHttps,
    #[error("not configured")]
    NotConfigured,
}
