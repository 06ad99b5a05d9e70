//! Every accepted payload becomes one or more `Request`s; everything else is rejected with a typed error.
//!
//! Three wire formats arrive: the node agent's small JSON object, an EventBridge event, and an SQS batch whose bodies
//! are either of the first two. After this module nothing downstream knows which one it was, except through the
//! `Trigger` that is kept for the summary.

use std::fmt;

use aws_lambda_events::eventbridge::EventBridgeEvent;
use aws_lambda_events::sqs::SqsEvent;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The only detail-type this function acts on today.
pub const SPOT_INTERRUPTION: &str = "EC2 Spot Instance Interruption Warning";

/// Longest value we quote back in an error message; payloads can be megabytes.
const QUOTE_LIMIT: usize = 64;

/// An EC2 instance id: `i-` and 8 or 17 lowercase hex digits. Holding one means it is valid.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InstanceId(String);

impl InstanceId {
    pub fn parse(value: &str) -> Result<Self, InputError> {
        let hex = value.strip_prefix("i-").unwrap_or("");
        let well_formed =
            matches!(hex.len(), 8 | 17) && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if well_formed {
            Ok(Self(value.to_owned()))
        } else {
            Err(InputError::InvalidInstanceId(Quoted::new(value)))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for InstanceId {
    type Error = InputError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<InstanceId> for String {
    fn from(id: InstanceId) -> Self {
        id.0
    }
}

/// What is about to happen to the instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Terminate,
    Stop,
    Hibernate,
    Rebalance,
    ScaleIn,
}

impl Action {
    /// Actions that come with Spot's two-minute notice.
    pub fn is_spot_interruption(self) -> bool {
        matches!(self, Action::Terminate | Action::Stop | Action::Hibernate)
    }
}

/// Where a request came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    NodeAgent,
    #[serde(rename = "eventbridge")]
    EventBridge,
}

/// How the request reached us, kept for the summary and for SNS filter policies.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trigger {
    pub source: Source,
    /// The EventBridge `source`, e.g. `aws.ec2`.
    pub event_source: Option<String>,
    pub detail_type: Option<String>,
    pub action: Option<Action>,
    pub event_id: Option<String>,
    pub event_time: Option<DateTime<Utc>>,
    /// When the action takes effect, if the sender said (the agent's `time`).
    pub action_time: Option<DateTime<Utc>>,
    pub region: Option<String>,
    pub account: Option<String>,
    /// Set when the request arrived inside an SQS batch.
    pub sqs_message_id: Option<String>,
}

impl Trigger {
    /// A short label for SNS attributes and subjects: `node-agent` or `eventbridge`.
    pub fn label(&self) -> &'static str {
        match self.source {
            Source::NodeAgent => "node-agent",
            Source::EventBridge => "eventbridge",
        }
    }
}

/// One instance to clean up, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub instance_id: InstanceId,
    pub trigger: Trigger,
}

/// One SQS record: its id (for `batchItemFailures`) and what it asked for.
#[derive(Debug)]
pub struct BatchRecord {
    pub message_id: String,
    pub request: Result<Request, InputError>,
}

/// A parsed invocation.
#[derive(Debug)]
pub enum Invocation {
    Direct(Request),
    Batch(Vec<BatchRecord>),
}

/// A value quoted back to the caller, cut short so that a huge payload never floods a log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quoted(String);

impl Quoted {
    pub fn new(value: &str) -> Self {
        let mut cut: String = value.chars().take(QUOTE_LIMIT).collect();
        if cut.len() < value.len() {
            cut.push_str("...");
        }
        Self(cut)
    }
}

