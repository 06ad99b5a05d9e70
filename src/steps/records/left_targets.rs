//! An instance's record of the targets it left (`REREGISTER_ON_RESTORE`), in its tags, so it lives and dies with the
//! instance and needs no store of its own: `spot-cleanup:left-targets-in` holds the target groups' common ARN
//! prefix, and `spot-cleanup:left-targets` (then `:2`, `:3`, ...) the targets, ` `-separated, each
//! `name/id,target,port[,zone]`.
//!
//! Signed like an ENI's record: `spot-cleanup:left-targets-mac` is KMS's HMAC over every other tag of the record, the
//! instance and the interruption (`spot-cleanup:left-targets-episode`), so a restore registers only targets this
//! function itself recorded.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ec2::types::Tag;

use super::{Presented, Signer, Signing, Trust, check, numbered, numbered_keys, pack};
use crate::aws::CallError;
use crate::input::InstanceId;
use crate::registration::LeftTarget;
use crate::steps::tags;
use crate::summary::TargetChange;

pub const LEFT_TARGETS_TAG: &str = "spot-cleanup:left-targets";
pub const LEFT_TARGETS_PREFIX_TAG: &str = "spot-cleanup:left-targets-in";
pub const LEFT_TARGETS_MAC_TAG: &str = "spot-cleanup:left-targets-mac";
pub const LEFT_TARGETS_EPISODE_TAG: &str = "spot-cleanup:left-targets-episode";
/// At most this many tags of targets (about 2.5 KiB, some 30 targets), beside the 50 tags an instance may have.
pub const MAX_RECORD_TAGS: usize = 10;

/// The tags that record `targets`, and how many targets did not fit in `MAX_RECORD_TAGS`.
pub fn encode(targets: &[LeftTarget]) -> (Vec<Tag>, usize) {
    let Some(first) = targets.first() else {
        return (Vec::new(), 0);
    };
    let prefix = match first.target_group_arn.find(":targetgroup/") {
        Some(at) => &first.target_group_arn[..at + ":targetgroup/".len()],
        None => "",
    };
    let entries = targets.iter().map(|target| {
        let group = match target.target_group_arn.strip_prefix(prefix) {
            Some(rest) if !prefix.is_empty() => rest,
            _ => target.target_group_arn.as_str(),
        };
        let port = target.port.map(|p| p.to_string()).unwrap_or_default();
        match &target.availability_zone {
            Some(zone) => format!("{group},{},{port},{zone}", target.target_id),
            None => format!("{group},{},{port}", target.target_id),
        }
    });
    let (values, left_out) = pack(entries, ' ', MAX_RECORD_TAGS);
    let mut tags = vec![tag(LEFT_TARGETS_PREFIX_TAG, prefix)];
    tags.extend(
        values
            .iter()
            .enumerate()
            .map(|(i, value)| tag(&numbered(LEFT_TARGETS_TAG, i), value)),
    );
    (tags, left_out)
}

/// Read back what `encode` wrote; None when the instance carries no record. Entries that cannot be read are skipped.
pub fn decode(tags: &BTreeMap<String, String>) -> Option<Vec<LeftTarget>> {
    let keys = record_keys(tags);
    if keys.is_empty() {
        return None;
    }
    let prefix = tags.get(LEFT_TARGETS_PREFIX_TAG).map(String::as_str).unwrap_or("");
    let mut targets = Vec::new();
    for key in keys.iter().filter(|k| k.as_str() != LEFT_TARGETS_PREFIX_TAG) {
        for entry in tags[key].split(' ').filter(|e| !e.is_empty()) {
            let fields: Vec<&str> = entry.split(',').collect();
            let (group, target_id, port, zone) = match fields.as_slice() {
                [group, target, port] => (*group, *target, *port, None),
                [group, target, port, zone] => (*group, *target, *port, Some(*zone)),
                _ => continue,
            };
            let port = match port {
                "" => None,
                p => match p.parse() {
                    Ok(port) => Some(port),
                    Err(_) => continue,
                },
            };
            let target_group_arn = if group.starts_with("arn:") {
                group.to_owned()
            } else {
                format!("{prefix}{group}")
            };
            targets.push(LeftTarget {
                target_group_arn,
                target_id: target_id.to_owned(),
                port,
                availability_zone: zone.map(str::to_owned),
            });
        }
    }
    Some(targets)
}

/// Every tag key of the record, its signature's included.
pub fn record_keys(tags: &BTreeMap<String, String>) -> Vec<String> {
    let mut keys = signed_keys(tags);
    for key in [LEFT_TARGETS_MAC_TAG, LEFT_TARGETS_EPISODE_TAG] {
        if tags.contains_key(key) {
            keys.push(key.to_owned());
        }
    }
    keys
}

