//! Leave every target group: one DeregisterTargets per group, carrying every target with its exact port and zone.
//!
//! DeregisterTargets answers success for a target that is not registered, so success proves nothing: `verify` looks
//! again.

use std::collections::BTreeMap;

use aws_sdk_elasticloadbalancingv2::types::TargetDescription;

use crate::aws::{CallError, bounded_all};
use crate::registration::TargetRegistration;

/// Registrations grouped by target group, in ARN order.
pub fn by_target_group(registrations: &[TargetRegistration]) -> BTreeMap<String, Vec<TargetRegistration>> {
    let mut groups: BTreeMap<String, Vec<TargetRegistration>> = BTreeMap::new();
    for registration in registrations {
        groups
            .entry(registration.target_group_arn.clone())
            .or_default()
            .push(registration.clone());
    }
    groups
}

/// One DeregisterTargets call per target group, with every matching target and its exact port and zone.
/// Returns, per target group ARN, the error if the call failed.
pub async fn deregister_all(
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    registrations: &[TargetRegistration],
    concurrency: usize,
) -> BTreeMap<String, Result<(), CallError>> {
    let groups: Vec<(String, Vec<TargetRegistration>)> = by_target_group(registrations).into_iter().collect();
    let arns: Vec<String> = groups.iter().map(|(arn, _)| arn.clone()).collect();
    let calls = bounded_all(concurrency, groups, |(arn, targets)| {
        let request = elb
            .deregister_targets()
            .target_group_arn(&arn)
            .set_targets(Some(targets.iter().map(description).collect()))
            .send();
        async move {
            request
                .await
                .map(|_| ())
                .map_err(|e| CallError::new("DeregisterTargets", &e))
        }
    })
    .await;
    arns.into_iter()
        .zip(calls)
        .map(|(arn, call)| {
            (
                arn,
                call.unwrap_or_else(|e| Err(CallError::local("DeregisterTargets", e))),
            )
        })
        .collect()
}

pub fn description(registration: &TargetRegistration) -> TargetDescription {
    TargetDescription::builder()
        .id(&registration.target_id)
        .set_port(registration.port)
        .set_availability_zone(registration.availability_zone.clone())
        .build()
}

/// What AWS really answers, scripted: the behaviour moto gets wrong (see `crate::testing`).
#[cfg(test)]
mod semantics {
    use super::*;
    use crate::steps::deregister;
    use crate::testing::*;

    /// An IP target from outside its group's VPC (a peered VPC, on premises) is registered with AvailabilityZone `all`,
    /// and ELB requires the zone for such a target on deregistration too. The registration's zone is sent exactly as found.
    #[tokio::test]
    async fn a_target_registered_with_zone_all_is_deregistered_with_zone_all() {
        let sent = Sent::new();
        let deregister = deregister_anything(&sent);
        let elb = elb_client(&[&deregister]);
        let registrations = [
            ip_target("peered-pods", SECONDARY_IP, 8080, Some("all"), "healthy"),
            ip_target("peered-pods", SECONDARY_IP, 9090, Some("all"), "healthy"),
        ];

        let results = deregister::deregister_all(&elb, &registrations, 10).await;

        assert_eq!(results, BTreeMap::from([(arn("peered-pods"), Ok(()))]));
        let requests = sent.all();
        assert_eq!(requests.len(), 1);
        assert_eq!(
            requests[0].targets(),
            [
                deregistration(SECONDARY_IP, 8080, Some("all")),
                deregistration(SECONDARY_IP, 9090, Some("all"))
            ]
        );
    }
    /// Groups A and C leave; B refuses. Each group is its own call with its own result, so B's failure costs nothing
    /// elsewhere and is reported with ELB's code.
    #[tokio::test]
    async fn one_refusing_target_group_does_not_stop_the_others() {
        let refused = deregister_refused_for_b();
        let sent = Sent::new();
        let others = deregister_anything(&sent);
        let elb = elb_client(&[&refused, &others]);
        let registrations = [
            instance_target("web-a", 80, "healthy"),
            instance_target("web-b", 80, "healthy"),
            instance_target("web-c", 80, "healthy"),
        ];

        let results = deregister::deregister_all(&elb, &registrations, 10).await;

        let results: BTreeMap<String, Result<(), String>> = results
            .into_iter()
            .map(|(arn, r)| (arn, r.map_err(|e| e.to_string())))
            .collect();
        assert_eq!(
            results,
            BTreeMap::from([
                (arn("web-a"), Ok(())),
                (
                    arn("web-b"),
                    Err(format!("DeregisterTargets failed: AccessDenied: {ACCESS_DENIED}"))
                ),
                (arn("web-c"), Ok(())),
            ])
        );
        let mut answered: Vec<String> = sent
            .all()
            .iter()
            .map(|r| r.target_group_arn().unwrap().to_owned())
            .collect();
        answered.sort();
        assert_eq!(answered, [arn("web-a"), arn("web-c")]);
        assert_eq!(refused.num_calls(), 1, "AccessDenied is not retried");
    }
}
