//! A CloudTrail update: put (RegisterTargets) or delete (DeregisterTargets) the items of the targets one call named,
//! each write conditional on the item not being newer than the call.

use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::aws::{CallError, bounded_all};
use crate::deadline::elapsed_ms;
use crate::input::{Quoted, TargetsCall, TargetsChange};
use crate::registration::TargetKind;
use crate::store;
use crate::table::{self, Entry, GroupInfo, TargetKey};

/// Concurrent conditional writes of one CloudTrail update.
const UPDATE_CONCURRENCY: usize = 8;

/// What one CloudTrail update did.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UpdateReport {
    pub event_id: Option<String>,
    pub call: TargetsCall,
    pub target_group_arn: String,
    pub written: usize,
    pub deleted: usize,
    /// Targets left as they are, and why.
    pub skipped: Vec<String>,
    pub ms: u64,
}

impl UpdateReport {
    /// A CloudTrail event of a call that failed: it changed no registration, so neither does the index.
    pub fn failed_call(event_id: Option<String>, call: TargetsCall, error_code: &str) -> Self {
        UpdateReport {
            event_id,
            call,
            target_group_arn: String::new(),
            written: 0,
            deleted: 0,
            skipped: vec![format!("the call failed ({error_code}) and changed no registration")],
            ms: 0,
        }
    }
}

/// The writes that failed, so that Lambda retries the event: the writes are idempotent.
#[derive(Debug, thiserror::Error)]
#[error("registration index update failed: {}", failed.iter().map(|(target, e)| format!("{target}: {e}")).collect::<Vec<_>>().join("; "))]
pub struct UpdateError {
    pub failed: Vec<(String, CallError)>,
}

impl From<CallError> for UpdateError {
    fn from(error: CallError) -> Self {
        UpdateError {
            failed: vec![("the target group".to_owned(), error)],
        }
    }
}

/// Put (RegisterTargets) or delete (DeregisterTargets) the items of the targets one call named.
///
/// Each write is conditional on the item not being newer than the call, so that events arriving out of order cannot
/// undo a later change. A write that fails raises an error, so that Lambda retries the event: the writes are
/// idempotent.
pub async fn apply(
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
    change: &TargetsChange,
) -> Result<UpdateReport, UpdateError> {
    let clock = Instant::now();
    let now = Utc::now();
    let mut report = UpdateReport {
        event_id: change.event_id.clone(),
        call: change.call,
        target_group_arn: change.target_group_arn.clone(),
        written: 0,
        deleted: 0,
        skipped: Vec::new(),
        ms: 0,
    };
    let Some(group) = group_info(elb, dynamodb, table, &change.target_group_arn).await? else {
        report
            .skipped
            .push("the target group no longer exists; the next refresh removes what the index holds for it".into());
        report.ms = elapsed_ms(clock);
        return Ok(report);
    };
    let Some(kind) = group.kind() else {
        report.skipped.push(format!(
            "{} is a {} target group, which the index does not keep",
            group.name, group.target_type
        ));
        report.ms = elapsed_ms(clock);
        return Ok(report);
    };

    let called_at = change.event_time.unwrap_or(now);
    let writes = entries(&group, kind, change, called_at, &mut report.skipped);

    let results = bounded_all(UPDATE_CONCURRENCY, writes.clone(), |entry| {
        let (dynamodb, table, call) = (dynamodb.clone(), table.to_owned(), change.call);
        async move { write_one(&dynamodb, &table, call, &entry, now).await }
    })
    .await;
    let mut errors = Vec::new();
    for (entry, result) in writes.iter().zip(results) {
        match result {
            Ok(Ok(true)) => match change.call {
                TargetsCall::RegisterTargets => report.written += 1,
                TargetsCall::DeregisterTargets => report.deleted += 1,
            },
            Ok(Ok(false)) => report
                .skipped
                .push(format!("{}: the index has newer information", entry.target_id)),
            Ok(Err(error)) => errors.push((entry.target_id.clone(), error)),
            Err(died) => errors.push((entry.target_id.clone(), CallError::local(write_name(change.call), died))),
        }
    }
    report.ms = elapsed_ms(clock);
    if errors.is_empty() {
        Ok(report)
    } else {
        Err(UpdateError { failed: errors })
    }
}

