//! Undo a quarantine: put every ENI of the instance back on the groups recorded in its `spot-cleanup:original-groups`
//! tags, then remove the record. Spot can stop or hibernate an instance instead of terminating it; when it comes back,
//! walled off for good would be a trap.
//!
//! Only records this function itself wrote are acted on (`found::check`: each record's KMS MAC, for this instance
//! and interruption). A planted or edited record refuses the whole restore, with a security alert, before anything
//! changes. So a restore cannot widen an ENI's access beyond what it had before the quarantine, whoever may tag it.
//! Re-registering into the target groups it left is an option (`REREGISTER_ON_RESTORE`, see `steps::reregister`):
//! by default the owner of those groups (an Auto Scaling group, a Kubernetes controller) registers it again as it
//! does for any new node.
//!
//! Who may ask is decided before this module: only the restore entry point serves restores (`handler`).

mod apply;
mod found;

use crate::aws::Clients;
use crate::config::Config;
use crate::input::RestoreRequest;
use crate::notify::Publisher;
use crate::steps::claim::{self, ClaimStore};
use crate::steps::records::Signer;
use crate::summary::{RestoreOutcome, RestoreSummary};
use crate::trust::scope::Home;
use crate::trust::{Refusal, RefusalKind};
use found::RecordCheck;

/// What a restore needs, borrowed from the composition root.
pub struct Context<'a> {
    pub clients: &'a Clients,
    pub publisher: &'a Publisher,
    pub config: &'a Config,
    pub claim_store: ClaimStore,
    /// Checks the records' MACs; None without `RECORD_KEY_ID`, and then every record is refused.
    pub signer: Option<&'a Signer>,
}

/// A restore end to end: the trust checks, the records read and checked, the ENIs and (optionally) the targets put
/// back, the record and claim removed, the summary published (unless there was nothing to restore: an
/// instance that was never quarantined starting up is not news). A dry run changes nothing and publishes its plan
/// (`planned`): each ENI with the groups it would get back, and each target it would register again.
pub async fn run(ctx: &Context<'_>, home: &Home, request: &RestoreRequest) -> Result<RestoreSummary, Refusal> {
    let (instance_id, trigger) = (&request.instance_id, &request.trigger);
    if let Err(refusal) = ctx.config.trust.precheck_restore(home, instance_id, trigger) {
        ctx.publisher.refusal(&refusal).await;
        return Err(refusal);
    }
    let (ec2, elb) = (&ctx.clients.ec2, &ctx.clients.elb);
    let dry_run = ctx.config.dry_run;
    let mut summary = RestoreSummary::new(instance_id, trigger, RestoreOutcome::Failed);
    let found = match found::read(ec2, &ctx.claim_store, instance_id, ctx.config.reregister_on_restore).await {
        Ok(found) if found.is_empty() => {
            summary.outcome = RestoreOutcome::NothingToRestore;
            return Ok(finished(summary));
        }
        Ok(found) => found,
        Err(e) => {
            summary.errors.push(e.to_string());
            return Ok(publish(ctx, summary).await);
        }
    };
    match found::check(ctx.signer, instance_id, &found).await {
        RecordCheck::Trusted => {}
        RecordCheck::Untrusted(reasons) => {
            let refusal = Refusal::new(RefusalKind::RecordNotTrusted, instance_id, reasons, trigger);
            ctx.publisher.refusal(&refusal).await;
            return Err(refusal);
        }
        RecordCheck::Unchecked(errors) => {
            summary.errors.extend(errors);
            return Ok(publish(ctx, summary).await);
        }
    }
    if dry_run {
        summary.outcome = RestoreOutcome::Planned;
        summary.network_interfaces = apply::plan_enis(found.enis);
    } else {
        apply::restore_enis(ec2, found.enis, &mut summary).await;
        summary.settle_outcome();
    }
    // ENIs first, all of them: an instance back in its groups but still partly walled off would fail health checks
    // or drop traffic, so a partial restore leaves the targets (and their record) for the retry.
    if let Some(targets) = found.targets
        && (dry_run || summary.is_complete())
    {
        apply::put_back_targets(ec2, elb, instance_id, targets, &mut summary, dry_run).await;
        if !dry_run {
            summary.settle_outcome();
        }
    }
    if summary.outcome == RestoreOutcome::Restored
        && let Err(e) = claim::clear(&ctx.claim_store, instance_id).await
    {
        summary.errors.push(format!("could not clear the claim: {e}"));
        summary.outcome = RestoreOutcome::Partial;
    }
    Ok(publish(ctx, summary).await)
}

/// Publish the summary (an SNS failure goes into its errors), then log it.
async fn publish(ctx: &Context<'_>, mut summary: RestoreSummary) -> RestoreSummary {
    if summary.outcome != RestoreOutcome::NothingToRestore
        && let Err(e) = ctx.publisher.restore(&summary).await
    {
        summary.errors.push(format!("SNS {e}"));
    }
    finished(summary)
}

fn finished(summary: RestoreSummary) -> RestoreSummary {
    tracing::info!(
        step = "restore",
        instance_id = summary.instance_id.as_str(),
        event_id = summary.trigger.event_ref(),
        outcome = summary.outcome.as_str(),
        summary = %serde_json::to_string(&summary).unwrap_or_default(),
        "restore finished"
    );
    summary
}
