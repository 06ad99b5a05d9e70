//! The option to put a restored instance back where it was (`REREGISTER_ON_RESTORE=true`, off by default). The
//! cleanup of an instance that may come back (Spot `stop` or `hibernate`, anything but `terminate`) records on the
//! instance the targets it took out of their groups (`records::left_targets`); a restore registers them again and
//! removes the record.
//!
//! An IP target goes back only if the address is still one of the instance's: a pod IP that moved elsewhere while
//! the instance was stopped must not receive this group's traffic.

use std::collections::BTreeMap;
use std::net::IpAddr;

use aws_sdk_elasticloadbalancingv2::types::TargetDescription;

use super::tags;
use crate::aws::{CallError, bounded_all};
use crate::changes::TargetRestore;
use crate::input::InstanceId;
use crate::registration::LeftTarget;

/// Which recorded targets may go back: instance targets of this instance, and IP targets whose address it still has.
pub fn plan(
    instance: &InstanceId,
    addresses: &[IpAddr],
    recorded: Vec<LeftTarget>,
) -> (Vec<LeftTarget>, Vec<TargetRestore>) {
    let mut go_back = Vec::new();
    let mut skipped = Vec::new();
    for target in recorded {
        let reason = if target.target_id.starts_with("i-") {
            (target.target_id != instance.as_str()).then_some("the target is another instance")
        } else {
            match target.target_id.parse::<IpAddr>() {
                Ok(ip) if addresses.contains(&ip) => None,
                Ok(_) => Some("the address is no longer one of the instance's"),
                Err(_) => Some("the target is neither this instance nor an IP address"),
            }
        };
        match reason {
            None => go_back.push(target),
            Some(reason) => skipped.push(TargetRestore {
                target,
                registered: false,
                reason: Some(reason.into()),
            }),
        }
    }
    (go_back, skipped)
}

/// Register the targets again, one RegisterTargets call per group.
pub async fn register_all(
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    targets: Vec<LeftTarget>,
) -> Vec<TargetRestore> {
    let mut by_group: BTreeMap<String, Vec<LeftTarget>> = BTreeMap::new();
    for target in targets {
        by_group
            .entry(target.target_group_arn.clone())
            .or_default()
            .push(target);
    }
    let groups: Vec<(String, Vec<LeftTarget>)> = by_group.into_iter().collect();
    let calls = bounded_all(4, groups.clone(), |(arn, targets)| {
        let descriptions = targets
            .iter()
            .map(|t| {
                TargetDescription::builder()
                    .id(&t.target_id)
                    .set_port(t.port)
                    .set_availability_zone(t.availability_zone.clone())
                    .build()
            })
            .collect();
        let request = elb
            .register_targets()
            .target_group_arn(&arn)
            .set_targets(Some(descriptions))
            .send();
        async move {
            request
                .await
                .map(|_| ())
                .map_err(|e| CallError::new("RegisterTargets", &e))
        }
    })
    .await;
    // A call that panicked is a failed call for every target of its group.
    groups
        .into_iter()
        .zip(calls)
        .flat_map(|((_, targets), call)| {
            let result = call.unwrap_or_else(|e| Err(CallError::local("RegisterTargets", e)));
            targets.into_iter().map(move |target| TargetRestore {
                target,
                registered: result.is_ok(),
                reason: result.as_ref().err().map(CallError::to_string),
            })
        })
        .collect()
}

/// Remove the record once every target it names is dealt with.
pub async fn forget(ec2: &aws_sdk_ec2::Client, instance: &InstanceId, keys: Vec<String>) -> Result<(), CallError> {
    tags::delete(ec2, instance.as_str(), keys).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(group: &str, id: &str, port: Option<i32>, zone: Option<&str>) -> LeftTarget {
        LeftTarget {
            target_group_arn: format!("arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/{group}"),
            target_id: id.into(),
            port,
            availability_zone: zone.map(str::to_owned),
        }
    }

    #[test]
    fn only_this_instance_and_its_own_addresses_go_back() {
        let me = InstanceId::parse("i-0123abcd").unwrap();
        let addresses: Vec<IpAddr> = vec!["10.0.2.24".parse().unwrap()];
        let (go_back, skipped) = plan(
            &me,
            &addresses,
            vec![
                target("web/1", "i-0123abcd", Some(30080), None),
                target("pods/2", "10.0.2.24", Some(8080), None),
                target("pods/2", "10.0.9.9", Some(8080), None),
                target("web/1", "i-9999aaaa", Some(30080), None),
            ],
        );
        let ids: Vec<&str> = go_back.iter().map(|t| t.target_id.as_str()).collect();
        assert_eq!(ids, ["i-0123abcd", "10.0.2.24"]);
        let skipped: Vec<&str> = skipped.iter().map(|t| t.target.target_id.as_str()).collect();
        assert_eq!(skipped, ["10.0.9.9", "i-9999aaaa"]);
    }
}
