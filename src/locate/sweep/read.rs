//! Reading target groups: which ones could hold an instance of a VPC, and each one's whole target list. The calls
//! take their turn from this container's share of the account's Describe* budget (`Pace`), run concurrently but
//! bounded, and go through the ELB client's adaptive retry. A group still throttled after that is read again after a
//! pause, as long as the deadline allows: giving it up would leave the instance registered there.

use aws_sdk_elasticloadbalancingv2::types::{TargetGroup, TargetTypeEnum};
use chrono::{DateTime, Utc};

use crate::aws::{CallError, Pace, bounded_all};
use crate::deadline::{Deadline, Rounds};
use crate::registration::TargetKind;

/// DescribeTargetGroups returns at most 400 per page.
const PAGE_SIZE: i32 = 400;

/// A target group to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub arn: String,
    pub name: String,
    pub kind: TargetKind,
    pub vpc_id: Option<String>,
}

impl Candidate {
    /// An instance or IP group, as DescribeTargetGroups lists it; None for Lambda and ALB groups, which cannot hold
    /// an instance.
    pub fn of(group: &TargetGroup) -> Option<Self> {
        let kind = match group.target_type() {
            Some(TargetTypeEnum::Ip) => TargetKind::Ip,
            Some(TargetTypeEnum::Instance) => TargetKind::Instance,
            _ => return None,
        };
        Some(Candidate {
            arn: group.target_group_arn()?.to_owned(),
            name: group.target_group_name().unwrap_or_default().to_owned(),
            kind,
            vpc_id: group.vpc_id().map(str::to_owned),
        })
    }
}

/// One target as DescribeTargetHealth listed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub id: String,
    pub port: Option<i32>,
    pub zone: Option<String>,
    /// `healthy`, `initial`, `draining`, `unused`, ...
    pub state: Option<String>,
}

/// What reading one group gave.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Its whole target list.
    Targets(Vec<Seen>),
    /// Deleted since it was listed: nothing can be registered in it.
    Gone,
    /// Not read, and why (the service's error, or the deadline).
    Failed(String),
}

/// One group, and what it held when it was read.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupRead {
    pub candidate: Candidate,
    /// When the call was sent: everything registered before then is in `outcome`.
    pub read_at: DateTime<Utc>,
    pub outcome: Outcome,
}

/// Reads groups for a sweep.
#[derive(Clone, Debug)]
pub struct Reader {
    pub elb: aws_sdk_elasticloadbalancingv2::Client,
    pub concurrency: usize,
    pub pace: Pace,
}

impl Reader {
    /// Read every candidate; one answer each, in order. Each read is also given to `hand` as soon as it comes back,
    /// before the others have (a sweep hands its registrations over as they are found: `found::Found`).
    pub async fn read<H>(&self, candidates: Vec<Candidate>, deadline: Deadline, hand: H) -> Vec<GroupRead>
    where
        H: Fn(&GroupRead) + Clone + Send + 'static,
    {
        let mut answers: Vec<Option<GroupRead>> = vec![None; candidates.len()];
        let mut pending: Vec<(usize, Candidate)> = candidates.into_iter().enumerate().collect();
        let mut rounds = Rounds::new(deadline);
        loop {
            let again = rounds.start();
            let round = bounded_all(self.concurrency.max(1), pending.clone(), |(index, candidate)| {
                let (elb, pace, hand) = (self.elb.clone(), self.pace.clone(), hand.clone());
                async move {
                    let answer = read_one(&elb, &pace, candidate, deadline).await;
                    hand(&answer.0);
                    (index, answer)
                }
            })
            .await;
            let mut throttled = Vec::new();
            for (answer, (index, candidate)) in round.into_iter().zip(pending) {
                match answer {
                    Ok((_, (read, true))) if again => {
                        answers[index] = Some(read);
                        throttled.push((index, candidate));
                    }
                    Ok((_, (read, _))) => answers[index] = Some(read),
                    // The call's task died: reported like any failed call.
                    Err(e) => {
                        answers[index] = Some(GroupRead {
                            candidate,
                            read_at: Utc::now(),
                            outcome: Outcome::Failed(e.to_string()),
                        })
                    }
                }
            }
            if throttled.is_empty() {
                break;
            }
            rounds.pause("sweep", throttled.len()).await;
            pending = throttled;
        }
        answers.into_iter().flatten().collect()
    }
}

/// Read one group; true when it was throttled (and may be read again).
async fn read_one(
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    pace: &Pace,
    candidate: Candidate,
    deadline: Deadline,
) -> (GroupRead, bool) {
    // Checked once a turn is held, so calls queued behind the budget also stop at the deadline.
    pace.acquire().await;
    let read_at = Utc::now();
    if deadline.passed() {
        let outcome = Outcome::Failed("not checked: out of time before the deadline".into());
        return (
            GroupRead {
                candidate,
                read_at,
                outcome,
            },
            false,
        );
    }
    let answer = elb
        .describe_target_health()
        .target_group_arn(&candidate.arn)
        .send()
        .await
        .map_err(|e| CallError::new("DescribeTargetHealth", &e));
    let (outcome, throttled) = match answer {
        Ok(health) => {
            let seen = health
                .target_health_descriptions()
                .iter()
                .filter_map(|d| {
                    let target = d.target()?;
                    Some(Seen {
                        id: target.id()?.to_owned(),
                        port: target.port(),
                        zone: target.availability_zone().map(str::to_owned),
                        state: d.target_health().and_then(|h| h.state()).map(|s| s.as_str().to_owned()),
                    })
                })
                .collect();
            (Outcome::Targets(seen), false)
        }
        Err(e) if e.is("TargetGroupNotFound") => (Outcome::Gone, false),
        Err(e) => {
            let throttled = e.is_throttling();
            (Outcome::Failed(e.reason()), throttled)
        }
    };
    (
        GroupRead {
            candidate,
            read_at,
            outcome,
        },
        throttled,
    )
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
