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
//! A run that ends incomplete releases its claim so that its retry can finish the work. A run that did all the work
//! but could not publish its summary (SNS down) records `unpublished` with the summary in the table's item: its retry
//! takes the claim as for `incomplete`, finds the summary and publishes it, and does no AWS work again. (The tag
//! marker cannot hold a summary: there the retry does the idempotent work again.) A restore clears the marker, so a
//! later interruption of the same instance (after a stop) is handled again.

mod keeper;
mod with_table;
mod with_tags;

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::tags;
use crate::aws::{CallError, join_all};
use crate::changes::EniStatus;
use crate::deadline::Deadline;
use crate::input::Action;
use crate::input::InstanceId;
use crate::summary::Summary;
use crate::table::{CLAIM_SK, TTL_ATTRIBUTE, claim_pk, s, stamp};
pub use keeper::{Keeper, keep};
use with_table::claim_item;
use with_tags::{claim_key, claim_tags, is_marker_tag};

pub const CLAIM_TAG_PREFIX: &str = "spot-cleanup:claim:";
pub const HANDLED_TAG: &str = "spot-cleanup:handled";
/// How long a tag claimant waits for concurrent claims to become visible before reading them back.
pub const SETTLE: Duration = Duration::from_millis(500);
/// How long a claim lasts unless its holder renews it (`CLAIM_LEASE_SECONDS`).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);

/// Where the work a marker stands for is, as its `state` says: in the table's claim item, and in the warning of a
/// delivery that found it taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MarkerState {
    /// A delivery holds the claim and is doing the work.
    InProgress,
    /// The work is done: later deliveries end quietly.
    Done,
    /// The work was left for a retry, which may claim it at once.
    Incomplete,
    /// The work is done and its summary was not published: the retry that claims it publishes the summary kept in
    /// the item, and does no AWS work again.
    Unpublished,
}

impl MarkerState {
    /// The word stored in the table.
    pub fn as_str(self) -> &'static str {
        match self {
            MarkerState::InProgress => "in-progress",
            MarkerState::Done => "done",
            MarkerState::Incomplete => "incomplete",
            MarkerState::Unpublished => "unpublished",
        }
    }

    /// The state a stored word names; None for a word this function does not write.
    pub fn parse(word: &str) -> Option<Self> {
        [
            MarkerState::InProgress,
            MarkerState::Done,
            MarkerState::Incomplete,
            MarkerState::Unpublished,
        ]
        .into_iter()
        .find(|state| state.as_str() == word)
    }
}

impl std::fmt::Display for MarkerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

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
    /// This invocation does the work; `close` records how it went. `episode` names the interruption across
    /// takeovers (the token of the claim that started its work) for the records the work signs; empty with tags,
    /// whose claims cannot carry one safely.
    Won { token: Token, episode: String },
    /// Another delivery did the work (`done`) or is doing it (`in-progress`).
    Taken { state: MarkerState, since: Option<String> },
    /// The marker could not be read or written. The work goes ahead (it is idempotent) with this warning: a missed
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
    /// hibernation) stands quarantined, so the table's marker keeps this interruption (its `episode`) without expiry
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

/// Record how the work went: `done`, released for a retry, or left for a retry to publish.
pub async fn close(marker: &Marker, instance: &InstanceId, token: &Token, ending: Ending<'_>) -> Result<(), CallError> {
    match marker {
        Marker::Table { dynamodb, table } => {
            let (state, summary) = match ending {
                Ending::Done { .. } => (MarkerState::Done, None),
                Ending::Incomplete => (MarkerState::Incomplete, None),
                Ending::Unpublished(summary) => (MarkerState::Unpublished, serde_json::to_string(summary).ok()),
            };
            // The quarantine stands: the marker (and the interruption it names) outlives the table's TTL.
            let keep = matches!(ending, Ending::Done { quarantined: true });
            let update = dynamodb
                .update_item()
                .table_name(table)
                .key("pk", s(claim_pk(instance)))
                .key("sk", s(CLAIM_SK))
                .condition_expression("#token = :token")
                .expression_attribute_names("#state", "state")
                .expression_attribute_names("#token", "token")
                .expression_attribute_values(":state", s(state.as_str()))
                .expression_attribute_values(":now", s(stamp(Utc::now())))
                .expression_attribute_values(":token", s(token.as_str()));
            let update = match summary {
                Some(summary) => update
                    .update_expression("SET #state = :state, finished_at = :now, summary = :summary")
                    .expression_attribute_values(":summary", s(summary)),
                None if keep => update.update_expression(format!(
                    "SET #state = :state, finished_at = :now REMOVE summary, {TTL_ATTRIBUTE}"
                )),
                None => update.update_expression("SET #state = :state, finished_at = :now REMOVE summary"),
            };
            update.send().await.map_err(|e| CallError::new("UpdateItem", &e))?;
            Ok(())
        }
        Marker::Tags { ec2 } => {
            if matches!(ending, Ending::Done { .. }) {
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
    let found = crate::store::get_consistent(dynamodb, table, claim_pk(instance), CLAIM_SK).await?;
    Ok(found
        .as_ref()
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
