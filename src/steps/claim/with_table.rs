//! The marker in the function's table: one conditional UpdateItem takes it.

use chrono::Utc;

use super::{Claim, Lease, MarkerState, Token};
use crate::aws::CallError;
use crate::input::InstanceId;
use crate::table::{CLAIM_SK, claim_pk, expires_from, s, stamp};

pub(super) async fn claim_item(
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
    instance: &InstanceId,
    lease: &Lease,
) -> Claim {
    let token = Token::new();
    let now = Utc::now();
    let taken = dynamodb
        .update_item()
        .table_name(table)
        .key("pk", s(claim_pk(instance)))
        .key("sk", s(CLAIM_SK))
        .update_expression(
            "SET #token = :token, #state = :in_progress, claimed_at = :now, lease_until = :until, \
             expires_at = :expires, episode = if_not_exists(episode, :token)",
        )
        .condition_expression(
            "attribute_not_exists(pk) OR #state IN (:incomplete, :unpublished) \
             OR (#state = :in_progress AND lease_until < :now)",
        )
        .expression_attribute_names("#token", "token")
        .expression_attribute_names("#state", "state")
        .expression_attribute_values(":token", s(token.as_str()))
        .expression_attribute_values(":in_progress", s(MarkerState::InProgress.as_str()))
        .expression_attribute_values(":incomplete", s(MarkerState::Incomplete.as_str()))
        .expression_attribute_values(":unpublished", s(MarkerState::Unpublished.as_str()))
        .expression_attribute_values(":now", s(stamp(now)))
        .expression_attribute_values(":until", s(stamp(lease.until())))
        .expression_attribute_values(":expires", expires_from(now))
        .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
        .send()
        .await;
    match taken.map_err(|e| CallError::new("UpdateItem", &e)) {
        Ok(output) => {
            let old = |name: &str| {
                output
                    .attributes()
                    .and_then(|a| a.get(name))
                    .and_then(|v| v.as_s().ok())
                    .cloned()
            };
            // A run before this one did the work and could not publish: its summary is all that is left.
            let summary = (old("state").as_deref() == Some(MarkerState::Unpublished.as_str()))
                .then(|| old("summary"))
                .flatten()
                .and_then(|text| serde_json::from_str(&text).ok());
            match summary {
                Some(summary) => Claim::Unpublished {
                    token,
                    summary: Box::new(summary),
                },
                None => {
                    let episode = old("episode").unwrap_or_else(|| token.as_str().to_owned());
                    Claim::Won { token, episode }
                }
            }
        }
        Err(e) if e.is("ConditionalCheckFailedException") => {
            let held = crate::store::get_consistent(dynamodb, table, claim_pk(instance), CLAIM_SK).await;
            let item = held.ok().flatten().unwrap_or_default();
            let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
            Claim::Taken {
                // The condition fails only on a claim in progress or done; one gone meanwhile was in progress.
                state: text("state")
                    .and_then(|word| MarkerState::parse(&word))
                    .unwrap_or(MarkerState::InProgress),
                since: text("claimed_at"),
            }
        }
        Err(e) => Claim::Unavailable(format!(
            "the delivery marker could not be written ({}); handled as a first delivery",
            e.reason()
        )),
    }
}
