//! Stale events: a Spot notice is worth acting on for two minutes. One delivered (or retried, or replayed) long after
//! that names an instance that is gone, or worse, an instance id that has since come back as something else after a
//! stop; it is refused and reported instead of acted on.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::input::Trigger;

/// `MAX_EVENT_AGE` when unset.
pub const DEFAULT_MAX_EVENT_AGE: Duration = Duration::from_secs(600);

/// `MAX_EVENT_AGE`: whole seconds, optionally with a unit: `600`, `600s`, `10m`. From 1 s to 1 day.
pub fn parse_max_age(value: &str) -> Result<Duration, &'static str> {
    const ERR: &str = "expected whole seconds, optionally with s or m (600, 600s, 10m), from 1 s to 1 day";
    let value = value.trim();
    let (digits, unit) = match value.strip_suffix('m') {
        Some(minutes) => (minutes, 60),
        None => (value.strip_suffix('s').unwrap_or(value), 1),
    };
    let n: u64 = digits.parse().map_err(|_| ERR)?;
    let seconds = n.checked_mul(unit).ok_or(ERR)?;
    if (1..=86_400).contains(&seconds) {
        Ok(Duration::from_secs(seconds))
    } else {
        Err(ERR)
    }
}

/// Why the request is too old to act on, if it is. EventBridge's `time` is when the notice was given; the agent's
/// `time` is when the action happens, so it is stale only once it lies further in the past than the allowed age.
pub fn staleness(trigger: &Trigger, max_age: Duration, now: DateTime<Utc>) -> Option<String> {
    let max = chrono::Duration::from_std(max_age).ok()?;
    let (what, at) = match (trigger.event_time, trigger.action_time) {
        (Some(at), _) => ("the event", at),
        (None, Some(at)) => ("the action time", at),
        (None, None) => return None,
    };
    let age = now - at;
    (age > max).then(|| {
        format!(
            "{what} ({}) is {} s old, more than MAX_EVENT_AGE ({} s)",
            at.to_rfc3339(),
            age.num_seconds(),
            max_age.as_secs()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::Source;

    fn trigger(event_time: Option<DateTime<Utc>>, action_time: Option<DateTime<Utc>>) -> Trigger {
        Trigger {
            event_time,
            action_time,
            ..Trigger::from_source(Source::EventBridge)
        }
    }

    #[test]
    fn max_age_takes_seconds_or_minutes() {
        assert_eq!(parse_max_age("600"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_max_age("600s"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_max_age(" 10m "), Ok(Duration::from_secs(600)));
        for bad in ["", "0", "10h", "-5", "1.5m", "86401", "99999999999999999999m"] {
            assert!(parse_max_age(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn old_events_and_past_action_times_are_stale() {
        let now = Utc::now();
        let max = Duration::from_secs(600);
        let minutes = |m: i64| chrono::Duration::minutes(m);
        assert_eq!(staleness(&trigger(Some(now - minutes(9)), None), max, now), None);
        let stale = staleness(&trigger(Some(now - minutes(11)), None), max, now).unwrap();
        assert!(stale.contains("660 s old"), "{stale}");
        assert_eq!(staleness(&trigger(None, Some(now + minutes(2))), max, now), None);
        assert!(staleness(&trigger(None, Some(now - minutes(11))), max, now).is_some());
        assert_eq!(
            staleness(&trigger(None, None), max, now),
            None,
            "no time, nothing to judge"
        );
    }
}
