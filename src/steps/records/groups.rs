//! An ENI's original-groups record: the groups it had before the quarantine, in its tags, with the MAC, time and
//! interruption that sign it.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_ec2::types::Tag;

use super::{Presented, Signer, Trust, check, numbered, numbered_keys, pack};
use crate::aws::CallError;
use crate::instance::Instance;
use crate::steps::tags;

/// The tag that records an ENI's original groups, comma-separated. Values longer than EC2's 256-character limit
/// continue in `spot-cleanup:original-groups:2`, `:3`, ...
pub const ORIGINAL_GROUPS_TAG: &str = "spot-cleanup:original-groups";

/// The keys that sign an ENI's record, beside its groups.
const MAC_SUFFIX: &str = ":mac";
const AT_SUFFIX: &str = ":at";
const EPISODE_SUFFIX: &str = ":episode";

/// An ENI's original-groups record: as its tags hold it (not yet checked), or as a quarantine writes it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GroupsRecord {
    pub groups: Vec<String>,
    pub mac: Option<String>,
    /// When it was written (RFC 3339, as `table::stamp` writes it).
    pub at: String,
    /// The interruption it was written for; empty when the claims keep none (on instance tags).
    pub episode: String,
    /// Every tag key of the record, to remove it whole.
    pub keys: Vec<String>,
}

impl GroupsRecord {
    pub fn from_tags(tags: &BTreeMap<String, String>) -> Option<Self> {
        let groups = decode_original_groups(tags)?;
        let get = |suffix: &str| tags.get(&format!("{ORIGINAL_GROUPS_TAG}{suffix}")).cloned();
        Some(GroupsRecord {
            groups,
            mac: get(MAC_SUFFIX),
            at: get(AT_SUFFIX).unwrap_or_default(),
            episode: get(EPISODE_SUFFIX).unwrap_or_default(),
            keys: record_keys(tags),
        })
    }

    /// The exact text the MAC covers: the record, for this instance's ENI.
    pub fn message(&self, instance: &str, eni: &str) -> String {
        format!(
            "spot-cleanup original-groups v1\ninstance={instance}\neni={eni}\nepisode={}\nat={}\ngroups={}",
            self.episode,
            self.at,
            self.groups.join(",")
        )
    }

    /// Check this record, as the instance's ENI carries it, against `episode`.
    pub async fn check(&self, instance: &str, eni: &str, signer: Option<&Signer>, episode: Option<&str>) -> Trust {
        let message = self.message(instance, eni);
        let found = Presented {
            message: &message,
            episode: &self.episode,
            mac: self.mac.as_deref(),
        };
        check(signer, found, episode).await
    }

    /// The tags that write it: its groups, and, signed, its MAC, time and episode.
    pub fn tags(&self) -> Vec<Tag> {
        let mut written = encode_original_groups(&self.groups);
        if let Some(mac) = &self.mac {
            for (suffix, value) in [
                (MAC_SUFFIX, mac),
                (AT_SUFFIX, &self.at),
                (EPISODE_SUFFIX, &self.episode),
            ] {
                written.push(tags::tag(&format!("{ORIGINAL_GROUPS_TAG}{suffix}"), value));
            }
        }
        written
    }
}

/// Every tag key of an ENI's record: its groups (and their numbered parts), its MAC, when and for which episode.
pub fn record_keys(tags: &BTreeMap<String, String>) -> Vec<String> {
    tags.keys()
        .filter(|k| k.as_str() == ORIGINAL_GROUPS_TAG || k.starts_with(&format!("{ORIGINAL_GROUPS_TAG}:")))
        .cloned()
        .collect()
}

/// The original-groups records already on the instances' ENIs, by ENI id, from one DescribeNetworkInterfaces.
/// An ENI with a record was quarantined by an earlier run; its record is kept, never overwritten with the quarantine
/// group. `None` when the records could not be read: see `quarantine_one` for how that is handled safely.
pub async fn recorded_groups(
    ec2: &aws_sdk_ec2::Client,
    instances: &[&Instance],
) -> Option<HashMap<String, GroupsRecord>> {
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
                    let error = CallError::new("DescribeNetworkInterfaces", &e);
                    tracing::warn!(%error, "could not read the recorded original groups");
                    return None;
                }
            };
            for eni in page.network_interfaces() {
                let tags = tags::to_map(eni.tag_set());
                if let (Some(id), Some(stored)) = (eni.network_interface_id(), GroupsRecord::from_tags(&tags)) {
                    records.insert(id.to_owned(), stored);
                }
            }
        }
    }
    Some(records)
}

/// The tags that record `groups`, split across numbered keys when one value would be too long.
pub fn encode_original_groups(groups: &[String]) -> Vec<Tag> {
    let (values, _) = pack(groups.iter().cloned(), ',', usize::MAX);
    let key = |i| numbered(ORIGINAL_GROUPS_TAG, i);
    values
        .into_iter()
        .enumerate()
        .map(|(i, value)| tags::tag(&key(i), &value))
        .collect()
}

