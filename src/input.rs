//! Every accepted payload becomes one or more `Request`s; everything else is rejected with a typed error.
//!
//! Three wire formats arrive: the node agent's small JSON object, an EventBridge event, and an SQS batch whose bodies
//! are either of the first two. After this module nothing downstream knows which one it was, except through the
//! `Trigger` that is kept for the summary.
//!
//! The other ways an instance leaves a fleet each have their own parsing module under `input/`: Auto Scaling's
//! terminate lifecycle action (`lifecycle`), the rebalance recommendation (`rebalance`), the instance state change
//! (`state_change`) and AWS Health's scheduled changes (`health`).
//!
//! Two more EventBridge events keep the optional registration index fresh: a `Scheduled Event` from `aws.events`
//! (refresh it), and RegisterTargets / DeregisterTargets calls that CloudTrail reports (update it).

// Explicit paths, so that the fuzz target (fuzz/), which compiles this file on its own, finds them too.
#[path = "input/health.rs"]
mod health;
#[path = "input/lifecycle.rs"]
mod lifecycle;
#[path = "input/rebalance.rs"]
mod rebalance;
#[path = "input/state_change.rs"]
mod state_change;

use std::fmt;

use aws_lambda_events::eventbridge::EventBridgeEvent;
use aws_lambda_events::sqs::SqsEvent;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The detail-type that starts a cleanup.
pub const SPOT_INTERRUPTION: &str = "EC2 Spot Instance Interruption Warning";
/// What an EventBridge schedule sends: refresh the registration index.
pub const SCHEDULED_EVENT: &str = "Scheduled Event";
/// A management API call recorded by CloudTrail, as EventBridge delivers it.
pub const CLOUDTRAIL_API_CALL: &str = "AWS API Call via CloudTrail";
/// CloudTrail's `eventSource` for ELBv2 calls.
const ELB_EVENT_SOURCE: &str = "elasticloadbalancing.amazonaws.com";

pub use health::{AWS_HEALTH_EVENT, HEALTH_SOURCE};
pub use lifecycle::{AUTOSCALING_SOURCE, LifecycleAction, LifecycleDestination, TERMINATE_LIFECYCLE_ACTION};
pub use rebalance::REBALANCE_RECOMMENDATION;
pub use state_change::STATE_CHANGE;

/// The detail-types `aws.ec2` sends that start work here, for error messages.
const EC2_DETAIL_TYPES: &str = "\"EC2 Spot Instance Interruption Warning\", \"EC2 Instance Rebalance Recommendation\" \
     or \"EC2 Instance State-change Notification\"";

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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Terminate,
    Stop,
    Hibernate,
    Rebalance,
    ScaleIn,
    /// The instance is shutting down or already terminated (EC2's state-change event).
    Terminating,
    /// AWS Health scheduled a change (retirement, reboot, maintenance) for the instance.
    ScheduledChange,
}

impl Action {
    /// Actions that come with Spot's two-minute notice.
    pub fn is_spot_interruption(self) -> bool {
        matches!(self, Action::Terminate | Action::Stop | Action::Hibernate)
    }

    /// Actions after which the instance may run again, and a restore put it back.
    pub fn may_come_back(self) -> bool {
        matches!(self, Action::Stop | Action::Hibernate)
    }
}

/// Where a request came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    NodeAgent,
    #[serde(rename = "eventbridge")]
    EventBridge,
    /// A lifecycle hook's own message, sent straight to SQS or SNS.
    AutoScaling,
    /// A person or a script invoking the function directly (`{"action": "restore", ...}`).
    Operator,
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
    /// The Auto Scaling lifecycle action to complete once the cleanup is done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Box<LifecycleAction>>,
    /// What the event said beyond its type: the instance state, or AWS Health's `eventTypeCode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_code: Option<String>,
}

impl Trigger {
    /// A trigger from `source` that says nothing more yet; parsers fill in what their payload tells.
    pub fn from_source(source: Source) -> Trigger {
        Trigger {
            source,
            event_source: None,
            detail_type: None,
            action: None,
            event_id: None,
            event_time: None,
            action_time: None,
            region: None,
            account: None,
            sqs_message_id: None,
            lifecycle: None,
            event_code: None,
        }
    }