impl fmt::Display for Quoted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum InputError {
    #[error("payload must be a JSON object, got {0}")]
    NotAnObject(&'static str),
    #[error(
        "unrecognised payload: expected a node-agent payload (instance_id), an EventBridge event \
         (source, detail-type) or an SQS event (Records); got keys [{0}]"
    )]
    Unrecognised(String),
    #[error("unsupported event source {0}: only aws.ec2 is handled")]
    UnsupportedSource(Quoted),
    #[error("unsupported detail-type {detail_type} from {event_source}: only \"{SPOT_INTERRUPTION}\" is handled")]
    UnsupportedDetailType { event_source: Quoted, detail_type: Quoted },
    #[error("invalid instance id {0}: expected i- followed by 8 or 17 lowercase hex digits")]
    InvalidInstanceId(Quoted),
    #[error("invalid {field}: {reason}")]
    InvalidField { field: &'static str, reason: String },
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
    #[error("both instance_id and instance-id are given; send exactly one")]
    AmbiguousInstanceId,
    #[error("no instance id: send instance_id (or instance-id)")]
    MissingInstanceId,
    #[error("an SQS batch must hold at least one record")]
    EmptyBatch,
    #[error("SQS record {index} has no messageId")]
    MissingMessageId { index: usize },
    #[error("SQS message {message_id} has no body")]
    MissingBody { message_id: Quoted },
    #[error("SQS message body is an SQS event: batches do not nest")]
    NestedBatch,
}

impl InputError {
    fn malformed(what: &'static str, err: impl fmt::Display) -> Self {
        let reason = err.to_string();
        InputError::Malformed {
            what,
            reason: Quoted::new(&reason).0,
        }
    }
}

/// Parse a whole invocation payload.
pub fn parse_invocation(payload: &Value) -> Result<Invocation, InputError> {
    let object = as_object(payload)?;
    if object.contains_key("Records") {
        return parse_sqs(payload).map(Invocation::Batch);
    }
    parse_single(payload, None).map(Invocation::Direct)
}

/// Parse one request: a node-agent payload or an EventBridge event.
fn parse_single(payload: &Value, sqs_message_id: Option<&str>) -> Result<Request, InputError> {
    let object = as_object(payload)?;
    let mut request = if object.contains_key("detail-type") || object.contains_key("source") {
        parse_eventbridge(payload)?
    } else if object.contains_key("instance_id") || object.contains_key("instance-id") {
        parse_agent(payload)?
    } else if object.contains_key("Records") {
        return Err(InputError::NestedBatch);
    } else {
        let mut keys: Vec<String> = object.keys().take(8).map(|k| Quoted::new(k).to_string()).collect();
        if object.len() > keys.len() {
            keys.push("...".into());
        }
        return Err(InputError::Unrecognised(keys.join(", ")));
    };
    request.trigger.sqs_message_id = sqs_message_id.map(str::to_owned);
    Ok(request)
}

fn as_object(payload: &Value) -> Result<&serde_json::Map<String, Value>, InputError> {
    match payload {
        Value::Object(map) => Ok(map),
        Value::Null => Err(InputError::NotAnObject("null")),
        Value::Bool(_) => Err(InputError::NotAnObject("a boolean")),
        Value::Number(_) => Err(InputError::NotAnObject("a number")),
        Value::String(_) => Err(InputError::NotAnObject("a string")),
        Value::Array(_) => Err(InputError::NotAnObject("an array")),
    }
}

/// The node agent's payload, as instance metadata's `spot/instance-action` inspires it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentPayload {
    instance_id: Option<String>,
    #[serde(rename = "instance-id")]
    instance_id_dashed: Option<String>,
    action: Option<Action>,
    time: Option<String>,
    region: Option<String>,
    account: Option<String>,
}

fn parse_agent(payload: &Value) -> Result<Request, InputError> {
    let agent = AgentPayload::deserialize(payload).map_err(|e| InputError::malformed("node-agent payload", e))?;
    let raw_id = match (agent.instance_id, agent.instance_id_dashed) {
        (Some(_), Some(_)) => return Err(InputError::AmbiguousInstanceId),
        (Some(id), None) | (None, Some(id)) => id,
        (None, None) => return Err(InputError::MissingInstanceId),
    };
    let instance_id = InstanceId::parse(&raw_id)?;
    let action_time = agent.time.as_deref().map(|t| parse_time("time", t)).transpose()?;
    let region = agent.region.map(|r| check_region(&r)).transpose()?;
    let account = agent.account.map(|a| check_account(&a)).transpose()?;
    Ok(Request {
        instance_id,
        trigger: Trigger {
            source: Source::NodeAgent,
            event_source: None,
            detail_type: None,
            action: agent.action,
            event_id: None,
            event_time: None,
            action_time,
            region,
            account,
            sqs_message_id: None,
        },
    })
}

