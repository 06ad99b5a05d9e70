//! The restore's changes, once every record is trusted: each ENI back on its recorded groups, then (with
//! `REREGISTER_ON_RESTORE`) the targets it left registered again. A record goes only after what it names is back, so
//! a failure in between leaves it for the retry.

use super::found::{RecordedEni, RecordedTargets};
use crate::aws::{CallError, bounded_all};
use crate::changes::TargetRestore;
use crate::input::InstanceId;
use crate::steps::{reregister, tags};
use crate::summary::{EniRestore, RestoreSummary};

/// Put every recorded ENI back, side by side; their results go into `summary`.
pub async fn restore_enis(ec2: &aws_sdk_ec2::Client, enis: Vec<RecordedEni>, summary: &mut RestoreSummary) {
    let results = bounded_all(4, enis, |eni| {
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
}

/// What a restore would put back, changing nothing (a dry run).
pub fn plan_enis(enis: Vec<RecordedEni>) -> Vec<EniRestore> {
    enis.into_iter()
        .map(|eni| EniRestore {
            network_interface_id: eni.id,
            groups_before: eni.groups_now,
            groups_after: eni.stored.groups,
            restored: false,
            error: Some("dry run: not changed".into()),
        })
        .collect()
}

async fn restore_one(ec2: &aws_sdk_ec2::Client, eni: RecordedEni) -> EniRestore {
    let mut result = EniRestore {
        network_interface_id: eni.id.clone(),
        groups_before: eni.groups_now.clone(),
        groups_after: eni.stored.groups.clone(),
        restored: false,
        error: None,
    };
    if eni.stored.groups.is_empty() {
        result.error = Some("its record names no group; left as it is".into());
        return result;
    }
    if let Err(e) = ec2
        .modify_network_interface_attribute()
        .network_interface_id(&eni.id)
        .set_groups(Some(eni.stored.groups.clone()))
        .send()
        .await
    {
        result.error = Some(CallError::new("ModifyNetworkInterfaceAttribute", &e).to_string());
        return result;
    }
    result.restored = true;
    if let Err(e) = tags::delete(ec2, &eni.id, eni.stored.keys).await {
        result.error = Some(format!("groups restored, but the record could not be removed: {e}"));
    }
    result
}

/// Register the instance again in the target groups its cleanup recorded, then drop the record. Only a running
/// instance goes back; the record stays for a later restore while any target failed. A dry run only lists them.
pub async fn put_back_targets(
    ec2: &aws_sdk_ec2::Client,
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    instance_id: &InstanceId,
    recorded: RecordedTargets,
    summary: &mut RestoreSummary,
    dry_run: bool,
) {
    let RecordedTargets { instance, stored } = recorded;
    let addresses: Vec<_> = instance.addresses().collect();
    let (go_back, skipped) = reregister::plan(instance_id, &addresses, stored.targets);
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
        if let Err(e) = reregister::forget(ec2, instance_id, stored.keys).await {
            summary
                .errors
                .push(format!("could not remove the record of the targets it left: {e}"));
        }
    } else {
        summary.errors.extend(failed);
    }
}
