//! One summary per instance: a subject a person can act on, a message a machine can parse (or one a person reads, as
//! `NOTIFY_FORMAT` says), and attributes a subscription filter policy can match.

use super::Publisher;
use super::render::{self, NotifyFormat};
use crate::aws::{CallError, bounded_all};
use crate::changes::EniStatus;
use crate::input::Action;
use crate::summary::{Outcome, Step, StepError, Summary};

/// SNS refuses messages over 256 KiB; keep room for the envelope.
const MESSAGE_MAX: usize = 240 * 1024;

impl Publisher {
    /// Publish every summary side by side. A summary that could not be published carries the error (step `notify`);
    /// the answer says, per summary, whether it went out.
    pub async fn summaries(&self, summaries: &mut [Summary]) -> Vec<bool> {
        let published = bounded_all(summaries.len().max(1), summaries.to_vec(), |summary| {
            let publisher = self.clone();
            async move { publisher.summary(&summary).await }
        })
        .await;
        summaries
            .iter_mut()
            .zip(published)
            .map(
                |(summary, published)| match published.unwrap_or_else(|e| Err(CallError::local("Publish", e))) {
                    Ok(_) => true,
                    Err(error) => {
                        summary.errors.push(StepError {
                            step: Step::Notify,
                            message: format!("SNS {error}"),
                        });
                        false
                    }
                },
            )
            .collect()
    }

    /// Publish the summary; returns the SNS message id.
    pub async fn summary(&self, summary: &Summary) -> Result<String, CallError> {
        let body = match self.format {
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
        self.send(&subject(summary), body, &attributes).await
    }
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
    super::clip_subject(&text)
}
