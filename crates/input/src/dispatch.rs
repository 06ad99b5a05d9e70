//! The one place a payload is told apart and handed on: a whole invocation to its transport, the EventBridge router
//! or its parser (`parse_invocation`), and each message a transport carried, including the one inside an SNS envelope,
//! to its parser (`parse_message`). The transports only return what they carry, so nothing calls back here.

use serde_json::Value;

use crate::carrier::{Carried, Carrier};
use crate::error::InputError;
use crate::eventbridge::{self, EventBridgeRequest};
use crate::invocation::{BatchRecord, Invocation};
use crate::message::Message;
use crate::quoted::Quoted;
use crate::{agent, envelope, lifecycle, restore, sns, sqs};

/// The most arrays and objects a payload may nest. serde_json's reader, which Lambda's runtime and this crate read
/// text with, refuses 128 levels, so no payload AWS delivers is deeper; a deeper `Value` built in memory is refused
/// here, before anything walks it recursively (serde's walks recurse once per level, and overflow the stack long
/// before 100,000 levels).
pub const MAX_DEPTH: usize = 127;

/// Parse a whole invocation payload.
pub fn parse_invocation(payload: &Value) -> Result<Invocation, InputError> {
    within_depth(payload)?;
    let object = as_object(payload)?;
    if sns::is_sns_event(object) {
        return sns::records(payload).map(|carried| Invocation::Notifications(parse_each(carried)));
    }
    if object.contains_key("Records") {
        return sqs::records(payload).map(|carried| Invocation::Batch(parse_each(carried)));
    }
    if envelope::is_eventbridge(object) {
        return Ok(match eventbridge::parse(payload)? {
            EventBridgeRequest::Message(message) => Invocation::from_message(message),
            EventBridgeRequest::RefreshIndex { event_id } => Invocation::RefreshIndex { event_id },
            EventBridgeRequest::IndexUpdate(update) => Invocation::IndexUpdate(update),
            EventBridgeRequest::Restore(restore) => Invocation::Restore(restore),
        });
    }
    if restore::is_restore(object) {
        return restore::parse(payload).map(Invocation::Restore);
    }
    parse_message(payload, Carrier::Direct).map(Invocation::from_message)
}

/// Each carried message parsed on its own, so that one bad message fails alone.
fn parse_each(carried: Vec<Carried>) -> Vec<BatchRecord> {
    carried
        .into_iter()
        .map(|carried| BatchRecord {
            message: carried.body.and_then(|body| parse_message(&body, carried.carrier)),
            message_id: carried.message_id,
        })
        .collect()
}

/// Parse one message that names instances: a node-agent payload, an EventBridge event, Auto Scaling's own lifecycle
/// message, or an SNS envelope around any of these. `carrier` says what delivered it, for its triggers.
fn parse_message(payload: &Value, carrier: Carrier) -> Result<Message, InputError> {
    let object = as_object(payload)?;
    let mut message = if sns::is_envelope(object) {
        let (inner, carrier) = sns::open_envelope(payload, &carrier)?;
        return parse_message(&inner, carrier);
    } else if envelope::is_eventbridge(object) {
        // Only batched messages get here: a direct EventBridge event is parsed whole by `parse_invocation`.
        match eventbridge::parse(payload)? {
            EventBridgeRequest::Message(message) => message,
            EventBridgeRequest::RefreshIndex { .. } | EventBridgeRequest::IndexUpdate(_) => {
                return Err(InputError::IndexEventInBatch);
            }
            EventBridgeRequest::Restore(_) => return Err(InputError::RestoreInBatch),
        }
    } else if restore::is_restore(object) {
        return Err(InputError::RestoreInBatch);
    } else if lifecycle::is_auto_scaling_message(object) {
        lifecycle::parse_message(payload)?
    } else if agent::is_agent(object) {
        Message::Requests(vec![agent::parse(payload)?])
    } else if object.contains_key("Records") {
        return Err(InputError::NestedBatch);
    } else {
        return Err(unrecognised(object));
    };
    if let Message::Requests(requests) = &mut message {
        for request in requests {
            carrier.stamp(&mut request.trigger);
        }
    }
    Ok(message)
}

