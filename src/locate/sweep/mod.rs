//! The full sweep: list every target group in the instances' VPCs and read the targets of each.
//!
//! It costs one DescribeTargetHealth per target group, from the account's shared Describe* budget (see `read`). With
//! the function's table, cleanups running at the same time share one sweep instead (`locate::shared`).

pub mod found;
pub mod read;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use aws_sdk_elasticloadbalancingv2::types::TargetGroup;
use chrono::{DateTime, Utc};

use super::{LocateFuture, Located, Locator, TargetKind, TargetRegistration, UncheckedGroup};
use crate::aws::Pace;
use crate::deadline::Deadline;
use crate::input::InstanceId;
use crate::instance::Instance;
use found::Found;
use read::{Candidate, GroupRead, Outcome, Reader};

pub use read::list_target_groups;

pub struct Sweep {
    reader: Reader,
}

impl Sweep {
    pub fn new(elb: aws_sdk_elasticloadbalancingv2::Client, concurrency: usize) -> Self {
        Sweep {
            reader: Reader {
                elb,
                concurrency: concurrency.max(1),
                pace: Pace::unlimited(),
            },
        }
    }

    /// Take a turn from `pace` before each DescribeTargetHealth.
    pub fn paced(mut self, pace: Pace) -> Self {
        self.reader.pace = pace;
        self
    }

    pub fn reader(&self) -> &Reader {
        &self.reader
    }
}

impl Locator for Sweep {
    fn name(&self) -> &'static str {
        "sweep"
    }

    fn locate<'a>(&'a self, instances: &'a [Instance], since: DateTime<Utc>, deadline: Deadline) -> LocateFuture<'a> {
        self.locate_handing(instances, since, deadline, Found::nowhere())
    }

    fn locate_handing<'a>(
        &'a self,
        instances: &'a [Instance],
        _since: DateTime<Utc>,
        deadline: Deadline,
        found: Found,
    ) -> LocateFuture<'a> {
        Box::pin(async move {
            let wanted = Wanted::new(instances);
            let groups = list_target_groups(&self.reader.elb).await?;
            let candidates = wanted.candidates(&groups);
            let reads = self.reader.read(candidates, deadline, found.hand()).await;
            Ok(wanted.located(&reads, false))
        })
    }
}

/// What a target must look like to belong to one of the instances.
pub struct Wanted {
    vpcs: HashSet<String>,
    /// An instance without a VPC (EC2-Classic, or a long-terminated one) means groups cannot be filtered by VPC.
    pub any_vpc: bool,
    instance_ids: HashSet<String>,
    addresses: HashMap<(String, IpAddr), InstanceId>,
}

