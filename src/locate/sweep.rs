//! The full sweep: list every target group in the instances' VPCs and describe the health of each.
//!
//! It costs one DescribeTargetHealth per target group, from the account's shared Describe* budget, so the calls run
//! concurrently but bounded, through the ELB client's adaptive retry.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::Instant;

use aws_sdk_elasticloadbalancingv2::types::{TargetGroup, TargetTypeEnum};

use super::{LocateError, LocateFuture, Located, Locator, TargetKind, TargetRegistration, UncheckedGroup, past};
use crate::aws_error;
use crate::bounded::bounded_all;
use crate::input::InstanceId;
use crate::instance::Instance;
use crate::pace::Pace;

/// DescribeTargetGroups returns at most 400 per page.
const PAGE_SIZE: i32 = 400;

pub struct Sweep {
    elb: aws_sdk_elasticloadbalancingv2::Client,
    concurrency: usize,
    pace: Pace,
}

impl Sweep {
    pub fn new(elb: aws_sdk_elasticloadbalancingv2::Client, concurrency: usize) -> Self {
        Sweep {
            elb,
            concurrency: concurrency.max(1),
            pace: Pace::unlimited(),
        }
    }

    /// Take a token from `pace` before each DescribeTargetHealth.
    pub fn paced(mut self, pace: Pace) -> Self {
        self.pace = pace;
        self
    }
}

impl Locator for Sweep {
    fn name(&self) -> &'static str {
        "sweep"
    }

    fn locate<'a>(&'a self, instances: &'a [Instance], deadline: Option<Instant>) -> LocateFuture<'a> {
        Box::pin(self.sweep(instances, deadline))
    }
}

/// What a target must look like to belong to one of the instances.
struct Wanted {
    vpcs: HashSet<String>,
    /// An instance without a VPC (EC2-Classic, or a long-terminated one) means groups cannot be filtered by VPC.
    any_vpc: bool,
    instance_ids: HashSet<String>,
    addresses: HashMap<(String, IpAddr), InstanceId>,
}

impl Wanted {
    fn new(instances: &[Instance]) -> Self {
        let mut wanted = Wanted {
            vpcs: HashSet::new(),
            any_vpc: false,
            instance_ids: HashSet::new(),
            addresses: HashMap::new(),
        };
        for instance in instances {
            wanted.instance_ids.insert(instance.id.as_str().to_owned());
            match &instance.vpc_id {
                None => wanted.any_vpc = true,
                Some(vpc) => {
                    wanted.vpcs.insert(vpc.clone());
                }
            }
            for eni in &instance.network_interfaces {
                let Some(vpc) = eni.vpc_id.as_ref().or(instance.vpc_id.as_ref()) else {
                    continue;
                };
                wanted.vpcs.insert(vpc.clone());
                for address in &eni.addresses {
                    wanted.addresses.insert((vpc.clone(), *address), instance.id.clone());
                }
            }
        }
        wanted
    }

    fn covers(&self, group: &TargetGroup) -> bool {
        let kind_ok = matches!(group.target_type(), Some(TargetTypeEnum::Instance | TargetTypeEnum::Ip));
        let vpc_ok = self.any_vpc || group.vpc_id().is_some_and(|v| self.vpcs.contains(v));
        kind_ok && vpc_ok
    }

    /// Which instance a target id in a group of this kind and VPC belongs to, if any.
    fn owner(&self, kind: TargetKind, vpc: Option<&str>, target_id: &str) -> Option<InstanceId> {
        match kind {
            TargetKind::Instance => self
                .instance_ids
                .contains(target_id)
                .then(|| InstanceId::parse(target_id).ok())
                .flatten(),
            TargetKind::Ip => {
                let address: IpAddr = target_id.parse().ok()?;
                self.addresses.get(&(vpc?.to_owned(), address)).cloned()
            }
        }
    }
}

/// A target group we will describe.
struct Candidate {
    arn: String,
    name: String,
    kind: TargetKind,
    vpc_id: Option<String>,
}

