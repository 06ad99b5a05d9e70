//! What a restore acts on, read and checked before anything changes: each ENI's original-groups record (the branch
//! ENIs of its trunk ENI too), with `REREGISTER_ON_RESTORE` the instance's record of the targets it left, and the
//! interruption they should belong to (the claim's episode, with the table). Every record must be this function's own, or nothing is done.

use aws_sdk_ec2::types::{Filter, NetworkInterface, NetworkInterfaceType};

use crate::aws::CallError;
use crate::input::InstanceId;
use crate::instance::Instance;
use crate::steps::branches;
use crate::steps::claim::{self, ClaimStore};
use crate::steps::describe::describe_one;
use crate::steps::records::left_targets::TargetsRecord;
use crate::steps::records::{GroupsRecord, Signer, Trust};
use crate::steps::tags;

/// One ENI's record, as found.
pub struct RecordedEni {
    pub id: String,
    pub groups_now: Vec<String>,
    pub stored: GroupsRecord,
}

/// The instance's record of the targets it left, as found.
pub struct RecordedTargets {
    pub instance: Instance,
    pub stored: TargetsRecord,
}

/// Everything the restore would act on.
pub struct Recorded {
    pub enis: Vec<RecordedEni>,
    pub targets: Option<RecordedTargets>,
    /// The interruption the records should belong to; None when the claims keep none.
    pub episode: Option<String>,
}

impl Recorded {
    pub fn is_empty(&self) -> bool {
        self.enis.is_empty() && self.targets.is_none()
    }
}

/// Why the records could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("could not read the ENIs' records: {0}")]
    Enis(CallError),
    #[error("could not read the record of the targets it left: {0}")]
    Targets(CallError),
    #[error("could not read the claim's interruption: {0}")]
    Episode(CallError),
}

/// Read every record of the instance; the targets' only when `with_targets`.
pub async fn read(
    ec2: &aws_sdk_ec2::Client,
    claim_store: &ClaimStore,
    instance_id: &InstanceId,
    with_targets: bool,
) -> Result<Recorded, ReadError> {
    let enis = recorded_enis(ec2, instance_id).await.map_err(ReadError::Enis)?;
    let targets = if with_targets {
        let instance = describe_one(ec2, instance_id).await.map_err(ReadError::Targets)?;
        instance.and_then(|instance| {
            let stored = TargetsRecord::from_tags(instance_id, &instance.tags)?;
            Some(RecordedTargets { instance, stored })
        })
    } else {
        None
    };
    let episode = claim::episode(claim_store, instance_id)
        .await
        .map_err(ReadError::Episode)?;
    Ok(Recorded { enis, targets, episode })
}

async fn recorded_enis(ec2: &aws_sdk_ec2::Client, instance_id: &InstanceId) -> Result<Vec<RecordedEni>, CallError> {
    let filter = Filter::builder()
        .name("attachment.instance-id")
        .values(instance_id.as_str())
        .build();
    let mut pages = ec2
        .describe_network_interfaces()
        .filters(filter)
        .into_paginator()
        .send();
    let mut recorded = Vec::new();
    let mut trunks = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| CallError::new("DescribeNetworkInterfaces", &e))?;
        for eni in page.network_interfaces() {
            if eni.interface_type() == Some(&NetworkInterfaceType::Trunk)
                && let Some(id) = eni.network_interface_id()
            {
                trunks.push(id.to_owned());
            }
            recorded.extend(recorded_eni(eni));
        }
    }
    // The branch ENIs of its trunk were quarantined as the instance's own: they come back with it.
    if !trunks.is_empty() {
        let branches = branches::of_trunks(ec2, &trunks).await?;
        recorded.extend(branches.iter().filter_map(|(_, eni)| recorded_eni(eni)));
    }
    Ok(recorded)
}

/// The ENI's record, if it carries one.
fn recorded_eni(eni: &NetworkInterface) -> Option<RecordedEni> {
    let tags = tags::to_map(eni.tag_set());
    let (Some(id), Some(stored)) = (eni.network_interface_id(), GroupsRecord::from_tags(&tags)) else {
        return None;
    };
    Some(RecordedEni {
        id: id.to_owned(),
        groups_now: eni
            .groups()
            .iter()
            .filter_map(|g| g.group_id())
            .map(str::to_owned)
            .collect(),
        stored,
    })
}

/// What the check of every record found.
#[derive(Debug, PartialEq)]
pub enum RecordCheck {
    /// Every record is this function's own, for this instance and interruption.
    Trusted,
    /// At least one is not (or no key is configured to tell): why, one reason per record.
    Untrusted(Vec<String>),
    /// KMS could not be asked; nothing is known, so nothing is done and the retry checks again.
    Unchecked(Vec<String>),
}

/// Check every record's MAC (each one KMS VerifyMac call).
pub async fn check(signer: Option<&Signer>, instance_id: &InstanceId, found: &Recorded) -> RecordCheck {
    if signer.is_none() {
        return RecordCheck::Untrusted(vec![
            "RECORD_KEY_ID is not set, so no record can be proven to be this function's own".into(),
        ]);
    }
    let episode = found.episode.as_deref();
    let mut trust: Vec<(String, Trust)> = Vec::new();
    for eni in &found.enis {
        let answer = eni.stored.check(instance_id.as_str(), &eni.id, signer, episode).await;
        trust.push((format!("{}'s original-groups record", eni.id), answer));
    }
    if let Some(targets) = &found.targets {
        let answer = targets.stored.check(signer, episode).await;
        trust.push((format!("{instance_id}'s record of the targets it left"), answer));
    }
    let mut untrusted = Vec::new();
    let mut unchecked = Vec::new();
    for (what, answer) in trust {
        match answer {
            Trust::Ours => {}
            Trust::NotOurs(why) => untrusted.push(format!("{what} is not this function's: {why}")),
            Trust::Unsigned => untrusted.push(format!("{what} is unsigned")),
            Trust::Unknown(error) => unchecked.push(format!("{what} could not be checked: {error}")),
        }
    }
    if !untrusted.is_empty() {
        RecordCheck::Untrusted(untrusted)
    } else if !unchecked.is_empty() {
        RecordCheck::Unchecked(unchecked)
    } else {
        RecordCheck::Trusted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without `RECORD_KEY_ID` no record can be proven to be the function's own, so every restore is refused, before
    /// KMS or anything else is asked.
    #[tokio::test]
    async fn without_a_key_every_record_is_untrusted() {
        let stored = GroupsRecord {
            groups: vec!["sg-0aaa0000000000001".into()],
            mac: Some("bWFj".into()),
            at: String::new(),
            episode: String::new(),
            keys: vec!["spot-cleanup:original-groups".into()],
        };
        let found = Recorded {
            enis: vec![RecordedEni {
                id: "eni-0aaa0000000000001".into(),
                groups_now: vec!["sg-0ffff000000000009".into()],
                stored,
            }],
            targets: None,
            episode: None,
        };
        let instance = InstanceId::parse("i-0123456789abcdef0").unwrap();
        let RecordCheck::Untrusted(reasons) = check(None, &instance, &found).await else {
            panic!("untrusted")
        };
        assert!(reasons[0].contains("RECORD_KEY_ID"), "{reasons:?}");
    }
}
