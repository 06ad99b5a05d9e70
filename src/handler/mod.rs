//! The Lambda handler: parse the payload into an `Invocation`, name its events, route each part to one workflow, and
//! shape the answer. It decides nothing else.

mod deadline;
mod error;

use aws_lambda_events::sqs::SqsBatchResponse;
use lambda_runtime::LambdaEvent;
use serde_json::{Value, json};

use crate::app::App;
use crate::cleanup::{InstanceError, Report};
use crate::config::EntryPoint;
use crate::deadline::Deadline;
use crate::index::{self, UpdateReport};
use crate::input::Source;
use crate::input::{BatchRecord, IndexUpdate, Invocation, Message, Request, RestoreRequest, parse_invocation};
use crate::restore;
use crate::trust::scope::Home;
use crate::trust::{Refusal, RefusalKind};
pub use error::HandlerError;

/// Handle one invocation. A direct request answers with its summary, or fails when anything is left undone so that
/// Lambda's async retry tries again; an SQS batch answers with the records that failed.
pub async fn handle(app: &App, event: LambdaEvent<Value>) -> Result<Value, HandlerError> {
    let deadline = deadline::of(&event.context);
    // Every client retries until this invocation's end, and forgets what a breaker learned in the last one.
    app.home.clients.budget.begin(deadline.end_left());
    let mut invocation =
        parse_invocation(&event.payload).inspect_err(|e| tracing::warn!(error = %e, "rejected input"))?;
    invocation.name_events(&event.context.request_id);
    let home = Home::from_function_arn(&event.context.invoked_function_arn, &app.config.trust.scope);
    if app.config.entry_point == EntryPoint::Restore {
        return match invocation {
            Invocation::Restore(request) => restore(app, &home, &request).await,
            _ => Err(HandlerError::RestoreEntryPoint).inspect_err(|e| tracing::warn!(error = %e, "rejected input")),
        };
    }
    match invocation {
        Invocation::Direct(request) => direct(app, &home, request, deadline).await,
        Invocation::Several(requests) => several(app, &home, requests, deadline).await,
        Invocation::Skipped { reason } => Ok(json!({ "skipped": reason })),
        Invocation::Ignored { reason } => Ok(ignored(&reason)),
        Invocation::Batch(records) => batch(app, &home, records, deadline).await,
        Invocation::Notifications(records) => notifications(app, &home, records, deadline).await,
        Invocation::Restore(request) => not_here(app, request).await,
        Invocation::RefreshIndex { event_id } => refresh_index(app, event_id, deadline).await,
        Invocation::IndexUpdate(update) => update_index(app, update).await,
    }
}

/// One instance: its summary, or an error a retry can finish.
async fn direct(app: &App, home: &Home, request: Request, deadline: Deadline) -> Result<Value, HandlerError> {
    admit(app, home, &request).await?;
    let report = app.clean_up(std::slice::from_ref(&request), deadline).await.remove(0);
    if let Err(InstanceError::Ignored { reason, .. }) = &report.result {
        return Ok(ignored(reason));
    }
    let summary = report.result?;
    if summary.is_complete() {
        Ok(serde_json::to_value(&summary).expect("a summary always serializes"))
    } else {
        Err(HandlerError::incomplete(&summary))
    }
}

/// One event naming several instances: any refusal refuses the whole event, before anything is changed.
async fn several(app: &App, home: &Home, requests: Vec<Request>, deadline: Deadline) -> Result<Value, HandlerError> {
    for request in &requests {
        admit(app, home, request).await?;
    }
    let mut summaries = Vec::new();
    for report in app.clean_up(&requests, deadline).await {
        if matches!(report.result, Err(InstanceError::Ignored { .. })) {
            continue;
        }
        let summary = report.result?;
        if !summary.is_complete() {
            return Err(HandlerError::incomplete(&summary));
        }
        summaries.push(summary);
    }
    Ok(json!({ "summaries": summaries }))
}

/// An SQS batch, cleaned in one pass; the answer lists exactly the records that failed, so only they come back.
async fn batch(app: &App, home: &Home, records: Vec<BatchRecord>, deadline: Deadline) -> Result<Value, HandlerError> {
    let mut response = SqsBatchResponse::default();
    for (record, failed) in records.iter().zip(run_records(app, home, &records, deadline).await) {
        if failed.is_some() {
            response.add_failure(record.message_id.clone());
        }
    }
    Ok(serde_json::to_value(&response).expect("a batch response always serializes"))
}

/// SNS messages, cleaned in one pass like a batch. SNS knows no partial failure: when any message failed, the
/// invocation fails once the others are done, naming each failed message, and SNS (through Lambda's async retries)
/// delivers them all again. The ones done end quietly then, at the delivery marker.
async fn notifications(
    app: &App,
    home: &Home,
    records: Vec<BatchRecord>,
    deadline: Deadline,
) -> Result<Value, HandlerError> {
    let outcomes = run_records(app, home, &records, deadline).await;
    let failed: Vec<(String, RecordFailure)> = records
        .iter()
        .zip(outcomes)
        .filter_map(|(record, failed)| Some((record.message_id.clone(), failed?)))
        .collect();
    if failed.is_empty() {
        return Ok(json!({ "notifications": records.len() }));
    }
    Err(HandlerError::SnsRecords { failed })
}

/// Why one record of a batch failed; None in the list `run_records` returns is a record done, skipped or ignored.
#[derive(Debug)]
pub enum RecordFailure {
    Rejected(crate::input::InputError),
    Refused(crate::trust::Refusal),
    Incomplete(String),
}

