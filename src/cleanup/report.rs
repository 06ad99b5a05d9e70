//! What a cleanup answers for each instance: its summary, that it was left alone and why, or why it could not be
//! cleaned at all.

use crate::aws::CallError;
use crate::input::InstanceId;
use crate::summary::Summary;
use crate::trust::Refusal;

/// Why an instance could not be cleaned at all. Nothing was changed.
#[derive(Clone, Debug, thiserror::Error, PartialEq)]
pub enum InstanceError {
    #[error("instance {0} was not found in this account and region; nothing was changed")]
    NotFound(InstanceId),
    #[error("could not describe instance {instance}: {error}; nothing was changed")]
    Describe { instance: InstanceId, error: CallError },
    #[error("instance {instance} cannot be served: {reason}")]
    NotServed { instance: InstanceId, reason: String },
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// Left alone (`Handled::LeftAlone`), but its lifecycle action (of this function's own hook) could not be completed: a
    /// retry completes it, or Auto Scaling applies the hook's default result at its heartbeat timeout.
    #[error("{instance} is left alone ({reason}), but its lifecycle action could not be completed: {error}")]
    NotLetGo {
        instance: InstanceId,
        reason: String,
        error: CallError,
    },
}

/// What became of one instance that did not fail.
#[derive(Clone, Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "one per instance, built once and moved once, as the Result it was"
)]
pub enum Handled {
    /// Cleaned up, or planned in a dry run: its summary (which may still say the work is incomplete).
    Summary(Summary),
    /// Nothing to do for it here: an event about an instance outside `EVENT_SCOPE`, and why. Nothing is published.
    LeftAlone(String),
}

/// The result for one instance.
#[derive(Clone, Debug)]
pub struct Report {
    pub instance_id: InstanceId,
    pub result: Result<Handled, InstanceError>,
}

impl Report {
    pub fn summary(summary: Summary) -> Self {
        Report {
            instance_id: summary.instance.id.clone(),
            result: Ok(Handled::Summary(summary)),
        }
    }

    pub fn left_alone(instance_id: &InstanceId, reason: String) -> Self {
        Report {
            instance_id: instance_id.clone(),
            result: Ok(Handled::LeftAlone(reason)),
        }
    }

    /// The summary, when there is one.
    #[cfg(test)]
    pub fn summary_ref(&self) -> Option<&Summary> {
        match &self.result {
            Ok(Handled::Summary(summary)) => Some(summary),
            _ => None,
        }
    }

    pub fn failed(instance_id: &InstanceId, error: InstanceError) -> Self {
        Report {
            instance_id: instance_id.clone(),
            result: Err(error),
        }
    }

    /// Done, with nothing left for a retry to do (an instance left alone had nothing to do).
    pub fn is_complete(&self) -> bool {
        match &self.result {
            Ok(Handled::Summary(summary)) => summary.is_complete(),
            Ok(Handled::LeftAlone(_)) => true,
            Err(_) => false,
        }
    }
}
