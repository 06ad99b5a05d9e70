//! What delivered a message: the function's own invocation, an SQS record, an SNS topic, or an SNS envelope inside an
//! SQS record. The transports (`sqs`, `sns`) return each message they carry as a `Carried`, unparsed; `dispatch`
//! parses it and notes its carrier on every trigger it gives.

use serde_json::Value;

use crate::error::InputError;
use crate::trigger::Trigger;

/// The topic and message that carried a request, for its trigger.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Via {
    pub topic_arn: String,
    pub message_id: String,
}

/// What delivered one message to `dispatch::parse_message`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Carrier {
    /// Straight to the function.
    Direct,
    /// An SQS record, by its message id.
    Sqs(String),
    /// An SNS message, straight to the function.
    Sns(Via),
    /// An SNS envelope inside an SQS record.
    SqsFromSns { message_id: String, via: Via },
}

impl Carrier {
    /// Note on a trigger what carried its request.
    pub(crate) fn stamp(&self, trigger: &mut Trigger) {
        match self {
            Carrier::Direct => {}
            Carrier::Sqs(id) => trigger.sqs_message_id = Some(id.clone()),
            Carrier::Sns(via) => {
                trigger.sns_topic_arn = Some(via.topic_arn.clone()).filter(|t| !t.is_empty());
                trigger.sns_message_id = Some(via.message_id.clone()).filter(|m| !m.is_empty());
            }
            Carrier::SqsFromSns { message_id, via } => {
                trigger.sqs_message_id = Some(message_id.clone());
                trigger.sns_topic_arn = Some(via.topic_arn.clone()).filter(|t| !t.is_empty());
                trigger.sns_message_id = Some(via.message_id.clone()).filter(|m| !m.is_empty());
            }
        }
    }
}

/// One message a transport carried, not parsed yet: the id the answer names it by, its body as JSON (or why it is
/// not), and what carried it.
#[derive(Debug)]
pub(crate) struct Carried {
    pub message_id: String,
    pub body: Result<Value, InputError>,
    pub carrier: Carrier,
}
