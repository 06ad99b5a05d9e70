//! Where is an instance registered? The seam behind which every way of answering sits.
//!
//! ELB has no "which target groups is instance X in" call, so answering is the expensive part of a cleanup. The full
//! sweep (`sweep.rs`) always runs; faster ones sit behind the same trait and are asked first, by priority: the
//! registration index (`index.rs`) and the Auto Scaling group's target groups (`auto_scaling.rs`).

pub mod auto_scaling;
pub mod index;
pub mod sweep;

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::input::InstanceId;
use crate::instance::Instance;

pub use auto_scaling::AutoScaling;
pub use index::Index;
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
    /// The ARNs of the target groups whose full target list was read: a registration absent from `registrations` is
    /// not in those groups.
    pub checked_groups: BTreeSet<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LocateError {
    #[error("DescribeTargetGroups failed: {0}")]
    ListTargetGroups(String),
    #[error("DescribeAutoScalingGroups failed: {0}")]
    AutoScalingGroups(String),
    #[error("registration index lookup failed: {0}")]
    Index(String),
}

pub type LocateFuture<'a> = Pin<Box<dyn Future<Output = Result<Located, LocateError>> + Send + 'a>>;

/// Finds registrations of the given instances. One call covers a whole batch, so that each target group is described
/// once however many instances are being cleaned. A locator starts no new call after `deadline`; what it could not
/// look at by then it reports as unchecked.
pub trait Locator: Send + Sync {
    /// A short name for logs and summaries (`sweep`, `auto-scaling`, ...).
    fn name(&self) -> &'static str;
    fn locate<'a>(&'a self, instances: &'a [Instance], deadline: Option<Instant>) -> LocateFuture<'a>;
}

/// Whether the deadline, if any, has passed.
pub fn past(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}
