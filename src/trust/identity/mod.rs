//! Proof that a node-agent request comes from the instance it names: the instance identity document and its
//! signature, which only code on that instance can read from instance metadata, checked against AWS's public RSA
//! certificate of the region (RSA PKCS#1 v1.5 over the document's bytes, SHA-256). The certificates ship with the
//! function (`certificates`); `IDENTITY_CERT_PEM` replaces them with one of the operator's.
//!
//! EventBridge events need no such proof: only AWS and principals allowed by the rule's target can send them.

mod certificates;

use base64::Engine;
use rsa::pkcs1v15::Signature;
use rsa::signature::Verifier;
use serde::Deserialize;

use super::scope::Home;
use crate::input::{IdentityProof, Request, Source};
pub use certificates::{Certificates, IdentityVerifier};

/// Identity documents are about 500 bytes; anything much larger is not one.
const DOCUMENT_MAX: usize = 4096;
const SIGNATURE_MAX: usize = 1024;

/// The fields of the identity document that are checked against the request.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IdentityDocument {
    instance_id: String,
    account_id: String,
    region: String,
}

/// Check the signature with the certificate of the region the request is for (the request's own, else this
/// function's), then that the document is about this request's instance, account and region.
pub fn verify(
    certificates: &Certificates,
    proof: &IdentityProof,
    request: &Request,
    home: &Home,
) -> Result<(), ProofError> {
    if proof.document.len() > DOCUMENT_MAX || proof.signature.len() > SIGNATURE_MAX {
        return Err(ProofError::TooLarge);
    }
    let compact: String = proof.signature.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|_| ProofError::NotBase64)?;
    let signature = Signature::try_from(bytes.as_slice()).map_err(|_| ProofError::Malformed)?;
    let expected_region = request.trigger.region.as_ref().or(home.region.as_ref());
    // Without a region to expect (no ARN, no AWS_REGION), the document's own picks the certificate.
    let claimed_region = || {
        serde_json::from_str::<IdentityDocument>(&proof.document)
            .map(|d| d.region)
            .map_err(|_| ProofError::Incomplete)
    };
    let region = match expected_region {
        Some(region) => region.clone(),
        None => claimed_region()?,
    };
    let key = certificates.key(&region)?;
    key.verify(proof.document.as_bytes(), &signature)
        .map_err(|_| ProofError::BadSignature(certificates.describe(&region)))?;
    let document: IdentityDocument = serde_json::from_str(&proof.document).map_err(|_| ProofError::Incomplete)?;
    let mut mismatches = Vec::new();
    if document.instance_id != request.instance_id.as_str() {
        mismatches.push(format!("instanceId {:.32}", document.instance_id));
    }
    let account = request.trigger.account.as_ref().or(home.account.as_ref());
    if account.is_some_and(|a| *a != document.account_id) {
        mismatches.push(format!("accountId {:.16}", document.account_id));
    }
    if document.region != region {
        mismatches.push(format!("region {:.32}", document.region));
    }
    if mismatches.is_empty() {
        Ok(())
    } else {
        Err(ProofError::Mismatch(mismatches.join(", ")))
    }
}

/// Why an identity proof does not prove the request came from its instance.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("the identity document or signature is too large to be one")]
    TooLarge,
    #[error("identity_signature is not base64")]
    NotBase64,
    #[error("identity_signature is malformed")]
    Malformed,
    #[error("the identity document's signature does not verify against {0}")]
    BadSignature(String),
    #[error(
        "no instance identity certificate is known for region {0:.32}: set IDENTITY_CERT_PEM to the certificate of \
         that region (AWS's RSA one)"
    )]
    UnknownRegion(String),
    #[error("the signed identity document lacks instanceId, accountId or region")]
    Incomplete,
    #[error("the signed identity document does not match the request: {0}")]
    Mismatch(String),
}

/// The identity settings: the certificates, and whether agent requests must carry a proof.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IdentityPolicy {
    pub certificates: Certificates,
    /// `REQUIRE_IDENTITY_PROOF` (default: on at the agent entry point, off elsewhere): an agent request without a
    /// valid proof is refused.
    pub required: bool,
}