impl Sweep {
    async fn sweep(&self, instances: &[Instance], deadline: Option<Instant>) -> Result<Located, LocateError> {
        let wanted = Wanted::new(instances);
        let candidates = self.list_candidates(&wanted).await?;
        let names: Vec<(String, String, Option<String>)> = candidates
            .iter()
            .map(|c| (c.arn.clone(), c.name.clone(), c.vpc_id.clone()))
            .collect();
        let described = bounded_all(self.concurrency, candidates, |candidate| {
            let request = self
                .elb
                .describe_target_health()
                .target_group_arn(&candidate.arn)
                .send();
            // Checked once a permit is held, so calls queued behind the limit also stop at the deadline.
            let pace = self.pace.clone();
            async move {
                pace.acquire().await;
                let health = if past(deadline) { None } else { Some(request.await) };
                (candidate, health)
            }
        })
        .await;

        let mut located = Located::default();
        for (described, (arn, name, vpc_id)) in described.into_iter().zip(names) {
            let (candidate, health) = match described {
                Ok(pair) => pair,
                Err(e) => {
                    located.unchecked.push(UncheckedGroup {
                        target_group_arn: arn,
                        target_group_name: name,
                        vpc_id,
                        error: e.to_string(),
                    });
                    continue;
                }
            };
            let Some(health) = health else {
                located.unchecked.push(UncheckedGroup {
                    target_group_arn: candidate.arn,
                    target_group_name: candidate.name,
                    vpc_id: candidate.vpc_id,
                    error: "not checked: out of time before the deadline".to_owned(),
                });
                continue;
            };
            located.target_groups_checked += 1;
            let health = match health {
                Ok(health) => {
                    located.checked_groups.insert(candidate.arn.clone());
                    health
                }
                // Deleted between listing and describing: nothing can be registered in it.
                Err(e) if aws_error::code(&e) == Some("TargetGroupNotFound") => continue,
                Err(e) => {
                    located.unchecked.push(UncheckedGroup {
                        target_group_arn: candidate.arn,
                        target_group_name: candidate.name,
                        vpc_id: candidate.vpc_id,
                        error: aws_error::explain(&e),
                    });
                    continue;
                }
            };
            for description in health.target_health_descriptions() {
                let Some((target, target_id)) = description.target().and_then(|t| Some((t, t.id()?))) else {
                    continue;
                };
                let Some(owner) = wanted.owner(candidate.kind, candidate.vpc_id.as_deref(), target_id) else {
                    continue;
                };
                located.registrations.push(TargetRegistration {
                    target_group_arn: candidate.arn.clone(),
                    target_group_name: candidate.name.clone(),
                    instance_id: owner,
                    kind: candidate.kind,
                    target_id: target_id.to_owned(),
                    port: target.port(),
                    availability_zone: target.availability_zone().map(str::to_owned),
                    state: description
                        .target_health()
                        .and_then(|h| h.state())
                        .map(|s| s.as_str().to_owned()),
                });
            }
        }
        located.registrations.sort();
        located
            .unchecked
            .sort_by(|a, b| a.target_group_arn.cmp(&b.target_group_arn));
        Ok(located)
    }

    async fn list_candidates(&self, wanted: &Wanted) -> Result<Vec<Candidate>, LocateError> {
        let groups = list_target_groups(&self.elb)
            .await
            .map_err(LocateError::ListTargetGroups)?;
        let candidates = groups
            .iter()
            .filter(|g| wanted.covers(g))
            .filter_map(|group| {
                let kind = match group.target_type() {
                    Some(TargetTypeEnum::Ip) => TargetKind::Ip,
                    _ => TargetKind::Instance,
                };
                Some(Candidate {
                    arn: group.target_group_arn()?.to_owned(),
                    name: group.target_group_name().unwrap_or_default().to_owned(),
                    kind,
                    vpc_id: group.vpc_id().map(str::to_owned),
                })
            })
            .collect();
        Ok(candidates)
    }
}

/// Every target group of the account and region, page by page; the error is the service's, explained.
pub async fn list_target_groups(elb: &aws_sdk_elasticloadbalancingv2::Client) -> Result<Vec<TargetGroup>, String> {
    let mut groups = Vec::new();
    let mut pages = elb
        .describe_target_groups()
        .page_size(PAGE_SIZE)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| aws_error::explain(&e))?;
        groups.extend(page.target_groups().iter().cloned());
    }
    Ok(groups)
}
