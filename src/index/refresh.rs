//! A scheduled refresh: describe every instance and IP target group of the region and make the table say what was
//! seen, least recently refreshed groups first.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use chrono::Utc;
use serde::Serialize;

use super::elapsed_ms;
use crate::aws::{CallError, Pace, bounded_all};
use crate::deadline::Deadline;
use crate::locate::sweep;
use crate::store;
use crate::table::{self, Entry, GroupInfo, Item, TargetKey};

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
    table_name: &str,
    concurrency: usize,
    pace: &Pace,
    deadline: Deadline,
) -> RefreshReport {
    let clock = Instant::now();
    let started = Utc::now();
    let mut report = RefreshReport::default();

    let listed = match list_target_groups(elb).await {
        Ok(listed) => listed,
        Err(error) => {
            report.errors.push(error.to_string());
            report.ms = elapsed_ms(clock);
            return report;
        }
    };
    // What it holds now. Without that, write everything and delete nothing.
    let existing: BTreeMap<(String, String), Item> = match store::scan(dynamodb, table_name).await {
        Ok(items) => items
            .into_iter()
            // Delivery markers share the table; they are not the index's to keep or delete.
            .filter(|item| !table::is_claim(item))
            .filter_map(|item| Some((table::key_of(&item)?, item)))
            .collect(),
        Err(error) => {
            report.errors.push(error.to_string());
            BTreeMap::new()
        }
    };
    // Least recently refreshed first: when a large fleet cannot be described before the deadline, the next refresh
    // goes on where this one stopped instead of describing the same groups again.
    let refreshed_at = |group: &GroupInfo| {
        existing
            .get(&(group.pk(), table::GROUP_SK.to_owned()))
            .and_then(|item| table::updated_at(item).ok())
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
            if deadline.passed() { None } else { Some(request.await) }
        }
    })
    .await;

    // What the table should hold, by (pk, sk): each indexed group's own item, and each registration.
    let mut wanted: BTreeMap<(String, String), Item> = BTreeMap::new();
    for group in &indexed {
        let item = group.to_item(started, started);
        wanted.insert(table::key_of(&item).expect("items have keys"), item);
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
            Ok(Some(Err(e))) => {
                let error = CallError::new("DescribeTargetHealth", &e);
                if error.is("TargetGroupNotFound") {
                    listed_arns.remove(&group.arn);
                    wanted.remove(&(group.pk(), table::GROUP_SK.to_owned()));
                } else {
                    report.errors.push(format!("{}: {error}", group.name));
                }
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
            Some(old) if table::same_content(old, item) && !table::needs_renewal(old, started) => report.unchanged += 1,
            _ => puts.push(store::put_request(item.clone())),
        }
    }
    let mut deletes = Vec::new();
    for (key, old) in existing.iter().filter(|(key, _)| !wanted.contains_key(*key)) {
        // Written by a CloudTrail update while this refresh ran: newer than what the sweep saw.
        if table::updated_at(old).is_ok_and(|at| at >= started) {
            continue;
        }
        let arn = old.get("target_group_arn").and_then(|v| v.as_s().ok());
        let stale = match arn {
            // Unreadable: nothing would ever use it.
            None => true,
            Some(arn) if !listed_arns.contains(arn) => true,
            Some(arn) => !table::is_group_item(old) && described_arns.contains(arn),
        };
        if stale {
            deletes.push(store::delete_request(key.0.clone(), key.1.clone()));
        }
    }

    let put = store::write_all(dynamodb, table_name, puts).await;
    report.written = put.done;
    report.errors.extend(put.errors.iter().map(CallError::to_string));
    let deleted = store::write_all(dynamodb, table_name, deletes).await;
    report.deleted = deleted.done;
    report.errors.extend(deleted.errors.iter().map(CallError::to_string));
    report.ms = elapsed_ms(clock);
    report
}

/// Every target group of the region, whatever its type.
async fn list_target_groups(elb: &aws_sdk_elasticloadbalancingv2::Client) -> Result<Vec<GroupInfo>, CallError> {
    let groups = sweep::list_target_groups(elb).await?;
    Ok(groups.iter().filter_map(GroupInfo::from_sdk).collect())
}
