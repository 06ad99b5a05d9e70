//! The small values every wire format carries, each checked where it is parsed: instance ids, regions, accounts and
//! times. Holding an `InstanceId` means it is valid.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::InputError;
use crate::quoted::Quoted;

/// An EC2 instance id: `i-` and 8 or 17 lowercase hex digits.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InstanceId(String);

impl InstanceId {
    pub fn parse(value: &str) -> Result<Self, InputError> {
        let hex = value.strip_prefix("i-").unwrap_or("");
        let well_formed =
            matches!(hex.len(), 8 | 17) && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if well_formed {
            Ok(Self(value.to_owned()))
        } else {
            Err(InputError::InvalidInstanceId(Quoted::new(value)))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for InstanceId {
    type Error = InputError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<InstanceId> for String {
    fn from(id: InstanceId) -> Self {
        id.0
    }
}

pub(crate) fn parse_time(field: &'static str, value: &str) -> Result<DateTime<Utc>, InputError> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| InputError::InvalidField {
            field,
            reason: format!("{} is not an RFC 3339 time: {e}", Quoted::new(value)),
        })
}

/// `us-east-1`, `eu-central-2`, `us-gov-west-1`, `cn-north-1`, ...
pub(crate) fn check_region(value: &str) -> Result<String, InputError> {
    let parts: Vec<&str> = value.split('-').collect();
    let ok = value.len() <= 32
        && parts.len() >= 3
        && parts
            .last()
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()));
    if ok {
        Ok(value.to_owned())
    } else {
        Err(InputError::InvalidField {
            field: "region",
            reason: format!("{} is not an AWS region name", Quoted::new(value)),
        })
    }
}

pub(crate) fn check_account(value: &str) -> Result<String, InputError> {
    if value.len() == 12 && value.bytes().all(|b| b.is_ascii_digit()) {
        Ok(value.to_owned())
    } else {
        Err(InputError::InvalidField {
            field: "account",
            reason: format!("{} is not a 12-digit account id", Quoted::new(value)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_are_checked() {
        for good in ["i-0123456789abcdef0", "i-0123abcd"] {
            assert!(InstanceId::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "i-",
            "i-0123456789ABCDEF0",
            "i-0123456789abcdef",
            "i-0123abc",
            "i-0123456789abcdefg",
            "x-0123456789abcdef0",
            " i-0123abcd",
            "i-0123abcd\n",
            "i-0123456789abcdef00",
        ] {
            assert!(InstanceId::parse(bad).is_err(), "{bad:?}");
        }
    }
}
