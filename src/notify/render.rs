//! The SNS message in the form its readers want (`NOTIFY_FORMAT`): the summary's JSON for machines (the default),
//! plain text for e-mail subscriptions, or an AWS Chatbot custom notification for Slack and Microsoft Teams.

use std::fmt::Write;

use serde_json::json;

use crate::changes::{EniChange, EniStatus};
use crate::registration::TargetState;
use crate::summary::{Outcome, Summary, TargetChange};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NotifyFormat {
    #[default]
    Json,
    Email,
    Chatbot,
}

/// A person's reading of the summary: what happened first, then each list, then how long it took.
pub fn text(summary: &Summary) -> String {
    let mut out = String::new();
    header(&mut out, summary);
    let targets = |list: &[TargetChange]| list.iter().map(target_line).collect();
    let mut sections = vec![("Removed from target groups", targets(&summary.removed))];
    sections.push(("Still registered", targets(&summary.remaining)));
    if summary.dry_run {
        sections.push(("Would remove", targets(&summary.planned)));
    }
    sections.push((
        "Network interfaces",
        summary.network_interfaces.iter().map(eni_line).collect(),
    ));
    if !summary.monitoring.is_empty() {
        let told = summary.monitoring.iter();
        let told = told.map(|m| format!("{:?} {}: {}", m.system, m.action, m.error.as_deref().unwrap_or("ok")));
        sections.push(("Monitoring", told.collect()));
    }
    let errors = summary.errors.iter().map(|e| format!("{:?}: {}", e.step, e.message));
    sections.push(("Errors", errors.collect()));
    sections.push(("Warnings", summary.warnings.clone()));
    for (title, lines) in sections {
        section(&mut out, title, lines);
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Took {} ms. Event id: {}.",
        summary.timings_ms.total,
        summary.trigger.event_id.as_deref().unwrap_or("none")
    );
    out
}

/// The subject, then the instance, the outcome, the notice and when the instance goes.
fn header(out: &mut String, summary: &Summary) {
    let action = summary
        .trigger
        .action
        .and_then(|a| serde_json::to_value(a).ok())
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "cleanup".into());
    let _ = writeln!(out, "{}", super::subject(summary));
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Instance:    {} ({})",
        summary.instance.id,
        summary.instance.vpc_id.as_deref().unwrap_or("no VPC")
    );
    let _ = writeln!(out, "Outcome:     {}", summary.outcome.as_str());
    let _ = writeln!(out, "Notice:      {action}, via {}", summary.trigger.label());
    if let Some(at) = summary.terminates_at {
        let _ = writeln!(out, "Terminates:  {}", at.to_rfc3339());
    }
}

/// A titled list with its length, `none` when empty.
fn section(out: &mut String, title: &str, lines: Vec<String>) {
    let _ = writeln!(out);
    let _ = writeln!(out, "{title} ({})", lines.len());
    if lines.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for line in lines {
        let _ = writeln!(out, "  - {line}");
    }
}

fn target_line(t: &TargetChange) -> String {
    format!(
        "{} {}{} {}{}",
        t.target_group_name,
        t.target_id,
        t.port.map(|p| format!(":{p}")).unwrap_or_default(),
        t.state.as_ref().map_or("?", TargetState::as_str),
        t.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
    )
}

fn eni_line(e: &EniChange) -> String {
    let status = serde_json::to_value(e.status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let original = e.original_groups.as_ref().map(|g| g.join(", ")).unwrap_or_default();
    format!("{} {status}, original groups: {original}", e.network_interface_id)
}

/// AWS Chatbot's custom notification: `version`, `source: custom`, and `content` with a title and a Markdown
/// description, which Chatbot relays to the Slack channel or Teams channel subscribed to the topic.
pub fn chatbot(summary: &Summary) -> String {
    let icon = match summary.outcome {
        Outcome::Cleaned => ":white_check_mark:",
        Outcome::DryRun | Outcome::Notified | Outcome::Ignored | Outcome::AlreadyHandled => ":information_source:",
        Outcome::Partial | Outcome::Failed => ":rotating_light:",
    };
    let quarantined = summary
        .network_interfaces
        .iter()
        .filter(|e| matches!(e.status, EniStatus::Quarantined | EniStatus::AlreadyQuarantined))
        .count();
    let mut description = format!(
        "*{}* `{}`: left {} target(s) in {} group(s), {} still registered; {} of {} ENI(s) quarantined.",
        summary.outcome.as_str(),
        summary.instance.id,
        summary.removed.len(),
        Summary::group_count(&summary.removed),
        summary.remaining.len(),
        quarantined,
        summary.network_interfaces.len()
    );
    for error in &summary.errors {
        let _ = write!(description, "\n• {:?}: {}", error.step, error.message);
    }
    let mut next_steps = Vec::new();
    if !summary.is_complete() {
        next_steps.push("See the runbook: docs/summary.md#runbook-a-cleanup-failed".to_owned());
    }
    json!({
        "version": "1.0",
        "source": "custom",
        "id": summary.trigger.event_id.clone().unwrap_or_else(|| summary.instance.id.to_string()),
        "content": {
            "textType": "client-markdown",
            "title": format!("{icon} {}", super::subject(summary)),
            "description": description,
            "nextSteps": next_steps,
            "keywords": ["spot-cleanup", summary.outcome.as_str()],
        },
        "metadata": {
            "threadId": summary.instance.id.as_str(),
            "summary": super::subject(summary),
            "relatedResources": [summary.instance.id.as_str()],
        },
    })
    .to_string()
}
