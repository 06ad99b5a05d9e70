//! Auto Scaling's terminate lifecycle action, in both shapes it arrives in: as an EventBridge event (`aws.autoscaling`,
//! the fields under `detail`), and as the message a lifecycle hook sends straight to SQS or SNS (the same fields at the
//! top level, no detail-type). The hook's test notification carries no instance and is skipped quietly.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::envelope::{event, trigger};
use crate::error::InputError;
use crate::kinds::AUTOSCALING_SOURCE;
use crate::message::Message;
use crate::quoted::Quoted;
use crate::request::Request;
use crate::trigger::{Action, LifecycleAction, LifecycleDestination, Source, Trigger};
use crate::values::{InstanceId, check_account, parse_time};

const TERMINATING: &str = "autoscaling:EC2_INSTANCE_TERMINATING";
const LAUNCHING: &str = "autoscaling:EC2_INSTANCE_LAUNCHING";
const TEST_NOTIFICATION: &str = "autoscaling:TEST_NOTIFICATION";
pub(crate) const TEST_NOTIFICATION_SKIPPED: &str =
    "autoscaling:TEST_NOTIFICATION: the lifecycle hook's test message names no instance; nothing to do";

/// The hook's fields, the same in `detail` and in the direct message.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HookFields {
    lifecycle_hook_name: String,
    auto_scaling_group_name: String,
    #[serde(rename = "EC2InstanceId")]
    ec2_instance_id: String,
    lifecycle_transition: String,
    lifecycle_action_token: Option<String>,
    /// `EC2` or `WarmPool` for a terminating instance; a launching one's is `AutoScalingGroup`, so it is read only
    /// once the transition is known.
    #[serde(default)]
    destination: Option<String>,
}

/// The direct message's own envelope.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DirectMessage {
    #[serde(flatten)]
    hook: HookFields,
    account_id: Option<String>,
    request_id: Option<String>,
    time: Option<String>,
}

/// A message Auto Scaling sent itself (not through EventBridge): a lifecycle action or the test notification.
pub(crate) fn is_auto_scaling_message(object: &serde_json::Map<String, Value>) -> bool {
    object.contains_key("LifecycleTransition") || object.get("Event").and_then(Value::as_str) == Some(TEST_NOTIFICATION)
}

/// The direct shape: a request, the test notification (skipped), or a launching instance (ignored).
pub(crate) fn parse_message(payload: &Value) -> Result<Message, InputError> {
    if payload.get("Event").and_then(Value::as_str) == Some(TEST_NOTIFICATION) {
        return Ok(Message::Skipped(TEST_NOTIFICATION_SKIPPED));
    }
    let message =
        DirectMessage::deserialize(payload).map_err(|e| InputError::malformed("Auto Scaling lifecycle message", e))?;
    let account = message.account_id.as_deref().map(check_account).transpose()?;
    // Only the EventBridge shape says which region; the direct one is for this function's own region.
    let trigger = Trigger {
        event_source: Some(AUTOSCALING_SOURCE.to_owned()),
        action: Some(Action::ScaleIn),
        event_id: message.request_id,
        event_time: message.time.as_deref().map(|t| parse_time("Time", t)).transpose()?,
        account,
        ..Trigger::from_source(Source::AutoScaling)
    };
    request(message.hook, trigger)
}

/// The EventBridge shape.
pub(crate) fn parse_event(payload: &Value) -> Result<Message, InputError> {
    let event = event::<HookFields>(payload, "lifecycle action event")?;
    let (hook, trigger) = trigger(event, Some(Action::ScaleIn), None)?;
    request(hook, trigger)
}

