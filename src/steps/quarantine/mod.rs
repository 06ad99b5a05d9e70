//! Move every ENI of the instance onto the quarantine security group, signing the groups it had.
//!
//! ModifyInstanceAttribute is not used: it only covers the primary ENI and fails on instances with several. Each ENI
//! is changed on its own with ModifyNetworkInterfaceAttribute, after its original groups are written to a tag on the
//! ENI, so that a later restore can put them back even if the summary is lost. No tag, no change.
//!
//! A security group change does not cut connections the VPC is already tracking; see docs/how-it-works.md.
//!
//! `groups` finds the quarantine group of each VPC; `record` decides what becomes of the record an ENI carries, and
//! writes a new one.

mod groups;
mod record;

use std::collections::HashMap;

use crate::aws::{CallError, bounded_all};
use crate::changes::{EniChange, EniStatus};
use crate::instance::{Instance, NetworkInterface};
use crate::steps::records::Signing;
use crate::steps::records::{GroupsRecord, Trust};
pub use groups::{QuarantineGroupCache, QuarantineGroups, SecurityGroupId};
use record::{Plan, Record, plan_record, write_record};

/// Quarantine every ENI of the instance, all at once. ENIs are independent: one failing does not stop the others.
/// `records` is what `records::recorded_groups` returned.
pub async fn quarantine_enis(
    ec2: &aws_sdk_ec2::Client,
    instance: &Instance,
    groups: &QuarantineGroups,
    records: Option<&HashMap<String, GroupsRecord>>,
    signing: &Signing,
) -> Vec<EniChange> {
    let enis = &instance.network_interfaces;
    let changes = bounded_all(enis.len(), enis.iter().cloned(), |eni| {
        let target = Target::of(instance, &eni, groups, records);
        let (ec2, signing, instance) = (ec2.clone(), signing.clone(), instance.id.to_string());
        async move { quarantine_one(&ec2, eni, target, &signing, &instance).await }
    })
    .await;
    enis.iter()
        .zip(changes)
        .map(|(eni, change)| change.unwrap_or_else(|e| unchanged(eni, instance.vpc_id.clone(), &e.to_string())))
        .collect()
}

/// What a quarantine would do to every ENI of the instance (a dry run): nothing is written.
pub fn plan(
    instance: &Instance,
    groups: &QuarantineGroups,
    records: Option<&HashMap<String, GroupsRecord>>,
) -> Vec<EniChange> {
    instance
        .network_interfaces
        .iter()
        .map(|eni| {
            let target = Target::of(instance, eni, groups, records);
            let mut change = target.start(eni);
            if let Record::Known(stored) = &target.record {
                change.original_groups = Some(stored.groups.clone());
            }
            let Some(quarantine) = target.ready(&mut change, eni) else {
                return change;
            };
            change.status = EniStatus::WouldQuarantine;
            change.original_groups.get_or_insert_with(|| eni.groups.clone());
            change.groups_after = vec![quarantine];
            change
        })
        .collect()
}

/// Every ENI of the instance reported as not changed because of `error`.
pub fn all_unchanged(instance: &Instance, error: &str) -> Vec<EniChange> {
    let vpc = instance.vpc_id.clone();
    instance
        .network_interfaces
        .iter()
        .map(|eni| unchanged(eni, vpc.clone(), error))
        .collect()
}

/// An ENI reported as not changed because of `error`.
pub fn unchanged(eni: &NetworkInterface, vpc_id: Option<String>, error: &str) -> EniChange {
    EniChange {
        network_interface_id: eni.id.clone(),
        vpc_id: eni.vpc_id.clone().or(vpc_id),
        device_index: eni.device_index,
        status: EniStatus::Failed,
        groups_before: eni.groups.clone(),
        groups_after: eni.groups.clone(),
        original_groups: None,
        error: Some(error.to_owned()),
        note: None,
        // A trunk ENI whose branches could not be listed: said with the trunk, whatever becomes of it.
        warning: eni.branches_unlisted.clone(),
    }
}

/// Where one ENI goes: its VPC's quarantine group, and what an earlier run recorded about it.
struct Target {
    vpc_id: Option<String>,
    quarantine: Option<String>,
    record: Record,
}