#[derive(Serialize, Deserialize)]
struct SpotInterruptionDetail {
    #[serde(rename = "instance-id")]
    instance_id: String,
    #[serde(rename = "instance-action")]
    instance_action: SpotAction,
}

/// Spot's own three actions; `rebalance` and `scale-in` never come in this event.
#[derive(Serialize, Deserialize)]
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

fn parse_eventbridge(payload: &Value) -> Result<Request, InputError> {
    let text_field = |name: &'static str| -> Result<&str, InputError> {
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
    };
    let source = text_field("source")?;
    let detail_type = text_field("detail-type")?;
    if source != "aws.ec2" {
        return Err(InputError::UnsupportedSource(Quoted::new(source)));
    }
    if detail_type != SPOT_INTERRUPTION {
        return Err(InputError::UnsupportedDetailType {
            event_source: Quoted::new(source),
            detail_type: Quoted::new(detail_type),
        });
    }
    let event: EventBridgeEvent<SpotInterruptionDetail> =
        serde_json::from_value(payload.clone()).map_err(|e| InputError::malformed("Spot interruption event", e))?;
    // The id comes from `detail`: real samples put an availability zone where the region belongs in `resources`.
    let instance_id = InstanceId::parse(&event.detail.instance_id)?;
    let region = event.region.as_deref().map(check_region).transpose()?;
    let account = event.account.as_deref().map(check_account).transpose()?;
    if let Some(id) = &event.id
        && id.len() > 128
    {
        return Err(InputError::InvalidField {
            field: "id",
            reason: "longer than 128 characters".into(),
        });
    }
    Ok(Request {
        instance_id,
        trigger: Trigger {
            source: Source::EventBridge,
            event_source: Some(event.source),
            detail_type: Some(event.detail_type),
            action: Some(event.detail.instance_action.into()),
            event_id: event.id,
            event_time: event.time,
            action_time: None,
            region,
            account,
            sqs_message_id: None,
        },
    })
}

fn parse_sqs(payload: &Value) -> Result<Vec<BatchRecord>, InputError> {
    let event = SqsEvent::deserialize(payload).map_err(|e| InputError::malformed("SQS event", e))?;
    if event.records.is_empty() {
        return Err(InputError::EmptyBatch);
    }
    event
        .records
        .into_iter()
        .enumerate()
        .map(|(index, record)| {
            let message_id = record.message_id.ok_or(InputError::MissingMessageId { index })?;
            let request = match record.body {
                None => Err(InputError::MissingBody {
                    message_id: Quoted::new(&message_id),
                }),
                Some(body) => serde_json::from_str::<Value>(&body)
                    .map_err(|e| InputError::malformed("SQS message body", e))
                    .and_then(|body| parse_single(&body, Some(&message_id))),
            };
            Ok(BatchRecord { message_id, request })
        })
        .collect()
}

fn parse_time(field: &'static str, value: &str) -> Result<DateTime<Utc>, InputError> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| InputError::InvalidField {
            field,
            reason: format!("{} is not an RFC 3339 time: {e}", Quoted::new(value)),
        })
}

/// `us-east-1`, `eu-central-2`, `us-gov-west-1`, `cn-north-1`, ...
fn check_region(value: &str) -> Result<String, InputError> {
    let parts: Vec<&str> = value.split('-').collect();
    let ok = value.len() <= 32
        && parts.len() >= 3
        && parts
            .last()
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()));
    if ok {
        Ok(value.to_owned())
    } else {
        Err(InputError::InvalidField {
            field: "region",
            reason: format!("{} is not an AWS region name", Quoted::new(value)),
        })
    }
}

