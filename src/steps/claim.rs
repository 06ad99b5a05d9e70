//! One delivery per interruption does the work. With EventBridge and a node agent both configured, two deliveries
//! per interruption are the normal case, and Lambda and SQS retry on top of that; the marker that decides which one
//! acts is held by AWS, not by this container, so it holds across containers and retries.
//!
//! A claim is a lease: its holder renews it while it works (`keep`), and a claim that is not renewed lapses after a
//! short while (`CLAIM_LEASE_SECONDS`, 15 s by default, never past the invocation's end). So a claimant that dies (a
//! panic, an out-of-memory kill, a lost execution environment) holds up the next delivery for at most one lease: the
//! retry Lambda sends a minute later always finds the claim lapsed and does the work.
//!
//! - **With the function's table**: one item per instance, pk `claim#<instance id>`, sk `claim` (index items are
//!   `instance#`, `ip#` and `group#`, so it cannot collide with them, and the index refresh leaves it alone). A
//!   conditional UpdateItem takes it, and it is the only arbiter: only when there is none, when the last run recorded
//!   `incomplete`, or when the last claimant's lease ran out while it was still `in-progress`. A `done` claim stays
//!   done until a restore clears it. The item keeps the `episode` (the token of the claim that started this
//!   interruption's work) across takeovers.
//! - **Without it**: tags on the instance. EC2 tags have no conditional write, so each claimant writes its own tag
//!   `spot-cleanup:claim:<token>` = its lease (tokens start with the time, so they sort by age), waits `SETTLE`,
//!   reads the tags back, and the oldest live claim wins; the others remove theirs. A batch claims all its instances
//!   with one token, in one CreateTags. A finished cleanup leaves `spot-cleanup:handled`. The window: two claimants
//!   both proceed only if one's tag becomes visible more than `SETTLE` after the other read the tags back (CreateTags
//!   slower than half a second to show). Both would then do the same idempotent work and both publish.
//!
//! A run that ends incomplete releases its claim so that its retry can finish the work. A restore clears the marker,
//! so a later interruption of the same instance (after a stop) is handled again.

use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_ec2::types::Filter;
use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;

use super::tags;
use crate::aws::{CallError, join_all};
use crate::deadline::Deadline;
use crate::input::InstanceId;
use crate::table::{CLAIM_SK, claim_pk, s, stamp};

pub const CLAIM_TAG_PREFIX: &str = "spot-cleanup:claim:";
pub const HANDLED_TAG: &str = "spot-cleanup:handled";
/// How long a tag claimant waits for concurrent claims to become visible before reading them back.
pub const SETTLE: Duration = Duration::from_millis(500);
/// How long a claim lasts unless its holder renews it (`CLAIM_LEASE_SECONDS`).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);
/// Claim items expire after a day: by then the instance is long gone or was restored.
const CLAIM_TTL_SECONDS: i64 = 24 * 60 * 60;
const IN_PROGRESS: &str = "in-progress";

/// Where the marker lives. The handles are owned, so that the task renewing the claims can keep them.
#[derive(Clone, Debug)]
pub enum Marker {
    Table {
        dynamodb: aws_sdk_dynamodb::Client,
        table: String,
    },
    Tags {
        ec2: aws_sdk_ec2::Client,
    },
}

impl Marker {
    /// The marker a deployment uses: its table when it has one, else tags on the instance.
    pub fn new(table: Option<&str>, dynamodb: &aws_sdk_dynamodb::Client, ec2: &aws_sdk_ec2::Client) -> Self {
        match table {
            Some(table) => Marker::Table {
                dynamodb: dynamodb.clone(),
                table: table.to_owned(),
            },
            None => Marker::Tags { ec2: ec2.clone() },
        }
    }
}

/// How long claims last, and when the invocation that holds them ends.
#[derive(Clone, Copy, Debug)]
pub struct Lease {
    pub length: Duration,
    pub deadline: Deadline,
}

