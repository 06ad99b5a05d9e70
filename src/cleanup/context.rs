//! What every phase of a cleanup works with: the handles borrowed from the composition root, the instances admitted,
//! and the run's clock.

use std::time::Instant;

use chrono::{DateTime, Utc};

use crate::aws::Clients;
use crate::config::Config;
use crate::input::Request;
use crate::instance::Instance;
use crate::locate::Locator;
use crate::monitoring::Monitoring;
use crate::notify::Publisher;
use crate::steps::claim::ClaimStore;
use crate::steps::lifecycle::DrainWait;
use crate::steps::quarantine::QuarantineGroupCache;
use crate::steps::records::Signer;
use crate::wave::{Tools, Wave};

/// What a cleanup needs, borrowed from the composition root for one place (region and account).
pub struct Context<'a> {
    pub clients: &'a Clients,
    pub publisher: &'a Publisher,
    pub config: &'a Config,
    /// Cheap sources of known registrations, asked first (the registration index, the Auto Scaling group).
    pub fast_locators: &'a [Box<dyn Locator>],
    /// The one path by which registrations leave their groups, shared with the cleanups running at the same time.
    pub wave: &'a Wave,
    pub quarantine_groups: &'a QuarantineGroupCache,
    pub monitoring: &'a Monitoring,
    pub claim_store: ClaimStore,
    /// Signs the records a restore will act on; None without `RECORD_KEY_ID`.
    pub signer: Option<&'a Signer>,
    /// How an Auto Scaling lifecycle cleanup waits for draining targets; None completes the action at once.
    pub drain_wait: Option<DrainWait>,
}

impl Context<'_> {
    /// What the wave's driver calls with, in this place.
    pub fn wave_tools(&self) -> Tools<'_> {
        Tools {
            elb: &self.clients.elb,
            budget: &self.clients.elb_budget,
            fast_locators: self.fast_locators,
        }
    }
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

/// The wave's answers for this run's instances.
pub(crate) type Deregistrations = std::collections::HashMap<crate::input::InstanceId, crate::wave::Deregistration>;
