//! EC2's Spot Instance Interruption Warning: the instance goes in two minutes (terminate, stop or hibernate).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::envelope::{event, trigger};
use crate::error::InputError;
use crate::request::Request;
use crate::trigger::Action;
use crate::values::InstanceId;

#[derive(Serialize, Deserialize)]
struct SpotInterruptionDetail {
    #[serde(rename = "instance-id")]
    instance_id: String,
    #[serde(rename = "instance-action")]
    instance_action: SpotAction,
}

/// Spot's own three actions; `rebalance` and `scale-in` never come in this event.
#[derive(Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum SpotAction {
    Terminate,
    Stop,
    Hibernate,
}

impl From<SpotAction> for Action {
    fn from(action: SpotAction) -> Self {
        match action {
            SpotAction::Terminate => Action::Terminate,
            SpotAction::Stop => Action::Stop,
            SpotAction::Hibernate => Action::Hibernate,
        }
    }
}

pub(crate) fn parse(payload: &Value) -> Result<Request, InputError> {
    let event = event::<SpotInterruptionDetail>(payload, "Spot interruption event")?;
    // The id comes from `detail`: real samples put an availability zone where the region belongs in `resources`.
    let instance_id = InstanceId::parse(&event.detail.instance_id)?;
    let action = event.detail.instance_action.into();
    let (_, trigger) = trigger(event, Some(action), None)?;
    Ok(Request {
        instance_id,
        identity: None,
        trigger,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::SPOT_INTERRUPTION;
    use crate::samples::sample;
    use crate::{Invocation, parse_invocation};
    use serde_json::json;

    fn direct(payload: Value) -> Request {
        match parse_invocation(&payload).expect("parses") {
            Invocation::Direct(request) => request,
            other => panic!("expected a direct request, got {other:?}"),
        }
    }

    #[test]
    fn spot_interruption_takes_the_id_from_detail() {
        let r = direct(json!({
            "version": "0", "id": "1e5527d7-bb36-4607-3370-4164db56a40e",
            "detail-type": SPOT_INTERRUPTION, "source": "aws.ec2", "account": "123456789012",
            "time": "1970-01-01T00:00:00Z", "region": "us-east-1",
            "resources": ["arn:aws:ec2:us-east-1b:instance/i-0ffffffffffffffff"],
            "detail": {"instance-id": "i-1234567890abcdef0", "instance-action": "hibernate"}
        }));
        assert_eq!(r.instance_id.as_str(), "i-1234567890abcdef0");
        assert_eq!(r.trigger.action, Some(Action::Hibernate));
        assert_eq!(
            r.trigger.event_id.as_deref(),
            Some("1e5527d7-bb36-4607-3370-4164db56a40e")
        );
    }

    #[test]
    fn a_warning_from_the_future_is_rejected_before_anything_reads_it() {
        for time in [
            "+262142-12-31T23:59:00Z",
            "9999-12-31T23:59:59Z",
            "2999-01-01T00:00:00Z",
        ] {
            let mut event = sample("spot-interruption-terminate.json");
            event["time"] = json!(time);
            let error = parse_invocation(&event).unwrap_err();
            assert!(
                matches!(error, crate::InputError::InvalidField { field: "time", .. }),
                "{time}: {error}"
            );
            assert!(error.to_string().contains("ahead of this function's clock"), "{error}");
        }
    }

    #[test]
    fn every_sample_warning_parses_with_its_action() {
        for (file, action) in [
            ("spot-interruption-terminate.json", Action::Terminate),
            ("spot-interruption-stop.json", Action::Stop),
            ("spot-interruption-hibernate.json", Action::Hibernate),
        ] {
            let request = direct(sample(file));
            assert_eq!(request.trigger.action, Some(action), "{file}");
            assert_eq!(request.trigger.detail_type.as_deref(), Some(SPOT_INTERRUPTION));
        }
    }
}
