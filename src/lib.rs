//! spot-cleanup: when a Spot instance is about to go, take it out of every ELBv2 target group, wall off its ENIs, and
//! tell people what was done.
//!
//! Data flows one way: `input` -> `instance` (describe) -> `locate` -> `steps` -> `summary`, wired by `cleanup`, with
//! `handler` shaping the Lambda answer. `index` keeps the optional registration index that `locate` reads first.
//! `agent` is the node agent (`spot-agent`) that invokes the function from a Spot node.

pub mod agent;
pub mod aws_error;
pub mod bounded;
pub mod claim;
pub mod cleanup;
pub mod clients;
pub mod config;
pub mod dispatch;
pub mod freshness;
pub mod guard;
pub mod handler;
pub mod identity;
pub mod index;
pub mod input;
pub mod instance;
pub mod locate;
pub mod logging;
pub mod metrics;
pub mod monitoring;
pub mod pace;
pub mod places;
pub mod restore;
pub mod scope;
pub mod steplog;
pub mod steps;
pub mod summary;
pub mod warm;

pub use cleanup::{App, Report, clean_up};
pub use clients::Clients;
pub use config::Config;
pub use handler::{HandlerError, handle};
pub use input::{InstanceId, Request, Trigger};
pub use summary::Summary;
