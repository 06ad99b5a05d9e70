//! What every phase of a cleanup works with: the handles borrowed from the composition root, the instances admitted,
//! and the run's clock.

use std::time::Instant;

use chrono::{DateTime, Utc};

use crate::aws::{Clients, Pace};
use crate::config::Config;
use crate::input::Request;
use crate::instance::Instance;
use crate::locate::Locator;
use crate::monitoring::Monitoring;
use crate::notify::Publisher;
use crate::steps::claim::Marker;
use crate::steps::lifecycle::DrainWait;
use crate::steps::quarantine::QuarantineGroupCache;
use crate::steps::records::Signer;

/// What a cleanup needs, borrowed from the composition root for one place (region and account).
pub struct Context<'a> {
    pub clients: &'a Clients,
    pub publisher: &'a Publisher,
    pub config: &'a Config,
    /// Cheap sources of known registrations, asked first, in priority order (the registration index, the Auto
    /// Scaling group). What they find leaves its groups before the sweep starts.
    pub fast_locators: &'a [Box<dyn Locator>],
    /// The full sweep: the safety net that finds the rest and checks what the fast path removed.
    pub sweep: &'a dyn Locator,
    /// This container's share of the account's ELB Describe* budget.
    pub elb_pace: &'a Pace,
    pub quarantine_groups: &'a QuarantineGroupCache,
    pub monitoring: &'a Monitoring,
    pub marker: Marker,
    /// Signs the records a restore will act on; None without `RECORD_KEY_ID`.
    pub signer: Option<&'a Signer>,
    /// How an Auto Scaling lifecycle cleanup waits for draining targets; None completes the action at once.
    pub drain_wait: Option<DrainWait>,
}

/// One admitted instance and the request that named it.
pub(crate) struct Work<'r> {
    pub request: &'r Request,
    pub instance: Instance,
}

/// When the run started, for the summaries and the step logs.
pub(crate) struct Clock {
    pub started: Instant,
    pub started_at: DateTime<Utc>,
}

impl Clock {
    pub(super) fn start() -> Self {
        Clock {
            started: Instant::now(),
            started_at: Utc::now(),
        }
    }
}
