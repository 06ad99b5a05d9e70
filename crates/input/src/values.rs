//! The small values every wire format carries, each checked where it is parsed: instance ids, regions, accounts and
//! times. Holding an `InstanceId` means it is valid.

use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};
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

/// How far ahead of this function's clock a `time` may lie: clock skew, plus the node agent's `time`, which is when
/// the action happens (Spot's, two minutes after its notice). A time further ahead is not a real notice; it would
/// also pass every staleness check, for ever.
pub const MAX_AHEAD: TimeDelta = TimeDelta::minutes(5);

/// An RFC 3339 time no more than `MAX_AHEAD` ahead of now.
pub(crate) fn parse_time(field: &'static str, value: &str) -> Result<DateTime<Utc>, InputError> {
    let time = DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| InputError::InvalidField {
            field,
            reason: format!("{} is not an RFC 3339 time: {e}", Quoted::new(value)),
        })?;
    not_ahead(field, time, MAX_AHEAD, Utc::now())
}

/// `time`, unless it lies more than `max` ahead of `now`. Checked arithmetic: `now` plus `max` saturates at chrono's
/// last instant, so any time at all is compared without a panic.
pub(crate) fn not_ahead(
    field: &'static str,
    time: DateTime<Utc>,
    max: TimeDelta,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, InputError> {
    let latest = now.checked_add_signed(max).unwrap_or(DateTime::<Utc>::MAX_UTC);
    if time <= latest {
        return Ok(time);
    }
    let span = match max.num_days() {
        0 => format!("{} minutes", max.num_minutes()),
        days => format!("{days} days"),
    };
    Err(InputError::InvalidField {
        field,
        reason: format!(
            "{} lies more than {span} ahead of this function's clock ({})",
            Quoted::new(&time.to_rfc3339()),
            now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
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
    fn a_time_more_than_five_minutes_ahead_is_refused_whatever_it_is() {
        let now = Utc::now();
        assert!(not_ahead("time", now + TimeDelta::minutes(4), MAX_AHEAD, now).is_ok());
        assert!(
            not_ahead("time", now - TimeDelta::days(400), MAX_AHEAD, now).is_ok(),
            "old is stale, not invalid"
        );
        for ahead in [
            now + TimeDelta::minutes(6),
            DateTime::<Utc>::MAX_UTC,
            DateTime::parse_from_rfc3339("9999-12-31T23:59:59Z").unwrap().to_utc(),
        ] {
            let error = not_ahead("time", ahead, MAX_AHEAD, now).unwrap_err().to_string();
            assert!(error.contains("more than 5 minutes ahead"), "{error}");
        }
        // Even a `now` at the end of time compares without overflowing.
        assert!(not_ahead("time", DateTime::<Utc>::MAX_UTC, MAX_AHEAD, DateTime::<Utc>::MAX_UTC).is_ok());
        for text in ["+262142-12-31T23:59:00Z", "9999-12-31T23:59:59Z"] {
            assert!(parse_time("time", text).is_err(), "{text}");
        }
    }

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
