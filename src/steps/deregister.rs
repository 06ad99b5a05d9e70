//! Leave every target group, then check that the targets really left.
//!
//! DeregisterTargets answers success for a target that is not registered, so success proves nothing: the verify pass
//! describes each touched group again. A target in `draining` counts as removed: the load balancer sends it no new
//! requests, and in-flight ones finish within the group's deregistration delay.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_elasticloadbalancingv2::types::TargetDescription;

use crate::aws_error;
use crate::bounded::bounded_all;
use crate::locate::TargetRegistration;
use crate::pace::Pace;

/// What the verify pass saw for one registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Gone from the group, or `unused`.
    Deregistered,
    /// Still in the group but receiving no new requests.
    Draining,
    /// Still in the group in this state, with ELB's reason code if it gave one.
    Remains { state: String, reason: Option<String> },
    /// The group could not be described again.
    Unknown { error: String },
}

/// One target group's registrations, checked after deregistration.
#[derive(Clone, Debug)]
pub struct GroupCheck {
    pub target_group_arn: String,
    pub verdicts: Vec<(TargetRegistration, Verdict)>,
}

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
) -> BTreeMap<String, Result<(), String>> {
    let groups: Vec<(String, Vec<TargetRegistration>)> = by_target_group(registrations).into_iter().collect();
    let arns: Vec<String> = groups.iter().map(|(arn, _)| arn.clone()).collect();
    let calls = bounded_all(concurrency, groups, |(arn, targets)| {
        let request = elb
            .deregister_targets()
            .target_group_arn(&arn)
            .set_targets(Some(targets.iter().map(description).collect()))
            .send();
        async move { request.await.map(|_| ()).map_err(|e| aws_error::explain(&e)) }
    })
    .await;
    arns.into_iter()
        .zip(calls)
        .map(|(arn, call)| (arn, call.unwrap_or_else(|e| Err(e.to_string()))))
        .collect()
}

/// Describe each touched group again and say, for every registration, whether it is gone.
pub async fn verify_removed(
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    pace: &Pace,
    registrations: &[TargetRegistration],
    concurrency: usize,
) -> Vec<GroupCheck> {
    let groups: Vec<(String, Vec<TargetRegistration>)> = by_target_group(registrations).into_iter().collect();
    let checks = bounded_all(concurrency, groups.clone(), |(arn, targets)| {
        check_group(elb.clone(), pace.clone(), arn, targets)
    })
    .await;
    // Already in ARN order, since `by_target_group` is a BTreeMap and results keep the order of their items.
    groups
        .into_iter()
        .zip(checks)
        .map(|((arn, targets), check)| {
            check.unwrap_or_else(|e| GroupCheck {
                target_group_arn: arn,
                verdicts: targets
                    .into_iter()
                    .map(|t| (t, Verdict::Unknown { error: e.to_string() }))
                    .collect(),
            })
        })
        .collect()
}

async fn check_group(
    elb: aws_sdk_elasticloadbalancingv2::Client,
    pace: Pace,
    arn: String,
    targets: Vec<TargetRegistration>,
) -> GroupCheck {
    pace.acquire().await;
    let health = elb.describe_target_health().target_group_arn(&arn).send().await;
    let health = match health {
        Ok(health) => health,
        // The group itself is gone, and every registration with it.
        Err(e) if aws_error::code(&e) == Some("TargetGroupNotFound") => {
            return GroupCheck {
                target_group_arn: arn,
                verdicts: targets.into_iter().map(|t| (t, Verdict::Deregistered)).collect(),
            };
        }
        Err(e) => {
            let error = aws_error::explain(&e);
            let unknown = |t| (t, Verdict::Unknown { error: error.clone() });
            return GroupCheck {
                target_group_arn: arn,
                verdicts: targets.into_iter().map(unknown).collect(),
            };
        }
    };
    let verdicts = targets
        .into_iter()
        .map(|t| {
            let seen = health.target_health_descriptions().iter().find(|d| {
                d.target()
                    .is_some_and(|target| target.id() == Some(t.target_id.as_str()) && target.port() == t.port)
            });
            let verdict = match seen.and_then(|d| d.target_health()) {
                None => Verdict::Deregistered,
                Some(h) => match h.state().map(|s| s.as_str()) {
                    Some("draining") => Verdict::Draining,
                    Some("unused") | None => Verdict::Deregistered,
                    Some(state) => Verdict::Remains {
                        state: state.to_owned(),
                        reason: h.reason().map(|r| r.as_str().to_owned()),
                    },
                },
            };
            (t, verdict)
        })
        .collect();
    GroupCheck {
        target_group_arn: arn,
        verdicts,
    }
}

/// Each group's `deregistration_delay.timeout_seconds`, for the groups whose attributes could be read, so the summary
/// can warn when draining cannot finish before termination.
pub async fn deregistration_delays(
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    pace: &Pace,
    arns: impl IntoIterator<Item = String>,
    concurrency: usize,
) -> HashMap<String, u32> {
    let reads = bounded_all(concurrency, arns, |arn| {
        let request = elb.describe_target_group_attributes().target_group_arn(&arn).send();
        let pace = pace.clone();
        async move {
            pace.acquire().await;
            let delay = request.await.ok().and_then(|a| {
                a.attributes()
                    .iter()
                    .find(|attr| attr.key() == Some("deregistration_delay.timeout_seconds"))
                    .and_then(|attr| attr.value()?.parse().ok())
            });
            (arn, delay)
        }
    })
    .await;
    reads
        .into_iter()
        .filter_map(|read| match read {
            Ok((arn, Some(delay))) => Some((arn, delay)),
            _ => None,
        })
        .collect()
}

fn description(registration: &TargetRegistration) -> TargetDescription {
    TargetDescription::builder()
        .id(&registration.target_id)
        .set_port(registration.port)
        .set_availability_zone(registration.availability_zone.clone())
        .build()
}
