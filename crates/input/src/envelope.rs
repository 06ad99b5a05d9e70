//! The EventBridge envelope every event parser reads its `detail` from: recognising one, the fields the router reads
//! before it knows the kind, the event with its `detail` typed, and the trigger its fields (id, time, region, account)
//! become. The SNS envelope is `sns`'s.

use aws_lambda_events::eventbridge::EventBridgeEvent;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::InputError;
use crate::trigger::{Action, Source, Trigger};
use crate::values::{MAX_AHEAD, check_account, check_region, not_ahead};

/// Longest event id accepted; EventBridge's are UUIDs.
const ID_MAX: usize = 128;

pub(crate) fn is_eventbridge(object: &serde_json::Map<String, Value>) -> bool {
    object.contains_key("detail-type") || object.contains_key("source")
}

/// The envelope's `source` and `detail-type`, which say which parser reads the event.
pub(crate) fn source_and_detail_type(payload: &Value) -> Result<(&str, &str), InputError> {
    Ok((text_field(payload, "source")?, text_field(payload, "detail-type")?))
}

fn text_field<'a>(payload: &'a Value, name: &'static str) -> Result<&'a str, InputError> {
    match payload.get(name) {
        Some(Value::String(s)) => Ok(s.as_str()),
        Some(_) => Err(InputError::InvalidField {
            field: name,
            reason: "must be a string".into(),
        }),
        None => Err(InputError::Malformed {
            what: "EventBridge event",
            reason: format!("missing field `{name}`"),
        }),
    }
}

/// An id that names the event in logs and summaries must be short.
pub(crate) fn check_id(payload: &Value) -> Result<(), InputError> {
    match payload.get("id") {
        Some(Value::String(id)) if id.len() > ID_MAX => Err(InputError::InvalidField {
            field: "id",
            reason: "longer than 128 characters".into(),
        }),
        _ => Ok(()),
    }
}

/// The envelope's `time` (when the event happened) may not lie ahead of this function's clock by more than
/// `MAX_AHEAD`, whatever the event: such an event would pass every staleness check for ever. Read as the envelope's
/// deserializer reads it (chrono's `FromStr`, which also takes years beyond 9999 such as `+262142`); a `time` it
/// cannot read is left for the event's own parser to report.
pub(crate) fn check_time(payload: &Value) -> Result<(), InputError> {
    match payload.get("time") {
        Some(Value::String(text)) => match text.parse::<chrono::DateTime<chrono::Utc>>() {
            Ok(time) => not_ahead("time", time, MAX_AHEAD, chrono::Utc::now()).map(drop),
            Err(_) => Ok(()),
        },
        _ => Ok(()),
    }
}

/// Read the event with its `detail` as `T`; `what` names the event in the error when it does not fit.
pub(crate) fn event<T>(payload: &Value, what: &'static str) -> Result<EventBridgeEvent<T>, InputError>
where
    T: Serialize + DeserializeOwned,
{
    serde_json::from_value(payload.clone()).map_err(|e| InputError::malformed(what, e))
}

/// The trigger of an EventBridge event whose `detail` names an instance: the envelope's fields, checked.
pub(crate) fn trigger<T>(
    event: EventBridgeEvent<T>,
    action: Option<Action>,
    event_code: Option<String>,
) -> Result<(T, Trigger), InputError>
where
    T: Serialize + DeserializeOwned,
{
    let region = event.region.as_deref().map(check_region).transpose()?;
    let account = event.account.as_deref().map(check_account).transpose()?;
    let trigger = Trigger {
        event_source: Some(event.source),
        detail_type: Some(event.detail_type),
        action,
        event_id: event.id,
        event_time: event.time,
        region,
        account,
        event_code,
        ..Trigger::from_source(Source::EventBridge)
    };
    Ok((event.detail, trigger))
}
