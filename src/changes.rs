//! What each step reports about one instance: its ENIs' quarantine, its lifecycle action, the monitoring systems
//! told, the targets a restore put back. Plain data, read by the summaries and the messages.

use serde::{Deserialize, Serialize};

use crate::registration::LeftTarget;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EniStatus {
    Quarantined,
    /// Already on only the quarantine group; left alone.
    AlreadyQuarantined,
    /// Dry run: this is what would happen.
    WouldQuarantine,
    /// Nothing was changed on this ENI; see `error`.
    Failed,
    /// The ENI no longer exists (its instance is gone): there is nothing to wall off.
    Gone,
}

/// What happened to one ENI, and how to undo it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EniChange {
    pub network_interface_id: String,
    pub vpc_id: Option<String>,
    pub device_index: Option<i32>,
    pub status: EniStatus,
    /// The groups it had when this run found it.
    pub groups_before: Vec<String>,
    /// The groups it has now (or would have, in a dry run).
    pub groups_after: Vec<String>,
    /// The groups a restore puts back: `groups_before`, or the recorded tag for an ENI quarantined earlier. None when
    /// the record found was not this function's own.
    pub original_groups: Option<Vec<String>>,
    pub error: Option<String>,
    /// A record on this ENI that was not this function's: what was found and done. A security alert says it too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Done, with a caveat for the summary's warnings (a record KMS could not sign).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// What happened to the lifecycle action, for the summary.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LifecycleReport {
    pub hook_name: String,
    pub group_name: String,
    /// CONTINUE once completed; None when it was not completed (see the summary's errors or warnings).
    pub result: Option<String>,
    pub heartbeats: u32,
    pub waited_ms: u64,
    /// Targets still draining when the wait stopped (at the deadline).
    pub still_draining: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum System {
    Datadog,
    Mackerel,
    Webhook,
}

/// What one monitoring system was asked to do for one host, and whether it did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostChange {
    pub system: System,
    pub host: String,
    /// `muted`, `maintenance`, `retired` or `notified`.
    pub action: String,
    pub ok: bool,
    pub error: Option<String>,
}

impl HostChange {
    pub fn new<E: std::fmt::Display>(system: System, host: &str, action: &str, result: Result<(), E>) -> Self {
        Self {
            system,
            host: host.to_owned(),
            action: action.to_owned(),
            ok: result.is_ok(),
            error: result.err().map(|e| e.to_string()),
        }
    }
}

/// What the restore did with one recorded target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetRestore {
    #[serde(flatten)]
    pub target: LeftTarget,
    pub registered: bool,
    /// Why it was not registered: the address is no longer the instance's, the call failed, or a dry run.
    pub reason: Option<String>,
}
