//! Look the instances up before anything is touched: their VPC, ENIs, addresses, tags, state and lifecycle.

use std::collections::HashMap;

use crate::aws::CallError;
use crate::input::InstanceId;
use crate::instance::Instance;

/// EC2 accepts at most this many values in one filter.
const FILTER_VALUES_MAX: usize = 200;

/// Describe the given instances with as few calls as EC2 allows. Ids EC2 does not know are simply absent from the map:
/// the instance-id filter, unlike the InstanceIds parameter, does not fail the whole call for one unknown id.
pub async fn describe_instances(
    ec2: &aws_sdk_ec2::Client,
    ids: &[InstanceId],
) -> Result<HashMap<InstanceId, Instance>, CallError> {
    let mut found = HashMap::new();
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
                    found.insert(id.clone(), Instance::from_sdk(id, instance));
                }
            }
        }
    }
    Ok(found)
}

/// One instance, or None when EC2 does not know it.
pub async fn describe_one(ec2: &aws_sdk_ec2::Client, id: &InstanceId) -> Result<Option<Instance>, CallError> {
    Ok(describe_instances(ec2, std::slice::from_ref(id)).await?.remove(id))
}
