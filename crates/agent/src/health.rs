//! What the probes answer. Liveness: the watch loop still ends its rounds, whatever instance metadata said in them
//! (restarting the agent cures a stuck loop, not a metadata service that does not answer). Readiness: the agent knows
//! its instance and the last round's metadata reads answered, so a notice would be seen now.
//!
//! The watch loop reports each round here; the listener (`serve`) and the metrics only read.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The loop is stuck when no round has ended for this long. An honest round ends well within it even when metadata
/// fails: each read gives up after its timeout, and a failed round returns at the first failed read.
pub const STUCK_AFTER: Duration = Duration::from_secs(60);

/// No round has ended yet.
const NEVER: u64 = u64::MAX;

/// A probe's answer: healthy or not, and the one line that says why.
#[derive(Debug, PartialEq, Eq)]
pub struct Verdict {
    pub healthy: bool,
    pub reason: &'static str,
}

impl Verdict {
    fn healthy(reason: &'static str) -> Self {
        Self { healthy: true, reason }
    }

    fn failing(reason: &'static str) -> Self {
        Self { healthy: false, reason }
    }
}

/// Shared between the watch loop (which writes) and the listener (which reads); atomics, so neither waits.
pub struct Health {
    started: Instant,
    /// When the last round ended, in milliseconds after `started` (monotonic: liveness must not jump with the clock).
    last_round: AtomicU64,
    /// The same moment in Unix milliseconds, for the `last poll` metric.
    last_round_unix_ms: AtomicU64,
    /// The instance identity is read and the notice paths are being watched.
    watching: AtomicBool,
    /// The last round's metadata reads answered.
    answered: AtomicBool,
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            last_round: AtomicU64::new(NEVER),
            last_round_unix_ms: AtomicU64::new(NEVER),
            watching: AtomicBool::new(false),
            answered: AtomicBool::new(false),
        }
    }

    /// A round ended (reading the identity, or the notice paths); `answered` is whether instance metadata answered
    /// every read in it.
    pub fn round_ended(&self, answered: bool) {
        self.round_ended_at(Instant::now(), SystemTime::now(), answered);
    }

    fn round_ended_at(&self, at: Instant, wall: SystemTime, answered: bool) {
        let since_start = at.saturating_duration_since(self.started).as_millis();
        self.last_round
            .store(u64::try_from(since_start).unwrap_or(NEVER - 1), Ordering::Relaxed);
        let unix_ms = wall.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        self.last_round_unix_ms
            .store(u64::try_from(unix_ms).unwrap_or(NEVER - 1), Ordering::Relaxed);
        self.answered.store(answered, Ordering::Relaxed);
    }

    /// The identity is read: from now on rounds watch the notice paths.
    pub fn watching(&self) {
        self.watching.store(true, Ordering::Relaxed);
    }

    /// When the last round ended, in Unix seconds; `None` before the first.
    pub fn last_round_unix_seconds(&self) -> Option<f64> {
        match self.last_round_unix_ms.load(Ordering::Relaxed) {
            NEVER => None,
            ms => Some(ms as f64 / 1000.0),
        }
    }

    pub fn is_ready(&self) -> bool {
        self.readiness().healthy
    }

    pub fn liveness(&self) -> Verdict {
        self.liveness_at(Instant::now())
    }

    fn liveness_at(&self, now: Instant) -> Verdict {
        let idle = match self.last_round.load(Ordering::Relaxed) {
            // Before the first round ends, the time since start counts: a first round that never ends is stuck too.
            NEVER => now.saturating_duration_since(self.started),
            ms => now.saturating_duration_since(self.started + Duration::from_millis(ms)),
        };
        if idle < STUCK_AFTER {
            Verdict::healthy("polling")
        } else {
            Verdict::failing("no poll round has ended for a minute")
        }
    }

    pub fn readiness(&self) -> Verdict {
        if !self.watching.load(Ordering::Relaxed) {
            Verdict::failing("reading the instance identity")
        } else if !self.answered.load(Ordering::Relaxed) {
            Verdict::failing("instance metadata is not answering")
        } else {
            Verdict::healthy("watching")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alive_while_rounds_end_whatever_metadata_says_and_stuck_when_they_stop() {
        let health = Health::new();
        let start = health.started;
        assert!(health.liveness_at(start + Duration::from_secs(10)).healthy, "starting");
        assert!(
            !health.liveness_at(start + STUCK_AFTER).healthy,
            "a first round that never ends"
        );

        health.round_ended_at(start + Duration::from_secs(30), SystemTime::now(), false);
        assert!(
            health.liveness_at(start + Duration::from_secs(80)).healthy,
            "a failed round still shows the loop turning"
        );
        let stuck = health.liveness_at(start + Duration::from_secs(30) + STUCK_AFTER);
        assert_eq!(stuck, Verdict::failing("no poll round has ended for a minute"));
    }

    #[test]
    fn ready_once_watching_with_metadata_answering() {
        let health = Health::new();
        assert_eq!(health.readiness(), Verdict::failing("reading the instance identity"));
        health.round_ended(true);
        assert!(!health.is_ready(), "the identity is not read yet");
        health.watching();
        assert_eq!(health.readiness(), Verdict::healthy("watching"));
        health.round_ended(false);
        assert_eq!(
            health.readiness(),
            Verdict::failing("instance metadata is not answering")
        );
        health.round_ended(true);
        assert!(health.is_ready());
    }

    #[test]
    fn the_last_round_is_reported_in_unix_seconds() {
        let health = Health::new();
        assert_eq!(health.last_round_unix_seconds(), None);
        health.round_ended_at(
            Instant::now(),
            UNIX_EPOCH + Duration::from_millis(1_800_000_000_250),
            true,
        );
        assert_eq!(health.last_round_unix_seconds(), Some(1_800_000_000.25));
    }
}
