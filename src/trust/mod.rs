//! What is refused before anything changes: where the request comes from (scope), how old it is (freshness) and who
//! sent it (identity). Pure: no AWS call. A refused request changes nothing and is answered with a typed error; the
//! caller publishes the `Refusal`, marked as a security signal when someone asked for something they should not.

pub mod freshness;
pub mod identity;
pub mod scope;

use std::fmt;
use std::time::Duration;

use chrono::Utc;
use serde::Serialize;

use crate::input::{InstanceId, Invocation, Message, Request, RestoreRequest, Source, Trigger};
use freshness::DEFAULT_MAX_EVENT_AGE;
use identity::IdentityPolicy;
use scope::{Home, Scope};

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RefusalKind {
    /// Not an instance this function may touch, or not from this account and region.
    OutOfScope,
    /// Older than `MAX_EVENT_AGE`.
    Stale,
    /// A node-agent request whose identity proof is missing (where required), invalid or for someone else.
    IdentityNotProven,
    /// A restore whose records this function did not write, or that were changed since.
    RecordNotTrusted,
    /// A restore asked of the cleanup entry point, which any delivery path may reach.
    RestoreNotAuthorized,
}

impl RefusalKind {
    /// Lambda's `errorType`, stable for alarms.
    pub fn error_type(self) -> &'static str {
        match self {
            RefusalKind::OutOfScope => "OutOfScope",
            RefusalKind::Stale => "StaleEvent",
            RefusalKind::IdentityNotProven => "IdentityNotProven",
            RefusalKind::RecordNotTrusted => "RecordNotTrusted",
            RefusalKind::RestoreNotAuthorized => "RestoreNotAuthorized",
        }
    }

    /// Someone asked for something they should not: subscribers filter on `security=true`.
    pub fn is_security_signal(self) -> bool {
        !matches!(self, RefusalKind::Stale)
    }

    /// The SNS `outcome` attribute.
    pub fn outcome(self) -> &'static str {
        match self {
            RefusalKind::Stale => "stale",
            _ => "refused",
        }
    }
}

impl fmt::Display for RefusalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RefusalKind::OutOfScope => "out of scope",
            RefusalKind::Stale => "stale",
            RefusalKind::IdentityNotProven => "identity not proven",
            RefusalKind::RecordNotTrusted => "record not trusted",
            RefusalKind::RestoreNotAuthorized => "restore not authorized here",
        })
    }
}

/// A request that was refused, and why. Nothing was changed.
#[derive(Clone, Debug, PartialEq, Serialize, thiserror::Error)]
#[error("refused ({kind}) for {instance_id}: {}; nothing was changed", reasons.join("; "))]
pub struct Refusal {
    pub kind: RefusalKind,
    pub instance_id: InstanceId,
    pub reasons: Vec<String>,
    /// Boxed: it is most of the refusal's size, and errors travel by value.
    pub trigger: Box<Trigger>,
}

/// The trust settings, read once at init with the rest of the configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct TrustConfig {
    pub scope: Scope,
    /// `MAX_EVENT_AGE` (default 10 minutes).
    pub max_event_age: Duration,
    pub identity: IdentityPolicy,
}

impl Default for TrustConfig {
    fn default() -> Self {
        TrustConfig {
            scope: Scope::default(),
            max_event_age: DEFAULT_MAX_EVENT_AGE,
            identity: IdentityPolicy::default(),
        }
    }
}

impl Refusal {
    pub fn new(kind: RefusalKind, instance_id: &InstanceId, reasons: Vec<String>, trigger: &Trigger) -> Self {
        Refusal {
            kind,
            instance_id: instance_id.clone(),
            reasons,
            trigger: Box::new(trigger.clone()),
        }
    }
}

