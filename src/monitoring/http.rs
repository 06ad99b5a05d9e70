//! A small HTTPS client for the monitoring APIs, built on the HTTP stack the AWS SDK already links in (hyper with
//! rustls and the system's root certificates), so the function gains no second TLS library.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::error::HttpError;

/// A monitoring API that takes longer than this is reported as failed; the cleanup does not wait on it anyway.
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct HttpClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

/// An answer: status and body text.
#[derive(Debug, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl HttpClient {
    pub fn new() -> Result<Self, HttpError> {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(rustls::crypto::aws_lc_rs::default_provider())
            .map_err(|e| HttpError::NoRoots(e.to_string()))?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// Send one request; any status is an `Answer`, only a transport failure or the timeout is an error.
    pub async fn send(
        &self,
        method: http::Method,
        url: &str,
        headers: &[(String, String)],
        body: Option<String>,
    ) -> Result<Answer, HttpError> {
        let host = || host_of(url).to_owned();
        let mut request = http::Request::builder().method(method).uri(url);
        for (name, value) in headers {
            request = request.header(name.as_str(), value.as_str());
        }
        if body.is_some() {
            request = request.header(http::header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| HttpError::Request {
                host: host(),
                reason: e.to_string(),
            })?;
        let transport = |e: &dyn std::fmt::Display| HttpError::Transport {
            host: host(),
            reason: e.to_string(),
        };
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| transport(&e))?;
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| transport(&e))?
                .to_bytes();
            Ok(Answer {
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
            })
        };
        tokio::time::timeout(TIMEOUT, exchange).await.unwrap_or_else(|_| {
            Err(HttpError::Timeout {
                host: host(),
                seconds: TIMEOUT.as_secs(),
            })
        })
    }
}

/// Only scheme and host in error messages: a webhook URL can carry a token in its path or query.
fn host_of(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let end = url[after_scheme..].find('/').map_or(url.len(), |i| after_scheme + i);
    &url[..end]
}

#[cfg(test)]
mod tests {
    #[test]
    fn errors_name_the_host_not_the_secret_path() {
        assert_eq!(
            super::host_of("https://hooks.example.com/services/T0/B0/SECRET"),
            "https://hooks.example.com"
        );
        assert_eq!(super::host_of("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
    }
}