    /// A short label for SNS attributes and subjects: `node-agent` or `eventbridge`.
    pub fn label(&self) -> &'static str {
        match self.source {
            Source::NodeAgent => "node-agent",
            Source::EventBridge => "eventbridge",
            Source::AutoScaling => "auto-scaling",
            Source::Operator => "operator",
        }
    }

    /// An instance that goes back to a warm pool keeps its network as it is: it will serve again.
    pub fn keeps_network(&self) -> bool {
        self.lifecycle
            .as_ref()
            .is_some_and(|l| l.destination == LifecycleDestination::WarmPool)
    }
}

/// One instance to clean up, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub instance_id: InstanceId,
    pub trigger: Trigger,
    /// The node agent's instance identity document and signature, when it sent them.
    pub identity: Option<IdentityProof>,
}

/// What the agent sent to prove it runs on the instance: `identity_document` and `identity_signature`, as instance
/// metadata gave them. `identity` checks them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityProof {
    pub document: String,
    pub signature: String,
}

/// Put an instance's ENIs back on their recorded original groups.
#[derive(Clone, Debug, PartialEq)]
pub struct RestoreRequest {
    pub instance_id: InstanceId,
    pub trigger: Trigger,
}

/// One SQS record: its id (for `batchItemFailures`) and what it asked for. One message can name several instances
/// (an AWS Health event lists every affected one) or none (Auto Scaling's test notification, answered quietly).
#[derive(Debug)]
pub struct BatchRecord {
    pub message_id: String,
    pub requests: Result<Vec<Request>, InputError>,
}

/// A parsed invocation.
#[derive(Debug)]
pub enum Invocation {
    Direct(Request),
    /// One event that names several instances (AWS Health lists every affected one).
    Several(Vec<Request>),
    /// A message that asks for nothing, answered quietly: Auto Scaling's test notification.
    Skipped {
        reason: &'static str,
    },
    Batch(Vec<BatchRecord>),
    /// An EventBridge schedule fired: refresh the registration index.
    RefreshIndex {
        event_id: Option<String>,
    },
    /// CloudTrail saw a RegisterTargets or DeregisterTargets call: update the registration index.
    IndexUpdate(IndexUpdate),
    /// Undo a quarantine: asked for directly, or because the instance is `running` again.
    Restore(RestoreRequest),
}

impl Invocation {
    /// Give a request that arrived with no event id of its own (a direct node-agent or operator invocation) the Lambda
    /// request id, so its summary and its log lines name something to search for. Lambda's own retries of an async
    /// invocation keep the request id, so they share it.
    pub fn name_events(&mut self, request_id: &str) {
        let unnamed = |trigger: &mut Trigger| {
            if trigger.event_id.is_none() && trigger.sqs_message_id.is_none() && !request_id.is_empty() {
                trigger.event_id = Some(request_id.to_owned());
            }
        };
        match self {
            Invocation::Direct(request) => unnamed(&mut request.trigger),
            Invocation::Several(requests) => requests.iter_mut().for_each(|r| unnamed(&mut r.trigger)),
            Invocation::Restore(restore) => unnamed(&mut restore.trigger),
            Invocation::Skipped { .. }
            | Invocation::Batch(_)
            | Invocation::RefreshIndex { .. }
            | Invocation::IndexUpdate(_) => {}
        }
    }
}

/// The ELB call CloudTrail reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum TargetsCall {
    RegisterTargets,
    DeregisterTargets,
}

impl TargetsCall {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetsCall::RegisterTargets => "RegisterTargets",
            TargetsCall::DeregisterTargets => "DeregisterTargets",
        }
    }
}

/// One target as the call named it: ELB fills in the group's port when `port` is absent.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangedTarget {
    pub id: String,
    pub port: Option<i32>,
    pub availability_zone: Option<String>,
}

/// A successful RegisterTargets or DeregisterTargets call.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetsChange {
    pub call: TargetsCall,
    pub target_group_arn: String,
    pub targets: Vec<ChangedTarget>,
    pub event_id: Option<String>,
    /// When the call was made (CloudTrail's `eventTime`, else the event's `time`).
    pub event_time: Option<DateTime<Utc>>,
}