/// What an unrecognised payload is told: the keys it has, a few of them and each cut short.
fn unrecognised(object: &serde_json::Map<String, Value>) -> InputError {
    let mut keys: Vec<String> = object.keys().take(8).map(|k| Quoted::new(k).to_string()).collect();
    if object.len() > keys.len() {
        keys.push("...".into());
    }
    InputError::Unrecognised(keys.join(", "))
}

/// Refuse a payload nesting more than `MAX_DEPTH` arrays and objects, measured without recursion.
fn within_depth(payload: &Value) -> Result<(), InputError> {
    let mut open = vec![(payload, 0)];
    while let Some((value, depth)) = open.pop() {
        let inside: Box<dyn Iterator<Item = &Value>> = match value {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(map) => Box::new(map.values()),
            _ => continue,
        };
        if depth == MAX_DEPTH {
            return Err(InputError::TooDeep(MAX_DEPTH));
        }
        open.extend(inside.map(|inner| (inner, depth + 1)));
    }
    Ok(())
}

fn as_object(payload: &Value) -> Result<&serde_json::Map<String, Value>, InputError> {
    match payload {
        Value::Object(map) => Ok(map),
        Value::Null => Err(InputError::NotAnObject("null")),
        Value::Bool(_) => Err(InputError::NotAnObject("a boolean")),
        Value::Number(_) => Err(InputError::NotAnObject("a number")),
        Value::String(_) => Err(InputError::NotAnObject("a string")),
        Value::Array(_) => Err(InputError::NotAnObject("an array")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SPOT_INTERRUPTION;
    use crate::samples::sample;
    use serde_json::json;

    fn rejected(payload: Value) -> InputError {
        parse_invocation(&payload).expect_err("must be rejected")
    }

    #[test]
    fn bad_payloads_get_errors_that_name_the_problem() {
        let huge = "a".repeat(1_000_000);
        let cases = [
            (json!(null), "JSON object"),
            (json!([1, 2]), "JSON object"),
            (json!({"hello": "world"}), "unrecognised payload"),
            (json!({"instance_id": 5}), "invalid type"),
            (json!({"instance_id": huge}), "invalid instance id"),
            (json!({"instance_id": "i-0123abcd", "extra": 1}), "unknown field"),
            (
                json!({"instance_id": "i-0123abcd", "instance-id": "i-0123abcd"}),
                "both",
            ),
            (
                json!({"instance_id": "i-0123abcd", "action": "explode"}),
                "unknown variant",
            ),
            (json!({"instance_id": "i-0123abcd", "time": "yesterday"}), "RFC 3339"),
            (json!({"instance_id": "i-0123abcd", "account": "12"}), "12-digit"),
            (
                json!({"source": "aws.s3", "detail-type": SPOT_INTERRUPTION}),
                "unsupported event source",
            ),
            (
                json!({"source": "aws.ec2", "detail-type": "EC2 AMI State Change"}),
                "unsupported detail-type",
            ),
            (
                json!({"source": "aws.ec2", "detail-type": SPOT_INTERRUPTION, "detail": {}}),
                "missing field",
            ),
            (json!({"Records": []}), "at least one record"),
            (json!({"Records": "x"}), "malformed SQS event"),
            (
                json!({"Records": [{"EventSource": "aws:sns", "Sns": {"Message": "{}"}}]}),
                "malformed SNS event",
            ),
            (
                json!({"Type": "Notification", "Message": "{}"}),
                "an envelope comes inside an SQS record only",
            ),
        ];
        for (payload, expected) in cases {
            let message = rejected(payload.clone()).to_string();
            assert!(message.contains(expected), "{payload:.80}: {message}");
            assert!(message.len() < 400, "error message too long: {message:.100}...");
        }
    }

    #[test]
    fn the_events_with_nothing_to_do_are_ignored_not_refused() {
        for (file, why) in [
            ("ignored/state-change-pending.json", "pending"),
            ("ignored/lifecycle-launching.json", "EC2_INSTANCE_LAUNCHING"),
            ("ignored/lifecycle-launch-action.json", "launch"),
            ("ignored/health-issue.json", "issue"),
        ] {
            let Invocation::Ignored { reason } = parse_invocation(&sample(file)).unwrap() else {
                panic!("{file}: expected ignored")
            };
            assert!(reason.contains(why), "{file}: {reason}");
        }
    }
}
