//! The EC2 tags this function keeps on instances and ENIs (its records and its claims): read them, write them,
//! remove them. Callers say what the tags were for.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{Filter, Tag};

use crate::aws::CallError;

/// Every tag of each resource, by resource and key, from one DescribeTags.
pub async fn read(
    ec2: &aws_sdk_ec2::Client,
    resources: Vec<String>,
) -> Result<BTreeMap<String, BTreeMap<String, String>>, CallError> {
    let filter = Filter::builder()
        .name("resource-id")
        .set_values(Some(resources))
        .build();
    let mut pages = ec2.describe_tags().filters(filter).into_paginator().send();
    let mut found: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| CallError::new("DescribeTags", &e))?;
        for tag in page.tags() {
            if let (Some(resource), Some(key)) = (tag.resource_id(), tag.key()) {
                let value = tag.value().unwrap_or_default().to_owned();
                found
                    .entry(resource.to_owned())
                    .or_default()
                    .insert(key.to_owned(), value);
            }
        }
    }
    Ok(found)
}

/// Write (or overwrite) tags on one resource.
pub async fn write(ec2: &aws_sdk_ec2::Client, resource: &str, tags: Vec<Tag>) -> Result<(), CallError> {
    ec2.create_tags()
        .resources(resource)
        .set_tags(Some(tags))
        .send()
        .await
        .map(|_| ())
        .map_err(|e| CallError::new("CreateTags", &e))
}

/// Remove tag keys from one resource.
pub async fn delete(ec2: &aws_sdk_ec2::Client, resource: &str, keys: Vec<String>) -> Result<(), CallError> {
    let tags = keys.into_iter().map(|key| Tag::builder().key(key).build()).collect();
    ec2.delete_tags()
        .resources(resource)
        .set_tags(Some(tags))
        .send()
        .await
        .map(|_| ())
        .map_err(|e| CallError::new("DeleteTags", &e))
}

/// A tag with a value.
pub fn tag(key: &str, value: &str) -> Tag {
    Tag::builder().key(key).value(value).build()
}

/// Tags as a map, the way `read` returns them (for what DescribeNetworkInterfaces and DescribeInstances carry).
pub fn to_map(tags: &[Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| Some((t.key()?.to_owned(), t.value().unwrap_or_default().to_owned())))
        .collect()
}