/// What a CloudTrail event asks of the index.
#[derive(Clone, Debug, PartialEq)]
pub enum IndexUpdate {
    Apply(TargetsChange),
    /// The call failed (CloudTrail's `errorCode`): it changed no registration, so the index stays as it is.
    FailedCall {
        call: TargetsCall,
        error_code: String,
        event_id: Option<String>,
    },
}

/// What one EventBridge event asks for.
enum EventBridgeRequest {
    Cleanup(Request),
    Several(Vec<Request>),
    RefreshIndex { event_id: Option<String> },
    IndexUpdate(IndexUpdate),
    Restore(RestoreRequest),
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
    #[error(
        "unsupported event source {0}: handled are aws.ec2 (\"{SPOT_INTERRUPTION}\", \"{REBALANCE_RECOMMENDATION}\", \
         \"{STATE_CHANGE}\"), aws.autoscaling (\"{TERMINATE_LIFECYCLE_ACTION}\"), aws.health (\"{AWS_HEALTH_EVENT}\"), \
         aws.events (\"{SCHEDULED_EVENT}\") and aws.elasticloadbalancing (\"{CLOUDTRAIL_API_CALL}\")"
    )]
    UnsupportedSource(Quoted),
    #[error("unsupported detail-type {detail_type} from {event_source}: only {expected} is handled from there")]
    UnsupportedDetailType {
        event_source: Quoted,
        detail_type: Quoted,
        expected: &'static str,
    },
    #[error("unsupported CloudTrail event {0}: only RegisterTargets and DeregisterTargets are handled")]
    UnsupportedApiCall(Quoted),
    #[error("a registration index event cannot arrive in an SQS batch; send it to the function directly")]
    IndexEventInBatch,
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
    #[error("{what} {value} is not handled: {reason}")]
    Unhandled {
        what: &'static str,
        value: Quoted,
        reason: &'static str,
    },
    #[error("a restore cannot arrive in an SQS batch; send it to the function directly")]
    RestoreInBatch,
    /// Set by the handler for a batch record the guard refused (see `guard::Refusal`).
    #[error("{0}")]
    Refused(String),
    #[error("send identity_document and identity_signature together, or neither")]
    IncompleteIdentityProof,
    #[error("EC2 state {0} is not handled: only \"running\" (restore a quarantined instance) is")]
    UnhandledState(Quoted),
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
    if is_eventbridge(object) {
        return Ok(match parse_eventbridge(payload)? {
            EventBridgeRequest::Cleanup(request) => Invocation::Direct(request),
            EventBridgeRequest::Several(requests) => Invocation::Several(requests),
            EventBridgeRequest::RefreshIndex { event_id } => Invocation::RefreshIndex { event_id },
            EventBridgeRequest::IndexUpdate(update) => Invocation::IndexUpdate(update),
            EventBridgeRequest::Restore(restore) => Invocation::Restore(restore),
        });
    }
    if object.get("action").and_then(Value::as_str) == Some("restore") {
        return parse_restore(payload).map(Invocation::Restore);
    }
    if lifecycle::is_auto_scaling_message(object) {
        return Ok(match lifecycle::parse_message(payload)? {
            Some(request) => Invocation::Direct(request),
            None => Invocation::Skipped {
                reason: lifecycle::TEST_NOTIFICATION_SKIPPED,
            },
        });
    }
    parse_single(payload, None).map(|mut requests| match requests.len() {
        1 => Invocation::Direct(requests.remove(0)),
        _ => Invocation::Several(requests),
    })
}

fn is_eventbridge(object: &serde_json::Map<String, Value>) -> bool {
    object.contains_key("detail-type") || object.contains_key("source")
}

