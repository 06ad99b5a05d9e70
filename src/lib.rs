//! spot-cleanup: when a Spot instance is about to go, take it out of every ELBv2 target group, wall off its ENIs, and
//! tell people what was done.
//!
//! # Layout
//!
//! One interruption, as the code runs it (each layer imports only from the layers below it; `tests/it/layers.rs`
//! holds that):
//!
//! ```text
//! handler      parse the payload (crate spot-cleanup-input) -> route each part to one workflow -> shape the answer
//!   app        the composition root: App, the clients of each place (region, account), the warm-up
//!     cleanup  run(): admit -> the wave, while the ENIs are quarantined -> assemble the summaries
//!                     -> finish (record, monitoring, lifecycle, publish, release claims)
//!     restore  the undo workflow;  index  refresh (schedule) and apply (CloudTrail)
//!       config     the environment, read once, into each concern's settings type
//!       wave       the one deregistration path, shared by the cleanups running at the same time: one driver finds,
//!                  deregisters (one call per group for all of them) and checks, under the account's ELB budget
//!       trust      what is refused before anything changes (scope, freshness, identity): pure, no I/O
//!       locate     where an instance is registered: index, Auto Scaling group (one trait); the full sweep's parts
//!       steps      the AWS calls, one concern each: describe, claim, deregister, verify, quarantine, lifecycle, ...
//!       notify     everything sent to SNS, through one Publisher
//!       monitoring Datadog, Mackerel, webhook at notice time;  telemetry  step logs and EMF metrics
//!       store      the DynamoDB table's calls that are not one item's
//!         summary, changes, registration, instance, table, lease, deadline     plain data
//!           aws    clients, retry modes, the typed CallError, the ELB and EC2 budgets, bounded concurrency
//! ```

pub(crate) mod app;
pub(crate) mod aws;
pub mod changes;
pub(crate) mod cleanup;
pub mod config;
pub(crate) mod deadline;
pub(crate) mod handler;
pub(crate) mod index;
pub(crate) mod instance;
pub(crate) mod lease;
pub(crate) mod locate;
pub mod monitoring;
pub(crate) mod notify;
pub mod registration;
pub(crate) mod restore;
pub(crate) mod steps;
pub(crate) mod store;
pub mod summary;
pub(crate) mod table;
pub(crate) mod telemetry;
#[cfg(test)]
mod testing;
pub(crate) mod trust;
pub(crate) mod wave;

pub use app::warm::{WarmUp, warm_up};
pub use app::{App, InitError};
pub use aws::Clients;
pub use config::{Config, ConfigError};
pub use handler::{HandlerError, handle};
pub use notify::{NotifyFormat, subject};
pub use spot_cleanup_input as input;
pub use summary::Summary;
pub use telemetry::logging::init as init_logging;
pub use telemetry::metrics;

/// The tags the function writes on instances and ENIs: its records and its claims.
pub mod tags {
    pub use crate::steps::claim::{CLAIM_TAG_PREFIX, DONE_TAG};
    pub use crate::steps::records::ORIGINAL_GROUPS_TAG;
    pub use crate::steps::records::left_targets::{
        LEFT_TARGETS_EPISODE_TAG, LEFT_TARGETS_MAC_TAG, LEFT_TARGETS_PREFIX_TAG, LEFT_TARGETS_TAG,
    };
}
