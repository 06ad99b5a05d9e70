//! CloudWatch Embedded Metric Format: one JSON line per cleaned instance that CloudWatch Logs turns into metrics, so
//! dashboards and alarms need no PutMetricData call (and no permission for it).
//!
//! Namespace `SpotCleanup`. Every metric is published three times: without dimensions (the alarm's view), by
//! `Outcome`, and by `Action`, which is what a dashboard splits on.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::changes::EniStatus;
use crate::summary::Summary;

pub const NAMESPACE: &str = "SpotCleanup";

/// The EMF record for one summary. `now` is when it is emitted.
pub fn record(summary: &Summary, now: DateTime<Utc>) -> Value {
    let action = summary
        .trigger
        .action
        .and_then(|a| serde_json::to_value(a).ok())
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned());
    let quarantined = summary
        .network_interfaces
        .iter()
        .filter(|e| e.status == EniStatus::Quarantined)
        .count();
    let mut metrics = vec![
        json!({"Name": "Cleanups", "Unit": "Count"}),
        json!({"Name": "Failures", "Unit": "Count"}),
        json!({"Name": "TargetsDeregistered", "Unit": "Count"}),
        json!({"Name": "EnisQuarantined", "Unit": "Count"}),
        json!({"Name": "Duration", "Unit": "Milliseconds"}),
    ];
    let mut record = json!({
        "_aws": {
            "Timestamp": now.timestamp_millis(),
            "CloudWatchMetrics": [],
        },
        "Outcome": summary.outcome.as_str(),
        "Action": action,
        "Cleanups": 1,
        "Failures": u8::from(!summary.is_complete()),
        "TargetsDeregistered": summary.removed.len(),
        "EnisQuarantined": quarantined,
        "Duration": summary.timings_ms.total,
        // Searchable in Logs Insights, not dimensions: one value per instance would make a metric per instance.
        "instance_id": summary.instance.id.as_str(),
        "event_id": summary.trigger.event_id,
    });
    if let Some(terminates_at) = summary.terminates_at {
        metrics.push(json!({"Name": "TimeLeftBeforeTermination", "Unit": "Seconds"}));
        record["TimeLeftBeforeTermination"] = json!((terminates_at - now).num_milliseconds() as f64 / 1000.0);
    }
    record["_aws"]["CloudWatchMetrics"] = json!([{
        "Namespace": NAMESPACE,
        "Dimensions": [[], ["Outcome"], ["Action"]],
        "Metrics": metrics,
    }]);
    record
}

/// Write the record to stdout as one line: Lambda sends stdout to CloudWatch Logs, where EMF is recognised.
pub fn emit(summary: &Summary) {
    println!("{}", record(summary, Utc::now()));
}