/// Parse one message: a node-agent payload, an EventBridge event, or Auto Scaling's own lifecycle message. It names
/// one instance, several (AWS Health), or none (a test notification, to be skipped quietly).
fn parse_single(payload: &Value, sqs_message_id: Option<&str>) -> Result<Vec<Request>, InputError> {
    let object = as_object(payload)?;
    let mut requests = if is_eventbridge(object) {
        match parse_eventbridge(payload)? {
            EventBridgeRequest::Cleanup(request) => vec![request],
            EventBridgeRequest::Several(requests) => requests,
            EventBridgeRequest::RefreshIndex { .. } | EventBridgeRequest::IndexUpdate(_) => {
                return Err(InputError::IndexEventInBatch);
            }
            EventBridgeRequest::Restore(_) => return Err(InputError::RestoreInBatch),
        }
    } else if object.get("action").and_then(Value::as_str) == Some("restore") {
        return Err(InputError::RestoreInBatch);
    } else if lifecycle::is_auto_scaling_message(object) {
        lifecycle::parse_message(payload)?.into_iter().collect()
    } else if object.contains_key("instance_id") || object.contains_key("instance-id") {
        vec![parse_agent(payload)?]
    } else if object.contains_key("Records") {
        return Err(InputError::NestedBatch);
    } else {
        let mut keys: Vec<String> = object.keys().take(8).map(|k| Quoted::new(k).to_string()).collect();
        if object.len() > keys.len() {
            keys.push("...".into());
        }
        return Err(InputError::Unrecognised(keys.join(", ")));
    };
    for request in &mut requests {
        request.trigger.sqs_message_id = sqs_message_id.map(str::to_owned);
    }
    Ok(requests)
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
    /// The raw text of instance metadata's `/latest/dynamic/instance-identity/document`.
    identity_document: Option<String>,
    /// The base64 text of `/latest/dynamic/instance-identity/signature`.
    identity_signature: Option<String>,
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
    let identity = match (agent.identity_document, agent.identity_signature) {
        (Some(document), Some(signature)) => Some(IdentityProof { document, signature }),
        (None, None) => None,
        _ => return Err(InputError::IncompleteIdentityProof),
    };
    Ok(Request {
        instance_id,
        identity,
        trigger: Trigger {
            action: agent.action,
            action_time,
            region,
            account,
            ..Trigger::from_source(Source::NodeAgent)
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

fn parse_eventbridge(payload: &Value) -> Result<EventBridgeRequest, InputError> {
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
    let expected = match source {
        "aws.ec2" => EC2_DETAIL_TYPES,
        "aws.autoscaling" => "\"EC2 Instance-terminate Lifecycle Action\"",
        "aws.health" => "\"AWS Health Event\"",
        "aws.events" => "\"Scheduled Event\"",
        "aws.elasticloadbalancing" => "\"AWS API Call via CloudTrail\"",
        _ => return Err(InputError::UnsupportedSource(Quoted::new(source))),
    };
    if let Some(Value::String(id)) = payload.get("id")
        && id.len() > 128
    {
        return Err(InputError::InvalidField {
            field: "id",
            reason: "longer than 128 characters".into(),
        });
    }
    match (source, detail_type) {
        ("aws.ec2", SPOT_INTERRUPTION) => parse_spot_interruption(payload).map(EventBridgeRequest::Cleanup),
        ("aws.ec2", REBALANCE_RECOMMENDATION) => rebalance::parse(payload).map(EventBridgeRequest::Cleanup),
        ("aws.ec2", STATE_CHANGE) if is_running_again(payload) => {
            parse_state_change_running(payload).map(EventBridgeRequest::Restore)
        }
        ("aws.ec2", STATE_CHANGE) => state_change::parse(payload).map(EventBridgeRequest::Cleanup),
        ("aws.autoscaling", TERMINATE_LIFECYCLE_ACTION) => {
            lifecycle::parse_event(payload).map(EventBridgeRequest::Cleanup)
        }
        ("aws.health", AWS_HEALTH_EVENT) => health::parse(payload).map(|mut requests| match requests.len() {
            1 => EventBridgeRequest::Cleanup(requests.remove(0)),
            _ => EventBridgeRequest::Several(requests),
        }),
        ("aws.events", SCHEDULED_EVENT) => parse_scheduled(payload),
        ("aws.elasticloadbalancing", CLOUDTRAIL_API_CALL) => {
            parse_cloudtrail(payload).map(EventBridgeRequest::IndexUpdate)
        }
        _ => Err(InputError::UnsupportedDetailType {
            event_source: Quoted::new(source),
            detail_type: Quoted::new(detail_type),
            expected,
        }),
    }
}

fn parse_spot_interruption(payload: &Value) -> Result<Request, InputError> {
    let event: EventBridgeEvent<SpotInterruptionDetail> =
        serde_json::from_value(payload.clone()).map_err(|e| InputError::malformed("Spot interruption event", e))?;
    // The id comes from `detail`: real samples put an availability zone where the region belongs in `resources`.
    let instance_id = InstanceId::parse(&event.detail.instance_id)?;
    let action = event.detail.instance_action.into();
    let (_, trigger) = eventbridge_trigger(event, Some(action), None)?;
    Ok(Request {
        instance_id,
        identity: None,
        trigger,
    })
}

/// The trigger of an EventBridge event whose `detail` names an instance: the envelope's fields, checked.
fn eventbridge_trigger<T>(
    event: EventBridgeEvent<T>,
    action: Option<Action>,
    event_code: Option<String>,
) -> Result<(T, Trigger), InputError>
where
    T: Serialize + serde::de::DeserializeOwned,
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

#[derive(Serialize, Deserialize)]
struct StateChangeDetail {
    #[serde(rename = "instance-id")]
    instance_id: String,
    state: String,
}

/// Whether a state-change event says `running`: that one restores, the others clean up (see `state_change`).
fn is_running_again(payload: &Value) -> bool {
    payload.pointer("/detail/state").and_then(Value::as_str) == Some("running")
}

/// `EC2 Instance State-change Notification` with state `running`: the instance is back (Spot stopped or hibernated
/// it earlier), so its quarantine, if it has one, is undone.
fn parse_state_change_running(payload: &Value) -> Result<RestoreRequest, InputError> {
    let event: EventBridgeEvent<StateChangeDetail> =
        serde_json::from_value(payload.clone()).map_err(|e| InputError::malformed("EC2 state-change event", e))?;
    if event.detail.state != "running" {
        return Err(InputError::UnhandledState(Quoted::new(&event.detail.state)));
    }
    let instance_id = InstanceId::parse(&event.detail.instance_id)?;
    let (_, trigger) = eventbridge_trigger(event, None, Some("running".into()))?;
    Ok(RestoreRequest { instance_id, trigger })
}

/// `{"action": "restore", "instance_id": "i-..."}`, sent by a person or a script.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RestorePayload {
    #[allow(dead_code)] // always "restore": it is how the payload was recognised
    action: String,
    instance_id: String,
}

fn parse_restore(payload: &Value) -> Result<RestoreRequest, InputError> {
    let restore = RestorePayload::deserialize(payload).map_err(|e| InputError::malformed("restore payload", e))?;
    Ok(RestoreRequest {
        instance_id: InstanceId::parse(&restore.instance_id)?,
        trigger: Trigger::from_source(Source::Operator),
    })
}

/// An EventBridge schedule's event. Its `detail` is always `{}`; nothing in it is needed.
fn parse_scheduled(payload: &Value) -> Result<EventBridgeRequest, InputError> {
    let event: EventBridgeEvent<serde_json::Map<String, Value>> =
        serde_json::from_value(payload.clone()).map_err(|e| InputError::malformed("Scheduled Event", e))?;
    event.region.as_deref().map(check_region).transpose()?;
    event.account.as_deref().map(check_account).transpose()?;
    Ok(EventBridgeRequest::RefreshIndex { event_id: event.id })
}

/// The part of a CloudTrail record this function reads. CloudTrail adds fields over time, so others are ignored.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CloudTrailDetail {
    event_source: String,
    event_name: String,
    event_time: Option<String>,
    error_code: Option<String>,
    request_parameters: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TargetsParameters {
    target_group_arn: String,
    targets: Vec<ChangedTarget>,
}

fn parse_cloudtrail(payload: &Value) -> Result<IndexUpdate, InputError> {
    let event: EventBridgeEvent<CloudTrailDetail> =
        serde_json::from_value(payload.clone()).map_err(|e| InputError::malformed("CloudTrail event", e))?;
    let detail = event.detail;
    if detail.event_source != ELB_EVENT_SOURCE {
        return Err(InputError::InvalidField {
            field: "detail.eventSource",
            reason: format!("{} is not {ELB_EVENT_SOURCE}", Quoted::new(&detail.event_source)),
        });
    }
    let call = match detail.event_name.as_str() {
        "RegisterTargets" => TargetsCall::RegisterTargets,
        "DeregisterTargets" => TargetsCall::DeregisterTargets,
        other => return Err(InputError::UnsupportedApiCall(Quoted::new(other))),
    };
    if let Some(error_code) = detail.error_code {
        return Ok(IndexUpdate::FailedCall {
            call,
            error_code: Quoted::new(&error_code).0,
            event_id: event.id,
        });
    }
    let parameters = detail.request_parameters.ok_or_else(|| InputError::Malformed {
        what: "CloudTrail event",
        reason: "missing field `detail.requestParameters`".into(),
    })?;
    let parameters = TargetsParameters::deserialize(&parameters)
        .map_err(|e| InputError::malformed("detail.requestParameters", e))?;
    if !is_target_group_arn(&parameters.target_group_arn) {
        return Err(InputError::InvalidField {
            field: "detail.requestParameters.targetGroupArn",
            reason: format!(
                "{} is not a target group ARN",
                Quoted::new(&parameters.target_group_arn)
            ),
        });
    }
    if parameters.targets.is_empty() {
        return Err(InputError::InvalidField {
            field: "detail.requestParameters.targets",
            reason: "names no target".into(),
        });
    }
    for target in &parameters.targets {
        if target.id.is_empty() || target.id.len() > 2048 {
            return Err(InputError::InvalidField {
                field: "detail.requestParameters.targets[].id",
                reason: format!("{} is not a target id", Quoted::new(&target.id)),
            });
        }
        if let Some(port) = target.port
            && !(1..=65535).contains(&port)
        {
            return Err(InputError::InvalidField {
                field: "detail.requestParameters.targets[].port",
                reason: format!("{port} is not a port"),
            });
        }
    }
    let event_time = detail
        .event_time
        .as_deref()
        .map(|t| parse_time("detail.eventTime", t))
        .transpose()?
        .or(event.time);
    Ok(IndexUpdate::Apply(TargetsChange {
        call,
        target_group_arn: parameters.target_group_arn,
        targets: parameters.targets,
        event_id: event.id,
        event_time,
    }))
}

/// `arn:<partition>:elasticloadbalancing:<region>:<account>:targetgroup/<name>/<id>`
fn is_target_group_arn(value: &str) -> bool {
    let parts: Vec<&str> = value.splitn(6, ':').collect();
    parts.len() == 6
        && parts[0] == "arn"
        && !parts[1].is_empty()
        && parts[2] == "elasticloadbalancing"
        && !parts[3].is_empty()
        && parts[4].len() == 12
        && parts[4].bytes().all(|b| b.is_ascii_digit())
        && parts[5]
            .strip_prefix("targetgroup/")
            .is_some_and(|rest| rest.split('/').filter(|p| !p.is_empty()).count() == 2)
        && value.len() <= 512
        && !value.contains('#')
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
            let requests = match record.body {
                None => Err(InputError::MissingBody {
                    message_id: Quoted::new(&message_id),
                }),
                Some(body) => serde_json::from_str::<Value>(&body)
                    .map_err(|e| InputError::malformed("SQS message body", e))
                    .and_then(|body| parse_single(&body, Some(&message_id))),
            };
            Ok(BatchRecord { message_id, requests })
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
            other => panic!("expected a direct request, got {other:?}"),
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
    fn a_request_without_an_event_id_is_named_by_its_lambda_request_id() {
        let named = |payload: Value| {
            let mut invocation = parse_invocation(&payload).expect("parses");
            invocation.name_events("req-1");
            invocation
        };
        let Invocation::Direct(agent) = named(json!({"instance_id": "i-0123abcd"})) else {
            panic!("direct")
        };
        assert_eq!(agent.trigger.event_id.as_deref(), Some("req-1"));
        let Invocation::Restore(restore) = named(json!({"action": "restore", "instance_id": "i-0123abcd"})) else {
            panic!("restore")
        };
        assert_eq!(restore.trigger.event_id.as_deref(), Some("req-1"));
        // An event keeps its own id, and an SQS record keeps its message id as its name.
        let Invocation::Direct(event) = named(sample("spot-interruption-terminate.json")) else {
            panic!("direct")
        };
        assert_ne!(event.trigger.event_id.as_deref(), Some("req-1"));
        assert!(event.trigger.event_id.is_some());
        let Invocation::Batch(records) = named(sample("sqs-batch.json")) else {
            panic!("batch")
        };
        for request in records.iter().flat_map(|r| r.requests.as_ref().unwrap()) {
            assert_ne!(crate::steplog::event_id(&request.trigger), "req-1");
            assert!(!crate::steplog::event_id(&request.trigger).is_empty());
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
        let first = &records[0].requests.as_ref().unwrap()[0];
        assert_eq!(first.trigger.sqs_message_id.as_deref(), Some("m1"));
        assert!(matches!(records[1].requests, Err(InputError::Malformed { .. })));
        assert_eq!(records[2].requests, Err(InputError::NestedBatch));
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
                json!({"source": "aws.ec2", "detail-type": "EC2 AMI State Change"}),
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

    fn sample(file: &str) -> Value {
        let path = format!("{}/events/{file}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn index_update(payload: Value) -> IndexUpdate {
        match parse_invocation(&payload).expect("parses") {
            Invocation::IndexUpdate(update) => update,
            other => panic!("expected an index update, got {other:?}"),
        }
    }

    #[test]
    fn a_scheduled_event_refreshes_the_index() {
        let Invocation::RefreshIndex { event_id } = parse_invocation(&sample("scheduled-refresh.json")).unwrap() else {
            panic!("expected a refresh")
        };
        assert_eq!(event_id.as_deref(), Some("53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa"));
    }

    #[test]
    fn cloudtrail_register_and_deregister_calls_update_the_index() {
        let IndexUpdate::Apply(register) = index_update(sample("cloudtrail-register-targets.json")) else {
            panic!("expected a change")
        };
        assert_eq!(register.call, TargetsCall::RegisterTargets);
        assert_eq!(
            register.target_group_arn,
            "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web-nodeport/0123456789abcdef"
        );
        assert_eq!(
            register.targets,
            vec![ChangedTarget {
                id: "i-0123456789abcdef0".into(),
                port: Some(30080),
                availability_zone: None
            }]
        );
        assert_eq!(register.event_time.unwrap().to_rfc3339(), "2026-11-21T09:58:12+00:00");
        assert_eq!(
            register.event_id.as_deref(),
            Some("3c1f8a2e-5d7b-4e0c-9a61-8b2d4f6e0a13")
        );

        let IndexUpdate::Apply(deregister) = index_update(sample("cloudtrail-deregister-targets.json")) else {
            panic!("expected a change")
        };
        assert_eq!(deregister.call, TargetsCall::DeregisterTargets);
        assert_eq!(deregister.targets.len(), 2);
        assert_eq!(deregister.targets[0].availability_zone.as_deref(), Some("us-east-1b"));
        assert_eq!(deregister.targets[1].port, None, "ELB uses the group's port then");
    }

    #[test]
    fn a_failed_call_changes_nothing_in_the_index() {
        let mut event = sample("cloudtrail-register-targets.json");
        event["detail"]["errorCode"] = json!("InvalidTarget");
        event["detail"]["errorMessage"] = json!("The following targets are not in a running state");
        event["detail"]["requestParameters"] = Value::Null;
        assert_eq!(
            index_update(event),
            IndexUpdate::FailedCall {
                call: TargetsCall::RegisterTargets,
                error_code: "InvalidTarget".into(),
                event_id: Some("3c1f8a2e-5d7b-4e0c-9a61-8b2d4f6e0a13".into()),
            }
        );
    }

    #[test]
    fn index_events_are_parsed_strictly() {
        let register = sample("cloudtrail-register-targets.json");
        let with = |path: &[&str], value: Value| {
            let mut event = register.clone();
            let mut at = &mut event;
            for key in &path[..path.len() - 1] {
                at = &mut at[*key];
            }
            at[path[path.len() - 1]] = value;
            event
        };
        let cases = [
            (
                with(&["detail", "eventName"], json!("CreateTargetGroup")),
                "only RegisterTargets and DeregisterTargets are handled",
            ),
            (
                with(&["detail", "eventSource"], json!("ec2.amazonaws.com")),
                "invalid detail.eventSource",
            ),
            (
                with(&["detail", "requestParameters"], Value::Null),
                "missing field `detail.requestParameters`",
            ),
            (
                with(
                    &["detail", "requestParameters", "targetGroupArn"],
                    json!("web-nodeport"),
                ),
                "is not a target group ARN",
            ),
            (
                with(&["detail", "requestParameters", "targetGroupArn"], json!(5)),
                "malformed detail.requestParameters",
            ),
            (
                with(&["detail", "requestParameters", "targets"], json!([])),
                "names no target",
            ),
            (
                with(
                    &["detail", "requestParameters", "targets"],
                    json!([{"id": "i-0123abcd", "port": 0}]),
                ),
                "0 is not a port",
            ),
            (
                with(&["detail", "requestParameters", "targets"], json!([{"port": 80}])),
                "missing field `id`",
            ),
            (with(&["detail", "eventTime"], json!("noon")), "RFC 3339"),
            (with(&["detail"], json!({})), "malformed CloudTrail event"),
            (
                with(&["detail-type"], json!("AWS Service Event via CloudTrail")),
                "only \"AWS API Call via CloudTrail\" is handled",
            ),
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
        ];
        for (payload, expected) in cases {
            let message = rejected(payload.clone()).to_string();
            assert!(message.contains(expected), "{payload:.120}: {message}");
            assert!(message.len() < 400, "error message too long: {message:.100}...");
        }
    }

    #[test]
    fn an_unknown_source_is_told_what_is_handled() {
        let message = rejected(json!({"source": "aws.s3", "detail-type": "Object Created"})).to_string();
        for handled in [
            "aws.ec2",
            SPOT_INTERRUPTION,
            "aws.events",
            SCHEDULED_EVENT,
            "aws.elasticloadbalancing",
            CLOUDTRAIL_API_CALL,
        ] {
            assert!(message.contains(handled), "{message}");
        }
    }

    #[test]
    fn index_events_do_not_ride_in_an_sqs_batch() {
        let payload = json!({"Records": [
            {"messageId": "m1", "body": sample("scheduled-refresh.json").to_string()},
            {"messageId": "m2", "body": sample("cloudtrail-register-targets.json").to_string()},
        ]});
        let Invocation::Batch(records) = parse_invocation(&payload).unwrap() else {
            panic!("expected a batch")
        };
        for record in records {
            assert_eq!(record.requests, Err(InputError::IndexEventInBatch));
        }
    }

    #[test]
    fn restores_are_asked_for_directly_or_by_a_running_state_change() {
        let Invocation::Restore(restore) = parse_invocation(&sample("restore.json")).unwrap() else {
            panic!("expected a restore")
        };
        assert_eq!(restore.instance_id.as_str(), "i-0123456789abcdef0");
        assert_eq!(restore.trigger.source, Source::Operator);
        let Invocation::Restore(restore) = parse_invocation(&sample("ec2-state-change-running.json")).unwrap() else {
            panic!("expected a restore")
        };
        assert_eq!(restore.trigger.source, Source::EventBridge);
        assert_eq!(restore.trigger.account.as_deref(), Some("123456789012"));

        let mut pending = sample("ec2-state-change-running.json");
        pending["detail"]["state"] = json!("pending");
        let message = rejected(pending).to_string();
        assert!(message.contains("\"pending\" is not handled"), "{message}");
        let message = rejected(json!({"action": "restore", "instance_id": "i-0123abcd", "groups": ["sg-1"]}));
        assert!(message.to_string().contains("unknown field"), "{message}");
        let batch = json!({"Records": [{"messageId": "m", "body": sample("restore.json").to_string()}]});
        let Invocation::Batch(records) = parse_invocation(&batch).unwrap() else {
            panic!("expected a batch")
        };
        assert_eq!(records[0].requests, Err(InputError::RestoreInBatch));
    }

    #[test]
    fn the_identity_proof_comes_whole_or_not_at_all() {
        let r = direct(json!({"instance_id": "i-0123abcd", "identity_document": "{}", "identity_signature": "AA=="}));
        assert_eq!(
            r.identity,
            Some(IdentityProof {
                document: "{}".into(),
                signature: "AA==".into()
            })
        );
        assert_eq!(
            rejected(json!({"instance_id": "i-0123abcd", "identity_signature": "AA=="})),
            InputError::IncompleteIdentityProof
        );
    }

    #[test]
    fn quoted_values_are_cut_short() {
        let q = Quoted::new(&"x".repeat(500));
        assert!(q.to_string().len() < QUOTE_LIMIT + 10);
    }
}