impl Lease {
    /// When a claim taken or renewed now lapses: `length` from now, and never after the invocation ends.
    pub fn until(&self) -> DateTime<Utc> {
        let length = match self.deadline.end_left() {
            Some(left) => self.length.min(left),
            None => self.length,
        };
        Utc::now() + chrono::Duration::from_std(length).unwrap_or(chrono::Duration::seconds(15))
    }

    /// How often a holder renews: three times a lease, so that one failed renewal does not lose the claim.
    pub fn renew_every(&self) -> Duration {
        (self.length / 3).max(Duration::from_millis(100))
    }
}

/// What the marker said.
#[derive(Clone, Debug, PartialEq)]
pub enum Claim {
    /// This invocation does the work; `finish` records how it went. `episode` names the interruption across
    /// takeovers (the token of the claim that started its work) for the records the work signs; empty with tags,
    /// whose claims cannot carry one safely.
    Won { token: Token, episode: String },
    /// Another delivery did the work (`done`) or is doing it (`in-progress`).
    Taken { state: String, since: Option<String> },
    /// The marker could not be read or written. The work goes ahead (it is idempotent) with this warning: a missed
    /// cleanup costs more than a repeated one.
    Unavailable(String),
}

/// This invocation's claim.
#[derive(Clone, Debug, PartialEq)]
pub struct Token(String);

