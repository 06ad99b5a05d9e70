//! A scheduled refresh: describe every instance and IP target group of the region and make the table say what was
//! seen, least recently refreshed groups first.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use aws_sdk_dynamodb::types::WriteRequest;
use aws_sdk_elasticloadbalancingv2::operation::describe_target_health::DescribeTargetHealthOutput;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::aws::{Bucket, CallError, Priority, bounded_all};
use crate::deadline::{Deadline, elapsed_ms};
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

/// DescribeTargetHealth calls of a refresh in flight at once, and a second (its pace): the refresh is background work
/// that must leave the account's shared Describe* budget, 10 a second, to everyone else.
pub const REFRESH_READS: usize = 2;

/// Sweep every instance and IP target group of the region and make the table say what the sweep saw.
///
/// At most `REFRESH_READS` DescribeTargetHealth calls are in flight. No call starts after `deadline`; groups left
/// undescribed keep their items. Failures are reported, never raised: the next scheduled refresh is the retry, where
/// Lambda's own retries would spend the budget again at once.
pub async fn refresh(
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    dynamodb: &aws_sdk_dynamodb::Client,
    table_name: &str,
    pace: &Bucket,
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
    let existing = existing_items(dynamodb, table_name, &mut report).await;
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

    let described = bounded_all(REFRESH_READS, indexed.clone(), |group| {
        let request = elb.describe_target_health().target_group_arn(&group.arn).send();
        let pace = pace.clone();
        async move {
            pace.take(Priority::Urgent).await;
            if deadline.passed() { None } else { Some(request.await) }
        }
    })
    .await;
    let mut seen = Snapshot::new(listed.iter().map(|g| g.arn.clone()).collect(), &indexed, started);
    for (group, described) in indexed.iter().zip(described) {
        let health = match described {
            Ok(Some(health)) => health.map_err(|e| CallError::new("DescribeTargetHealth", &e)),
            Ok(None) => {
                let error = format!("{}: not described before the deadline", group.name);
                report.errors.push(error);
                continue;
            }
            Err(died) => Err(CallError::local("DescribeTargetHealth", died)),
        };
        if let Err(error) = seen.group(group, health, started) {
            report.errors.push(format!("{}: {error}", group.name));
        }
    }
    report.registrations = seen.registrations;
    report.target_groups_described = seen.described.len();
    let (puts, deletes) = seen.changes(&existing, started, &mut report);
    let put = store::write_all(dynamodb, table_name, puts).await;
    report.written = put.done;
    report.errors.extend(put.errors.iter().map(CallError::to_string));
    let deleted = store::write_all(dynamodb, table_name, deletes).await;
    report.deleted = deleted.done;
    report.errors.extend(deleted.errors.iter().map(CallError::to_string));
    report.ms = elapsed_ms(clock);
    report
}

/// What the index holds now, by (pk, sk). Without that, write everything and delete nothing.
async fn existing_items(
    dynamodb: &aws_sdk_dynamodb::Client,
    table_name: &str,
    report: &mut RefreshReport,
) -> BTreeMap<(String, String), Item> {
    match store::scan(dynamodb, table_name).await {
        Ok(items) => items
            .into_iter()
            // Claims and the wave share the table; they are not the index's to keep or delete.
            .filter(|item| !table::is_claim(item) && !table::is_wave(item))
            .filter_map(|item| Some((table::key_of(&item)?, item)))
            .collect(),
        Err(error) => {
            report.errors.push(error.to_string());
            BTreeMap::new()
        }
    }
}

/// What the refresh saw: the items the table should hold, by (pk, sk), and which groups it could describe.
struct Snapshot {
    wanted: BTreeMap<(String, String), Item>,
    /// Every group of the region, less those found deleted since they were listed.
    listed: HashSet<String>,
    described: HashSet<String>,
    registrations: usize,
}

