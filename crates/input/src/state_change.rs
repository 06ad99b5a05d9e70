//! EC2's instance state-change notification. `stopping` is handled like a Spot stop; `shutting-down` and `terminated`
//! remove whatever registrations remain; `running` means an instance Spot stopped or hibernated is back, so its
//! quarantine, if it has one, is undone. Other states are refused by name.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::envelope::{event, trigger};
use crate::error::InputError;
use crate::message::Message;
use crate::quoted::Quoted;
use crate::request::{Request, RestoreRequest};
use crate::trigger::Action;
use crate::values::InstanceId;

#[derive(Serialize, Deserialize)]
struct StateChangeDetail {
    #[serde(rename = "instance-id")]
    instance_id: String,
    state: String,
}

/// What a state asks for: an action, nothing (`pending`, `stopped`), or a refusal of something that is no state.
fn action_for(state: &str) -> Result<Option<Action>, InputError> {
    match state {
        "stopping" => Ok(Some(Action::Stop)),
        "shutting-down" | "terminated" => Ok(Some(Action::Terminating)),
        "pending" | "stopped" => Ok(None),
        _ => Err(InputError::Unhandled {
            what: "instance state",
            value: Quoted::new(state),
            reason: "not an EC2 instance state",
        }),
    }
}

pub(crate) fn parse(payload: &Value) -> Result<Message, InputError> {
    let event = event::<StateChangeDetail>(payload, "instance state-change notification")?;
    let instance_id = InstanceId::parse(&event.detail.instance_id)?;
    let Some(action) = action_for(&event.detail.state)? else {
        return Ok(Message::Ignored(format!(
            "{instance_id} is {}: only stopping, shutting-down and terminated start a cleanup",
            event.detail.state
        )));
    };
    let state = event.detail.state.clone();
    let (_, trigger) = trigger(event, Some(action), Some(state))?;
    Ok(Message::Requests(vec![Request {
        instance_id,
        trigger,
        identity: None,
    }]))
}

/// Whether a state-change event says `running`: that one restores, the others clean up.
pub(crate) fn is_running_again(payload: &Value) -> bool {
    payload.pointer("/detail/state").and_then(Value::as_str) == Some("running")
}

/// `running`: the instance is back (Spot stopped or hibernated it earlier), so its quarantine, if it has one, is
/// undone.
pub(crate) fn parse_running(payload: &Value) -> Result<RestoreRequest, InputError> {
    let event = event::<StateChangeDetail>(payload, "EC2 state-change event")?;
    let instance_id = InstanceId::parse(&event.detail.instance_id)?;
    let (_, trigger) = trigger(event, None, Some("running".into()))?;
    Ok(RestoreRequest { instance_id, trigger })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::STATE_CHANGE;
    use crate::samples::sample;
    use crate::{Invocation, Source, parse_invocation};

    fn event(state: &str) -> Value {
        let mut event = sample("state-change-terminated.json");
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
    fn pending_and_stopped_are_ignored_and_what_is_no_state_is_refused() {
        // `running` restores a quarantine instead.
        assert!(matches!(
            parse_invocation(&event("running")),
            Ok(Invocation::Restore(_))
        ));
        for state in ["pending", "stopped"] {
            let Ok(Invocation::Ignored { reason }) = parse_invocation(&event(state)) else {
                panic!("{state} is ignored")
            };
            assert!(reason.contains(&format!("is {state}")), "{reason}");
        }
        let message = parse_invocation(&event("melted")).unwrap_err().to_string();
        assert!(message.contains("\"melted\" is not handled"), "{message}");
        let mut no_state = event("stopping");
        no_state["detail"].as_object_mut().unwrap().remove("state");
        let message = parse_invocation(&no_state).unwrap_err().to_string();
        assert!(message.contains("missing field `state`"), "{message}");
    }

    #[test]
    fn a_running_instance_is_restored() {
        let Invocation::Restore(restore) = parse_invocation(&sample("ec2-state-change-running.json")).unwrap() else {
            panic!("expected a restore")
        };
        assert_eq!(restore.trigger.source, Source::EventBridge);
        assert_eq!(restore.trigger.account.as_deref(), Some("123456789012"));
        assert_eq!(restore.trigger.event_code.as_deref(), Some("running"));
    }
}