/// The items of the targets the call named, each as of the call; a target the group cannot have, or without a
/// port, goes into `skipped` with why.
fn entries(
    group: &GroupInfo,
    kind: TargetKind,
    change: &TargetsChange,
    called_at: DateTime<Utc>,
    skipped: &mut Vec<String>,
) -> Vec<Entry> {
    let mut writes = Vec::new();
    for target in &change.targets {
        let Some(key) = TargetKey::for_target(kind, group.vpc_id.as_deref(), &target.id) else {
            skipped.push(format!(
                "{} is not a target of an {} target group",
                Quoted::new(&target.id),
                group.target_type
            ));
            continue;
        };
        let Some(port) = target.port.or(group.port) else {
            skipped.push(format!("{}: no port, and the group has none", target.id));
            continue;
        };
        writes.push(Entry {
            key,
            target_id: target.id.clone(),
            target_group_arn: group.arn.clone(),
            target_group_name: group.name.clone(),
            port,
            availability_zone: target.availability_zone.clone(),
            vpc_id: group.vpc_id.clone(),
            updated_at: called_at,
        });
    }
    writes
}

/// Put or delete one registration's item, unless the item is newer than the call. False when it was newer.
async fn write_one(
    dynamodb: &aws_sdk_dynamodb::Client,
    table_name: &str,
    call: TargetsCall,
    entry: &Entry,
    now: DateTime<Utc>,
) -> Result<bool, CallError> {
    let sent = match call {
        TargetsCall::RegisterTargets => {
            let put = dynamodb.put_item().table_name(table_name);
            let sent = table::put_if_not_newer(put, entry, now).send().await;
            sent.map(|_| ()).map_err(|e| CallError::new("PutItem", &e))
        }
        TargetsCall::DeregisterTargets => {
            let delete = dynamodb.delete_item().table_name(table_name);
            let sent = table::delete_if_not_newer(delete, entry).send().await;
            sent.map(|_| ()).map_err(|e| CallError::new("DeleteItem", &e))
        }
    };
    table::conditional(sent)
}

fn write_name(call: TargetsCall) -> &'static str {
    match call {
        TargetsCall::RegisterTargets => "PutItem",
        TargetsCall::DeregisterTargets => "DeleteItem",
    }
}

/// The group's name, type, VPC and port: from the index when it has them (they never change), else one
/// DescribeTargetGroups by ARN, remembered for next time. None when the group no longer exists.
async fn group_info(
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
    arn: &str,
) -> Result<Option<GroupInfo>, UpdateError> {
    if let Some(group) = store::get_group(dynamodb, table, arn).await? {
        return Ok(Some(group));
    }
    let described = elb.describe_target_groups().target_group_arns(arn).send().await;
    let described = match described.map_err(|e| CallError::new("DescribeTargetGroups", &e)) {
        Ok(described) => described,
        Err(e) if e.is("TargetGroupNotFound") => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let Some(group) = described
        .target_groups()
        .iter()
        .filter(|g| g.target_group_arn() == Some(arn))
        .find_map(GroupInfo::from_sdk)
    else {
        return Ok(None);
    };
    // Remembering is an optimisation: if it fails, the next event describes the group again.
    let now = Utc::now();
    if let Err(e) = dynamodb
        .put_item()
        .table_name(table)
        .set_item(Some(group.to_item(now, now)))
        .send()
        .await
    {
        let error = CallError::new("PutItem", &e);
        tracing::warn!(%error, "could not remember the target group in the index");
    }
    Ok(Some(group))
}
