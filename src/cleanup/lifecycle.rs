//! Finish the Auto Scaling lifecycle action of each cleanup that has one, once the cleanup is complete, and say in its
//! summary what came of it. The calls are `steps::lifecycle`'s.

use std::time::Instant;

use crate::changes::LifecycleReport;
use crate::deadline::Deadline;
use crate::registration::TargetState;
use crate::steps::lifecycle::{CONTINUE, DrainWait, complete, wait_for_drain};
use crate::summary::{Step, StepError, Summary, TargetChange};
use aws_sdk_autoscaling::Client as AutoScalingClient;
use aws_sdk_elasticloadbalancingv2::Client as ElbClient;

/// Finish the lifecycle action of every summary that has one. A summary that is not complete leaves its action alone
/// and says so. A dry run never comes here.
pub async fn complete_all(
    autoscaling: &AutoScalingClient,
    elb: &ElbClient,
    wait: Option<DrainWait>,
    summaries: &mut [Summary],
    deadline: Deadline,
) {
    for summary in summaries.iter_mut() {
        let Some(action) = summary.trigger.lifecycle.clone() else {
            continue;
        };
        let mut report = LifecycleReport {
            hook_name: action.hook_name.clone(),
            group_name: action.group_name.clone(),
            ..LifecycleReport::default()
        };
        if !summary.is_complete() {
            summary.warnings.push(
                "the cleanup is incomplete, so the lifecycle action was not completed: a retry will finish both".into(),
            );
        } else {
            let instance = summary.instance.id.as_str().to_owned();
            if let Some(wait) = wait {
                let draining: Vec<&TargetChange> = summary
                    .removed
                    .iter()
                    .filter(|t| t.state == Some(TargetState::DRAINING))
                    .collect();
                let started = Instant::now();
                let (heartbeats, left, errors) =
                    wait_for_drain(autoscaling, elb, &action, &instance, &draining, wait, deadline).await;
                report.heartbeats = heartbeats;
                report.still_draining = left;
                report.waited_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                summary.warnings.extend(errors);
                if left > 0 {
                    summary.warnings.push(format!(
                        "{left} target(s) were still draining at the deadline; the lifecycle action was completed anyway"
                    ));
                }
            }
            match complete(autoscaling, &action, &instance).await {
                Ok(()) => report.result = Some(CONTINUE.to_owned()),
                Err(error) => summary.errors.push(StepError {
                    step: Step::Lifecycle,
                    message: error.to_string(),
                }),
            }
        }
        summary.lifecycle = Some(report);
        summary.settle_outcome();
    }
}

/// Finishing an Auto Scaling lifecycle action, against the requests the SDK really builds (`aws-smithy-mocks`).
///
/// moto 5.2.5 does not implement RecordLifecycleActionHeartbeat or CompleteLifecycleAction, and removes a
/// deregistered target at once instead of draining it, so waiting for draining with heartbeats can only be shown
/// here: each test scripts what ELB and Auto Scaling answer and asserts on what was sent, in order.
#[cfg(test)]
mod semantics {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::complete_all;
    use crate::deadline::Deadline;
    use crate::input::{Invocation, parse_invocation};
    use crate::steps::lifecycle::DrainWait;
    use crate::summary::{Step, Summary};
    use aws_config::retry::RetryConfig;
    use aws_sdk_autoscaling::operation::complete_lifecycle_action::{
        CompleteLifecycleActionInput, CompleteLifecycleActionOutput,
    };
    use aws_sdk_autoscaling::operation::record_lifecycle_action_heartbeat::{
        RecordLifecycleActionHeartbeatInput, RecordLifecycleActionHeartbeatOutput,
    };
    use aws_sdk_elasticloadbalancingv2::operation::describe_target_health::{
        DescribeTargetHealthInput, DescribeTargetHealthOutput,
    };
    use aws_sdk_elasticloadbalancingv2::types::{
        TargetDescription, TargetHealth, TargetHealthDescription, TargetHealthStateEnum,
    };
    use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
    use serde_json::json;

    const INSTANCE: &str = "i-0123456789abcdef0";
    const GROUP: &str = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web/50dc6c495c0c9188";

    /// Every call the two clients answered, in order: `Heartbeat`, `Health`, `Complete`.
    #[derive(Clone, Default)]
    struct Calls(Arc<Mutex<Vec<String>>>);

    impl Calls {
        fn push(&self, call: &str) {
            self.0.lock().unwrap().push(call.to_owned());
        }
        fn all(&self) -> Vec<String> {
            self.0.lock().unwrap().clone()
        }
    }

    fn quick() -> RetryConfig {
        RetryConfig::standard()
            .with_max_attempts(2)
            .with_initial_backoff(Duration::from_millis(1))
    }

