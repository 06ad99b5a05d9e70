//! The registration index: which target groups each instance id and each (VPC, address) is registered in, kept in
//! DynamoDB so that a cleanup can deregister known registrations before it spends any of the ELB Describe* budget.
//!
//! Two ways keep it fresh. `refresh`, on an EventBridge schedule, sweeps every instance and IP target group of the
//! region at low concurrency and writes what changed. `apply` takes one RegisterTargets or DeregisterTargets call that
//! CloudTrail reported through EventBridge, so the index follows within seconds. Neither is trusted blindly: a
//! cleanup's sweep still runs, finds what the index missed and checks what it knew.

pub mod store;

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::aws_error;
use crate::bounded::bounded_all;
use crate::input::{Quoted, TargetsCall, TargetsChange};
use crate::locate::past;
use crate::pace::Pace;
use store::{Entry, GroupInfo, Item, TargetKey};

/// Concurrent conditional writes of one CloudTrail update.
const UPDATE_CONCURRENCY: usize = 8;

/// What a refresh did: the invocation's answer and its log line.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RefreshReport {
    pub event_id: Option<String>,
    /// Instance and IP target groups in the region.
    pub target_groups: usize,
    /// Of those, how many were described (their registrations are now exactly what the index holds).
    pub target_groups_described: usize,
    /// Registrations found.
    pub registrations: usize,
    /// Items put: new or changed, or renewed before their TTL runs out.
    pub written: usize,
    /// Items already right.
    pub unchanged: usize,
    /// Items of registrations that are gone, or of target groups that are gone.
    pub deleted: usize,
    pub errors: Vec<String>,
    pub ms: u64,
}

/// Sweep every instance and IP target group of the region and make the table say what the sweep saw.
///
/// At most `concurrency` DescribeTargetHealth calls are in flight: the refresh is background work that must leave
/// the account's shared Describe* budget to everyone else. No call starts after `deadline`; groups left undescribed
/// keep their items. Failures are reported, never raised: the next scheduled refresh is the retry, where Lambda's
/// own retries would spend the budget again at once.
pub async fn refresh(
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
    concurrency: usize,
    pace: &Pace,
    deadline: Option<Instant>,
) -> RefreshReport {
    let clock = Instant::now();
    let started = Utc::now();
    let mut report = RefreshReport::default();

    let listed = match list_target_groups(elb).await {
        Ok(listed) => listed,
        Err(error) => {
            report.errors.push(error);
            report.ms = elapsed_ms(clock);
            return report;
        }
    };
    // What it holds now. Without that, write everything and delete nothing.
    let existing: BTreeMap<(String, String), Item> = match store::scan(dynamodb, table).await {
        Ok(items) => items
            .into_iter()
            // Delivery markers (`claim#...`) share the table; they are not the index's to keep or delete.
            .filter(|item| !store::key_of(item).is_some_and(|(pk, _)| pk.starts_with(crate::claim::CLAIM_PK_PREFIX)))
            .filter_map(|item| Some((store::key_of(&item)?, item)))
            .collect(),
        Err(error) => {
            report.errors.push(error);
            BTreeMap::new()
        }
    };
    // Least recently refreshed first: when a large fleet cannot be described before the deadline, the next refresh
    // goes on where this one stopped instead of describing the same groups again.
    let refreshed_at = |group: &GroupInfo| {
        existing
            .get(&(group.pk(), "group".to_owned()))
            .and_then(|item| store::updated_at(item).ok())
    };
    let mut indexed: Vec<GroupInfo> = listed.iter().filter(|g| g.kind().is_some()).cloned().collect();
    indexed.sort_by_key(|group| refreshed_at(group));
    report.target_groups = indexed.len();
    let mut listed_arns: HashSet<String> = listed.iter().map(|g| g.arn.clone()).collect();

    let described = bounded_all(concurrency, indexed.clone(), |group| {
        let request = elb.describe_target_health().target_group_arn(&group.arn).send();
        let pace = pace.clone();
        async move {
            pace.acquire().await;
            if past(deadline) { None } else { Some(request.await) }
        }
    })
    .await;

    // What the table should hold, by (pk, sk): each indexed group's own item, and each registration.
    let mut wanted: BTreeMap<(String, String), Item> = BTreeMap::new();
    for group in &indexed {
        let item = group.to_item(started, started);
        wanted.insert(store::key_of(&item).expect("items have keys"), item);
    }
    let mut described_arns = HashSet::new();
    for (group, described) in indexed.iter().zip(described) {
        let kind = group.kind().expect("only indexed groups are described");
        let health = match described {
            Err(error) => {
                report.errors.push(format!("{}: {error}", group.name));
                continue;
            }
            Ok(None) => {
                report
                    .errors
                    .push(format!("{}: not described before the deadline", group.name));
                continue;
            }
            // Deleted since it was listed: nothing is registered in it, and its items can go.
            Ok(Some(Err(e))) if aws_error::code(&e) == Some("TargetGroupNotFound") => {
                listed_arns.remove(&group.arn);
                wanted.remove(&(group.pk(), "group".to_owned()));
                continue;
            }
            Ok(Some(Err(e))) => {
                report.errors.push(format!(
                    "{}: DescribeTargetHealth failed: {}",
                    group.name,
                    aws_error::explain(&e)
                ));
                continue;
            }
            Ok(Some(Ok(health))) => health,
        };
        described_arns.insert(group.arn.clone());
        for target in health.target_health_descriptions().iter().filter_map(|d| d.target()) {
            let Some(target_id) = target.id() else { continue };
            let Some(key) = TargetKey::for_target(kind, group.vpc_id.as_deref(), target_id) else {
                continue;
            };
            let Some(port) = target.port().or(group.port) else {
                continue;
            };
            let entry = Entry {
                key,
                target_id: target_id.to_owned(),
                target_group_arn: group.arn.clone(),
                target_group_name: group.name.clone(),
                port,
                availability_zone: target.availability_zone().map(str::to_owned),
                vpc_id: group.vpc_id.clone(),
                updated_at: started,
            };
            report.registrations += 1;
            wanted.insert((entry.key.pk(), entry.sk()), entry.to_item(started));
        }
    }
    report.target_groups_described = described_arns.len();

    let mut puts = Vec::new();
    for (key, item) in &wanted {
        match existing.get(key) {
            Some(old) if store::same_content(old, item) && !store::needs_renewal(old, started) => report.unchanged += 1,
            _ => puts.push(store::put_request(item.clone())),
        }
    }
    let mut deletes = Vec::new();
    for (key, old) in existing.iter().filter(|(key, _)| !wanted.contains_key(*key)) {
        // Written by a CloudTrail update while this refresh ran: newer than what the sweep saw.
        if store::updated_at(old).is_ok_and(|at| at >= started) {
            continue;
        }
        let arn = old.get("target_group_arn").and_then(|v| v.as_s().ok());
        let stale = match arn {
            // Unreadable: nothing would ever use it.
            None => true,
            Some(arn) if !listed_arns.contains(arn) => true,
            Some(arn) => !store::is_group_item(old) && described_arns.contains(arn),
        };
        if stale {
            deletes.push(store::delete_request(key.0.clone(), key.1.clone()));
        }
    }

    let put = store::write_all(dynamodb, table, puts).await;
    report.written = put.done;
    report.errors.extend(put.errors);
    let deleted = store::write_all(dynamodb, table, deletes).await;
    report.deleted = deleted.done;
    report.errors.extend(deleted.errors);
    report.ms = elapsed_ms(clock);
    report
}

