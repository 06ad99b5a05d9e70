//! The `Summary`: what was done to one instance, what was not and why, and how to undo it.
//!
//! It is the SNS message, the invocation's return value and the log record, so its JSON shape is a contract: the
//! README documents it, and `version` changes when a field changes meaning.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::input::{InstanceId, Trigger};
use crate::instance::Instance;
use crate::locate::TargetKind;
use crate::monitoring::HostChange;
use crate::steps::lifecycle::LifecycleReport;
use crate::steps::quarantine::{EniChange, EniStatus};

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub version: u32,
    pub instance: InstanceInfo,
    pub trigger: Trigger,
    pub dry_run: bool,
    pub outcome: Outcome,
    pub started_at: DateTime<Utc>,
    /// When the instance is expected to go: the agent's `time`, or the event time plus Spot's two minutes.
    pub terminates_at: Option<DateTime<Utc>>,
    pub target_groups_checked: usize,
    /// Targets that left their group: `draining` (no new requests, in-flight ones finishing) or `deregistered`.
    pub removed: Vec<TargetChange>,
    /// Dry run only: the targets a real run would deregister.
    pub planned: Vec<TargetChange>,
    /// Targets still registered after the run, each with the reason.
    pub remaining: Vec<TargetChange>,
    pub network_interfaces: Vec<EniChange>,
    pub warnings: Vec<String>,
    pub errors: Vec<StepError>,
    pub timings_ms: Timings,
    /// What each monitoring system was asked at notice time; its failures are warnings, not cleanup errors.
    #[serde(default)]
    pub monitoring: Vec<HostChange>,
    /// The Auto Scaling lifecycle action this cleanup finished, when one started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<LifecycleReport>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstanceInfo {
    pub id: InstanceId,
    pub vpc_id: Option<String>,
    pub state: Option<String>,
    pub lifecycle: Option<String>,
    pub addresses: Vec<IpAddr>,
}

impl InstanceInfo {
    /// The instance as DescribeInstances found it.
    pub fn of(instance: &Instance) -> Self {
        InstanceInfo {
            id: instance.id.clone(),
            vpc_id: instance.vpc_id.clone(),
            state: instance.state.clone(),
            lifecycle: instance.lifecycle.clone(),
            addresses: instance.addresses().collect(),
        }
    }
}

/// One target in one target group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetChange {
    pub target_group_arn: String,
    pub target_group_name: String,
    pub kind: TargetKind,
    pub target_id: String,
    pub port: Option<i32>,
    pub availability_zone: Option<String>,
    /// `draining` or `deregistered` when removed; the state it is still in when remaining; the state it was found in
    /// when planned.
    pub state: Option<String>,
    /// Why it remains: ELB's reason code, or the error that stopped its removal.
    pub reason: Option<String>,
    pub deregistration_delay_seconds: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Every registration is gone and every ENI is quarantined.
    Cleaned,
    /// Some of it was done; `remaining` and `errors` say what was not.
    Partial,
    /// Nothing was done; `errors` says why.
    Failed,
    /// A dry run: nothing was changed; `planned` and `network_interfaces` say what would be.
    DryRun,
    /// A warning that does not force the instance out (rebalance, scheduled change) was passed on; nothing changed.
    Notified,
    /// Configured to be ignored: nothing was changed and nothing was published.
    Ignored,
    /// Another delivery of the same interruption did the work, or is doing it: nothing was changed and nothing was
    /// published. `warnings` says which.
    AlreadyHandled,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Cleaned => "cleaned",
            Outcome::Partial => "partial",
            Outcome::Failed => "failed",
            Outcome::DryRun => "dry-run",
            Outcome::Notified => "notified",
            Outcome::Ignored => "ignored",
            Outcome::AlreadyHandled => "already-handled",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    Locate,
    Deregister,
    Verify,
    Quarantine,
    Notify,
    Lifecycle,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepError {
    pub step: Step,
    pub message: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    pub describe: u64,
    /// The fast locators (the Auto Scaling group's target groups).
    pub fast_locate: u64,
    /// The full sweep.
    pub locate: u64,
    pub deregister: u64,
    pub quarantine: u64,
    pub verify: u64,
    /// From the start of the invocation until the summary was built (publishing is not included).
    pub total: u64,
}

impl Summary {
    /// Decide the outcome from what the steps recorded.
    pub fn settle_outcome(&mut self) {
        if matches!(self.outcome, Outcome::Notified | Outcome::Ignored) {
            return;
        }
        self.outcome = if self.dry_run {
            Outcome::DryRun
        } else if self.errors.is_empty() && self.remaining.is_empty() {
            Outcome::Cleaned
        } else if self.removed.is_empty()
            && !self
                .network_interfaces
                .iter()
                .any(|e| matches!(e.status, EniStatus::Quarantined | EniStatus::AlreadyQuarantined))
        {
            Outcome::Failed
        } else {
            Outcome::Partial
        };
    }

    /// True when nothing is left to do: a retry would change nothing.
    pub fn is_complete(&self) -> bool {
        matches!(
            self.outcome,
            Outcome::Cleaned | Outcome::DryRun | Outcome::Notified | Outcome::Ignored | Outcome::AlreadyHandled
        ) && self.errors.is_empty()
    }

    /// The distinct target groups in a list of targets.
    pub fn group_count(targets: &[TargetChange]) -> usize {
        let mut arns: Vec<&str> = targets.iter().map(|t| t.target_group_arn.as_str()).collect();
        arns.sort_unstable();
        arns.dedup();
        arns.len()
    }
}
