//! The registration index: which target groups each instance id and each (VPC, address) is registered in, kept in
//! DynamoDB so that a cleanup can deregister known registrations before it spends any of the ELB Describe* budget.
//!
//! Two ways keep it fresh. `refresh`, on an EventBridge schedule, sweeps every instance and IP target group of the
//! region at low concurrency and writes what changed. `apply` takes one RegisterTargets or DeregisterTargets call that
//! CloudTrail reported through EventBridge, so the index follows within seconds. Neither is trusted blindly: a
//! cleanup's sweep still runs, finds what the index missed and checks what it knew. The item layout is `table`'s.

mod apply;
mod refresh;

pub use apply::{UpdateError, UpdateReport, apply};
pub use refresh::{REFRESH_READS, RefreshReport, refresh};

/// Why an index event was not handled.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// There is no index here; nothing was touched.
    #[error("rejected input, nothing was changed: REGISTRATION_INDEX_TABLE is not set, so {0} is not handled")]
    NotConfigured(&'static str),
    #[error(transparent)]
    Update(#[from] UpdateError),
}
