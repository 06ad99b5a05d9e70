//! A whole invocation payload: which wire format it is, and what it asks for.

use serde_json::Value;

use crate::eventbridge::{self, EventBridgeRequest};
use crate::sns::{self, Carrier};
use crate::{InputError, Quoted, Request, RestoreRequest, Trigger, agent, lifecycle, restore, sqs};

/// What one message asks for.
#[derive(Debug, PartialEq)]
pub enum Message {
    /// Clean up these instances (an AWS Health event names several).
    Requests(Vec<Request>),
    /// A message that asks for nothing by design: Auto Scaling's test notification.
    Skipped(&'static str),
    /// A well-formed AWS event this function has nothing to do for (a state change to `pending`, a launch lifecycle
    /// action, a Health issue), and why. Not an error: a rule or queue shared with other consumers sends such events.
    Ignored(String),
}

/// One SQS record or SNS message: its id (for `batchItemFailures`, or naming the SNS record that failed) and what
/// it asked for.
#[derive(Debug)]
pub struct BatchRecord {
    pub message_id: String,
    pub message: Result<Message, InputError>,
}

/// A parsed invocation.
#[derive(Debug)]
pub enum Invocation {
    Direct(Request),
    /// One event that names several instances (AWS Health lists every affected one).
    Several(Vec<Request>),
    /// A message that asks for nothing, answered quietly: Auto Scaling's test notification.
    Skipped {
        reason: &'static str,
    },
    /// A well-formed event with nothing to do, answered `{"ignored": reason}`.
    Ignored {
        reason: String,
    },
    /// An SQS batch; the answer lists the records that failed.
    Batch(Vec<BatchRecord>),
    /// SNS messages delivered to the function; any that failed fails the invocation, so that SNS delivers again.
    Notifications(Vec<BatchRecord>),
    /// An EventBridge schedule fired: refresh the registration index.
    RefreshIndex {
        event_id: Option<String>,
    },
    /// CloudTrail saw a RegisterTargets or DeregisterTargets call: update the registration index.
    IndexUpdate(crate::IndexUpdate),
    /// Undo a quarantine: asked for directly, or because the instance is `running` again.
    Restore(RestoreRequest),
}

impl Invocation {
    /// Give a request that arrived with no event id of its own (a direct node-agent or operator invocation) the Lambda
    /// request id, so its summary and its log lines name something to search for. Lambda's own retries of an async
    /// invocation keep the request id, so they share it.
    pub fn name_events(&mut self, request_id: &str) {
        let unnamed = |trigger: &mut Trigger| {
            if trigger.event_ref().is_empty() && !request_id.is_empty() {
                trigger.event_id = Some(request_id.to_owned());
            }
        };
        match self {
            Invocation::Direct(request) => unnamed(&mut request.trigger),
            Invocation::Several(requests) => requests.iter_mut().for_each(|r| unnamed(&mut r.trigger)),
            Invocation::Restore(restore) => unnamed(&mut restore.trigger),
            Invocation::Skipped { .. }
            | Invocation::Ignored { .. }
            | Invocation::Batch(_)
            | Invocation::Notifications(_)
            | Invocation::RefreshIndex { .. }
            | Invocation::IndexUpdate(_) => {}
        }
    }
}

/// Parse a whole invocation payload.
pub fn parse_invocation(payload: &Value) -> Result<Invocation, InputError> {
    let object = as_object(payload)?;
    if sns::is_sns_event(object) {
        return sns::parse(payload).map(Invocation::Notifications);
    }
    if object.contains_key("Records") {
        return sqs::parse(payload).map(Invocation::Batch);
    }
    if eventbridge::is_eventbridge(object) {
        return Ok(match eventbridge::parse(payload)? {
            EventBridgeRequest::Message(message) => from_message(message),
            EventBridgeRequest::RefreshIndex { event_id } => Invocation::RefreshIndex { event_id },
            EventBridgeRequest::IndexUpdate(update) => Invocation::IndexUpdate(update),
            EventBridgeRequest::Restore(restore) => Invocation::Restore(restore),
        });
    }
    if restore::is_restore(object) {
        return restore::parse(payload).map(Invocation::Restore);
    }
    parse_message(payload, Carrier::Direct).map(from_message)
}

/// One request is a direct invocation; an event naming several instances keeps them together.
fn from_message(message: Message) -> Invocation {
    match message {
        Message::Requests(mut requests) if requests.len() == 1 => Invocation::Direct(requests.remove(0)),
        Message::Requests(requests) => Invocation::Several(requests),
        Message::Skipped(reason) => Invocation::Skipped { reason },
        Message::Ignored(reason) => Invocation::Ignored { reason },
    }
}

/// Parse one message that names instances: a node-agent payload, an EventBridge event, Auto Scaling's own lifecycle
/// message, or an SNS envelope around any of these. `carrier` says what delivered it, for its triggers.
pub(crate) fn parse_message(payload: &Value, carrier: Carrier) -> Result<Message, InputError> {
    let object = as_object(payload)?;
    let mut message = if sns::is_envelope(object) {
        let Carrier::Sqs(id) = &carrier else {
            return Err(InputError::Malformed {
                what: "SNS envelope",
                reason: "an envelope comes inside an SQS record only".into(),
            });
        };
        return sns::unwrap(payload, Some(id));
    } else if eventbridge::is_eventbridge(object) {
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
        let mut keys: Vec<String> = object.keys().take(8).map(|k| Quoted::new(k).to_string()).collect();
        if object.len() > keys.len() {
            keys.push("...".into());
        }
        return Err(InputError::Unrecognised(keys.join(", ")));
    };
    if let Message::Requests(requests) = &mut message {
        for request in requests {
            carrier.stamp(&mut request.trigger);
        }
    }
    Ok(message)
}

impl Carrier {
    /// Note on a trigger what carried its request.
    fn stamp(&self, trigger: &mut Trigger) {
        match self {
            Carrier::Direct => {}
            Carrier::Sqs(id) => trigger.sqs_message_id = Some(id.clone()),
            Carrier::Sns(via) => {
                trigger.sns_topic_arn = Some(via.topic_arn.clone()).filter(|t| !t.is_empty());
                trigger.sns_message_id = Some(via.message_id.clone()).filter(|m| !m.is_empty());
            }
            Carrier::SqsFromSns { message_id, via } => {
                trigger.sqs_message_id = Some(message_id.clone());
                trigger.sns_topic_arn = Some(via.topic_arn.clone()).filter(|t| !t.is_empty());
                trigger.sns_message_id = Some(via.message_id.clone()).filter(|m| !m.is_empty());
            }
        }
    }
}

pub(crate) fn as_object(payload: &Value) -> Result<&serde_json::Map<String, Value>, InputError> {
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
    use crate::samples::sample;
    use crate::{SPOT_INTERRUPTION, Source};
    use serde_json::json;

    fn rejected(payload: Value) -> InputError {
        parse_invocation(&payload).expect_err("must be rejected")
    }

    #[test]
    fn a_request_without_an_event_id_is_named_by_its_lambda_request_id() {
        let named = |payload: Value| {
            let mut invocation = parse_invocation(&payload).expect("parses");
            invocation.name_events("req-1");
            invocation
        };
        let Invocation::Direct(agent) = named(json!({"instance_id": "i-0123abcd"})) else {
            panic!("direct")
        };
        assert_eq!(agent.trigger.event_id.as_deref(), Some("req-1"));
        assert_eq!(agent.trigger.source, Source::NodeAgent);
        let Invocation::Restore(restore) = named(json!({"action": "restore", "instance_id": "i-0123abcd"})) else {
            panic!("restore")
        };
        assert_eq!(restore.trigger.event_id.as_deref(), Some("req-1"));
        // An event keeps its own id, and an SQS record keeps its message id as its name.
        let Invocation::Direct(event) = named(sample("spot-interruption-terminate.json")) else {
            panic!("direct")
        };
        assert_ne!(event.trigger.event_id.as_deref(), Some("req-1"));
        assert!(event.trigger.event_id.is_some());
        let Invocation::Batch(records) = named(sample("sqs-batch.json")) else {
            panic!("batch")
        };
        for record in &records {
            let Ok(Message::Requests(requests)) = &record.message else {
                panic!("{record:?}")
            };
            for request in requests {
                assert_ne!(request.trigger.event_ref(), "req-1");
                assert!(!request.trigger.event_ref().is_empty());
            }
        }
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
