//! What the function tells CloudWatch: JSON logs (one line per step and instance) and Embedded Metric Format lines.

pub mod logging;
pub mod metrics;
pub mod steplog;
