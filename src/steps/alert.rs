//! The messages other than a cleanup summary: refusals and restores.
//!
//! A refusal is published so that a request the function would not act on is seen by people, not only logged.
//! Attributes let subscribers filter: `outcome` (`refused` or `stale`), `security` (`true` when someone asked for
//! something out of scope or unproven), `error_type`, `instance_id`, `trigger`.

use chrono::Utc;

use crate::guard::Refusal;
use crate::steps::notify;

pub async fn publish_refusal(sns: &aws_sdk_sns::Client, topic_arn: &str, refusal: &Refusal) -> Result<(), String> {
    let kind = refusal.kind;
    let message = serde_json::json!({
        "version": 1,
        "outcome": kind.outcome(),
        "error_type": kind.error_type(),
        "security": kind.is_security_signal(),
        "instance_id": refusal.instance_id,
        "reasons": refusal.reasons,
        "trigger": refusal.trigger,
        "at": Utc::now(),
        "changed": "nothing",
    });
    let label = if kind.is_security_signal() { "SECURITY" } else { "STALE" };
    let subject = format!(
        "spot-cleanup {label}: refused {} ({kind}), nothing changed",
        refusal.instance_id
    );
    let security = kind.is_security_signal().to_string();
    let attributes = [
        ("instance_id", refusal.instance_id.as_str()),
        ("outcome", kind.outcome()),
        ("security", security.as_str()),
        ("error_type", kind.error_type()),
        ("trigger", refusal.trigger.label()),
    ];
    notify::send(sns, topic_arn, &subject, message.to_string(), &attributes).await?;
    Ok(())
}

/// Publish what a restore did. Attributes as for a cleanup summary: `instance_id`, `outcome` (`restored`, `partial`,
/// `failed`), `trigger`, plus `kind=restore`.
pub async fn publish_restore(
    sns: &aws_sdk_sns::Client,
    topic_arn: &str,
    summary: &crate::restore::RestoreSummary,
) -> Result<(), String> {
    let outcome = summary.outcome.as_str();
    let subject = format!(
        "spot-cleanup restore: {} {outcome}, {} ENI(s) back on their groups",
        summary.instance_id,
        summary.network_interfaces.iter().filter(|e| e.restored).count()
    );
    let message = serde_json::to_string(summary).expect("a restore summary always serializes");
    let attributes = [
        ("instance_id", summary.instance_id.as_str()),
        ("outcome", outcome),
        ("kind", "restore"),
        ("trigger", summary.trigger.label()),
    ];
    notify::send(sns, topic_arn, &subject, message, &attributes).await?;
    Ok(())
}