/// Every target group of the region, whatever its type.
async fn list_target_groups(elb: &aws_sdk_elasticloadbalancingv2::Client) -> Result<Vec<GroupInfo>, String> {
    let groups = crate::locate::sweep::list_target_groups(elb)
        .await
        .map_err(|e| format!("DescribeTargetGroups failed: {e}"))?;
    Ok(groups.iter().filter_map(GroupInfo::from_sdk).collect())
}

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

#[derive(Debug, thiserror::Error)]
#[error("registration index update failed: {0}")]
pub struct UpdateError(pub String);

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
    let mut writes = Vec::new();
    for target in &change.targets {
        let Some(key) = TargetKey::for_target(kind, group.vpc_id.as_deref(), &target.id) else {
            report.skipped.push(format!(
                "{} is not a target of an {} target group",
                Quoted::new(&target.id),
                group.target_type
            ));
            continue;
        };
        let Some(port) = target.port.or(group.port) else {
            report
                .skipped
                .push(format!("{}: no port, and the group has none", target.id));
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
            Ok(Err(error)) => errors.push(format!("{}: {error}", entry.target_id)),
            Err(error) => errors.push(format!("{}: {error}", entry.target_id)),
        }
    }
    report.ms = elapsed_ms(clock);
    if errors.is_empty() {
        Ok(report)
    } else {
        Err(UpdateError(errors.join("; ")))
    }
}

/// Put or delete one registration's item, unless the item is newer than the call. False when it was newer.
async fn write_one(
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
    call: TargetsCall,
    entry: &Entry,
    now: DateTime<Utc>,
) -> Result<bool, String> {
    const NOT_NEWER: &str = "attribute_not_exists(pk) OR updated_at <= :called_at";
    let called_at = AttributeValue::S(store::stamp(entry.updated_at));
    let sent = match call {
        TargetsCall::RegisterTargets => dynamodb
            .put_item()
            .table_name(table)
            .set_item(Some(entry.to_item(now)))
            .condition_expression(NOT_NEWER)
            .expression_attribute_values(":called_at", called_at)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| conditional_failure(&e)),
        TargetsCall::DeregisterTargets => dynamodb
            .delete_item()
            .table_name(table)
            .key("pk", AttributeValue::S(entry.key.pk()))
            .key("sk", AttributeValue::S(entry.sk()))
            .condition_expression(NOT_NEWER)
            .expression_attribute_values(":called_at", called_at)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| conditional_failure(&e)),
    };
    match sent {
        Ok(()) => Ok(true),
        Err((true, _)) => Ok(false),
        Err((false, error)) => Err(format!("{} failed: {error}", write_name(call))),
    }
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
    if let Some(group) = store::get_group(dynamodb, table, arn).await.map_err(UpdateError)? {
        return Ok(Some(group));
    }
    let described = match elb.describe_target_groups().target_group_arns(arn).send().await {
        Ok(described) => described,
        Err(e) if aws_error::code(&e) == Some("TargetGroupNotFound") => return Ok(None),
        Err(e) => {
            return Err(UpdateError(format!(
                "DescribeTargetGroups failed: {}",
                aws_error::explain(&e)
            )));
        }
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
        tracing::warn!(error = %aws_error::explain(&e), "could not remember the target group in the index");
    }
    Ok(Some(group))
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// A failed conditional write: whether it failed only because a newer change is already recorded, and why.
fn conditional_failure<E>(err: &E) -> (bool, String)
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error,
{
    (
        aws_error::code(err) == Some("ConditionalCheckFailedException"),
        aws_error::explain(err),
    )
}
