//! Where is an instance registered? The seam behind which the cheap ways of answering sit.
//!
//! ELB has no "which target groups is instance X in" call, so answering is the expensive part of a cleanup. The fast
//! locators sit behind one trait and are asked first, by priority: the registration index (`index.rs`) and the Auto
//! Scaling group's target groups (`auto_scaling.rs`). The full sweep's parts (`sweep`) are the safety net, which the
//! wave drives for every instance at once.

pub mod auto_scaling;
pub mod index;
pub mod sweep;

use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, Utc};

use crate::aws::CallError;
use crate::deadline::Deadline;
use crate::instance::Instance;
pub use crate::registration::{TargetKind, TargetRegistration, UncheckedGroup};

pub use auto_scaling::AutoScaling;
pub use index::Index;

/// What a fast locator knows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Located {
    pub registrations: Vec<TargetRegistration>,
    /// Groups it could not look into: the sweep still reads them.
    pub unchecked: Vec<UncheckedGroup>,
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

/// Finds registrations of the given instances. One call covers a whole batch. A locator starts no new call after
/// `deadline`.
pub trait Locator: Send + Sync {
    /// A short name for logs and summaries (`index`, `auto-scaling`).
    fn name(&self) -> &'static str;
    /// `since`: when the instances' notices came.
    fn locate<'a>(&'a self, instances: &'a [Instance], since: DateTime<Utc>, deadline: Deadline) -> LocateFuture<'a>;
}
