//! The records a restore acts on (each ENI's original groups, and with `REREGISTER_ON_RESTORE` the targets an instance
//! left) are signed, so that a restore acts only on records this function wrote, for this instance and this
//! interruption. Anyone who may tag an ENI or an instance could otherwise choose what the function later applies.
//!
//! The signature is an HMAC made by KMS (`GenerateMac`, HMAC_SHA_256) with a key that only the function's roles may
//! use (`RECORD_KEY_ID`; the template creates it, and its key policy grants `GenerateMac` to the cleanup's role and
//! `VerifyMac` to both). The key never leaves KMS, and every use is in CloudTrail. What is signed names the instance,
//! the ENI (or the instance's targets), the interruption's episode (the claim's, with the table) and when it
//! was written, so a record copied from another ENI or instance, or edited after it was written, does not verify.

//!
//! Two records are signed alike: `groups`, each ENI's original groups (written by the quarantine, read by the
//! restore), and `left_targets`, with `REREGISTER_ON_RESTORE` the targets an instance left (written at the end of
//! its cleanup, registered again by the restore). Both are checked here, by `check`.

mod groups;
pub mod left_targets;

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::aws::CallError;
pub use groups::{GroupsRecord, ORIGINAL_GROUPS_TAG, recorded_groups};

/// EC2's limit on a tag's value: longer records continue in numbered tags.
const TAG_VALUE_MAX: usize = 256;

const ALGORITHM: aws_sdk_kms::types::MacAlgorithmSpec = aws_sdk_kms::types::MacAlgorithmSpec::HmacSha256;

/// KMS's HMAC key for records.
#[derive(Clone, Debug)]
pub struct Signer {
    kms: aws_sdk_kms::Client,
    key_id: String,
}

impl Signer {
    pub fn new(kms: aws_sdk_kms::Client, key_id: String) -> Self {
        Signer { kms, key_id }
    }

    /// The record's MAC, base64, for a tag.
    pub async fn sign(&self, message: &str) -> Result<String, CallError> {
        let output = self
            .kms
            .generate_mac()
            .key_id(&self.key_id)
            .mac_algorithm(ALGORITHM)
            .message(aws_smithy_types::Blob::new(message.as_bytes()))
            .send()
            .await
            .map_err(|e| CallError::new("GenerateMac", &e))?;
        let mac = output.mac().map(|m| m.as_ref()).unwrap_or_default();
        Ok(STANDARD.encode(mac))
    }

    /// Whether `mac` is this key's MAC of `message`. False for a MAC that does not match or is not even base64; an
    /// error only when KMS could not be asked.
    pub async fn verify(&self, message: &str, mac: &str) -> Result<bool, CallError> {
        let Ok(mac) = STANDARD.decode(mac.trim()) else {
            return Ok(false);
        };
        if mac.is_empty() {
            return Ok(false);
        }
        let answer = self
            .kms
            .verify_mac()
            .key_id(&self.key_id)
            .mac_algorithm(ALGORITHM)
            .message(aws_smithy_types::Blob::new(message.as_bytes()))
            .mac(aws_smithy_types::Blob::new(mac))
            .send()
            .await;
        match answer {
            Ok(output) => Ok(output.mac_valid()),
            // KMS's answer for a MAC its key did not make.
            Err(e) if e.as_service_error().is_some_and(|e| e.is_kms_invalid_mac_exception()) => Ok(false),
            Err(e) => Err(CallError::new("VerifyMac", &e)),
        }
    }
}

/// A record's entries packed into tag values of at most `TAG_VALUE_MAX` characters, joined by `separator`, in at
/// most `max_values` values; and how many entries did not fit. An entry longer than a value has a value of its own.
fn pack(entries: impl IntoIterator<Item = String>, separator: char, max_values: usize) -> (Vec<String>, usize) {
    let (mut values, mut left_out) = (vec![String::new()], 0);
    for entry in entries {
        let current = values.last_mut().expect("never empty");
        if current.is_empty() || current.len() + 1 + entry.len() <= TAG_VALUE_MAX {
            if !current.is_empty() {
                current.push(separator);
            }
            current.push_str(&entry);
        } else if values.len() < max_values {
            values.push(entry);
        } else {
            left_out += 1;
        }
    }
    (values, left_out)
}

/// The key of a record's `i`th value (from 0): `key`, then `key:2`, `key:3`, ...
fn numbered(key: &str, i: usize) -> String {
    match i {
        0 => key.to_owned(),
        n => format!("{key}:{}", n + 1),
    }
}

/// The keys of a record's values that `tags` holds, in order: `key`, `key:2`, ... up to the first missing one.
fn numbered_keys(tags: &BTreeMap<String, String>, key: &str) -> Vec<String> {
    (0..)
        .map(|i| numbered(key, i))
        .take_while(|k| tags.contains_key(k))
        .collect()
}

/// How this run signs the records it writes, and checks the ones it finds.
#[derive(Clone, Debug, Default)]
pub struct Signing {
    /// None when no key is configured (`RECORD_KEY_ID`): records are written unsigned, and a restore refuses them.
    pub signer: Option<Signer>,
    /// The interruption the records are written for; empty when the claims keep none (on instance tags).
    pub episode: String,
}

/// Whether a record is this function's own.
#[derive(Clone, Debug, PartialEq)]
pub enum Trust {
    /// Its MAC verifies.
    Ours,
    /// No key is configured, so nothing is signed: the record is taken as it is, and a restore refuses it.
    Unsigned,
    /// Not written by this function, or changed since: why.
    NotOurs(String),
    /// KMS could not be asked.
    Unknown(CallError),
}

/// A record as found: the text its MAC should cover, the interruption it says it was written for, and its MAC.
#[derive(Clone, Copy, Debug)]
pub struct Presented<'a> {
    pub message: &'a str,
    pub episode: &'a str,
    pub mac: Option<&'a str>,
}

/// Check a record's MAC and, when the interruption it should belong to is known (`episode`), that it was written for
/// that one: a valid record of an earlier interruption is not this one's.
pub async fn check(signer: Option<&Signer>, found: Presented<'_>, episode: Option<&str>) -> Trust {
    let Some(signer) = signer else {
        return Trust::Unsigned;
    };
    let Some(mac) = found.mac else {
        return Trust::NotOurs("it carries no MAC".into());
    };
    match signer.verify(found.message, mac).await {
        Ok(false) => Trust::NotOurs("its MAC does not verify: it was written by someone else, or changed".into()),
        Err(error) => Trust::Unknown(error),
        Ok(true) => match episode {
            Some(now) if !now.is_empty() && found.episode != now => Trust::NotOurs(format!(
                "it was written for another interruption ({:.40}, not {now:.40})",
                found.episode
            )),
            _ => Trust::Ours,
        },
    }
}
