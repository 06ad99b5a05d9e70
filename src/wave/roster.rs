//! The wave in the function's table, under pk `wave` (`table::WAVE_PK`), so that cleanups in separate execution
//! environments share one driver:
//!
//! - sk `driver`: who drives (`token`) and until when it is known to be alive (`lease_until`, renewed as it works). It
//!   is taken with a conditional write when nobody holds it or its holder stopped renewing (it died), and deleted when
//!   the driver is done;
//! - sk `member#<instance id>`: an instance waiting for the wave: the cleanup's `token`, its notice time (`since`) and
//!   the instance as described (`instance`, JSON). The driver deletes it when it answers;
//! - sk `answer#<instance id>`: what the driver answered (`deregistration`, JSON), for the member with `token`.
//!
//! Times are `table::stamp`s, so strings compare in time order in condition expressions. Every item expires a day after
//! it was written.

use chrono::{DateTime, Utc};

use super::deregistration::Deregistration;
use super::state::Member;
use crate::aws::{Breaker, CallError};
use crate::input::InstanceId;
use crate::store;
use crate::table::{Item, ItemError, WAVE_PK, expires_from, s, stamp, text, time};

const DRIVER_SK: &str = "driver";
const MEMBER_PREFIX: &str = "member#";
const ANSWER_PREFIX: &str = "answer#";

/// One table's wave.
#[derive(Clone, Debug)]
pub struct Roster {
    /// The table's client for coordination (`Policy::COORDINATION`): retried until the deadline, no breaker.
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub table: String,
    /// The breaker of the table's client as a dependency (the claim, the index): once it has opened in this
    /// invocation, the table is taken for down and a cleanup does not join a wave.
    pub table_breaker: Breaker,
}

