//! `{"action": "restore", "instance_id": "i-..."}`, sent by a person or a script to undo a quarantine.

use serde::Deserialize;
use serde_json::Value;

use crate::error::InputError;
use crate::request::RestoreRequest;
use crate::trigger::{Source, Trigger};
use crate::values::InstanceId;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RestorePayload {
    #[allow(dead_code)] // always "restore": it is how the payload was recognised
    action: String,
    instance_id: String,
}

pub(crate) fn is_restore(object: &serde_json::Map<String, Value>) -> bool {
    object.get("action").and_then(Value::as_str) == Some("restore")
}

pub(crate) fn parse(payload: &Value) -> Result<RestoreRequest, InputError> {
    let restore = RestorePayload::deserialize(payload).map_err(|e| InputError::malformed("restore payload", e))?;
    Ok(RestoreRequest {
        instance_id: InstanceId::parse(&restore.instance_id)?,
        trigger: Trigger::from_source(Source::Operator),
    })
}

#[cfg(test)]
mod tests {
    use crate::samples::sample;
    use crate::{InputError, Invocation, Source, parse_invocation};
    use serde_json::json;

    #[test]
    fn a_restore_is_asked_for_directly_and_never_in_a_batch() {
        let Invocation::Restore(restore) = parse_invocation(&sample("restore.json")).unwrap() else {
            panic!("expected a restore")
        };
        assert_eq!(restore.instance_id.as_str(), "i-0123456789abcdef0");
        assert_eq!(restore.trigger.source, Source::Operator);

        let message = parse_invocation(&json!({"action": "restore", "instance_id": "i-0123abcd", "groups": ["sg-1"]}))
            .unwrap_err();
        assert!(message.to_string().contains("unknown field"), "{message}");
        let batch = json!({"Records": [{"messageId": "m", "body": sample("restore.json").to_string()}]});
        let Invocation::Batch(records) = parse_invocation(&batch).unwrap() else {
            panic!("expected a batch")
        };
        assert_eq!(records[0].message, Err(InputError::RestoreInBatch));
    }
}
