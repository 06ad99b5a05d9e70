//! Undo a quarantine: put every ENI of the instance back on the groups recorded in its `spot-cleanup:original-groups`
//! tag, then remove the record. Spot can stop or hibernate an instance instead of terminating it; when it comes back,
//! walled off for good would be a trap.
//!
//! Only recorded groups are ever applied, so a restore cannot widen an ENI's access beyond what it had before the
//! quarantine. Re-registering into the target groups it left is an option (`REREGISTER_ON_RESTORE`, see
//! `steps::reregister`): by default the owner of those groups (an Auto Scaling group, a Kubernetes controller)
//! registers it again as it does for any new node.

use aws_sdk_ec2::types::Filter;

use crate::aws::{CallError, Clients, bounded_all};
use crate::changes::TargetRestore;
use crate::config::Config;
use crate::input::{InstanceId, RestoreRequest, Trigger};
use crate::notify::Publisher;
use crate::steps::claim::{self, Marker};
use crate::steps::describe::describe_one;
use crate::steps::quarantine::{ORIGINAL_GROUPS_TAG, decode_original_groups};
use crate::steps::{reregister, tags};
use crate::summary::{EniRestore, RestoreOutcome, RestoreSummary};
use crate::trust::Refusal;
use crate::trust::scope::Home;

/// What a restore needs, borrowed from the composition root.
pub struct Context<'a> {
    pub clients: &'a Clients,
    pub publisher: &'a Publisher,
    pub config: &'a Config,
    pub marker: Marker<'a>,
}

struct Recorded {
    id: String,
    groups_now: Vec<String>,
    original: Vec<String>,
    record_keys: Vec<String>,
}

/// Restore every recorded ENI of the instance, side by side.
pub async fn restore(ec2: &aws_sdk_ec2::Client, instance_id: &InstanceId, trigger: &Trigger) -> RestoreSummary {
    let mut summary = RestoreSummary::new(instance_id, trigger, RestoreOutcome::Failed);
    let recorded = match recorded_enis(ec2, instance_id).await {
        Ok(recorded) => recorded,
        Err(e) => {
            summary.errors.push(e.to_string());
            return summary;
        }
    };
    if recorded.is_empty() {
        summary.outcome = RestoreOutcome::NothingToRestore;
        return summary;
    }
    let results = bounded_all(4, recorded, |eni| {
        let ec2 = ec2.clone();
        async move { restore_one(&ec2, eni).await }
    })
    .await;
    for result in results {
        match result {
            Ok(eni) => summary.network_interfaces.push(eni),
            Err(e) => summary.errors.push(e.to_string()),
        }
    }
    for eni in &summary.network_interfaces {
        if let Some(error) = &eni.error {
            summary.errors.push(format!("{}: {error}", eni.network_interface_id));
        }
    }
    summary.settle_outcome();
    summary
}

/// Register the instance again in the target groups its cleanup recorded, then drop the record. Only a running
/// instance goes back; the record stays for a later restore while any target failed.
async fn put_back_targets(
    ec2: &aws_sdk_ec2::Client,
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    instance_id: &InstanceId,
    summary: &mut RestoreSummary,
    dry_run: bool,
) {
    let instance = match describe_one(ec2, instance_id).await {
        Ok(found) => found,
        Err(e) => {
            summary
                .errors
                .push(format!("could not read the record of the targets it left: {e}"));
            return;
        }
    };
    let Some((instance, recorded)) = instance.and_then(|i| reregister::decode(&i.tags).map(|r| (i, r))) else {
        return;
    };
    let addresses: Vec<_> = instance.addresses().collect();
    let (go_back, skipped) = reregister::plan(instance_id, &addresses, recorded);
    if dry_run {
        summary.targets = go_back
            .into_iter()
            .map(|target| TargetRestore {
                target,
                registered: false,
                reason: Some("dry run: not registered".into()),
            })
            .chain(skipped)
            .collect();
        return;
    }
    if instance.state.as_deref() != Some("running") {
        summary.errors.push(format!(
            "the instance is {}, not running: its targets were not registered again, and their record is kept",
            instance.state.as_deref().unwrap_or("in an unknown state")
        ));
        return;
    }
    let registered = reregister::register_all(elb, go_back).await;
    let failed: Vec<String> = registered
        .iter()
        .filter(|t| !t.registered)
        .map(|t| {
            format!(
                "{} {}: {}",
                t.target.target_group_arn,
                t.target.target_id,
                t.reason.as_deref().unwrap_or("")
            )
        })
        .collect();
    summary.targets = registered.into_iter().chain(skipped).collect();
    if failed.is_empty() {
        if let Err(e) = reregister::forget(ec2, instance_id, reregister::record_keys(&instance.tags)).await {
            summary
                .errors
                .push(format!("could not remove the record of the targets it left: {e}"));
        }
    } else {
        summary.errors.extend(failed);
    }
}

