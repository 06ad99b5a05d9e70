//! SNS, both ways it delivers: a topic invoking the function (`{"Records": [{"EventSource": "aws:sns", "Sns": {...}}]}`,
//! read with `aws_lambda_events`' SNS types), and the envelope a topic wraps each message in when it delivers to an
//! SQS queue without raw message delivery (`{"Type": "Notification", "Message": "<the message>", ...}`, signed for
//! standard topics, unsigned for FIFO ones). Either way the message is one of the other formats: an EventBridge event
//! forwarded to a topic, a lifecycle hook's own notification, or a node-agent payload. This module only opens what SNS
//! delivered and returns the message inside; `dispatch` parses it.

use aws_lambda_events::sns::SnsEvent;
use serde::Deserialize;
use serde_json::Value;

use crate::carrier::{Carried, Carrier, Via};
use crate::error::InputError;
use crate::quoted::Quoted;

/// The event SNS invokes a subscribed function with.
pub(crate) fn is_sns_event(object: &serde_json::Map<String, Value>) -> bool {
    let first = object.get("Records").and_then(Value::as_array).and_then(|r| r.first());
    first.is_some_and(|r| r.get("EventSource").and_then(Value::as_str) == Some("aws:sns") || r.get("Sns").is_some())
}

/// One message per SNS record, each returned on its own so that one bad message fails alone.
pub(crate) fn records(payload: &Value) -> Result<Vec<Carried>, InputError> {
    let event = SnsEvent::deserialize(payload).map_err(|e| InputError::malformed("SNS event", e))?;
    if event.records.is_empty() {
        return Err(InputError::EmptyBatch);
    }
    Ok(event
        .records
        .into_iter()
        .enumerate()
        .map(|(index, record)| {
            let sns = record.sns;
            let body = serde_json::from_str::<Value>(&sns.message).map_err(|e| InputError::malformed("SNS message", e));
            let carrier = Carrier::Sns(Via {
                topic_arn: sns.topic_arn,
                message_id: sns.message_id.clone(),
            });
            Carried {
                message_id: if sns.message_id.is_empty() {
                    format!("SNS record {index}")
                } else {
                    sns.message_id
                },
                body,
                carrier,
            }
        })
        .collect())
}

/// The envelope an SNS topic wraps a message in for an SQS queue.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Envelope {
    #[serde(rename = "Type")]
    kind: String,
    #[serde(default)]
    message_id: Option<String>,
    #[serde(default)]
    topic_arn: Option<String>,
    message: String,
}

pub(crate) fn is_envelope(object: &serde_json::Map<String, Value>) -> bool {
    object.get("Type").and_then(Value::as_str).is_some() && object.get("Message").is_some()
}

/// The message inside an envelope that `carrier` delivered, and what carried it: the SQS record and the topic.
pub(crate) fn open_envelope(payload: &Value, carrier: &Carrier) -> Result<(Value, Carrier), InputError> {
    let Carrier::Sqs(sqs_message_id) = carrier else {
        return Err(InputError::Malformed {
            what: "SNS envelope",
            reason: "an envelope comes inside an SQS record only".into(),
        });
    };
    let envelope = Envelope::deserialize(payload).map_err(|e| InputError::malformed("SNS envelope", e))?;
    if envelope.kind != "Notification" {
        return Err(InputError::Unhandled {
            what: "SNS message type",
            value: Quoted::new(&envelope.kind),
            reason: "only a Notification carries a message; confirm subscriptions on the topic instead",
        });
    }
    let inner = serde_json::from_str::<Value>(&envelope.message)
        .map_err(|e| InputError::malformed("SNS envelope's Message", e))?;
    if inner.as_object().is_some_and(is_envelope) {
        return Err(InputError::Malformed {
            what: "SNS envelope",
            reason: "it wraps another envelope".into(),
        });
    }
    let via = Via {
        topic_arn: envelope.topic_arn.unwrap_or_default(),
        message_id: envelope.message_id.unwrap_or_default(),
    };
    let carrier = Carrier::SqsFromSns {
        message_id: sqs_message_id.clone(),
        via,
    };
    Ok((inner, carrier))
}

#[cfg(test)]
mod tests {
    use crate::samples::sample;
    use crate::{Action, Invocation, Message, Source, parse_invocation};
    use serde_json::json;

