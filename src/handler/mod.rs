//! The Lambda handler: parse the payload into an `Invocation`, name its events, route each part to one workflow, and
//! shape the answer. It decides nothing else.

mod deadline;
mod error;

use aws_lambda_events::sqs::SqsBatchResponse;
use lambda_runtime::LambdaEvent;
use serde_json::{Value, json};

use crate::app::{App, Handled, Home, IndexError, InstanceError, Refusal, Report};
use crate::config::EntryPoint;
use crate::deadline::Deadline;
use crate::input::{BatchRecord, IndexUpdate, Invocation, Message, Request, RestoreRequest, Source, parse_invocation};
pub use error::HandlerError;

/// Handle one invocation. A direct request answers with its summary, or fails when anything is left undone so that
/// Lambda's async retry tries again; an SQS batch answers with the records that failed. Whatever was refused is
/// published once, in one alert for the whole invocation, however many records it carried.
pub async fn handle(app: &App, event: LambdaEvent<Value>) -> Result<Value, HandlerError> {
    let deadline = deadline::of(&event.context);
    // Every client retries until this invocation's end, and forgets what a breaker learned in the last one.
    app.begin(&deadline);
    let mut invocation =
        parse_invocation(&event.payload).inspect_err(|e| tracing::warn!(error = %e, "rejected input"))?;
    invocation.name_events(&event.context.request_id);
    // Another tool's lifecycle hook is none of this function's business: set aside before anything is checked,
    // described, completed or published, on every delivery path.
    app.set_aside_other_hooks(&mut invocation);
    let mut invoked = Invoked {
        app,
        home: app.home_of(&event.context.invoked_function_arn),
        deadline,
        refusals: Vec::new(),
    };
    let answer = match app.config.entry_point {
        EntryPoint::Restore => match invocation {
            Invocation::Restore(request) => invoked.restore(&request).await,
            _ => Err(HandlerError::RestoreEntryPoint).inspect_err(|e| tracing::warn!(error = %e, "rejected input")),
        },
        EntryPoint::Agent => invoked.agent(invocation).await,
        EntryPoint::Cleanup => invoked.cleanup(invocation).await,
    };
    app.publish_refusals(&invoked.refusals).await;
    answer
}

/// One invocation as each route sees it: the app, where the function runs, the deadline, and the refusals gathered
/// for the invocation's one alert.
struct Invoked<'a> {
    app: &'a App,
    home: Home,
    deadline: Deadline,
    refusals: Vec<Refusal>,
}

