//! The Lambda handler: parse the payload, run the cleanup (or keep the registration index), shape the answer. It
//! decides nothing else.

use aws_lambda_events::sqs::SqsBatchResponse;
use std::time::{Duration, Instant, SystemTime};

use lambda_runtime::{Context, Diagnostic, LambdaEvent};
use serde_json::Value;

use crate::cleanup::{App, InstanceError, Report};
use crate::dispatch;
use crate::guard::{self, Refusal};
use crate::index::{self, UpdateReport};
use crate::input::{IndexUpdate, InputError, Invocation, Request, parse_invocation};
use crate::restore;
use crate::scope::Home;
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
    #[error("rejected input, nothing was changed: REGISTRATION_INDEX_TABLE is not set, so {0} is not handled")]
    IndexNotConfigured(&'static str),
    #[error(transparent)]
    IndexUpdate(#[from] index::UpdateError),
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("restore of {instance} is incomplete ({outcome}): {details}")]
    RestoreIncomplete {
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
            HandlerError::Instance(InstanceError::NotServed { .. }) => "AccountNotAllowed",
            HandlerError::Incomplete { .. } => "CleanupIncomplete",
            HandlerError::IndexNotConfigured(_) => "InvalidInput",
            HandlerError::IndexUpdate(_) => "IndexUpdateFailed",
            HandlerError::Refused(refusal) | HandlerError::Instance(InstanceError::Refused(refusal)) => {
                refusal.kind.error_type()
            }
            HandlerError::RestoreIncomplete { .. } => "RestoreIncomplete",
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
    let deadline = invocation_deadline(&event.context);
    let mut invocation =
        parse_invocation(&event.payload).inspect_err(|e| tracing::warn!(error = %e, "rejected input"))?;
    invocation.name_events(&event.context.request_id);
    let home = Home::from_function_arn(&event.context.invoked_function_arn, &app.config.trust.scope);
    match invocation {
        Invocation::Direct(request) => {
            if let Err(refusal) = app.config.trust.admit(&home, &request) {
                guard::announce(app, &refusal).await;
                return Err(refusal.into());
            }
            let report = dispatch::run(app, std::slice::from_ref(&request), deadline)
                .await
                .remove(0);
            let summary = report.result?;
            if summary.is_complete() {
                Ok(serde_json::to_value(&summary).expect("a summary always serializes"))
            } else {
                Err(incomplete(&summary))
            }
        }
        Invocation::Several(requests) => {
            // One event naming several instances: any refusal refuses the whole event, before anything is changed.
            for request in &requests {
                if let Err(refusal) = app.config.trust.admit(&home, request) {
                    guard::announce(app, &refusal).await;
                    return Err(refusal.into());
                }
            }
            let mut summaries = Vec::new();
            for report in dispatch::run(app, &requests, deadline).await {
                let summary = report.result?;
                if !summary.is_complete() {
                    return Err(incomplete(&summary));
                }
                summaries.push(summary);
            }
            Ok(serde_json::json!({ "summaries": summaries }))
        }
        Invocation::Skipped { reason } => Ok(serde_json::json!({ "skipped": reason })),
        Invocation::Batch(mut records) => {
            // Refused records fail like malformed ones: they reach the queue's DLQ, and nothing is done for them.
            for record in &mut records {
                let refused = match &record.requests {
                    Ok(requests) => requests.iter().find_map(|r| app.config.trust.admit(&home, r).err()),
                    Err(_) => None,
                };
                if let Some(refusal) = refused {
                    guard::announce(app, &refusal).await;
                    record.requests = Err(InputError::Refused(refusal.to_string()));
                }
            }
            let requests: Vec<Request> = records
                .iter()
                .filter_map(|r| r.requests.as_ref().ok())
                .flatten()
                .cloned()
                .collect();
            let reports = if requests.is_empty() {
                Vec::new()
            } else {
                dispatch::run(app, &requests, deadline).await
            };
            let mut response = SqsBatchResponse::default();
            for record in &records {
                let failed = match &record.requests {
                    Err(error) => {
                        tracing::warn!(message_id = %record.message_id, error = %error, "rejected SQS record");
                        true
                    }
                    Ok(requests) => !requests.iter().all(|request| {
                        reports
                            .iter()
                            .find(|r| r.instance_id == request.instance_id)
                            .is_some_and(Report::is_complete)
                    }),
                };
                if failed {
                    response.add_failure(record.message_id.clone());
                }
            }
            Ok(serde_json::to_value(&response).expect("a batch response always serializes"))
        }
        Invocation::Restore(request) => {
            let summary = restore::run(app, &home, &request).await?;
            if summary.is_complete() {
                Ok(serde_json::json!({ "restore": summary }))
            } else {
                Err(HandlerError::RestoreIncomplete {
                    instance: summary.instance_id.to_string(),
                    outcome: summary.outcome.as_str(),
                    details: summary.errors.join("; "),
                })
            }
        }
        Invocation::RefreshIndex { event_id } => {
            let table = index_table(app, "a Scheduled Event (registration index refresh)")?;
            let mut report = index::refresh(
                &app.clients.elb,
                &app.clients.dynamodb,
                table,
                app.config.refresh_concurrency,
                &app.refresh_pace,
                deadline,
            )
            .await;
            report.event_id = event_id;
            let answer = serde_json::json!({ "index_refresh": report });
            if report.errors.is_empty() {
                tracing::info!(report = %answer, "registration index refreshed");
            } else {
                tracing::warn!(report = %answer, "registration index refreshed in part");
            }
            Ok(answer)
        }
        Invocation::IndexUpdate(update) => {
            let table = index_table(
                app,
                "a RegisterTargets/DeregisterTargets event (registration index update)",
            )?;
            let report = match update {
                IndexUpdate::Apply(change) => index::apply(&app.clients.elb, &app.clients.dynamodb, table, &change)
                    .await
                    .inspect_err(|e| tracing::warn!(error = %e, "registration index update failed"))?,
                IndexUpdate::FailedCall {
                    call,
                    error_code,
                    event_id,
                } => UpdateReport {
                    event_id,
                    call,
                    target_group_arn: String::new(),
                    written: 0,
                    deleted: 0,
                    skipped: vec![format!("the call failed ({error_code}) and changed no registration")],
                    ms: 0,
                },
            };
            let answer = serde_json::json!({ "index_update": report });
            tracing::info!(report = %answer, "registration index updated");
            Ok(answer)
        }
    }
}

/// The index's table, or the refusal of an index event when there is none: nothing is touched.
fn index_table<'a>(app: &'a App, what: &'static str) -> Result<&'a str, HandlerError> {
    app.config
        .registration_index_table
        .as_deref()
        .ok_or(HandlerError::IndexNotConfigured(what))
        .inspect_err(|e| tracing::warn!(error = %e, "rejected input"))
}

/// Time kept back from Lambda's deadline for building and publishing the summaries.
const PUBLISH_RESERVE: Duration = Duration::from_secs(5);

/// Deadlines below this (September 2001 in epoch milliseconds) are durations, not instants: `cargo lambda watch`
/// sends its timeout that way, where Lambda sends the epoch time.
const EPOCH_MS_FLOOR: u64 = 1_000_000_000_000;

/// When to stop starting new locate and verify calls: Lambda's deadline less the reserve. None when the runtime
/// gave no usable deadline (tests calling the handler directly).
fn invocation_deadline(context: &Context) -> Option<Instant> {
    let left = match context.deadline {
        0 => return None,
        relative if relative < EPOCH_MS_FLOOR => Duration::from_millis(relative),
        _ => match context.deadline().duration_since(SystemTime::now()) {
            Ok(left) => left,
            Err(_) => {
                tracing::warn!(
                    deadline_ms = context.deadline,
                    "the invocation's deadline has already passed; ignoring it"
                );
                return None;
            }
        },
    };
    tracing::debug!(left_ms = left.as_millis() as u64, "invocation deadline");
    Some(Instant::now() + left.saturating_sub(PUBLISH_RESERVE))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn context(deadline: u64) -> Context {
        let mut context = Context::default();
        context.deadline = deadline;
        context
    }

    #[test]
    fn the_deadline_keeps_a_reserve_for_publishing() {
        let in_a_minute = SystemTime::now() + Duration::from_secs(60);
        let epoch_ms = in_a_minute.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis() as u64;
        let left = invocation_deadline(&context(epoch_ms)).unwrap() - Instant::now();
        assert!(
            (Duration::from_secs(53)..=Duration::from_secs(55)).contains(&left),
            "{left:?}"
        );
    }

    #[test]
    fn an_emulator_duration_or_a_past_deadline_does_not_stop_the_work() {
        let left = invocation_deadline(&context(600_000)).unwrap() - Instant::now();
        assert!(left > Duration::from_secs(590), "{left:?}");
        assert_eq!(invocation_deadline(&context(EPOCH_MS_FLOOR + 1)), None);
        assert_eq!(invocation_deadline(&context(0)), None);
    }
}
