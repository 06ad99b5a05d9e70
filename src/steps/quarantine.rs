//! Move every ENI of the instance onto the quarantine security group, recording the groups it had.
//!
//! ModifyInstanceAttribute is not used: it only covers the primary ENI and fails on instances with several. Each ENI
//! is changed on its own with ModifyNetworkInterfaceAttribute, after its original groups are written to a tag on the
//! ENI, so that a later restore can put them back even if the summary is lost. No tag, no change.
//!
//! A security group change does not cut connections the VPC is already tracking; see the README.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::Tag;
use serde::{Deserialize, Serialize};

use crate::aws_error;
use crate::bounded::bounded_all;
use crate::config::SecurityGroupId;
use crate::instance::{Instance, NetworkInterface};

/// The tag that records an ENI's original groups, comma-separated. Values longer than EC2's 256-character limit
/// continue in `spot-cleanup:original-groups:2`, `:3`, ...
pub const ORIGINAL_GROUPS_TAG: &str = "spot-cleanup:original-groups";
const TAG_VALUE_MAX: usize = 256;

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
    /// The groups a restore puts back: `groups_before`, or the recorded tag for an ENI quarantined earlier.
    pub original_groups: Option<Vec<String>>,
    pub error: Option<String>,
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
#[error("could not look up the quarantine security groups {ids}: {reason}")]
pub struct ResolveError {
    pub ids: String,
    pub reason: String,
}

/// Find the VPC of each configured quarantine group.
pub async fn resolve_quarantine_groups(
    ec2: &aws_sdk_ec2::Client,
    configured: &[SecurityGroupId],
) -> Result<QuarantineGroups, ResolveError> {
    let ids: Vec<String> = configured.iter().map(|g| g.as_str().to_owned()).collect();
    let output = ec2
        .describe_security_groups()
        .set_group_ids(Some(ids.clone()))
        .send()
        .await
        .map_err(|e| ResolveError {
            ids: ids.join(","),
            reason: aws_error::explain(&e),
        })?;
    Ok(output
        .security_groups()
        .iter()
        .filter_map(|g| Some((g.vpc_id()?.to_owned(), g.group_id()?.to_owned())))
        .collect())
}

/// The original-groups records already on the instances' ENIs, by ENI id, from one DescribeNetworkInterfaces.
/// An ENI with a record was quarantined by an earlier run; its record is kept, never overwritten with the quarantine
/// group. `None` when the records could not be read: see `quarantine_one` for how that is handled safely.
pub async fn recorded_groups(
    ec2: &aws_sdk_ec2::Client,
    instances: &[&Instance],
) -> Option<HashMap<String, Vec<String>>> {
    let mut records = HashMap::new();
    let ids: Vec<String> = instances.iter().map(|i| i.id.as_str().to_owned()).collect();
    for chunk in ids.chunks(200) {
        let filter = aws_sdk_ec2::types::Filter::builder()
            .name("attachment.instance-id")
            .set_values(Some(chunk.to_vec()))
            .build();
        let mut pages = ec2
            .describe_network_interfaces()
            .filters(filter)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = match page {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %aws_error::explain(&e), "could not read the recorded original groups");
                    return None;
                }
            };
            for eni in page.network_interfaces() {
                let tags: BTreeMap<String, String> = eni
                    .tag_set()
                    .iter()
                    .filter_map(|t| Some((t.key()?.to_owned(), t.value()?.to_owned())))
                    .collect();
                if let (Some(id), Some(groups)) = (eni.network_interface_id(), decode_original_groups(&tags)) {
                    records.insert(id.to_owned(), groups);
                }
            }
        }
    }
    Some(records)
}

/// What an earlier run recorded about one ENI.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    /// The original groups an earlier run wrote to the tag.
    Known(Vec<String>),
    /// The ENI has no record.
    Absent,
    /// The records could not be read.
    Unreadable,
}

/// Quarantine every ENI of the instance, all at once. ENIs are independent: one failing does not stop the others.
/// `records` is what `recorded_groups` returned; `None` means the records could not be read.
pub async fn quarantine_enis(
    ec2: &aws_sdk_ec2::Client,
    instance: &Instance,
    groups: &QuarantineGroups,
    records: Option<&HashMap<String, Vec<String>>>,
    dry_run: bool,
) -> Vec<EniChange> {
    let enis = &instance.network_interfaces;
    let changes = bounded_all(enis.len(), enis.iter().cloned(), |eni| {
        let vpc = eni.vpc_id.clone().or_else(|| instance.vpc_id.clone());
        let quarantine = vpc.as_ref().and_then(|v| groups.get(v)).cloned();
        let record = match records {
            None => Record::Unreadable,
            Some(map) => map.get(&eni.id).cloned().map_or(Record::Absent, Record::Known),
        };
        quarantine_one(ec2.clone(), eni, vpc, quarantine, record, dry_run)
    })
    .await;
    enis.iter()
        .zip(changes)
        .map(|(eni, change)| change.unwrap_or_else(|e| unchanged(eni, instance.vpc_id.clone(), &e.to_string())))
        .collect()
}

/// An ENI reported as not changed because of `error`.
pub fn unchanged(eni: &NetworkInterface, vpc_id: Option<String>, error: &str) -> EniChange {
    EniChange {
        network_interface_id: eni.id.clone(),
        vpc_id: eni.vpc_id.clone().or(vpc_id),
        device_index: eni.device_index,
        status: EniStatus::Failed,
        groups_before: eni.groups.clone(),
        groups_after: eni.groups.clone(),
        original_groups: None,
        error: Some(error.to_owned()),
    }
}