impl IdentityPolicy {
    /// Why this request is not proven to come from its instance; None when it is, or when no proof is needed. A proof
    /// that is sent is always checked: a bad one is a warning sign even where proofs are optional.
    pub fn check(&self, request: &Request, home: &Home) -> Option<String> {
        if request.trigger.source != Source::NodeAgent {
            return None;
        }
        match &request.identity {
            Some(proof) => verify(&self.certificates, proof, request, home)
                .err()
                .map(|e| e.to_string()),
            None if self.required => Some(
                "an identity proof is required (REQUIRE_IDENTITY_PROOF, on by default at the agent entry point) and \
                 the request carries no identity_document and identity_signature"
                    .into(),
            ),
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::process::Command;

    use super::*;
    use crate::input::{AgentPayload, Invocation, parse_invocation};

    /// A key and self-signed certificate made with the openssl CLI (scripts/setup installs it), standing in for one
    /// region's: no test can sign with AWS's keys.
    struct RegionKey {
        dir: std::path::PathBuf,
        pem: &'static str,
    }

    impl RegionKey {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("spot-cleanup-region-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let made = Command::new("openssl")
                .current_dir(&dir)
                .args([
                    "req", "-x509", "-newkey", "rsa:1024", "-nodes", "-keyout", "key.pem", "-out", "cert.pem",
                ])
                .args(["-days", "1", "-subj", &format!("/O=test {name}")])
                .stderr(std::process::Stdio::null())
                .status()
                .expect("openssl runs");
            assert!(made.success());
            let pem = std::fs::read_to_string(dir.join("cert.pem")).unwrap();
            RegionKey {
                dir,
                pem: Box::leak(pem.into_boxed_str()),
            }
        }

        fn sign(&self, document: &str) -> String {
            let file = self.dir.join("document");
            std::fs::write(&file, document).unwrap();
            let out = Command::new("openssl")
                .args(["dgst", "-sha256", "-sign"])
                .arg(Path::new(&self.dir).join("key.pem"))
                .arg(&file)
                .output()
                .unwrap();
            assert!(out.status.success());
            base64::engine::general_purpose::STANDARD.encode(out.stdout)
        }
    }

    fn request(instance: &str, region: &str, document: &str, signature: &str) -> Request {
        let payload = AgentPayload {
            instance_id: Some(instance.into()),
            region: Some(region.into()),
            account: Some("123456789012".into()),
            identity_document: Some(document.into()),
            identity_signature: Some(signature.into()),
            ..AgentPayload::default()
        };
        let Ok(Invocation::Direct(request)) = parse_invocation(&serde_json::to_value(payload).unwrap()) else {
            panic!("an agent request")
        };
        request
    }

    fn document(instance: &str, region: &str) -> String {
        format!(r#"{{"accountId": "123456789012", "instanceId": "{instance}", "region": "{region}"}}"#)
    }

    /// The certificate is chosen by the region the request is for: a proof signed with one region's key fails in
    /// another, whatever its document says, and a document naming another region fails even where its key is valid.
    #[test]
    fn a_proof_signed_for_one_region_fails_in_another() {
        let (east, west) = (RegionKey::new("east"), RegionKey::new("west"));
        let table: &'static [(&'static str, &'static str)] =
            Box::leak(vec![("us-east-1", east.pem), ("eu-west-1", west.pem)].into_boxed_slice());
        let certificates = Certificates::ByRegion(table);
        let home = |region: &str| Home {
            account: Some("123456789012".into()),
            region: Some(region.into()),
        };
        let id = "i-0123456789abcdef0";

        let in_east = document(id, "us-east-1");
        let proof = east.sign(&in_east);
        let genuine = request(id, "us-east-1", &in_east, &proof);
        let checked = |request: &Request, region: &str| {
            let proof = request.identity.as_ref().unwrap();
            verify(&certificates, proof, request, &home(region))
        };
        assert_eq!(checked(&genuine, "us-east-1"), Ok(()));

        // The same proof presented in eu-west-1: checked against eu-west-1's certificate, it does not verify.
        let moved = request(id, "eu-west-1", &in_east, &proof);
        assert_eq!(
            checked(&moved, "eu-west-1"),
            Err(ProofError::BadSignature("AWS's RSA certificate for eu-west-1".into()))
        );
        // A document for eu-west-1 signed with us-east-1's key does not verify there either.
        let in_west = document(id, "eu-west-1");
        let forged = request(id, "eu-west-1", &in_west, &east.sign(&in_west));
        assert!(matches!(
            checked(&forged, "eu-west-1"),
            Err(ProofError::BadSignature(_))
        ));
        // Signed with the right key, but for another region than the request's: the document is checked too.
        let elsewhere = request(id, "eu-west-1", &in_east, &west.sign(&in_east));
        assert_eq!(
            checked(&elsewhere, "eu-west-1"),
            Err(ProofError::Mismatch("region us-east-1".into()))
        );
        // A region with no certificate at all: refused, saying how to supply one.
        let unknown = request(id, "ap-east-9", &document(id, "ap-east-9"), &proof);
        assert!(matches!(
            checked(&unknown, "ap-east-9"),
            Err(ProofError::UnknownRegion(_))
        ));
        let _ = std::fs::remove_dir_all(&east.dir);
        let _ = std::fs::remove_dir_all(&west.dir);
    }
}
