//! A parsed invocation: what a whole payload asks for, and for a batch what each of its messages asked for.

use crate::error::InputError;
use crate::index_update::IndexUpdate;
use crate::message::Message;
use crate::request::{Request, RestoreRequest};
use crate::trigger::Trigger;

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
    IndexUpdate(IndexUpdate),
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

    /// Set aside every request that `ignore` gives a reason for, as a well-formed event with nothing to do: a direct
    /// invocation is answered `{"ignored": reason}`, and a batch record or SNS message whose requests are all set aside
    /// is done, not failed. Nothing set aside reaches a check, a describe or a change.
    pub fn ignore_requests(&mut self, ignore: impl Fn(&Request) -> Option<String>) {
        match self {
            Invocation::Direct(request) => {
                if let Some(reason) = ignore(request) {
                    *self = Invocation::Ignored { reason };
                }
            }
            Invocation::Several(requests) => {
                if let Some(reason) = keep_wanted(requests, &ignore) {
                    *self = Invocation::Ignored { reason };
                }
            }
            Invocation::Batch(records) | Invocation::Notifications(records) => {
                for record in records {
                    if let Ok(Message::Requests(requests)) = &mut record.message
                        && let Some(reason) = keep_wanted(requests, &ignore)
                    {
                        record.message = Ok(Message::Ignored(reason));
                    }
                }
            }
            Invocation::Skipped { .. }
            | Invocation::Ignored { .. }
            | Invocation::RefreshIndex { .. }
            | Invocation::IndexUpdate(_)
            | Invocation::Restore(_) => {}
        }
    }

    /// One request is a direct invocation; an event naming several instances keeps them together.
    pub(crate) fn from_message(message: Message) -> Invocation {
        match message {
            Message::Requests(mut requests) if requests.len() == 1 => Invocation::Direct(requests.remove(0)),
            Message::Requests(requests) => Invocation::Several(requests),
            Message::Skipped(reason) => Invocation::Skipped { reason },
            Message::Ignored(reason) => Invocation::Ignored { reason },
        }
    }
}

/// Drop the requests `ignore` gives a reason for; when none is left, the reasons, joined.
fn keep_wanted(requests: &mut Vec<Request>, ignore: &impl Fn(&Request) -> Option<String>) -> Option<String> {
    let mut reasons: Vec<String> = Vec::new();
    requests.retain(|request| match ignore(request) {
        Some(reason) => {
            reasons.push(reason);
            false
        }
        None => true,
    });
    (requests.is_empty() && !reasons.is_empty()).then(|| reasons.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::samples::sample;
    use crate::{Source, parse_invocation};
    use serde_json::{Value, json};

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

    /// Another tool's hook, set aside by its name: alone it is an ignored event; in a batch its record is done with
    /// nothing to do while the record of ours stays; an SNS message likewise.
    #[test]
    fn requests_set_aside_become_ignored_and_the_rest_stay() {
        let not_ours = |request: &Request| {
            let hook = request.trigger.lifecycle.as_ref()?;
            (hook.hook_name != "spot-cleanup").then(|| format!("hook {} is not ours", hook.hook_name))
        };
        let mut theirs = sample("asg-terminate-lifecycle.json");
        theirs["detail"]["LifecycleHookName"] = "nth-drain".into();
        let mut invocation = parse_invocation(&theirs).unwrap();
        invocation.ignore_requests(not_ours);
        let Invocation::Ignored { reason } = invocation else {
            panic!("{invocation:?}")
        };
        assert_eq!(reason, "hook nth-drain is not ours");

        let mut ours = parse_invocation(&sample("asg-terminate-lifecycle.json")).unwrap();
        ours.ignore_requests(not_ours);
        assert!(matches!(ours, Invocation::Direct(_)), "{ours:?}");

        let mut direct_theirs = sample("asg-terminate-lifecycle-direct.json");
        direct_theirs["LifecycleHookName"] = "log-shipper".into();
        let batch = json!({"Records": [
            {"messageId": "theirs", "body": direct_theirs.to_string()},
            {"messageId": "ours", "body": sample("asg-terminate-lifecycle-direct.json").to_string()},
            {"messageId": "spot", "body": sample("spot-interruption-terminate.json").to_string()},
        ]});
        let mut invocation = parse_invocation(&batch).unwrap();
        invocation.ignore_requests(not_ours);
        let Invocation::Batch(records) = invocation else {
            panic!("a batch")
        };
        assert_eq!(
            records[0].message,
            Ok(Message::Ignored("hook log-shipper is not ours".into()))
        );
        assert!(matches!(&records[1].message, Ok(Message::Requests(r)) if r.len() == 1));
        assert!(matches!(&records[2].message, Ok(Message::Requests(r)) if r.len() == 1));

        let mut notifications = sample("sns-lifecycle-hook.json");
        let message = notifications["Records"][0]["Sns"]["Message"]
            .as_str()
            .unwrap()
            .to_owned();
        notifications["Records"][0]["Sns"]["Message"] = message.replace("spot-cleanup", "nth-drain").into();
        let mut invocation = parse_invocation(&notifications).unwrap();
        invocation.ignore_requests(not_ours);
        let Invocation::Notifications(records) = invocation else {
            panic!("SNS messages")
        };
        assert_eq!(
            records[0].message,
            Ok(Message::Ignored("hook nth-drain is not ours".into()))
        );
    }
}
