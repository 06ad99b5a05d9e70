//! The wave's items (see `wave::roster`), under pk `wave`, so that cleanups in separate execution environments share
//! one driver:
//!
//! - sk `driver`: the driver's lease: who holds it (`token`) and until when (`lease_until`, renewed as it works). It
//!   is taken with a conditional write when nobody holds it or its lease ran out (its holder died), and deleted when
//!   the driver is done;
//! - sk `member#<instance id>`: an instance waiting for the wave: the cleanup's `token`, its notice time (`since`) and
//!   the instance as described (`instance`, JSON). The driver deletes it when it answers;
//! - sk `answer#<instance id>`: what the driver answered (`deregistration`, JSON), for the member with `token`.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::delete_item::builders::DeleteItemFluentBuilder;
use aws_sdk_dynamodb::operation::put_item::builders::PutItemFluentBuilder;
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Item, ItemError, expires_from, json, key, key_of, s, stamp, text, time};
use crate::input::InstanceId;

/// The wave's partition: not the index's to keep or delete.
pub const WAVE_PK: &str = "wave";
const DRIVER_SK: &str = "driver";
const MEMBER_PREFIX: &str = "member#";
const ANSWER_PREFIX: &str = "answer#";

/// Whether an item belongs to the wave rather than to the index.
pub fn is_wave(item: &Item) -> bool {
    key_of(item).is_some_and(|(pk, _)| pk == WAVE_PK)
}

/// Take the driver's lease for `token`: when nobody holds it, or its holder's lease ran out.
pub fn take_lease(dynamodb: &Client, table: &str, token: &str, until: DateTime<Utc>) -> PutItemFluentBuilder {
    let now = Utc::now();
    let mut item = key(WAVE_PK, DRIVER_SK);
    item.insert("token".into(), s(token));
    item.insert("lease_until".into(), s(stamp(until)));
    item.insert("expires_at".into(), expires_from(now));
    dynamodb
        .put_item()
        .table_name(table)
        .set_item(Some(item))
        .condition_expression("attribute_not_exists(pk) OR lease_until < :now")
        .expression_attribute_values(":now", s(stamp(now)))
}

/// Push the driver's lease to `until`, while `token` holds it.
pub fn renew_lease(dynamodb: &Client, table: &str, token: &str, until: DateTime<Utc>) -> UpdateItemFluentBuilder {
    dynamodb
        .update_item()
        .table_name(table)
        .set_key(Some(key(WAVE_PK, DRIVER_SK)))
        .update_expression("SET lease_until = :until")
        .condition_expression("#token = :token")
        .expression_attribute_names("#token", "token")
        .expression_attribute_values(":token", s(token))
        .expression_attribute_values(":until", s(stamp(until)))
}

/// Let go of the driver's lease, while `token` holds it.
pub fn release_lease(dynamodb: &Client, table: &str, token: &str) -> DeleteItemFluentBuilder {
    dynamodb
        .delete_item()
        .table_name(table)
        .set_key(Some(key(WAVE_PK, DRIVER_SK)))
        .condition_expression("#token = :token")
        .expression_attribute_names("#token", "token")
        .expression_attribute_values(":token", s(token))
}

/// A member's item: `instance` as described, waiting since `since`.
pub fn member_item<T: Serialize>(id: &InstanceId, token: &str, since: DateTime<Utc>, instance: &T) -> Item {
    let mut item = key(WAVE_PK, format!("{MEMBER_PREFIX}{id}"));
    item.insert("token".into(), s(token));
    item.insert("since".into(), s(stamp(since)));
    item.insert("instance".into(), s(to_json(instance)));
    item.insert("expires_at".into(), expires_from(Utc::now()));
    item
}

/// A member's item read back: its token, instance and notice time.
pub fn member_from<T: DeserializeOwned>(item: &Item) -> Result<(String, T, DateTime<Utc>), ItemError> {
    let instance = json(item, "instance")?;
    Ok((text(item, "token")?.to_owned(), instance, time(item, "since")?))
}

/// The key of a member's item, to take it off the roster.
pub fn member_key(id: &InstanceId) -> (String, String) {
    (WAVE_PK.to_owned(), format!("{MEMBER_PREFIX}{id}"))
}

/// Every member's item, read consistently.
pub fn members(dynamodb: &Client, table: &str) -> QueryFluentBuilder {
    dynamodb
        .query()
        .table_name(table)
        .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
        .expression_attribute_values(":pk", s(WAVE_PK))
        .expression_attribute_values(":prefix", s(MEMBER_PREFIX))
        .consistent_read(true)
}

/// The answer for the member of `id` with `token`.
pub fn answer_item<T: Serialize>(id: &InstanceId, token: &str, answer: &T) -> Item {
    let mut item = key(WAVE_PK, format!("{ANSWER_PREFIX}{id}"));
    item.insert("token".into(), s(token));
    item.insert("deregistration".into(), s(to_json(answer)));
    item.insert("expires_at".into(), expires_from(Utc::now()));
    item
}

/// The sort keys a waiting member reads: the answers for `ids`, and the driver's lease.
pub fn look_keys<'a>(ids: impl Iterator<Item = &'a InstanceId>) -> Vec<String> {
    let mut sks: Vec<String> = ids.map(|id| format!("{ANSWER_PREFIX}{id}")).collect();
    sks.push(DRIVER_SK.into());
    sks
}

/// The answers among what a waiting member read, as (instance id, token of the member answered, item).
pub type Answers<'a> = Vec<(&'a str, &'a str, &'a Item)>;

/// What a waiting member read: whether the driver's lease still holds at `now`, and the answers.
pub fn looked(items: &[Item], now: DateTime<Utc>) -> Result<(bool, Answers<'_>), ItemError> {
    let (mut driven, mut answers) = (false, Vec::new());
    for item in items {
        let sk = text(item, "sk")?;
        if sk == DRIVER_SK {
            driven = time(item, "lease_until")? >= now;
        } else if let Some(id) = sk.strip_prefix(ANSWER_PREFIX) {
            answers.push((id, text(item, "token")?, item));
        }
    }
    Ok((driven, answers))
}

/// What an answer's item says.
pub fn answer_from<T: DeserializeOwned>(item: &Item) -> Result<T, ItemError> {
    json(item, "deregistration")
}

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("plain data serializes")
}
