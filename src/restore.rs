//! Undo a quarantine: put every ENI of the instance back on the groups recorded in its `spot-cleanup:original-groups`
//! tag, then remove the record. Spot can stop or hibernate an instance instead of terminating it; when it comes back,
//! walled off for good would be a trap.
//!
//! Only recorded groups are ever applied, so a restore cannot widen an ENI's access beyond what it had before the
//! quarantine. Re-registering into the target groups it left is an option (`REREGISTER_ON_RESTORE`, see
//! `steps::reregister`): by default the owner of those groups (an Auto Scaling group, a Kubernetes controller)
//! registers it again as it does for any new node.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::Filter;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::aws_error;
use crate::bounded::bounded_all;
use crate::input::{InstanceId, Trigger};
use crate::instance::describe_instances;
use crate::steps::quarantine::{ORIGINAL_GROUPS_TAG, decode_original_groups};
use crate::steps::reregister::{self, TargetRestore};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestoreOutcome {
    /// Every recorded ENI is back on its groups and its record is gone.
    Restored,
    /// No ENI of the instance carries a record: nothing to undo.
    NothingToRestore,
    /// Some ENIs could not be restored; see `errors`. Their records are kept for a retry.
    Partial,
    Failed,
}

impl RestoreOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RestoreOutcome::Restored => "restored",
            RestoreOutcome::NothingToRestore => "nothing-to-restore",
            RestoreOutcome::Partial => "partial",
            RestoreOutcome::Failed => "failed",
        }
    }
}

/// One ENI put back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EniRestore {
    pub network_interface_id: String,
    pub groups_before: Vec<String>,
    /// The recorded original groups, now applied (or that were to be).
    pub groups_after: Vec<String>,
    pub restored: bool,
    pub error: Option<String>,
}

/// What a restore did: the SNS message and the invocation's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RestoreSummary {
    pub version: u32,
    /// Always `restore`, so subscribers can tell it from a cleanup summary.
    pub kind: String,
    pub instance_id: InstanceId,
    pub trigger: Trigger,
    pub outcome: RestoreOutcome,
    pub network_interfaces: Vec<EniRestore>,
    /// With `REREGISTER_ON_RESTORE`: the targets it left at its cleanup, and whether each is registered again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<TargetRestore>,
    pub errors: Vec<String>,
    pub at: DateTime<Utc>,
}

impl RestoreSummary {
    /// A summary of nothing done yet, starting from `outcome`.
    fn new(instance_id: &InstanceId, trigger: &Trigger, outcome: RestoreOutcome) -> Self {
        RestoreSummary {
            version: 1,
            kind: "restore".into(),
            instance_id: instance_id.clone(),
            trigger: trigger.clone(),
            outcome,
            network_interfaces: Vec::new(),
            targets: Vec::new(),
            errors: Vec::new(),
            at: Utc::now(),
        }
    }

    pub fn is_complete(&self) -> bool {
        matches!(
            self.outcome,
            RestoreOutcome::Restored | RestoreOutcome::NothingToRestore
        )
    }

    /// The outcome from what was done and what failed, ENIs and targets alike.
    fn settle_outcome(&mut self) {
        let recorded = !self.network_interfaces.is_empty() || !self.targets.is_empty();
        let done = self.network_interfaces.iter().any(|e| e.restored) || self.targets.iter().any(|t| t.registered);
        self.outcome = match (self.errors.is_empty(), recorded, done) {
            (true, false, _) => RestoreOutcome::NothingToRestore,
            (true, true, _) => RestoreOutcome::Restored,
            (false, _, true) => RestoreOutcome::Partial,
            (false, _, false) => RestoreOutcome::Failed,
        };
    }
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
            summary.errors.push(e);
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
    let instance = match describe_instances(ec2, std::slice::from_ref(instance_id)).await {
        Ok(mut found) => found.remove(instance_id),
        Err(e) => {
            summary
                .errors
                .push(format!("could not read the record of the targets it left: {}", e.0));
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
            summary.errors.push(e);
        }
    } else {
        summary.errors.extend(failed);
    }
}

