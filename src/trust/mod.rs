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

use crate::input::{InstanceId, Request, RestoreRequest, Source, Trigger};
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::{Invocation, parse_invocation};

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