async fn quarantine_one(
    ec2: aws_sdk_ec2::Client,
    eni: NetworkInterface,
    vpc_id: Option<String>,
    quarantine: Option<String>,
    record: Record,
    dry_run: bool,
) -> EniChange {
    let mut change = unchanged(&eni, vpc_id.clone(), "");
    change.error = None;
    if let Record::Known(groups) = &record {
        change.original_groups = Some(groups.clone());
    }
    let Some(quarantine) = quarantine else {
        change.error = Some(format!(
            "no quarantine security group is configured for {}; QUARANTINE_SECURITY_GROUP_ID must name one in that VPC",
            vpc_id.as_deref().unwrap_or("this ENI's VPC (unknown)")
        ));
        return change;
    };
    if eni.groups == [quarantine.as_str()] {
        change.status = EniStatus::AlreadyQuarantined;
        return change;
    }
    if dry_run {
        change.status = EniStatus::WouldQuarantine;
        change.original_groups.get_or_insert_with(|| eni.groups.clone());
        change.groups_after = vec![quarantine];
        return change;
    }
    let must_record = match record {
        Record::Known(_) => false,
        Record::Absent => true,
        // Partly quarantined already, and the record an earlier run may have left cannot be read: writing a new one
        // could replace the true original groups with the quarantine group, so leave this ENI for the retry.
        Record::Unreadable if eni.groups.contains(&quarantine) => {
            change.error = Some(
                "its recorded original groups could not be read and it is already partly on the quarantine group, \
                 so it was not changed"
                    .to_owned(),
            );
            return change;
        }
        // Never quarantined, so there is no earlier record to lose.
        Record::Unreadable => true,
    };
    if must_record {
        let tags = encode_original_groups(&eni.groups);
        if let Err(e) = ec2.create_tags().resources(&eni.id).set_tags(Some(tags)).send().await {
            change.error = Some(format!(
                "could not record the original groups, so the ENI was not changed: {}",
                aws_error::explain(&e)
            ));
            return change;
        }
        change.original_groups = Some(eni.groups.clone());
    }
    match ec2
        .modify_network_interface_attribute()
        .network_interface_id(&eni.id)
        .groups(&quarantine)
        .send()
        .await
    {
        Ok(_) => {
            change.status = EniStatus::Quarantined;
            change.groups_after = vec![quarantine];
        }
        Err(e) => change.error = Some(aws_error::explain(&e)),
    }
    change
}

/// The tags that record `groups`, split across numbered keys when one value would be too long.
pub fn encode_original_groups(groups: &[String]) -> Vec<Tag> {
    let mut values: Vec<String> = vec![String::new()];
    for group in groups {
        let current = values.last_mut().expect("never empty");
        if !current.is_empty() && current.len() + 1 + group.len() > TAG_VALUE_MAX {
            values.push(group.clone());
        } else {
            if !current.is_empty() {
                current.push(',');
            }
            current.push_str(group);
        }
    }
    values
        .into_iter()
        .enumerate()
        .map(|(i, value)| {
            let key = match i {
                0 => ORIGINAL_GROUPS_TAG.to_owned(),
                n => format!("{ORIGINAL_GROUPS_TAG}:{}", n + 1),
            };
            Tag::builder().key(key).value(value).build()
        })
        .collect()
}

/// Read back what `encode_original_groups` wrote.
pub fn decode_original_groups(tags: &BTreeMap<String, String>) -> Option<Vec<String>> {
    let mut groups: Vec<String> = Vec::new();
    let mut key = ORIGINAL_GROUPS_TAG.to_owned();
    let mut part = 1;
    while let Some(value) = tags.get(&key) {
        groups.extend(value.split(',').filter(|g| !g.is_empty()).map(str::to_owned));
        part += 1;
        key = format!("{ORIGINAL_GROUPS_TAG}:{part}");
    }
    (part > 1).then_some(groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn original_groups_survive_the_tag_round_trip() {
        for count in [0, 1, 5, 16] {
            let groups: Vec<String> = (0..count).map(|i| format!("sg-{i:017x}")).collect();
            let tags = encode_original_groups(&groups);
            assert!(tags.iter().all(|t| t.value().unwrap().len() <= TAG_VALUE_MAX));
            let map = tags
                .iter()
                .map(|t| (t.key().unwrap().to_owned(), t.value().unwrap().to_owned()))
                .collect();
            assert_eq!(decode_original_groups(&map), Some(groups), "{count} groups");
        }
    }

    #[test]
    fn sixteen_long_ids_need_two_tags() {
        let groups: Vec<String> = (0..16).map(|i| format!("sg-{i:017x}")).collect();
        let keys: Vec<String> = encode_original_groups(&groups)
            .iter()
            .map(|t| t.key().unwrap().to_owned())
            .collect();
        assert_eq!(
            keys,
            [ORIGINAL_GROUPS_TAG.to_owned(), format!("{ORIGINAL_GROUPS_TAG}:2")]
        );
    }

    #[test]
    fn no_tag_means_no_record() {
        assert_eq!(decode_original_groups(&BTreeMap::new()), None);
    }
}