/// The record's tags its MAC covers, with their values.
fn signed_part(tags: &BTreeMap<String, String>) -> Vec<(String, String)> {
    signed_keys(tags)
        .into_iter()
        .map(|key| {
            let value = tags[&key].clone();
            (key, value)
        })
        .collect()
}

/// A record of left targets as the instance's tags hold it, not yet checked.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetsRecord {
    pub targets: Vec<LeftTarget>,
    message: String,
    episode: String,
    mac: Option<String>,
    /// Every tag key of the record, to remove it whole.
    pub keys: Vec<String>,
}

impl TargetsRecord {
    pub fn from_tags(instance: &InstanceId, tags: &BTreeMap<String, String>) -> Option<Self> {
        let targets = decode(tags)?;
        let episode = tags.get(LEFT_TARGETS_EPISODE_TAG).cloned().unwrap_or_default();
        Some(TargetsRecord {
            targets,
            message: left_targets_message(instance.as_str(), &episode, &signed_part(tags)),
            episode,
            mac: tags.get(LEFT_TARGETS_MAC_TAG).cloned(),
            keys: record_keys(tags),
        })
    }

    /// Whether this function wrote it, for this instance and (when known) this interruption.
    pub async fn check(&self, signer: Option<&Signer>, episode: Option<&str>) -> Trust {
        let found = Presented {
            message: &self.message,
            episode: &self.episode,
            mac: self.mac.as_deref(),
        };
        check(signer, found, episode).await
    }
}

/// The keys of the record's targets and their prefix, in order.
fn signed_keys(tags: &BTreeMap<String, String>) -> Vec<String> {
    let mut keys = numbered_keys(tags, LEFT_TARGETS_TAG);
    if !keys.is_empty() && tags.contains_key(LEFT_TARGETS_PREFIX_TAG) {
        keys.push(LEFT_TARGETS_PREFIX_TAG.to_owned());
    }
    keys
}

