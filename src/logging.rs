//! JSON logs, one object per line, which CloudWatch Logs Insights can query by field.

use tracing_subscriber::EnvFilter;

/// Log level from `RUST_LOG`, else Lambda's `AWS_LAMBDA_LOG_LEVEL`, else `info`.
fn filter() -> EnvFilter {
    let filter = std::env::var("RUST_LOG")
        .or_else(|_| std::env::var("AWS_LAMBDA_LOG_LEVEL"))
        .map(|level| level.to_lowercase())
        .unwrap_or_else(|_| "info".to_owned());
    EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"))
}

/// For the function: Lambda stamps every line with its own time. The event's fields sit at the top level (`step`,
/// `instance_id`, `event_id`; see `steplog`), and `spans` carries the runtime's `requestId`.
pub fn init() {
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_env_filter(filter())
        .with_current_span(false)
        .with_target(false)
        .without_time()
        .init();
}

/// For the node agent: nothing stamps its lines for it (`kubectl logs` shows none), so each carries a timestamp,
/// and the event's fields sit at the top level of the object.
pub fn init_timestamped() {
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_env_filter(filter())
        .with_current_span(false)
        .with_span_list(false)
        .with_target(false)
        .init();
}
