//! What a cleanup answers for each instance: its summary, or why it could not be cleaned at all.

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
    /// Nothing to do for it here: an event about an instance outside `EVENT_SCOPE`. Not a failure.
    #[error("{instance} is left alone: {reason}")]
    Ignored { instance: InstanceId, reason: String },
    /// Left alone, as `Ignored`, but its lifecycle action (of this function's own hook) could not be completed: a
    /// retry completes it, or Auto Scaling applies the hook's default result at its heartbeat timeout.
    #[error("{instance} is left alone ({reason}), but its lifecycle action could not be completed: {error}")]
    NotLetGo {
        instance: InstanceId,
        reason: String,
        error: CallError,
    },
}

/// The result for one instance.
#[derive(Clone, Debug)]
pub struct Report {
    pub instance_id: InstanceId,
    pub result: Result<Summary, InstanceError>,
}

impl Report {
    pub fn summary(summary: Summary) -> Self {
        Report {
            instance_id: summary.instance.id.clone(),
            result: Ok(summary),
        }
    }

    pub fn failed(instance_id: &InstanceId, error: InstanceError) -> Self {
        Report {
            instance_id: instance_id.clone(),
            result: Err(error),
        }
    }

    /// Done, with nothing left for a retry to do (an ignored instance had nothing to do).
    pub fn is_complete(&self) -> bool {
        match &self.result {
            Ok(summary) => summary.is_complete(),
            Err(InstanceError::Ignored { .. }) => true,
            Err(_) => false,
        }
    }
}
