//! The registration index as a fast path: what the DynamoDB index knows about the instances, found with one Query per
//! instance id and per (VPC, address), and no ELB call at all.
//!
//! The index may be stale. An entry whose target has already left costs one harmless DeregisterTargets, and the sweep
//! that runs afterwards is the check; a registration the index missed is what the sweep finds.

use std::collections::BTreeSet;

use chrono::Utc;

use super::{LocateError, LocateFuture, Located, Locator};
use crate::aws::{CallError, bounded_all};
use crate::deadline::Deadline;
use crate::input::InstanceId;
use crate::instance::Instance;
use crate::store;
use crate::table::{self, Entry, TargetKey};

/// Concurrent Query calls. DynamoDB's budget is the table's, not the account's shared ELB one.
const QUERY_CONCURRENCY: usize = 16;

pub struct Index {
    dynamodb: aws_sdk_dynamodb::Client,
    table: String,
}

impl Index {
    pub fn new(dynamodb: aws_sdk_dynamodb::Client, table: String) -> Self {
        Index { dynamodb, table }
    }
}

impl Locator for Index {
    fn name(&self) -> &'static str {
        "index"
    }

    fn locate<'a>(
        &'a self,
        instances: &'a [Instance],
        _since: chrono::DateTime<chrono::Utc>,
        deadline: Deadline,
    ) -> LocateFuture<'a> {
        Box::pin(self.known_registrations(instances, deadline))
    }
}

/// Every key under which an instance's registrations can be filed: its id, and each address of each ENI in that ENI's
/// VPC.
pub fn keys_of(instances: &[Instance]) -> Vec<(TargetKey, InstanceId)> {
    let mut keys = BTreeSet::new();
    for instance in instances {
        keys.insert((TargetKey::Instance(instance.id.clone()), instance.id.clone()));
        for eni in &instance.network_interfaces {
            let Some(vpc_id) = eni.vpc_id.as_ref().or(instance.vpc_id.as_ref()) else {
                continue;
            };
            for address in &eni.addresses {
                let key = TargetKey::Ip {
                    vpc_id: vpc_id.clone(),
                    address: *address,
                };
                keys.insert((key, instance.id.clone()));
            }
        }
    }
    keys.into_iter().collect()
}

impl Index {
    async fn known_registrations(&self, instances: &[Instance], deadline: Deadline) -> Result<Located, LocateError> {
        if deadline.passed() {
            return Ok(Located::default());
        }
        let keys = keys_of(instances);
        let answers = bounded_all(QUERY_CONCURRENCY, keys.clone(), |(key, _)| {
            let (dynamodb, table) = (self.dynamodb.clone(), self.table.clone());
            async move { store::query(&dynamodb, &table, &key.pk()).await }
        })
        .await;

        let now = Utc::now();
        let mut located = Located::default();
        let mut failures = Vec::new();
        for ((key, owner), answer) in keys.iter().zip(answers) {
            let items = match answer {
                Ok(Ok(items)) => items,
                Ok(Err(error)) => {
                    failures.push(error);
                    continue;
                }
                Err(error) => {
                    failures.push(CallError::local("Query", error));
                    continue;
                }
            };
            for item in items.iter().filter(|item| !table::is_expired(item, now)) {
                match Entry::from_item(item) {
                    Ok(entry) if &entry.key == key => located.registrations.push(entry.registration(owner)),
                    Ok(_) => {}
                    Err(error) => tracing::warn!(pk = %key.pk(), %error, "unreadable registration index item skipped"),
                }
            }
        }
        let failed = failures.len();
        if let Some(first) = failures.into_iter().next() {
            return Err(LocateError::Index {
                failed,
                lookups: keys.len(),
                first,
            });
        }
        located.registrations.sort();
        located.registrations.dedup();
        Ok(located)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instance::NetworkInterface;

    #[test]
    fn an_instance_is_looked_up_by_id_and_by_every_address_in_its_enis_vpc() {
        let eni = |vpc: Option<&str>, addresses: &[&str]| NetworkInterface {
            id: "eni-0123abcd".into(),
            vpc_id: vpc.map(str::to_owned),
            device_index: Some(0),
            groups: vec![],
            addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
            branches_unlisted: None,
        };
        let instance = Instance {
            id: InstanceId::parse("i-0123abcd").unwrap(),
            vpc_id: Some("vpc-a".into()),
            state: Some("running".into()),
            lifecycle: Some("spot".into()),
            tags: Default::default(),
            network_interfaces: vec![
                eni(None, &["10.0.0.5", "10.0.0.6"]),
                eni(Some("vpc-b"), &["10.1.0.5", "2600:1f18::5"]),
            ],
        };
        let pks: Vec<String> = keys_of(&[instance]).iter().map(|(k, _)| k.pk()).collect();
        assert_eq!(
            pks,
            vec![
                "instance#i-0123abcd",
                "ip#vpc-a#10.0.0.5",
                "ip#vpc-a#10.0.0.6",
                "ip#vpc-b#10.1.0.5",
                "ip#vpc-b#2600:1f18::5",
            ]
        );
    }
}
