//! Claims as instance tags, for a deployment without the table: each claimant writes its own tag, waits, reads
//! them back, and the oldest live claim wins.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::{CLAIM_TAG_PREFIX, Claim, ClaimState, DONE_TAG, Lease, SETTLE, Token};
use crate::aws::CallError;
use crate::input::InstanceId;
use crate::steps::tags;
use crate::table::stamp;

pub(super) fn claim_key(token: &str) -> String {
    format!("{CLAIM_TAG_PREFIX}{token}")
}

pub(super) fn is_claim_tag(key: &str) -> bool {
    key == DONE_TAG || key.starts_with(CLAIM_TAG_PREFIX)
}

fn ids(instances: &[InstanceId]) -> Vec<String> {
    instances.iter().map(|i| i.to_string()).collect()
}

/// The tag claims of a batch: one token, one CreateTags, one read back after `SETTLE`; then, per instance, the oldest
/// live claim wins.
pub(super) async fn claim_tags(ec2: &aws_sdk_ec2::Client, instances: &[InstanceId], lease: &Lease) -> Vec<Claim> {
    let unavailable = |e: &CallError| {
        Claim::Unavailable(format!(
            "the claim could not be used ({}); handled as a first delivery",
            e.reason()
        ))
    };
    let before = match tags::read(ec2, ids(instances)).await {
        Ok(found) => found,
        Err(e) => return instances.iter().map(|_| unavailable(&e)).collect(),
    };
    // Already done: nothing to claim.
    let done = |tags: Option<&BTreeMap<String, String>>| {
        tags.and_then(|t| t.get(DONE_TAG)).map(|at| Claim::Taken {
            state: ClaimState::Done,
            since: Some(at.clone()),
        })
    };
    let open: Vec<InstanceId> = instances
        .iter()
        .filter(|i| done(before.get(i.as_str())).is_none())
        .cloned()
        .collect();
    let token = Token::new();
    let mine = claim_key(token.as_str());
    let mut answers: BTreeMap<InstanceId, Claim> = BTreeMap::new();
    if !open.is_empty() {
        let tag = tags::tag(&mine, &stamp(lease.until()));
        let written = ec2.create_tags().set_resources(Some(ids(&open))).tags(tag).send().await;
        if let Err(e) = written {
            let e = CallError::new("CreateTags", &e);
            return instances
                .iter()
                .map(|i| done(before.get(i.as_str())).unwrap_or_else(|| unavailable(&e)))
                .collect();
        }
        tokio::time::sleep(SETTLE).await;
        match tags::read(ec2, ids(&open)).await {
            Ok(after) => {
                for instance in &open {
                    let claim = decide(ec2, instance, after.get(instance.as_str()), &mine, &token).await;
                    answers.insert(instance.clone(), claim);
                }
            }
            Err(e) => {
                for instance in &open {
                    let _ = tags::delete(ec2, instance.as_str(), vec![mine.clone()]).await;
                    answers.insert(instance.clone(), unavailable(&e));
                }
            }
        }
    }
    instances
        .iter()
        .map(|i| {
            done(before.get(i.as_str()))
                .or_else(|| answers.remove(i))
                .unwrap_or_else(|| Claim::Unavailable("the claim was not read".into()))
        })
        .collect()
}

/// One instance's tags as read back after settling: this claim wins if it is the oldest live one.
async fn decide(
    ec2: &aws_sdk_ec2::Client,
    instance: &InstanceId,
    found: Option<&BTreeMap<String, String>>,
    mine: &str,
    token: &Token,
) -> Claim {
    let mut found = found.cloned().unwrap_or_default();
    if let Some(at) = found.get(DONE_TAG) {
        let _ = tags::delete(ec2, instance.as_str(), vec![mine.to_owned()]).await;
        return Claim::Taken {
            state: ClaimState::Done,
            since: Some(at.clone()),
        };
    }
    // Our own claim is live even if EC2 does not show it yet (eventual consistency).
    found.entry(mine.to_owned()).or_insert_with(|| stamp(Utc::now()));
    let now = stamp(Utc::now());
    type Claims<'t> = Vec<(&'t String, &'t String)>;
    let (live, lapsed): (Claims<'_>, Claims<'_>) = found
        .iter()
        .filter(|(k, _)| k.starts_with(CLAIM_TAG_PREFIX))
        .partition(|(k, lease)| k.as_str() == mine || lease.as_str() >= now.as_str());
    // Tag keys sort by token, and tokens by the time they were made: the oldest live claim wins.
    let winner = live.iter().map(|(k, _)| *k).min().cloned();
    if winner.as_deref() == Some(mine) {
        // Claims of runs that died without releasing them: theirs is over.
        let dead: Vec<String> = lapsed.into_iter().map(|(k, _)| k.clone()).collect();
        if !dead.is_empty() {
            let _ = tags::delete(ec2, instance.as_str(), dead).await;
        }
        return Claim::Won {
            token: token.clone(),
            episode: String::new(),
        };
    }
    let _ = tags::delete(ec2, instance.as_str(), vec![mine.to_owned()]).await;
    let since = winner
        .as_deref()
        .and_then(|k| k.strip_prefix(CLAIM_TAG_PREFIX))
        .and_then(|t| t.split('-').next())
        .and_then(|ms| ms.parse::<i64>().ok())
        .and_then(DateTime::<Utc>::from_timestamp_millis)
        .map(stamp);
    Claim::Taken {
        state: ClaimState::InProgress,
        since,
    }
}
