//! What a CloudTrail event asks of the registration index: a RegisterTargets or DeregisterTargets call to apply, or a
//! failed one that changed nothing.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The ELB call CloudTrail reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum TargetsCall {
    RegisterTargets,
    DeregisterTargets,
}

impl TargetsCall {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetsCall::RegisterTargets => "RegisterTargets",
            TargetsCall::DeregisterTargets => "DeregisterTargets",
        }
    }
}

/// One target as the call named it: ELB fills in the group's port when `port` is absent.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangedTarget {
    pub id: String,
    pub port: Option<i32>,
    pub availability_zone: Option<String>,
}

/// A successful RegisterTargets or DeregisterTargets call.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetsChange {
    pub call: TargetsCall,
    pub target_group_arn: String,
    pub targets: Vec<ChangedTarget>,
    pub event_id: Option<String>,
    /// When the call was made (CloudTrail's `eventTime`, else the event's `time`).
    pub event_time: Option<DateTime<Utc>>,
}

/// What a CloudTrail event asks of the index.
#[derive(Clone, Debug, PartialEq)]
pub enum IndexUpdate {
    Apply(TargetsChange),
    /// The call failed (CloudTrail's `errorCode`): it changed no registration, so the index stays as it is.
    FailedCall {
        call: TargetsCall,
        error_code: String,
        event_id: Option<String>,
    },
}
