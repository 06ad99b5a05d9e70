//! A token bucket, as AWS meters its APIs: `capacity` tokens, refilled at `per_second`, one taken per request.
//!
//! The function keeps one of its own for each bucket AWS meters its calls against (`paced`), so that it never sends
//! faster than AWS would answer. A taker is `Urgent` (a deregistration: the safety work) or `Patient` (a read that can
//! wait): a patient taker leaves `reserve` tokens in the bucket, and waits while an urgent one is waiting, so a read
//! never holds a deregistration up. Time is tokio's, so tests run on paused time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// How a taker stands against the others of the same bucket.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Priority {
    /// Takes the next token, before any patient taker.
    Urgent,
    /// Takes a token only while more than `reserve` are left and no urgent taker waits.
    Patient { reserve: f64 },
}

#[derive(Clone, Debug)]
pub struct Bucket(Option<Arc<Mutex<State>>>);

#[derive(Debug)]
struct State {
    tokens: f64,
    capacity: f64,
    per_second: f64,
    refilled_at: Instant,
    /// Urgent takers waiting for a token: patient ones wait for them.
    urgent_waiting: usize,
}

/// The longest a patient taker sleeps before it looks again while an urgent one waits.
const PATIENT_LOOK: Duration = Duration::from_millis(20);

impl Bucket {
    /// A full bucket of `capacity` tokens refilling at `per_second`.
    pub fn new(capacity: u32, per_second: f64) -> Self {
        let capacity = f64::from(capacity.max(1));
        Bucket(Some(Arc::new(Mutex::new(State {
            tokens: capacity,
            capacity,
            per_second: per_second.max(0.1),
            refilled_at: Instant::now(),
            urgent_waiting: 0,
        }))))
    }

    /// No limit at all (tests that script every answer).
    pub fn unlimited() -> Self {
        Bucket(None)
    }

    /// How long until `priority` could take a token (zero: now), without taking it.
    pub fn ready_in(&self, priority: Priority) -> Duration {
        self.with(|state| state.ready_in(priority)).unwrap_or_default()
    }

    /// Wait until a token may be taken at `priority`, and take it.
    pub async fn take(&self, priority: Priority) {
        if self.0.is_none() {
            return;
        }
        let _waiting = (priority == Priority::Urgent).then(|| Waiting::new(self));
        loop {
            match self.with(|state| state.try_take(priority)) {
                Some(Err(wait)) => tokio::time::sleep(wait).await,
                _ => return,
            }
        }
    }

    /// `f` on the refilled state; None for an unlimited bucket.
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> Option<T> {
        let state = self.0.as_ref()?;
        let mut state = state.lock().expect("never poisoned: nothing panics while it is held");
        state.refill(Instant::now());
        Some(f(&mut state))
    }
}

impl State {
    fn refill(&mut self, now: Instant) {
        let earned = now.saturating_duration_since(self.refilled_at).as_secs_f64() * self.per_second;
        self.tokens = (self.tokens + earned).min(self.capacity);
        self.refilled_at = now;
    }

    fn ready_in(&self, priority: Priority) -> Duration {
        let floor = match priority {
            Priority::Urgent => 0.0,
            Priority::Patient { .. } if self.urgent_waiting > 0 => return PATIENT_LOOK,
            Priority::Patient { reserve } => reserve.min(self.capacity - 1.0).max(0.0),
        };
        let missing = 1.0 + floor - self.tokens;
        if missing <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(missing / self.per_second)
        }
    }

    fn try_take(&mut self, priority: Priority) -> Result<(), Duration> {
        match self.ready_in(priority) {
            Duration::ZERO => {
                self.tokens -= 1.0;
                Ok(())
            }
            wait => Err(wait),
        }
    }
}

/// Counts an urgent taker among the waiting for as long as it waits, however its wait ends.
struct Waiting<'b>(&'b Bucket);

impl<'b> Waiting<'b> {
    fn new(bucket: &'b Bucket) -> Self {
        bucket.with(|state| state.urgent_waiting += 1);
        Waiting(bucket)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.with(|state| state.urgent_waiting -= 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tokens taken at `priority` within `within`, each as soon as it may be.
    async fn taken_within(bucket: &Bucket, priority: Priority, within: Duration) -> usize {
        let end = Instant::now() + within;
        let mut taken = 0;
        while tokio::time::timeout_at(end, bucket.take(priority)).await.is_ok() {
            taken += 1;
        }
        taken
    }

    #[tokio::test(start_paused = true)]
    async fn the_capacity_is_free_and_the_rest_comes_at_the_refill_rate() {
        let bucket = Bucket::new(20, 4.0);
        let start = Instant::now();
        for _ in 0..20 {
            bucket.take(Priority::Urgent).await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "the capacity waits for nothing");
        for _ in 0..8 {
            bucket.take(Priority::Urgent).await;
        }
        // Eight more at four a second: the eighth comes two seconds in.
        assert_eq!(start.elapsed().as_millis(), 2000);
        assert_eq!(
            taken_within(&bucket, Priority::Urgent, Duration::from_secs(10)).await,
            40
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_patient_taker_leaves_the_reserve_and_gives_way_to_an_urgent_one() {
        let bucket = Bucket::new(40, 10.0);
        let patient = Priority::Patient { reserve: 10.0 };
        // Thirty of the forty at once: ten stay for the urgent ones (and for other callers).
        assert_eq!(taken_within(&bucket, patient, Duration::from_millis(1)).await, 30);
        assert!((99..=100).contains(&bucket.ready_in(patient).as_millis()));
        assert_eq!(bucket.ready_in(Priority::Urgent), Duration::ZERO);
        assert_eq!(
            taken_within(&bucket, Priority::Urgent, Duration::from_millis(1)).await,
            10
        );

        // Empty now. An urgent taker waiting holds every patient one back until it has its token.
        let urgent = {
            let bucket = bucket.clone();
            tokio::spawn(async move {
                bucket.take(Priority::Urgent).await;
                Instant::now()
            })
        };
        tokio::task::yield_now().await;
        assert_eq!(bucket.ready_in(patient), PATIENT_LOOK, "an urgent taker is waiting");
        let got_urgent = urgent.await.unwrap();
        let patient_started = Instant::now();
        bucket.take(Priority::Patient { reserve: 0.0 }).await;
        assert!(Instant::now() > got_urgent && Instant::now() > patient_started);
    }

    #[tokio::test(start_paused = true)]
    async fn a_taker_that_stops_waiting_holds_nobody_back() {
        let bucket = Bucket::new(1, 1.0);
        bucket.take(Priority::Urgent).await;
        let gave_up = tokio::time::timeout(Duration::from_millis(10), bucket.take(Priority::Urgent)).await;
        assert!(gave_up.is_err());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(bucket.ready_in(Priority::Patient { reserve: 0.0 }), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn unlimited_never_waits() {
        let bucket = Bucket::unlimited();
        let start = Instant::now();
        for _ in 0..1000 {
            bucket.take(Priority::Urgent).await;
            assert_eq!(bucket.ready_in(Priority::Patient { reserve: 5.0 }), Duration::ZERO);
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
