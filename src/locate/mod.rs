//! Where is an instance registered? The seam behind which every way of answering sits.
//!
//! ELB has no "which target groups is instance X in" call, so answering is the expensive part of a cleanup. The full
//! sweep is the first implementation; faster ones (the Auto Scaling group's target groups, a registration index) will
//! sit behind the same trait and combine by priority.

pub mod sweep;

use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

use crate::input::InstanceId;
use crate::instance::Instance;

pub use sweep::Sweep;

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

/// A target group that could not be checked, so registrations in it may have been missed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UncheckedGroup {
    pub target_group_arn: String,
    pub target_group_name: String,
    pub vpc_id: Option<String>,
    pub error: String,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Located {
    pub registrations: Vec<TargetRegistration>,
    pub unchecked: Vec<UncheckedGroup>,
    /// How many target groups were looked into.
    pub target_groups_checked: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum LocateError {
    #[error("DescribeTargetGroups failed: {0}")]
    ListTargetGroups(String),
}

pub type LocateFuture<'a> = Pin<Box<dyn Future<Output = Result<Located, LocateError>> + Send + 'a>>;

/// Finds every registration of the given instances. One call covers a whole batch, so that each target group is
/// described once however many instances are being cleaned.
pub trait Locator: Send + Sync {
    fn locate<'a>(&'a self, instances: &'a [Instance]) -> LocateFuture<'a>;
}
