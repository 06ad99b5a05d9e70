//! Publish one summary per instance to SNS: a subject a person can act on, a message a machine can parse, and
//! attributes a subscription filter policy can match.

use aws_sdk_sns::types::MessageAttributeValue;

use crate::aws_error;
use crate::bounded::bounded_all;
use crate::input::Action;
use crate::steps::quarantine::EniStatus;
use crate::steps::render::{self, NotifyFormat};
use crate::summary::{Outcome, Step, StepError, Summary};

/// SNS refuses longer subjects.
const SUBJECT_MAX: usize = 100;
/// SNS refuses messages over 256 KiB; keep room for the envelope.
const MESSAGE_MAX: usize = 240 * 1024;

/// Publish every summary side by side. A summary that could not be published carries the error (step `notify`);
/// the answer says, per summary, whether it went out.
pub async fn publish_all(
    sns: &aws_sdk_sns::Client,
    topic_arn: &str,
    format: NotifyFormat,
    summaries: &mut [Summary],
) -> Vec<bool> {
    let published = bounded_all(summaries.len().max(1), summaries.to_vec(), |summary| {
        let (sns, topic) = (sns.clone(), topic_arn.to_owned());
        async move { publish(&sns, &topic, &summary, format).await }
    })
    .await;
    summaries
        .iter_mut()
        .zip(published)
        .map(
            |(summary, published)| match published.unwrap_or_else(|e| Err(e.to_string())) {
                Ok(_) => true,
                Err(error) => {
                    summary.errors.push(StepError {
                        step: Step::Notify,
                        message: format!("SNS Publish failed: {error}"),
                    });
                    false
                }
            },
        )
        .collect()
}

/// Publish the summary; returns the SNS message id.
pub async fn publish(
    sns: &aws_sdk_sns::Client,
    topic_arn: &str,
    summary: &Summary,
    format: NotifyFormat,
) -> Result<String, String> {
    let body = match format {
        NotifyFormat::Json => message(summary),
        NotifyFormat::Email => render::text(summary),
        NotifyFormat::Chatbot => render::chatbot(summary),
    };
    let action = summary.trigger.action.and_then(|a| serde_json::to_value(a).ok());
    let mut attributes = vec![
        ("instance_id", summary.instance.id.as_str()),
        ("outcome", summary.outcome.as_str()),
        ("trigger", summary.trigger.label()),
    ];
    if let Some(action) = action.as_ref().and_then(|a| a.as_str()) {
        attributes.push(("action", action));
    }
    send(sns, topic_arn, &subject(summary), body, &attributes).await
}

/// One SNS message: the subject made safe for SNS (`clip_subject`), and each attribute as a `String` attribute that a
/// subscription filter policy can match. Returns the message id.
pub async fn send(
    sns: &aws_sdk_sns::Client,
    topic_arn: &str,
    subject: &str,
    message: String,
    attributes: &[(&str, &str)],
) -> Result<String, String> {
    let mut request = sns
        .publish()
        .topic_arn(topic_arn)
        .subject(clip_subject(subject))
        .message(message);
    for (name, value) in attributes {
        let value = MessageAttributeValue::builder()
            .data_type("String")
            .string_value(*value)
            .build()
            .expect("data type is set");
        request = request.message_attributes(*name, value);
    }
    let output = request.send().await.map_err(|e| aws_error::explain(&e))?;
    Ok(output.message_id().unwrap_or_default().to_owned())
}

/// The summary as JSON, cut down to counts if the full lists would not fit in one SNS message.
pub fn message(summary: &Summary) -> String {
    let full = serde_json::to_string(summary).expect("a summary always serializes");
    if full.len() <= MESSAGE_MAX {
        return full;
    }
    let mut short = summary.clone();
    let dropped = short.removed.len() + short.planned.len();
    short.removed.clear();
    short.planned.clear();
    short.warnings.truncate(20);
    short.warnings.push(format!(
        "message too large for SNS: {dropped} removed/planned targets left out; the function's log and return value have them"
    ));
    serde_json::to_string(&short).expect("a summary always serializes")
}

/// A one-line subject, at most 100 ASCII characters, that says what happened.
pub fn subject(summary: &Summary) -> String {
    let id = summary.instance.id.as_str();
    let groups = |targets| Summary::group_count(targets);
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    let remain = |n: usize| {
        if n == 1 {
            "1 target remains".to_owned()
        } else {
            format!("{n} targets remain")
        }
    };
    let enis = &summary.network_interfaces;
    let count = |status: EniStatus| enis.iter().filter(|e| e.status == status).count();
    let quarantine = if enis.is_empty() {
        "no ENIs".to_owned()
    } else if count(EniStatus::Failed) > 0 {
        format!("quarantine failed on {}", plural(count(EniStatus::Failed), "ENI"))
    } else {
        "quarantined".to_owned()
    };
    let text = match summary.outcome {
        Outcome::Notified | Outcome::Ignored => {
            let what = match summary.trigger.action {
                Some(Action::Rebalance) => "rebalance recommended".to_owned(),
                // Health's event type code says which change: AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED, ...
                Some(Action::ScheduledChange) => summary
                    .trigger
                    .event_code
                    .clone()
                    .unwrap_or_else(|| "scheduled change".to_owned()),
                _ => "notice".to_owned(),
            };
            format!("spot-cleanup: {what} for {id}, nothing changed")
        }
        Outcome::DryRun => format!(
            "spot-cleanup DRY RUN: {id} would leave {}, quarantine {}",
            plural(groups(&summary.planned), "target group"),
            plural(count(EniStatus::WouldQuarantine), "ENI")
        ),
        Outcome::Cleaned => format!(
            "spot-cleanup: {id} left {}, {quarantine}",
            plural(groups(&summary.removed), "target group")
        ),
        Outcome::AlreadyHandled => format!("spot-cleanup: {id} already handled by another delivery"),
        Outcome::Partial | Outcome::Failed => {
            let label = if summary.outcome == Outcome::Partial {
                "PARTIAL"
            } else {
                "FAILED"
            };
            format!(
                "spot-cleanup {label}: {id} left {}, {}, {quarantine}, {}",
                plural(groups(&summary.removed), "group"),
                remain(summary.remaining.len()),
                plural(summary.errors.len(), "error")
            )
        }
    };
    clip_subject(&text)
}

/// SNS takes subjects of at most 100 printable ASCII characters: anything else becomes `?`, and the rest is cut.
fn clip_subject(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_ascii() && !c.is_ascii_control() { c } else { '?' })
        .take(SUBJECT_MAX)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_printable_ascii_and_at_most_100_characters() {
        assert_eq!(clip_subject("node ünter\tlast"), "node ?nter?last");
        let long = format!("spot-cleanup: {}", "x".repeat(200));
        let clipped = clip_subject(&long);
        assert_eq!(clipped.len(), SUBJECT_MAX);
        assert!(long.starts_with(&clipped));
    }
}
