//! The invocation's deadline, less the reserve kept for publishing: no new locate or verify call starts after it. A
//! run without one (a test calling the handler directly) is never cut short.

use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Deadline(Option<Instant>);

impl Deadline {
    /// No deadline at all.
    pub fn none() -> Self {
        Deadline(None)
    }

    /// `left` from now.
    pub fn after(left: Duration) -> Self {
        Deadline(Some(Instant::now() + left))
    }

    pub fn passed(self) -> bool {
        self.0.is_some_and(|d| Instant::now() >= d)
    }

    /// Time left before it; None without a deadline.
    pub fn left(self) -> Option<Duration> {
        self.0.map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Whether `wait` from now would end past it.
    pub fn within(self, wait: Duration) -> bool {
        self.0.is_none_or(|d| Instant::now() + wait < d)
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
}
