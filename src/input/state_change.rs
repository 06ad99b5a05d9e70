//! EC2's instance state-change notification. `stopping` is handled like a Spot stop; `shutting-down` and `terminated`
//! remove whatever registrations remain. Other states are refused by name: `running` (restoring a quarantined
//! instance) is another piece of work.

use aws_lambda_events::eventbridge::EventBridgeEvent;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Action, InputError, InstanceId, Quoted, Request, eventbridge_trigger};

pub const STATE_CHANGE: &str = "EC2 Instance State-change Notification";

#[derive(Serialize, Deserialize)]
struct StateChangeDetail {
    #[serde(rename = "instance-id")]
    instance_id: String,
    state: String,
}

/// What a state asks for, or why it is refused.
fn action_for(state: &str) -> Result<Action, InputError> {
    let refuse = |reason| InputError::Unhandled {
        what: "instance state",
        value: Quoted::new(state),
        reason,
    };
    match state {
        "stopping" => Ok(Action::Stop),
        "shutting-down" | "terminated" => Ok(Action::Terminating),
        "running" => Err(refuse(
            "a running instance needs nothing removed; restoring a quarantined instance is not done here",
        )),
        "pending" | "stopped" => Err(refuse("only stopping, shutting-down and terminated start a cleanup")),
        _ => Err(refuse("not an EC2 instance state")),
    }
}

pub(super) fn parse(payload: &Value) -> Result<Request, InputError> {
    let event: EventBridgeEvent<StateChangeDetail> = serde_json::from_value(payload.clone())
        .map_err(|e| InputError::malformed("instance state-change notification", e))?;
    let action = action_for(&event.detail.state)?;
    let state = event.detail.state.clone();
    let (detail, trigger) = eventbridge_trigger(event, Some(action), Some(state))?;
    Ok(Request {
        instance_id: InstanceId::parse(&detail.instance_id)?,
        trigger,
        identity: None,
    })
}

#[cfg(test)]
mod tests {
    use super::super::{Invocation, parse_invocation};
    use super::*;

    fn event(state: &str) -> Value {
        let text = include_str!("../../events/state-change-terminated.json");
        let mut event: Value = serde_json::from_str(text).unwrap();
        event["detail"]["state"] = state.into();
        event
    }

    fn direct(payload: Value) -> Request {
        match parse_invocation(&payload).unwrap() {
            Invocation::Direct(request) => request,
            other => panic!("expected one request, got {other:?}"),
        }
    }

    #[test]
    fn stopping_is_a_stop_and_going_away_is_terminating() {
        let stopping = direct(event("stopping"));
        assert_eq!(stopping.trigger.action, Some(Action::Stop));
        assert_eq!(stopping.trigger.event_code.as_deref(), Some("stopping"));
        for state in ["shutting-down", "terminated"] {
            let request = direct(event(state));
            assert_eq!(request.instance_id.as_str(), "i-0123456789abcdef0");
            assert_eq!(request.trigger.action, Some(Action::Terminating));
            assert_eq!(request.trigger.event_code.as_deref(), Some(state));
            assert_eq!(request.trigger.detail_type.as_deref(), Some(STATE_CHANGE));
        }
    }

    #[test]
    fn other_states_are_refused_by_name() {
        // `running` is not this parser's: it restores a quarantine (see `parse_state_change_running`).
        assert!(matches!(
            parse_invocation(&event("running")),
            Ok(crate::input::Invocation::Restore(_))
        ));
        for state in ["pending", "stopped", "melted"] {
            let message = parse_invocation(&event(state)).unwrap_err().to_string();
            assert!(message.contains(&format!("\"{state}\" is not handled")), "{message}");
        }
        let mut no_state = event("stopping");
        no_state["detail"].as_object_mut().unwrap().remove("state");
        let message = parse_invocation(&no_state).unwrap_err().to_string();
        assert!(message.contains("missing field `state`"), "{message}");
    }
}
