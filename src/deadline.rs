//! The invocation's deadline. No new locate or verify call starts after `stop`, which keeps back a reserve for
//! building and publishing the summaries; `end` is when Lambda ends the invocation, which no claim outlives. A run
//! without one (a test calling the handler directly) is never cut short. `Rounds` paces the rounds in which calls that
//! are still throttled after the SDK's own retries are made again, for as long as the deadline allows.

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

    /// Whether there is a deadline at all.
    pub fn is_set(self) -> bool {
        self.0.is_some()
    }

    pub fn passed(self) -> bool {
        self.0.is_some_and(|d| Instant::now() >= d.stop)
    }

    /// Time left before new work stops; None without a deadline.
    #[cfg(test)]
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

/// Rounds of calls that are made again while they come back throttled. The pause before each new round doubles, up to
/// `MAX_PAUSE`; a round is followed by another only if its pause still ends before the deadline. Giving a throttled
/// read up would leave an instance registered, or reported as such, while there was time to look again.
#[derive(Debug)]
pub struct Rounds {
    deadline: Deadline,
    pause: Duration,
    started: usize,
}

impl Rounds {
    const FIRST_PAUSE: Duration = Duration::from_millis(500);
    const MAX_PAUSE: Duration = Duration::from_secs(4);
    /// Without a deadline (a direct call, a test) a throttled call gets this many rounds.
    const WITHOUT_DEADLINE: usize = 3;

    pub fn new(deadline: Deadline) -> Self {
        Rounds {
            deadline,
            pause: Self::FIRST_PAUSE,
            started: 0,
        }
    }

    /// Start a round; true when what is throttled in it may be tried again in another.
    pub fn start(&mut self) -> bool {
        self.started += 1;
        self.deadline.within(self.pause) && (self.deadline.is_set() || self.started < Self::WITHOUT_DEADLINE)
    }

    /// Wait before the next round.
    pub async fn pause(&mut self, what: &'static str, throttled: usize) {
        tracing::info!(
            what,
            throttled,
            pause_ms = self.pause.as_millis() as u64,
            "throttled calls made again"
        );
        tokio::time::sleep(self.pause).await;
        self.pause = (self.pause * 2).min(Self::MAX_PAUSE);
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

    #[test]
    fn rounds_go_on_while_the_deadline_allows_and_three_times_without_one() {
        let mut without = Rounds::new(Deadline::none());
        assert_eq!([without.start(), without.start(), without.start()], [true, true, false]);
        let mut long = Rounds::new(Deadline::after(Duration::from_secs(60)));
        assert!((0..10).all(|_| long.start()));
        let mut short = Rounds::new(Deadline::after(Duration::from_millis(100)));
        assert!(
            !short.start(),
            "a pause of 500 ms does not end before a deadline 100 ms away"
        );
    }
}
