//! The end of a run, once every summary is assembled: the record of left targets (`REREGISTER_ON_RESTORE`), the
//! monitoring systems' answers, the Auto Scaling lifecycle actions, the SNS summaries, and the claims, each
//! recording how its run ended. Then one `cleanup finished` line and one metrics line per instance.

use std::collections::HashMap;
use std::time::Instant;

use tokio::task::JoinHandle;

use super::admit::{Admitted, Unpublished};
use super::context::{Context, Work};
use super::lifecycle;
use super::report::Report;
use crate::aws::join_all;
use crate::changes::HostChange;
use crate::deadline::{Deadline, elapsed_ms};
use crate::input::InstanceId;
use crate::steps::claim;
use crate::steps::claim::{Ending, Token};
use crate::steps::records::{Signing, left_targets};
use crate::summary::Summary;
use crate::telemetry::{metrics, steplog};
use steplog::Tally;

/// The monitoring calls, started at notice time beside everything else.
pub type MonitoringTask = JoinHandle<HashMap<InstanceId, Vec<HostChange>>>;

pub async fn finish(
    ctx: &Context<'_>,
    admitted: Admitted<'_>,
    mut summaries: Vec<Summary>,
    monitoring: MonitoringTask,
    deadline: Deadline,
) -> Vec<Report> {
    let work = &admitted.work;
    if ctx.config.reregister_on_restore {
        record_left_targets(ctx, work, &admitted.claims.episodes, &mut summaries).await;
    }
    monitoring_answers(work, &mut summaries, monitoring).await;
    // An Auto Scaling lifecycle action is completed once its cleanup is, so the summary can say it was.
    let step = Instant::now();
    let (autoscaling, elb) = (&ctx.clients.autoscaling, &ctx.clients.elb);
    lifecycle::complete_all(autoscaling, elb, ctx.drain_wait, &mut summaries, deadline).await;
    let lifecycle_ms = elapsed_ms(step);
    let by_id = by_instance(work);
    for summary in &summaries {
        if let (Some(report), Some(w)) = (&summary.lifecycle, by_id.get(&summary.instance.id)) {
            let tally = Tally::one(report.result.is_some());
            steplog::request_step("lifecycle", w.request, lifecycle_ms, tally);
        }
    }
    // What a retry would publish if SNS fails now: the summaries of work that is done.
    let done: HashMap<InstanceId, Summary> = summaries
        .iter()
        .filter(|s| s.is_complete())
        .map(|s| (s.instance.id.clone(), s.clone()))
        .collect();
    publish(ctx, work, &mut summaries).await;
    alert_untrusted_records(ctx, &summaries).await;
    release_claims(ctx, &admitted, &mut summaries, &done).await;
    let mut reports = admitted.reports;
    reports.extend(summaries.into_iter().map(finished));
    reports
}

/// Stop renewing the claims, then record how each run ended: `done`, released for the retry, or (the work done, its
/// summary not published) left for the retry to publish.
async fn release_claims(
    ctx: &Context<'_>,
    admitted: &Admitted<'_>,
    summaries: &mut [Summary],
    done: &HashMap<InstanceId, Summary>,
) {
    let held = admitted.claims.held.as_ref();
    held.inspect(|h| h.stop());
    let lost = held.map(|h| h.lost()).unwrap_or_default();
    for summary in summaries.iter_mut() {
        if lost.contains(&summary.instance.id) {
            summary.warnings.push(
                "the claim lapsed while this run worked and another delivery took it over; both did the same \
                 idempotent work"
                    .into(),
            );
        }
        let ending = match (summary.is_complete(), done.get(&summary.instance.id)) {
            (true, _) => Ending::done(summary),
            (false, Some(unpublished)) => Ending::Unpublished(unpublished),
            (false, None) => Ending::Incomplete,
        };
        if let Some(token) = admitted.claims.tokens.get(&summary.instance.id)
            && let Err(e) = claim::close(&ctx.claim_store, &summary.instance.id, token, ending).await
        {
            tracing::warn!(instance_id = summary.instance.id.as_str(), error = %e, "claim not updated");
        }
    }
}

/// The summaries earlier runs did the work for and could not publish: publish them now, and record each as done, or
/// as still unpublished for the next retry. No AWS work is done again.
pub async fn publish_unpublished(ctx: &Context<'_>, unpublished: Vec<Unpublished>) -> Vec<Report> {
    if unpublished.is_empty() {
        return Vec::new();
    }
    let (tokens, mut summaries): (Vec<Token>, Vec<Summary>) = unpublished
        .into_iter()
        .map(|mut u| {
            let note = "published by a later delivery: the run that did this work could not publish its summary";
            if !u.summary.warnings.iter().any(|w| w == note) {
                u.summary.warnings.push(note.into());
            }
            (u.token, u.summary)
        })
        .unzip();
    let kept = summaries.clone();
    let published = ctx.publisher.summaries(&mut summaries).await;
    for (((summary, kept), token), published) in summaries.iter_mut().zip(&kept).zip(&tokens).zip(published) {
        let ending = if published {
            Ending::done(summary)
        } else {
            Ending::Unpublished(kept)
        };
        if !published {
            summary.settle_outcome();
        }
        if let Err(e) = claim::close(&ctx.claim_store, &summary.instance.id, token, ending).await {
            tracing::warn!(instance_id = summary.instance.id.as_str(), error = %e, "claim not updated");
        }
        // The run that did the work already counted it in the metrics.
        tracing::info!(
            step = "summary",
            instance_id = summary.instance.id.as_str(),
            event_id = summary.trigger.event_ref(),
            published,
            "published the summary of an earlier run's work"
        );
    }
    summaries.into_iter().map(Report::summary).collect()
}

