//! The full sweep's parts: which target groups could hold the instances, reading each one's targets (`read`), and
//! which of the targets read are the instances'. ELB has no "which target groups is instance X in" call, so this is
//! the safety net that finds whatever the fast locators did not know; the wave drives it.

pub mod read;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use super::{TargetKind, TargetRegistration};
use crate::input::InstanceId;
use crate::instance::Instance;
use crate::table::GroupInfo;
use read::{GroupAnswer, GroupRead};

pub use read::list_target_groups;

/// What a target must look like to belong to one of the instances.
#[derive(Debug)]
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

    /// Whether a group of this VPC could hold one of the instances.
    pub fn covers(&self, group: &GroupInfo) -> bool {
        self.any_vpc || group.vpc_id.as_ref().is_some_and(|v| self.vpcs.contains(v))
    }

    /// The instances' registrations in a group as read; none in a group that could not be read.
    pub fn registrations(&self, read: &GroupRead) -> Vec<TargetRegistration> {
        let (group, GroupAnswer::Targets(seen)) = (&read.group, &read.answer) else {
            return Vec::new();
        };
        let Some(kind) = group.kind() else {
            return Vec::new();
        };
        let mut found: Vec<TargetRegistration> = seen
            .iter()
            .filter_map(|target| {
                let owner = self.owner(kind, group.vpc_id.as_deref(), &target.id)?;
                Some(TargetRegistration {
                    target_group_arn: group.arn.clone(),
                    target_group_name: group.name.clone(),
                    instance_id: owner,
                    kind,
                    target_id: target.id.clone(),
                    port: target.port,
                    availability_zone: target.zone.clone(),
                    state: target.state.clone(),
                })
            })
            .collect();
        found.sort();
        found
    }
}
