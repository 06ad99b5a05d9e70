//! This instance's identity, from its signed instance identity document: who the agent speaks for.

use serde::Deserialize;
use spot_cleanup_input::{AgentIdentity, InstanceId, Quoted};

pub const DOCUMENT_PATH: &str = "/latest/dynamic/instance-identity/document";
pub const SIGNATURE_PATH: &str = "/latest/dynamic/instance-identity/signature";

/// The fields the agent needs, and the raw document and signature, kept byte for byte so that the function can check
/// the signature against AWS's public certificate.
#[derive(Clone, Debug, PartialEq)]
pub struct Identity {
    pub instance_id: InstanceId,
    pub region: String,
    pub account: String,
    pub document: String,
    pub signature: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    instance_id: String,
    region: String,
    account_id: String,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum IdentityError {
    #[error("the instance identity document is not the expected JSON: {0}")]
    Malformed(String),
    #[error("the instance identity document has instance id {0}, which is not an instance id")]
    BadInstanceId(Quoted),
    #[error("the instance identity document has region {0}, which is not a region")]
    BadRegion(Quoted),
    #[error("the instance identity document has account {0}, which is not 12 digits")]
    BadAccount(Quoted),
    #[error("the instance identity signature is empty")]
    NoSignature,
}

impl Identity {
    /// What the payload carries of it.
    pub fn as_agent(&self) -> AgentIdentity<'_> {
        AgentIdentity {
            instance_id: &self.instance_id,
            region: &self.region,
            account: &self.account,
            document: &self.document,
            signature: &self.signature,
        }
    }

    pub fn parse(document: String, signature: String) -> Result<Self, IdentityError> {
        let parsed: Document = serde_json::from_str(&document).map_err(|e| IdentityError::Malformed(e.to_string()))?;
        let instance_id = InstanceId::parse(&parsed.instance_id)
            .map_err(|_| IdentityError::BadInstanceId(Quoted::new(&parsed.instance_id)))?;
        let region_like = !parsed.region.is_empty()
            && parsed.region.len() <= 32
            && parsed
                .region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !region_like {
            return Err(IdentityError::BadRegion(Quoted::new(&parsed.region)));
        }
        if parsed.account_id.len() != 12 || !parsed.account_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(IdentityError::BadAccount(Quoted::new(&parsed.account_id)));
        }
        if signature.trim().is_empty() {
            return Err(IdentityError::NoSignature);
        }
        Ok(Self {
            instance_id,
            region: parsed.region,
            account: parsed.account_id,
            document,
            signature,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document(instance: &str, region: &str, account: &str) -> String {
        format!(r#"{{"instanceId": "{instance}", "region": "{region}", "accountId": "{account}", "imageId": "ami-1"}}"#)
    }

    #[test]
    fn a_well_formed_document_gives_the_instance_region_and_account() {
        let raw = document("i-0123456789abcdef0", "ap-southeast-2", "123456789012");
        let identity = Identity::parse(raw.clone(), "sig".to_owned()).unwrap();
        assert_eq!(identity.instance_id.as_str(), "i-0123456789abcdef0");
        assert_eq!(identity.region, "ap-southeast-2");
        assert_eq!(identity.account, "123456789012");
        assert_eq!(identity.document, raw);
    }

    #[test]
    fn a_bad_document_or_signature_is_refused() {
        let sig = || "sig".to_owned();
        assert!(matches!(
            Identity::parse("{".into(), sig()),
            Err(IdentityError::Malformed(_))
        ));
        assert!(matches!(
            Identity::parse(r#"{"instanceId": "i-0123abcd"}"#.into(), sig()),
            Err(IdentityError::Malformed(_))
        ));
        assert!(matches!(
            Identity::parse(document("web-1", "us-east-1", "123456789012"), sig()),
            Err(IdentityError::BadInstanceId(_))
        ));
        assert!(matches!(
            Identity::parse(document("i-0123abcd", "US East", "123456789012"), sig()),
            Err(IdentityError::BadRegion(_))
        ));
        assert!(matches!(
            Identity::parse(document("i-0123abcd", "us-east-1", "1234"), sig()),
            Err(IdentityError::BadAccount(_))
        ));
        assert_eq!(
            Identity::parse(document("i-0123abcd", "us-east-1", "123456789012"), " \n".into()),
            Err(IdentityError::NoSignature)
        );
    }
}
