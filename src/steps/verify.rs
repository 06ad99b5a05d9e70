//! Check that the targets really left: describe each touched group again. A target gone, `unused` or `draining`
//! counts as removed: the load balancer sends a draining target no new requests, and in-flight ones finish within the
//! group's deregistration delay, which is read here too so the summary can warn when it outlasts the notice.

use std::collections::HashMap;

use super::deregister::by_target_group;
use crate::aws::{CallError, Pace, bounded_all};
use crate::registration::TargetRegistration;

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
    pub verdicts: Vec<(TargetRegistration, Verdict)>,
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
        .map(|((_, targets), check)| {
            check.unwrap_or_else(|e| GroupCheck {
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
        Err(e) => {
            let error = CallError::new("DescribeTargetHealth", &e);
            // The group itself is gone, and every registration with it.
            let verdict = if error.is("TargetGroupNotFound") {
                Verdict::Deregistered
            } else {
                Verdict::Unknown { error: error.reason() }
            };
            return GroupCheck {
                verdicts: targets.into_iter().map(|t| (t, verdict.clone())).collect(),
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
    GroupCheck { verdicts }
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

/// What AWS really answers, scripted: the behaviour moto gets wrong (see `crate::testing`).
#[cfg(test)]
mod semantics {
    use super::*;
    use crate::steps::deregister;
    use crate::steps::verify;
    use crate::testing::*;
    use aws_smithy_mocks::mock;

    /// DeregisterTargets answers success even for a target that is not registered (moto answers an error). So the verify
    /// pass describes each group again and reports what it sees, target by target and port by port: gone, draining, or
    /// still `healthy` in spite of the "successful" call. It also reads each group's deregistration delay.
    #[tokio::test]
    async fn a_successful_deregistration_is_checked_by_describing_the_group_again() {
        use aws_sdk_elasticloadbalancingv2::types::TargetHealthStateEnum::{Draining, Healthy};

        let registrations = vec![
            instance_target("nodeports", 30080, "healthy"),
            instance_target("nodeports", 30443, "healthy"),
            instance_target("api", 8080, "healthy"),
            ip_target("pods", SECONDARY_IP, 8080, None, "healthy"),
            instance_target("deleted", 80, "healthy"),
        ];
        let sent = Sent::new();
        let deregister = deregister_anything(&sent);
        // Only the 30080 registration went; 30443 is still listed, healthy. Matching on the id alone would call both
        // ports gone or both remaining: only (id, port) gets each right.
        let nodeports = health_of(
            "nodeports",
            vec![target(INSTANCE, 30443, Healthy), target(NEIGHBOUR, 30080, Healthy)],
        );
        let api = health_of("api", vec![target(INSTANCE, 8080, Draining)]);
        // The pod IP had already gone before this run; DeregisterTargets said yes all the same.
        let pods = health_of("pods", vec![target("10.0.1.12", 8080, Healthy)]);
        // Deleted since the sweep: nothing can be registered in it.
        let deleted = mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_health)
            .match_requests(|r| r.target_group_arn() == Some(arn("deleted").as_str()))
            .sequence()
            .http_status(
                400,
                Some(elb_error(
                    "TargetGroupNotFound",
                    "Target groups 'arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/deleted/50dc6c495c0c9188' not found",
                )),
            )
            .repeatedly()
            .build();
        let delays = [
            delay_of("nodeports", 30),
            delay_of("api", 300),
            delay_of("pods", 0),
            delay_of("deleted", 300),
        ];
        let mut rules = vec![&deregister, &nodeports, &api, &pods, &deleted];
        rules.extend(delays.iter());
        let elb = elb_client(&rules);

        let results = deregister::deregister_all(&elb, &registrations, 10).await;
        assert!(results.values().all(Result::is_ok), "{results:?}");
        assert_eq!(sent.all().len(), 4);

        let checks = verify::verify_removed(&elb, &Pace::unlimited(), &registrations, 10).await;

        let verdicts: Vec<(String, Option<i32>, Verdict)> = checks
            .iter()
            .flat_map(|c| &c.verdicts)
            .map(|(r, v)| (r.target_group_name.clone(), r.port, v.clone()))
            .collect();
        assert_eq!(
            verdicts,
            vec![
                ("api".into(), Some(8080), Verdict::Draining),
                ("deleted".into(), Some(80), Verdict::Deregistered),
                ("nodeports".into(), Some(30080), Verdict::Deregistered),
                (
                    "nodeports".into(),
                    Some(30443),
                    Verdict::Remains {
                        state: "healthy".into(),
                        reason: None
                    }
                ),
                ("pods".into(), Some(8080), Verdict::Deregistered),
            ]
        );
        let delay = verify::deregistration_delays(
            &elb,
            &Pace::unlimited(),
            ["api", "nodeports", "pods", "deleted"].map(arn),
            10,
        )
        .await;
        assert_eq!(delay.get(&arn("api")), Some(&300));
        assert_eq!(delay.get(&arn("nodeports")), Some(&30));
        assert_eq!(delay.get(&arn("pods")), Some(&0));
        // One Describe per group, however many of its targets are being checked; a missing group is not retried.
        for rule in [&nodeports, &api, &pods, &deleted] {
            assert_eq!(rule.num_calls(), 1);
        }
        assert!(delays.iter().all(|d| d.num_calls() == 1));
    }
}
