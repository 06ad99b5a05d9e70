//! Keeping held claims alive while the work goes on: their lease is renewed (`Lease::renew`), and any claim another
//! delivery took over meanwhile is noted.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use super::{ClaimStore, Lease, Token, claim_key};
use crate::aws::{CallError, join_all};
use crate::input::InstanceId;
use crate::lease::Renewal;
use crate::steps::tags;
use crate::table::{self, stamp};

/// The claims this run holds, renewed while the work goes on; dropping it stops the renewals (a finished run, or a
/// panic that unwinds through the run). The instances whose claim another delivery took over meanwhile are in `lost`.
pub struct HeldClaims {
    renewal: Renewal,
    lost: Arc<Mutex<HashSet<InstanceId>>>,
}

impl HeldClaims {
    pub fn lost(&self) -> HashSet<InstanceId> {
        self.lost
            .lock()
            .expect("never poisoned: no panics under the lock")
            .clone()
    }

    /// No more renewals: the run is about to record how it ended.
    pub fn stop(&self) {
        self.renewal.stop();
    }
}

/// Renew the lease of every claim in `held` until the returned `HeldClaims` is dropped.
pub fn hold(store: &ClaimStore, held: Vec<(InstanceId, Token)>, lease: Lease) -> HeldClaims {
    let lost = Arc::new(Mutex::new(HashSet::new()));
    let (store, held, lost_by_task) = (store.clone(), Arc::new(held), Arc::clone(&lost));
    let renewal = lease.renew(move |until| {
        let (store, held, lost) = (store.clone(), Arc::clone(&held), Arc::clone(&lost_by_task));
        async move { renew_round(&store, &held, &lost, until).await }
    });
    HeldClaims { renewal, lost }
}

/// One round: every claim not yet lost is renewed; one taken over is lost.
async fn renew_round(
    store: &ClaimStore,
    held: &[(InstanceId, Token)],
    lost: &Mutex<HashSet<InstanceId>>,
    until: DateTime<Utc>,
) {
    let still: Vec<&(InstanceId, Token)> = {
        let lost = lost.lock().expect("never poisoned: no panics under the lock");
        held.iter().filter(|(id, _)| !lost.contains(id)).collect()
    };
    for ((instance, _), renewed) in still.iter().zip(renew(store, &still, until).await) {
        match renewed {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(instance_id = instance.as_str(), "the claim was taken over");
                lost.lock().expect("never poisoned").insert(instance.clone());
            }
            // A failed renewal is tried again next time; the lease outlasts two of them.
            Err(error) => tracing::warn!(instance_id = instance.as_str(), %error, "the claim was not renewed"),
        }
    }
}

/// Push each held claim's lease to `until`. False: the claim is no longer this holder's.
async fn renew(
    store: &ClaimStore,
    held: &[&(InstanceId, Token)],
    until: DateTime<Utc>,
) -> Vec<Result<bool, CallError>> {
    match store {
        ClaimStore::Table { dynamodb, table } => {
            join_all(held.iter().map(|(instance, token)| async move {
                let renewed = table::claim::renew(dynamodb, table, instance, token.as_str(), until)
                    .send()
                    .await;
                table::conditional(renewed.map_err(|e| CallError::new("UpdateItem", &e)))
            }))
            .await
        }
        // One token per batch, so one CreateTags renews every instance's tag.
        ClaimStore::Tags { ec2 } => {
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

/// The renewal loop on paused tokio time: when each renewal is sent, for whom, and what a claim taken over does, with
/// the table's answers scripted (`aws-smithy-mocks`), so no wall clock decides the outcome.
#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use aws_sdk_dynamodb::operation::update_item::{UpdateItemInput, UpdateItemOutput};
    use aws_smithy_mocks::{RuleMode, mock, mock_client};
    use tokio::time::Instant;

    use super::{ClaimStore, Lease, Token, hold};
    use crate::deadline::Deadline;
    use crate::input::InstanceId;
    use crate::table::claim::pk as claim_pk;
    use crate::testing::quick_retries;

    const TAKEN: &str = r#"{"__type":"com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException","message":"The conditional request failed"}"#;

    fn pk(input: &UpdateItemInput) -> String {
        input
            .key()
            .and_then(|k| k.get("pk"))
            .and_then(|v| v.as_s().ok())
            .cloned()
            .unwrap_or_default()
    }

    #[tokio::test(start_paused = true)]
    async fn held_claims_are_renewed_every_third_of_a_lease_until_dropped_and_one_taken_over_is_lost() {
        let (kept, taken) = (
            InstanceId::parse("i-0aaaaaaaaaaaaaaa1").unwrap(),
            InstanceId::parse("i-0bbbbbbbbbbbbbbb2").unwrap(),
        );
        let start = Instant::now();
        // (seconds since start, the claim's partition) of every renewal, in order.
        let sent: Arc<Mutex<Vec<(u64, String)>>> = Arc::default();
        let record = move |sent: &Arc<Mutex<Vec<(u64, String)>>>, input: &UpdateItemInput| {
            sent.lock().unwrap().push((start.elapsed().as_secs(), pk(input)));
        };
        let keeps = {
            let (sent, want) = (sent.clone(), claim_pk(&kept));
            mock!(aws_sdk_dynamodb::Client::update_item)
                .match_requests(move |r| {
                    pk(r) == want && {
                        record(&sent, r);
                        true
                    }
                })
                .then_output(|| UpdateItemOutput::builder().build())
        };
        // The second claim's first renewal holds; then another delivery has taken it (the condition fails).
        let loses = {
            let (sent, want) = (sent.clone(), claim_pk(&taken));
            mock!(aws_sdk_dynamodb::Client::update_item)
                .match_requests(move |r| {
                    pk(r) == want && {
                        record(&sent, r);
                        true
                    }
                })
                .sequence()
                .output(|| UpdateItemOutput::builder().build())
                .http_status(400, Some(TAKEN.to_owned()))
                .repeatedly()
                .build()
        };
        let dynamodb = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&keeps, &loses], |c| c
            .retry_config(quick_retries()));
        let store = ClaimStore::Table {
            dynamodb,
            table: "spot-cleanup".into(),
        };
        let lease = Lease {
            length: Duration::from_secs(15),
            deadline: Deadline::none(),
        };
        let held = vec![(kept.clone(), Token::new()), (taken.clone(), Token::new())];

        let holding = hold(&store, held, lease);
        tokio::time::sleep(Duration::from_millis(16_500)).await;
        assert_eq!(
            holding.lost().into_iter().collect::<Vec<_>>(),
            vec![taken.clone()],
            "the claim whose condition failed is lost, the other is still held"
        );
        drop(holding);
        tokio::time::sleep(Duration::from_secs(30)).await;

        let (k, t) = (claim_pk(&kept), claim_pk(&taken));
        // The two claims of one round are renewed together: within a second, by partition.
        let mut sent = sent.lock().unwrap().clone();
        sent.sort();
        assert_eq!(
            sent,
            [(5, k.clone()), (5, t.clone()), (10, k.clone()), (10, t), (15, k)],
            "every 5 s (a third of the 15 s lease) for each held claim; none for the lost one after it was lost, \
             and none once the hold is dropped"
        );
    }
}
