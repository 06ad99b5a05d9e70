//! What each request asks for under this configuration, and running it: a cleanup, a notice that changes nothing, or
//! nothing at all. Warnings that do not force the instance out (a rebalance recommendation, an AWS Health scheduled
//! change) do what `REBALANCE_ACTION` and `HEALTH_ACTION` say; everything else is cleaned up.

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::Utc;

use crate::cleanup::{App, InstanceError, Report, clean_up};
use crate::config::{Config, EventAction};
use crate::input::{Action, Request, Trigger};
use crate::places::{Place, PlaceError};
use crate::steps::notify;
use crate::summary::{InstanceInfo, Outcome, SCHEMA_VERSION, Summary, Timings};

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

/// Run every request where its instance lives, as its disposition says; one report per distinct instance.
pub async fn run(app: &App, requests: &[Request], deadline: Option<Instant>) -> Vec<Report> {
    let mut by_place: BTreeMap<Place, Vec<Request>> = BTreeMap::new();
    let mut reports = Vec::new();
    for request in requests {
        let (region, account) = (request.trigger.region.as_deref(), request.trigger.account.as_deref());
        match &app.places {
            Some(places) => by_place
                .entry(places.place(region, account))
                .or_default()
                .push(request.clone()),
            // Wired without other places (tests): everything is served here, except another account's instances.
            None => match account {
                Some(account) if account != app.config.home_account && app.config.cross_account_role_name.is_none() => {
                    reports.push(not_served(request, account, &app.config.home_account))
                }
                _ => by_place.entry(Place::default()).or_default().push(request.clone()),
            },
        }
    }
    for (place, requests) in by_place {
        let here = match &app.places {
            Some(places) if !places.is_home(&place) => match places.app_for(app, &place).await {
                Ok(there) => run_here(&there, &requests, deadline).await,
                Err(reason) => requests
                    .iter()
                    .map(|r| Report {
                        instance_id: r.instance_id.clone(),
                        result: Err(InstanceError::NotServed {
                            instance: r.instance_id.clone(),
                            reason: reason.clone(),
                        }),
                    })
                    .collect(),
            },
            _ => run_here(app, &requests, deadline).await,
        };
        reports.extend(here);
    }
    reports
}

fn not_served(request: &Request, account: &str, home: &str) -> Report {
    Report {
        instance_id: request.instance_id.clone(),
        result: Err(InstanceError::NotServed {
            instance: request.instance_id.clone(),
            reason: PlaceError::AccountNotAllowed {
                account: account.to_owned(),
                home: home.to_owned(),
            },
        }),
    }
}

/// Run requests whose instances all live where `app`'s clients reach.
async fn run_here(app: &App, requests: &[Request], deadline: Option<Instant>) -> Vec<Report> {
    let mut cleanups = Vec::new();
    let mut notices = Vec::new();
    let mut reports = Vec::new();
    for request in requests {
        match disposition(&request.trigger, &app.config) {
            Disposition::Cleanup => cleanups.push(request.clone()),
            Disposition::Notify => notices.push(unchanged(request, Outcome::Notified, app.config.dry_run)),
            Disposition::Ignore => {
                tracing::info!(
                    step = "dispatch",
                    instance_id = request.instance_id.as_str(),
                    event_id = crate::steplog::event_id(&request.trigger),
                    "ignored as configured"
                );
                reports.push(report(unchanged(request, Outcome::Ignored, app.config.dry_run)));
            }
        }
    }
    if !cleanups.is_empty() {
        reports.extend(clean_up(app, &cleanups, deadline).await);
    }
    let (sns, topic) = (&app.clients.sns, &app.config.sns_topic_arn);
    notify::publish_all(sns, topic, app.config.notify_format, &mut notices).await;
    for summary in notices {
        tracing::info!(
            step = "summary",
            instance_id = summary.instance.id.as_str(),
            event_id = crate::steplog::event_id(&summary.trigger),
            outcome = summary.outcome.as_str(),
            summary = %serde_json::to_string(&summary).unwrap_or_default(),
            "passed on, nothing changed"
        );
        reports.push(report(summary));
    }
    reports
}

fn report(summary: Summary) -> Report {
    Report {
        instance_id: summary.instance.id.clone(),
        result: Ok(summary),
    }
}

/// A summary of a request that changes nothing: nothing is described, located or modified.
fn unchanged(request: &Request, outcome: Outcome, dry_run: bool) -> Summary {
    let started_at = Utc::now();
    Summary {
        version: SCHEMA_VERSION,
        instance: InstanceInfo {
            id: request.instance_id.clone(),
            vpc_id: None,
            state: None,
            lifecycle: None,
            addresses: Vec::new(),
        },
        trigger: request.trigger.clone(),
        dry_run,
        outcome,
        started_at,
        terminates_at: request.trigger.action_time,
        target_groups_checked: 0,
        monitoring: Vec::new(),
        removed: Vec::new(),
        planned: Vec::new(),
        remaining: Vec::new(),
        network_interfaces: Vec::new(),
        warnings: Vec::new(),
        errors: Vec::new(),
        timings_ms: Timings::default(),
        lifecycle: None,
    }
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
