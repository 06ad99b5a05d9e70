//! Look the instances up before anything is touched: their VPC, ENIs (with the branch ENIs of a trunk ENI), addresses,
//! tags, state and lifecycle.

use std::collections::HashMap;

use crate::aws::CallError;
use crate::input::InstanceId;
use crate::instance::{Instance, NetworkInterface};
use crate::steps::branches;

/// EC2 accepts at most this many values in one filter.
const FILTER_VALUES_MAX: usize = 200;

/// Describe the given instances with as few calls as EC2 allows. Ids EC2 does not know are simply absent from the map:
/// the instance-id filter, unlike the InstanceIds parameter, does not fail the whole call for one unknown id. An
/// instance with a trunk ENI gets the branch ENIs hung off it among its ENIs (`branches`).
pub async fn describe_instances(
    ec2: &aws_sdk_ec2::Client,
    ids: &[InstanceId],
) -> Result<HashMap<InstanceId, Instance>, CallError> {
    let mut found = HashMap::new();
    // Each trunk ENI, and the instance it belongs to.
    let mut trunks: Vec<(String, InstanceId)> = Vec::new();
    for chunk in ids.chunks(FILTER_VALUES_MAX) {
        let filter = aws_sdk_ec2::types::Filter::builder()
            .name("instance-id")
            .set_values(Some(chunk.iter().map(|id| id.as_str().to_owned()).collect()))
            .build();
        let mut pages = ec2.describe_instances().filters(filter).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| CallError::new("DescribeInstances", &e))?;
            for instance in page.reservations().iter().flat_map(|r| r.instances()) {
                // Anything EC2 returns that we did not ask for, or cannot parse, is ignored.
                let Some(id) = instance.instance_id().and_then(|id| InstanceId::parse(id).ok()) else {
                    continue;
                };
                if chunk.contains(&id) {
                    let trunk_ids = instance
                        .network_interfaces()
                        .iter()
                        .filter(|eni| eni.interface_type() == Some(branches::TRUNK))
                        .filter_map(|eni| eni.network_interface_id());
                    trunks.extend(trunk_ids.map(|trunk| (trunk.to_owned(), id.clone())));
                    found.insert(id.clone(), Instance::from_sdk(id, instance));
                }
            }
        }
    }
    if !trunks.is_empty() {
        add_branches(ec2, &trunks, &mut found).await;
    }
    Ok(found)
}

/// Give each instance the branch ENIs of its trunk ENIs. When they cannot be listed, the cleanup goes on with the ENIs
/// the instance has, and each trunk says why its branches are missing.
async fn add_branches(
    ec2: &aws_sdk_ec2::Client,
    trunks: &[(String, InstanceId)],
    found: &mut HashMap<InstanceId, Instance>,
) {
    let ids: Vec<String> = trunks.iter().map(|(trunk, _)| trunk.clone()).collect();
    let owner: HashMap<&str, &InstanceId> = trunks.iter().map(|(trunk, id)| (trunk.as_str(), id)).collect();
    match branches::of_trunks(ec2, &ids).await {
        Ok(listed) => {
            for (trunk, eni) in &listed {
                let (Some(instance), Some(branch)) = (
                    owner.get(trunk.as_str()).and_then(|id| found.get_mut(*id)),
                    NetworkInterface::branch(eni),
                ) else {
                    continue;
                };
                if !instance.network_interfaces.iter().any(|e| e.id == branch.id) {
                    instance.network_interfaces.push(branch);
                }
            }
            tracing::info!(
                step = "describe",
                trunks = ids.len(),
                branches = listed.len(),
                "branch ENIs found"
            );
        }
        Err(error) => {
            let why = format!(
                "its branch ENIs (EKS security groups for pods) could not be listed, so their addresses were not \
                 looked for in IP target groups and they were not quarantined: {error}"
            );
            tracing::warn!(step = "describe", error = %error, "branch ENIs not listed");
            for instance in found.values_mut() {
                for eni in instance
                    .network_interfaces
                    .iter_mut()
                    .filter(|e| owner.contains_key(e.id.as_str()))
                {
                    eni.branches_unlisted = Some(why.clone());
                }
            }
        }
    }
}

/// One instance, or None when EC2 does not know it.
pub async fn describe_one(ec2: &aws_sdk_ec2::Client, id: &InstanceId) -> Result<Option<Instance>, CallError> {
    Ok(describe_instances(ec2, std::slice::from_ref(id)).await?.remove(id))
}

/// Branch ENIs (EKS security groups for pods), against the requests the SDK really builds: moto has no trunk
/// associations, so EC2's answers are scripted here.
#[cfg(test)]
mod branches_of_a_trunk {
    use std::collections::HashMap;
    use std::net::IpAddr;

