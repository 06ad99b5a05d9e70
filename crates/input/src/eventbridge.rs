//! The EventBridge envelope: `source` and `detail-type` say which parser reads `detail`, and the envelope's own
//! fields (id, time, region, account) become the trigger.

use aws_lambda_events::eventbridge::EventBridgeEvent;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::kinds::{self, Kind};
use crate::values::{check_account, check_region};
use crate::{Action, IndexUpdate, InputError, Message, Quoted, RestoreRequest, Source, Trigger};
use crate::{cloudtrail, health, lifecycle, rebalance, scheduled, spot, state_change};

/// What one EventBridge event asks for.
pub(crate) enum EventBridgeRequest {
    /// Clean up one instance or several (AWS Health lists every affected one), or nothing.
    Message(Message),
    RefreshIndex {
        event_id: Option<String>,
    },
    IndexUpdate(IndexUpdate),
    Restore(RestoreRequest),
}

pub(crate) fn is_eventbridge(object: &serde_json::Map<String, Value>) -> bool {
    object.contains_key("detail-type") || object.contains_key("source")
}

pub(crate) fn parse(payload: &Value) -> Result<EventBridgeRequest, InputError> {
    let text_field = |name: &'static str| -> Result<&str, InputError> {
        match payload.get(name) {
            Some(Value::String(s)) => Ok(s.as_str()),
            Some(_) => Err(InputError::InvalidField {
                field: name,
                reason: "must be a string".into(),
            }),
            None => Err(InputError::Malformed {
                what: "EventBridge event",
                reason: format!("missing field `{name}`"),
            }),
        }
    };
    let source = text_field("source")?;
    let detail_type = text_field("detail-type")?;
    let Some(expected) = kinds::detail_types_from(source) else {
        return Err(InputError::UnsupportedSource(Quoted::new(source)));
    };
    if let Some(Value::String(id)) = payload.get("id")
        && id.len() > 128
    {
        return Err(InputError::InvalidField {
            field: "id",
            reason: "longer than 128 characters".into(),
        });
    }
    match Kind::of(source, detail_type) {
        Some(kind) => read(kind, payload),
        None => Err(InputError::UnsupportedDetailType {
            event_source: Quoted::new(source),
            detail_type: Quoted::new(detail_type),
            expected,
        }),
    }
}

/// Hand the event to the parser of its kind.
fn read(kind: Kind, payload: &Value) -> Result<EventBridgeRequest, InputError> {
    let one = |request| EventBridgeRequest::Message(Message::Requests(vec![request]));
    match kind {
        Kind::SpotInterruption => spot::parse(payload).map(one),
        Kind::RebalanceRecommendation => rebalance::parse(payload).map(one),
        Kind::StateChange if state_change::is_running_again(payload) => {
            state_change::parse_running(payload).map(EventBridgeRequest::Restore)
        }
        Kind::StateChange => state_change::parse(payload).map(EventBridgeRequest::Message),
        Kind::TerminateLifecycleAction => lifecycle::parse_event(payload).map(EventBridgeRequest::Message),
        Kind::LaunchLifecycleAction => Ok(EventBridgeRequest::Message(Message::Ignored(
            "an EC2 Instance-launch Lifecycle Action: a launching instance needs no cleanup".into(),
        ))),
        Kind::HealthEvent => health::parse(payload).map(EventBridgeRequest::Message),
        Kind::ScheduledEvent => scheduled::parse(payload).map(|event_id| EventBridgeRequest::RefreshIndex { event_id }),
        Kind::CloudTrailApiCall => cloudtrail::parse(payload).map(EventBridgeRequest::IndexUpdate),
    }
}

/// Read the event with its `detail` as `T`; `what` names the event in the error when it does not fit.
pub(crate) fn event<T>(payload: &Value, what: &'static str) -> Result<EventBridgeEvent<T>, InputError>
where
    T: Serialize + DeserializeOwned,
{
    serde_json::from_value(payload.clone()).map_err(|e| InputError::malformed(what, e))
}

/// The trigger of an EventBridge event whose `detail` names an instance: the envelope's fields, checked.
pub(crate) fn trigger<T>(
    event: EventBridgeEvent<T>,
    action: Option<Action>,
    event_code: Option<String>,
) -> Result<(T, Trigger), InputError>
where
    T: Serialize + DeserializeOwned,
{
    let region = event.region.as_deref().map(check_region).transpose()?;
    let account = event.account.as_deref().map(check_account).transpose()?;
    let trigger = Trigger {
        event_source: Some(event.source),
        detail_type: Some(event.detail_type),
        action,
        event_id: event.id,
        event_time: event.time,
        region,
        account,
        event_code,
        ..Trigger::from_source(Source::EventBridge)
    };
    Ok((event.detail, trigger))
}

#[cfg(test)]
mod tests {
    use crate::{CLOUDTRAIL_API_CALL, SCHEDULED_EVENT, SPOT_INTERRUPTION, parse_invocation};
    use serde_json::json;

    #[test]
    fn an_unknown_source_is_told_what_is_handled() {
        let message = parse_invocation(&json!({"source": "aws.s3", "detail-type": "Object Created"}))
            .unwrap_err()
            .to_string();
        for handled in [
            "aws.ec2",
            SPOT_INTERRUPTION,
            "aws.events",
            SCHEDULED_EVENT,
            "aws.elasticloadbalancing",
            CLOUDTRAIL_API_CALL,
        ] {
            assert!(message.contains(handled), "{message}");
        }
    }
}
