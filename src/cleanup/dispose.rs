//! What each request asks for under this configuration. Warnings that do not force the instance out (a rebalance
//! recommendation, an AWS Health scheduled change) do what `REBALANCE_ACTION` and `HEALTH_ACTION` say: a notice
//! that changes nothing, or nothing at all. Everything else is cleaned up.

use std::collections::HashSet;

use chrono::Utc;

use super::context::Context;
use super::report::Report;
use crate::config::{Config, EventAction};
use crate::input::{Action, Request, Trigger};
use crate::summary::{InstanceInfo, Outcome, Summary};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    Cleanup,
    /// Publish a summary saying what was announced; change nothing.
    Notify,
    /// Answer, and neither change nor publish anything.
    Ignore,
}

pub fn disposition(trigger: &Trigger, config: &Config) -> Disposition {
    let configured = match trigger.action {
        Some(Action::Rebalance) => config.rebalance_action,
        Some(Action::ScheduledChange) => config.health_action,
        _ => return Disposition::Cleanup,
    };
    match configured {
        EventAction::Cleanup => Disposition::Cleanup,
        EventAction::Notify => Disposition::Notify,
        EventAction::Ignore => Disposition::Ignore,
    }
}

/// The requests to clean up, and the reports of the others: notices published, ignored ones logged.
pub async fn split(ctx: &Context<'_>, requests: &[Request]) -> (Vec<Request>, Vec<Report>) {
    let mut cleanups = Vec::new();
    let mut notices = Vec::new();
    let mut reports = Vec::new();
    for request in requests {
        match disposition(&request.trigger, ctx.config) {
            Disposition::Cleanup => cleanups.push(request.clone()),
            Disposition::Notify => notices.push(unchanged(request, Outcome::Notified, ctx.config.dry_run)),
            Disposition::Ignore => {
                tracing::info!(
                    step = "dispatch",
                    instance_id = request.instance_id.as_str(),
                    event_id = request.trigger.event_ref(),
                    "ignored as configured"
                );
                reports.push(Report::summary(unchanged(
                    request,
                    Outcome::Ignored,
                    ctx.config.dry_run,
                )));
            }
        }
    }
    ctx.publisher.summaries(&mut notices).await;
    for summary in notices {
        tracing::info!(
            step = "summary",
            instance_id = summary.instance.id.as_str(),
            event_id = summary.trigger.event_ref(),
            outcome = summary.outcome.as_str(),
            summary = %serde_json::to_string(&summary).unwrap_or_default(),
            "passed on, nothing changed"
        );
        reports.push(Report::summary(summary));
    }
    (cleanups, reports)
}

/// The first request for each instance: a later one for an instance already seen is folded into it.
pub fn distinct(requests: &[Request]) -> Vec<&Request> {
    let mut seen = HashSet::new();
    requests.iter().filter(|r| seen.insert(r.instance_id.clone())).collect()
}

/// A summary of a request that changes nothing: nothing is described, located or modified.
fn unchanged(request: &Request, outcome: Outcome, dry_run: bool) -> Summary {
    let mut summary = Summary::new(
        InstanceInfo::id_only(request.instance_id.clone()),
        request.trigger.clone(),
        outcome,
        Utc::now(),
    );
    summary.dry_run = dry_run;
    summary
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::Source;

    fn trigger(action: Option<Action>) -> Trigger {
        Trigger {
            event_source: Some("aws.ec2".into()),
            action,
            ..Trigger::from_source(Source::EventBridge)
        }
    }

    fn config(rebalance: &str, health: &str) -> Config {
        Config::from_lookup(|name| match name {
            "SNS_TOPIC_ARN" => Some("arn:aws:sns:us-east-1:123456789012:t".into()),
            "QUARANTINE_SECURITY_GROUP_ID" => Some("sg-0123abcd".into()),
            "REBALANCE_ACTION" => Some(rebalance.into()),
            "HEALTH_ACTION" => Some(health.into()),
            _ => None,
        })
        .unwrap()
    }

    #[test]
    fn warnings_follow_their_setting_and_everything_else_is_cleaned_up() {
        let c = config("notify", "ignore");
        assert_eq!(disposition(&trigger(Some(Action::Rebalance)), &c), Disposition::Notify);
        assert_eq!(
            disposition(&trigger(Some(Action::ScheduledChange)), &c),
            Disposition::Ignore
        );
        let c = config("ignore", "cleanup");
        assert_eq!(disposition(&trigger(Some(Action::Rebalance)), &c), Disposition::Ignore);
        assert_eq!(
            disposition(&trigger(Some(Action::ScheduledChange)), &c),
            Disposition::Cleanup
        );
        for action in [
            None,
            Some(Action::Terminate),
            Some(Action::Stop),
            Some(Action::ScaleIn),
            Some(Action::Terminating),
        ] {
            assert_eq!(disposition(&trigger(action), &c), Disposition::Cleanup, "{action:?}");
        }
    }
}
