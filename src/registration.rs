//! Where an instance is registered: one (target group, target id, port, zone) per registration, as the locators find
//! them, and as a cleanup records the ones it took out.

use aws_sdk_elasticloadbalancingv2::types::TargetHealthStateEnum;
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
    /// The target's health state when it was found.
    pub state: Option<TargetState>,
}

/// A target's state: ELB's health state (`healthy`, `initial`, `draining`, `unused`, ...) as found or read, or
/// `deregistered` once a read no longer lists it. Stored and published as ELB's word.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum TargetState {
    Health(TargetHealthStateEnum),
    Deregistered,
}

impl TargetState {
    /// The group sends it no new requests; in-flight ones may run until the deregistration delay ends.
    pub const DRAINING: TargetState = TargetState::Health(TargetHealthStateEnum::Draining);

    /// ELB's word, as stored and published.
    pub fn as_str(&self) -> &str {
        match self {
            TargetState::Health(state) => state.as_str(),
            TargetState::Deregistered => "deregistered",
        }
    }
}

impl From<&str> for TargetState {
    fn from(word: &str) -> Self {
        match word {
            "deregistered" => TargetState::Deregistered,
            word => TargetState::Health(TargetHealthStateEnum::from(word)),
        }
    }
}

impl From<String> for TargetState {
    fn from(word: String) -> Self {
        TargetState::from(word.as_str())
    }
}

impl From<TargetState> for String {
    fn from(state: TargetState) -> Self {
        state.as_str().to_owned()
    }
}

/// Which registration it is, whichever locator found it: a target (id, port) in a group, as ELB tells them apart.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegistrationKey {
    pub target_group_arn: String,
    pub target_id: String,
    pub port: Option<i32>,
}

impl TargetRegistration {
    pub fn key(&self) -> RegistrationKey {
        RegistrationKey {
            target_group_arn: self.target_group_arn.clone(),
            target_id: self.target_id.clone(),
            port: self.port,
        }
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