impl Target {
    fn of(
        instance: &Instance,
        eni: &NetworkInterface,
        groups: &QuarantineGroups,
        records: Option<&HashMap<String, GroupsRecord>>,
    ) -> Self {
        let vpc_id = eni.vpc_id.clone().or_else(|| instance.vpc_id.clone());
        let quarantine = vpc_id.as_ref().and_then(|v| groups.get(v)).cloned();
        let record = match records {
            None => Record::Unreadable,
            Some(map) => map.get(&eni.id).cloned().map_or(Record::Absent, Record::Known),
        };
        Target {
            vpc_id,
            quarantine,
            record,
        }
    }

    /// The ENI as found, nothing done yet.
    fn start(&self, eni: &NetworkInterface) -> EniChange {
        let mut change = unchanged(eni, self.vpc_id.clone(), "");
        change.error = None;
        change
    }

    /// The quarantine group to apply, or None with the reason (none configured in the VPC, or already on it only)
    /// already in `change`.
    fn ready(&self, change: &mut EniChange, eni: &NetworkInterface) -> Option<String> {
        let Some(quarantine) = self.quarantine.clone() else {
            change.error = Some(format!(
                "no quarantine security group is configured for {}; QUARANTINE_SECURITY_GROUP_ID must name one in that VPC",
                self.vpc_id.as_deref().unwrap_or("this ENI's VPC (unknown)")
            ));
            return None;
        };
        if eni.groups == [quarantine.as_str()] {
            change.status = EniStatus::AlreadyQuarantined;
            return None;
        }
        Some(quarantine)
    }
}

async fn quarantine_one(
    ec2: &aws_sdk_ec2::Client,
    eni: NetworkInterface,
    target: Target,
    signing: &Signing,
    instance: &str,
) -> EniChange {
    let mut change = target.start(&eni);
    let Some(quarantine) = target.ready(&mut change, &eni) else {
        // Already walled off (or no group for its VPC): what a restore would put back, if the record is ours.
        if let Record::Known(stored) = &target.record
            && let Trust::Ours | Trust::Unsigned = stored
                .check(
                    instance,
                    &eni.id,
                    signing.signer.as_ref(),
                    Some(signing.episode.as_str()),
                )
                .await
        {
            change.original_groups = Some(stored.groups.clone());
        }
        return change;
    };
    match plan_record(&target, &eni, &quarantine, signing, instance).await {
        Plan::Keep(groups) => change.original_groups = Some(groups),
        Plan::Leave { error, note } => {
            change.error = Some(error);
            change.note = note;
            return change;
        }
        Plan::Write { stale, note } => {
            change.note = note;
            match write_record(ec2, &eni, signing, instance, stale).await {
                Ok(warning) => {
                    change.original_groups = Some(eni.groups.clone());
                    change.warning = match (change.warning.take(), warning) {
                        (Some(branches), Some(record)) => Some(format!("{record}; {branches}")),
                        (branches, record) => record.or(branches),
                    };
                }
                Err(e) if is_gone(&e) => {
                    change.status = EniStatus::Gone;
                    return change;
                }
                Err(e) => {
                    change.error = Some(format!(
                        "could not record the original groups, so the ENI was not changed: {}",
                        e.reason()
                    ));
                    return change;
                }
            }
        }
    }
    match ec2
        .modify_network_interface_attribute()
        .network_interface_id(&eni.id)
        .groups(&quarantine)
        .send()
        .await
        .map_err(|e| CallError::new("ModifyNetworkInterfaceAttribute", &e))
    {
        Ok(_) => {
            change.status = EniStatus::Quarantined;
            change.groups_after = vec![quarantine];
        }
        Err(e) if is_gone(&e) => change.status = EniStatus::Gone,
        Err(e) => change.error = Some(e.reason()),
    }
    change
}
/// EC2's answer for an ENI deleted with its instance, between DescribeInstances and our call.
fn is_gone(error: &CallError) -> bool {
    error.is("InvalidNetworkInterfaceID.NotFound")
}