fn request(hook: HookFields, mut trigger: Trigger) -> Result<Message, InputError> {
    if hook.lifecycle_transition == LAUNCHING {
        return Ok(Message::Ignored(format!(
            "{LAUNCHING} for {}: a launching instance needs no cleanup",
            Quoted::new(&hook.ec2_instance_id)
        )));
    }
    if hook.lifecycle_transition != TERMINATING {
        return Err(InputError::Unhandled {
            what: "lifecycle transition",
            value: Quoted::new(&hook.lifecycle_transition),
            reason: "only autoscaling:EC2_INSTANCE_TERMINATING starts a cleanup",
        });
    }
    for (field, value) in [
        ("LifecycleHookName", &hook.lifecycle_hook_name),
        ("AutoScalingGroupName", &hook.auto_scaling_group_name),
    ] {
        if value.is_empty() || value.len() > 255 {
            return Err(InputError::InvalidField {
                field,
                reason: format!("{} is not 1 to 255 characters", Quoted::new(value)),
            });
        }
    }
    let instance_id = InstanceId::parse(&hook.ec2_instance_id)?;
    let destination = match hook.destination {
        None => LifecycleDestination::default(),
        Some(value) => LifecycleDestination::deserialize(Value::String(value))
            .map_err(|e| InputError::malformed("lifecycle action's Destination", e))?,
    };
    trigger.event_code = Some(hook.lifecycle_transition);
    trigger.lifecycle = Some(Box::new(LifecycleAction {
        hook_name: hook.lifecycle_hook_name,
        group_name: hook.auto_scaling_group_name,
        token: hook.lifecycle_action_token,
        destination,
    }));
    Ok(Message::Requests(vec![Request {
        instance_id,
        trigger,
        identity: None,
    }]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::samples::sample;
    use crate::{Invocation, parse_invocation};

    fn direct(payload: Value) -> Request {
        match parse_invocation(&payload).unwrap() {
            Invocation::Direct(request) => request,
            other => panic!("expected one request, got {other:?}"),
        }
    }

    #[test]
    fn both_shapes_give_the_same_lifecycle_action() {
        let from_eventbridge = direct(sample("asg-terminate-lifecycle.json"));
        let from_sqs = direct(sample("asg-terminate-lifecycle-direct.json"));
        for request in [&from_eventbridge, &from_sqs] {
            assert_eq!(request.instance_id.as_str(), "i-0123456789abcdef0");
            assert_eq!(request.trigger.action, Some(Action::ScaleIn));
            assert_eq!(
                request.trigger.lifecycle.as_deref(),
                Some(&LifecycleAction {
                    hook_name: "spot-cleanup".into(),
                    group_name: "nodes".into(),
                    token: Some("87654321-4321-4321-4321-210987654321".into()),
                    destination: LifecycleDestination::Ec2,
                })
            );
            assert!(!request.trigger.keeps_network());
        }
        assert_eq!(from_eventbridge.trigger.source, Source::EventBridge);
        assert_eq!(from_eventbridge.trigger.region.as_deref(), Some("us-east-1"));
        assert_eq!(from_sqs.trigger.source, Source::AutoScaling);
        assert_eq!(from_sqs.trigger.region, None);
        assert_eq!(from_sqs.trigger.account.as_deref(), Some("123456789012"));
    }

    #[test]
    fn a_warm_pool_destination_keeps_the_network() {
        let mut event = sample("asg-terminate-lifecycle.json");
        event["detail"]["Destination"] = "WarmPool".into();
        let request = direct(event);
        assert_eq!(
            request.trigger.lifecycle.unwrap().destination,
            LifecycleDestination::WarmPool
        );
    }

    #[test]
    fn the_test_notification_is_skipped_quietly() {
        let Invocation::Skipped { reason } = parse_invocation(&sample("asg-test-notification.json")).unwrap() else {
            panic!("expected a skip")
        };
        assert!(reason.contains("TEST_NOTIFICATION"));
        // In a batch it is a record with nothing to do, not a failed one.
        let batch = serde_json::json!({"Records": [
            {"messageId": "t1", "body": sample("asg-test-notification.json").to_string()},
            {"messageId": "l1", "body": sample("asg-terminate-lifecycle-direct.json").to_string()},
        ]});
        let Invocation::Batch(records) = parse_invocation(&batch).unwrap() else {
            panic!("expected a batch")
        };
        assert!(matches!(records[0].message, Ok(Message::Skipped(_))));
        let Ok(Message::Requests(requests)) = &records[1].message else {
            panic!("{:?}", records[1].message)
        };
        let lifecycle = &requests[0];
        assert_eq!(lifecycle.trigger.sqs_message_id.as_deref(), Some("l1"));
        assert!(lifecycle.trigger.lifecycle.is_some());
    }

    #[test]
    fn other_transitions_and_bad_fields_are_refused() {
        let direct_sample = sample("asg-terminate-lifecycle-direct.json");
        let with = |key: &str, value: Value| {
            let mut message = direct_sample.clone();
            message[key] = value;
            message
        };
        let cases = [
            (
                with("LifecycleTransition", "autoscaling:EC2_INSTANCE_REBOOTING".into()),
                "lifecycle transition \"autoscaling:EC2_INSTANCE_REBOOTING\" is not handled",
            ),
            (with("EC2InstanceId", "i-zz".into()), "invalid instance id"),
            (with("LifecycleHookName", "".into()), "invalid LifecycleHookName"),
            (with("Destination", "Moon".into()), "unknown variant"),
            (with("AccountId", "12".into()), "12-digit"),
            (
                with("AutoScalingGroupName", 5.into()),
                "malformed Auto Scaling lifecycle message",
            ),
        ];
        for (payload, expected) in cases {
            let message = parse_invocation(&payload).unwrap_err().to_string();
            assert!(message.contains(expected), "{expected}: {message}");
        }
        let mut event = sample("asg-terminate-lifecycle.json");
        event["detail"].as_object_mut().unwrap().remove("LifecycleHookName");
        let message = parse_invocation(&event).unwrap_err().to_string();
        assert!(message.contains("missing field `LifecycleHookName`"), "{message}");
    }
}
