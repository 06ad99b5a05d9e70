//! The wave's roster in the function's table (its items are `table::wave`'s), so that cleanups in separate execution
//! environments share one driver: the members waiting, the answers given, and the driver's lease.

use chrono::{DateTime, Utc};

use super::deregistration::Deregistration;
use super::state::Member;
use crate::aws::{Breaker, CallError};
use crate::input::InstanceId;
use crate::lease::{Lease, Renewal};
use crate::store;
use crate::table::wave::{self as items, WAVE_PK};
use crate::table::{ItemError, conditional};

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
        let requests = members
            .iter()
            .map(|m| store::put_request(items::member_item(&m.instance.id, &m.token, m.since, &m.instance)))
            .collect();
        self.write(requests).await
    }

    /// Everyone on the roster. An item that cannot be read (another version wrote it) is skipped.
    pub async fn members(&self) -> Result<Vec<Member>, CallError> {
        let found = store::every_page(items::members(&self.dynamodb, &self.table)).await?;
        Ok(found
            .iter()
            .filter_map(|item| match items::member_from(item) {
                Ok((token, instance, since)) => Some(Member { token, instance, since }),
                Err(error) => {
                    tracing::warn!(%error, "wave: a member item was skipped");
                    None
                }
            })
            .collect())
    }

    /// Take the driver's lease: when nobody holds it, or its holder's lease ran out. False when someone else drives.
    pub async fn take(&self, token: &str, until: DateTime<Utc>) -> Result<bool, CallError> {
        let taken = items::take_lease(&self.dynamodb, &self.table, token, until)
            .send()
            .await;
        conditional(taken.map_err(|e| CallError::new("PutItem", &e)))
    }

    /// Renew the driver's lease while driving. False when it was lost (it ran out and another cleanup took it).
    pub async fn renew(&self, token: &str, until: DateTime<Utc>) -> Result<bool, CallError> {
        let renewed = items::renew_lease(&self.dynamodb, &self.table, token, until)
            .send()
            .await;
        conditional(renewed.map_err(|e| CallError::new("UpdateItem", &e)))
    }

    /// Renew the driver's lease held with `token` while the driver drives, until the returned `Renewal` is dropped.
    pub fn keep(&self, token: &str, lease: Lease) -> Renewal {
        let (roster, token) = (self.clone(), token.to_owned());
        lease.renew(move |until| {
            let (roster, token) = (roster.clone(), token.clone());
            async move {
                match roster.renew(&token, until).await {
                    Ok(true) => {}
                    Ok(false) => tracing::warn!("wave: the driver's lease ran out and another cleanup took it"),
                    Err(error) => tracing::warn!(%error, "wave: the driver's lease was not renewed"),
                }
            }
        })
    }

    /// Let go of the driver's lease: the next member to come takes it.
    pub async fn release(&self, token: &str) -> Result<(), CallError> {
        let released = items::release_lease(&self.dynamodb, &self.table, token).send().await;
        conditional(released.map_err(|e| CallError::new("DeleteItem", &e))).map(|_| ())
    }

    /// Answer a member (`Some`: another cleanup's, which reads it here), and take it off the roster.
    pub async fn answer(&self, member: &Member, deregistration: Option<&Deregistration>) -> Result<(), CallError> {
        let id = &member.instance.id;
        let (pk, sk) = items::member_key(id);
        let mut requests = vec![store::delete_request(pk, sk)];
        if let Some(deregistration) = deregistration {
            let item = items::answer_item(id, &member.token, deregistration);
            requests.insert(0, store::put_request(item));
        }
        self.write(requests).await
    }

    /// The answers for `waiting` (instance and token) so far, and whether somebody is driving.
    pub async fn look(&self, waiting: &[(InstanceId, String)]) -> Result<Look, RosterError> {
        let sks = items::look_keys(waiting.iter().map(|(id, _)| id));
        let mut look = Look::default();
        let now = Utc::now();
        for chunk in sks.chunks(100) {
            let found = store::get_many(&self.dynamodb, &self.table, WAVE_PK, chunk).await?;
            let (driven, answers) = items::looked(&found, now)?;
            look.driven |= driven;
            for (id, token, item) in answers {
                if let Some((id, _)) = waiting.iter().find(|(w, t)| w.as_str() == id && t == token) {
                    look.answers.push((id.clone(), items::answer_from(item)?));
                }
            }
        }
        Ok(look)
    }

    async fn write(&self, requests: Vec<aws_sdk_dynamodb::types::WriteRequest>) -> Result<(), CallError> {
        let written = store::write_all(&self.dynamodb, &self.table, requests).await;
        written.errors.into_iter().next().map_or(Ok(()), Err)
    }
}

