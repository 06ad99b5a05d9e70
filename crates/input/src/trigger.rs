//! How a request arrived and what it asks for: the `Trigger` every request carries (its source, the event's fields,
//! the carrier that delivered it, and the Auto Scaling lifecycle action to complete), and the `Action` it names.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

/// Spot's notice: the instance goes two minutes after the warning.
pub const SPOT_NOTICE: Duration = Duration::from_secs(120);

/// What is about to happen to the instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Terminate,
    Stop,
    Hibernate,
    Rebalance,
    ScaleIn,
    /// The instance is shutting down or already terminated (EC2's state-change event).
    Terminating,
    /// AWS Health scheduled a change (retirement, reboot, maintenance) for the instance.
    ScheduledChange,
}

impl Action {
    /// Actions that come with Spot's two-minute notice.
    pub fn is_spot_interruption(self) -> bool {
        matches!(self, Action::Terminate | Action::Stop | Action::Hibernate)
    }

    /// Actions after which the instance may run again, and a restore put it back.
    pub fn may_come_back(self) -> bool {
        matches!(self, Action::Stop | Action::Hibernate)
    }

    /// The kebab-case name the payloads and the summary use (`scale-in`, `scheduled-change`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Terminate => "terminate",
            Action::Stop => "stop",
            Action::Hibernate => "hibernate",
            Action::Rebalance => "rebalance",
            Action::ScaleIn => "scale-in",
            Action::Terminating => "terminating",
            Action::ScheduledChange => "scheduled-change",
        }
    }
}

/// Where a request came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    NodeAgent,
    #[serde(rename = "eventbridge")]
    EventBridge,
    /// A lifecycle hook's own message, sent straight to SQS or SNS.
    AutoScaling,
    /// A person or a script invoking the function directly (`{"action": "restore", ...}`).
    Operator,
}

/// How the request reached us, kept for the summary and for SNS filter policies.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trigger {
    pub source: Source,
    /// The EventBridge `source`, e.g. `aws.ec2`.
    pub event_source: Option<String>,
    pub detail_type: Option<String>,
    pub action: Option<Action>,
    pub event_id: Option<String>,
    pub event_time: Option<DateTime<Utc>>,
    /// When the action takes effect, if the sender said (the agent's `time`).
    pub action_time: Option<DateTime<Utc>>,
    pub region: Option<String>,
    pub account: Option<String>,
    /// Set when the request arrived inside an SQS batch.
    pub sqs_message_id: Option<String>,
    /// The SNS topic the request came through, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sns_topic_arn: Option<String>,
    /// The SNS message that carried it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sns_message_id: Option<String>,
    /// The Auto Scaling lifecycle action to complete once the cleanup is done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Box<LifecycleAction>>,
    /// What the event said beyond its type: the instance state, or AWS Health's `eventTypeCode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_code: Option<String>,
}

impl Trigger {
    /// A trigger from `source` that says nothing more yet; parsers fill in what their payload tells.
    pub fn from_source(source: Source) -> Trigger {
        Trigger {
            source,
            event_source: None,
            detail_type: None,
            action: None,
            event_id: None,
            event_time: None,
            action_time: None,
            region: None,
            account: None,
            sqs_message_id: None,
            sns_topic_arn: None,
            sns_message_id: None,
            lifecycle: None,
            event_code: None,
        }
    }

    /// A short label for SNS attributes and subjects: `node-agent`, `eventbridge`, ...
    pub fn label(&self) -> &'static str {
        match self.source {
            Source::NodeAgent => "node-agent",
            Source::EventBridge => "eventbridge",
            Source::AutoScaling => "auto-scaling",
            Source::Operator => "operator",
        }
    }

    /// An instance that goes back to a warm pool keeps its network as it is: it will serve again.
    pub fn keeps_network(&self) -> bool {
        self.lifecycle
            .as_ref()
            .is_some_and(|l| l.destination == LifecycleDestination::WarmPool)
    }

    /// The id a log line names: the event's own id, else the SQS or SNS message that carried it. A direct invocation
    /// without any is given its Lambda request id (`Invocation::name_events`).
    pub fn event_ref(&self) -> &str {
        self.event_id
            .as_deref()
            .or(self.sqs_message_id.as_deref())
            .or(self.sns_message_id.as_deref())
            .unwrap_or("")
    }

    /// When the instance goes: what the sender said, else Spot's two minutes from the event (or from `now`). Checked
    /// arithmetic: a time at the end of chrono's range has no "two minutes later", and is answered None, not a panic.
    pub fn terminates_at(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.action_time.is_some() {
            return self.action_time;
        }
        if !self.action.is_some_and(Action::is_spot_interruption) {
            return None;
        }
        let notice = TimeDelta::from_std(SPOT_NOTICE).ok()?;
        self.event_time.unwrap_or(now).checked_add_signed(notice)
    }
}

/// Where the instance goes after the hook: EC2 terminates it, or it returns to the group's warm pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum LifecycleDestination {
    #[default]
    #[serde(rename = "EC2")]
    Ec2,
    WarmPool,
}

/// The lifecycle action to complete: everything CompleteLifecycleAction and RecordLifecycleActionHeartbeat need.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LifecycleAction {
    pub hook_name: String,
    pub group_name: String,
    /// Absent in some deliveries; the instance id identifies the action then.
    pub token: Option<String>,
    pub destination: LifecycleDestination,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trigger(action: Option<Action>, event_time: Option<DateTime<Utc>>) -> Trigger {
        Trigger {
            event_source: Some("aws.ec2".into()),
            action,
            event_time,
            ..Trigger::from_source(Source::EventBridge)
        }
    }

    #[test]
    fn spot_actions_terminate_two_minutes_after_the_event() {
        let event = Utc::now() - chrono::Duration::seconds(30);
        let at = trigger(Some(Action::Stop), Some(event))
            .terminates_at(Utc::now())
            .unwrap();
        assert_eq!((at - event).num_seconds(), 120);
        assert_eq!(
            trigger(Some(Action::Rebalance), Some(event)).terminates_at(Utc::now()),
            None
        );
        let mut agent = trigger(Some(Action::Terminate), None);
        agent.action_time = Some(event);
        assert_eq!(agent.terminates_at(Utc::now()), Some(event));
    }

    #[test]
    fn the_end_of_time_has_no_two_minutes_later() {
        let last = DateTime::<Utc>::MAX_UTC;
        assert_eq!(
            trigger(Some(Action::Terminate), Some(last)).terminates_at(Utc::now()),
            None
        );
        assert_eq!(trigger(Some(Action::Terminate), None).terminates_at(last), None);
        let first = DateTime::<Utc>::MIN_UTC;
        assert!(
            trigger(Some(Action::Stop), Some(first))
                .terminates_at(Utc::now())
                .is_some()
        );
    }

    #[test]
    fn action_names_are_the_wire_names() {
        for action in [
            Action::Terminate,
            Action::Stop,
            Action::Hibernate,
            Action::Rebalance,
            Action::ScaleIn,
            Action::Terminating,
            Action::ScheduledChange,
        ] {
            assert_eq!(serde_json::to_value(action).unwrap(), action.as_str());
        }
    }
}
