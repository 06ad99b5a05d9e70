//! Proof that a node-agent request comes from the instance it names: the instance identity document and its
//! signature, which only code on that instance can read from instance metadata, checked against AWS's published
//! certificate for the region (RSA PKCS#1 v1.5 over the document's bytes, SHA-256).
//!
//! EventBridge events need no such proof: only AWS and principals allowed by the rule's target can send them.

use base64::Engine;
use rsa::RsaPublicKey;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::DecodePublicKey;
use rsa::signature::Verifier;
use serde::Deserialize;
use sha2::Sha256;
use x509_cert::Certificate;
use x509_cert::der::{DecodePem, Encode};

use super::scope::Home;
use crate::input::{IdentityProof, Request, Source};

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

/// The public key of the configured certificate.
#[derive(Clone, Debug)]
pub struct IdentityVerifier {
    key: VerifyingKey<Sha256>,
}

impl PartialEq for IdentityVerifier {
    fn eq(&self, other: &Self) -> bool {
        self.key.as_ref() == other.key.as_ref()
    }
}

impl IdentityVerifier {
    /// `IDENTITY_CERT_PEM`: the certificate's PEM text, or the path of a file holding it.
    pub fn load(value: &str) -> Result<Self, &'static str> {
        let text = if value.contains("-----BEGIN") {
            value.to_owned()
        } else {
            std::fs::read_to_string(value.trim()).map_err(|_| "expected PEM text or the path of a readable PEM file")?
        };
        Self::from_certificate_pem(&text)
    }

    pub fn from_certificate_pem(pem: &str) -> Result<Self, &'static str> {
        let certificate = Certificate::from_pem(pem.trim().as_bytes()).map_err(|_| "not a PEM X.509 certificate")?;
        let spki = certificate
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|_| "the certificate's public key cannot be read")?;
        let key = RsaPublicKey::from_public_key_der(&spki).map_err(|_| "the certificate's key is not an RSA key")?;
        Ok(Self {
            key: VerifyingKey::new(key),
        })
    }

    /// Check the signature, then that the document is about this request's instance, account and region.
    pub fn verify(&self, proof: &IdentityProof, request: &Request, home: &Home) -> Result<(), ProofError> {
        if proof.document.len() > DOCUMENT_MAX || proof.signature.len() > SIGNATURE_MAX {
            return Err(ProofError::TooLarge);
        }
        let compact: String = proof.signature.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map_err(|_| ProofError::NotBase64)?;
        let signature = Signature::try_from(bytes.as_slice()).map_err(|_| ProofError::Malformed)?;
        self.key
            .verify(proof.document.as_bytes(), &signature)
            .map_err(|_| ProofError::BadSignature)?;
        let document: IdentityDocument = serde_json::from_str(&proof.document).map_err(|_| ProofError::Incomplete)?;
        let mut mismatches = Vec::new();
        if document.instance_id != request.instance_id.as_str() {
            mismatches.push(format!("instanceId {:.32}", document.instance_id));
        }
        let account = request.trigger.account.as_ref().or(home.account.as_ref());
        if account.is_some_and(|a| *a != document.account_id) {
            mismatches.push(format!("accountId {:.16}", document.account_id));
        }
        let region = request.trigger.region.as_ref().or(home.region.as_ref());
        if region.is_some_and(|r| *r != document.region) {
            mismatches.push(format!("region {:.32}", document.region));
        }
        if mismatches.is_empty() {
            Ok(())
        } else {
            Err(ProofError::Mismatch(mismatches.join(", ")))
        }
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
    #[error("the identity document's signature does not verify against IDENTITY_CERT_PEM")]
    BadSignature,
    #[error("the signed identity document lacks instanceId, accountId or region")]
    Incomplete,
    #[error("the signed identity document does not match the request: {0}")]
    Mismatch(String),
}

/// The identity settings: the certificate, and whether agent requests must carry a proof.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IdentityPolicy {
    pub verifier: Option<IdentityVerifier>,
    /// `REQUIRE_IDENTITY_PROOF=true`: an agent request without a valid proof is refused.
    pub required: bool,
}

impl IdentityPolicy {
    /// Why this request is not proven to come from its instance; None when it is, or when no proof is needed. A proof
    /// that is sent is always checked: a bad one is a warning sign even where proofs are optional.
    pub fn check(&self, request: &Request, home: &Home) -> Option<String> {
        if request.trigger.source != Source::NodeAgent {
            return None;
        }
        match (&request.identity, &self.verifier) {
            (Some(proof), Some(verifier)) => verifier.verify(proof, request, home).err().map(|e| e.to_string()),
            (Some(_), None) => {
                tracing::warn!("an identity proof was sent but IDENTITY_CERT_PEM is not set; it was not checked");
                None
            }
            (None, _) if self.required => Some(
                "REQUIRE_IDENTITY_PROOF is on and the request carries no identity_document and identity_signature"
                    .into(),
            ),
            (None, _) => None,
        }
    }
}
