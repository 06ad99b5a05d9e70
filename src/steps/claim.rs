//! One delivery per interruption does the work. With EventBridge and a node agent both configured, two deliveries
//! per interruption are the normal case, and Lambda and SQS retry on top of that; the marker that decides which one
//! acts is held by AWS, not by this container, so it holds across containers and retries.
//!
//! - **With the registration index table**: one item per instance, pk `claim#<instance id>`, sk `claim` (index items
//!   are `instance#`, `ip#` and `group#`, so it cannot collide with them, and the index refresh leaves it alone). A
//!   conditional PutItem takes it: only when there is none, when the last run recorded `incomplete`, or when the last
//!   claimant's lease (its invocation deadline) has run out because it died.
//! - **Without it**: tags on the instance. EC2 tags have no conditional write, so each claimant writes its own tag
//!   `spot-cleanup:claim:<token>` (tokens start with the time, so they sort by age), waits `SETTLE`, reads the tags
//!   back, and the smallest live token wins; the others remove theirs. A finished cleanup leaves
//!   `spot-cleanup:handled`. The window: two claimants both proceed only if one's tag becomes visible more than
//!   `SETTLE` after the other read the tags back (CreateTags slower than half a second to show). Both would then do
//!   the same idempotent work and both publish; nothing conflicting happens.
//!
//! A run that ends incomplete releases its claim so that its retry can finish the work. A restore clears the marker,
//! so a later interruption of the same instance (after a stop) is handled again.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};

use super::tags;
use crate::aws::CallError;
use crate::deadline::Deadline;
use crate::input::InstanceId;
use crate::table::{CLAIM_SK, claim_pk, s, stamp};

pub const CLAIM_TAG_PREFIX: &str = "spot-cleanup:claim:";
pub const HANDLED_TAG: &str = "spot-cleanup:handled";
/// How long a tag claimant waits for concurrent claims to become visible before reading them back.
pub const SETTLE: Duration = Duration::from_millis(500);
/// A claimant's lease when its invocation has no deadline: a little longer than the function's timeout.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(120);
/// Claim items expire after a day: by then the instance is long gone or was restored.
const CLAIM_TTL_SECONDS: i64 = 24 * 60 * 60;

/// When a claim taken now lapses if its holder dies without recording how its run ended: a little after the
/// invocation's deadline.
pub fn lease_until(deadline: Deadline) -> DateTime<Utc> {
    let lease = deadline
        .left()
        .map_or(DEFAULT_LEASE, |left| left + Duration::from_secs(10));
    Utc::now() + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::minutes(5))
}

/// Where the marker lives.
pub enum Marker<'a> {
    Table {
        dynamodb: &'a aws_sdk_dynamodb::Client,
        table: &'a str,
    },
    Tags {
        ec2: &'a aws_sdk_ec2::Client,
    },
}

impl<'a> Marker<'a> {
    /// The marker a deployment uses: its table when it has one, else tags on the instance.
    pub fn new(table: Option<&'a str>, dynamodb: &'a aws_sdk_dynamodb::Client, ec2: &'a aws_sdk_ec2::Client) -> Self {
        match table {
            Some(table) => Marker::Table { dynamodb, table },
            None => Marker::Tags { ec2 },
        }
    }
}

