//! The Auto Scaling fast path: an instance launched by an Auto Scaling group is registered, on each target group's
//! own port, in every target group attached to that group. Two calls answer that for a whole batch, whatever the
//! size of the fleet, so these registrations can be deregistered before the sweep has even started.
//!
//! The group name comes from the instance's `aws:autoscaling:groupName` tag, which DescribeInstances already
//! returned. The sweep still runs afterwards: it finds what the group does not know (NodePorts registered by a
//! controller, IP targets) and checks that these left.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_elasticloadbalancingv2::types::{TargetGroup, TargetTypeEnum};

use super::{LocateError, LocateFuture, Located, Locator, TargetKind, TargetRegistration};
use crate::aws::CallError;
use crate::deadline::Deadline;
use crate::instance::Instance;

/// The tag EC2 Auto Scaling puts on every instance it launches.
pub const GROUP_NAME_TAG: &str = "aws:autoscaling:groupName";
/// DescribeAutoScalingGroups takes at most this many names at once.
const NAMES_PER_CALL: usize = 50;

pub struct AutoScaling {
    autoscaling: aws_sdk_autoscaling::Client,
    elb: aws_sdk_elasticloadbalancingv2::Client,
}

impl AutoScaling {
    pub fn new(autoscaling: aws_sdk_autoscaling::Client, elb: aws_sdk_elasticloadbalancingv2::Client) -> Self {
        AutoScaling { autoscaling, elb }
    }
}

impl Locator for AutoScaling {
    fn name(&self) -> &'static str {
        "auto-scaling"
    }

    fn locate<'a>(
        &'a self,
        instances: &'a [Instance],
        _since: chrono::DateTime<chrono::Utc>,
        deadline: Deadline,
    ) -> LocateFuture<'a> {
        Box::pin(self.attached_target_groups(instances, deadline))
    }
}

impl AutoScaling {
    /// The instance target groups attached to the Auto Scaling groups of the instances that belong to one.
    async fn attached_target_groups(&self, instances: &[Instance], deadline: Deadline) -> Result<Located, LocateError> {
        let mut members: BTreeMap<&str, Vec<&Instance>> = BTreeMap::new();
        for instance in instances {
            if let Some(group) = instance.tags.get(GROUP_NAME_TAG) {
                members.entry(group.as_str()).or_default().push(instance);
            }
        }
        if members.is_empty() || deadline.passed() {
            return Ok(Located::default());
        }
        let names: Vec<&str> = members.keys().copied().collect();
        let attached = self.attached(&names).await?;
        let arns: BTreeSet<&String> = attached.values().flatten().collect();
        if arns.is_empty() {
            return Ok(Located::default());
        }
        let groups = self.instance_groups(&arns).await?;

        let mut located = Located::default();
        for (name, instances) in members {
            for arn in attached.get(name).into_iter().flatten() {
                let Some(group) = groups.get(arn) else { continue };
                for instance in &instances {
                    located.registrations.push(TargetRegistration {
                        target_group_arn: arn.clone(),
                        target_group_name: group.target_group_name().unwrap_or_default().to_owned(),
                        instance_id: instance.id.clone(),
                        kind: TargetKind::Instance,
                        target_id: instance.id.as_str().to_owned(),
                        port: group.port(),
                        availability_zone: None,
                        state: None,
                    });
                }
            }
        }
        located.registrations.sort();
        Ok(located)
    }

    /// The target group ARNs attached to each named Auto Scaling group.
    async fn attached(&self, names: &[&str]) -> Result<BTreeMap<String, Vec<String>>, LocateError> {
        let mut attached: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for chunk in names.chunks(NAMES_PER_CALL) {
            let mut pages = self
                .autoscaling
                .describe_auto_scaling_groups()
                .set_auto_scaling_group_names(Some(chunk.iter().map(|n| n.to_string()).collect()))
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| CallError::new("DescribeAutoScalingGroups", &e))?;
                for group in page.auto_scaling_groups() {
                    let Some(name) = group.auto_scaling_group_name() else {
                        continue;
                    };
                    let arns = group.target_group_arns().iter().cloned();
                    // Newer groups attach target groups as traffic sources instead.
                    let sources = group
                        .traffic_sources()
                        .iter()
                        .filter(|s| s.r#type().is_none_or(|t| t == "elbv2"))
                        .filter_map(|s| s.identifier())
                        .filter(|id| id.contains(":targetgroup/"))
                        .map(str::to_owned);
                    let all: BTreeSet<String> = arns.chain(sources).collect();
                    attached.insert(name.to_owned(), all.into_iter().collect());
                }
            }
        }
        Ok(attached)
    }

    /// The instance target groups among `arns`, with their ports and names: one Describe call for up to 400 groups.
    async fn instance_groups(&self, arns: &BTreeSet<&String>) -> Result<BTreeMap<String, TargetGroup>, LocateError> {
        let mut groups = BTreeMap::new();
        let arn_list: Vec<String> = arns.iter().map(|a| a.to_string()).collect();
        for chunk in arn_list.chunks(400) {
            let described = self
                .elb
                .describe_target_groups()
                .set_target_group_arns(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| CallError::new("DescribeTargetGroups", &e))?;
            for group in described.target_groups() {
                if group.target_type() == Some(&TargetTypeEnum::Instance)
                    && let Some(arn) = group.target_group_arn()
                {
                    groups.insert(arn.to_owned(), group.clone());
                }
            }
        }
        Ok(groups)
    }
}
