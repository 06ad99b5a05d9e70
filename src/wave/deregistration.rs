//! What the wave did about one instance's registrations: each one with who found it and what became of it, the groups
//! that could not be read, and how long each part took. The driver hands it to its own cleanup in memory, and to a
//! cleanup in another execution environment through the table, as JSON.

use serde::{Deserialize, Serialize};

use crate::registration::{TargetRegistration, UncheckedGroup};
use crate::steps::verify::Verdict;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Deregistration {
    pub targets: Vec<Target>,
    /// Groups of the instance's VPC that could not be read: registrations there may remain.
    pub unchecked: Vec<UncheckedGroup>,
    /// Why the sweep could not run at all (the target groups could not be listed).
    pub locate_errors: Vec<String>,
    /// A fast locator that failed: not fatal, the sweep covers it.
    pub fast_path_warnings: Vec<String>,
    /// How many target groups were looked into for it.
    pub target_groups_checked: usize,
    /// Whose sweep it was: `sweep` when this cleanup drove the wave, `shared-sweep` when another cleanup did.
    pub swept_by: String,
    pub timings: WaveTimings,
}

/// Milliseconds from the moment the instance joined the wave.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaveTimings {
    /// The fast locators.
    pub fast_locate: u64,
    /// Until every group that could hold it was read after its notice.
    pub locate: u64,
    /// Until the last DeregisterTargets carrying one of its targets answered.
    pub deregister: u64,
    /// Until every target sent was checked.
    pub verify: u64,
}

/// One registration, and what became of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Target {
    pub registration: TargetRegistration,
    /// `index`, `auto-scaling`, `sweep` or `shared-sweep`.
    pub found_by: String,
    pub fate: Fate,
    /// Its group's deregistration delay, where it was read.
    pub delay_seconds: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "fate")]
pub enum Fate {
    /// A dry run: found, and left as it is.
    Planned,
    /// DeregisterTargets refused it, with the service's code and message.
    Refused { code: Option<String>, message: String },
    /// A read of its group after the call (or when it was found already leaving).
    Seen { verdict: Verdict },
    /// Sent, but not looked at again before the deadline.
    NotVerified,
}

impl Deregistration {
    /// No driver answered before the deadline: nothing is known, and the retry finishes the work.
    pub fn unanswered() -> Self {
        Deregistration {
            locate_errors: vec!["the wave's driver did not answer before the deadline".into()],
            swept_by: "shared-sweep".into(),
            ..Deregistration::default()
        }
    }

    /// As another cleanup's driver reported it: its own sweep is, for this cleanup, a shared one.
    pub fn into_shared(mut self) -> Self {
        let shared = |by: &mut String| {
            if by == "sweep" {
                *by = "shared-sweep".into();
            }
        };
        shared(&mut self.swept_by);
        self.targets.iter_mut().for_each(|t| shared(&mut t.found_by));
        self
    }
}

impl Fate {
    /// A refusal as the call error it was.
    pub fn refusal(&self) -> Option<crate::aws::CallError> {
        match self {
            Fate::Refused { code, message } => Some(crate::aws::CallError {
                operation: "DeregisterTargets",
                code: code.clone(),
                message: message.clone(),
            }),
            _ => None,
        }
    }
}
