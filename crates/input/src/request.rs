//! What every wire format is turned into: a `Request` (one instance, and why) or a `RestoreRequest`, each carrying
//! the `Trigger` that says how it arrived.

use crate::trigger::Trigger;
use crate::values::InstanceId;

/// One instance to clean up, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub instance_id: InstanceId,
    pub trigger: Trigger,
    /// The node agent's instance identity document and signature, when it sent them.
    pub identity: Option<IdentityProof>,
}

/// What the agent sent to prove it runs on the instance: `identity_document` and `identity_signature`, as instance
/// metadata gave them. The function's trust checks verify them.
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
