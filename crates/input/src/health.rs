//! AWS Health's scheduled changes for EC2 (instance retirement, maintenance reboots): the instances are going away at
//! `startTime`. What to do about it is the operator's choice (`HEALTH_ACTION`), decided after parsing. Other Health
//! events (issues, account notifications, other services) are refused by name.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::envelope::{event, trigger};
use crate::error::InputError;
use crate::message::Message;
use crate::quoted::Quoted;
use crate::request::Request;
use crate::trigger::Action;
use crate::values::{InstanceId, not_ahead};

/// More than this many instances in one event is not a real Health event.
const ENTITIES_MAX: usize = 1000;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HealthDetail {
    service: String,
    event_type_category: String,
    event_type_code: String,
    start_time: Option<String>,
    #[serde(default)]
    affected_entities: Vec<AffectedEntity>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AffectedEntity {
    entity_value: String,
}

/// One request per affected instance, all sharing the event's trigger; other Health events are ignored.
pub(crate) fn parse(payload: &Value) -> Result<Message, InputError> {
    let event = event::<HealthDetail>(payload, "AWS Health event")?;
    let detail = &event.detail;
    if detail.service != "EC2" {
        return Ok(Message::Ignored(format!(
            "an AWS Health event for {:.32}: only EC2's scheduled changes name instances to clean up",
            detail.service
        )));
    }
    if detail.event_type_category != "scheduledChange" {
        return Ok(Message::Ignored(format!(
            "an AWS Health event of category {:.32}: only scheduledChange announces that instances will go",
            detail.event_type_category
        )));
    }
    if detail.affected_entities.is_empty() || detail.affected_entities.len() > ENTITIES_MAX {
        return Err(InputError::InvalidField {
            field: "detail.affectedEntities",
            reason: format!("must name 1 to {ENTITIES_MAX} instances"),
        });
    }
    let start = detail.start_time.as_deref().map(health_time).transpose()?;
    let code: String = detail.event_type_code.chars().take(128).collect();
    let (detail, mut trigger) = trigger(event, Some(Action::ScheduledChange), Some(code))?;
    trigger.action_time = start;
    let mut requests: Vec<Request> = Vec::new();
    for entity in detail.affected_entities {
        let instance_id = InstanceId::parse(&entity.entity_value)?;
        if requests.iter().all(|r| r.instance_id != instance_id) {
            requests.push(Request {
                instance_id,
                trigger: trigger.clone(),
                identity: None,
            });
        }
    }
    Ok(Message::Requests(requests))
}

/// How far ahead a scheduled change may start: Health announces them days or weeks ahead, never years.
const START_AHEAD_MAX: TimeDelta = TimeDelta::days(366);

/// Health writes `Fri, 27 Jan 2023 06:00:00 GMT`; accept RFC 3339 too. At most `START_AHEAD_MAX` ahead.
fn health_time(value: &str) -> Result<DateTime<Utc>, InputError> {
    let start = DateTime::parse_from_rfc2822(value)
        .or_else(|_| DateTime::parse_from_rfc3339(value))
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| InputError::InvalidField {
            field: "detail.startTime",
            reason: format!("{} is neither an RFC 2822 nor an RFC 3339 time", Quoted::new(value)),
        })?;
    not_ahead("detail.startTime", start, START_AHEAD_MAX, Utc::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Invocation, parse_invocation};

    fn sample() -> Value {
        crate::samples::sample("health-scheduled-change.json")
    }

    #[test]
    fn a_scheduled_change_names_every_affected_instance() {
        let Invocation::Several(requests) = parse_invocation(&sample()).unwrap() else {
            panic!("expected several requests")
        };
        let ids: Vec<&str> = requests.iter().map(|r| r.instance_id.as_str()).collect();
        assert_eq!(ids, ["i-0123456789abcdef0", "i-0fedcba9876543210"]);
        let trigger = &requests[0].trigger;
        assert_eq!(trigger.action, Some(Action::ScheduledChange));
        assert_eq!(
            trigger.event_code.as_deref(),
            Some("AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED")
        );
        assert_eq!(
            trigger.action_time.unwrap().to_rfc3339(),
            "2026-11-28T06:00:00+00:00",
            "the change starts then"
        );

        let mut one = sample();
        one["detail"]["affectedEntities"] = serde_json::json!([{"entityValue": "i-0123456789abcdef0"}]);
        assert!(matches!(parse_invocation(&one).unwrap(), Invocation::Direct(_)));
    }

    #[test]
    fn other_health_events_are_ignored_and_bad_ones_refused() {
        let with = |key: &str, value: Value| {
            let mut event = sample();
            event["detail"][key] = value;
            event
        };
        for (payload, why) in [
            (with("service", "RDS".into()), "an AWS Health event for RDS"),
            (with("eventTypeCategory", "issue".into()), "category issue"),
        ] {
            let Ok(Invocation::Ignored { reason }) = parse_invocation(&payload) else {
                panic!("{why}: expected ignored")
            };
            assert!(reason.contains(why), "{reason}");
        }
        let cases = [
            (with("affectedEntities", serde_json::json!([])), "must name 1 to"),
            (
                with("affectedEntities", serde_json::json!([{"entityValue": "vol-0123abcd"}])),
                "invalid instance id",
            ),
            (with("startTime", "soon".into()), "neither an RFC 2822"),
            (
                with("startTime", "Fri, 31 Dec 9999 23:59:59 GMT".into()),
                "more than 366 days ahead",
            ),
            (
                with("startTime", "+262142-12-31T23:59:00Z".into()),
                "neither an RFC 2822",
            ),
        ];
        for (payload, expected) in cases {
            let message = parse_invocation(&payload).unwrap_err().to_string();
            assert!(message.contains(expected), "{expected}: {message}");
        }
    }
}
