//! An ENI's original-groups record as the quarantine meets it: what an earlier run left, whether to keep, replace or
//! leave it, and the writing of a new one before the ENI's groups change.

use chrono::Utc;

use super::Target;
use crate::aws::CallError;
use crate::instance::NetworkInterface;
use crate::steps::records::{self, GroupsRecord, Signer, StoredGroups, Trust};
use crate::steps::tags;
use crate::table::stamp;

/// What an earlier run recorded about one ENI.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    /// A record an earlier run wrote to the ENI's tags (or someone else did: `quarantine_one` checks).
    Known(StoredGroups),
    /// The ENI has no record.
    Absent,
    /// The records could not be read.
    Unreadable,
}

/// How this run signs the records it writes, and checks the ones it finds.
#[derive(Clone, Debug, Default)]
pub struct Recording {
    /// None when no key is configured (`RECORD_KEY_ID`): records are written unsigned, and a restore refuses them.
    pub signer: Option<Signer>,
    /// The interruption the records are written for; empty when the claims keep none.
    pub episode: String,
}

/// What to do about the record an ENI carries before changing its groups.
pub(super) enum Plan {
    /// Keep it: it is this function's own (or nothing is signed). Its groups are what a restore puts back.
    Keep(Vec<String>),
    /// Write a new record of the ENI's groups, removing the keys of an older one (`stale`) it does not overwrite.
    Write { stale: Vec<String>, note: Option<String> },
    /// Leave the ENI as it is, for this reason.
    Leave { error: String, note: Option<String> },
}

/// Decide from the record, as checked, and from whether the ENI is already partly walled off. A record is kept only
/// when it is this function's own: a planted or edited one is replaced when the ENI's groups are still its own, and
/// left when they are not, since its true groups are then unknown. Either way its note goes to the security alert.
pub(super) async fn plan_record(
    target: &Target,
    eni: &NetworkInterface,
    quarantine: &str,
    recording: &Recording,
    instance: &str,
) -> Plan {
    let partly = eni.groups.iter().any(|g| g == quarantine);
    let stored = match &target.record {
        Record::Known(stored) => stored,
        Record::Absent => {
            return Plan::Write {
                stale: Vec::new(),
                note: None,
            };
        }
        // Partly quarantined already, and the record an earlier run may have left cannot be read: writing a new one
        // could replace the true original groups with the quarantine group, so leave this ENI for the retry.
        Record::Unreadable if partly => {
            let error = "its recorded original groups could not be read and it is already partly on the quarantine \
                         group, so it was not changed";
            return Plan::Leave {
                error: error.to_owned(),
                note: None,
            };
        }
        // Never quarantined, so there is no earlier record to lose.
        Record::Unreadable => {
            return Plan::Write {
                stale: Vec::new(),
                note: None,
            };
        }
    };
    let record = stored.record(instance, &eni.id);
    let episode = Some(recording.episode.as_str());
    match record
        .check(recording.signer.as_ref(), stored.mac.as_deref(), episode)
        .await
    {
        Trust::Ours | Trust::Unsigned => Plan::Keep(stored.groups.clone()),
        Trust::NotOurs(why) if partly => {
            let note = format!("its original-groups record is not this function's: {why}");
            let error = format!(
                "{note}; it is already partly on the quarantine group, so its true groups are unknown \
                                 and it was left as it is: restore it by hand"
            );
            Plan::Leave {
                error,
                note: Some(note),
            }
        }
        Trust::NotOurs(why) => Plan::Write {
            stale: stored.keys.clone(),
            note: Some(format!(
                "an original-groups record that was not this function's ({why}) was replaced"
            )),
        },
        Trust::Unknown(error) if partly => Plan::Leave {
            error: format!("its record could not be checked ({error}), so it was not changed"),
            note: None,
        },
        Trust::Unknown(_) => Plan::Write {
            stale: stored.keys.clone(),
            note: None,
        },
    }
}

/// Write the ENI's groups as its record, signed when a key is configured, and remove what is left of an older one.
/// No record, no change: an error here leaves the ENI as it is. A signature KMS could not make is a warning, not an
/// error: the ENI is still walled off, and a restore will refuse the unsigned record.
pub(super) async fn write_record(
    ec2: &aws_sdk_ec2::Client,
    eni: &NetworkInterface,
    recording: &Recording,
    instance: &str,
    stale: Vec<String>,
) -> Result<Option<String>, CallError> {
    let record = GroupsRecord {
        instance: instance.to_owned(),
        eni: eni.id.clone(),
        episode: recording.episode.clone(),
        at: stamp(Utc::now()),
        groups: eni.groups.clone(),
    };
    let (mac, warning) = match &recording.signer {
        None => (None, None),
        Some(signer) => match signer.sign(&record.message()).await {
            Ok(mac) => (Some(mac), None),
            Err(e) => (
                None,
                Some(format!("its record is unsigned ({e}): a restore will refuse it")),
            ),
        },
    };
    let written = records::record_tags(&record, mac.as_deref());
    let kept: Vec<&str> = written.iter().filter_map(|t| t.key()).collect();
    let stale: Vec<String> = stale.into_iter().filter(|k| !kept.contains(&k.as_str())).collect();
    tags::write(ec2, &eni.id, written).await?;
    if !stale.is_empty() {
        tags::delete(ec2, &eni.id, stale).await?;
    }
    Ok(warning)
}
