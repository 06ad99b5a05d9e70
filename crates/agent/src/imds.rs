//! Reads from instance metadata (IMDSv2) through the SDK's own client, which fetches a session token first, refreshes
//! it before it expires, and follows `AWS_EC2_METADATA_SERVICE_ENDPOINT` like every other AWS tool.

use std::time::Duration;

use aws_config::imds::client::Client;
use aws_config::imds::client::error::ImdsError;
use aws_sdk_lambda::error::DisplayErrorContext;

/// A poll round must not stall for long on a broken metadata service: the next round retries anyway.
const ATTEMPTS: u32 = 2;
const OPERATION_TIMEOUT: Duration = Duration::from_secs(5);

/// What to tell people when no token can be had. The usual cause in a container is the hop limit: the token PUT's
/// answer is dropped one hop short of the pod, so the request times out instead of failing loudly.
pub const HOP_LIMIT_HINT: &str = "if the agent runs in a container without hostNetwork, raise the instance's metadata \
     hop limit to 2: aws ec2 modify-instance-metadata-options --instance-id <id> --http-put-response-hop-limit 2 \
     (or set HttpPutResponseHopLimit: 2 in the launch template)";

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("could not get an IMDSv2 session token ({cause}); {HOP_LIMIT_HINT}")]
    NoToken { cause: String },
    #[error("instance metadata answered {status} for {path}")]
    Status { path: String, status: u16 },
    #[error("instance metadata did not answer {path}: {cause}")]
    Unreachable { path: String, cause: String },
}

impl MetadataError {
    /// One word per kind of failure, so a log line can say when the kind changes.
    pub fn kind(&self) -> &'static str {
        match self {
            MetadataError::NoToken { .. } => "no-token",
            MetadataError::Status { .. } => "status",
            MetadataError::Unreachable { .. } => "unreachable",
        }
    }
}

pub struct Metadata {
    client: Client,
}

impl Default for Metadata {
    fn default() -> Self {
        Self::new()
    }
}

impl Metadata {
    pub fn new() -> Self {
        Self { client: build() }
    }

    /// The text at `path`, or None when instance metadata has nothing there (404): the normal answer of a notice path
    /// until something is announced.
    pub async fn get(&mut self, path: &str) -> Result<Option<String>, MetadataError> {
        match self.client.get(path).await {
            Err(ImdsError::ErrorResponse(e)) if e.response().status().as_u16() == 401 => {
                // The token was refused before its time (instance metadata restarted, or the clock jumped). The
                // client caches a token until its own idea of expiry, so only a new client asks for a fresh one.
                tracing::info!(path, "instance metadata refused the session token; getting a new one");
                self.client = build();
                self.client.get(path).await
            }
            other => other,
        }
        .map(|text| Some(text.into()))
        .or_else(|e| match e {
            ImdsError::ErrorResponse(e) if e.response().status().as_u16() == 404 => Ok(None),
            ImdsError::ErrorResponse(e) => Err(MetadataError::Status {
                path: path.to_owned(),
                status: e.response().status().as_u16(),
            }),
            e @ ImdsError::FailedToLoadToken(_) => Err(MetadataError::NoToken {
                cause: DisplayErrorContext(&e).to_string(),
            }),
            other => Err(MetadataError::Unreachable {
                path: path.to_owned(),
                cause: DisplayErrorContext(&other).to_string(),
            }),
        })
    }
}

fn build() -> Client {
    Client::builder()
        .max_attempts(ATTEMPTS)
        .operation_timeout(OPERATION_TIMEOUT)
        .build()
}
