//! What we need to know about an instance before touching anything: its VPC, its ENIs (the branch ENIs hung off its
//! trunk ENI among them) and every address they hold.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::input::InstanceId;

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
    /// On a trunk ENI whose branch ENIs (EKS security groups for pods) could not be listed: why. Their addresses were
    /// not looked for and they were not quarantined; the summary says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branches_unlisted: Option<String>,
}

/// One ENI as an EC2 answer describes it, in a function returning an Option (None without an id). DescribeInstances
/// and DescribeNetworkInterfaces give it as two SDK types whose fields read alike.
macro_rules! network_interface {
    ($eni:expr, $device_index:expr) => {{
        let eni = $eni;
        let addresses = eni
            .private_ip_addresses()
            .iter()
            .filter_map(|a| a.private_ip_address())
            .chain(eni.private_ip_address())
            .chain(eni.ipv6_addresses().iter().filter_map(|a| a.ipv6_address()));
        Some(NetworkInterface {
            id: eni.network_interface_id()?.to_owned(),
            vpc_id: eni.vpc_id().map(str::to_owned),
            device_index: $device_index,
            groups: eni
                .groups()
                .iter()
                .filter_map(|g| g.group_id())
                .map(str::to_owned)
                .collect(),
            addresses: unique_addresses(addresses),
            branches_unlisted: None,
        })
    }};
}

impl NetworkInterface {
    /// A branch ENI hung off one of the instance's trunk ENIs, as DescribeNetworkInterfaces describes it. It has no
    /// device index: it is not attached to the instance, the trunk carries it.
    pub fn branch(eni: &aws_sdk_ec2::types::NetworkInterface) -> Option<NetworkInterface> {
        network_interface!(eni, None)
    }
}

/// The addresses that parse, each once, in the order given.
fn unique_addresses<'a>(addresses: impl Iterator<Item = &'a str>) -> Vec<IpAddr> {
    let mut unique: Vec<IpAddr> = Vec::new();
    for address in addresses.filter_map(|a| a.parse::<IpAddr>().ok()) {
        if !unique.contains(&address) {
            unique.push(address);
        }
    }
    unique
}

impl Instance {
    /// Every address of every ENI: an IP target with one of these ids is this instance.
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.network_interfaces
            .iter()
            .flat_map(|eni| eni.addresses.iter().copied())
    }
}

impl Instance {
    /// What DescribeInstances said about the instance `id`.
    pub fn from_sdk(id: InstanceId, instance: &aws_sdk_ec2::types::Instance) -> Instance {
        let network_interfaces = instance
            .network_interfaces()
            .iter()
            .filter_map(|eni| network_interface!(eni, eni.attachment().and_then(|a| a.device_index())))
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
}