/// What a waiting member learns when it looks.
#[derive(Debug, Default)]
pub struct Look {
    /// Answers for the members asked about, with the token they answer.
    pub answers: Vec<(InstanceId, Deregistration)>,
    /// Whether somebody drives and is alive.
    pub driven: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RosterError {
    #[error(transparent)]
    Call(#[from] CallError),
    #[error("a wave item could not be read: {0}")]
    Item(#[from] ItemError),
}

impl Roster {
    /// Why the table is taken for down in this invocation, if it is: a call of the claim or the index failed for want
    /// of it.
    pub fn down_because(&self) -> Option<String> {
        self.table_breaker.opened_because()
    }

    /// Put the members on the roster, for whoever drives.
    pub async fn post(&self, members: &[Member]) -> Result<(), CallError> {
        let now = Utc::now();
        let requests = members
            .iter()
            .map(|member| store::put_request(member_item(member, now)))
            .collect();
        let written = store::write_all(&self.dynamodb, &self.table, requests).await;
        match written.errors.into_iter().next() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Everyone on the roster. An item that cannot be read (another version wrote it) is skipped.
    pub async fn members(&self) -> Result<Vec<Member>, CallError> {
        let items = store::query_prefix(&self.dynamodb, &self.table, WAVE_PK, MEMBER_PREFIX).await?;
        Ok(items
            .iter()
            .filter_map(|item| match member_from(item) {
                Ok(member) => Some(member),
                Err(error) => {
                    tracing::warn!(%error, "wave: a member item was skipped");
                    None
                }
            })
            .collect())
    }

    /// Take the wave's wheel: when nobody holds it, or its holder's lease ran out. False when someone else drives.
    pub async fn take(&self, token: &str, lease_until: DateTime<Utc>) -> Result<bool, CallError> {
        let now = Utc::now();
        let mut item = key(DRIVER_SK);
        item.insert("token".into(), s(token));
        item.insert("lease_until".into(), s(stamp(lease_until)));
        item.insert("expires_at".into(), expires_from(now));
        let taken = self
            .dynamodb
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk) OR lease_until < :now")
            .expression_attribute_values(":now", s(stamp(now)))
            .send()
            .await
            .map_err(|e| CallError::new("PutItem", &e));
        conditional(taken.map(|_| ()))
    }

    /// Renew the lease while driving. False when it was lost (it ran out and another cleanup took the wheel).
    pub async fn renew(&self, token: &str, lease_until: DateTime<Utc>) -> Result<bool, CallError> {
        let renewed = self
            .dynamodb
            .update_item()
            .table_name(&self.table)
            .key("pk", s(WAVE_PK))
            .key("sk", s(DRIVER_SK))
            .update_expression("SET lease_until = :until")
            .condition_expression("#token = :token")
            .expression_attribute_names("#token", "token")
            .expression_attribute_values(":token", s(token))
            .expression_attribute_values(":until", s(stamp(lease_until)))
            .send()
            .await
            .map_err(|e| CallError::new("UpdateItem", &e));
        conditional(renewed.map(|_| ()))
    }

    /// Let go of the wheel: the next member to come takes it.
    pub async fn release(&self, token: &str) -> Result<(), CallError> {
        let released = self
            .dynamodb
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(WAVE_PK))
            .key("sk", s(DRIVER_SK))
            .condition_expression("#token = :token")
            .expression_attribute_names("#token", "token")
            .expression_attribute_values(":token", s(token))
            .send()
            .await
            .map_err(|e| CallError::new("DeleteItem", &e));
        conditional(released.map(|_| ())).map(|_| ())
    }

    /// Answer a member (`Some`: another cleanup's, which reads it here), and take it off the roster.
    pub async fn answer(&self, member: &Member, deregistration: Option<&Deregistration>) -> Result<(), CallError> {
        let id = &member.instance.id;
        let mut requests = vec![store::delete_request(WAVE_PK.into(), format!("{MEMBER_PREFIX}{id}"))];
        if let Some(deregistration) = deregistration {
            let mut item = key(&format!("{ANSWER_PREFIX}{id}"));
            item.insert("token".into(), s(&member.token));
            item.insert("deregistration".into(), s(to_json(deregistration)));
            item.insert("expires_at".into(), expires_from(Utc::now()));
            requests.insert(0, store::put_request(item));
        }
        let written = store::write_all(&self.dynamodb, &self.table, requests).await;
        match written.errors.into_iter().next() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// The answers for `waiting` (instance and token) so far, and whether somebody is driving.
    pub async fn look(&self, waiting: &[(InstanceId, String)]) -> Result<Look, RosterError> {
        let mut sks: Vec<String> = waiting.iter().map(|(id, _)| format!("{ANSWER_PREFIX}{id}")).collect();
        sks.push(DRIVER_SK.into());
        let mut look = Look::default();
        let now = Utc::now();
        for chunk in sks.chunks(100) {
            for item in store::get_many(&self.dynamodb, &self.table, WAVE_PK, chunk).await? {
                let sk = text(&item, "sk")?;
                if sk == DRIVER_SK {
                    look.driven = time(&item, "lease_until")? >= now;
                    continue;
                }
                let Some(id) = sk.strip_prefix(ANSWER_PREFIX) else {
                    continue;
                };
                let token = text(&item, "token")?;
                let asked = waiting.iter().find(|(w, t)| w.as_str() == id && t == token);
                if let Some((id, _)) = asked {
                    let json = text(&item, "deregistration")?;
                    let deregistration = serde_json::from_str(json).map_err(|e| ItemError::Unreadable {
                        attribute: "deregistration",
                        reason: e.to_string(),
                    })?;
                    look.answers.push((id.clone(), deregistration));
                }
            }
        }
        Ok(look)
    }
}

fn key(sk: &str) -> Item {
    Item::from([("pk".to_owned(), s(WAVE_PK)), ("sk".to_owned(), s(sk))])
}

fn member_item(member: &Member, now: DateTime<Utc>) -> Item {
    let mut item = key(&format!("{MEMBER_PREFIX}{}", member.instance.id));
    item.insert("token".into(), s(&member.token));
    item.insert("since".into(), s(stamp(member.since)));
    item.insert("instance".into(), s(to_json(&member.instance)));
    item.insert("expires_at".into(), expires_from(now));
    item
}

fn member_from(item: &Item) -> Result<Member, ItemError> {
    let instance = serde_json::from_str(text(item, "instance")?).map_err(|e| ItemError::Unreadable {
        attribute: "instance",
        reason: e.to_string(),
    })?;
    Ok(Member {
        token: text(item, "token")?.to_owned(),
        instance,
        since: time(item, "since")?,
    })
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("plain data serializes")
}

/// A conditional write: true when it was made, false when its condition did not hold.
fn conditional(written: Result<(), CallError>) -> Result<bool, CallError> {
    match written {
        Ok(()) => Ok(true),
        Err(e) if e.is("ConditionalCheckFailedException") => Ok(false),
        Err(e) => Err(e),
    }
}