impl TrustConfig {
    /// The checks that need no AWS call, in order of cost: where the event says it comes from, its age, its proof.
    pub fn precheck(&self, home: &Home, request: &Request) -> Result<(), Refusal> {
        let refuse = |kind, reasons| Refusal::new(kind, &request.instance_id, reasons, &request.trigger);
        let origin = self.scope.check_origin(home, &request.trigger);
        if !origin.is_empty() {
            return Err(refuse(RefusalKind::OutOfScope, origin));
        }
        if let Some(reason) = self.identity.check(request, home) {
            return Err(refuse(RefusalKind::IdentityNotProven, vec![reason]));
        }
        if let Some(reason) = freshness::staleness(&request.trigger, self.max_event_age, Utc::now()) {
            return Err(refuse(RefusalKind::Stale, vec![reason]));
        }
        Ok(())
    }

    /// A restore's checks: where it comes from, and its age (a replayed `running` event must not undo the quarantine
    /// of a later interruption).
    pub fn precheck_restore(&self, home: &Home, instance_id: &InstanceId, trigger: &Trigger) -> Result<(), Refusal> {
        let origin = self.scope.check_origin(home, trigger);
        if !origin.is_empty() {
            return Err(Refusal::new(RefusalKind::OutOfScope, instance_id, origin, trigger));
        }
        if let Some(reason) = freshness::staleness(trigger, self.max_event_age, Utc::now()) {
            return Err(Refusal::new(RefusalKind::Stale, instance_id, vec![reason], trigger));
        }
        Ok(())
    }

    /// The instance as EC2 describes it: a Spot trigger needs a Spot instance, and `REQUIRED_TAGS` must be on it.
    pub fn check_instance(&self, request: &Request, instance: &crate::instance::Instance) -> Result<(), Refusal> {
        let reasons = self.scope.check_instance(request, instance);
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(Refusal::new(
                RefusalKind::OutOfScope,
                &request.instance_id,
                reasons,
                &request.trigger,
            ))
        }
    }
}

