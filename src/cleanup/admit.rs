//! Admission: which instances of the batch this run may act on. Each is described (an unknown one is reported and
//! left), checked against the scope (an instance the function may not touch is refused; the handler publishes it),
//! then claimed, so that one delivery per interruption acts and a later or concurrent one ends quietly, before any
//! change. A dry run claims nothing: it changes nothing either.

use std::collections::HashMap;

use super::context::{Clock, Context, Work};
use super::report::{InstanceError, Report};
use crate::aws::CallError;
use crate::deadline::{Deadline, elapsed_ms};
use crate::input::{InstanceId, Request};
use crate::instance::Instance;
use crate::steps::claim::{self, Claim, ClaimState, HeldClaims, Lease, Token};
use crate::steps::describe::describe_instances;
use crate::steps::lifecycle;
use crate::summary::{InstanceInfo, Outcome, Summary, Timings};
use crate::telemetry::steplog::{self, Tally};

/// The instances this run acts on, and the reports of those it does not.
pub struct Admitted<'r> {
    pub work: Vec<Work<'r>>,
    pub reports: Vec<Report>,
    pub claims: Claims,
    pub timings: Timings,
    /// Instances whose work an earlier run did without publishing its summary: only that is left.
    pub unpublished: Vec<Unpublished>,
}

/// A summary an earlier run could not publish, and this run's claim on it.
pub struct Unpublished {
    pub token: Token,
    pub summary: Summary,
}

/// The claims taken, to record how each run ended, and the task that renews them while the run works; and
/// the warnings of those that could not be used.
#[derive(Default)]
pub struct Claims {
    pub tokens: HashMap<InstanceId, Token>,
    /// The interruption each claim won belongs to, for the records the run signs.
    pub episodes: HashMap<InstanceId, String>,
    pub warnings: HashMap<InstanceId, String>,
    pub held: Option<HeldClaims>,
}

