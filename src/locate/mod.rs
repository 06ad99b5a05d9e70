//! Where is an instance registered? The seam behind which every way of answering sits.
//!
//! ELB has no "which target groups is instance X in" call, so answering is the expensive part of a cleanup. The full
//! sweep (`sweep.rs`) always runs; faster ones sit behind the same trait and are asked first, by priority: the
//! registration index (`index.rs`) and the Auto Scaling group's target groups (`auto_scaling.rs`).

pub mod auto_scaling;
pub mod index;
pub mod shared;
pub mod sweep;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, Utc};

use crate::aws::CallError;
use crate::deadline::Deadline;
use crate::instance::Instance;
pub use crate::registration::{TargetKind, TargetRegistration, UncheckedGroup};

pub use auto_scaling::AutoScaling;
pub use index::Index;
pub use shared::SharedSweep;
pub use sweep::Sweep;
pub use sweep::found::Found;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Located {
    pub registrations: Vec<TargetRegistration>,
    pub unchecked: Vec<UncheckedGroup>,
    /// How many target groups were looked into.
    pub target_groups_checked: usize,
    /// The ARNs of the target groups whose full target list was read: a registration absent from `registrations` is
    /// not in those groups.
    pub checked_groups: BTreeSet<String>,
    /// When each group was read, for groups another cleanup read (a shared sweep): its view shows this run's
    /// deregistrations only if it was read after them. Empty for what this run read itself, after them.
    pub read_at: HashMap<String, DateTime<Utc>>,
    /// How these registrations were found, when the locator's name does not say: a shared sweep's `sweep` when this
    /// run swept, `shared-sweep` when another cleanup did.
    pub found_by: Option<&'static str>,
}

#[derive(Debug, thiserror::Error)]
pub enum LocateError {
    #[error(transparent)]
    Call(#[from] CallError),
    #[error("registration index lookup failed: {failed} of {lookups} lookups failed, first: {first}")]
    Index {
        failed: usize,
        lookups: usize,
        first: CallError,
    },
}

pub type LocateFuture<'a> = Pin<Box<dyn Future<Output = Result<Located, LocateError>> + Send + 'a>>;

/// Finds registrations of the given instances. One call covers a whole batch, so that each target group is described
/// once however many instances are being cleaned. A locator starts no new call after `deadline`; what it could not
/// look at by then it reports as unchecked.
pub trait Locator: Send + Sync {
    /// A short name for logs and summaries (`sweep`, `auto-scaling`, ...).
    fn name(&self) -> &'static str;
    /// `since`: a view of a group read after it is as good as one read now. The cleanup passes the moment its sweep
    /// starts: after every notice of its batch, and after its fast path's deregistrations.
    fn locate<'a>(&'a self, instances: &'a [Instance], since: DateTime<Utc>, deadline: Deadline) -> LocateFuture<'a>;

    /// As `locate`, and hand each registration to `found` as soon as it is known, so that it can leave its group
    /// before the whole answer is in. A locator that reads no group itself hands its answer over when it has it.
    fn locate_handing<'a>(
        &'a self,
        instances: &'a [Instance],
        since: DateTime<Utc>,
        deadline: Deadline,
        found: Found,
    ) -> LocateFuture<'a> {
        Box::pin(async move {
            let located = self.locate(instances, since, deadline).await?;
            found.registrations(located.registrations.clone());
            Ok(located)
        })
    }
}