impl Snapshot {
    /// Nothing described yet: the table should hold each indexed group's own item.
    fn new(listed: HashSet<String>, indexed: &[GroupInfo], at: DateTime<Utc>) -> Self {
        let wanted = indexed
            .iter()
            .map(|group| {
                let item = group.to_item(at, at);
                (table::key_of(&item).expect("items have keys"), item)
            })
            .collect();
        Snapshot {
            wanted,
            listed,
            described: HashSet::new(),
            registrations: 0,
        }
    }

    /// One indexed group and its DescribeTargetHealth answer: its own item, and one per registration in it.
    fn group(
        &mut self,
        group: &GroupInfo,
        health: Result<DescribeTargetHealthOutput, CallError>,
        at: DateTime<Utc>,
    ) -> Result<(), CallError> {
        let health = match health {
            Ok(health) => health,
            // Deleted since it was listed: nothing is registered in it, and its items can go.
            Err(error) if error.is("TargetGroupNotFound") => {
                self.listed.remove(&group.arn);
                self.wanted.remove(&(group.pk(), table::GROUP_SK.to_owned()));
                return Ok(());
            }
            // Its registrations' items are kept as they are.
            Err(error) => return Err(error),
        };
        self.described.insert(group.arn.clone());
        for entry in entries(group, &health, at) {
            self.registrations += 1;
            self.wanted.insert((entry.key.pk(), entry.sk()), entry.to_item(at));
        }
        Ok(())
    }

    /// The writes that make the table say what was seen: new, changed or ageing items put, and the items of
    /// registrations and groups that are gone deleted. Items of groups that could not be described are kept.
    fn changes(
        &self,
        existing: &BTreeMap<(String, String), Item>,
        started: DateTime<Utc>,
        report: &mut RefreshReport,
    ) -> (Vec<WriteRequest>, Vec<WriteRequest>) {
        let mut puts = Vec::new();
        for (key, item) in &self.wanted {
            match existing.get(key) {
                Some(old) if table::same_content(old, item) && !table::needs_renewal(old, started) => {
                    report.unchanged += 1
                }
                _ => puts.push(store::put_request(item.clone())),
            }
        }
        let mut deletes = Vec::new();
        for (key, old) in existing.iter().filter(|(key, _)| !self.wanted.contains_key(*key)) {
            // Written by a CloudTrail update while this refresh ran: newer than what the sweep saw.
            if table::updated_at(old).is_ok_and(|at| at >= started) {
                continue;
            }
            let arn = old.get("target_group_arn").and_then(|v| v.as_s().ok());
            let stale = match arn {
                // Unreadable: nothing would ever use it.
                None => true,
                Some(arn) if !self.listed.contains(arn) => true,
                Some(arn) => !table::is_group_item(old) && self.described.contains(arn),
            };
            if stale {
                deletes.push(store::delete_request(key.0.clone(), key.1.clone()));
            }
        }
        (puts, deletes)
    }
}

/// The registrations a described group holds, as index entries read at `at`.
pub(super) fn entries(group: &GroupInfo, health: &DescribeTargetHealthOutput, at: DateTime<Utc>) -> Vec<Entry> {
    let Some(kind) = group.kind() else {
        return Vec::new();
    };
    let targets = health.target_health_descriptions().iter().filter_map(|d| d.target());
    targets
        .filter_map(|target| {
            let target_id = target.id()?;
            Some(Entry {
                key: TargetKey::for_target(kind, group.vpc_id.as_deref(), target_id)?,
                target_id: target_id.to_owned(),
                target_group_arn: group.arn.clone(),
                target_group_name: group.name.clone(),
                port: target.port().or(group.port)?,
                availability_zone: target.availability_zone().map(str::to_owned),
                vpc_id: group.vpc_id.clone(),
                updated_at: at,
            })
        })
        .collect()
}

/// Every target group of the region, whatever its type.
async fn list_target_groups(elb: &aws_sdk_elasticloadbalancingv2::Client) -> Result<Vec<GroupInfo>, CallError> {
    let groups = sweep::list_target_groups(elb).await?;
    Ok(groups.iter().filter_map(GroupInfo::from_sdk).collect())
}