async fn recorded_enis(ec2: &aws_sdk_ec2::Client, instance_id: &InstanceId) -> Result<Vec<Recorded>, String> {
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
        let page = page.map_err(|e| format!("DescribeNetworkInterfaces failed: {}", aws_error::explain(&e)))?;
        for eni in page.network_interfaces() {
            let tags: BTreeMap<String, String> = eni
                .tag_set()
                .iter()
                .filter_map(|t| Some((t.key()?.to_owned(), t.value().unwrap_or_default().to_owned())))
                .collect();
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
        result.error = Some(format!(
            "ModifyNetworkInterfaceAttribute failed: {}",
            aws_error::explain(&e)
        ));
        return result;
    }
    result.restored = true;
    if let Err(e) = crate::instance::delete_tags(ec2, &eni.id, eni.record_keys).await {
        result.error = Some(format!("groups restored, but the record could not be removed: {e}"));
    }
    result
}

/// A restore end to end: the scope guard's origin check, the restore, the record and delivery marker removed, the
/// summary published (unless there was nothing to restore: an instance that was never quarantined starting up is
/// not news).
pub async fn run(
    app: &crate::cleanup::App,
    home: &crate::scope::Home,
    request: &crate::input::RestoreRequest,
) -> Result<RestoreSummary, crate::guard::Refusal> {
    let trust = &app.config.trust;
    let reasons = trust.scope.check_origin(home, &request.trigger);
    // A replayed "running" event must not undo the quarantine of a later interruption.
    let stale = crate::freshness::staleness(&request.trigger, trust.max_event_age, Utc::now());
    let refusal = match (reasons.is_empty(), stale) {
        (false, _) => Some((crate::guard::RefusalKind::OutOfScope, reasons)),
        (true, Some(reason)) => Some((crate::guard::RefusalKind::Stale, vec![reason])),
        (true, None) => None,
    };
    if let Some((kind, reasons)) = refusal {
        let refusal = crate::guard::Refusal {
            kind,
            instance_id: request.instance_id.clone(),
            reasons,
            trigger: Box::new(request.trigger.clone()),
        };
        crate::guard::announce(app, &refusal).await;
        return Err(refusal);
    }
    let mut summary = if app.config.dry_run {
        restore_plan(&app.clients.ec2, &request.instance_id, &request.trigger).await
    } else {
        restore(&app.clients.ec2, &request.instance_id, &request.trigger).await
    };
    // ENIs first, all of them: an instance back in its groups but still partly walled off would fail health checks
    // or drop traffic, so a partial restore leaves the targets (and their record) for the retry.
    if app.config.reregister_on_restore && summary.is_complete() {
        let (ec2, elb) = (&app.clients.ec2, &app.clients.elb);
        put_back_targets(ec2, elb, &request.instance_id, &mut summary, app.config.dry_run).await;
        if !app.config.dry_run {
            summary.settle_outcome();
        }
    }
    if summary.outcome == RestoreOutcome::Restored {
        let marker = crate::claim::marker(app);
        if let Err(e) = crate::claim::clear(&marker, &request.instance_id).await {
            summary.errors.push(e);
            summary.outcome = RestoreOutcome::Partial;
        }
    }
    if summary.outcome != RestoreOutcome::NothingToRestore
        && let Err(e) =
            crate::steps::alert::publish_restore(&app.clients.sns, &app.config.sns_topic_arn, &summary).await
    {
        summary.errors.push(format!("SNS Publish failed: {e}"));
    }
    tracing::info!(
        step = "restore",
        instance_id = summary.instance_id.as_str(),
        event_id = crate::steplog::event_id(&summary.trigger),
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
            summary.errors.push(e);
            summary.outcome = RestoreOutcome::Failed;
        }
    }
    summary
}
