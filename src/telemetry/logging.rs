//! JSON logs, one object per line, which CloudWatch Logs Insights can query by field.

use tracing_subscriber::EnvFilter;

/// Start logging at `level` (a `RUST_LOG`-style filter; `info` when it does not parse). Lambda stamps every line with
/// its own time. The event's fields sit at the top level (`step`, `instance_id`, `event_id`; see `steplog`), and
/// `spans` carries the runtime's `requestId`.
pub fn init(level: &str) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_env_filter(filter)
        .with_current_span(false)
        .with_target(false)
        .without_time()
        .init();
}