pub async fn admit<'r>(ctx: &Context<'_>, requests: &[&'r Request], clock: &Clock, deadline: Deadline) -> Admitted<'r> {
    let ids: Vec<InstanceId> = requests.iter().map(|r| r.instance_id.clone()).collect();
    let described = describe_instances(&ctx.clients.ec2, &ids).await;
    let timings = Timings {
        describe: elapsed_ms(clock.started),
        ..Timings::default()
    };
    let mut admitted = Admitted {
        work: Vec::new(),
        reports: Vec::new(),
        claims: Claims::default(),
        timings,
        unpublished: Vec::new(),
    };
    let mut described = match described {
        Ok(found) => found,
        Err(error) => {
            admitted.reports = ids
                .iter()
                .map(|instance| {
                    let error = InstanceError::Describe {
                        instance: instance.clone(),
                        error: error.clone(),
                    };
                    Report::failed(instance, error)
                })
                .collect();
            return admitted;
        }
    };
    for request in requests {
        let found = described.remove(&request.instance_id);
        steplog::request_step(
            "describe",
            request,
            admitted.timings.describe,
            Tally::one(found.is_some()),
        );
        let Some(instance) = found else {
            let error = InstanceError::NotFound(request.instance_id.clone());
            admitted.reports.push(Report::failed(&request.instance_id, error));
            continue;
        };
        // An account-wide event about an instance outside EVENT_SCOPE: one DescribeInstances, and nothing else but
        // letting the instance go when it is held by our own lifecycle hook.
        if let Some(reason) = ctx.config.trust.scope.leaves_alone(request, &instance) {
            admitted
                .reports
                .push(leave_alone(ctx, request, &instance, reason).await);
            continue;
        }
        // The scope guard: nothing below runs for an instance this function may not touch.
        match ctx.config.trust.check_instance(request, &instance) {
            Ok(()) => admitted.work.push(Work { request, instance }),
            // Published by the handler, with the invocation's other refusals, in one alert.
            Err(refusal) => {
                // Refused, so the failed report brings the retry that completes the action if this could not.
                let _ = let_go(ctx, request).await;
                admitted
                    .reports
                    .push(Report::failed(&request.instance_id, InstanceError::Refused(refusal)));
            }
        }
    }
    if !ctx.config.dry_run && !admitted.work.is_empty() {
        claim_all(ctx, &mut admitted, clock, deadline).await;
    }
    admitted
}

/// The report of an instance outside EVENT_SCOPE: nothing done, except letting it go when our own hook holds it.
async fn leave_alone(ctx: &Context<'_>, request: &Request, instance: &Instance, reason: String) -> Report {
    tracing::info!(
        step = "scope",
        instance_id = instance.id.as_str(),
        event_id = request.trigger.event_ref(),
        reason,
        "left alone: outside EVENT_SCOPE"
    );
    match let_go(ctx, request).await {
        Ok(()) => Report::left_alone(&request.instance_id, reason),
        Err(error) => {
            let error = InstanceError::NotLetGo {
                instance: instance.id.clone(),
                reason,
                error,
            };
            Report::failed(&request.instance_id, error)
        }
    }
}

/// An instance left alone or refused is cleaned up by nobody, but when our own lifecycle hook holds it, it must still
/// go: complete the action with CONTINUE. Nothing else is done for it, and a dry run does not even that.
async fn let_go(ctx: &Context<'_>, request: &Request) -> Result<(), CallError> {
    let Some(action) = request.trigger.lifecycle.as_deref() else {
        return Ok(());
    };
    if ctx.config.dry_run {
        return Ok(());
    }
    let completed = lifecycle::let_go(&ctx.clients.autoscaling, action, &request.instance_id).await;
    steplog::request_step("lifecycle", request, 0, Tally::one(completed.is_ok()));
    if let Err(error) = &completed {
        tracing::warn!(
            step = "lifecycle",
            instance_id = request.instance_id.as_str(),
            event_id = request.trigger.event_ref(),
            hook = action.hook_name.as_str(),
            error = %error,
            "lifecycle action not completed"
        );
    }
    completed
}

/// Claim every admitted instance at once, and keep the claims won alive until the run finishes.
async fn claim_all(ctx: &Context<'_>, admitted: &mut Admitted<'_>, clock: &Clock, deadline: Deadline) {
    let lease = Lease {
        length: ctx.config.claim_lease,
        deadline,
    };
    let ids: Vec<InstanceId> = admitted.work.iter().map(|w| w.instance.id.clone()).collect();
    let outcomes = claim::claim_all(&ctx.claim_store, &ids, &lease).await;
    let work = std::mem::take(&mut admitted.work);
    for (w, outcome) in work.into_iter().zip(outcomes) {
        match outcome {
            Claim::Won { token, episode } => {
                steplog::request_step("claim", w.request, 0, Tally::one(true));
                admitted.claims.tokens.insert(w.instance.id.clone(), token);
                admitted.claims.episodes.insert(w.instance.id.clone(), episode);
                admitted.work.push(w);
            }
            Claim::Unpublished { token, summary } => {
                steplog::request_step("claim", w.request, 0, Tally::one(true));
                let summary = *summary;
                admitted.unpublished.push(Unpublished { token, summary });
            }
            Claim::Unavailable(warning) => {
                // The cleanup goes on without the claim; the summary carries the warning.
                steplog::request_step("claim", w.request, 0, Tally::one(false));
                admitted.claims.warnings.insert(w.instance.id.clone(), warning);
                admitted.work.push(w);
            }
            Claim::Taken { state, since } => {
                tracing::info!(
                    step = "claim",
                    instance_id = w.instance.id.as_str(),
                    event_id = w.request.trigger.event_ref(),
                    state = %state,
                    "already handled by another delivery"
                );
                let summary = already_handled(w.request, &w.instance, state, since.as_deref(), clock);
                admitted.reports.push(Report::summary(summary));
            }
        }
    }
    let held = admitted
        .claims
        .tokens
        .iter()
        .map(|(id, t)| (id.clone(), t.clone()))
        .collect();
    admitted.claims.held = Some(claim::hold(&ctx.claim_store, held, lease));
}

/// The answer of a delivery that found the work done or under way: nothing changed, nothing published.
fn already_handled(
    request: &Request,
    instance: &Instance,
    state: ClaimState,
    since: Option<&str>,
    clock: &Clock,
) -> Summary {
    let what = if state == ClaimState::Done {
        "another delivery of this interruption already cleaned it up"
    } else {
        "another delivery of this interruption is cleaning it up"
    };
    let mut summary = Summary::new(
        InstanceInfo::of(instance),
        request.trigger.clone(),
        Outcome::AlreadyHandled,
        clock.started_at,
    );
    summary.warnings.push(format!(
        "already handled: {what} (claim {state}{}); nothing was changed or published",
        since.map(|s| format!(" since {s}")).unwrap_or_default()
    ));
    summary
}