async fn recorded_enis(ec2: &aws_sdk_ec2::Client, instance_id: &InstanceId) -> Result<Vec<Recorded>, CallError> {
    let filter = Filter::builder()
        .name("attachment.instance-id")
        .values(instance_id.as_str())
        .build();
    let mut pages = ec2
        .describe_network_interfaces()
        .filters(filter)
        .into_paginator()
        .send();
    let mut recorded = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| CallError::new("DescribeNetworkInterfaces", &e))?;
        for eni in page.network_interfaces() {
            let tags = tags::to_map(eni.tag_set());
            let (Some(id), Some(original)) = (eni.network_interface_id(), decode_original_groups(&tags)) else {
                continue;
            };
            recorded.push(Recorded {
                id: id.to_owned(),
                groups_now: eni
                    .groups()
                    .iter()
                    .filter_map(|g| g.group_id())
                    .map(str::to_owned)
                    .collect(),
                original,
                record_keys: tags
                    .keys()
                    .filter(|k| k.as_str() == ORIGINAL_GROUPS_TAG || k.starts_with(&format!("{ORIGINAL_GROUPS_TAG}:")))
                    .cloned()
                    .collect(),
            });
        }
    }
    Ok(recorded)
}

/// Apply the recorded groups, then drop the record. The record goes only after the groups are back, so a failure
/// in between leaves it for the retry.
async fn restore_one(ec2: &aws_sdk_ec2::Client, eni: Recorded) -> EniRestore {
    let mut result = EniRestore {
        network_interface_id: eni.id.clone(),
        groups_before: eni.groups_now.clone(),
        groups_after: eni.original.clone(),
        restored: false,
        error: None,
    };
    if eni.original.is_empty() {
        result.error = Some("its record names no group; left as it is".into());
        return result;
    }
    if let Err(e) = ec2
        .modify_network_interface_attribute()
        .network_interface_id(&eni.id)
        .set_groups(Some(eni.original.clone()))
        .send()
        .await
    {
        result.error = Some(CallError::new("ModifyNetworkInterfaceAttribute", &e).to_string());
        return result;
    }
    result.restored = true;
    if let Err(e) = tags::delete(ec2, &eni.id, eni.record_keys).await {
        result.error = Some(format!("groups restored, but the record could not be removed: {e}"));
    }
    result
}

/// A restore end to end: the trust checks, the restore, the record and delivery marker removed, the summary published
/// (unless there was nothing to restore: an instance that was never quarantined starting up is not news).
pub async fn run(ctx: &Context<'_>, home: &Home, request: &RestoreRequest) -> Result<RestoreSummary, Refusal> {
    if let Err(refusal) = ctx
        .config
        .trust
        .admit_restore(home, &request.instance_id, &request.trigger)
    {
        ctx.publisher.refusal(&refusal).await;
        return Err(refusal);
    }
    let (ec2, elb) = (&ctx.clients.ec2, &ctx.clients.elb);
    let dry_run = ctx.config.dry_run;
    let mut summary = if dry_run {
        restore_plan(ec2, &request.instance_id, &request.trigger).await
    } else {
        restore(ec2, &request.instance_id, &request.trigger).await
    };
    // ENIs first, all of them: an instance back in its groups but still partly walled off would fail health checks
    // or drop traffic, so a partial restore leaves the targets (and their record) for the retry.
    if ctx.config.reregister_on_restore && summary.is_complete() {
        put_back_targets(ec2, elb, &request.instance_id, &mut summary, dry_run).await;
        if !dry_run {
            summary.settle_outcome();
        }
    }
    if summary.outcome == RestoreOutcome::Restored
        && let Err(e) = claim::clear(&ctx.marker, &request.instance_id).await
    {
        summary.errors.push(format!("could not clear the delivery marker: {e}"));
        summary.outcome = RestoreOutcome::Partial;
    }
    if summary.outcome != RestoreOutcome::NothingToRestore
        && let Err(e) = ctx.publisher.restore(&summary).await
    {
        summary.errors.push(format!("SNS {e}"));
    }
    tracing::info!(
        step = "restore",
        instance_id = summary.instance_id.as_str(),
        event_id = summary.trigger.event_ref(),
        outcome = summary.outcome.as_str(),
        summary = %serde_json::to_string(&summary).unwrap_or_default(),
        "restore finished"
    );
    Ok(summary)
}

/// Dry run: what a restore would put back, changing nothing.
async fn restore_plan(ec2: &aws_sdk_ec2::Client, instance_id: &InstanceId, trigger: &Trigger) -> RestoreSummary {
    let mut summary = RestoreSummary::new(instance_id, trigger, RestoreOutcome::NothingToRestore);
    match recorded_enis(ec2, instance_id).await {
        Ok(recorded) => {
            summary.network_interfaces = recorded
                .into_iter()
                .map(|eni| EniRestore {
                    network_interface_id: eni.id,
                    groups_before: eni.groups_now,
                    groups_after: eni.original,
                    restored: false,
                    error: Some("dry run: not changed".into()),
                })
                .collect();
        }
        Err(e) => {
            summary.errors.push(e.to_string());
            summary.outcome = RestoreOutcome::Failed;
        }
    }
    summary
}