/// What AWS really answers, scripted: the behaviour moto gets wrong (see `crate::testing`).
#[cfg(test)]
mod semantics {
    use super::*;
    use crate::steps::quarantine;
    use crate::steps::records::ORIGINAL_GROUPS_TAG;
    use crate::testing::*;
    use aws_sdk_ec2::operation::create_tags::CreateTagsInput;
    use aws_sdk_ec2::operation::modify_network_interface_attribute::{
        ModifyNetworkInterfaceAttributeInput, ModifyNetworkInterfaceAttributeOutput,
    };
    use aws_sdk_ec2::types::Tag;
    use aws_smithy_mocks::mock;

    /// An instance with three ENIs: two on application groups, one already on only the quarantine group. Each of the two
    /// gets its original groups written to a tag, and only then its groups replaced with the quarantine group. The third
    /// is left alone, and ModifyInstanceAttribute (which only reaches the primary ENI) is never used.
    #[tokio::test]
    async fn every_eni_is_tagged_with_its_groups_and_then_quarantined() {
        let node = instance(
            INSTANCE,
            &[
                eni("eni-0aaa0000000000001", &[WEB_SG, SSH_SG], &[PRIMARY_IP]),
                eni("eni-0bbb0000000000002", &[DB_SG], &["10.0.2.20"]),
                eni("eni-0ccc0000000000003", &[QUARANTINE], &["10.0.3.30"]),
            ],
        );
        let writes = Ec2Writes::succeeding();
        let ec2 = ec2_client(&writes.rules());

        let changes = quarantine::quarantine_enis(
            &ec2,
            &node,
            &quarantine_groups(),
            Some(&HashMap::new()),
            &Signing::default(),
        )
        .await;

        let quarantined = |id: &str, index: i32, before: &[&str]| EniChange {
            network_interface_id: id.into(),
            vpc_id: Some(VPC.into()),
            device_index: Some(index),
            status: EniStatus::Quarantined,
            groups_before: before.iter().map(|g| g.to_string()).collect(),
            groups_after: vec![QUARANTINE.into()],
            original_groups: Some(before.iter().map(|g| g.to_string()).collect()),
            error: None,
            note: None,
            warning: None,
        };
        assert_eq!(
            changes,
            vec![
                quarantined("eni-0aaa0000000000001", 0, &[WEB_SG, SSH_SG]),
                quarantined("eni-0bbb0000000000002", 1, &[DB_SG]),
                EniChange {
                    status: EniStatus::AlreadyQuarantined,
                    original_groups: None,
                    ..quarantined("eni-0ccc0000000000003", 2, &[QUARANTINE])
                },
            ]
        );

        for (eni, groups) in [
            ("eni-0aaa0000000000001", format!("{WEB_SG},{SSH_SG}")),
            ("eni-0bbb0000000000002", DB_SG.to_owned()),
        ] {
            assert_eq!(
                writes.calls_for(eni),
                [
                    format!("CreateTags {eni}"),
                    format!("ModifyNetworkInterfaceAttribute {eni}")
                ],
                "the tag is written before the groups change"
            );
            let tag = CreateTagsInput::builder()
                .resources(eni)
                .tags(Tag::builder().key(ORIGINAL_GROUPS_TAG).value(groups).build())
                .build()
                .unwrap();
            assert!(writes.tags.all().contains(&tag), "{:?}", writes.tags.all());
            let modification = ModifyNetworkInterfaceAttributeInput::builder()
                .network_interface_id(eni)
                .groups(QUARANTINE)
                .build()
                .unwrap();
            assert!(
                writes.modifications.all().contains(&modification),
                "{:?}",
                writes.modifications.all()
            );
        }
        assert!(writes.calls_for("eni-0ccc0000000000003").is_empty());
        assert_eq!(writes.create_tags.num_calls(), 2);
        assert_eq!(writes.modify_eni.num_calls(), 2);
        assert_eq!(writes.modify_instance.num_calls(), 0);
    }
    /// An earlier run recorded the ENI's groups, then could not finish; since then an operator added a debug group. The
    /// record is the truth about what to restore: it is not written again, and the change reports it.
    #[tokio::test]
    async fn an_eni_whose_groups_are_already_recorded_is_not_tagged_again() {
        let node = instance(
            INSTANCE,
            &[eni(
                "eni-0aaa0000000000001",
                &[QUARANTINE, "sg-0dddd000000000004"],
                &[PRIMARY_IP],
            )],
        );
        let records = HashMap::from([(
            "eni-0aaa0000000000001".to_owned(),
            GroupsRecord {
                groups: vec![WEB_SG.to_owned(), SSH_SG.to_owned()],
                mac: None,
                at: String::new(),
                episode: String::new(),
                keys: vec![ORIGINAL_GROUPS_TAG.to_owned()],
            },
        )]);
        let writes = Ec2Writes::succeeding();
        let ec2 = ec2_client(&writes.rules());

        let changes =
            quarantine::quarantine_enis(&ec2, &node, &quarantine_groups(), Some(&records), &Signing::default()).await;

        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].status, EniStatus::Quarantined);
        assert_eq!(changes[0].groups_after, [QUARANTINE]);
        assert_eq!(changes[0].original_groups, Some(vec![WEB_SG.into(), SSH_SG.into()]));
        assert_eq!(writes.create_tags.num_calls(), 0);
        assert_eq!(
            writes.calls_for("eni-0aaa0000000000001"),
            ["ModifyNetworkInterfaceAttribute eni-0aaa0000000000001"]
        );
    }
    /// When the earlier records cannot be read, an ENI already partly on the quarantine group is left for the retry (a new
    /// record could overwrite the true original groups), while a never-quarantined ENI is recorded and quarantined as usual.
    #[tokio::test]
    async fn unreadable_records_never_risk_overwriting_an_earlier_one() {
        let node = instance(
            INSTANCE,
            &[
                eni(
                    "eni-0aaa0000000000001",
                    &[QUARANTINE, "sg-0dddd000000000004"],
                    &[PRIMARY_IP],
                ),
                eni("eni-0bbb0000000000002", &[WEB_SG], &[SECONDARY_IP]),
            ],
        );
        let writes = Ec2Writes::succeeding();
        let ec2 = ec2_client(&writes.rules());

        let changes = quarantine::quarantine_enis(&ec2, &node, &quarantine_groups(), None, &Signing::default()).await;

        assert_eq!(changes[0].status, EniStatus::Failed);
        assert!(changes[0].error.as_deref().unwrap().contains("could not be read"));
        assert!(writes.calls_for("eni-0aaa0000000000001").is_empty());
        assert_eq!(changes[1].status, EniStatus::Quarantined);
        assert_eq!(changes[1].original_groups, Some(vec![WEB_SG.to_owned()]));
        assert_eq!(writes.create_tags.num_calls(), 1);
    }
    /// No record, no change: when the original groups cannot be written down, the ENI keeps its groups, so that nothing
    /// is walled off without a way back.
    #[tokio::test]
    async fn an_eni_whose_groups_cannot_be_recorded_is_not_changed() {
        let node = instance(INSTANCE, &[eni("eni-0aaa0000000000001", &[WEB_SG], &[PRIMARY_IP])]);
        let writes = Ec2Writes::refusing_tags(
            403,
            ec2_error(
                "UnauthorizedOperation",
                "You are not authorized to perform this operation.",
            ),
        );
        let ec2 = ec2_client(&writes.rules());

        let changes = quarantine::quarantine_enis(
            &ec2,
            &node,
            &quarantine_groups(),
            Some(&HashMap::new()),
            &Signing::default(),
        )
        .await;

        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].status, EniStatus::Failed);
        assert_eq!(changes[0].groups_after, [WEB_SG]);
        assert_eq!(changes[0].original_groups, None);
        assert_eq!(
            changes[0].error.as_deref(),
            Some(
                "could not record the original groups, so the ENI was not changed: \
                 UnauthorizedOperation: You are not authorized to perform this operation."
            )
        );
        assert_eq!(writes.create_tags.num_calls(), 1, "a refusal is not retried");
        assert_eq!(writes.modify_eni.num_calls(), 0);
    }
    /// An instance that is shutting down or terminated loses its ENIs while we work: EC2 then answers NotFound for them.
    /// That ENI is reported as gone, with no error, and nothing else is tried on it. (moto keeps a terminated instance's
    /// ENIs, so this race is only reachable here.)
    #[tokio::test]
    async fn an_eni_deleted_with_its_instance_is_gone_not_failed() {
        let node = instance(INSTANCE, &[eni("eni-0aaa0000000000001", &[WEB_SG], &[PRIMARY_IP])]);
        let writes = Ec2Writes::refusing_tags(
            400,
            ec2_error(
                "InvalidNetworkInterfaceID.NotFound",
                "The networkInterface ID 'eni-0aaa0000000000001' does not exist",
            ),
        );
        let ec2 = ec2_client(&writes.rules());

        let changes = quarantine::quarantine_enis(
            &ec2,
            &node,
            &quarantine_groups(),
            Some(&HashMap::new()),
            &Signing::default(),
        )
        .await;

        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].status, EniStatus::Gone);
        assert_eq!(changes[0].error, None);
        assert_eq!(writes.create_tags.num_calls(), 1, "NotFound is not retried");
        assert_eq!(writes.modify_eni.num_calls(), 0, "nothing to wall off");
    }
    /// A second ENI attached from another VPC (multi-VPC ENI attachment) has no quarantine group configured: it is not
    /// touched, says why, and the ENI in our VPC is still quarantined.
    #[tokio::test]
    async fn an_eni_in_a_vpc_without_a_quarantine_group_is_left_alone_with_a_reason() {
        let node = instance(
            INSTANCE,
            &[
                eni("eni-0aaa0000000000001", &[WEB_SG], &[PRIMARY_IP]),
                Eni {
                    vpc: OTHER_VPC,
                    ..eni("eni-0eee0000000000005", &[DB_SG], &["172.16.0.5"])
                },
            ],
        );
        let writes = Ec2Writes::succeeding();
        let ec2 = ec2_client(&writes.rules());

        let changes = quarantine::quarantine_enis(
            &ec2,
            &node,
            &quarantine_groups(),
            Some(&HashMap::new()),
            &Signing::default(),
        )
        .await;

        assert_eq!(changes[0].status, EniStatus::Quarantined);
        assert_eq!(changes[1].status, EniStatus::Failed);
        assert_eq!(changes[1].groups_after, [DB_SG]);
        assert_eq!(
            changes[1].error.as_deref(),
            Some(
                "no quarantine security group is configured for vpc-0feed000000000001; \
                 QUARANTINE_SECURITY_GROUP_ID must name one in that VPC"
            )
        );
        assert!(writes.calls_for("eni-0eee0000000000005").is_empty());
        assert_eq!(writes.create_tags.num_calls(), 1);
        assert_eq!(writes.modify_eni.num_calls(), 1);
    }
    /// EC2 throttles with `RequestLimitExceeded`, in EC2's own error shape. The ENI change is retried and succeeds, and the
    /// tag is written once: the retry repeats the request, not the step. The answer's status is 400, which is never
    /// retried for its own sake, so only the error code can be what makes the SDK retry.
    #[tokio::test]
    async fn ec2_request_limit_is_retried_and_the_eni_is_quarantined() {
        let node = instance(INSTANCE, &[eni("eni-0aaa0000000000001", &[WEB_SG], &[PRIMARY_IP])]);
        let writes = Ec2Writes::succeeding();
        let modify = mock!(aws_sdk_ec2::Client::modify_network_interface_attribute)
            .match_requests(|r| r.network_interface_id() == Some("eni-0aaa0000000000001") && r.groups() == [QUARANTINE])
            .sequence()
            .http_status(400, Some(ec2_error("RequestLimitExceeded", "Request limit exceeded.")))
            .output(|| ModifyNetworkInterfaceAttributeOutput::builder().build())
            .build();
        let ec2 = ec2_client(&[&writes.create_tags, &modify, &writes.modify_instance]);

        let changes = quarantine::quarantine_enis(
            &ec2,
            &node,
            &quarantine_groups(),
            Some(&HashMap::new()),
            &Signing::default(),
        )
        .await;

        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].status, EniStatus::Quarantined, "{:?}", changes[0].error);
        assert_eq!(modify.num_calls(), 2);
        assert_eq!(writes.create_tags.num_calls(), 1);
        assert_eq!(
            writes.tags.all()[0].tags(),
            [Tag::builder().key(ORIGINAL_GROUPS_TAG).value(WEB_SG).build()]
        );
    }
}
