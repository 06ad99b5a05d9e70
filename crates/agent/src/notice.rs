//! What instance metadata says is about to happen, as the one `Notice` type the agent acts on, and the payload the
//! function receives for it.
//!
//! Three metadata paths speak, each in its own format: `spot/instance-action` (JSON with `action` and `time`),
//! `events/recommendations/rebalance` (JSON with `noticeTime`) and `autoscaling/target-lifecycle-state` (a bare word;
//! only `Terminated` is a notice). Nothing after this module knows which one it was, except through `Action`.

use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;
use spot_cleanup_input::{Action, AgentPayload, Quoted};

use crate::identity::Identity;

pub const INSTANCE_ACTION_PATH: &str = "/latest/meta-data/spot/instance-action";
pub const REBALANCE_PATH: &str = "/latest/meta-data/events/recommendations/rebalance";
pub const LIFECYCLE_STATE_PATH: &str = "/latest/meta-data/autoscaling/target-lifecycle-state";

/// How long the agent keeps retrying a notice that names no termination time (rebalance, scale-in): a Spot
/// interruption gives two minutes, and an Auto Scaling termination is not slower.
const UNTIMED_DEADLINE: TimeDelta = TimeDelta::minutes(2);
/// Longest lifecycle state we accept; real ones are words such as `Warmed:Hibernated`.
const LIFECYCLE_STATE_LIMIT: usize = 64;

/// One thing about to happen to this instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub action: Action,
    /// When it happens (`spot/instance-action`), when it was announced (rebalance), or when the agent first saw it
    /// (scale-in, whose state carries no time).
    pub time: DateTime<Utc>,
    /// The agent stops retrying a failed invoke after this: by then the instance is gone.
    pub deadline: DateTime<Utc>,
    /// Equal keys are the same notice, seen again on a later poll.
    pub key: NoticeKey,
}

