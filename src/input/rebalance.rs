//! EC2's rebalance recommendation: the instance is at elevated risk of a Spot interruption. What to do about it is
//! the operator's choice (`REBALANCE_ACTION`), decided after parsing.

use aws_lambda_events::eventbridge::EventBridgeEvent;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Action, InputError, InstanceId, Request, eventbridge_trigger};

pub const REBALANCE_RECOMMENDATION: &str = "EC2 Instance Rebalance Recommendation";

#[derive(Serialize, Deserialize)]
struct RebalanceDetail {
    #[serde(rename = "instance-id")]
    instance_id: String,
}

pub(super) fn parse(payload: &Value) -> Result<Request, InputError> {
    let event: EventBridgeEvent<RebalanceDetail> =
        serde_json::from_value(payload.clone()).map_err(|e| InputError::malformed("rebalance recommendation", e))?;
    let (detail, trigger) = eventbridge_trigger(event, Some(Action::Rebalance), None)?;
    Ok(Request {
        instance_id: InstanceId::parse(&detail.instance_id)?,
        trigger,
        identity: None,
    })
}

#[cfg(test)]
mod tests {
    use super::super::{Invocation, parse_invocation};
    use super::*;

    #[test]
    fn a_rebalance_recommendation_names_its_instance() {
        let text = include_str!("../../events/rebalance-recommendation.json");
        let Invocation::Direct(request) = parse_invocation(&serde_json::from_str(text).unwrap()).unwrap() else {
            panic!("expected one request")
        };
        assert_eq!(request.instance_id.as_str(), "i-0123456789abcdef0");
        assert_eq!(request.trigger.action, Some(Action::Rebalance));
        assert_eq!(request.trigger.region.as_deref(), Some("us-east-1"));
        assert!(request.trigger.lifecycle.is_none());

        let bad = serde_json::json!({
            "source": "aws.ec2", "detail-type": REBALANCE_RECOMMENDATION, "detail": {"instance-id": "i-nope"}
        });
        let message = parse_invocation(&bad).unwrap_err().to_string();
        assert!(message.contains("invalid instance id"), "{message}");
    }
}