    use super::describe_instances;
    use crate::input::InstanceId;
    use crate::steps::quarantine;
    use crate::steps::records::Signing;
    use crate::testing::*;
    use aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput;
    use aws_sdk_ec2::operation::describe_network_interfaces::{
        DescribeNetworkInterfacesInput, DescribeNetworkInterfacesOutput,
    };
    use aws_sdk_ec2::operation::describe_trunk_interface_associations::{
        DescribeTrunkInterfaceAssociationsInput, DescribeTrunkInterfaceAssociationsOutput,
    };
    use aws_sdk_ec2::types::{
        GroupIdentifier, Instance, InstanceLifecycleType, InstanceNetworkInterface, InstanceNetworkInterfaceAttachment,
        NetworkInterface, NetworkInterfacePrivateIpAddress, NetworkInterfaceType, Reservation,
        TrunkInterfaceAssociation,
    };
    use aws_smithy_mocks::{Rule, mock};

    const PRIMARY: &str = "eni-0aaa0000000000001";
    const TRUNK: &str = "eni-0777000000000trnk";
    const BRANCH_A: &str = "eni-0bbb00000000000a1";
    const BRANCH_B: &str = "eni-0bbb00000000000b2";
    const POD_SG: &str = "sg-0dddd000000000004";

    /// A Spot node with its primary ENI and the trunk ENI the VPC CNI attached for security groups for pods.
    fn node() -> DescribeInstancesOutput {
        let attached = |id: &str, index: i32, kind: &str, ip: &str| {
            InstanceNetworkInterface::builder()
                .network_interface_id(id)
                .vpc_id(VPC)
                .interface_type(kind)
                .attachment(
                    InstanceNetworkInterfaceAttachment::builder()
                        .device_index(index)
                        .build(),
                )
                .groups(GroupIdentifier::builder().group_id(WEB_SG).build())
                .private_ip_address(ip)
                .build()
        };
        let instance = Instance::builder()
            .instance_id(INSTANCE)
            .vpc_id(VPC)
            .instance_lifecycle(InstanceLifecycleType::Spot)
            .network_interfaces(attached(PRIMARY, 0, "interface", PRIMARY_IP))
            .network_interfaces(attached(TRUNK, 1, "trunk", "10.0.1.50"))
            .build();
        DescribeInstancesOutput::builder()
            .reservations(Reservation::builder().instances(instance).build())
            .build()
    }

    fn branch(id: &str, ip: &str) -> NetworkInterface {
        NetworkInterface::builder()
            .network_interface_id(id)
            .vpc_id(VPC)
            .interface_type(NetworkInterfaceType::Branch)
            .groups(GroupIdentifier::builder().group_id(POD_SG).build())
            .private_ip_address(ip)
            .private_ip_addresses(
                NetworkInterfacePrivateIpAddress::builder()
                    .private_ip_address(ip)
                    .primary(true)
                    .build(),
            )
            .build()
    }

    fn association(branch: &str, trunk: &str) -> TrunkInterfaceAssociation {
        TrunkInterfaceAssociation::builder()
            .branch_interface_id(branch)
            .trunk_interface_id(trunk)
            .vlan_id(1)
            .build()
    }

    struct Ec2 {
        rules: Vec<Rule>,
        associations: Sent<DescribeTrunkInterfaceAssociationsInput>,
        described: Sent<DescribeNetworkInterfacesInput>,
    }

    /// EC2 knows the node, two branches on its trunk, and a third on some other node's trunk; DescribeTrunkInterface-
    /// Associations answers `refusal` instead when given.
    fn ec2(refusal: Option<String>) -> Ec2 {
        let (associations, described) = (Sent::new(), Sent::new());
        let trunk_rule = {
            let asked = associations.clone();
            let rule = mock!(aws_sdk_ec2::Client::describe_trunk_interface_associations).match_requests(
                move |input: &DescribeTrunkInterfaceAssociationsInput| {
                    asked.record(input);
                    true
                },
            );
            match refusal {
                Some(body) => rule.sequence().http_status(403, Some(body)).repeatedly().build(),
                None => rule.then_output(|| {
                    DescribeTrunkInterfaceAssociationsOutput::builder()
                        .interface_associations(association(BRANCH_A, TRUNK))
                        .interface_associations(association(BRANCH_B, TRUNK))
                        .interface_associations(association("eni-0ccc0000000000other", "eni-0999000000000othr"))
                        .build()
                }),
            }
        };
        let enis = {
            let asked = described.clone();
            mock!(aws_sdk_ec2::Client::describe_network_interfaces).then_compute_output(
                move |input: &DescribeNetworkInterfacesInput| {
                    asked.record(input);
                    DescribeNetworkInterfacesOutput::builder()
                        .network_interfaces(branch(BRANCH_A, "10.0.1.61"))
                        .network_interfaces(branch(BRANCH_B, "10.0.1.62"))
                        .build()
                },
            )
        };
        let instances = mock!(aws_sdk_ec2::Client::describe_instances).then_output(node);
        Ec2 {
            rules: vec![instances, trunk_rule, enis],
            associations,
            described,
        }
    }

