//! One delivery per interruption does the work. With EventBridge and a node agent both configured, two deliveries
//! per interruption are the normal case, and Lambda and SQS retry on top of that; the claim that decides which one
//! acts is held by AWS, not by this container, so it holds across containers and retries.
//!
//! A claim holds a lease (`crate::lease`): its holder renews it while it works (`hold`), and a claim that is not renewed
//! lapses after a short while (`CLAIM_LEASE_SECONDS`, 15 s by default, never past the invocation's end). So a claimant
//! that dies (a panic, an out-of-memory kill, a lost execution environment) holds up the next delivery for at most one
//! lease: the retry Lambda sends a minute later always finds the claim lapsed and does the work.
//!
//! - **With the function's table** (`table::claim` lays out the item): one item per instance. A conditional
//!   UpdateItem takes it, and it is the only arbiter: only when there is none, when the last run recorded
//!   `incomplete`, or when the last claimant's lease ran out while it was still `in-progress`. A `done` claim stays
//!   done until a restore clears it. The item keeps the `episode` (the token of the claim that started this
//!   interruption's work) across takeovers.
//! - **Without it**: tags on the instance. EC2 tags have no conditional write, so each claimant writes its own tag
//!   `spot-cleanup:claim:<token>` = its lease (tokens start with the time, so they sort by age), waits `SETTLE`,
//!   reads the tags back, and the oldest live claim wins; the others remove theirs. A batch claims all its instances
//!   with one token, in one CreateTags. A finished cleanup leaves `DONE_TAG`. The window: two claimants both proceed
//!   only if one's tag becomes visible more than `SETTLE` after the other read the tags back (CreateTags slower than
//!   half a second to show). Both would then do the same idempotent work and both publish.
//!
//! A run that ends incomplete releases its claim so that its retry can finish the work. A run that did all the work
//! but could not publish its summary (SNS down) records `unpublished` with the summary in the table's item: its retry
//! takes the claim as for `incomplete`, finds the summary and publishes it, and does no AWS work again. (Tags cannot
//! hold a summary: there the retry does the idempotent work again.) A restore clears the claim, so a later
//! interruption of the same instance (after a stop) is handled again.

mod hold;
mod with_table;
mod with_tags;

use std::time::Duration;

use chrono::Utc;

use super::tags;
use crate::aws::{CallError, join_all};
use crate::changes::EniStatus;
use crate::input::Action;
use crate::input::InstanceId;
pub use crate::lease::Lease;
use crate::summary::Summary;
pub use crate::table::claim::ClaimState;
use crate::table::{self, stamp};
pub use hold::{HeldClaims, hold};
use with_table::claim_item;
use with_tags::{claim_key, claim_tags, is_claim_tag};

pub const CLAIM_TAG_PREFIX: &str = "spot-cleanup:claim:";
/// The tags' form of a claim whose work is done (the table's `done`); its key keeps the word it always had.
pub const DONE_TAG: &str = "spot-cleanup:handled";
/// How long a tag claimant waits for concurrent claims to become visible before reading them back.
pub const SETTLE: Duration = Duration::from_millis(500);

/// Where the claims are kept. The handles are owned, so that the task renewing the claims can keep them.
#[derive(Clone, Debug)]
pub enum ClaimStore {
    Table {
        dynamodb: aws_sdk_dynamodb::Client,
        table: String,
    },
    Tags {
        ec2: aws_sdk_ec2::Client,
    },
}

impl ClaimStore {
    /// Where a deployment keeps its claims: its table when it has one, else tags on the instance.
    pub fn new(table: Option<&str>, dynamodb: &aws_sdk_dynamodb::Client, ec2: &aws_sdk_ec2::Client) -> Self {
        match table {
            Some(table) => ClaimStore::Table {
                dynamodb: dynamodb.clone(),
                table: table.to_owned(),
            },
            None => ClaimStore::Tags { ec2: ec2.clone() },
        }
    }
}

/// What the claim said.
#[derive(Clone, Debug, PartialEq)]
pub enum Claim {
    /// This invocation does the work; `close` records how it went. `episode` names the interruption across
    /// takeovers (the token of the claim that started its work) for the records the work signs; empty with tags,
    /// whose claims cannot carry one safely.
    Won { token: Token, episode: String },
    /// Another delivery did the work (`done`) or is doing it (`in-progress`).
    Taken { state: ClaimState, since: Option<String> },
    /// The claim could not be read or written. The work goes ahead (it is idempotent) with this warning: a missed
    /// cleanup costs more than a repeated one.
    Unavailable(String),
    /// This invocation holds the claim of a run that did all the work but could not publish its summary: publishing it
    /// is all that is left.
    Unpublished { token: Token, summary: Box<Summary> },
}

