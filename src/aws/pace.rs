//! A client-side token bucket for the ELB Describe* budget, so that our own calls never outrun it.
//!
//! ELB shares one Describe* bucket per account and region (about 40 calls of burst, then 10 per second) among every
//! tool in the account. Sending faster than it refills only buys `Throttling` errors, retries and backoff, which is
//! slower than pacing and takes budget from the others. Calls wait here for a token instead; the SDK's adaptive retry
//! still handles throttling caused by anyone else.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct Pace(Option<Arc<Mutex<Bucket>>>);

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    burst: f64,
    per_second: f64,
    refilled_at: Instant,
}

impl Pace {
    /// A full bucket of `burst` tokens refilling at `per_second`.
    pub fn new(burst: u32, per_second: f64) -> Self {
        let burst = f64::from(burst.max(1));
        Pace(Some(Arc::new(Mutex::new(Bucket {
            tokens: burst,
            burst,
            per_second: per_second.max(0.1),
            refilled_at: Instant::now(),
        }))))
    }

    /// No pacing at all (tests that script every response).
    pub fn unlimited() -> Self {
        Pace(None)
    }

    /// Wait until a call may be sent, and take its token.
    pub async fn acquire(&self) {
        let Some(bucket) = &self.0 else { return };
        loop {
            let wait = {
                let mut bucket = bucket.lock().expect("never poisoned: no panics while held");
                let now = Instant::now();
                let earned = now.duration_since(bucket.refilled_at).as_secs_f64() * bucket.per_second;
                bucket.tokens = (bucket.tokens + earned).min(bucket.burst);
                bucket.refilled_at = now;
                if bucket.tokens >= 1.0 {
                    bucket.tokens -= 1.0;
                    return;
                }
                Duration::from_secs_f64((1.0 - bucket.tokens) / bucket.per_second)
            };
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_burst_is_free_and_the_rest_comes_at_the_refill_rate() {
        let pace = Pace::new(5, 50.0);
        let start = Instant::now();
        for _ in 0..5 {
            pace.acquire().await;
        }
        assert!(
            start.elapsed() < Duration::from_millis(15),
            "the burst waits for nothing"
        );
        for _ in 0..10 {
            pace.acquire().await;
        }
        let elapsed = start.elapsed();
        // Ten more tokens at 50 per second take 200 ms.
        assert!(elapsed >= Duration::from_millis(190), "{elapsed:?}");
        assert!(elapsed < Duration::from_millis(600), "{elapsed:?}");
    }

    #[tokio::test]
    async fn unlimited_never_waits() {
        let pace = Pace::unlimited();
        let start = Instant::now();
        for _ in 0..1000 {
            pace.acquire().await;
        }
        assert!(start.elapsed() < Duration::from_millis(50));
    }
}
