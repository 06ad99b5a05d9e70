//! The claim in the function's table: one conditional UpdateItem takes it (`table::claim` spells it).

use super::{Claim, Lease, Token};
use crate::aws::CallError;
use crate::input::InstanceId;
use crate::table::claim;

pub(super) async fn claim_item(
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
    instance: &InstanceId,
    lease: &Lease,
) -> Claim {
    let token = Token::new();
    let taken = claim::take(dynamodb, table, instance, token.as_str(), lease.until())
        .send()
        .await;
    match taken.map_err(|e| CallError::new("UpdateItem", &e)) {
        Ok(output) => {
            let (episode, summary) = claim::taken_over(output.attributes());
            // A run before this one did the work and could not publish: its summary is all that is left.
            match summary.and_then(|text| serde_json::from_str(&text).ok()) {
                Some(summary) => Claim::Unpublished {
                    token,
                    summary: Box::new(summary),
                },
                None => {
                    let episode = episode.unwrap_or_else(|| token.as_str().to_owned());
                    Claim::Won { token, episode }
                }
            }
        }
        Err(e) if e.is("ConditionalCheckFailedException") => {
            let held = claim::get(dynamodb, table, instance).send().await;
            let item = held.ok().and_then(|found| found.item().cloned()).unwrap_or_default();
            let (state, since) = claim::holder(&item);
            Claim::Taken { state, since }
        }
        Err(e) => Claim::Unavailable(format!(
            "the claim could not be written ({}); handled as a first delivery",
            e.reason()
        )),
    }
}