    /// A cleaned summary of the lifecycle sample whose target on port 30080 was left draining.
    fn drained_summary() -> Summary {
        let event: serde_json::Value = serde_json::from_str(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/events/asg-terminate-lifecycle.json"
        )))
        .unwrap();
        let Invocation::Direct(request) = parse_invocation(&event).unwrap() else {
            panic!("one request")
        };
        serde_json::from_value(json!({
            "version": 1,
            "instance": {"id": INSTANCE, "vpc_id": null, "state": "running", "lifecycle": null, "addresses": []},
            "trigger": request.trigger,
            "dry_run": false,
            "outcome": "cleaned",
            "started_at": "2026-11-21T10:00:00Z",
            "terminates_at": null,
            "target_groups_checked": 1,
            "removed": [{
                "target_group_arn": GROUP, "target_group_name": "web", "kind": "instance", "target_id": INSTANCE,
                "port": 30080, "availability_zone": null, "state": "draining", "reason": null,
                "deregistration_delay_seconds": 300
            }],
            "planned": [], "remaining": [], "network_interfaces": [], "warnings": [], "errors": [],
            "timings_ms": {"describe": 0, "fast_locate": 0, "locate": 0, "deregister": 0, "quarantine": 0, "verify": 0, "total": 0}
        }))
        .unwrap()
    }

    fn draining() -> DescribeTargetHealthOutput {
        DescribeTargetHealthOutput::builder()
            .target_health_descriptions(
                TargetHealthDescription::builder()
                    .target(TargetDescription::builder().id(INSTANCE).port(30080).build())
                    .target_health(TargetHealth::builder().state(TargetHealthStateEnum::Draining).build())
                    .build(),
            )
            .build()
    }

    /// ELB answers `draining` this many times, then that the target is gone.
    fn health(calls: &Calls, draining_for: usize, asked: &Arc<Mutex<Vec<DescribeTargetHealthInput>>>) -> Rule {
        let (calls, asked) = (calls.clone(), asked.clone());
        let answered = Arc::new(Mutex::new(0));
        mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_health).then_compute_output(
            move |input: &DescribeTargetHealthInput| {
                calls.push("Health");
                asked.lock().unwrap().push(input.clone());
                let mut n = answered.lock().unwrap();
                *n += 1;
                if *n <= draining_for {
                    draining()
                } else {
                    DescribeTargetHealthOutput::builder().build()
                }
            },
        )
    }

    struct AutoScaling {
        heartbeat: Rule,
        complete: Rule,
        heartbeats: Arc<Mutex<Vec<RecordLifecycleActionHeartbeatInput>>>,
        completions: Arc<Mutex<Vec<CompleteLifecycleActionInput>>>,
    }

    impl AutoScaling {
        fn answering(calls: &Calls, refuse_completion: bool) -> Self {
            let heartbeats = Arc::new(Mutex::new(Vec::new()));
            let completions = Arc::new(Mutex::new(Vec::new()));
            let heartbeat = {
                let (calls, heartbeats) = (calls.clone(), heartbeats.clone());
                mock!(aws_sdk_autoscaling::Client::record_lifecycle_action_heartbeat).then_compute_output(
                    move |input: &RecordLifecycleActionHeartbeatInput| {
                        calls.push("Heartbeat");
                        heartbeats.lock().unwrap().push(input.clone());
                        RecordLifecycleActionHeartbeatOutput::builder().build()
                    },
                )
            };
            let complete = {
                let (calls, completions) = (calls.clone(), completions.clone());
                let rule = mock!(aws_sdk_autoscaling::Client::complete_lifecycle_action).match_requests(
                    move |input: &CompleteLifecycleActionInput| {
                        calls.push("Complete");
                        completions.lock().unwrap().push(input.clone());
                        true
                    },
                );
                if refuse_completion {
                    rule.sequence()
                        .http_status(
                            400,
                            Some(
                                "<ErrorResponse><Error><Type>Sender</Type><Code>ValidationError</Code>\
                                 <Message>No active Lifecycle Action found with instance ID i-0123456789abcdef0</Message>\
                                 </Error><RequestId>r</RequestId></ErrorResponse>"
                                    .to_owned(),
                            ),
                        )
                        .repeatedly()
                        .build()
                } else {
                    rule.then_output(|| CompleteLifecycleActionOutput::builder().build())
                }
            };
            AutoScaling {
                heartbeat,
                complete,
                heartbeats,
                completions,
            }
        }

        fn client(&self) -> aws_sdk_autoscaling::Client {
            mock_client!(
                aws_sdk_autoscaling,
                RuleMode::MatchAny,
                [&self.heartbeat, &self.complete],
                |c| c.retry_config(quick())
            )
        }
    }

    fn elb(rule: &Rule) -> aws_sdk_elasticloadbalancingv2::Client {
        mock_client!(aws_sdk_elasticloadbalancingv2, RuleMode::MatchAny, [rule], |c| c
            .retry_config(quick()))
    }

    #[tokio::test]
    async fn it_waits_for_draining_with_heartbeats_then_continues() {
        let calls = Calls::default();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let health = health(&calls, 2, &asked);
        let autoscaling = AutoScaling::answering(&calls, false);
        let mut summaries = vec![drained_summary()];
        let wait = DrainWait {
            poll: Duration::from_millis(1),
            heartbeat_every: Duration::ZERO,
        };

        complete_all(
            &autoscaling.client(),
            &elb(&health),
            Some(wait),
            &mut summaries,
            Deadline::none(),
        )
        .await;

        assert_eq!(
            calls.all(),
            [
                "Heartbeat",
                "Health",
                "Heartbeat",
                "Health",
                "Heartbeat",
                "Health",
                "Complete"
            ],
            "a heartbeat before each look, and completion once the target left draining"
        );
        let asked = asked.lock().unwrap();
        assert_eq!(asked[0].target_group_arn(), Some(GROUP));
        assert_eq!(asked[0].targets()[0].id(), Some(INSTANCE));
        assert_eq!(asked[0].targets()[0].port(), Some(30080));
        let heartbeat = &autoscaling.heartbeats.lock().unwrap()[0];
        assert_eq!(heartbeat.lifecycle_hook_name(), Some("spot-cleanup"));
        assert_eq!(heartbeat.auto_scaling_group_name(), Some("nodes"));
        assert_eq!(heartbeat.instance_id(), Some(INSTANCE));
        assert_eq!(
            heartbeat.lifecycle_action_token(),
            Some("87654321-4321-4321-4321-210987654321")
        );
        let completion = &autoscaling.completions.lock().unwrap()[0];
        assert_eq!(completion.lifecycle_action_result(), Some("CONTINUE"));
        let report = summaries[0].lifecycle.clone().unwrap();
        assert_eq!(report.result.as_deref(), Some("CONTINUE"));
        assert_eq!((report.heartbeats, report.still_draining), (3, 0));
        assert!(summaries[0].is_complete());
    }

    #[tokio::test]
    async fn heartbeats_are_spaced_and_the_wait_ends_at_the_deadline() {
        let calls = Calls::default();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let health = health(&calls, usize::MAX, &asked);
        let autoscaling = AutoScaling::answering(&calls, false);
        let mut summaries = vec![drained_summary()];
        let wait = DrainWait {
            poll: Duration::from_millis(5),
            heartbeat_every: Duration::from_secs(3600),
        };

        complete_all(
            &autoscaling.client(),
            &elb(&health),
            Some(wait),
            &mut summaries,
            Deadline::after(Duration::from_millis(60)),
        )
        .await;

        let calls = calls.all();
        assert_eq!(calls.iter().filter(|c| *c == "Heartbeat").count(), 1, "{calls:?}");
        assert!(calls.iter().filter(|c| *c == "Health").count() >= 2, "{calls:?}");
        assert_eq!(calls.last().map(String::as_str), Some("Complete"));
        let report = summaries[0].lifecycle.clone().unwrap();
        assert_eq!(report.still_draining, 1);
        assert_eq!(report.result.as_deref(), Some("CONTINUE"));
        assert!(
            summaries[0]
                .warnings
                .iter()
                .any(|w| w.contains("still draining at the deadline")),
            "{:?}",
            summaries[0].warnings
        );
    }

    #[tokio::test]
    async fn without_a_wait_it_completes_at_once_and_a_refusal_is_an_error() {
        let calls = Calls::default();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let health = health(&calls, usize::MAX, &asked);
        let autoscaling = AutoScaling::answering(&calls, true);
        let mut summaries = vec![drained_summary()];

        complete_all(
            &autoscaling.client(),
            &elb(&health),
            None,
            &mut summaries,
            Deadline::none(),
        )
        .await;

        assert_eq!(calls.all(), ["Complete"], "no wait, no heartbeat, not retried");
        let summary = &summaries[0];
        assert_eq!(summary.lifecycle.as_ref().unwrap().result, None);
        assert_eq!(summary.errors.len(), 1);
        assert_eq!(summary.errors[0].step, Step::Lifecycle);
        assert!(
            summary.errors[0]
                .message
                .contains("ValidationError: No active Lifecycle Action"),
            "{}",
            summary.errors[0].message
        );
        assert!(!summary.is_complete(), "so the invocation fails and is retried");
    }
}
