//! Why a payload was rejected. Every message names what was wrong, and quotes at most a short cut of the value.

use std::fmt;

use crate::kinds::{
    AWS_HEALTH_EVENT, CLOUDTRAIL_API_CALL, REBALANCE_RECOMMENDATION, SCHEDULED_EVENT, SPOT_INTERRUPTION, STATE_CHANGE,
    TERMINATE_LIFECYCLE_ACTION,
};
use crate::quoted::Quoted;

#[derive(Clone, Debug, thiserror::Error, PartialEq)]
pub enum InputError {
    #[error("payload must be a JSON object, got {0}")]
    NotAnObject(&'static str),
    #[error("payload nests arrays and objects more than {0} deep")]
    TooDeep(usize),
    #[error(
        "unrecognised payload: expected a node-agent payload (instance_id), an EventBridge event \
         (source, detail-type), an SQS or SNS event (Records) or an Auto Scaling lifecycle message; got keys [{0}]"
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
    #[error("a registration index event cannot arrive in a batch (SQS or SNS); send it to the function directly")]
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
    #[error("SQS message body is a batch event: batches do not nest")]
    NestedBatch,
    #[error("{what} {value} is not handled: {reason}")]
    Unhandled {
        what: &'static str,
        value: Quoted,
        reason: &'static str,
    },
    #[error("a restore cannot arrive in a batch (SQS or SNS); send it to the function directly")]
    RestoreInBatch,
    #[error("send identity_document and identity_signature together, or neither")]
    IncompleteIdentityProof,
}

impl InputError {
    pub(crate) fn malformed(what: &'static str, err: impl fmt::Display) -> Self {
        let reason = err.to_string();
        InputError::Malformed {
            what,
            reason: Quoted::new(&reason).into_inner(),
        }
    }
}
