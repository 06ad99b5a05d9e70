//! The messages other than a cleanup summary: refusals and restores.
//!
//! A refusal is published so that a request the function would not act on is seen by people, not only logged.
//! Attributes let subscribers filter: `outcome` (`refused` or `stale`), `security` (`true` when someone asked for
//! something out of scope or unproven), `error_type`, `instance_id`, `trigger`.

use aws_sdk_sns::types::MessageAttributeValue;
use chrono::Utc;

use crate::aws_error;
use crate::guard::Refusal;
use crate::steps::notify::SUBJECT_MAX;

pub async fn publish_refusal(sns: &aws_sdk_sns::Client, topic_arn: &str, refusal: &Refusal) -> Result<(), String> {
    let attribute = |value: &str| {
        MessageAttributeValue::builder()
            .data_type("String")
            .string_value(value)
            .build()
            .expect("data type is set")
    };
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
    let subject: String = format!(
        "spot-cleanup {label}: refused {} ({kind}), nothing changed",
        refusal.instance_id
    )
    .chars()
    .take(SUBJECT_MAX)
    .collect();
    sns.publish()
        .topic_arn(topic_arn)
        .subject(subject)
        .message(message.to_string())
        .message_attributes("instance_id", attribute(refusal.instance_id.as_str()))
        .message_attributes("outcome", attribute(kind.outcome()))
        .message_attributes("security", attribute(&kind.is_security_signal().to_string()))
        .message_attributes("error_type", attribute(kind.error_type()))
        .message_attributes("trigger", attribute(refusal.trigger.label()))
        .send()
        .await
        .map_err(|e| aws_error::explain(&e))?;
    Ok(())
}

/// Publish what a restore did. Attributes as for a cleanup summary: `instance_id`, `outcome` (`restored`, `partial`,
/// `failed`), `trigger`, plus `kind=restore`.
pub async fn publish_restore(
    sns: &aws_sdk_sns::Client,
    topic_arn: &str,
    summary: &crate::restore::RestoreSummary,
) -> Result<(), String> {
    let attribute = |value: &str| {
        MessageAttributeValue::builder()
            .data_type("String")
            .string_value(value)
            .build()
            .expect("data type is set")
    };
    let outcome = summary.outcome.as_str();
    let subject: String = format!(
        "spot-cleanup restore: {} {outcome}, {} ENI(s) back on their groups",
        summary.instance_id,
        summary.network_interfaces.iter().filter(|e| e.restored).count()
    )
    .chars()
    .take(SUBJECT_MAX)
    .collect();
    sns.publish()
        .topic_arn(topic_arn)
        .subject(subject)
        .message(serde_json::to_string(summary).expect("a restore summary always serializes"))
        .message_attributes("instance_id", attribute(summary.instance_id.as_str()))
        .message_attributes("outcome", attribute(outcome))
        .message_attributes("kind", attribute("restore"))
        .message_attributes("trigger", attribute(summary.trigger.label()))
        .send()
        .await
        .map_err(|e| aws_error::explain(&e))?;
    Ok(())
}
