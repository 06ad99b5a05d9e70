//! Where an instance is registered: one (target group, target id, port, zone) per registration, as the locators find
//! them, and as a cleanup records the ones it took out.

use serde::{Deserialize, Serialize};

use crate::input::InstanceId;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    Instance,
    Ip,
}

/// One registration of one instance: an (id, port, zone) in one target group.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TargetRegistration {
    pub target_group_arn: String,
    pub target_group_name: String,
    pub instance_id: InstanceId,
    pub kind: TargetKind,
    /// The instance id for instance targets, one of its addresses for IP targets.
    pub target_id: String,
    pub port: Option<i32>,
    pub availability_zone: Option<String>,
    /// The target's health state when it was found (`healthy`, `initial`, `draining`, ...).
    pub state: Option<String>,
}

/// The states of a target's leaving its group, the ones the function acts on, by ELB's words for them: as found in
/// a health state, and as a summary reports a target removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetState {
    /// The group sends it no new requests; in-flight ones may run until the deregistration delay ends.
    Draining,
    /// Registered in a group no load balancer uses: nothing reaches it, and deregistering it changes nothing.
    Unused,
    /// Gone from the group.
    Deregistered,
}

impl TargetState {
    /// ELB's word, as stored and published.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetState::Draining => "draining",
            TargetState::Unused => "unused",
            TargetState::Deregistered => "deregistered",
        }
    }

    /// The leaving state a health state names; None for the others (`healthy`, `initial`, ...).
    pub fn parse(state: &str) -> Option<Self> {
        [TargetState::Draining, TargetState::Unused, TargetState::Deregistered]
            .into_iter()
            .find(|known| known.as_str() == state)
    }

    /// Whether `state` is this one.
    pub fn is(self, state: Option<&str>) -> bool {
        state == Some(self.as_str())
    }
}

/// A target group that could not be checked, so registrations in it may have been missed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UncheckedGroup {
    pub target_group_arn: String,
    pub target_group_name: String,
    pub vpc_id: Option<String>,
    pub error: String,
}

/// One target the cleanup took out of its group, as it was registered.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LeftTarget {
    pub target_group_arn: String,
    pub target_id: String,
    pub port: Option<i32>,
    pub availability_zone: Option<String>,
}
