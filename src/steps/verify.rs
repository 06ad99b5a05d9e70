//! Did the targets really leave? DeregisterTargets answers success even for a target that is not registered, so only a
//! later read of the group tells. A target gone, `unused` or `draining` counts as removed: the load balancer sends a
//! draining target no new requests, and in-flight ones finish within the group's deregistration delay, which is read
//! here too so the summary can warn when it outlasts the notice.

use aws_sdk_elasticloadbalancingv2::types::TargetHealthStateEnum;

use crate::aws::CallError;
use crate::locate::sweep::read::GroupTarget;
use crate::registration::TargetState;

/// What a read after the call said of one registration.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", tag = "verdict")]
pub enum Verdict {
    /// Gone from the group, or `unused`.
    Deregistered,
    /// Still in the group but receiving no new requests.
    Draining,
    /// Still in the group in this state, with ELB's reason code if it gave one.
    Remains { state: TargetState, reason: Option<String> },
    /// The group could not be read again.
    Unknown { error: String },
}

/// The verdict on a registration, from what a read after its call saw of it (None: not in the group).
pub fn verdict(seen: Option<&GroupTarget>) -> Verdict {
    let Some((seen, Some(state))) = seen.map(|seen| (seen, &seen.state)) else {
        return Verdict::Deregistered;
    };
    leaving(state).unwrap_or_else(|| Verdict::Remains {
        state: state.clone(),
        reason: seen.reason.clone(),
    })
}

/// The verdict a state already gives: a target draining, unused or gone is leaving, and needs no call; None for the
/// others (`healthy`, `initial`, ...).
pub fn leaving(state: &TargetState) -> Option<Verdict> {
    match state {
        TargetState::Health(TargetHealthStateEnum::Draining) => Some(Verdict::Draining),
        TargetState::Health(TargetHealthStateEnum::Unused) | TargetState::Deregistered => Some(Verdict::Deregistered),
        TargetState::Health(_) => None,
    }
}

/// The group's `deregistration_delay.timeout_seconds`; None when its attributes could not be read.
pub async fn deregistration_delay(elb: &aws_sdk_elasticloadbalancingv2::Client, arn: &str) -> Option<u32> {
    let attributes = elb
        .describe_target_group_attributes()
        .target_group_arn(arn)
        .send()
        .await
        .map_err(|e| CallError::new("DescribeTargetGroupAttributes", &e))
        .ok()?;
    attributes
        .attributes()
        .iter()
        .find(|attribute| attribute.key() == Some("deregistration_delay.timeout_seconds"))
        .and_then(|attribute| attribute.value()?.parse().ok())
}
