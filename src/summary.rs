//! The two summaries a run publishes: the cleanup's `Summary` (what was done to one instance, what was not and why,
//! and how to undo it) and the `RestoreSummary`.
//!
//! Each is the SNS message, the invocation's return value and the log record, so its JSON shape is a contract: the
//! docs describe it, and `version` changes when a field changes meaning.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::changes::{EniChange, EniStatus, HostChange, LifecycleReport, TargetRestore};
use crate::input::{InstanceId, Trigger};
use crate::instance::Instance;
use crate::registration::{LeftTarget, TargetKind, TargetState};

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
    /// Whose sweep checked the groups: `sweep` (this run's own) or `shared-sweep` (one run for several cleanups at
    /// once, by another of them). Absent when no sweep ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swept_by: Option<String>,
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
    /// An instance known by its id alone: nothing was described.
    pub fn id_only(id: InstanceId) -> Self {
        InstanceInfo {
            id,
            vpc_id: None,
            state: None,
            lifecycle: None,
            addresses: Vec::new(),
        }
    }

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
    pub state: Option<TargetState>,
    /// Why it remains: ELB's reason code, or the error that stopped its removal.
    pub reason: Option<String>,
    pub deregistration_delay_seconds: Option<u32>,
    /// How it was found: `index` (the registration index), `auto-scaling` (its Auto Scaling group's target groups),
    /// `sweep` (this run's own sweep) or `shared-sweep` (a sweep another cleanup ran at the same time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub found_by: Option<String>,
}

impl From<&TargetChange> for LeftTarget {
    fn from(change: &TargetChange) -> Self {
        LeftTarget {
            target_group_arn: change.target_group_arn.clone(),
            target_id: change.target_id.clone(),
            port: change.port,
            availability_zone: change.availability_zone.clone(),
        }
    }
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
    /// A summary of nothing done yet, starting from `outcome`: the steps fill in the rest.
    pub fn new(instance: InstanceInfo, trigger: Trigger, outcome: Outcome, started_at: DateTime<Utc>) -> Self {
        Summary {
            version: SCHEMA_VERSION,
            instance,
            terminates_at: trigger.terminates_at(started_at),
            trigger,
            dry_run: false,
            outcome,
            started_at,
            target_groups_checked: 0,
            swept_by: None,
            removed: Vec::new(),
            planned: Vec::new(),
            remaining: Vec::new(),
            network_interfaces: Vec::new(),
            warnings: Vec::new(),
            errors: Vec::new(),
            timings_ms: Timings::default(),
            monitoring: Vec::new(),
            lifecycle: None,
        }
    }

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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestoreOutcome {
    /// Every recorded ENI is back on its groups and its record is gone.
    Restored,
    /// No ENI of the instance carries a record: nothing to undo.
    NothingToRestore,
    /// Some ENIs could not be restored; see `errors`. Their records are kept for a retry.
    Partial,
    Failed,
    /// A dry run (`DRY_RUN`): `network_interfaces` (and `targets`) say what a restore would put back; nothing changed.
    Planned,
}

impl RestoreOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RestoreOutcome::Restored => "restored",
            RestoreOutcome::NothingToRestore => "nothing-to-restore",
            RestoreOutcome::Partial => "partial",
            RestoreOutcome::Failed => "failed",
            RestoreOutcome::Planned => "planned",
        }
    }
}

/// One ENI put back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EniRestore {
    pub network_interface_id: String,
    pub groups_before: Vec<String>,
    /// The recorded original groups, now applied (or that were to be).
    pub groups_after: Vec<String>,
    pub restored: bool,
    pub error: Option<String>,
}

/// What a restore did: the SNS message and the invocation's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RestoreSummary {
    pub version: u32,
    /// Always `restore`, so subscribers can tell it from a cleanup summary.
    pub kind: String,
    pub instance_id: InstanceId,
    pub trigger: Trigger,
    pub outcome: RestoreOutcome,
    pub network_interfaces: Vec<EniRestore>,
    /// With `REREGISTER_ON_RESTORE`: the targets it left at its cleanup, and whether each is registered again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<TargetRestore>,
    pub errors: Vec<String>,
    pub at: DateTime<Utc>,
}

impl RestoreSummary {
    /// A summary of nothing done yet, starting from `outcome`.
    pub fn new(instance_id: &InstanceId, trigger: &Trigger, outcome: RestoreOutcome) -> Self {
        RestoreSummary {
            version: 1,
            kind: "restore".into(),
            instance_id: instance_id.clone(),
            trigger: trigger.clone(),
            outcome,
            network_interfaces: Vec::new(),
            targets: Vec::new(),
            errors: Vec::new(),
            at: Utc::now(),
        }
    }

    pub fn is_complete(&self) -> bool {
        matches!(
            self.outcome,
            RestoreOutcome::Restored | RestoreOutcome::NothingToRestore | RestoreOutcome::Planned
        )
    }

    /// The outcome from what was done and what failed, ENIs and targets alike.
    pub fn settle_outcome(&mut self) {
        let recorded = !self.network_interfaces.is_empty() || !self.targets.is_empty();
        let done = self.network_interfaces.iter().any(|e| e.restored) || self.targets.iter().any(|t| t.registered);
        self.outcome = match (self.errors.is_empty(), recorded, done) {
            (true, false, _) => RestoreOutcome::NothingToRestore,
            (true, true, _) => RestoreOutcome::Restored,
            (false, _, true) => RestoreOutcome::Partial,
            (false, _, false) => RestoreOutcome::Failed,
        };
    }
}
