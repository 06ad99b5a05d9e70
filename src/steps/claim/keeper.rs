//! Keeping held claims alive while the work goes on: a task renews each one's lease, and notes any another delivery
//! took over meanwhile.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;

use super::{Lease, Marker, MarkerState, Token, claim_key};
use crate::aws::{CallError, join_all};
use crate::input::InstanceId;
use crate::steps::tags;
use crate::table::{CLAIM_SK, claim_pk, s, stamp};

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
                    .expression_attribute_values(":in_progress", s(MarkerState::InProgress.as_str()))
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

/// The renewal loop on paused tokio time: when each renewal is sent, for whom, and what a claim taken over does, with
/// the table's answers scripted (`aws-smithy-mocks`), so no wall clock decides the outcome.
#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use aws_sdk_dynamodb::operation::update_item::{UpdateItemInput, UpdateItemOutput};
    use aws_smithy_mocks::{RuleMode, mock, mock_client};
    use tokio::time::Instant;

    use super::{Lease, Marker, Token, keep};
    use crate::deadline::Deadline;
    use crate::input::InstanceId;
    use crate::table::claim_pk;
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
        let marker = Marker::Table {
            dynamodb,
            table: "spot-cleanup".into(),
        };
        let lease = Lease {
            length: Duration::from_secs(15),
            deadline: Deadline::none(),
        };
        let held = vec![(kept.clone(), Token::new()), (taken.clone(), Token::new())];

        let keeper = keep(&marker, held, lease);
        tokio::time::sleep(Duration::from_millis(16_500)).await;
        assert_eq!(
            keeper.lost().into_iter().collect::<Vec<_>>(),
            vec![taken.clone()],
            "the claim whose condition failed is lost, the other is still held"
        );
        drop(keeper);
        tokio::time::sleep(Duration::from_secs(30)).await;

        let (k, t) = (claim_pk(&kept), claim_pk(&taken));
        // The two claims of one round are renewed together: within a second, by partition.
        let mut sent = sent.lock().unwrap().clone();
        sent.sort();
        assert_eq!(
            sent,
            [(5, k.clone()), (5, t.clone()), (10, k.clone()), (10, t), (15, k)],
            "every 5 s (a third of the 15 s lease) for each held claim; none for the lost one after it was lost, \
             and none once the keeper is dropped"
        );
    }
}
