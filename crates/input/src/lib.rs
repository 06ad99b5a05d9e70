//! Every payload spot-cleanup accepts becomes one or more `Request`s; everything else is rejected with a typed error.
//! Parsing needs no AWS client, so the function, its node agent and the fuzz target all depend on this crate alone.
//!
//! One module per wire format, each turning its own shape into the one internal `Request` (the layout of
//! aws-node-termination-handler's `pkg/monitor`): after parsing, nothing downstream knows where a request came from
//! except through the `Trigger` kept for the summary.
//!
//! In layers, each importing only from the ones below it (`tests/it/layers.rs` holds this):
//!
//! - `dispatch`, the one place a payload is told apart: a whole invocation goes to its transport, the router or its
//!   parser, and every message a transport carried (the one inside an SNS envelope too) to its parser;
//! - `eventbridge`, the router: an event's `source` and `detail-type` pick its parser;
//! - the wire formats, none importing another. The parsers: `agent` (the node agent's small JSON object,
//!   `AgentPayload`, shared with the agent that sends it), `spot`, `rebalance`, `state_change`, `lifecycle` (also the
//!   message an Auto Scaling lifecycle hook sends straight to SQS or SNS), `health`, `scheduled` (refresh the
//!   registration index), `cloudtrail` (update it) and `restore` (an operator's `{"action": "restore", ...}`). The
//!   transports, which only open what they deliver and return the messages inside: `sqs` (a batch whose bodies are
//!   any of the above) and `sns` (a topic's messages delivered to the function, and a topic's envelope inside an SQS
//!   body);
//! - the leaves: `envelope` (the EventBridge envelope the event parsers read), `carrier` (what delivered a message),
//!   `invocation`, `message`, `request`, `trigger` and `index_update` (what parsing returns), `values` (checked
//!   instance ids, regions, accounts, times), `error`, `kinds` (the event kinds' names) and `quoted`.
//!
//! A well-formed AWS event with nothing to do (a state change to `pending`, a launch lifecycle action, a Health issue)
//! is `Message::Ignored`, not an error: rules and queues are often shared with other consumers.

mod agent;
mod carrier;
mod cloudtrail;
mod dispatch;
mod envelope;
mod error;
mod eventbridge;
mod health;
mod index_update;
mod invocation;
mod kinds;
mod lifecycle;
mod message;
mod quoted;
mod rebalance;
mod request;
mod restore;
mod scheduled;
mod sns;
mod spot;
mod sqs;
mod state_change;
mod trigger;
mod values;

pub use agent::{AgentIdentity, AgentPayload};
pub use dispatch::{MAX_DEPTH, parse_invocation};
pub use error::InputError;
pub use index_update::{ChangedTarget, IndexUpdate, TargetsCall, TargetsChange};
pub use invocation::{BatchRecord, Invocation};
pub use kinds::{
    AUTOSCALING_SOURCE, AWS_HEALTH_EVENT, CLOUDTRAIL_API_CALL, HEALTH_SOURCE, REBALANCE_RECOMMENDATION,
    SCHEDULED_EVENT, SPOT_INTERRUPTION, STATE_CHANGE, TERMINATE_LIFECYCLE_ACTION,
};
pub use message::Message;
pub use quoted::Quoted;
pub use request::{IdentityProof, Request, RestoreRequest};
pub use trigger::{Action, LifecycleAction, LifecycleDestination, SPOT_NOTICE, Source, Trigger};
pub use values::InstanceId;

#[cfg(test)]
pub(crate) mod samples {
    use serde_json::Value;

    /// A sample payload from the repository's `events/` folder, the same files the tests and `cargo lambda invoke` use.
    pub fn sample(file: &str) -> Value {
        let path = format!("{}/../../events/{file}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
    }
}
