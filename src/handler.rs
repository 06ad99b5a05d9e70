//! The Lambda handler: parse the payload, run the cleanup, shape the answer. It decides nothing else.

use aws_lambda_events::sqs::SqsBatchResponse;
use lambda_runtime::{Diagnostic, LambdaEvent};
use serde_json::Value;

use crate::cleanup::{App, InstanceError, Report, clean_up};
use crate::input::{InputError, Invocation, Request, parse_invocation};
use crate::summary::Summary;

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
}

impl HandlerError {
    /// A stable name for the kind of failure, for Lambda's `errorType` and for alarms.
    pub fn error_type(&self) -> &'static str {
        match self {
            HandlerError::Input(_) => "InvalidInput",
            HandlerError::Instance(InstanceError::NotFound(_)) => "InstanceNotFound",
            HandlerError::Instance(InstanceError::Describe { .. }) => "DescribeFailed",
            HandlerError::Incomplete { .. } => "CleanupIncomplete",
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

/// Handle one invocation. A direct request answers with its summary, or fails when anything is left undone so that
/// Lambda's async retry tries again; an SQS batch answers with the records that failed.
pub async fn handle(app: &App, event: LambdaEvent<Value>) -> Result<Value, HandlerError> {
    let invocation = parse_invocation(&event.payload).inspect_err(|e| tracing::warn!(error = %e, "rejected input"))?;
    match invocation {
        Invocation::Direct(request) => {
            let report = clean_up(app, std::slice::from_ref(&request)).await.remove(0);
            let summary = report.result?;
            if summary.is_complete() {
                Ok(serde_json::to_value(&summary).expect("a summary always serializes"))
            } else {
                Err(incomplete(&summary))
            }
        }
        Invocation::Batch(records) => {
            let requests: Vec<Request> = records
                .iter()
                .filter_map(|r| r.request.as_ref().ok())
                .cloned()
                .collect();
            let reports = if requests.is_empty() {
                Vec::new()
            } else {
                clean_up(app, &requests).await
            };
            let mut response = SqsBatchResponse::default();
            for record in &records {
                let failed = match &record.request {
                    Err(error) => {
                        tracing::warn!(message_id = %record.message_id, error = %error, "rejected SQS record");
                        true
                    }
                    Ok(request) => !reports
                        .iter()
                        .find(|r| r.instance_id == request.instance_id)
                        .is_some_and(Report::is_complete),
                };
                if failed {
                    response.add_failure(record.message_id.clone());
                }
            }
            Ok(serde_json::to_value(&response).expect("a batch response always serializes"))
        }
    }
}

fn incomplete(summary: &Summary) -> HandlerError {
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
