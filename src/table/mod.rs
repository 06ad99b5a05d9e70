//! How the function's DynamoDB table is laid out, one file per kind of item: the registration index's items
//! (`registration`), the claims (`claim`) and the wave's items (`wave`). Only this module spells a key, an attribute
//! name or an expression; the calls that send the requests it builds are in `store`, `steps::claim`, `wave` and
//! `index`.
//!
//! Every item carries `expires_at` (epoch seconds, the table's TTL attribute), and the index's items `updated_at`
//! (RFC 3339, milliseconds, UTC, so strings compare in time order). An item past `expires_at` is ignored even before
//! DynamoDB deletes it, so an index whose refresh stopped empties itself instead of going stale.

pub mod claim;
mod registration;
pub mod wave;

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, SecondsFormat, Utc};

use crate::aws::CallError;
pub use claim::is_claim;
pub use registration::{
    Entry, GROUP_SK, GroupInfo, TargetKey, delete_if_not_newer, group_pk, is_group_item, put_if_not_newer,
};
pub use wave::is_wave;

pub type Item = HashMap<String, AttributeValue>;

/// Why an item could not be read: something else wrote it, or an older layout did.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ItemError {
    #[error("{0} is missing")]
    Missing(String),
    #[error("{0} is not a string")]
    NotText(String),
    #[error("{0} is not a number")]
    NotNumber(String),
    #[error("{attribute}: {reason}")]
    Unreadable { attribute: &'static str, reason: String },
    #[error("{0}")]
    Inconsistent(String),
}

/// The table's TTL attribute.
pub const TTL_ATTRIBUTE: &str = "expires_at";
/// How long every item of the table lives unless it is written again: an index item (a refresh rewrites an unchanged
/// one once less than half is left), a claim (by then the instance is long gone or was restored), the wave's items (by
/// then the wave is long over).
pub const TIME_TO_LIVE: Duration = Duration::from_secs(24 * 60 * 60);

/// A token no other writer makes: the time in milliseconds (so tokens sort by age), then 64 random bits.
pub fn unique_token() -> String {
    use std::hash::{BuildHasher, RandomState};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let random = RandomState::new().hash_one((nanos, std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
    format!("{:013}-{random:016x}", Utc::now().timestamp_millis())
}

/// A time as stored: fixed width, so that string order is time order (condition expressions rely on it).
pub fn stamp(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// An item's key.
pub fn key(pk: impl Into<String>, sk: impl Into<String>) -> Item {
    Item::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))])
}

pub fn key_of(item: &Item) -> Option<(String, String)> {
    let pk = item.get("pk")?.as_s().ok()?;
    let sk = item.get("sk")?.as_s().ok()?;
    Some((pk.clone(), sk.clone()))
}

/// A Query of every item filed under `pk`.
pub fn in_partition(query: QueryFluentBuilder, pk: &str) -> QueryFluentBuilder {
    query
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", s(pk))
}

/// A conditional write: true when it was made, false when its condition did not hold.
pub fn conditional<T>(written: Result<T, CallError>) -> Result<bool, CallError> {
    match written {
        Ok(_) => Ok(true),
        Err(e) if e.is("ConditionalCheckFailedException") => Ok(false),
        Err(e) => Err(e),
    }
}

/// Past its `expires_at`: DynamoDB's TTL deletes such items lazily, so readers skip them themselves.
pub fn is_expired(item: &Item, now: DateTime<Utc>) -> bool {
    expires_at(item).is_some_and(|at| at <= now.timestamp())
}

/// Whether a refresh should write the item again although nothing in it changed: less than half its life left.
pub fn needs_renewal(item: &Item, now: DateTime<Utc>) -> bool {
    let half = i64::try_from(TIME_TO_LIVE.as_secs() / 2).unwrap_or(i64::MAX);
    expires_at(item).is_none_or(|at| at - now.timestamp() < half)
}

/// Whether two items say the same thing, timestamps aside.
pub fn same_content(a: &Item, b: &Item) -> bool {
    let strip = |item: &Item| -> Item {
        item.iter()
            .filter(|(k, _)| k.as_str() != "updated_at" && k.as_str() != TTL_ATTRIBUTE)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    strip(a) == strip(b)
}

pub fn updated_at(item: &Item) -> Result<DateTime<Utc>, ItemError> {
    time(item, "updated_at")
}

/// An RFC 3339 time attribute, as `stamp` writes it.
fn time(item: &Item, attribute: &'static str) -> Result<DateTime<Utc>, ItemError> {
    DateTime::parse_from_rfc3339(text(item, attribute)?)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| ItemError::Unreadable {
            attribute,
            reason: e.to_string(),
        })
}

/// A JSON attribute.
fn json<T: serde::de::DeserializeOwned>(item: &Item, attribute: &'static str) -> Result<T, ItemError> {
    serde_json::from_str(text(item, attribute)?).map_err(|e| ItemError::Unreadable {
        attribute,
        reason: e.to_string(),
    })
}

fn expires_at(item: &Item) -> Option<i64> {
    item.get(TTL_ATTRIBUTE)?.as_n().ok()?.parse().ok()
}

/// The `expires_at` of an item written `now`: `TIME_TO_LIVE` later, in epoch seconds.
fn expires_from(now: DateTime<Utc>) -> AttributeValue {
    let ttl = i64::try_from(TIME_TO_LIVE.as_secs()).unwrap_or(i64::MAX);
    AttributeValue::N((now.timestamp() + ttl).to_string())
}

pub fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn text<'a>(item: &'a Item, name: &str) -> Result<&'a str, ItemError> {
    match item.get(name) {
        Some(AttributeValue::S(value)) => Ok(value),
        Some(_) => Err(ItemError::NotText(name.to_owned())),
        None => Err(ItemError::Missing(name.to_owned())),
    }
}

fn optional(item: &Item, name: &str) -> Option<String> {
    item.get(name).and_then(|v| v.as_s().ok()).cloned()
}
