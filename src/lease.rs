//! The one lease: a hold kept in AWS (a claim on an instance's work, the wave's driver) that lapses unless its holder
//! renews it, so that a holder that dies holds up the others for one lease at most. Its length is
//! `CLAIM_LEASE_SECONDS`; it is renewed three times a lease while the work goes on, and never reaches past the
//! invocation's end.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;

use crate::deadline::Deadline;

/// How long a lease lasts unless renewed (`CLAIM_LEASE_SECONDS`).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);

/// How long a hold lasts, and when the invocation that holds it ends.
#[derive(Clone, Copy, Debug)]
pub struct Lease {
    pub length: Duration,
    pub deadline: Deadline,
}

impl Lease {
    /// When a hold taken or renewed now lapses: `length` from now, and never after the invocation ends.
    pub fn until(&self) -> DateTime<Utc> {
        let length = self
            .deadline
            .end_left()
            .map_or(self.length, |left| self.length.min(left));
        Utc::now() + chrono::Duration::from_std(length).unwrap_or(chrono::Duration::seconds(15))
    }

    /// How often a holder renews: three times a lease, so that one failed renewal does not lose the hold.
    pub fn renew_every(&self) -> Duration {
        (self.length / 3).max(Duration::from_millis(100))
    }

    /// Call `renew` with the new `until` every `renew_every`, each call after the last one ended, until the returned
    /// `Renewal` is stopped or dropped.
    pub fn renew<F, R>(self, mut renew: F) -> Renewal
    where
        F: FnMut(DateTime<Utc>) -> R + Send + 'static,
        R: Future<Output = ()> + Send,
    {
        Renewal(Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(self.renew_every()).await;
                renew(self.until()).await;
            }
        })))
    }
}

/// A lease being renewed. Dropping it stops the renewals (a finished run, or a panic that unwinds through it).
#[derive(Debug, Default)]
pub struct Renewal(Option<JoinHandle<()>>);

impl Renewal {
    /// No more renewals: the holder is about to record how it ended, or to let go.
    pub fn stop(&self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}

impl Drop for Renewal {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::time::Instant;

    use super::*;

    #[test]
    fn a_lease_never_outlasts_the_invocation() {
        let long = Lease {
            length: Duration::from_secs(15),
            deadline: Deadline::after(Duration::from_secs(60)),
        };
        let left = (long.until() - Utc::now()).num_milliseconds();
        assert!((14_000..=15_000).contains(&left), "{left}");
        let short = Lease {
            length: Duration::from_secs(15),
            deadline: Deadline::after(Duration::from_secs(2)),
        };
        let left = (short.until() - Utc::now()).num_milliseconds();
        assert!((1_000..=2_000).contains(&left), "{left}");
        assert_eq!(long.renew_every(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_is_renewed_every_third_of_its_length_until_stopped() {
        let start = Instant::now();
        let lease = Lease {
            length: Duration::from_secs(9),
            deadline: Deadline::none(),
        };
        let renewed: Arc<Mutex<Vec<u64>>> = Arc::default();
        let seen = Arc::clone(&renewed);
        let renewal = lease.renew(move |until| {
            let seen = Arc::clone(&seen);
            async move {
                let ahead = (until - Utc::now()).num_seconds();
                assert!((8..=9).contains(&ahead), "{ahead}");
                seen.lock().unwrap().push(start.elapsed().as_secs());
            }
        });
        tokio::time::sleep(Duration::from_millis(9_500)).await;
        renewal.stop();
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(*renewed.lock().unwrap(), [3, 6, 9], "every 3 s, and none once stopped");
    }
}