/// What makes a notice the same notice: its kind and its own time. A scale-in has no time of its own, and an instance
/// is terminated once, so its key is its kind alone.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NoticeKey {
    pub action: Action,
    pub time: Option<DateTime<Utc>>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum NoticeError {
    #[error("{path} is not the expected JSON: {reason}")]
    Malformed { path: &'static str, reason: String },
    #[error("{path} names unknown action {action}; expected terminate, stop or hibernate")]
    UnknownAction { path: &'static str, action: Quoted },
    #[error("{path} has time {time}, which is not RFC 3339")]
    BadTime { path: &'static str, time: Quoted },
    #[error("{path} is not a lifecycle state: {value}")]
    BadLifecycleState { path: &'static str, value: Quoted },
}

#[derive(Deserialize)]
struct InstanceAction {
    action: String,
    time: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RebalanceRecommendation {
    notice_time: String,
}

/// `spot/instance-action`: `{"action": "terminate", "time": "2026-11-22T01:02:03Z"}`.
pub fn parse_instance_action(body: &str) -> Result<Notice, NoticeError> {
    let path = INSTANCE_ACTION_PATH;
    let parsed: InstanceAction = serde_json::from_str(body).map_err(|e| NoticeError::Malformed {
        path,
        reason: e.to_string(),
    })?;
    let action = match parsed.action.as_str() {
        "terminate" => Action::Terminate,
        "stop" => Action::Stop,
        "hibernate" => Action::Hibernate,
        other => {
            return Err(NoticeError::UnknownAction {
                path,
                action: Quoted::new(other),
            });
        }
    };
    let time = parse_time(path, &parsed.time)?;
    Ok(Notice {
        action,
        time,
        deadline: time,
        key: NoticeKey {
            action,
            time: Some(time),
        },
    })
}

/// `events/recommendations/rebalance`: `{"noticeTime": "2026-11-22T01:02:03Z"}`.
pub fn parse_rebalance(body: &str) -> Result<Notice, NoticeError> {
    let path = REBALANCE_PATH;
    let parsed: RebalanceRecommendation = serde_json::from_str(body).map_err(|e| NoticeError::Malformed {
        path,
        reason: e.to_string(),
    })?;
    let time = parse_time(path, &parsed.notice_time)?;
    Ok(Notice {
        action: Action::Rebalance,
        time,
        deadline: time.max(Utc::now()) + UNTIMED_DEADLINE,
        key: NoticeKey {
            action: Action::Rebalance,
            time: Some(time),
        },
    })
}

/// `autoscaling/target-lifecycle-state`: a notice only when Auto Scaling has decided to terminate the instance.
pub fn parse_lifecycle_state(body: &str, seen_at: DateTime<Utc>) -> Result<Option<Notice>, NoticeError> {
    let state = body.trim();
    let word_like = !state.is_empty()
        && state.len() <= LIFECYCLE_STATE_LIMIT
        && state.bytes().all(|b| b.is_ascii_alphanumeric() || b == b':');
    if !word_like {
        return Err(NoticeError::BadLifecycleState {
            path: LIFECYCLE_STATE_PATH,
            value: Quoted::new(body),
        });
    }
    Ok((state == "Terminated").then(|| Notice {
        action: Action::ScaleIn,
        time: seen_at,
        deadline: seen_at + UNTIMED_DEADLINE,
        key: NoticeKey {
            action: Action::ScaleIn,
            time: None,
        },
    }))
}

fn parse_time(path: &'static str, raw: &str) -> Result<DateTime<Utc>, NoticeError> {
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| NoticeError::BadTime {
            path,
            time: Quoted::new(raw),
        })
}

/// What the function receives for `notice`: who, what, when, and the signed identity document that proves the
/// sender runs on that instance. The function parses it with the same type.
pub fn payload(identity: &Identity, notice: &Notice) -> AgentPayload {
    AgentPayload::notice(&identity.as_agent(), notice.action, notice.time)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn spot_actions_are_notices_whose_deadline_is_their_time() {
        for (word, action) in [
            ("terminate", Action::Terminate),
            ("stop", Action::Stop),
            ("hibernate", Action::Hibernate),
        ] {
            let body = format!(r#"{{"action": "{word}", "time": "2026-11-22T01:02:03Z"}}"#);
            let notice = parse_instance_action(&body).unwrap();
            assert_eq!(notice.action, action);
            assert_eq!(notice.time, at("2026-11-22T01:02:03Z"));
            assert_eq!(notice.deadline, notice.time);
            assert_eq!(notice.key.time, Some(notice.time));
        }
    }

    #[test]
    fn malformed_spot_actions_are_errors_not_notices() {
        for body in [
            "",
            "{",
            "terminate",
            r#"{"action": "terminate"}"#,
            r#"{"action": 1, "time": "2026-11-22T01:02:03Z"}"#,
        ] {
            assert!(
                matches!(parse_instance_action(body), Err(NoticeError::Malformed { .. })),
                "{body:?}"
            );
        }
        assert!(matches!(
            parse_instance_action(r#"{"action": "reboot", "time": "2026-11-22T01:02:03Z"}"#),
            Err(NoticeError::UnknownAction { .. })
        ));
        assert!(matches!(
            parse_instance_action(r#"{"action": "stop", "time": "tomorrow"}"#),
            Err(NoticeError::BadTime { .. })
        ));
    }

    #[test]
    fn a_rebalance_recommendation_is_keyed_by_its_notice_time() {
        let first = parse_rebalance(r#"{"noticeTime": "2026-11-22T01:00:00Z"}"#).unwrap();
        let again = parse_rebalance(r#"{"noticeTime": "2026-11-22T01:00:00Z"}"#).unwrap();
        let later = parse_rebalance(r#"{"noticeTime": "2026-11-22T01:30:00Z"}"#).unwrap();
        assert_eq!(first.action, Action::Rebalance);
        assert_eq!(first.key, again.key);
        assert_ne!(first.key, later.key);
        assert!(first.deadline > first.time);
        assert!(matches!(
            parse_rebalance(r#"{"time": "x"}"#),
            Err(NoticeError::Malformed { .. })
        ));
        assert!(matches!(
            parse_rebalance(r#"{"noticeTime": "01:00"}"#),
            Err(NoticeError::BadTime { .. })
        ));
    }

    #[test]
    fn only_the_terminated_lifecycle_state_is_a_notice() {
        let seen = at("2026-11-22T01:00:00Z");
        for state in ["InService", "Warmed:Hibernated", "Pending:Wait", "Terminating\n"] {
            assert_eq!(parse_lifecycle_state(state, seen), Ok(None), "{state}");
        }
        let notice = parse_lifecycle_state("Terminated", seen).unwrap().unwrap();
        assert_eq!(notice.action, Action::ScaleIn);
        assert_eq!(notice.time, seen);
        let later = parse_lifecycle_state("Terminated\n", seen + TimeDelta::seconds(5))
            .unwrap()
            .unwrap();
        assert_eq!(notice.key, later.key, "seen again later, it is the same notice");
        for bad in ["", "{\"state\": 1}", "In Service", &"x".repeat(65)] {
            assert!(
                matches!(
                    parse_lifecycle_state(bad, seen),
                    Err(NoticeError::BadLifecycleState { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_payload_carries_the_identity_raw_and_the_action_in_kebab_case() {
        let document = "{\n  \"accountId\" : \"123456789012\",\n  \"instanceId\" : \"i-0123456789abcdef0\",\n  \"region\" : \"eu-west-1\"\n}";
        let identity = Identity::parse(document.to_owned(), "c2lnbmF0dXJl\n".to_owned()).unwrap();
        let notice = parse_lifecycle_state("Terminated", at("2026-11-22T01:02:03.456Z"))
            .unwrap()
            .unwrap();
        let payload = serde_json::to_value(payload(&identity, &notice)).unwrap();
        assert_eq!(
            payload,
            serde_json::json!({
                "instance_id": "i-0123456789abcdef0",
                "action": "scale-in",
                "time": "2026-11-22T01:02:03Z",
                "region": "eu-west-1",
                "account": "123456789012",
                "identity_document": document,
                "identity_signature": "c2lnbmF0dXJl\n",
            })
        );
    }
}