impl Token {
    fn new() -> Token {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let random = RandomState::new().hash_one((nanos, std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
        Token(format!("{:013}-{random:016x}", Utc::now().timestamp_millis()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Take the marker of every instance, or learn who has it; one answer per instance, in order.
pub async fn claim_all(marker: &Marker, instances: &[InstanceId], lease: &Lease) -> Vec<Claim> {
    match marker {
        Marker::Table { dynamodb, table } => {
            join_all(
                instances
                    .iter()
                    .map(|instance| claim_item(dynamodb, table, instance, lease)),
            )
            .await
        }
        Marker::Tags { ec2 } => claim_tags(ec2, instances, lease).await,
    }
}

/// Renewing held claims while the work goes on; dropping it stops the renewals (a finished run, or a panic that
/// unwinds through the run). The instances whose claim another delivery took over meanwhile are in `lost`.
pub struct Keeper {
    task: Option<JoinHandle<()>>,
    lost: Arc<Mutex<HashSet<InstanceId>>>,
}

impl Keeper {
    pub fn lost(&self) -> HashSet<InstanceId> {
        self.lost
            .lock()
            .expect("never poisoned: no panics under the lock")
            .clone()
    }

    /// No more renewals: the run is about to record how it ended.
    pub fn stop(&self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Renew `held` every `lease.renew_every()` until the returned `Keeper` is dropped.
pub fn keep(marker: &Marker, held: Vec<(InstanceId, Token)>, lease: Lease) -> Keeper {
    let lost = Arc::new(Mutex::new(HashSet::new()));
    if held.is_empty() {
        return Keeper { task: None, lost };
    }
    let (marker, lost_by_task) = (marker.clone(), Arc::clone(&lost));
    let task = tokio::spawn(async move {
        loop {
            tokio::time::sleep(lease.renew_every()).await;
            let until = lease.until();
            let still: Vec<&(InstanceId, Token)> = {
                let lost = lost_by_task.lock().expect("never poisoned: no panics under the lock");
                held.iter().filter(|(id, _)| !lost.contains(id)).collect()
            };
            for ((instance, _), renewed) in still.iter().zip(renew(&marker, &still, until).await) {
                match renewed {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(instance_id = instance.as_str(), "the delivery marker was taken over");
                        lost_by_task.lock().expect("never poisoned").insert(instance.clone());
                    }
                    // A failed renewal is tried again next time; the lease outlasts two of them.
                    Err(error) => {
                        tracing::warn!(instance_id = instance.as_str(), %error, "the delivery marker was not renewed")
                    }
                }
            }
        }
    });
    Keeper { task: Some(task), lost }
}

/// Push each held claim's lease to `until`. False: the claim is no longer this holder's.
async fn renew(marker: &Marker, held: &[&(InstanceId, Token)], until: DateTime<Utc>) -> Vec<Result<bool, CallError>> {
    match marker {
        Marker::Table { dynamodb, table } => {
            join_all(held.iter().map(|(instance, token)| async move {
                let renewed = dynamodb
                    .update_item()
                    .table_name(table)
                    .key("pk", s(claim_pk(instance)))
                    .key("sk", s(CLAIM_SK))
                    .update_expression("SET lease_until = :until")
                    .condition_expression("#token = :token AND #state = :in_progress")
                    .expression_attribute_names("#token", "token")
                    .expression_attribute_names("#state", "state")
                    .expression_attribute_values(":until", s(stamp(until)))
                    .expression_attribute_values(":token", s(token.as_str()))
                    .expression_attribute_values(":in_progress", s(IN_PROGRESS))
                    .send()
                    .await;
                match renewed.map_err(|e| CallError::new("UpdateItem", &e)) {
                    Ok(_) => Ok(true),
                    Err(e) if e.is("ConditionalCheckFailedException") => Ok(false),
                    Err(e) => Err(e),
                }
            }))
            .await
        }
        // One token per batch, so one CreateTags renews every instance's tag.
        Marker::Tags { ec2 } => {
            let mut by_token: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for (instance, token) in held {
                by_token.entry(token.as_str()).or_default().push(instance.as_str());
            }
            let mut answers: BTreeMap<&str, Result<bool, CallError>> = BTreeMap::new();
            for (token, instances) in by_token {
                let tag = tags::tag(&claim_key(token), &stamp(until));
                let written = ec2
                    .create_tags()
                    .set_resources(Some(instances.iter().map(|i| i.to_string()).collect()))
                    .tags(tag)
                    .send()
                    .await
                    .map(|_| true)
                    .map_err(|e| CallError::new("CreateTags", &e));
                for instance in instances {
                    answers.insert(instance, written.clone());
                }
            }
            held.iter()
                .map(|(instance, _)| answers.remove(instance.as_str()).unwrap_or(Ok(true)))
                .collect()
        }
    }
}

/// Record how the work went: `done`, or released for a retry.
pub async fn finish(marker: &Marker, instance: &InstanceId, token: &Token, complete: bool) -> Result<(), CallError> {
    match marker {
        Marker::Table { dynamodb, table } => {
            dynamodb
                .update_item()
                .table_name(table)
                .key("pk", s(claim_pk(instance)))
                .key("sk", s(CLAIM_SK))
                .update_expression("SET #state = :state, finished_at = :now")
                .condition_expression("#token = :token")
                .expression_attribute_names("#state", "state")
                .expression_attribute_names("#token", "token")
                .expression_attribute_values(":state", s(if complete { "done" } else { "incomplete" }))
                .expression_attribute_values(":now", s(stamp(Utc::now())))
                .expression_attribute_values(":token", s(token.as_str()))
                .send()
                .await
                .map_err(|e| CallError::new("UpdateItem", &e))?;
            Ok(())
        }
        Marker::Tags { ec2 } => {
            if complete {
                let handled = tags::tag(HANDLED_TAG, &stamp(Utc::now()));
                tags::write(ec2, instance.as_str(), vec![handled]).await?;
            }
            tags::delete(ec2, instance.as_str(), vec![claim_key(token.as_str())]).await
        }
    }
}

/// The interruption the marker's last claim worked on, for a restore to check its records against. None with tags
/// (they keep no episode), or when the table holds no claim (it expired after a day, or was cleared).
pub async fn episode(marker: &Marker, instance: &InstanceId) -> Result<Option<String>, CallError> {
    let Marker::Table { dynamodb, table } = marker else {
        return Ok(None);
    };
    let found = dynamodb
        .get_item()
        .table_name(table)
        .key("pk", s(claim_pk(instance)))
        .key("sk", s(CLAIM_SK))
        .consistent_read(true)
        .send()
        .await
        .map_err(|e| CallError::new("GetItem", &e))?;
    Ok(found
        .item()
        .and_then(|item| item.get("episode"))
        .and_then(|v| v.as_s().ok())
        .cloned())
}

/// Forget the marker: the instance was restored, so a later interruption is new work.
pub async fn clear(marker: &Marker, instance: &InstanceId) -> Result<(), CallError> {
    match marker {
        Marker::Table { dynamodb, table } => {
            dynamodb
                .delete_item()
                .table_name(table)
                .key("pk", s(claim_pk(instance)))
                .key("sk", s(CLAIM_SK))
                .send()
                .await
                .map_err(|e| CallError::new("DeleteItem", &e))?;
            Ok(())
        }
        Marker::Tags { ec2 } => {
            let found = tags::read(ec2, instance.as_str()).await?;
            let keys: Vec<String> = found.into_keys().filter(|k| is_marker_tag(k)).collect();
            if keys.is_empty() {
                return Ok(());
            }
            tags::delete(ec2, instance.as_str(), keys).await
        }
    }
}

async fn claim_item(dynamodb: &aws_sdk_dynamodb::Client, table: &str, instance: &InstanceId, lease: &Lease) -> Claim {
    let token = Token::new();
    let now = Utc::now();
    let taken = dynamodb
        .update_item()
        .table_name(table)
        .key("pk", s(claim_pk(instance)))
        .key("sk", s(CLAIM_SK))
        .update_expression(
            "SET #token = :token, #state = :in_progress, claimed_at = :now, lease_until = :until, \
             expires_at = :expires, episode = if_not_exists(episode, :token)",
        )
        .condition_expression(
            "attribute_not_exists(pk) OR #state = :incomplete OR (#state = :in_progress AND lease_until < :now)",
        )
        .expression_attribute_names("#token", "token")
        .expression_attribute_names("#state", "state")
        .expression_attribute_values(":token", s(token.as_str()))
        .expression_attribute_values(":in_progress", s(IN_PROGRESS))
        .expression_attribute_values(":incomplete", s("incomplete"))
        .expression_attribute_values(":now", s(stamp(now)))
        .expression_attribute_values(":until", s(stamp(lease.until())))
        .expression_attribute_values(
            ":expires",
            AttributeValue::N((now.timestamp() + CLAIM_TTL_SECONDS).to_string()),
        )
        .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
        .send()
        .await;
    match taken.map_err(|e| CallError::new("UpdateItem", &e)) {
        Ok(output) => {
            let episode = output
                .attributes()
                .and_then(|a| a.get("episode"))
                .and_then(|v| v.as_s().ok())
                .cloned();
            let episode = episode.unwrap_or_else(|| token.as_str().to_owned());
            Claim::Won { token, episode }
        }
        Err(e) if e.is("ConditionalCheckFailedException") => {
            let held = dynamodb
                .get_item()
                .table_name(table)
                .key("pk", s(claim_pk(instance)))
                .key("sk", s(CLAIM_SK))
                .consistent_read(true)
                .send()
                .await;
            let item = held.ok().and_then(|o| o.item().cloned()).unwrap_or_default();
            let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
            Claim::Taken {
                state: text("state").unwrap_or_else(|| IN_PROGRESS.into()),
                since: text("claimed_at"),
            }
        }
        Err(e) => Claim::Unavailable(format!(
            "the delivery marker could not be written ({}); handled as a first delivery",
            e.reason()
        )),
    }
}

fn claim_key(token: &str) -> String {
    format!("{CLAIM_TAG_PREFIX}{token}")
}

fn is_marker_tag(key: &str) -> bool {
    key == HANDLED_TAG || key.starts_with(CLAIM_TAG_PREFIX)
}

/// Every tag of each instance, from one DescribeTags.
async fn read_tags(
    ec2: &aws_sdk_ec2::Client,
    instances: &[InstanceId],
) -> Result<BTreeMap<String, BTreeMap<String, String>>, CallError> {
    let filter = Filter::builder()
        .name("resource-id")
        .set_values(Some(instances.iter().map(|i| i.to_string()).collect()))
        .build();
    let mut pages = ec2.describe_tags().filters(filter).into_paginator().send();
    let mut found: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| CallError::new("DescribeTags", &e))?;
        for tag in page.tags() {
            let (Some(resource), Some(key)) = (tag.resource_id(), tag.key()) else {
                continue;
            };
            let value = tag.value().unwrap_or_default().to_owned();
            found
                .entry(resource.to_owned())
                .or_default()
                .insert(key.to_owned(), value);
        }
    }
    Ok(found)
}

/// The tag claims of a batch: one token, one CreateTags, one read back after `SETTLE`; then, per instance, the oldest
/// live claim wins.
async fn claim_tags(ec2: &aws_sdk_ec2::Client, instances: &[InstanceId], lease: &Lease) -> Vec<Claim> {
    let unavailable = |e: &CallError| {
        Claim::Unavailable(format!(
            "the delivery marker could not be used ({}); handled as a first delivery",
            e.reason()
        ))
    };
    let before = match read_tags(ec2, instances).await {
        Ok(found) => found,
        Err(e) => return instances.iter().map(|_| unavailable(&e)).collect(),
    };
    // Already handled: nothing to claim.
    let handled = |tags: Option<&BTreeMap<String, String>>| {
        tags.and_then(|t| t.get(HANDLED_TAG)).map(|at| Claim::Taken {
            state: "done".into(),
            since: Some(at.clone()),
        })
    };
    let open: Vec<InstanceId> = instances
        .iter()
        .filter(|i| handled(before.get(i.as_str())).is_none())
        .cloned()
        .collect();
    let token = Token::new();
    let mine = claim_key(token.as_str());
    let mut answers: BTreeMap<InstanceId, Claim> = BTreeMap::new();
    if !open.is_empty() {
        let tag = tags::tag(&mine, &stamp(lease.until()));
        let written = ec2
            .create_tags()
            .set_resources(Some(open.iter().map(|i| i.to_string()).collect()))
            .tags(tag)
            .send()
            .await;
        if let Err(e) = written {
            let e = CallError::new("CreateTags", &e);
            return instances
                .iter()
                .map(|i| handled(before.get(i.as_str())).unwrap_or_else(|| unavailable(&e)))
                .collect();
        }
        tokio::time::sleep(SETTLE).await;
        match read_tags(ec2, &open).await {
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
            handled(before.get(i.as_str()))
                .or_else(|| answers.remove(i))
                .unwrap_or_else(|| Claim::Unavailable("the delivery marker was not read".into()))
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
    if let Some(at) = found.get(HANDLED_TAG) {
        let _ = tags::delete(ec2, instance.as_str(), vec![mine.to_owned()]).await;
        return Claim::Taken {
            state: "done".into(),
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
        state: IN_PROGRESS.into(),
        since,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_sort_by_time_and_are_unique() {
        let first = Token::new();
        std::thread::sleep(Duration::from_millis(2));
        let second = Token::new();
        let third = Token::new();
        assert!(first.as_str() < second.as_str());
        assert_ne!(second, third);
        assert!(
            claim_key(first.as_str()).len() <= 128,
            "EC2 tag keys are at most 128 characters"
        );
    }

    #[test]
    fn a_lease_never_outlasts_the_invocation() {
        let long = Lease {
            length: Duration::from_secs(15),
            deadline: Deadline::after(Duration::from_secs(60)),
        };
        let left = (long.until() - Utc::now()).num_milliseconds();
        assert!((14_000..=15_000).contains(&left), "{left}");
        let short = Lease {
            length: Duration::from_secs(15),
            deadline: Deadline::after(Duration::from_secs(2)),
        };
        let left = (short.until() - Utc::now()).num_milliseconds();
        assert!((1_000..=2_000).contains(&left), "{left}");
        assert_eq!(long.renew_every(), Duration::from_secs(5));
    }
}
