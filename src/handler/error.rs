//! Why an invocation failed, with the stable `errorType` Lambda reports for it, so that alarms and retries can tell
//! a bad payload from a cleanup that must be tried again.

use lambda_runtime::Diagnostic;

use super::RecordFailure;
use crate::app::{IndexError, InstanceError, Refusal};
use crate::input::InputError;
use crate::summary::{RestoreSummary, Summary};

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("rejected input, nothing was changed: {0}")]
    Input(#[from] InputError),
    #[error(transparent)]
    Instance(#[from] InstanceError),
    #[error("cleanup of {instance} is incomplete ({outcome}): {details}")]
    Incomplete {
        instance: String,
        outcome: &'static str,
        details: String,
    },
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("restore of {instance} is incomplete ({outcome}): {details}")]
    RestoreIncomplete {
        instance: String,
        outcome: &'static str,
        details: String,
    },
    #[error(
        "rejected input, nothing was changed: this is the restore entry point (ENTRY_POINT=restore), which serves \
         only restores; send cleanups to the cleanup function"
    )]
    RestoreEntryPoint,
    #[error(
        "rejected input, nothing was changed: this is the agent entry point (ENTRY_POINT=agent), which serves only a \
         node agent's request for its own instance"
    )]
    AgentEntryPoint,
    #[error(
        "rejected input, nothing was changed: {count} records in one invocation, more than MAX_BATCH_RECORDS ({max})"
    )]
    TooManyRecords { count: usize, max: usize },
    #[error("{} of the SNS records failed, the others are done: {}", failed.len(), sns_failures(failed))]
    SnsRecords { failed: Vec<(String, RecordFailure)> },
}

fn sns_failures(failed: &[(String, RecordFailure)]) -> String {
    let each = failed.iter().map(|(id, failure)| {
        let why = match failure {
            RecordFailure::Rejected(error) => format!("rejected input: {error}"),
            RecordFailure::Refused(refusal) => refusal.to_string(),
            RecordFailure::Incomplete(details) => details.clone(),
        };
        format!("SNS record {id}: {why}")
    });
    each.collect::<Vec<_>>().join("; ")
}

impl HandlerError {
    /// A stable name for the kind of failure, for Lambda's `errorType` and for alarms.
    pub fn error_type(&self) -> &'static str {
        match self {
            HandlerError::Input(_) => "InvalidInput",
            HandlerError::Instance(InstanceError::NotFound(_)) => "InstanceNotFound",
            HandlerError::Instance(InstanceError::Describe { .. }) => "DescribeFailed",
            HandlerError::Instance(InstanceError::NotServed { .. }) => "AccountNotAllowed",
            HandlerError::Instance(InstanceError::NotLetGo { .. }) => "LifecycleActionNotCompleted",
            HandlerError::Incomplete { .. } => "CleanupIncomplete",
            HandlerError::Index(IndexError::NotConfigured(_))
            | HandlerError::RestoreEntryPoint
            | HandlerError::AgentEntryPoint
            | HandlerError::TooManyRecords { .. } => "InvalidInput",
            HandlerError::Index(IndexError::Update(_)) => "IndexUpdateFailed",
            HandlerError::Refused(refusal) | HandlerError::Instance(InstanceError::Refused(refusal)) => {
                refusal.kind.error_type()
            }
            HandlerError::RestoreIncomplete { .. } => "RestoreIncomplete",
            // The worst of the records: bad input first, then a refusal, then work left to do.
            HandlerError::SnsRecords { failed } => {
                let kinds = || failed.iter().map(|(_, f)| f);
                if kinds().any(|f| matches!(f, RecordFailure::Rejected(_))) {
                    "InvalidInput"
                } else if let Some(RecordFailure::Refused(refusal)) =
                    kinds().find(|f| matches!(f, RecordFailure::Refused(_)))
                {
                    refusal.kind.error_type()
                } else {
                    "CleanupIncomplete"
                }
            }
        }
    }

    /// A cleanup left something for its retry: what, in one line.
    pub fn incomplete(summary: &Summary) -> Self {
        let mut details: Vec<String> = summary
            .errors
            .iter()
            .map(|e| format!("{}: {}", serde_json::to_value(e.step).unwrap_or_default(), e.message))
            .collect();
        if !summary.remaining.is_empty() {
            details.push(format!("{} target(s) remain registered", summary.remaining.len()));
        }
        HandlerError::Incomplete {
            instance: summary.instance.id.to_string(),
            outcome: summary.outcome.as_str(),
            details: details.join("; "),
        }
    }

    pub fn restore_incomplete(summary: &RestoreSummary) -> Self {
        HandlerError::RestoreIncomplete {
            instance: summary.instance_id.to_string(),
            outcome: summary.outcome.as_str(),
            details: summary.errors.join("; "),
        }
    }
}

impl From<HandlerError> for Diagnostic {
    fn from(error: HandlerError) -> Self {
        Diagnostic {
            error_type: error.error_type().to_owned(),
            error_message: error.to_string(),
        }
    }
}