/// The driver's lease renewed on paused tokio time, with the table's answers scripted (`aws-smithy-mocks`): when each
/// renewal is sent, what it asks, and that a lost lease and a dropped renewal behave.
#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use aws_sdk_dynamodb::operation::update_item::{UpdateItemInput, UpdateItemOutput};
    use aws_smithy_mocks::{RuleMode, mock, mock_client};
    use chrono::{DateTime, Utc};
    use tokio::time::Instant;

    use super::Roster;
    use crate::deadline::Deadline;
    use crate::lease::Lease;
    use crate::table::{key, s};
    use crate::testing::quick_retries;

    const TAKEN: &str = r#"{"__type":"com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException","message":"The conditional request failed"}"#;

    #[tokio::test(start_paused = true)]
    async fn the_drivers_lease_is_renewed_every_third_of_a_lease_until_dropped() {
        let start = Instant::now();
        // (seconds since start, seconds the lease was pushed ahead) of every renewal, in order.
        let sent: Arc<Mutex<Vec<(u64, i64)>>> = Arc::default();
        let asks = |input: &UpdateItemInput| {
            let value = |name: &str| input.expression_attribute_values().and_then(|v| v.get(name)).cloned();
            input.key() == Some(&key("wave", "driver"))
                && input.condition_expression() == Some("#token = :token")
                && value(":token") == Some(s("the-driver"))
        };
        let until = |input: &UpdateItemInput| {
            let value = input.expression_attribute_values().and_then(|v| v.get(":until"));
            let text = value.and_then(|v| v.as_s().ok()).expect(":until is a string");
            (DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc) - Utc::now()).num_seconds()
        };
        // The second renewal finds the lease taken by another cleanup: the driver warns and goes on renewing.
        let renewals = {
            let sent = sent.clone();
            mock!(aws_sdk_dynamodb::Client::update_item)
                .match_requests(move |r| {
                    asks(r) && {
                        sent.lock().unwrap().push((start.elapsed().as_secs(), until(r)));
                        true
                    }
                })
                .sequence()
                .output(|| UpdateItemOutput::builder().build())
                .http_status(400, Some(TAKEN.to_owned()))
                .output(|| UpdateItemOutput::builder().build())
                .repeatedly()
                .build()
        };
        let dynamodb = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&renewals], |c| c
            .retry_config(quick_retries()));
        let budget = crate::aws::CallBudget::default();
        let roster = Roster {
            dynamodb,
            table: "spot-cleanup".into(),
            table_breaker: crate::aws::Breaker::new("DynamoDB", &budget),
        };
        let lease = Lease {
            length: Duration::from_secs(15),
            deadline: Deadline::none(),
        };

        let renewal = roster.keep("the-driver", lease);
        tokio::time::sleep(Duration::from_millis(16_500)).await;
        drop(renewal);
        tokio::time::sleep(Duration::from_secs(30)).await;

        let sent = sent.lock().unwrap().clone();
        let when: Vec<u64> = sent.iter().map(|(at, _)| *at).collect();
        assert_eq!(
            when,
            [5, 10, 15],
            "every 5 s (a third of the 15 s lease), and none once dropped"
        );
        assert!(
            sent.iter().all(|(_, ahead)| (14..=15).contains(ahead)),
            "each renewal pushes the lease a whole length ahead: {sent:?}"
        );
    }
}