/// What the marker said.
#[derive(Clone, Debug, PartialEq)]
pub enum Claim {
    /// This invocation does the work; `finish` records how it went.
    Won(Token),
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

/// Take the marker for `instance`, or learn who has it.
pub async fn claim(marker: &Marker<'_>, instance: &InstanceId, lease_until: DateTime<Utc>) -> Claim {
    match marker {
        Marker::Table { dynamodb, table } => claim_item(dynamodb, table, instance, lease_until).await,
        Marker::Tags { ec2 } => claim_tag(ec2, instance, lease_until).await,
    }
}

/// Record how the work went: `done`, or released for a retry.
pub async fn finish(
    marker: &Marker<'_>,
    instance: &InstanceId,
    token: &Token,
    complete: bool,
) -> Result<(), CallError> {
    match marker {
        Marker::Table { dynamodb, table } => {
            dynamodb
                .update_item()
                .table_name(*table)
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
            tags::delete(ec2, instance.as_str(), vec![claim_key(token)]).await
        }
    }
}

/// Forget the marker: the instance was restored, so a later interruption is new work.
pub async fn clear(marker: &Marker<'_>, instance: &InstanceId) -> Result<(), CallError> {
    match marker {
        Marker::Table { dynamodb, table } => {
            dynamodb
                .delete_item()
                .table_name(*table)
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

async fn claim_item(
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
    instance: &InstanceId,
    lease_until: DateTime<Utc>,
) -> Claim {
    let token = Token::new();
    let now = Utc::now();
    let put = dynamodb
        .put_item()
        .table_name(table)
        .item("pk", s(claim_pk(instance)))
        .item("sk", s(CLAIM_SK))
        .item("token", s(token.as_str()))
        .item("state", s("in-progress"))
        .item("claimed_at", s(stamp(now)))
        .item("lease_until", s(stamp(lease_until)))
        .item(
            "expires_at",
            AttributeValue::N((now.timestamp() + CLAIM_TTL_SECONDS).to_string()),
        )
        .condition_expression("attribute_not_exists(pk) OR #state = :incomplete OR lease_until < :now")
        .expression_attribute_names("#state", "state")
        .expression_attribute_values(":incomplete", s("incomplete"))
        .expression_attribute_values(":now", s(stamp(now)))
        .send()
        .await;
    match put.map_err(|e| CallError::new("PutItem", &e)) {
        Ok(_) => Claim::Won(token),
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
                state: text("state").unwrap_or_else(|| "in-progress".into()),
                since: text("claimed_at"),
            }
        }
        Err(e) => Claim::Unavailable(format!(
            "the delivery marker could not be written ({}); handled as a first delivery",
            e.reason()
        )),
    }
}

fn claim_key(token: &Token) -> String {
    format!("{CLAIM_TAG_PREFIX}{}", token.as_str())
}

fn is_marker_tag(key: &str) -> bool {
    key == HANDLED_TAG || key.starts_with(CLAIM_TAG_PREFIX)
}

/// A tag as read back: key and value.
type TagRef<'a> = (&'a String, &'a String);

async fn claim_tag(ec2: &aws_sdk_ec2::Client, instance: &InstanceId, lease_until: DateTime<Utc>) -> Claim {
    let unavailable = |e: CallError| {
        Claim::Unavailable(format!(
            "the delivery marker could not be used ({}); handled as a first delivery",
            e.reason()
        ))
    };
    let handled = |tags: &BTreeMap<String, String>| {
        tags.get(HANDLED_TAG).map(|at| Claim::Taken {
            state: "done".into(),
            since: Some(at.clone()),
        })
    };
    match tags::read(ec2, instance.as_str()).await {
        Ok(tags) => {
            if let Some(taken) = handled(&tags) {
                return taken;
            }
        }
        Err(e) => return unavailable(e),
    }
    let token = Token::new();
    let mine = claim_key(&token);
    let tag = tags::tag(&mine, &stamp(lease_until));
    if let Err(e) = tags::write(ec2, instance.as_str(), vec![tag]).await {
        return unavailable(e);
    }
    tokio::time::sleep(SETTLE).await;
    let mut found = match tags::read(ec2, instance.as_str()).await {
        Ok(found) => found,
        Err(e) => {
            let _ = tags::delete(ec2, instance.as_str(), vec![mine]).await;
            return unavailable(e);
        }
    };
    if let Some(taken) = handled(&found) {
        let _ = tags::delete(ec2, instance.as_str(), vec![mine]).await;
        return taken;
    }
    // Our own claim is live even if EC2 does not show it yet (eventual consistency).
    found.insert(mine.clone(), stamp(lease_until));
    let now = stamp(Utc::now());
    let (live, expired): (Vec<TagRef>, Vec<TagRef>) = found
        .iter()
        .filter(|(k, _)| k.starts_with(CLAIM_TAG_PREFIX))
        .partition(|(k, lease)| **k == mine || lease.as_str() >= now.as_str());
    // Tag keys sort by token, and tokens by the time they were made: the oldest live claim wins.
    let winner = live.iter().map(|(k, _)| *k).min().cloned();
    if winner.as_deref() == Some(mine.as_str()) {
        // Claims of runs that died without releasing them: theirs is long over.
        let dead: Vec<String> = expired.into_iter().map(|(k, _)| k.clone()).collect();
        if !dead.is_empty() {
            let _ = tags::delete(ec2, instance.as_str(), dead).await;
        }
        Claim::Won(token)
    } else {
        let _ = tags::delete(ec2, instance.as_str(), vec![mine]).await;
        let since = winner
            .as_deref()
            .and_then(|k| k.strip_prefix(CLAIM_TAG_PREFIX))
            .and_then(|t| t.split('-').next())
            .and_then(|ms| ms.parse::<i64>().ok())
            .and_then(DateTime::<Utc>::from_timestamp_millis)
            .map(stamp);
        Claim::Taken {
            state: "in-progress".into(),
            since,
        }
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
            claim_key(&first).len() <= 128,
            "EC2 tag keys are at most 128 characters"
        );
    }
}
