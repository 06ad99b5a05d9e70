//! The Auto Scaling calls that finish a terminate lifecycle action: wait until the instance's targets have drained,
//! sending heartbeats so the hook does not time out meanwhile (`wait_for_drain`), then CompleteLifecycleAction with
//! CONTINUE (`complete`). `cleanup::lifecycle` decides when, and writes what came of it into the summaries.
//!
//! Only a complete cleanup completes the action. Otherwise the invocation fails, Lambda or SQS retries it, and the
//! hook keeps the instance alive for the retry (until its heartbeat timeout, after which Auto Scaling applies the
//! hook's default result anyway).

use std::time::{Duration, Instant};

use crate::aws::CallError;
use crate::deadline::Deadline;
use crate::input::{InstanceId, LifecycleAction};
use crate::summary::TargetChange;
use aws_sdk_autoscaling::Client as AutoScalingClient;
use aws_sdk_elasticloadbalancingv2::Client as ElbClient;
use aws_sdk_elasticloadbalancingv2::types::{TargetDescription, TargetHealthStateEnum};

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

/// Look at the draining targets every `poll` until none is draining or the deadline comes, with a heartbeat at the
/// start and then every `heartbeat_every`. Returns the heartbeats sent, the targets still draining, and warnings.
#[allow(clippy::too_many_arguments)]
pub async fn wait_for_drain(
    autoscaling: &AutoScalingClient,
    elb: &ElbClient,
    action: &LifecycleAction,
    instance: &str,
    draining: &[&TargetChange],
    wait: DrainWait,
    deadline: Deadline,
) -> (u32, usize, Vec<String>) {
    let mut left: Vec<&TargetChange> = draining.to_vec();
    let mut heartbeats = 0;
    let mut warnings = Vec::new();
    let mut last_heartbeat: Option<Instant> = None;
    while !left.is_empty() {
        if last_heartbeat.is_none_or(|t| t.elapsed() >= wait.heartbeat_every) {
            match heartbeat(autoscaling, action, instance).await {
                Ok(()) => heartbeats += 1,
                Err(e) => warnings.push(e.to_string()),
            }
            last_heartbeat = Some(Instant::now());
        }
        if !deadline.within(wait.poll) {
            break;
        }
        tokio::time::sleep(wait.poll).await;
        let mut still = Vec::new();
        for target in left {
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
                    .any(|d| d.target_health().and_then(|h| h.state()) == Some(&TargetHealthStateEnum::Draining)),
                Err(e) if CallError::new("DescribeTargetHealth", &e).is("TargetGroupNotFound") => false,
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

async fn heartbeat(autoscaling: &AutoScalingClient, action: &LifecycleAction, instance: &str) -> Result<(), CallError> {
    autoscaling
        .record_lifecycle_action_heartbeat()
        .lifecycle_hook_name(&action.hook_name)
        .auto_scaling_group_name(&action.group_name)
        .set_lifecycle_action_token(action.token.clone())
        .instance_id(instance)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| CallError::new("RecordLifecycleActionHeartbeat", &e))
}

/// Let an instance this function leaves alone go at once: complete its lifecycle action with CONTINUE, nothing
/// cleaned. The hook is this function's own (another tool's action never gets this far), so nobody else would
/// complete it, and Auto Scaling would hold the instance until the hook's heartbeat timeout.
pub async fn let_go(
    autoscaling: &AutoScalingClient,
    action: &LifecycleAction,
    instance: &InstanceId,
) -> Result<(), CallError> {
    complete(autoscaling, action, instance.as_str()).await
}

pub async fn complete(
    autoscaling: &AutoScalingClient,
    action: &LifecycleAction,
    instance: &str,
) -> Result<(), CallError> {
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
        .map_err(|e| CallError::new("CompleteLifecycleAction", &e))
}