/// A restore that reached the cleanup entry point: what becomes of it.
#[derive(Debug, PartialEq)]
pub enum MisdirectedRestore {
    /// A `running` event, which a rule routes to the restore entry point: nothing to do here, for this reason.
    Dropped(&'static str),
    /// An operator's request: refused as a security signal.
    Refused(Refusal),
}

/// Every delivery path may reach the cleanup entry point, so none of them may undo a quarantine there: an operator's
/// request is refused, and a `running` event is ignored. Nothing is changed either way.
pub fn restore_at_cleanup_entry_point(request: &RestoreRequest) -> MisdirectedRestore {
    if request.trigger.source == Source::EventBridge {
        return MisdirectedRestore::Dropped(
            "a running instance is the restore entry point's to restore (ENTRY_POINT=restore), not this function's",
        );
    }
    let reason = "this is the cleanup entry point, which every delivery path may invoke; a restore is accepted only \
                  by the restore entry point (ENTRY_POINT=restore), invoked by the operator role";
    MisdirectedRestore::Refused(Refusal::new(
        RefusalKind::RestoreNotAuthorized,
        &request.instance_id,
        vec![reason.into()],
        &request.trigger,
    ))
}

/// What the agent entry point refuses: anything but a node agent's own request. Node agents are its only callers
/// (the node role may invoke nothing else), so an EventBridge event, SQS or SNS records, or a restore sent there were
/// sent by something on a node pretending to be AWS. One refusal per instance the payload names, each a security
/// signal (`IdentityNotProven`: no such payload can prove it comes from the instance it names). Empty when it names
/// none; the handler rejects that as invalid input.
pub fn at_agent_entry_point(invocation: &Invocation) -> Vec<Refusal> {
    let refuse = |instance_id: &InstanceId, trigger: &Trigger| {
        let reason = format!(
            "{} was sent to the agent entry point (ENTRY_POINT=agent), which serves only a node agent's request for \
             its own instance, proven by its identity document; events, queues and topics are the cleanup entry \
             point's",
            sender(trigger)
        );
        Refusal::new(RefusalKind::IdentityNotProven, instance_id, vec![reason], trigger)
    };
    let each = |requests: &[Request]| -> Vec<Refusal> {
        requests.iter().map(|r| refuse(&r.instance_id, &r.trigger)).collect()
    };
    match invocation {
        Invocation::Direct(request) => each(std::slice::from_ref(request)),
        Invocation::Several(requests) => each(requests),
        Invocation::Batch(records) | Invocation::Notifications(records) => records
            .iter()
            .filter_map(|record| match &record.message {
                Ok(Message::Requests(requests)) => Some(each(requests)),
                _ => None,
            })
            .flatten()
            .collect(),
        Invocation::Restore(restore) => vec![refuse(&restore.instance_id, &restore.trigger)],
        Invocation::Skipped { .. }
        | Invocation::Ignored { .. }
        | Invocation::RefreshIndex { .. }
        | Invocation::IndexUpdate(_) => Vec::new(),
    }
}

/// What a misdirected request claimed to be, in words.
fn sender(trigger: &Trigger) -> String {
    let inside = if trigger.sqs_message_id.is_some() {
        " inside an SQS record"
    } else if trigger.sns_message_id.is_some() || trigger.sns_topic_arn.is_some() {
        " inside an SNS message"
    } else {
        ""
    };
    let what = match trigger.source {
        Source::EventBridge => format!(
            "an EventBridge event ({:.64})",
            trigger.detail_type.as_deref().unwrap_or("?")
        ),
        Source::AutoScaling => "an Auto Scaling lifecycle message".to_owned(),
        Source::NodeAgent => "a node-agent payload".to_owned(),
        Source::Operator => "a restore request".to_owned(),
    };
    format!("{what}{inside}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::{Invocation, parse_invocation};

    #[test]
    fn the_agent_entry_point_refuses_every_instance_a_foreign_shape_names() {
        let id = "i-0123456789abcdef0";
        let spot = serde_json::json!({
            "source": "aws.ec2", "detail-type": "EC2 Spot Instance Interruption Warning", "time": Utc::now(),
            "detail": {"instance-id": id, "instance-action": "terminate"}
        });
        let sqs = serde_json::json!({"Records": [
            {"messageId": "m1", "body": spot.to_string()},
            {"messageId": "m2", "body": serde_json::json!({"instance_id": "i-0fedcba9876543210"}).to_string()},
            {"messageId": "m3", "body": "not json"},
        ]});
        let restore = serde_json::json!({"action": "restore", "instance_id": id});
        for (payload, expected, words) in [
            (
                spot.clone(),
                1,
                "an EventBridge event (EC2 Spot Instance Interruption Warning)",
            ),
            (sqs, 2, "inside an SQS record"),
            (restore, 1, "a restore request"),
        ] {
            let refused = at_agent_entry_point(&parse_invocation(&payload).unwrap());
            assert_eq!(refused.len(), expected, "{payload}");
            for refusal in &refused {
                assert_eq!(refusal.kind, RefusalKind::IdentityNotProven);
                assert!(refusal.kind.is_security_signal());
                assert!(
                    refusal.reasons[0].contains("agent entry point"),
                    "{:?}",
                    refusal.reasons
                );
                assert!(!refusal.reasons[0].contains("  "), "{:?}", refusal.reasons);
            }
            assert!(
                refused.iter().any(|r| r.reasons[0].contains(words)),
                "{words}: {refused:?}"
            );
        }
        let refresh = serde_json::json!({"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}});
        assert!(at_agent_entry_point(&parse_invocation(&refresh).unwrap()).is_empty());
    }

    #[test]
    fn a_restore_at_the_cleanup_entry_point_is_refused_with_a_reason_in_one_line() {
        let payload = serde_json::json!({"action": "restore", "instance_id": "i-0123456789abcdef0"});
        let Invocation::Restore(request) = parse_invocation(&payload).unwrap() else {
            panic!("a restore request")
        };
        let MisdirectedRestore::Refused(refusal) = restore_at_cleanup_entry_point(&request) else {
            panic!("an operator's restore is refused")
        };
        assert_eq!(refusal.kind, RefusalKind::RestoreNotAuthorized);
        for reason in &refusal.reasons {
            assert!(
                !reason.contains("  "),
                "a run of spaces in the published reason: {reason:?}"
            );
            assert!(reason.contains("accepted only by the restore entry point"), "{reason}");
        }
    }
}
