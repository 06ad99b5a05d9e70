//! A whole invocation payload: which wire format it is, and what it asks for.

use serde_json::Value;

use crate::eventbridge::{self, EventBridgeRequest};
use crate::{InputError, Quoted, Request, RestoreRequest, Trigger, agent, lifecycle, restore, sqs};

/// One SQS record: its id (for `batchItemFailures`) and what it asked for. One message can name several instances
/// (an AWS Health event lists every affected one) or none (Auto Scaling's test notification, answered quietly).
#[derive(Debug)]
pub struct BatchRecord {
    pub message_id: String,
    pub requests: Result<Vec<Request>, InputError>,
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
    Batch(Vec<BatchRecord>),
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
            if trigger.event_id.is_none() && trigger.sqs_message_id.is_none() && !request_id.is_empty() {
                trigger.event_id = Some(request_id.to_owned());
            }
        };
        match self {
            Invocation::Direct(request) => unnamed(&mut request.trigger),
            Invocation::Several(requests) => requests.iter_mut().for_each(|r| unnamed(&mut r.trigger)),
            Invocation::Restore(restore) => unnamed(&mut restore.trigger),
            Invocation::Skipped { .. }
            | Invocation::Batch(_)
            | Invocation::RefreshIndex { .. }
            | Invocation::IndexUpdate(_) => {}
        }
    }
}

/// Parse a whole invocation payload.
pub fn parse_invocation(payload: &Value) -> Result<Invocation, InputError> {
    let object = as_object(payload)?;
    if object.contains_key("Records") {
        return sqs::parse(payload).map(Invocation::Batch);
    }
    if eventbridge::is_eventbridge(object) {
        return Ok(match eventbridge::parse(payload)? {
            EventBridgeRequest::Cleanup(requests) => several(requests),
            EventBridgeRequest::RefreshIndex { event_id } => Invocation::RefreshIndex { event_id },
            EventBridgeRequest::IndexUpdate(update) => Invocation::IndexUpdate(update),
            EventBridgeRequest::Restore(restore) => Invocation::Restore(restore),
        });
    }
    if restore::is_restore(object) {
        return restore::parse(payload).map(Invocation::Restore);
    }
    if lifecycle::is_auto_scaling_message(object) {
        return Ok(match lifecycle::parse_message(payload)? {
            Some(request) => Invocation::Direct(request),
            None => Invocation::Skipped {
                reason: lifecycle::TEST_NOTIFICATION_SKIPPED,
            },
        });
    }
    parse_message(payload, None).map(several)
}

/// One request is a direct invocation; an event naming several instances keeps them together.
fn several(mut requests: Vec<Request>) -> Invocation {
    match requests.len() {
        1 => Invocation::Direct(requests.remove(0)),
        _ => Invocation::Several(requests),
    }
}

/// Parse one message inside a batch: a node-agent payload, an EventBridge event, or Auto Scaling's own lifecycle
/// message. It names one instance, several (AWS Health), or none (a test notification, to be skipped quietly).
pub(crate) fn parse_message(payload: &Value, sqs_message_id: Option<&str>) -> Result<Vec<Request>, InputError> {
    let object = as_object(payload)?;
    let mut requests = if eventbridge::is_eventbridge(object) {
        match eventbridge::parse(payload)? {
            EventBridgeRequest::Cleanup(requests) => requests,
            EventBridgeRequest::RefreshIndex { .. } | EventBridgeRequest::IndexUpdate(_) => {
                return Err(InputError::IndexEventInBatch);
            }
            EventBridgeRequest::Restore(_) => return Err(InputError::RestoreInBatch),
        }
    } else if restore::is_restore(object) {
        return Err(InputError::RestoreInBatch);
    } else if lifecycle::is_auto_scaling_message(object) {
        lifecycle::parse_message(payload)?.into_iter().collect()
    } else if agent::is_agent(object) {
        vec![agent::parse(payload)?]
    } else if object.contains_key("Records") {
        return Err(InputError::NestedBatch);
    } else {
        let mut keys: Vec<String> = object.keys().take(8).map(|k| Quoted::new(k).to_string()).collect();
        if object.len() > keys.len() {
            keys.push("...".into());
        }
        return Err(InputError::Unrecognised(keys.join(", ")));
    };
    for request in &mut requests {
        request.trigger.sqs_message_id = sqs_message_id.map(str::to_owned);
    }
    Ok(requests)
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
        for request in records.iter().flat_map(|r| r.requests.as_ref().unwrap()) {
            assert_ne!(request.trigger.event_ref(), "req-1");
            assert!(!request.trigger.event_ref().is_empty());
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
        ];
        for (payload, expected) in cases {
            let message = rejected(payload.clone()).to_string();
            assert!(message.contains(expected), "{payload:.80}: {message}");
            assert!(message.len() < 400, "error message too long: {message:.100}...");
        }
    }
}
