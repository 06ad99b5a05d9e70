//! An EventBridge schedule's `Scheduled Event` from `aws.events`: refresh the registration index. Its `detail` is
//! always `{}`; nothing in it is needed.

use serde_json::Value;

use crate::envelope::event;
use crate::error::InputError;
use crate::values::{check_account, check_region};

/// The event's id, once its envelope is checked.
pub(crate) fn parse(payload: &Value) -> Result<Option<String>, InputError> {
    let event = event::<serde_json::Map<String, Value>>(payload, "Scheduled Event")?;
    event.region.as_deref().map(check_region).transpose()?;
    event.account.as_deref().map(check_account).transpose()?;
    Ok(event.id)
}

#[cfg(test)]
mod tests {
    use crate::samples::sample;
    use crate::{Invocation, parse_invocation};
    use serde_json::json;

    #[test]
    fn a_scheduled_event_refreshes_the_index() {
        let Invocation::RefreshIndex { event_id } = parse_invocation(&sample("scheduled-refresh.json")).unwrap() else {
            panic!("expected a refresh")
        };
        assert_eq!(event_id.as_deref(), Some("53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa"));
        for (payload, expected) in [
            (
                json!({"source": "aws.events", "detail-type": "Object Created", "detail": {}}),
                "only \"Scheduled Event\" is handled",
            ),
            (
                json!({"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}, "region": "mars"}),
                "not an AWS region",
            ),
            (
                json!({"source": "aws.events", "detail-type": "Scheduled Event"}),
                "malformed Scheduled Event",
            ),
        ] {
            let message = parse_invocation(&payload).unwrap_err().to_string();
            assert!(message.contains(expected), "{payload}: {message}");
        }
    }
}
