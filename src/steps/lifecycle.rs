//! Finish an Auto Scaling terminate lifecycle action: optionally wait until the instance's targets have drained,
//! sending heartbeats so the hook does not time out meanwhile, then CompleteLifecycleAction with CONTINUE.
//!
//! Only a complete cleanup completes the action. Otherwise the invocation fails, Lambda or SQS retries it, and the
//! hook keeps the instance alive for the retry (until its heartbeat timeout, after which Auto Scaling applies the
//! hook's default result anyway).

use std::time::{Duration, Instant};

use aws_sdk_autoscaling::Client as AutoScalingClient;
use aws_sdk_elasticloadbalancingv2::Client as ElbClient;
use aws_sdk_elasticloadbalancingv2::types::TargetDescription;
use serde::{Deserialize, Serialize};

use crate::aws_error;
use crate::input::LifecycleAction;
use crate::pace::Pace;
use crate::summary::{Step, StepError, Summary, TargetChange};

/// The only result this function gives: the cleanup is done, let the instance go.
pub const CONTINUE: &str = "CONTINUE";

/// How to wait for draining targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DrainWait {
    /// Time between two looks at the draining targets.
    pub poll: Duration,
    /// At most this long between two heartbeats (the shortest heartbeat timeout a hook can have is 30 s).
    pub heartbeat_every: Duration,
}

impl Default for DrainWait {
    fn default() -> Self {
        DrainWait {
            poll: Duration::from_secs(5),
            heartbeat_every: Duration::from_secs(20),
        }
    }
}

/// What happened to the lifecycle action, for the summary.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LifecycleReport {
    pub hook_name: String,
    pub group_name: String,
    /// CONTINUE once completed; None when it was not completed (see the summary's errors or warnings).
    pub result: Option<String>,
    pub heartbeats: u32,
    pub waited_ms: u64,
    /// Targets still draining when the wait stopped (at the deadline).
    pub still_draining: usize,
}

/// Finish the lifecycle action of every summary that has one. A summary that is not complete, or a dry run, leaves
/// its action alone and says so.
pub async fn finish_all(
    autoscaling: &AutoScalingClient,
    elb: &ElbClient,
    pace: &Pace,
    wait: Option<DrainWait>,
    summaries: &mut [Summary],
    deadline: Option<Instant>,
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
        if summary.dry_run {
            summary
                .warnings
                .push("dry run: the lifecycle action was left for its hook's default result".into());
        } else if !summary.is_complete() {
            summary.warnings.push(
                "the cleanup is incomplete, so the lifecycle action was not completed: a retry will finish both".into(),
            );
        } else {
            let instance = summary.instance.id.as_str().to_owned();
            if let Some(wait) = wait {
                let draining: Vec<&TargetChange> = summary
                    .removed
                    .iter()
                    .filter(|t| t.state.as_deref() == Some("draining"))
                    .collect();
                let started = Instant::now();
                let (heartbeats, left, errors) =
                    wait_for_drain(autoscaling, elb, pace, &action, &instance, &draining, wait, deadline).await;
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
                    message: format!("CompleteLifecycleAction failed: {error}"),
                }),
            }
        }
        summary.lifecycle = Some(report);
        summary.settle_outcome();
    }
}

/// Look at the draining targets every `poll` until none is draining or the deadline comes, with a heartbeat at the
/// start and then every `heartbeat_every`. Returns the heartbeats sent, the targets still draining, and warnings.
#[allow(clippy::too_many_arguments)]
async fn wait_for_drain(
    autoscaling: &AutoScalingClient,
    elb: &ElbClient,
    pace: &Pace,
    action: &LifecycleAction,
    instance: &str,
    draining: &[&TargetChange],
    wait: DrainWait,
    deadline: Option<Instant>,
) -> (u32, usize, Vec<String>) {
    let mut left: Vec<&TargetChange> = draining.to_vec();
    let mut heartbeats = 0;
    let mut warnings = Vec::new();
    let mut last_heartbeat: Option<Instant> = None;
    while !left.is_empty() {
        if last_heartbeat.is_none_or(|t| t.elapsed() >= wait.heartbeat_every) {
            match heartbeat(autoscaling, action, instance).await {
                Ok(()) => heartbeats += 1,
                Err(e) => warnings.push(format!("RecordLifecycleActionHeartbeat failed: {e}")),
            }
            last_heartbeat = Some(Instant::now());
        }
        if deadline.is_some_and(|d| Instant::now() + wait.poll >= d) {
            break;
        }
        tokio::time::sleep(wait.poll).await;
        let mut still = Vec::new();
        for target in left {
            pace.acquire().await;
            let health = elb
                .describe_target_health()
                .target_group_arn(&target.target_group_arn)
                .targets(
                    TargetDescription::builder()
                        .id(&target.target_id)
                        .set_port(target.port)
                        .set_availability_zone(target.availability_zone.clone())
                        .build(),
                )
                .send()
                .await;
            let draining = match health {
                Ok(health) => health
                    .target_health_descriptions()
                    .iter()
                    .any(|d| d.target_health().and_then(|h| h.state()).map(|s| s.as_str()) == Some("draining")),
                Err(e) if aws_error::code(&e) == Some("TargetGroupNotFound") => false,
                // Cannot tell: keep waiting on it, as draining is what was last seen.
                Err(_) => true,
            };
            if draining {
                still.push(target);
            }
        }
        left = still;
    }
    (heartbeats, left.len(), warnings)
}

async fn heartbeat(autoscaling: &AutoScalingClient, action: &LifecycleAction, instance: &str) -> Result<(), String> {
    autoscaling
        .record_lifecycle_action_heartbeat()
        .lifecycle_hook_name(&action.hook_name)
        .auto_scaling_group_name(&action.group_name)
        .set_lifecycle_action_token(action.token.clone())
        .instance_id(instance)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| aws_error::explain(&e))
}

async fn complete(autoscaling: &AutoScalingClient, action: &LifecycleAction, instance: &str) -> Result<(), String> {
    autoscaling
        .complete_lifecycle_action()
        .lifecycle_hook_name(&action.hook_name)
        .auto_scaling_group_name(&action.group_name)
        .set_lifecycle_action_token(action.token.clone())
        .instance_id(instance)
        .lifecycle_action_result(CONTINUE)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| aws_error::explain(&e))
}
