//! `spot-agent`: runs on every Spot node, watches instance metadata for a notice (Spot interruption, rebalance
//! recommendation, Auto Scaling termination) and hands each notice, once, to the agent function (spot-cleanup's
//! `ENTRY_POINT=agent`, which checks the identity document sent with it).
//!
//! Data goes one way: `imds` (read the paths) -> `notice` (their formats -> `Notice`) -> dedupe in `watch` ->
//! `invoke`. `identity` is read once at start: it names the instance and carries the signed document the function
//! checks. The payload is `spot_cleanup_input::AgentPayload`, the type the function parses it with. On Kubernetes
//! (`NODE_NAME` set), `node` labels the agent's own Node out of the external load balancers on a notice, and removes
//! that label when the node comes back.
//!
//! The loop reports each round to `health` and counts notices and deliveries in `metrics`; `serve` answers the
//! probes and `/metrics` from them, when `SPOT_AGENT_LISTEN_ADDRESS` is set.

mod config;
mod health;
mod identity;
mod imds;
mod invoke;
mod metrics;
mod node;
mod notice;
mod serve;
mod watch;

use std::process::ExitCode;
use std::sync::Arc;

use config::AgentConfig;
use health::Health;
use metrics::Metrics;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    init_logging();
    let config = match AgentConfig::from_env() {
        Ok(config) => config,
        Err(e) => {
            tracing::error!(error = %e, "bad configuration");
            return ExitCode::from(2);
        }
    };
    let health = Arc::new(Health::new());
    let metrics = Arc::new(Metrics::default());
    if let Some(address) = config.listen {
        let routes = serve::Routes {
            health: health.clone(),
            metrics: config.metrics.then(|| metrics.clone()),
        };
        match serve::start(address, routes).await {
            Ok(bound) => tracing::info!(address = %bound, metrics = config.metrics, "serving the probes"),
            Err(e) => {
                tracing::error!(error = %e, "cannot run");
                return ExitCode::FAILURE;
            }
        }
    }
    match watch::run(config, health, metrics).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "cannot run");
            ExitCode::FAILURE
        }
    }
}

/// JSON, one object per line, each with a timestamp (nothing stamps the agent's lines for it: `kubectl logs` shows
/// none), the event's fields at the top level. The level is `RUST_LOG`, else `info`.
fn init_logging() {
    let level = std::env::var("RUST_LOG").ok().map(|level| level.to_lowercase());
    let mut filter = level
        .as_deref()
        .and_then(|level| tracing_subscriber::EnvFilter::try_new(level).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info"));
    // kube's HTTP layer logs each failed call at ERROR without saying what it was for; the agent's own line says that.
    if !level.is_some_and(|level| level.contains("tower_http")) {
        filter = filter.add_directive("tower_http=off".parse().expect("a valid directive"));
    }
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_env_filter(filter)
        .with_current_span(false)
        .with_span_list(false)
        .with_target(false)
        .init();
}