fn check_account(value: &str) -> Result<String, InputError> {
    if value.len() == 12 && value.bytes().all(|b| b.is_ascii_digit()) {
        Ok(value.to_owned())
    } else {
        Err(InputError::InvalidField {
            field: "account",
            reason: format!("{} is not a 12-digit account id", Quoted::new(value)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn direct(payload: Value) -> Request {
        match parse_invocation(&payload).expect("parses") {
            Invocation::Direct(request) => request,
            Invocation::Batch(_) => panic!("expected a direct request"),
        }
    }

    fn rejected(payload: Value) -> InputError {
        parse_invocation(&payload).expect_err("must be rejected")
    }

    #[test]
    fn instance_ids_are_checked() {
        for good in ["i-0123456789abcdef0", "i-0123abcd"] {
            assert!(InstanceId::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "i-",
            "i-0123456789ABCDEF0",
            "i-0123456789abcdef",
            "i-0123abc",
            "i-0123456789abcdefg",
            "x-0123456789abcdef0",
            " i-0123abcd",
            "i-0123abcd\n",
            "i-0123456789abcdef00",
        ] {
            assert!(InstanceId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn node_agent_payload_with_either_key() {
        let r = direct(json!({"instance_id": "i-0123456789abcdef0"}));
        assert_eq!(r.instance_id.as_str(), "i-0123456789abcdef0");
        assert_eq!(r.trigger.source, Source::NodeAgent);
        let r = direct(json!({
            "instance-id": "i-0123abcd", "action": "stop", "time": "2026-11-21T10:00:00Z",
            "region": "eu-west-1", "account": "123456789012"
        }));
        assert_eq!(r.instance_id.as_str(), "i-0123abcd");
        assert_eq!(r.trigger.action, Some(Action::Stop));
        assert_eq!(r.trigger.action_time.unwrap().to_rfc3339(), "2026-11-21T10:00:00+00:00");
        assert_eq!(r.trigger.region.as_deref(), Some("eu-west-1"));
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
    fn sqs_batch_keeps_each_record_apart() {
        let payload = json!({"Records": [
            {"messageId": "m1", "body": "{\"instance_id\": \"i-0123abcd\"}"},
            {"messageId": "m2", "body": "not json"},
            {"messageId": "m3", "body": "{\"Records\": []}"}
        ]});
        let Invocation::Batch(records) = parse_invocation(&payload).unwrap() else {
            panic!("expected a batch")
        };
        assert_eq!(records.len(), 3);
        let first = records[0].request.as_ref().unwrap();
        assert_eq!(first.trigger.sqs_message_id.as_deref(), Some("m1"));
        assert!(matches!(records[1].request, Err(InputError::Malformed { .. })));
        assert_eq!(records[2].request, Err(InputError::NestedBatch));
    }

    #[test]
    fn bad_payloads_get_errors_that_name_the_problem() {
        let huge = "a".repeat(1_000_000);
        let cases = [
            (json!(null), "JSON object"),
            (json!([1, 2]), "JSON object"),
            (json!({"hello": "world"}), "unrecognised payload"),
            (json!({"instance_id": 5}), "invalid type"),
            (json!({"instance_id": huge}), "invalid instance id"),
            (json!({"instance_id": "i-0123abcd", "extra": 1}), "unknown field"),
            (
                json!({"instance_id": "i-0123abcd", "instance-id": "i-0123abcd"}),
                "both",
            ),
            (
                json!({"instance_id": "i-0123abcd", "action": "explode"}),
                "unknown variant",
            ),
            (json!({"instance_id": "i-0123abcd", "time": "yesterday"}), "RFC 3339"),
            (json!({"instance_id": "i-0123abcd", "account": "12"}), "12-digit"),
            (
                json!({"source": "aws.s3", "detail-type": SPOT_INTERRUPTION}),
                "unsupported event source",
            ),
            (
                json!({"source": "aws.ec2", "detail-type": "EC2 Instance State-change Notification"}),
                "unsupported detail-type",
            ),
            (
                json!({"source": "aws.ec2", "detail-type": SPOT_INTERRUPTION, "detail": {}}),
                "missing field",
            ),
            (json!({"Records": []}), "at least one record"),
            (json!({"Records": "x"}), "malformed SQS event"),
        ];
        for (payload, expected) in cases {
            let message = rejected(payload.clone()).to_string();
            assert!(message.contains(expected), "{payload:.80}: {message}");
            assert!(message.len() < 400, "error message too long: {message:.100}...");
        }
    }

    #[test]
    fn quoted_values_are_cut_short() {
        let q = Quoted::new(&"x".repeat(500));
        assert!(q.to_string().len() < QUOTE_LIMIT + 10);
    }
}
