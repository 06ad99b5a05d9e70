//! EC2's rebalance recommendation: the instance is at elevated risk of a Spot interruption. What to do about it is
//! the operator's choice (`REBALANCE_ACTION`), decided after parsing.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::envelope::{event, trigger};
use crate::error::InputError;
use crate::request::Request;
use crate::trigger::Action;
use crate::values::InstanceId;

#[derive(Serialize, Deserialize)]
struct RebalanceDetail {
    #[serde(rename = "instance-id")]
    instance_id: String,
}

pub(crate) fn parse(payload: &Value) -> Result<Request, InputError> {
    let event = event::<RebalanceDetail>(payload, "rebalance recommendation")?;
    let (detail, trigger) = trigger(event, Some(Action::Rebalance), None)?;
    Ok(Request {
        instance_id: InstanceId::parse(&detail.instance_id)?,
        trigger,
        identity: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::REBALANCE_RECOMMENDATION;
    use crate::samples::sample;
    use crate::{Invocation, parse_invocation};

    #[test]
    fn a_rebalance_recommendation_names_its_instance() {
        let Invocation::Direct(request) = parse_invocation(&sample("rebalance-recommendation.json")).unwrap() else {
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