/// How a run that held the claim ended.
#[derive(Clone, Copy, Debug)]
pub enum Ending<'a> {
    /// Nothing left to do: later deliveries end quietly. `quarantined`: an instance that may come back (a stop, a
    /// hibernation) stands quarantined, so the table's claim keeps this interruption (its `episode`) without expiry
    /// until a restore clears it. A record signed for an earlier interruption can then never be replayed, however
    /// long the instance stays stopped.
    Done { quarantined: bool },
    /// Released for a retry, which does the work again.
    Incomplete,
    /// The work is done, its summary not published: a retry publishes this one.
    Unpublished(&'a Summary),
}

impl Ending<'_> {
    /// The ending of a cleanup that left nothing to do.
    pub fn done(summary: &Summary) -> Ending<'static> {
        let may_come_back = summary.trigger.action.is_some_and(Action::may_come_back);
        let walled_off = summary
            .network_interfaces
            .iter()
            .any(|eni| matches!(eni.status, EniStatus::Quarantined | EniStatus::AlreadyQuarantined));
        Ending::Done {
            quarantined: may_come_back && walled_off,
        }
    }
}

/// This invocation's claim.
#[derive(Clone, Debug, PartialEq)]
pub struct Token(String);

impl Token {
    pub(super) fn new() -> Token {
        Token(crate::table::unique_token())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Take the claim of every instance, or learn who has it; one answer per instance, in order.
pub async fn claim_all(store: &ClaimStore, instances: &[InstanceId], lease: &Lease) -> Vec<Claim> {
    match store {
        ClaimStore::Table { dynamodb, table } => {
            join_all(
                instances
                    .iter()
                    .map(|instance| claim_item(dynamodb, table, instance, lease)),
            )
            .await
        }
        ClaimStore::Tags { ec2 } => claim_tags(ec2, instances, lease).await,
    }
}

/// Record how the work went: `done`, released for a retry, or left for a retry to publish.
pub async fn close(
    store: &ClaimStore,
    instance: &InstanceId,
    token: &Token,
    ending: Ending<'_>,
) -> Result<(), CallError> {
    match store {
        ClaimStore::Table { dynamodb, table } => {
            let (state, summary) = match ending {
                Ending::Done { .. } => (ClaimState::Done, None),
                Ending::Incomplete => (ClaimState::Incomplete, None),
                Ending::Unpublished(summary) => (ClaimState::Unpublished, serde_json::to_string(summary).ok()),
            };
            // The quarantine stands: the claim (and the interruption it names) outlives the table's TTL.
            let lasting = matches!(ending, Ending::Done { quarantined: true });
            let holder = (instance, token.as_str());
            let closed = table::claim::close(dynamodb, table, holder, state, summary, lasting)
                .send()
                .await;
            closed.map_err(|e| CallError::new("UpdateItem", &e))?;
            Ok(())
        }
        ClaimStore::Tags { ec2 } => {
            if matches!(ending, Ending::Done { .. }) {
                let done = tags::tag(DONE_TAG, &stamp(Utc::now()));
                tags::write(ec2, instance.as_str(), vec![done]).await?;
            }
            tags::delete(ec2, instance.as_str(), vec![claim_key(token.as_str())]).await
        }
    }
}

/// The interruption the instance's last claim worked on, for a restore to check its records against. None with tags
/// (they keep no episode), or when the table holds no claim (it expired after a day, or was cleared).
pub async fn episode(store: &ClaimStore, instance: &InstanceId) -> Result<Option<String>, CallError> {
    let ClaimStore::Table { dynamodb, table } = store else {
        return Ok(None);
    };
    let found = table::claim::get(dynamodb, table, instance).send().await;
    let found = found.map_err(|e| CallError::new("GetItem", &e))?;
    Ok(found.item().and_then(table::claim::episode))
}

/// Forget the claim: the instance was restored, so a later interruption is new work.
pub async fn clear(store: &ClaimStore, instance: &InstanceId) -> Result<(), CallError> {
    match store {
        ClaimStore::Table { dynamodb, table } => {
            let deleted = table::claim::delete(dynamodb, table, instance).send().await;
            deleted.map_err(|e| CallError::new("DeleteItem", &e))?;
            Ok(())
        }
        ClaimStore::Tags { ec2 } => {
            let mut found = tags::read(ec2, vec![instance.to_string()]).await?;
            let found = found.remove(instance.as_str()).unwrap_or_default();
            let keys: Vec<String> = found.into_keys().filter(|k| is_claim_tag(k)).collect();
            if keys.is_empty() {
                return Ok(());
            }
            tags::delete(ec2, instance.as_str(), keys).await
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
            claim_key(first.as_str()).len() <= 128,
            "EC2 tag keys are at most 128 characters"
        );
    }
}
