//! Branch ENIs: with EKS security groups for pods, the VPC CNI gives a pod an ENI of its own, a branch hung off the
//! node's trunk ENI. DescribeInstances does not list branches among the instance's ENIs, and they are not attached to
//! it, so neither the quarantine nor the IP-target lookup would see them, while their pods serve behind IP target
//! groups. They are found through the trunk's associations (DescribeTrunkInterfaceAssociations) and treated as the
//! node's own: their addresses are looked for in IP target groups, and they are quarantined and restored with it.
//!
//! Only an instance with a trunk ENI costs anything: one DescribeTrunkInterfaceAssociations and one
//! DescribeNetworkInterfaces for all trunks of a batch.

use std::collections::HashMap;

use aws_sdk_ec2::types::{Filter, NetworkInterface};

use crate::aws::CallError;

/// The interface type EC2 gives a trunk ENI.
pub const TRUNK: &str = "trunk";

/// EC2 accepts at most this many values in one filter.
const FILTER_VALUES_MAX: usize = 200;

/// Every branch ENI of these trunk ENIs, as DescribeNetworkInterfaces describes it (groups, addresses, tags), with the
/// id of the trunk it hangs off. A branch deleted between the two calls is simply absent.
pub async fn of_trunks(
    ec2: &aws_sdk_ec2::Client,
    trunks: &[String],
) -> Result<Vec<(String, NetworkInterface)>, CallError> {
    let mut trunk_of: HashMap<String, String> = HashMap::new();
    for chunk in trunks.chunks(FILTER_VALUES_MAX) {
        let mut pages = ec2
            .describe_trunk_interface_associations()
            .filters(filter("trunk-interface-association.trunk-interface-id", chunk))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| CallError::new("DescribeTrunkInterfaceAssociations", &e))?;
            for association in page.interface_associations() {
                if let (Some(branch), Some(trunk)) =
                    (association.branch_interface_id(), association.trunk_interface_id())
                    && chunk.iter().any(|t| t == trunk)
                {
                    trunk_of.insert(branch.to_owned(), trunk.to_owned());
                }
            }
        }
    }
    let mut ids: Vec<String> = trunk_of.keys().cloned().collect();
    ids.sort();
    let mut branches = Vec::new();
    for chunk in ids.chunks(FILTER_VALUES_MAX) {
        // The filter, unlike NetworkInterfaceIds, does not fail the whole call for one branch deleted meanwhile.
        let mut pages = ec2
            .describe_network_interfaces()
            .filters(filter("network-interface-id", chunk))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| CallError::new("DescribeNetworkInterfaces", &e))?;
            for eni in page.network_interfaces() {
                if let Some(trunk) = eni.network_interface_id().and_then(|id| trunk_of.get(id)) {
                    branches.push((trunk.clone(), eni.clone()));
                }
            }
        }
    }
    Ok(branches)
}

fn filter(name: &str, values: &[String]) -> Filter {
    Filter::builder().name(name).set_values(Some(values.to_vec())).build()
}