    fn client(ec2: &Ec2, more: &[&Rule]) -> aws_sdk_ec2::Client {
        let mut rules: Vec<&Rule> = ec2.rules.iter().collect();
        rules.extend(more);
        ec2_client(&rules)
    }

    /// The branches of the node's trunk are the node's ENIs: their addresses are the node's (so an IP target on a
    /// pod's address is found as the node's), and the quarantine walls them off with the rest, each with its record.
    #[tokio::test]
    async fn branches_of_the_trunk_are_the_nodes_own() {
        let ec2 = ec2(None);
        let writes = Ec2Writes::succeeding();
        let client = client(&ec2, &writes.rules());
        let id = InstanceId::parse(INSTANCE).unwrap();

        let mut found = describe_instances(&client, std::slice::from_ref(&id)).await.unwrap();
        let node = found.remove(&id).unwrap();

        let ids: Vec<&str> = node.network_interfaces.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, [PRIMARY, TRUNK, BRANCH_A, BRANCH_B]);
        let branch = &node.network_interfaces[2];
        assert_eq!(
            (branch.device_index, branch.groups.clone()),
            (None, vec![POD_SG.to_owned()])
        );
        let addresses: Vec<IpAddr> = node.addresses().collect();
        for pod in ["10.0.1.61", "10.0.1.62"] {
            assert!(addresses.contains(&pod.parse().unwrap()), "{pod} in {addresses:?}");
        }
        // Asked about this node's trunk only, then about exactly its two branches.
        let asked = ec2.associations.all();
        assert_eq!(asked.len(), 1);
        assert_eq!(
            asked[0].filters()[0].name(),
            Some("trunk-interface-association.trunk-interface-id")
        );
        assert_eq!(asked[0].filters()[0].values(), [TRUNK]);
        let described = ec2.described.all();
        assert_eq!(described.len(), 1);
        assert_eq!(described[0].filters()[0].name(), Some("network-interface-id"));
        assert_eq!(described[0].filters()[0].values(), [BRANCH_A, BRANCH_B]);

        let groups: HashMap<String, String> = quarantine_groups();
        let changes =
            quarantine::quarantine_enis(&client, &node, &groups, Some(&HashMap::new()), &Signing::default()).await;
        let modified: Vec<String> = writes
            .modifications
            .all()
            .iter()
            .map(|m| m.network_interface_id().unwrap_or_default().to_owned())
            .collect();
        for branch in [BRANCH_A, BRANCH_B] {
            assert!(
                modified.iter().any(|m| m == branch),
                "{branch} quarantined: {modified:?}"
            );
            let change = changes.iter().find(|c| c.network_interface_id == branch).unwrap();
            assert_eq!(change.original_groups.as_deref(), Some(&[POD_SG.to_owned()][..]));
        }
        assert_eq!(modified.len(), 4, "every ENI, the branches among them: {modified:?}");
        assert!(changes.iter().all(|c| c.warning.is_none()), "{changes:?}");
    }

    /// When the branches cannot be listed, the cleanup goes on with the ENIs the instance has, and the trunk's change
    /// says, for the summary's warnings, that its branches were neither looked for nor quarantined.
    #[tokio::test]
    async fn branches_that_cannot_be_listed_are_reported_with_the_trunk() {
        let denied = ec2_error(
            "UnauthorizedOperation",
            "You are not authorized to perform this operation.",
        );
        let ec2 = ec2(Some(denied));
        let writes = Ec2Writes::succeeding();
        let client = client(&ec2, &writes.rules());
        let id = InstanceId::parse(INSTANCE).unwrap();

        let node = describe_instances(&client, std::slice::from_ref(&id))
            .await
            .unwrap()
            .remove(&id)
            .unwrap();

        let ids: Vec<&str> = node.network_interfaces.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, [PRIMARY, TRUNK]);
        assert!(ec2.described.all().is_empty(), "no branch to describe");
        let changes = quarantine::quarantine_enis(
            &client,
            &node,
            &quarantine_groups(),
            Some(&HashMap::new()),
            &Signing::default(),
        )
        .await;
        let trunk = changes.iter().find(|c| c.network_interface_id == TRUNK).unwrap();
        let warning = trunk.warning.as_deref().unwrap_or_default();
        assert!(
            warning.contains("branch ENIs") && warning.contains("UnauthorizedOperation"),
            "{warning}"
        );
        assert!(
            changes
                .iter()
                .find(|c| c.network_interface_id == PRIMARY)
                .unwrap()
                .warning
                .is_none()
        );
        assert_eq!(
            writes.modifications.all().len(),
            2,
            "both attached ENIs are still quarantined"
        );
    }
}