/// Write the record of what `removed` took out, signed, replacing any older one (`existing`: the instance's tags as
/// described). Returns warnings for the summary: targets that did not fit, a record left unsigned.
pub async fn record(
    ec2: &aws_sdk_ec2::Client,
    instance: &InstanceId,
    existing: &BTreeMap<String, String>,
    removed: &[TargetChange],
    signing: Signing,
) -> Result<Vec<String>, CallError> {
    let targets: BTreeSet<LeftTarget> = removed.iter().map(LeftTarget::from).collect();
    let targets: Vec<LeftTarget> = targets.into_iter().collect();
    let (mut tags, left_out) = encode(&targets);
    if tags.is_empty() {
        return Ok(Vec::new());
    }
    let mut warnings = Vec::new();
    if left_out > 0 {
        warnings.push(format!(
            "{left_out} of the targets it left did not fit in the record: a restore will not register them again"
        ));
    }
    if let Some(signer) = &signing.signer {
        let pairs: Vec<(String, String)> = tags
            .iter()
            .map(|t| {
                (
                    t.key().unwrap_or_default().to_owned(),
                    t.value().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        match signer
            .sign(&left_targets_message(instance.as_str(), &signing.episode, &pairs))
            .await
        {
            Ok(mac) => {
                tags.push(tag(LEFT_TARGETS_MAC_TAG, &mac));
                tags.push(tag(LEFT_TARGETS_EPISODE_TAG, &signing.episode));
            }
            Err(e) => warnings.push(format!(
                "the record of the targets it left is unsigned ({e}): a restore will refuse it"
            )),
        }
    }
    let stale = stale_keys(existing, &tags);
    tags::write(ec2, instance.as_str(), tags).await?;
    // An older, longer record's last parts (or an older signature) would otherwise read as part of this one.
    if !stale.is_empty() {
        tags::delete(ec2, instance.as_str(), stale).await?;
    }
    Ok(warnings)
}

/// The keys of an older record that the new `tags` do not overwrite.
fn stale_keys(existing: &BTreeMap<String, String>, tags: &[Tag]) -> Vec<String> {
    let new: BTreeSet<&str> = tags.iter().filter_map(Tag::key).collect();
    record_keys(existing)
        .into_iter()
        .filter(|key| !new.contains(key.as_str()))
        .collect()
}

/// The text the MAC of an instance's record of left targets covers: every tag of the record, key and value, in key
/// order, so that no part can be changed, added or dropped.
pub fn left_targets_message(instance: &str, episode: &str, tags: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = tags.iter().collect();
    sorted.sort();
    let mut message = format!("spot-cleanup left-targets v1\ninstance={instance}\nepisode={episode}");
    for (key, value) in sorted {
        message.push_str(&format!("\n{key}={value}"));
    }
    message
}

fn tag(key: &str, value: &str) -> Tag {
    tags::tag(key, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(group: &str, id: &str, port: Option<i32>, zone: Option<&str>) -> LeftTarget {
        LeftTarget {
            target_group_arn: format!("arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/{group}"),
            target_id: id.into(),
            port,
            availability_zone: zone.map(str::to_owned),
        }
    }

    fn as_map(tags: &[Tag]) -> BTreeMap<String, String> {
        tags.iter()
            .map(|t| (t.key().unwrap().to_owned(), t.value().unwrap().to_owned()))
            .collect()
    }

    #[test]
    fn targets_survive_the_tag_round_trip() {
        let targets = vec![
            target("web/0123456789abcdef", "i-0123abcd", Some(30080), None),
            target("pods/fedcba9876543210", "10.0.2.24", Some(8080), Some("all")),
            target("v6/0011223344556677", "2001:db8::7", None, None),
        ];
        let (tags, left_out) = encode(&targets);
        assert_eq!(left_out, 0);
        let tags = as_map(&tags);
        assert_eq!(
            tags[LEFT_TARGETS_PREFIX_TAG],
            "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/"
        );
        assert_eq!(decode(&tags), Some(targets));
        assert_eq!(record_keys(&tags).len(), 2);
    }

    #[test]
    fn many_targets_spread_over_numbered_tags_up_to_the_cap() {
        let many: Vec<LeftTarget> = (0..200)
            .map(|i| {
                target(
                    &format!("k8s-default-service{i:03}-0a1b2c3d4e/0123456789abcdef"),
                    "i-0123abcd",
                    Some(30000 + i),
                    None,
                )
            })
            .collect();
        let (tags, left_out) = encode(&many);
        assert_eq!(tags.len(), 1 + MAX_RECORD_TAGS);
        assert!(
            tags.iter()
                .all(|t| t.value().unwrap().len() <= super::super::TAG_VALUE_MAX)
        );
        let decoded = decode(&as_map(&tags)).unwrap();
        assert_eq!(decoded.len() + left_out, 200);
        assert_eq!(decoded, many[..decoded.len()]);
        assert!(decoded.len() > 25, "{}", decoded.len());
    }

    #[test]
    fn a_shorter_record_removes_the_older_ones_extra_parts() {
        let long: Vec<LeftTarget> = (0..20)
            .map(|i| {
                target(
                    &format!("k8s-default-service{i:03}-0a1b2c3d4e/0123456789abcdef"),
                    "i-0123abcd",
                    Some(i),
                    None,
                )
            })
            .collect();
        let existing = as_map(&encode(&long).0);
        assert!(existing.contains_key(&format!("{LEFT_TARGETS_TAG}:3")), "{existing:?}");
        let (short, _) = encode(&long[..1]);
        let stale = stale_keys(&existing, &short);
        assert!(!stale.is_empty());
        assert!(
            stale.iter().all(|k| k.starts_with(&format!("{LEFT_TARGETS_TAG}:"))),
            "{stale:?}"
        );
        let mut after = existing.clone();
        after.extend(as_map(&short));
        stale.iter().for_each(|k| {
            after.remove(k);
        });
        assert_eq!(decode(&after), Some(long[..1].to_vec()));
    }

    #[test]
    fn no_record_and_unreadable_entries() {
        assert_eq!(decode(&BTreeMap::new()), None);
        let tags = BTreeMap::from([
            (
                LEFT_TARGETS_PREFIX_TAG.to_owned(),
                "arn:aws:elasticloadbalancing:eu-west-1:1:targetgroup/".to_owned(),
            ),
            (
                LEFT_TARGETS_TAG.to_owned(),
                "a/1,i-0123abcd,80 junk a/2,10.0.0.1,eighty a/3,10.0.0.2,81".to_owned(),
            ),
        ]);
        let decoded = decode(&tags).unwrap();
        assert_eq!(decoded.len(), 2, "{decoded:?}");
        assert_eq!(decoded[1].target_id, "10.0.0.2");
    }

    #[test]
    fn the_left_targets_message_covers_every_tag_in_key_order() {
        let tags = vec![
            ("spot-cleanup:left-targets".to_owned(), "web/1,i-0123abcd,80".to_owned()),
            (
                "spot-cleanup:left-targets-in".to_owned(),
                "arn:aws:x:targetgroup/".to_owned(),
            ),
        ];
        let mut reversed = tags.clone();
        reversed.reverse();
        assert_eq!(
            left_targets_message("i-0123abcd", "e", &tags),
            left_targets_message("i-0123abcd", "e", &reversed)
        );
        let mut edited = tags.clone();
        edited[0].1.push_str(" web/2,i-0123abcd,81");
        assert_ne!(
            left_targets_message("i-0123abcd", "e", &tags),
            left_targets_message("i-0123abcd", "e", &edited)
        );
    }
}