impl Wanted {
    pub fn new(instances: &[Instance]) -> Self {
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

    /// The VPCs the instances' targets can be in.
    pub fn vpcs(&self) -> impl Iterator<Item = &String> {
        self.vpcs.iter()
    }

    /// The groups of `listed` that could hold one of the instances: instance and IP groups of their VPCs.
    pub fn candidates(&self, listed: &[TargetGroup]) -> Vec<Candidate> {
        listed
            .iter()
            .filter(|g| self.any_vpc || g.vpc_id().is_some_and(|v| self.vpcs.contains(v)))
            .filter_map(Candidate::of)
            .collect()
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

    /// The instances' registrations in what was read. `shared`: the reads are another cleanup's, made at their
    /// `read_at`, which the ledger needs to tell whether they saw this run's deregistrations.
    pub fn located(&self, reads: &[GroupRead], shared: bool) -> Located {
        let mut located = Located::default();
        for read in reads {
            let candidate = &read.candidate;
            let unchecked = |error: &str| UncheckedGroup {
                target_group_arn: candidate.arn.clone(),
                target_group_name: candidate.name.clone(),
                vpc_id: candidate.vpc_id.clone(),
                error: error.to_owned(),
            };
            let seen = match &read.outcome {
                Outcome::Targets(seen) => seen,
                Outcome::Gone => {
                    located.target_groups_checked += 1;
                    continue;
                }
                Outcome::Failed(error) => {
                    if !error.starts_with("not checked") {
                        located.target_groups_checked += 1;
                    }
                    located.unchecked.push(unchecked(error));
                    continue;
                }
            };
            located.target_groups_checked += 1;
            located.checked_groups.insert(candidate.arn.clone());
            if shared {
                located.read_at.insert(candidate.arn.clone(), read.read_at);
            }
            for target in seen {
                let Some(owner) = self.owner(candidate.kind, candidate.vpc_id.as_deref(), &target.id) else {
                    continue;
                };
                located.registrations.push(TargetRegistration {
                    target_group_arn: candidate.arn.clone(),
                    target_group_name: candidate.name.clone(),
                    instance_id: owner,
                    kind: candidate.kind,
                    target_id: target.id.clone(),
                    port: target.port,
                    availability_zone: target.zone.clone(),
                    state: target.state.clone(),
                });
            }
        }
        located.registrations.sort();
        located
            .unchecked
            .sort_by(|a, b| a.target_group_arn.cmp(&b.target_group_arn));
        located
    }
}

/// What AWS really answers, scripted: the behaviour moto gets wrong (see `crate::testing`).
#[cfg(test)]
mod semantics {
    use super::*;
    use crate::deadline::Deadline;
    use crate::steps::deregister;
    use crate::testing::*;
    use aws_sdk_elasticloadbalancingv2::types::TargetTypeEnum;
    use aws_smithy_mocks::mock;
    use std::collections::BTreeMap;

    /// A Kubernetes node serves two NodePorts in one target group and a pod IP (its secondary address) in an ip-type group.
    /// The sweep finds all three registrations, and deregistration sends one DeregisterTargets per group carrying every
    /// one of them with its exact port and zone. The neighbour node on the same ports is never sent.
    #[tokio::test]
    async fn every_port_of_the_instance_leaves_its_group_in_one_call() {
        use aws_sdk_elasticloadbalancingv2::types::TargetHealthStateEnum::Healthy;

        let node = instance(
            INSTANCE,
            &[eni("eni-0aaa0000000000001", &[WEB_SG], &[PRIMARY_IP, SECONDARY_IP])],
        );
        let listing = listing(vec![
            target_group("nodeports", TargetTypeEnum::Instance, VPC),
            target_group("pods", TargetTypeEnum::Ip, VPC),
            // Same address space, different network: 10.0.1.11 there is some other host.
            target_group("other-vpc-pods", TargetTypeEnum::Ip, OTHER_VPC),
            target_group("lambda", TargetTypeEnum::Lambda, VPC),
        ]);
        let nodeports = health_of(
            "nodeports",
            vec![
                target(INSTANCE, 30080, Healthy),
                target(NEIGHBOUR, 30080, Healthy),
                target(INSTANCE, 30443, Healthy),
                target(NEIGHBOUR, 30443, Healthy),
            ],
        );
        let pods = health_of(
            "pods",
            vec![
                target_in_zone(SECONDARY_IP, 8080, "us-east-1a", Healthy),
                target_in_zone("10.0.1.12", 8080, "us-east-1a", Healthy),
            ],
        );
        let other_vpc = health_of("other-vpc-pods", vec![target(SECONDARY_IP, 8080, Healthy)]);
        let lambda = health_of("lambda", vec![]);
        let sent = Sent::new();
        let deregister = deregister_anything(&sent);
        let elb = elb_client(&[&listing, &nodeports, &pods, &other_vpc, &lambda, &deregister]);

        let located = Sweep::new(elb.clone(), 10)
            .locate(std::slice::from_ref(&node), chrono::Utc::now(), Deadline::none())
            .await
            .unwrap();

        assert_eq!(
            located.registrations,
            vec![
                instance_target("nodeports", 30080, "healthy"),
                instance_target("nodeports", 30443, "healthy"),
                ip_target("pods", SECONDARY_IP, 8080, Some("us-east-1a"), "healthy"),
            ]
        );
        assert_eq!(located.target_groups_checked, 2);
        assert!(located.unchecked.is_empty());
        assert_eq!((nodeports.num_calls(), pods.num_calls()), (1, 1));
        // Groups in other VPCs and Lambda groups cannot hold this instance: not a single Describe is spent on them.
        assert_eq!((other_vpc.num_calls(), lambda.num_calls()), (0, 0));

        let results = deregister::deregister_all(&elb, &located.registrations, 10).await;

        assert_eq!(
            results,
            BTreeMap::from([(arn("nodeports"), Ok(())), (arn("pods"), Ok(()))])
        );
        let mut requests = sent.all();
        requests.sort_by(|a, b| a.target_group_arn().cmp(&b.target_group_arn()));
        assert_eq!(requests.len(), 2, "one DeregisterTargets per target group");
        assert_eq!(requests[0].target_group_arn(), Some(arn("nodeports").as_str()));
        assert_eq!(
            requests[0].targets(),
            [
                deregistration(INSTANCE, 30080, None),
                deregistration(INSTANCE, 30443, None)
            ]
        );
        assert_eq!(requests[1].target_group_arn(), Some(arn("pods").as_str()));
        assert_eq!(
            requests[1].targets(),
            [deregistration(SECONDARY_IP, 8080, Some("us-east-1a"))]
        );
    }
    /// The account's ELB Describe* budget is shared with every other tool. DescribeTargetHealth answers `Throttling`
    /// twice; the client retries and the sweep still finds the registration.
    #[tokio::test]
    async fn elb_throttling_is_retried_and_the_sweep_still_finds_the_target() {
        let node = instance(INSTANCE, &[eni("eni-0aaa0000000000001", &[WEB_SG], &[PRIMARY_IP])]);
        let listing = listing(vec![target_group("web", TargetTypeEnum::Instance, VPC)]);
        let web = mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_health)
            .match_requests(|r| r.target_group_arn() == Some(arn("web").as_str()))
            .sequence()
            .http_status(400, Some(throttled()))
            .times(2)
            .output(|| {
                health(&[target(
                    INSTANCE,
                    80,
                    aws_sdk_elasticloadbalancingv2::types::TargetHealthStateEnum::Healthy,
                )])
            })
            .build();
        let elb = elb_client(&[&listing, &web]);

        let located = Sweep::new(elb, 10)
            .locate(std::slice::from_ref(&node), chrono::Utc::now(), Deadline::none())
            .await
            .unwrap();

        assert_eq!(located.registrations, [instance_target("web", 80, "healthy")]);
        assert!(located.unchecked.is_empty());
        assert_eq!(web.num_calls(), 3);
    }
    /// A throttle that never clears: the group is read again after a pause, round after round, until the deadline; then
    /// it is left unchecked, with the reason, for the summary to report. The other groups are still swept.
    #[tokio::test]
    async fn a_throttle_that_never_clears_leaves_the_group_unchecked() {
        let node = instance(INSTANCE, &[eni("eni-0aaa0000000000001", &[WEB_SG], &[PRIMARY_IP])]);
        let listing = listing(vec![
            target_group("web", TargetTypeEnum::Instance, VPC),
            target_group("busy", TargetTypeEnum::Instance, VPC),
        ]);
        let web = health_of(
            "web",
            vec![target(
                INSTANCE,
                80,
                aws_sdk_elasticloadbalancingv2::types::TargetHealthStateEnum::Healthy,
            )],
        );
        let busy = mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_health)
            .match_requests(|r| r.target_group_arn() == Some(arn("busy").as_str()))
            .sequence()
            .http_status(400, Some(throttled()))
            .repeatedly()
            .build();
        let elb = elb_client(&[&listing, &web, &busy]);

        let started = std::time::Instant::now();
        let located = Sweep::new(elb, 10)
            .locate(
                std::slice::from_ref(&node),
                chrono::Utc::now(),
                Deadline::after(std::time::Duration::from_secs(2)),
            )
            .await
            .unwrap();

        assert!(
            started.elapsed() < std::time::Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(located.registrations, [instance_target("web", 80, "healthy")]);
        assert_eq!(
            located.unchecked,
            [UncheckedGroup {
                target_group_arn: arn("busy"),
                target_group_name: "busy".into(),
                vpc_id: Some(VPC.into()),
                error: "Throttling: Rate exceeded".into(),
            }]
        );
        assert_eq!(located.target_groups_checked, 2);
        let rounds = busy.num_calls() / MAX_ATTEMPTS as usize;
        assert!(
            rounds >= 2,
            "read again after the SDK's attempts were spent: {} calls",
            busy.num_calls()
        );
        assert_eq!(
            busy.num_calls() % MAX_ATTEMPTS as usize,
            0,
            "whole rounds of the SDK's attempts"
        );
    }
}
