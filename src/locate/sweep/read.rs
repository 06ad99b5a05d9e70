//! Reading target groups: which ones could hold an instance of a VPC, and each one's whole target list.

use aws_sdk_elasticloadbalancingv2::types::TargetGroup;
use chrono::{DateTime, Utc};

use crate::aws::CallError;
use crate::registration::TargetState;
use crate::table::GroupInfo;

/// DescribeTargetGroups returns at most 400 per page.
const PAGE_SIZE: i32 = 400;

/// One target as DescribeTargetHealth listed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupTarget {
    pub id: String,
    pub port: Option<i32>,
    pub zone: Option<String>,
    pub state: Option<TargetState>,
    /// ELB's reason code for that state, when it gave one (`Target.ResponseCodeMismatch`, ...).
    pub reason: Option<String>,
}

/// What reading one group gave.
#[derive(Clone, Debug, PartialEq)]
pub enum GroupAnswer {
    /// Its whole target list.
    Targets(Vec<GroupTarget>),
    /// Deleted since it was listed: nothing can be registered in it.
    Gone,
    /// Not read, and why (the service's error, or the deadline).
    Failed(String),
}

/// One group, and what it held when it was read.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupRead {
    pub group: GroupInfo,
    /// When the call was sent: everything registered before then is in `answer`.
    pub read_at: DateTime<Utc>,
    pub answer: GroupAnswer,
}

/// Read one group's whole target list. The call waits at the connector for its share of the ELB budget; a throttle
/// is retried there until the invocation's deadline, so a group still throttled then is reported as not read.
pub async fn read_group(elb: &aws_sdk_elasticloadbalancingv2::Client, group: GroupInfo) -> GroupRead {
    let read_at = Utc::now();
    let answer = elb
        .describe_target_health()
        .target_group_arn(&group.arn)
        .send()
        .await
        .map_err(|e| CallError::new("DescribeTargetHealth", &e));
    let found = match answer {
        Ok(health) => GroupAnswer::Targets(
            health
                .target_health_descriptions()
                .iter()
                .filter_map(|d| {
                    let target = d.target()?;
                    let health = d.target_health();
                    Some(GroupTarget {
                        id: target.id()?.to_owned(),
                        port: target.port(),
                        zone: target.availability_zone().map(str::to_owned),
                        state: health.and_then(|h| h.state()).cloned().map(TargetState::Health),
                        reason: health.and_then(|h| h.reason()).map(|r| r.as_str().to_owned()),
                    })
                })
                .collect(),
        ),
        Err(e) if e.is("TargetGroupNotFound") => GroupAnswer::Gone,
        Err(e) => GroupAnswer::Failed(e.reason()),
    };
    GroupRead {
        group,
        read_at,
        answer: found,
    }
}

/// Every target group of the account and region, page by page; the error is the service's, explained.
pub async fn list_target_groups(elb: &aws_sdk_elasticloadbalancingv2::Client) -> Result<Vec<TargetGroup>, CallError> {
    let mut groups = Vec::new();
    let mut pages = elb
        .describe_target_groups()
        .page_size(PAGE_SIZE)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| CallError::new("DescribeTargetGroups", &e))?;
        groups.extend(page.target_groups().iter().cloned());
    }
    Ok(groups)
}
