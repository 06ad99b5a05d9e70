//! Check that the targets really left: describe each touched group again. A target gone, `unused` or `draining`
//! counts as removed: the load balancer sends a draining target no new requests, and in-flight ones finish within the
//! group's deregistration delay, which is read here too so the summary can warn when it outlasts the notice.

use std::collections::HashMap;

use super::deregister::by_target_group;
use crate::aws::{CallError, Pace, bounded_all};
use crate::deadline::{Deadline, Rounds};
use crate::registration::{TargetRegistration, TargetState};

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

/// Describe each touched group again and say, for every registration, whether it is gone. A group still throttled
/// after the SDK's retries is described again in another round while the deadline allows: a wave of cleanups checks
/// at the same moment, and a check given up would report a removed target as remaining.
pub async fn verify_removed(
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    pace: &Pace,
    registrations: &[TargetRegistration],
    concurrency: usize,
    deadline: Deadline,
) -> Vec<GroupCheck> {
    let groups: Vec<(String, Vec<TargetRegistration>)> = by_target_group(registrations).into_iter().collect();
    // Already in ARN order, since `by_target_group` is a BTreeMap; each answer keeps its group's place.
    let mut answers: Vec<Option<GroupCheck>> = vec![None; groups.len()];
    let mut pending: Vec<usize> = (0..groups.len()).collect();
    let mut rounds = Rounds::new(deadline);
    loop {
        let again = rounds.start();
        let checks = bounded_all(concurrency, pending.clone(), |index| {
            let (arn, targets) = groups[index].clone();
            check_group(elb.clone(), pace.clone(), arn, targets)
        })
        .await;
        let mut throttled = Vec::new();
        for (index, check) in pending.into_iter().zip(checks) {
            let check = match check {
                Ok((_, true)) if again => {
                    throttled.push(index);
                    continue;
                }
                Ok((check, _)) => check,
                // The call's task died: reported like any failed call.
                Err(e) => unknown(groups[index].1.clone(), e.to_string()),
            };
            answers[index] = Some(check);
        }
        if throttled.is_empty() {
            break;
        }
        rounds.pause("verify", throttled.len()).await;
        pending = throttled;
    }
    answers.into_iter().flatten().collect()
}

fn unknown(targets: Vec<TargetRegistration>, error: String) -> GroupCheck {
    GroupCheck {
        verdicts: targets
            .into_iter()
            .map(|t| (t, Verdict::Unknown { error: error.clone() }))
            .collect(),
    }
}

/// Check one group; true when it was throttled (and may be checked again).
async fn check_group(
    elb: aws_sdk_elasticloadbalancingv2::Client,
    pace: Pace,
    arn: String,
    targets: Vec<TargetRegistration>,
) -> (GroupCheck, bool) {
    pace.acquire().await;
    let health = elb.describe_target_health().target_group_arn(&arn).send().await;
    let health = match health {
        Ok(health) => health,
        Err(e) => {
            let error = CallError::new("DescribeTargetHealth", &e);
            // The group itself is gone, and every registration with it.
            if error.is("TargetGroupNotFound") {
                let verdicts = targets.into_iter().map(|t| (t, Verdict::Deregistered)).collect();
                return (GroupCheck { verdicts }, false);
            }
            return (unknown(targets, error.reason()), error.is_throttling());
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
                    Some(state) if TargetState::Draining.is(Some(state)) => Verdict::Draining,
                    Some(state) if TargetState::Unused.is(Some(state)) => Verdict::Deregistered,
                    None => Verdict::Deregistered,
                    Some(state) => Verdict::Remains {
                        state: state.to_owned(),
                        reason: h.reason().map(|r| r.as_str().to_owned()),
                    },
                },
            };
            (t, verdict)
        })
        .collect();
    (GroupCheck { verdicts }, false)
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

        let checks = verify::verify_removed(&elb, &Pace::unlimited(), &registrations, 10, Deadline::none()).await;

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

    /// A wave of cleanups checks at the same moment, and the account's Describe* budget answers `Throttling`. A group
    /// still throttled after the SDK's attempts is checked again after a pause while the deadline allows: the removed
    /// target is reported removed, not remaining. A throttle that outlasts the deadline leaves the verdict unknown.
    #[tokio::test]
    async fn a_check_throttled_past_the_sdks_attempts_is_made_again_within_the_deadline() {
        use aws_sdk_elasticloadbalancingv2::types::TargetHealthStateEnum::Healthy;

        let registrations = vec![instance_target("web", 80, "healthy")];
        let web = mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_health)
            .match_requests(|r| r.target_group_arn() == Some(arn("web").as_str()))
            .sequence()
            .http_status(400, Some(throttled()))
            .times(MAX_ATTEMPTS as usize + 1)
            .output(|| health(&[target(NEIGHBOUR, 80, Healthy)]))
            .build();
        let elb = elb_client(&[&web]);
        let deadline = Deadline::after(std::time::Duration::from_secs(30));

        let checks = verify::verify_removed(&elb, &Pace::unlimited(), &registrations, 10, deadline).await;

        assert_eq!(checks[0].verdicts[0].1, Verdict::Deregistered);
        assert_eq!(
            web.num_calls(),
            MAX_ATTEMPTS as usize + 2,
            "a second round after the SDK's attempts"
        );

        let busy = mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_health)
            .sequence()
            .http_status(400, Some(throttled()))
            .repeatedly()
            .build();
        let elb = elb_client(&[&busy]);
        let started = std::time::Instant::now();
        let deadline = Deadline::after(std::time::Duration::from_secs(2));

        let checks = verify::verify_removed(&elb, &Pace::unlimited(), &registrations, 10, deadline).await;

        assert!(
            started.elapsed() < std::time::Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(
            checks[0].verdicts[0].1,
            Verdict::Unknown {
                error: "Throttling: Rate exceeded".into()
            }
        );
        assert!(
            busy.num_calls() >= 2 * MAX_ATTEMPTS as usize,
            "{} calls",
            busy.num_calls()
        );
    }
}