/// A dry run's end: its plan is published and logged; nothing is recorded, completed or claimed.
pub async fn dry_run(ctx: &Context<'_>, admitted: Admitted<'_>, mut summaries: Vec<Summary>) -> Vec<Report> {
    publish(ctx, &admitted.work, &mut summaries).await;
    let mut reports = admitted.reports;
    reports.extend(summaries.into_iter().map(finished));
    reports
}

/// Publishing is independent per instance, and the last step: run them together.
async fn publish(ctx: &Context<'_>, work: &[Work<'_>], summaries: &mut [Summary]) {
    let step = Instant::now();
    let published = ctx.publisher.summaries(summaries).await;
    let ms = elapsed_ms(step);
    let by_id = by_instance(work);
    for (summary, published) in summaries.iter_mut().zip(published) {
        if let Some(w) = by_id.get(&summary.instance.id) {
            steplog::request_step("notify", w.request, ms, Tally::one(published));
        }
        if !published {
            summary.settle_outcome();
        }
    }
}

/// Records someone else planted on an ENI, or changed, are a security signal of their own.
async fn alert_untrusted_records(ctx: &Context<'_>, summaries: &[Summary]) {
    for summary in summaries {
        let notes: Vec<String> = summary
            .network_interfaces
            .iter()
            .filter_map(|e| Some(format!("{}: {}", e.network_interface_id, e.note.as_deref()?)))
            .collect();
        if !notes.is_empty() {
            ctx.publisher.untrusted_records(summary, &notes).await;
        }
    }
}

/// The monitoring calls ran beside every step; their answers go into the summaries, their failures into warnings.
async fn monitoring_answers(work: &[Work<'_>], summaries: &mut [Summary], monitoring: MonitoringTask) {
    let step = Instant::now();
    let mut answered = monitoring.await.unwrap_or_default();
    // How long the cleanup then waited for them.
    let waited_ms = elapsed_ms(step);
    let by_id = by_instance(work);
    for summary in summaries.iter_mut() {
        summary.monitoring = answered.remove(&summary.instance.id).unwrap_or_default();
        for failed in summary.monitoring.iter().filter(|c| !c.ok) {
            summary.warnings.push(format!(
                "monitoring: {:?} could not be told ({}): {}",
                failed.system,
                failed.action,
                failed.error.as_deref().unwrap_or("failed")
            ));
        }
        if let Some(w) = by_id.get(&summary.instance.id) {
            let tally = summary.monitoring.iter().map(|c| c.ok).collect();
            steplog::request_step("monitoring", w.request, waited_ms, tally);
        }
    }
}

/// With `REREGISTER_ON_RESTORE`, an instance that may come back (stop, hibernate) carries a record of the targets it
/// left, for the restore. A record that cannot be written is a warning: the cleanup itself is done.
async fn record_left_targets(
    ctx: &Context<'_>,
    work: &[Work<'_>],
    episodes: &HashMap<InstanceId, String>,
    summaries: &mut [Summary],
) {
    let step = Instant::now();
    let by_id = by_instance(work);
    let wanted: Vec<(usize, &Work<'_>)> = summaries
        .iter()
        .enumerate()
        .filter_map(|(i, summary)| {
            let w = *by_id.get(&summary.instance.id)?;
            let comes_back = w.request.trigger.action.is_some_and(|a| a.may_come_back());
            (comes_back && !summary.removed.is_empty()).then_some((i, w))
        })
        .collect();
    let records = join_all(wanted.iter().map(|&(i, w)| {
        let (summary, instance) = (&summaries[i], &w.instance);
        let signing = Signing {
            signer: ctx.signer.cloned(),
            episode: episodes.get(&instance.id).cloned().unwrap_or_default(),
        };
        left_targets::record(
            &ctx.clients.ec2,
            &instance.id,
            &instance.tags,
            &summary.removed,
            signing,
        )
    }))
    .await;
    let ms = elapsed_ms(step);
    for ((i, w), recorded) in wanted.into_iter().zip(records) {
        steplog::request_step("record", w.request, ms, Tally::one(recorded.is_ok()));
        let warnings = match recorded {
            Ok(warnings) => warnings,
            Err(e) => vec![format!("could not record the targets it left: {}", e.reason())],
        };
        summaries[i].warnings.extend(warnings);
    }
}

/// The admitted work by instance id: a summary is matched to its work by its instance, never by its position, so a
/// summary that assemble left out or put elsewhere cannot be paired with another instance's request.
fn by_instance<'w, 'r>(work: &'w [Work<'r>]) -> HashMap<&'w InstanceId, &'w Work<'r>> {
    work.iter().map(|w| (&w.instance.id, w)).collect()
}

/// The `cleanup finished` line and the metrics line, then the report.
fn finished(summary: Summary) -> Report {
    tracing::info!(
        step = "summary",
        instance_id = summary.instance.id.as_str(),
        event_id = summary.trigger.event_ref(),
        outcome = summary.outcome.as_str(),
        summary = %serde_json::to_string(&summary).unwrap_or_default(),
        "cleanup finished"
    );
    metrics::emit(&summary);
    Report::summary(summary)
}