/// Clean up every request of a batch's records in one pass, and say, record by record, whether it failed.
/// Malformed and refused records fail like incomplete ones; skipped and ignored records do not.
async fn run_records(
    app: &App,
    home: &Home,
    records: &[BatchRecord],
    deadline: Deadline,
) -> Vec<Option<RecordFailure>> {
    let mut failures: Vec<Option<RecordFailure>> = Vec::with_capacity(records.len());
    let mut requests: Vec<Request> = Vec::new();
    for record in records {
        let failure = match &record.message {
            Err(error) => {
                tracing::warn!(message_id = %record.message_id, error = %error, "rejected record");
                Some(RecordFailure::Rejected(error.clone()))
            }
            Ok(Message::Skipped(reason)) => {
                tracing::info!(message_id = %record.message_id, reason = %reason, "skipped record");
                None
            }
            Ok(Message::Ignored(reason)) => {
                tracing::info!(message_id = %record.message_id, reason = %reason, "ignored record");
                None
            }
            Ok(Message::Requests(wanted)) => {
                match wanted.iter().find_map(|r| app.config.trust.admit(home, r).err()) {
                    // Refused records are done nothing for: they reach the queue's DLQ.
                    Some(refusal) => {
                        app.publisher.refusal(&refusal).await;
                        tracing::warn!(message_id = %record.message_id, error = %refusal, "refused record");
                        Some(RecordFailure::Refused(refusal))
                    }
                    None => {
                        requests.extend(wanted.iter().cloned());
                        None
                    }
                }
            }
        };
        failures.push(failure);
    }
    let reports = if requests.is_empty() {
        Vec::new()
    } else {
        app.clean_up(&requests, deadline).await
    };
    for (record, failure) in records.iter().zip(failures.iter_mut()) {
        let (None, Ok(Message::Requests(wanted))) = (&failure, &record.message) else {
            continue;
        };
        let undone: Vec<String> = wanted
            .iter()
            .filter_map(|request| {
                let report = reports.iter().find(|r| r.instance_id == request.instance_id);
                match report {
                    Some(report) if report.is_complete() => None,
                    Some(Report {
                        result: Ok(summary), ..
                    }) => Some(HandlerError::incomplete(summary).to_string()),
                    Some(Report { result: Err(error), .. }) => Some(error.to_string()),
                    None => Some(format!("{} was not cleaned", request.instance_id)),
                }
            })
            .collect();
        if !undone.is_empty() {
            *failure = Some(RecordFailure::Incomplete(undone.join("; ")));
        }
    }
    failures
}

/// The answer to an event with nothing to do, logged.
fn ignored(reason: &str) -> Value {
    tracing::info!(reason, "ignored: nothing to do");
    json!({ "ignored": reason })
}

/// The checks that need no AWS call; a refusal is published and answered with its error type.
async fn admit(app: &App, home: &Home, request: &Request) -> Result<(), HandlerError> {
    if let Err(refusal) = app.config.trust.admit(home, request) {
        app.publisher.refusal(&refusal).await;
        return Err(refusal.into());
    }
    Ok(())
}

/// A restore asked of the cleanup entry point. Every delivery path may reach this function, so none of them may undo
/// a quarantine: an operator's request is refused as a security signal, and a `running` event (which a rule routes
/// to the restore entry point) is ignored. Nothing is changed.
async fn not_here(app: &App, request: RestoreRequest) -> Result<Value, HandlerError> {
    if request.trigger.source == Source::EventBridge {
        return Ok(ignored(
            "a running instance is the restore entry point's to restore (ENTRY_POINT=restore), not this function's",
        ));
    }
    let reason = "this is the cleanup entry point, which every delivery path may invoke; a restore is accepted only                   by the restore entry point (ENTRY_POINT=restore), invoked by the operator role";
    let refusal = Refusal::new(
        RefusalKind::RestoreNotAuthorized,
        &request.instance_id,
        vec![reason.into()],
        &request.trigger,
    );
    app.publisher.refusal(&refusal).await;
    Err(refusal.into())
}

async fn restore(app: &App, home: &Home, request: &RestoreRequest) -> Result<Value, HandlerError> {
    let summary = restore::run(&app.restore_context(), home, request).await?;
    if summary.is_complete() {
        Ok(json!({ "restore": summary }))
    } else {
        Err(HandlerError::restore_incomplete(&summary))
    }
}

async fn refresh_index(app: &App, event_id: Option<String>, deadline: Deadline) -> Result<Value, HandlerError> {
    let table = index_table(app, "a Scheduled Event (registration index refresh)")?;
    let (clients, config) = (&app.home.clients, &app.config);
    let mut report = index::refresh(
        &clients.elb,
        &clients.dynamodb,
        table,
        config.refresh_concurrency,
        &app.home.refresh_pace,
        deadline,
    )
    .await;
    report.event_id = event_id;
    let answer = json!({ "index_refresh": report });
    if report.errors.is_empty() {
        tracing::info!(report = %answer, "registration index refreshed");
    } else {
        tracing::warn!(report = %answer, "registration index refreshed in part");
    }
    Ok(answer)
}

async fn update_index(app: &App, update: IndexUpdate) -> Result<Value, HandlerError> {
    let table = index_table(
        app,
        "a RegisterTargets/DeregisterTargets event (registration index update)",
    )?;
    let clients = &app.home.clients;
    let report = match update {
        IndexUpdate::Apply(change) => index::apply(&clients.elb, &clients.dynamodb, table, &change)
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
    let answer = json!({ "index_update": report });
    tracing::info!(report = %answer, "registration index updated");
    Ok(answer)
}

/// The index's table, or the refusal of an index event when there is none: nothing is touched.
fn index_table<'a>(app: &'a App, what: &'static str) -> Result<&'a str, HandlerError> {
    app.home
        .table
        .as_deref()
        .ok_or(HandlerError::IndexNotConfigured(what))
        .inspect_err(|e| tracing::warn!(error = %e, "rejected input"))
}