/// Read back what `encode_original_groups` wrote.
pub fn decode_original_groups(tags: &BTreeMap<String, String>) -> Option<Vec<String>> {
    let keys = numbered_keys(tags, ORIGINAL_GROUPS_TAG);
    let groups = keys
        .iter()
        .flat_map(|k| tags[k].split(',').filter(|g| !g.is_empty()).map(str::to_owned));
    (!keys.is_empty()).then(|| groups.collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const INSTANCE: &str = "i-0123abcd";
    const ENI: &str = "eni-0aaa0000000000001";

    /// The record as found, carrying `mac`.
    fn record_with(mac: Option<&str>) -> GroupsRecord {
        GroupsRecord {
            episode: "1796160000000-0123456789abcdef".into(),
            at: "2026-12-01T10:00:00.000Z".into(),
            groups: vec!["sg-0aaa0000000000001".into(), "sg-0bbb0000000000002".into()],
            mac: mac.map(str::to_owned),
            keys: Vec::new(),
        }
    }

    fn record() -> GroupsRecord {
        record_with(None)
    }

    /// KMS, scripted: every MAC verifies, or none does.
    fn signer(valid: bool) -> (Signer, aws_smithy_mocks::Rule) {
        use aws_sdk_kms::operation::verify_mac::VerifyMacOutput;
        use aws_smithy_mocks::{RuleMode, mock, mock_client};
        let rule = if valid {
            mock!(aws_sdk_kms::Client::verify_mac).then_output(|| VerifyMacOutput::builder().mac_valid(true).build())
        } else {
            mock!(aws_sdk_kms::Client::verify_mac).then_error(|| {
                aws_sdk_kms::operation::verify_mac::VerifyMacError::KmsInvalidMacException(
                    aws_sdk_kms::types::error::KmsInvalidMacException::builder().build(),
                )
            })
        };
        let kms = mock_client!(aws_sdk_kms, RuleMode::MatchAny, [&rule]);
        (Signer::new(kms, "alias/spot-cleanup-records".into()), rule)
    }

    /// A record whose MAC is valid but that was written for an earlier interruption is not this one's: replaying an
    /// old record of the same ENI cannot choose what a restore applies.
    #[tokio::test]
    async fn a_valid_record_of_another_interruption_is_not_trusted() {
        let (signer, rule) = signer(true);
        let mac = Some("bWFj");
        assert_eq!(
            record_with(mac)
                .check(INSTANCE, ENI, Some(&signer), Some(&record().episode))
                .await,
            Trust::Ours
        );
        assert_eq!(
            record_with(mac).check(INSTANCE, ENI, Some(&signer), None).await,
            Trust::Ours,
            "no episode known"
        );
        let later = "1796169999999-fedcba9876543210";
        assert!(matches!(
            record_with(mac).check(INSTANCE, ENI, Some(&signer), Some(later)).await,
            Trust::NotOurs(why) if why.contains("another interruption")
        ));
        assert_eq!(rule.num_calls(), 3);
    }

    /// KMS says the MAC is not its key's (KMSInvalidMacException): not ours. No MAC at all is not ours either, and
    /// KMS is not even asked; without a key nothing is signed, which a restore refuses.
    #[tokio::test]
    async fn a_mac_kms_rejects_or_no_mac_is_not_ours() {
        let (signer, rule) = signer(false);
        assert!(matches!(
            record_with(Some("bWFj")).check(INSTANCE, ENI, Some(&signer), None).await,
            Trust::NotOurs(why) if why.contains("does not verify")
        ));
        assert!(matches!(
            record_with(None).check(INSTANCE, ENI, Some(&signer), None).await,
            Trust::NotOurs(why) if why.contains("no MAC")
        ));
        assert!(matches!(
            record_with(Some("not base64!"))
                .check(INSTANCE, ENI, Some(&signer), None)
                .await,
            Trust::NotOurs(_)
        ));
        assert_eq!(rule.num_calls(), 1, "only the well-formed MAC reaches KMS");
        assert_eq!(
            record_with(Some("bWFj")).check(INSTANCE, ENI, None, None).await,
            Trust::Unsigned
        );
    }

    #[test]
    fn every_field_of_a_record_is_in_what_is_signed() {
        let base = record().message(INSTANCE, ENI);
        assert_ne!(record().message("i-0fff0000", ENI), base, "the instance");
        assert_ne!(record().message(INSTANCE, "eni-0bbb0000000000002"), base, "the ENI");
        let changed = [
            GroupsRecord {
                episode: String::new(),
                ..record()
            },
            GroupsRecord {
                at: "2026-12-01T10:00:00.001Z".into(),
                ..record()
            },
            GroupsRecord {
                groups: vec!["sg-0aaa0000000000001".into()],
                ..record()
            },
        ];
        for other in changed {
            assert_ne!(other.message(INSTANCE, ENI), base, "{other:?}");
        }
    }

    #[test]
    fn original_groups_survive_the_tag_round_trip() {
        for count in [0, 1, 5, 16] {
            let groups: Vec<String> = (0..count).map(|i| format!("sg-{i:017x}")).collect();
            let tags = encode_original_groups(&groups);
            assert!(
                tags.iter()
                    .all(|t| t.value().unwrap().len() <= super::super::TAG_VALUE_MAX)
            );
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
