//! What we need to know about an instance before touching anything: its VPC, its ENIs and every address they hold.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::aws_error;
use crate::input::InstanceId;

/// Remove tag keys from an EC2 resource (an instance or an ENI). The error is EC2's, explained; callers say what
/// the tags were for.
pub async fn delete_tags(ec2: &aws_sdk_ec2::Client, resource: &str, keys: Vec<String>) -> Result<(), String> {
    let tags = keys
        .into_iter()
        .map(|key| aws_sdk_ec2::types::Tag::builder().key(key).build())
        .collect();
    ec2.delete_tags()
        .resources(resource)
        .set_tags(Some(tags))
        .send()
        .await
        .map(|_| ())
        .map_err(|e| aws_error::explain(&e))
}

/// EC2 accepts at most this many values in one filter.
const FILTER_VALUES_MAX: usize = 200;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub id: InstanceId,
    pub vpc_id: Option<String>,
    pub state: Option<String>,
    /// `spot`, `scheduled`, `capacity-block`; absent for on-demand.
    pub lifecycle: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub network_interfaces: Vec<NetworkInterface>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetworkInterface {
    pub id: String,
    pub vpc_id: Option<String>,
    pub device_index: Option<i32>,
    pub groups: Vec<String>,
    /// Primary and secondary private IPv4 addresses, then IPv6 addresses.
    pub addresses: Vec<IpAddr>,
}

impl Instance {
    /// Every address of every ENI: an IP target with one of these ids is this instance.
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.network_interfaces
            .iter()
            .flat_map(|eni| eni.addresses.iter().copied())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("DescribeInstances failed: {0}")]
pub struct DescribeError(pub String);

/// Describe the given instances with as few calls as EC2 allows. Ids EC2 does not know are simply absent from the map:
/// the instance-id filter, unlike the InstanceIds parameter, does not fail the whole call for one unknown id.
pub async fn describe_instances(
    ec2: &aws_sdk_ec2::Client,
    ids: &[InstanceId],
) -> Result<HashMap<InstanceId, Instance>, DescribeError> {
    let mut found = HashMap::new();
    for chunk in ids.chunks(FILTER_VALUES_MAX) {
        let filter = aws_sdk_ec2::types::Filter::builder()
            .name("instance-id")
            .set_values(Some(chunk.iter().map(|id| id.as_str().to_owned()).collect()))
            .build();
        let mut pages = ec2.describe_instances().filters(filter).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| DescribeError(aws_error::explain(&e)))?;
            for instance in page.reservations().iter().flat_map(|r| r.instances()) {
                // Anything EC2 returns that we did not ask for, or cannot parse, is ignored.
                let Some(id) = instance.instance_id().and_then(|id| InstanceId::parse(id).ok()) else {
                    continue;
                };
                if chunk.contains(&id) {
                    found.insert(id.clone(), from_sdk(id, instance));
                }
            }
        }
    }
    Ok(found)
}

fn from_sdk(id: InstanceId, instance: &aws_sdk_ec2::types::Instance) -> Instance {
    let network_interfaces = instance
        .network_interfaces()
        .iter()
        .filter_map(|eni| {
            let addresses = eni
                .private_ip_addresses()
                .iter()
                .filter_map(|a| a.private_ip_address())
                .chain(eni.private_ip_address())
                .chain(eni.ipv6_addresses().iter().filter_map(|a| a.ipv6_address()))
                .filter_map(|a| a.parse::<IpAddr>().ok());
            let mut unique: Vec<IpAddr> = Vec::new();
            for address in addresses {
                if !unique.contains(&address) {
                    unique.push(address);
                }
            }
            Some(NetworkInterface {
                id: eni.network_interface_id()?.to_owned(),
                vpc_id: eni.vpc_id().map(str::to_owned),
                device_index: eni.attachment().and_then(|a| a.device_index()),
                groups: eni
                    .groups()
                    .iter()
                    .filter_map(|g| g.group_id())
                    .map(str::to_owned)
                    .collect(),
                addresses: unique,
            })
        })
        .collect();
    Instance {
        id,
        vpc_id: instance.vpc_id().map(str::to_owned),
        state: instance.state().and_then(|s| s.name()).map(|s| s.as_str().to_owned()),
        lifecycle: instance.instance_lifecycle().map(|l| l.as_str().to_owned()),
        tags: instance
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?.to_owned(), t.value().unwrap_or_default().to_owned())))
            .collect(),
        network_interfaces,
    }
}
