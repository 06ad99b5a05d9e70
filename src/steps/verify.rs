//! Did the targets really leave? DeregisterTargets answers success even for a target that is not registered, so only a
//! later read of the group tells. A target gone, `unused` or `draining` counts as removed: the load balancer sends a
//! draining target no new requests, and in-flight ones finish within the group's deregistration delay, which is read
//! here too so the summary can warn when it outlasts the notice.

use crate::aws::CallError;
use crate::locate::sweep::read::Seen;
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
    Remains { state: String, reason: Option<String> },
    /// The group could not be read again.
    Unknown { error: String },
}

/// The verdict on a registration, from what a read after its call saw of it (None: not in the group).
pub fn verdict(seen: Option<&Seen>) -> Verdict {
    let Some(seen) = seen else {
        return Verdict::Deregistered;
    };
    match seen.state.as_deref() {
        None => Verdict::Deregistered,
        Some(state) if TargetState::Draining.is(Some(state)) => Verdict::Draining,
        Some(state) if TargetState::Unused.is(Some(state)) => Verdict::Deregistered,
        Some(state) => Verdict::Remains {
            state: state.to_owned(),
            reason: seen.reason.clone(),
        },
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
