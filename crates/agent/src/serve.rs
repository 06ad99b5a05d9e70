//! The agent's HTTP listener (`SPOT_AGENT_LISTEN_ADDRESS`): `/healthz` (liveness) and `/readyz` (readiness) for
//! Kubernetes' probes, and `/metrics` (Prometheus) when `SPOT_AGENT_METRICS=true`. GET and HEAD only; it answers from
//! the shared state and never waits for the watch loop.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::health::{Health, Verdict};
use crate::metrics::Metrics;

/// A client that has not sent its request's headers in this time is dropped (probes send theirs at once).
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more wait to be accepted. Probes and a scraper need a few.
const CONNECTIONS: usize = 16;
/// A request's head larger than this is refused: a probe's is a few hundred bytes. (hyper's smallest allowed.)
const MAX_HEAD: usize = 8 * 1024;
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {address} (SPOT_AGENT_LISTEN_ADDRESS): {source}")]
pub struct ListenError {
    address: SocketAddr,
    source: std::io::Error,
}

/// What the listener answers from.
#[derive(Clone)]
pub struct Routes {
    pub health: Arc<Health>,
    /// `None` when metrics are off: `/metrics` is then 404.
    pub metrics: Option<Arc<Metrics>>,
}

/// Bind now, so that a taken port fails start-up with a message, and serve in the background from then on.
pub async fn start(address: SocketAddr, routes: Routes) -> Result<SocketAddr, ListenError> {
    let listener = TcpListener::bind(address)
        .await
        .map_err(|source| ListenError { address, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| ListenError { address, source })?;
    tokio::spawn(serve(listener, routes));
    Ok(bound)
}

async fn serve(listener: TcpListener, routes: Routes) {
    let slots = Arc::new(Semaphore::new(CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, say: wait rather than spin; the probes will say if it lasts.
                tracing::warn!(error = %e, "the probe listener could not accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let routes = routes.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let response = routes.answer(&request);
                async move { Ok::<_, Infallible>(response) }
            });
            // A malformed request or a dropped connection ends this connection only.
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEAD)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            drop(slot);
        });
    }
}

impl Routes {
    fn answer<B>(&self, request: &Request<B>) -> Response<Full<Bytes>> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD\n".to_owned());
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        match (request.uri().path(), &self.metrics) {
            ("/healthz", _) => verdict(self.health.liveness()),
            ("/readyz", _) => verdict(self.health.readiness()),
            ("/metrics", Some(metrics)) => {
                let mut response = text(StatusCode::OK, metrics.render(&self.health));
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static(PROMETHEUS_TEXT));
                response
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: /healthz, /readyz, /metrics\n".to_owned(),
            ),
        }
    }
}

fn verdict(verdict: Verdict) -> Response<Full<Bytes>> {
    let status = if verdict.healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    text(status, format!("{}\n", verdict.reason))
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(routes: &Routes, method: Method, path: &str) -> (StatusCode, String) {
        let request = Request::builder().method(method).uri(path).body(()).unwrap();
        let response = routes.answer(&request);
        let status = response.status();
        let body = response.into_body();
        let bytes = collect(body);
        (status, String::from_utf8(bytes).unwrap())
    }

    fn collect(body: Full<Bytes>) -> Vec<u8> {
        use http_body_util::BodyExt;
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async { body.collect().await.unwrap().to_bytes().to_vec() })
    }

    #[test]
    fn probes_answer_from_the_shared_state_and_metrics_only_when_enabled() {
        let health = Arc::new(Health::new());
        let routes = Routes {
            health: health.clone(),
            metrics: None,
        };
        assert_eq!(
            get(&routes, Method::GET, "/healthz"),
            (StatusCode::OK, "polling\n".into())
        );
        assert_eq!(
            get(&routes, Method::GET, "/readyz"),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "reading the instance identity\n".into()
            )
        );
        assert_eq!(get(&routes, Method::GET, "/metrics").0, StatusCode::NOT_FOUND);

        health.watching();
        health.round_ended(true);
        assert_eq!(get(&routes, Method::HEAD, "/readyz").0, StatusCode::OK);
        assert_eq!(get(&routes, Method::POST, "/readyz").0, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(get(&routes, Method::GET, "/").0, StatusCode::NOT_FOUND);

        let with_metrics = Routes {
            health,
            metrics: Some(Arc::new(Metrics::default())),
        };
        let (status, body) = get(&with_metrics, Method::GET, "/metrics?x=1");
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("spot_agent_ready 1\n"), "{body}");
    }
}
