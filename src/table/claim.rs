//! The claims' items: one per instance, pk `claim#<instance id>`, sk `claim` (the index's items are `instance#`,
//! `ip#` and `group#`, so they cannot collide, and the index refresh leaves them alone). The item holds the claim's
//! `token`, its `state`, `claimed_at`, its lease (`lease_until`), the `episode` (the token of the claim that started
//! this interruption's work, kept across takeovers) and, when a run could not publish, its `summary` (JSON).

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::delete_item::builders::DeleteItemFluentBuilder;
use aws_sdk_dynamodb::operation::get_item::builders::GetItemFluentBuilder;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::ReturnValue;
use chrono::{DateTime, Utc};

use super::{Item, TTL_ATTRIBUTE, expires_from, key, key_of, optional, s, stamp};
use crate::input::InstanceId;

const CLAIM_PK_PREFIX: &str = "claim#";
const CLAIM_SK: &str = "claim";

/// Where the work a claim stands for is, as its `state` says: in the table's item, and in the warning of a delivery
/// that found it taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimState {
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

impl ClaimState {
    /// The word stored in the table.
    pub fn as_str(self) -> &'static str {
        match self {
            ClaimState::InProgress => "in-progress",
            ClaimState::Done => "done",
            ClaimState::Incomplete => "incomplete",
            ClaimState::Unpublished => "unpublished",
        }
    }

    /// The state a stored word names; None for a word this function does not write.
    pub fn parse(word: &str) -> Option<Self> {
        [Self::InProgress, Self::Done, Self::Incomplete, Self::Unpublished]
            .into_iter()
            .find(|state| state.as_str() == word)
    }
}

impl std::fmt::Display for ClaimState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The partition key of an instance's claim.
pub fn pk(instance: &InstanceId) -> String {
    format!("{CLAIM_PK_PREFIX}{instance}")
}

/// Whether an item is a claim rather than the index's.
pub fn is_claim(item: &Item) -> bool {
    key_of(item).is_some_and(|(pk, _)| pk.starts_with(CLAIM_PK_PREFIX))
}

/// Take the claim when there is none, when the last run recorded `incomplete` or `unpublished`, or when the last
/// holder's lease ran out while it was still `in-progress`; the old item comes back (`taken_over`).
pub fn take(
    dynamodb: &Client,
    table: &str,
    instance: &InstanceId,
    token: &str,
    until: DateTime<Utc>,
) -> UpdateItemFluentBuilder {
    let now = Utc::now();
    update(dynamodb, table, instance, token)
        .update_expression(
            "SET #token = :token, #state = :in_progress, claimed_at = :now, lease_until = :until, \
             expires_at = :expires, episode = if_not_exists(episode, :token)",
        )
        .condition_expression(
            "attribute_not_exists(pk) OR #state IN (:incomplete, :unpublished) \
             OR (#state = :in_progress AND lease_until < :now)",
        )
        .expression_attribute_names("#state", "state")
        .expression_attribute_values(":in_progress", s(ClaimState::InProgress.as_str()))
        .expression_attribute_values(":incomplete", s(ClaimState::Incomplete.as_str()))
        .expression_attribute_values(":unpublished", s(ClaimState::Unpublished.as_str()))
        .expression_attribute_values(":now", s(stamp(now)))
        .expression_attribute_values(":until", s(stamp(until)))
        .expression_attribute_values(":expires", expires_from(now))
        .return_values(ReturnValue::AllOld)
}

/// What a claim `take` took over leaves (its old item): the episode it carried, and the summary of a run that could
/// not publish (JSON).
pub fn taken_over(old: Option<&Item>) -> (Option<String>, Option<String>) {
    let old = |name| old.and_then(|item| optional(item, name));
    let unpublished = old("state").as_deref() == Some(ClaimState::Unpublished.as_str());
    (old("episode"), old("summary").filter(|_| unpublished))
}

/// Push the claim's lease to `until`, while `token` holds it and it is in progress.
pub fn renew(
    dynamodb: &Client,
    table: &str,
    instance: &InstanceId,
    token: &str,
    until: DateTime<Utc>,
) -> UpdateItemFluentBuilder {
    update(dynamodb, table, instance, token)
        .update_expression("SET lease_until = :until")
        .condition_expression("#token = :token AND #state = :in_progress")
        .expression_attribute_names("#state", "state")
        .expression_attribute_values(":until", s(stamp(until)))
        .expression_attribute_values(":in_progress", s(ClaimState::InProgress.as_str()))
}

/// Record how the work went, while `token` holds the claim: `summary` is kept for `unpublished`; `lasting` takes the
/// expiry off (the claim then outlives the table's TTL, until a restore clears it).
pub fn close(
    dynamodb: &Client,
    table: &str,
    (instance, token): (&InstanceId, &str),
    state: ClaimState,
    summary: Option<String>,
    lasting: bool,
) -> UpdateItemFluentBuilder {
    let update = update(dynamodb, table, instance, token)
        .condition_expression("#token = :token")
        .expression_attribute_names("#state", "state")
        .expression_attribute_values(":state", s(state.as_str()))
        .expression_attribute_values(":now", s(stamp(Utc::now())));
    match summary {
        Some(summary) => update
            .update_expression("SET #state = :state, finished_at = :now, summary = :summary")
            .expression_attribute_values(":summary", s(summary)),
        None if lasting => update.update_expression(format!(
            "SET #state = :state, finished_at = :now REMOVE summary, {TTL_ATTRIBUTE}"
        )),
        None => update.update_expression("SET #state = :state, finished_at = :now REMOVE summary"),
    }
}

/// The claim's item, read consistently (it decides who holds the claim).
pub fn get(dynamodb: &Client, table: &str, instance: &InstanceId) -> GetItemFluentBuilder {
    dynamodb
        .get_item()
        .table_name(table)
        .set_key(Some(key(pk(instance), CLAIM_SK)))
        .consistent_read(true)
}

/// Who holds a claim that could not be taken: its state, and since when. The condition fails only on a claim in
/// progress or done; one gone meanwhile was in progress.
pub fn holder(item: &Item) -> (ClaimState, Option<String>) {
    let state = optional(item, "state").and_then(|word| ClaimState::parse(&word));
    (state.unwrap_or(ClaimState::InProgress), optional(item, "claimed_at"))
}

/// The interruption a claim's item names.
pub fn episode(item: &Item) -> Option<String> {
    optional(item, "episode")
}

/// Forget the claim.
pub fn delete(dynamodb: &Client, table: &str, instance: &InstanceId) -> DeleteItemFluentBuilder {
    dynamodb
        .delete_item()
        .table_name(table)
        .set_key(Some(key(pk(instance), CLAIM_SK)))
}

/// An UpdateItem of the claim's item, with `#token` and `:token` set.
fn update(dynamodb: &Client, table: &str, instance: &InstanceId, token: &str) -> UpdateItemFluentBuilder {
    dynamodb
        .update_item()
        .table_name(table)
        .set_key(Some(key(pk(instance), CLAIM_SK)))
        .expression_attribute_names("#token", "token")
        .expression_attribute_values(":token", s(token))
}
