//! The node agent's payload, as instance metadata's `spot/instance-action` inspires it. The agent (`spot-agent`)
//! builds it with `AgentPayload::notice` and the function reads it back with the same type, so the two cannot drift.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::InputError;
use crate::request::{IdentityProof, Request};
use crate::trigger::{Action, Source, Trigger};
use crate::values::{InstanceId, check_account, check_region, parse_time};

/// `{"instance_id", "action", "time", "region", "account", "identity_document", "identity_signature"}`. Only an
/// instance id (as `instance_id` or `instance-id`) is required; unknown fields are rejected.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentPayload {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// The spelling instance metadata uses; accepted from hand-written payloads.
    #[serde(default, rename = "instance-id", skip_serializing_if = "Option::is_none")]
    pub instance_id_dashed: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    /// RFC 3339: when the action happens (Spot's `spot/instance-action` time), the rebalance notice time, or when
    /// the agent saw a scale-in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// The raw text of instance metadata's `/latest/dynamic/instance-identity/document`, byte for byte, so its
    /// signature still verifies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_document: Option<String>,
    /// The raw text of `/latest/dynamic/instance-identity/signature` (base64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_signature: Option<String>,
}

/// Where the agent runs, as its signed identity document says.
pub struct AgentIdentity<'a> {
    pub instance_id: &'a InstanceId,
    pub region: &'a str,
    pub account: &'a str,
    pub document: &'a str,
    pub signature: &'a str,
}

impl AgentPayload {
    /// What the agent sends for one notice: who, what, when (whole seconds, UTC, as instance metadata writes it), and
    /// the signed identity document that proves the sender runs on that instance.
    pub fn notice(identity: &AgentIdentity<'_>, action: Action, time: DateTime<Utc>) -> Self {
        AgentPayload {
            instance_id: Some(identity.instance_id.to_string()),
            instance_id_dashed: None,
            action: Some(action),
            time: Some(time.to_rfc3339_opts(SecondsFormat::Secs, true)),
            region: Some(identity.region.to_owned()),
            account: Some(identity.account.to_owned()),
            identity_document: Some(identity.document.to_owned()),
            identity_signature: Some(identity.signature.to_owned()),
        }
    }

    /// The request it asks for, every field checked.
    pub fn into_request(self) -> Result<Request, InputError> {
        let raw_id = match (self.instance_id, self.instance_id_dashed) {
            (Some(_), Some(_)) => return Err(InputError::AmbiguousInstanceId),
            (Some(id), None) | (None, Some(id)) => id,
            (None, None) => return Err(InputError::MissingInstanceId),
        };
        let instance_id = InstanceId::parse(&raw_id)?;
        let action_time = self.time.as_deref().map(|t| parse_time("time", t)).transpose()?;
        let region = self.region.map(|r| check_region(&r)).transpose()?;
        let account = self.account.map(|a| check_account(&a)).transpose()?;
        let identity = match (self.identity_document, self.identity_signature) {
            (Some(document), Some(signature)) => Some(IdentityProof { document, signature }),
            (None, None) => None,
            _ => return Err(InputError::IncompleteIdentityProof),
        };
        Ok(Request {
            instance_id,
            identity,
            trigger: Trigger {
                action: self.action,
                action_time,
                region,
                account,
                ..Trigger::from_source(Source::NodeAgent)
            },
        })
    }
}

/// A node-agent payload names its instance at the top level.
pub(crate) fn is_agent(object: &serde_json::Map<String, Value>) -> bool {
    object.contains_key("instance_id") || object.contains_key("instance-id")
}

pub(crate) fn parse(payload: &Value) -> Result<Request, InputError> {
    AgentPayload::deserialize(payload)
        .map_err(|e| InputError::malformed("node-agent payload", e))?
        .into_request()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Invocation, parse_invocation};
    use serde_json::json;

    fn direct(payload: Value) -> Request {
        match parse_invocation(&payload).expect("parses") {
            Invocation::Direct(request) => request,
            other => panic!("expected a direct request, got {other:?}"),
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
            parse_invocation(&json!({"instance_id": "i-0123abcd", "identity_signature": "AA=="})).unwrap_err(),
            InputError::IncompleteIdentityProof
        );
    }

    #[test]
    fn what_the_agent_sends_is_what_the_function_reads() {
        let id = InstanceId::parse("i-0123456789abcdef0").unwrap();
        let identity = AgentIdentity {
            instance_id: &id,
            region: "eu-west-1",
            account: "123456789012",
            document: "{\"instanceId\": \"i-0123456789abcdef0\"}",
            signature: "c2ln\n",
        };
        let time = DateTime::parse_from_rfc3339("2026-11-22T01:02:03.456Z")
            .unwrap()
            .to_utc();
        let sent = serde_json::to_value(AgentPayload::notice(&identity, Action::ScaleIn, time)).unwrap();
        assert_eq!(
            sent,
            json!({
                "instance_id": "i-0123456789abcdef0",
                "action": "scale-in",
                "time": "2026-11-22T01:02:03Z",
                "region": "eu-west-1",
                "account": "123456789012",
                "identity_document": "{\"instanceId\": \"i-0123456789abcdef0\"}",
                "identity_signature": "c2ln\n",
            })
        );
        let read = direct(sent);
        assert_eq!(read.instance_id, id);
        assert_eq!(read.trigger.action, Some(Action::ScaleIn));
        assert_eq!(read.trigger.account.as_deref(), Some("123456789012"));
        assert_eq!(read.identity.unwrap().signature, "c2ln\n");
    }
}