impl Invoked<'_> {
    /// The cleanup entry point: every input AWS delivers (rules, queues, topics), each routed to its workflow.
    async fn cleanup(&mut self, invocation: Invocation) -> Result<Value, HandlerError> {
        match invocation {
            Invocation::Direct(request) => self.direct(request).await,
            Invocation::Several(requests) => self.several(requests).await,
            Invocation::Skipped { reason } => Ok(json!({ "skipped": reason })),
            Invocation::Ignored { reason } => Ok(ignored(&reason)),
            Invocation::Batch(records) => {
                within_cap(self.app, &records)?;
                self.batch(records).await
            }
            Invocation::Notifications(records) => {
                within_cap(self.app, &records)?;
                self.notifications(records).await
            }
            Invocation::Restore(request) => self.not_here(request),
            Invocation::RefreshIndex { event_id } => refresh_index(self.app, event_id, self.deadline).await,
            Invocation::IndexUpdate(update) => update_index(self.app, update).await,
        }
    }

    /// The agent entry point: a node agent's request for its own instance, which the precheck makes it prove. Any
    /// other shape (an EventBridge event, SQS or SNS records, a restore) is no node agent's to send: refused, in one
    /// alert naming every instance it named, and nothing is changed.
    async fn agent(&mut self, invocation: Invocation) -> Result<Value, HandlerError> {
        match invocation {
            Invocation::Direct(request) if request.trigger.source == Source::NodeAgent => self.direct(request).await,
            other => {
                let refused = self.app.refused_at_agent_entry_point(&other);
                let Some(first) = refused.first().cloned() else {
                    let error = HandlerError::AgentEntryPoint;
                    tracing::warn!(error = %error, "rejected input");
                    return Err(error);
                };
                self.refusals.extend(refused);
                Err(HandlerError::Refused(first))
            }
        }
    }

    /// One instance: its summary, or an error a retry can finish.
    async fn direct(&mut self, request: Request) -> Result<Value, HandlerError> {
        self.precheck(&request)?;
        let report = self.clean_up(std::slice::from_ref(&request)).await.remove(0);
        let summary = match report.result? {
            Handled::LeftAlone(reason) => return Ok(ignored(&reason)),
            Handled::Summary(summary) => summary,
        };
        if summary.is_complete() {
            Ok(serde_json::to_value(&summary).expect("a summary always serializes"))
        } else {
            Err(HandlerError::incomplete(&summary))
        }
    }

    /// One event naming several instances: any refusal refuses the whole event, before anything is changed.
    async fn several(&mut self, requests: Vec<Request>) -> Result<Value, HandlerError> {
        let before = self.refusals.len();
        for request in &requests {
            let _ = self.precheck(request);
        }
        if let Some(first) = self.refusals.get(before) {
            return Err(HandlerError::Refused(first.clone()));
        }
        let mut summaries = Vec::new();
        for report in self.clean_up(&requests).await {
            let Handled::Summary(summary) = report.result? else {
                continue;
            };
            if !summary.is_complete() {
                return Err(HandlerError::incomplete(&summary));
            }
            summaries.push(summary);
        }
        Ok(json!({ "summaries": summaries }))
    }

    /// An SQS batch, cleaned in one pass; the answer lists exactly the records that failed, so only they come back.
    async fn batch(&mut self, records: Vec<BatchRecord>) -> Result<Value, HandlerError> {
        let mut response = SqsBatchResponse::default();
        for (record, failed) in records.iter().zip(self.run_records(&records).await) {
            if failed.is_some() {
                response.add_failure(record.message_id.clone());
            }
        }
        Ok(serde_json::to_value(&response).expect("a batch response always serializes"))
    }

    /// SNS messages, cleaned in one pass like a batch. SNS knows no partial failure: when any message failed, the
    /// invocation fails once the others are done, naming each failed message, and SNS (through Lambda's async
    /// retries) delivers them all again. The ones done end quietly then, at their claim.
    async fn notifications(&mut self, records: Vec<BatchRecord>) -> Result<Value, HandlerError> {
        let outcomes = self.run_records(&records).await;
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

    /// Clean up every request of a batch's records in one pass, and say, record by record, whether it failed.
    /// Malformed and refused records fail like incomplete ones; skipped and ignored records do not.
    async fn run_records(&mut self, records: &[BatchRecord]) -> Vec<Option<RecordFailure>> {
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
                // The first of a record's requests that the prechecks refuse, if any; the rest are not checked.
                // Refused records are done nothing for: they reach the queue's DLQ.
                Ok(Message::Requests(wanted)) => {
                    match wanted.iter().find_map(|r| self.app.precheck(&self.home, r).err()) {
                        Some(refusal) => {
                            tracing::warn!(message_id = %record.message_id, error = %refusal, "refused record");
                            self.refusals.push(refusal.clone());
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
            self.clean_up(&requests).await
        };
        for (record, failure) in records.iter().zip(failures.iter_mut()) {
            let (None, Ok(Message::Requests(wanted))) = (&failure, &record.message) else {
                continue;
            };
            let undone: Vec<String> = wanted
                .iter()
                .filter_map(
                    |request| match reports.iter().find(|r| r.instance_id == request.instance_id) {
                        // Left alone is complete, as is a summary with nothing undone.
                        Some(report) if report.is_complete() => None,
                        Some(Report {
                            result: Ok(Handled::Summary(summary)),
                            ..
                        }) => Some(HandlerError::incomplete(summary).to_string()),
                        Some(Report {
                            result: Ok(Handled::LeftAlone(_)),
                            ..
                        }) => None,
                        Some(Report { result: Err(error), .. }) => Some(error.to_string()),
                        None => Some(format!("{} was not cleaned", request.instance_id)),
                    },
                )
                .collect();
            if !undone.is_empty() {
                *failure = Some(RecordFailure::Incomplete(undone.join("; ")));
            }
        }
        failures
    }

    /// Clean up `requests`, keeping the refusals among the reports (instances refused once described) for the alert.
    async fn clean_up(&mut self, requests: &[Request]) -> Vec<Report> {
        let reports = self.app.clean_up(requests, self.deadline).await;
        self.refusals.extend(refused(&reports));
        reports
    }

    /// The checks that need no AWS call; a refusal is kept for the invocation's alert and answered with its error
    /// type.
    fn precheck(&mut self, request: &Request) -> Result<(), HandlerError> {
        self.app.precheck(&self.home, request).map_err(|refusal| {
            self.refusals.push(refusal.clone());
            HandlerError::Refused(refusal)
        })
    }

    /// A restore asked of the cleanup entry point: ignored or refused (`trust::restore_at_cleanup_entry_point`).
    fn not_here(&mut self, request: RestoreRequest) -> Result<Value, HandlerError> {
        match self.app.restore_not_here(&request) {
            Ok(reason) => Ok(ignored(reason)),
            Err(refusal) => {
                self.refusals.push(refusal.clone());
                Err(HandlerError::Refused(refusal))
            }
        }
    }

    async fn restore(&self, request: &RestoreRequest) -> Result<Value, HandlerError> {
        let summary = self.app.restore(&self.home, request).await?;
        if summary.is_complete() {
            Ok(json!({ "restore": summary }))
        } else {
            Err(HandlerError::restore_incomplete(&summary))
        }
    }
}

/// A batch larger than `MAX_BATCH_RECORDS` is rejected whole, before any work: no event source sends one.
fn within_cap(app: &App, records: &[BatchRecord]) -> Result<(), HandlerError> {
    let max = app.config.max_batch_records;
    if records.len() > max {
        let error = HandlerError::TooManyRecords {
            count: records.len(),
            max,
        };
        tracing::warn!(error = %error, "rejected input");
        return Err(error);
    }
    Ok(())
}

/// Why one record of a batch failed; None in the list `run_records` returns is a record done, skipped or ignored.
#[derive(Debug)]
pub enum RecordFailure {
    Rejected(crate::input::InputError),
    Refused(Refusal),
    Incomplete(String),
}

/// The refusals among a cleanup's reports: instances refused once described (out of scope).
fn refused(reports: &[Report]) -> impl Iterator<Item = Refusal> + '_ {
    reports.iter().filter_map(|report| match &report.result {
        Err(InstanceError::Refused(refusal)) => Some(refusal.clone()),
        _ => None,
    })
}

/// The answer to an event with nothing to do, logged.
fn ignored(reason: &str) -> Value {
    tracing::info!(reason, "ignored: nothing to do");
    json!({ "ignored": reason })
}

async fn refresh_index(app: &App, event_id: Option<String>, deadline: Deadline) -> Result<Value, HandlerError> {
    let report = app.refresh_index(event_id, deadline).await.inspect_err(rejected)?;
    let answer = json!({ "index_refresh": report });
    if report.errors.is_empty() {
        tracing::info!(report = %answer, "registration index refreshed");
    } else {
        tracing::warn!(report = %answer, "registration index refreshed in part");
    }
    Ok(answer)
}

async fn update_index(app: &App, update: IndexUpdate) -> Result<Value, HandlerError> {
    let report = app.update_index(update).await.inspect_err(|e| match e {
        IndexError::NotConfigured(_) => rejected(e),
        IndexError::Update(_) => tracing::warn!(error = %e, "registration index update failed"),
    })?;
    let answer = json!({ "index_update": report });
    tracing::info!(report = %answer, "registration index updated");
    Ok(answer)
}

fn rejected(error: &IndexError) {
    tracing::warn!(error = %error, "rejected input");
}
