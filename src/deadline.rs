//! The invocation's deadline. No new locate or verify call starts after `stop`, which keeps back a reserve for
//! building and publishing the summaries; `end` is when Lambda ends the invocation, which no claim outlives. A run
//! without one (a test calling the handler directly) is never cut short.

use std::time::{Duration, Instant};

/// The milliseconds since `since`, as reports and step logs count them.
pub fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Deadline(Option<Bounds>);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Bounds {
    stop: Instant,
    end: Instant,
}

impl Deadline {
    /// No deadline at all.
    pub fn none() -> Self {
        Deadline(None)
    }

    /// Stop `left` from now, which is also when the invocation ends.
    #[cfg(test)]
    pub fn after(left: Duration) -> Self {
        Deadline::ending(left, Duration::ZERO)
    }

    /// The invocation ends `left` from now; stop starting new work `reserve` before that.
    pub fn ending(left: Duration, reserve: Duration) -> Self {
        let end = Instant::now() + left;
        Deadline(Some(Bounds {
            stop: end.checked_sub(reserve).unwrap_or(end),
            end,
        }))
    }

    pub fn passed(self) -> bool {
        self.0.is_some_and(|d| Instant::now() >= d.stop)
    }

    /// Time left before new work stops; None without a deadline.
    pub fn left(self) -> Option<Duration> {
        self.0.map(|d| d.stop.saturating_duration_since(Instant::now()))
    }

    /// Time left before the invocation ends; None without a deadline.
    pub fn end_left(self) -> Option<Duration> {
        self.0.map(|d| d.end.saturating_duration_since(Instant::now()))
    }

    /// Whether `wait` from now still ends before new work stops.
    pub fn within(self, wait: Duration) -> bool {
        self.0.is_none_or(|d| Instant::now() + wait < d.stop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_passes_and_none_never_does() {
        assert!(Deadline::after(Duration::ZERO).passed());
        assert!(!Deadline::after(Duration::from_secs(60)).passed());
        assert!(!Deadline::none().passed());
        assert_eq!(Deadline::none().left(), None);
        assert!(Deadline::after(Duration::from_secs(60)).left().unwrap() > Duration::from_secs(59));
        assert!(!Deadline::after(Duration::from_secs(1)).within(Duration::from_secs(5)));
        assert!(Deadline::none().within(Duration::from_secs(5)));
    }

    #[test]
    fn the_reserve_comes_off_the_stop_not_the_end() {
        let deadline = Deadline::ending(Duration::from_secs(60), Duration::from_secs(5));
        assert!((Duration::from_secs(54)..=Duration::from_secs(55)).contains(&deadline.left().unwrap()));
        assert!((Duration::from_secs(59)..=Duration::from_secs(60)).contains(&deadline.end_left().unwrap()));
    }
}