    #[test]
    fn an_envelope_opens_to_its_message_and_the_topic_it_came_through() {
        let envelope = json!({
            "Type": "Notification", "MessageId": "n1", "TopicArn": "arn:aws:sns:us-east-1:123456789012:t",
            "Message": "{\"anything\": 1}"
        });
        let (inner, carrier) = super::open_envelope(&envelope, &super::Carrier::Sqs("m1".into())).unwrap();
        assert_eq!(
            inner,
            json!({"anything": 1}),
            "a transport does not parse what it carries"
        );
        assert_eq!(
            carrier,
            super::Carrier::SqsFromSns {
                message_id: "m1".into(),
                via: super::Via {
                    topic_arn: "arn:aws:sns:us-east-1:123456789012:t".into(),
                    message_id: "n1".into(),
                },
            }
        );
        let direct = super::open_envelope(&envelope, &super::Carrier::Direct).unwrap_err();
        assert!(direct.to_string().contains("inside an SQS record only"), "{direct}");
    }

    #[test]
    fn a_lifecycle_hook_delivered_by_sns_is_a_lifecycle_request() {
        let Invocation::Notifications(records) = parse_invocation(&sample("sns-lifecycle-hook.json")).unwrap() else {
            panic!("expected SNS records")
        };
        assert_eq!(records.len(), 1);
        let Ok(Message::Requests(requests)) = &records[0].message else {
            panic!("{:?}", records[0].message)
        };
        let trigger = &requests[0].trigger;
        assert_eq!(trigger.source, Source::AutoScaling);
        assert_eq!(trigger.action, Some(Action::ScaleIn));
        assert!(trigger.lifecycle.is_some());
        assert_eq!(
            trigger.sns_topic_arn.as_deref(),
            Some("arn:aws:sns:us-east-1:123456789012:spot-cleanup-lifecycle")
        );
        // Auto Scaling's own request id names the event; the SNS message id is kept beside it.
        assert_eq!(trigger.event_ref(), "18b2ec17-3e9b-4c15-8024-ff2e8ce8786a");
        assert_eq!(
            trigger.sns_message_id.as_deref(),
            Some("95df01b4-ee98-5cb9-9903-4c221d41eb5e")
        );
    }

    #[test]
    fn the_test_notification_through_sns_is_skipped_and_a_bad_message_fails_alone() {
        let mut event = sample("sns-lifecycle-hook.json");
        let record = event["Records"][0].clone();
        let mut test = record.clone();
        test["Sns"]["Message"] = sample("asg-test-notification.json").to_string().into();
        test["Sns"]["MessageId"] = "test".into();
        let mut bad = record.clone();
        bad["Sns"]["Message"] = "not json".into();
        bad["Sns"]["MessageId"] = "bad".into();
        event["Records"] = json!([record, test, bad]);
        let Invocation::Notifications(records) = parse_invocation(&event).unwrap() else {
            panic!("expected SNS records")
        };
        assert!(matches!(records[0].message, Ok(Message::Requests(_))));
        assert!(matches!(records[1].message, Ok(Message::Skipped(_))));
        let error = records[2].message.as_ref().unwrap_err().to_string();
        assert!(error.contains("malformed SNS message"), "{error}");
        assert_eq!(records[2].message_id, "bad");
    }

    #[test]
    fn an_sns_envelope_in_an_sqs_body_is_unwrapped_signed_or_not() {
        let Invocation::Batch(records) = parse_invocation(&sample("sqs-sns-envelope.json")).unwrap() else {
            panic!("expected a batch")
        };
        for record in &records {
            let Ok(Message::Requests(requests)) = &record.message else {
                panic!("{}: {:?}", record.message_id, record.message)
            };
            let trigger = &requests[0].trigger;
            assert_eq!(trigger.action, Some(Action::Terminate), "{}", record.message_id);
            assert_eq!(trigger.sqs_message_id.as_deref(), Some(record.message_id.as_str()));
            assert!(trigger.sns_topic_arn.as_deref().unwrap().starts_with("arn:aws:sns:"));
        }
        assert_eq!(
            records.len(),
            2,
            "a standard topic's signed envelope and a FIFO topic's unsigned one"
        );
    }

    #[test]
    fn envelopes_that_carry_nothing_usable_are_refused_by_name() {
        let envelope = |kind: &str, message: &str| {
            json!({"Records": [{"messageId": "m", "body": json!({
                "Type": kind, "MessageId": "x", "TopicArn": "arn:aws:sns:us-east-1:123456789012:t", "Message": message
            }).to_string()}]})
        };
        let cases = [
            (
                envelope("SubscriptionConfirmation", "{}"),
                "SNS message type \"SubscriptionConfirmation\"",
            ),
            (envelope("Notification", "not json"), "malformed SNS envelope's Message"),
            (
                envelope(
                    "Notification",
                    &json!({"Type": "Notification", "Message": "{}"}).to_string(),
                ),
                "wraps another envelope",
            ),
        ];
        for (payload, expected) in cases {
            let Invocation::Batch(records) = parse_invocation(&payload).unwrap() else {
                panic!("a batch")
            };
            let error = records[0].message.as_ref().unwrap_err().to_string();
            assert!(error.contains(expected), "{error}");
        }
    }
}
