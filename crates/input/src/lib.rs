//! Every payload spot-cleanup accepts becomes one or more `Request`s; everything else is rejected with a typed error.
//! Parsing needs no AWS client, so the function, its node agent and the fuzz target all depend on this crate alone.
//!
//! One module per wire format, each turning its own shape into the one internal `Request` (the layout of
//! aws-node-termination-handler's `pkg/monitor`): after parsing, nothing downstream knows where a request came from
//! except through the `Trigger` kept for the summary.
//!
//! - `agent`: the node agent's small JSON object (`AgentPayload`, shared with the agent that sends it);
//! - `eventbridge`: the envelope, routed by `source` and `detail-type` to `spot`, `rebalance`, `state_change`,
//!   `lifecycle`, `health`, `scheduled` (refresh the registration index) and `cloudtrail` (update it);
//! - `lifecycle` also reads the message an Auto Scaling lifecycle hook sends straight to SQS;
//! - `restore`: an operator's `{"action": "restore", ...}`;
//! - `sqs`: a batch whose bodies are any of the above;
//! - `sns`: a topic's messages delivered to the function, and a topic's envelope inside an SQS body.
//!
//! A well-formed AWS event with nothing to do (a state change to `pending`, a launch lifecycle action, a Health issue)
//! is `Message::Ignored`, not an error: rules and queues are often shared with other consumers.

mod agent;
mod cloudtrail;
mod error;
mod eventbridge;
mod health;
mod invocation;
mod kinds;
mod lifecycle;
mod quoted;
mod rebalance;
mod request;
mod restore;
mod scheduled;
mod sns;
mod spot;
mod sqs;
mod state_change;
mod values;

pub use agent::{AgentIdentity, AgentPayload};
pub use error::InputError;
pub use invocation::{BatchRecord, Invocation, Message, parse_invocation};
pub use kinds::{
    AUTOSCALING_SOURCE, AWS_HEALTH_EVENT, CLOUDTRAIL_API_CALL, HEALTH_SOURCE, REBALANCE_RECOMMENDATION,
    SCHEDULED_EVENT, SPOT_INTERRUPTION, STATE_CHANGE, TERMINATE_LIFECYCLE_ACTION,
};
pub use quoted::Quoted;
pub use request::{
    Action, ChangedTarget, IdentityProof, IndexUpdate, LifecycleAction, LifecycleDestination, Request, RestoreRequest,
    SPOT_NOTICE, Source, TargetsCall, TargetsChange, Trigger,
};
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
