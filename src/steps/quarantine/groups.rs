//! The quarantine security groups: their ids as configured, which VPC each is in, and the last lookup kept for a
//! while so that an invocation need not look again.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::aws::CallError;

/// A security group id: `sg-` and 8 or 17 lowercase hex digits.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SecurityGroupId(String);

impl SecurityGroupId {
    pub fn parse(value: &str) -> Option<Self> {
        let hex = value.strip_prefix("sg-")?;
        let ok = matches!(hex.len(), 8 | 17) && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        ok.then(|| Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SecurityGroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Quarantine groups by VPC, resolved from the configured ids.
pub type QuarantineGroups = HashMap<String, String>;

/// How long a lookup of the quarantine groups is trusted. Init looks them up so that the first invocation need not;
/// after this a warm container looks again, so a replaced group is picked up.
pub const QUARANTINE_GROUPS_TTL: Duration = Duration::from_secs(300);

/// The last successful lookup of the quarantine groups. A failed lookup is not kept.
#[derive(Debug, Default)]
pub struct QuarantineGroupCache {
    configured: Vec<SecurityGroupId>,
    resolved: Mutex<Option<(Instant, Arc<QuarantineGroups>)>>,
}

impl QuarantineGroupCache {
    pub fn new(configured: Vec<SecurityGroupId>) -> Self {
        Self {
            configured,
            resolved: Mutex::new(None),
        }
    }

    /// The groups by VPC: the kept lookup while it is fresh, else a new one.
    pub async fn get(&self, ec2: &aws_sdk_ec2::Client) -> Result<Arc<QuarantineGroups>, ResolveError> {
        let fresh = |kept: &Option<(Instant, Arc<QuarantineGroups>)>| {
            kept.as_ref()
                .filter(|(at, _)| at.elapsed() < QUARANTINE_GROUPS_TTL)
                .map(|(_, groups)| Arc::clone(groups))
        };
        if let Some(groups) = fresh(&self.resolved.lock().expect("never poisoned: no panics under the lock")) {
            return Ok(groups);
        }
        let groups = Arc::new(resolve_quarantine_groups(ec2, &self.configured).await?);
        *self.resolved.lock().expect("never poisoned: no panics under the lock") =
            Some((Instant::now(), Arc::clone(&groups)));
        Ok(groups)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("could not look up the quarantine security groups {ids}: {error}")]
pub struct ResolveError {
    pub ids: String,
    pub error: CallError,
}

/// Find the VPC of each configured quarantine group. Groups of other regions or accounts (one deployment can serve
/// several) are not found here: EC2 then fails the whole call, so it is asked again with a filter, which skips them.
pub async fn resolve_quarantine_groups(
    ec2: &aws_sdk_ec2::Client,
    configured: &[SecurityGroupId],
) -> Result<QuarantineGroups, ResolveError> {
    let ids: Vec<String> = configured.iter().map(|g| g.as_str().to_owned()).collect();
    let failed = |e| ResolveError {
        ids: ids.join(","),
        error: CallError::new("DescribeSecurityGroups", &e),
    };
    let output = match ec2
        .describe_security_groups()
        .set_group_ids(Some(ids.clone()))
        .send()
        .await
        .map_err(failed)
    {
        Ok(output) => output,
        Err(e) if e.error.is("InvalidGroup.NotFound") => {
            let filter = aws_sdk_ec2::types::Filter::builder()
                .name("group-id")
                .set_values(Some(ids.clone()))
                .build();
            ec2.describe_security_groups()
                .filters(filter)
                .send()
                .await
                .map_err(failed)?
        }
        Err(e) => return Err(e),
    };
    Ok(output
        .security_groups()
        .iter()
        .filter_map(|g| Some((g.vpc_id()?.to_owned(), g.group_id()?.to_owned())))
        .collect())
}
