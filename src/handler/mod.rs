//! The Lambda handler: parse the payload into an `Invocation`, name its events, route each part to one workflow, and
//! shape the answer. It decides nothing else.

mod deadline;
mod error;

use std::collections::HashSet;

use aws_lambda_events::sqs::SqsBatchResponse;
use lambda_runtime::LambdaEvent;
use serde_json::{Value, json};

use crate::app::App;
use crate::cleanup::Report;
use crate::deadline::Deadline;
use crate::index::{self, UpdateReport};
use crate::input::{BatchRecord, IndexUpdate, Invocation, Request, RestoreRequest, parse_invocation};
use crate::restore;
use crate::trust::scope::Home;
pub use error::HandlerError;

/// Handle one invocation. A direct request answers with its summary, or fails when anything is left undone so that
/// Lambda's async retry tries again; an SQS batch answers with the records that failed.
pub async fn handle(app: &App, event: LambdaEvent<Value>) -> Result<Value, HandlerError> {
    let deadline = deadline::of(&event.context);
    let mut invocation =
        parse_invocation(&event.payload).inspect_err(|e| tracing::warn!(error = %e, "rejected input"))?;
    invocation.name_events(&event.context.request_id);
    let home = Home::from_function_arn(&event.context.invoked_function_arn, &app.config.trust.scope);
    match invocation {
        Invocation::Direct(request) => direct(app, &home, request, deadline).await,
        Invocation::Several(requests) => several(app, &home, requests, deadline).await,
        Invocation::Skipped { reason } => Ok(json!({ "skipped": reason })),
        Invocation::Batch(records) => batch(app, &home, records, deadline).await,
        Invocation::Restore(request) => restore(app, &home, &request).await,
        Invocation::RefreshIndex { event_id } => refresh_index(app, event_id, deadline).await,
        Invocation::IndexUpdate(update) => update_index(app, update).await,
    }
}

/// One instance: its summary, or an error a retry can finish.
async fn direct(app: &App, home: &Home, request: Request, deadline: Deadline) -> Result<Value, HandlerError> {
    admit(app, home, &request).await?;
    let report = app.clean_up(std::slice::from_ref(&request), deadline).await.remove(0);
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
    // Refused records fail like malformed ones: they reach the queue's DLQ, and nothing is done for them.
    let mut refused = HashSet::new();
    for record in &records {
        let Ok(requests) = &record.requests else { continue };
        if let Some(refusal) = requests.iter().find_map(|r| app.config.trust.admit(home, r).err()) {
            app.publisher.refusal(&refusal).await;
            tracing::warn!(message_id = %record.message_id, error = %refusal, "refused SQS record");
            refused.insert(record.message_id.clone());
        }
    }
    let requests: Vec<Request> = records
        .iter()
        .filter(|r| !refused.contains(&r.message_id))
        .filter_map(|r| r.requests.as_ref().ok())
        .flatten()
        .cloned()
        .collect();
    let reports = if requests.is_empty() {
        Vec::new()
    } else {
        app.clean_up(&requests, deadline).await
    };
    let mut response = SqsBatchResponse::default();
    for record in &records {
        let failed = match &record.requests {
            _ if refused.contains(&record.message_id) => true,
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

/// The checks that need no AWS call; a refusal is published and answered with its error type.
async fn admit(app: &App, home: &Home, request: &Request) -> Result<(), HandlerError> {
    if let Err(refusal) = app.config.trust.admit(home, request) {
        app.publisher.refusal(&refusal).await;
        return Err(refusal.into());
    }
    Ok(())
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
