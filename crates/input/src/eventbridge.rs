//! The EventBridge router: an event's `source` and `detail-type` say which parser reads it, and what the parser returns
//! becomes what the event asks for. The envelope itself is read by `envelope`.

use serde_json::Value;

use crate::envelope;
use crate::error::InputError;
use crate::index_update::IndexUpdate;
use crate::kinds::{self, Kind};
use crate::message::Message;
use crate::quoted::Quoted;
use crate::request::RestoreRequest;
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

/// What the event asks for, read by the parser of its kind.
pub(crate) fn parse(payload: &Value) -> Result<EventBridgeRequest, InputError> {
    let (source, detail_type) = envelope::source_and_detail_type(payload)?;
    let Some(expected) = kinds::detail_types_from(source) else {
        return Err(InputError::UnsupportedSource(Quoted::new(source)));
    };
    envelope::check_id(payload)?;
    envelope::check_time(payload)?;
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
