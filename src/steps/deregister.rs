//! Leave a target group: one DeregisterTargets carrying every target with its exact port and zone.
//!
//! DeregisterTargets answers success for a target that is not registered, so success proves nothing: a later read of
//! the group is the check (`verify`).

use aws_sdk_elasticloadbalancingv2::types::TargetDescription;

use crate::aws::CallError;
use crate::registration::TargetRegistration;

/// The most targets one call carries: the AWS Load Balancer Controller's chunk size for the same call. The API
/// documents no limit; a wave of a few hundred nodes in one group takes several calls.
pub const MAX_TARGETS_PER_CALL: usize = 200;

/// One DeregisterTargets to `arn` with every registration given (all of that group).
pub async fn deregister_group(
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    arn: &str,
    registrations: &[TargetRegistration],
) -> Result<(), CallError> {
    elb.deregister_targets()
        .target_group_arn(arn)
        .set_targets(Some(registrations.iter().map(description).collect()))
        .send()
        .await
        .map(|_| ())
        .map_err(|e| CallError::new("DeregisterTargets", &e))
}

pub fn description(registration: &TargetRegistration) -> TargetDescription {
    TargetDescription::builder()
        .id(&registration.target_id)
        .set_port(registration.port)
        .set_availability_zone(registration.availability_zone.clone())
        .build()
}
