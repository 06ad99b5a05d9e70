//! Fixtures for the unit tests that check the AWS behaviour moto gets wrong against the requests the SDK really
//! builds (`aws-smithy-mocks`): builders for what AWS answers, and recorders for what the SDK sent. Everything here is
//! plain data; the tests say which answers they need.
//!
//! moto keys ELB targets by id instead of (id, port), fails a deregistration of a target that is not there (AWS
//! answers success), and mishandles instances with several ENIs; these tests cover exactly that.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::input::InstanceId;
use crate::instance::{Instance, NetworkInterface};
use crate::registration::{TargetKind, TargetRegistration};
use aws_config::retry::RetryConfig;
use aws_sdk_ec2::operation::create_tags::{CreateTagsInput, CreateTagsOutput};
use aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput;
use aws_sdk_ec2::operation::modify_network_interface_attribute::{
    ModifyNetworkInterfaceAttributeInput, ModifyNetworkInterfaceAttributeOutput,
};
use aws_sdk_ec2::types::{
    GroupIdentifier, InstanceLifecycleType, InstanceNetworkInterface, InstanceNetworkInterfaceAttachment,
    InstancePrivateIpAddress, InstanceState, InstanceStateName, Reservation,
};
use aws_sdk_elasticloadbalancingv2::operation::deregister_targets::{DeregisterTargetsInput, DeregisterTargetsOutput};
use aws_sdk_elasticloadbalancingv2::operation::describe_target_group_attributes::DescribeTargetGroupAttributesOutput;
use aws_sdk_elasticloadbalancingv2::operation::describe_target_groups::DescribeTargetGroupsOutput;
use aws_sdk_elasticloadbalancingv2::operation::describe_target_health::DescribeTargetHealthOutput;
use aws_sdk_elasticloadbalancingv2::types::{
    ProtocolEnum, TargetDescription, TargetGroup, TargetGroupAttribute, TargetHealth, TargetHealthDescription,
    TargetHealthReasonEnum, TargetHealthStateEnum, TargetTypeEnum,
};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};

/// The instance in `events/spot-interruption-terminate.json`.
pub const INSTANCE: &str = "i-0123456789abcdef0";
/// Another node of the same cluster, registered in the same groups on the same ports.
pub const NEIGHBOUR: &str = "i-0fedcba9876543210";
pub const VPC: &str = "vpc-0a1b2c3d4e5f60718";
/// Another VPC of the account, whose CIDR overlaps ours, as VPC CIDRs often do.
pub const OTHER_VPC: &str = "vpc-0feed000000000001";
pub const QUARANTINE: &str = "sg-0c0ffee0000000001";
pub const WEB_SG: &str = "sg-0aaa0000000000001";
pub const SSH_SG: &str = "sg-0bbb0000000000002";
pub const DB_SG: &str = "sg-0ccc0000000000003";
pub const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:spot-cleanup";
pub const PRIMARY_IP: &str = "10.0.1.10";
pub const SECONDARY_IP: &str = "10.0.1.11";

pub fn arn(group: &str) -> String {
    format!("arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/{group}/50dc6c495c0c9188")
}

/// Retries with millisecond backoff, so that retried calls keep the tests fast.
///
/// Production gives ELB adaptive retry. The tests use standard retry: adaptive's client-side rate limiter is shared
/// by every client of the process with the same retry partition and is paced by the client's clock, which the test
/// defaults freeze, so after one throttle every later adaptive ELB call in the binary would wait for tokens that
/// never refill. Which errors are retried is decided by the same classifiers in both modes; that is what is tested.
pub fn quick_retries() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(MAX_ATTEMPTS)
        .with_initial_backoff(Duration::from_millis(1))
        .with_max_backoff(Duration::from_millis(10))
}
pub const MAX_ATTEMPTS: u32 = 5;

pub fn elb_client(rules: &[&Rule]) -> aws_sdk_elasticloadbalancingv2::Client {
    mock_client!(aws_sdk_elasticloadbalancingv2, RuleMode::MatchAny, rules, |c| c
        .retry_config(quick_retries()))
}

pub fn ec2_client(rules: &[&Rule]) -> aws_sdk_ec2::Client {
    mock_client!(aws_sdk_ec2, RuleMode::MatchAny, rules, |c| c
        .retry_config(quick_retries()))
}

pub fn sns_client(rules: &[&Rule]) -> aws_sdk_sns::Client {
    mock_client!(aws_sdk_sns, RuleMode::MatchAny, rules, |c| c
        .retry_config(quick_retries()))
}

/// ELB's query-protocol error body, as the service sends it.
pub fn elb_error(code: &str, message: &str) -> String {
    format!(
        r#"<ErrorResponse xmlns="http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/"><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>a1b2c3d4-5e6f-4a7b-8c9d-0e1f2a3b4c5d</RequestId></ErrorResponse>"#
    )
}

/// EC2's error body, which has its own shape.
pub fn ec2_error(code: &str, message: &str) -> String {
    format!(
        "<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a8b</RequestID></Response>"
    )
}

/// Every request a rule answered, in the order the SDK sent them.
#[derive(Clone)]
pub struct Sent<T>(Arc<Mutex<Vec<T>>>);

impl<T: Clone> Sent<T> {
    pub fn new() -> Self {
        Sent(Arc::new(Mutex::new(Vec::new())))
    }
    pub fn record(&self, request: &T) {
        self.0.lock().unwrap().push(request.clone());
    }
    pub fn all(&self) -> Vec<T> {
        self.0.lock().unwrap().clone()
    }
}

// ---- EC2 -------------------------------------------------------------------------------------------------------

/// An ENI as DescribeInstances shows it; the first address is the primary one.
pub struct Eni {
    pub id: &'static str,
    pub vpc: &'static str,
    pub groups: &'static [&'static str],
    pub addresses: &'static [&'static str],
}

pub fn eni(id: &'static str, groups: &'static [&'static str], addresses: &'static [&'static str]) -> Eni {
    Eni {
        id,
        vpc: VPC,
        groups,
        addresses,
    }
}

/// The running Spot instance as DescribeInstances returns it, ENIs in device order.
pub fn described_instance(id: &str, enis: &[Eni]) -> DescribeInstancesOutput {
    let interfaces = enis.iter().enumerate().map(|(index, eni)| {
        InstanceNetworkInterface::builder()
            .network_interface_id(eni.id)
            .vpc_id(eni.vpc)
            .attachment(
                InstanceNetworkInterfaceAttachment::builder()
                    .device_index(index as i32)
                    .build(),
            )
            .set_groups(Some(
                eni.groups
                    .iter()
                    .map(|g| GroupIdentifier::builder().group_id(*g).build())
                    .collect(),
            ))
            .private_ip_address(eni.addresses[0])
            .set_private_ip_addresses(Some(
                eni.addresses
                    .iter()
                    .enumerate()
                    .map(|(i, a)| {
                        InstancePrivateIpAddress::builder()
                            .private_ip_address(*a)
                            .primary(i == 0)
                            .build()
                    })
                    .collect(),
            ))
            .build()
    });
    let instance = aws_sdk_ec2::types::Instance::builder()
        .instance_id(id)
        .vpc_id(VPC)
        .instance_lifecycle(InstanceLifecycleType::Spot)
        .state(InstanceState::builder().name(InstanceStateName::Running).build())
        .set_network_interfaces(Some(interfaces.collect()))
        .build();
    DescribeInstancesOutput::builder()
        .reservations(Reservation::builder().instances(instance).build())
        .build()
}

/// The same instance as the steps see it after describing.
pub fn instance(id: &str, enis: &[Eni]) -> Instance {
    Instance {
        id: InstanceId::parse(id).unwrap(),
        vpc_id: Some(VPC.into()),
        state: Some("running".into()),
        lifecycle: Some("spot".into()),
        tags: Default::default(),
        network_interfaces: enis
            .iter()
            .enumerate()
            .map(|(index, eni)| NetworkInterface {
                id: eni.id.into(),
                vpc_id: Some(eni.vpc.into()),
                device_index: Some(index as i32),
                groups: eni.groups.iter().map(|g| g.to_string()).collect(),
                addresses: eni.addresses.iter().map(|a| a.parse::<IpAddr>().unwrap()).collect(),
                branches_unlisted: None,
            })
            .collect(),
    }
}

/// The quarantine group of our VPC, as `resolve_quarantine_groups` finds it.
pub fn quarantine_groups() -> HashMap<String, String> {
    HashMap::from([(VPC.to_owned(), QUARANTINE.to_owned())])
}

/// The EC2 calls that change an ENI, answered as AWS does and recorded. ModifyInstanceAttribute is answered too,
/// so that a call to it is counted rather than failing somewhere else.
pub struct Ec2Writes {
    pub create_tags: Rule,
    pub modify_eni: Rule,
    pub modify_instance: Rule,
    pub tags: Sent<CreateTagsInput>,
    pub modifications: Sent<ModifyNetworkInterfaceAttributeInput>,
    /// `CreateTags eni-...` and `ModifyNetworkInterfaceAttribute eni-...`, in the order they were sent.
    pub order: Sent<String>,
}

impl Ec2Writes {
    pub fn succeeding() -> Self {
        Self::with_tags_answer(None)
    }

    /// CreateTags answers with this EC2 error.
    pub fn refusing_tags(status: u16, body: String) -> Self {
        Self::with_tags_answer(Some((status, body)))
    }

    fn with_tags_answer(refusal: Option<(u16, String)>) -> Self {
        let (tags, modifications, order) = (Sent::new(), Sent::new(), Sent::new());
        let create_tags = match refusal {
            None => {
                let (tags, order) = (tags.clone(), order.clone());
                mock!(aws_sdk_ec2::Client::create_tags).then_compute_output(move |input: &CreateTagsInput| {
                    tags.record(input);
                    order.record(&format!("CreateTags {}", input.resources().join(",")));
                    CreateTagsOutput::builder().build()
                })
            }
            Some((status, body)) => mock!(aws_sdk_ec2::Client::create_tags)
                .sequence()
                .http_status(status, Some(body))
                .repeatedly()
                .build(),
        };
        let modify_eni = {
            let (modifications, order) = (modifications.clone(), order.clone());
            mock!(aws_sdk_ec2::Client::modify_network_interface_attribute).then_compute_output(
                move |input: &ModifyNetworkInterfaceAttributeInput| {
                    modifications.record(input);
                    order.record(&format!(
                        "ModifyNetworkInterfaceAttribute {}",
                        input.network_interface_id().unwrap_or_default()
                    ));
                    ModifyNetworkInterfaceAttributeOutput::builder().build()
                },
            )
        };
        let modify_instance = mock!(aws_sdk_ec2::Client::modify_instance_attribute).then_output(|| {
            aws_sdk_ec2::operation::modify_instance_attribute::ModifyInstanceAttributeOutput::builder().build()
        });
        Ec2Writes {
            create_tags,
            modify_eni,
            modify_instance,
            tags,
            modifications,
            order,
        }
    }

    pub fn rules(&self) -> [&Rule; 3] {
        [&self.create_tags, &self.modify_eni, &self.modify_instance]
    }

    /// The calls made for one ENI, in order.
    pub fn calls_for(&self, eni: &str) -> Vec<String> {
        self.order
            .all()
            .into_iter()
            .filter(|call| call.ends_with(eni))
            .collect()
    }
}

// ---- ELB -------------------------------------------------------------------------------------------------------

pub fn target_group(name: &str, kind: TargetTypeEnum, vpc: &str) -> TargetGroup {
    TargetGroup::builder()
        .target_group_arn(arn(name))
        .target_group_name(name)
        .target_type(kind)
        .protocol(ProtocolEnum::Http)
        .port(80)
        .vpc_id(vpc)
        .build()
}

/// DescribeTargetGroups: every group of the account, in one page.
pub fn listing(groups: Vec<TargetGroup>) -> Rule {
    mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_groups).then_output(move || {
        DescribeTargetGroupsOutput::builder()
            .set_target_groups(Some(groups.clone()))
            .build()
    })
}

/// One registered target as DescribeTargetHealth lists it.
pub fn target(id: &str, port: i32, state: TargetHealthStateEnum) -> TargetHealthDescription {
    registered(TargetDescription::builder().id(id).port(port).build(), state)
}

/// An IP target that was registered with an explicit Availability Zone.
pub fn target_in_zone(id: &str, port: i32, zone: &str, state: TargetHealthStateEnum) -> TargetHealthDescription {
    registered(
        TargetDescription::builder()
            .id(id)
            .port(port)
            .availability_zone(zone)
            .build(),
        state,
    )
}

fn registered(target: TargetDescription, state: TargetHealthStateEnum) -> TargetHealthDescription {
    let reason = match state {
        TargetHealthStateEnum::Draining => Some(TargetHealthReasonEnum::DeregistrationInProgress),
        TargetHealthStateEnum::Unhealthy => Some(TargetHealthReasonEnum::FailedHealthChecks),
        _ => None,
    };
    TargetHealthDescription::builder()
        .health_check_port(target.port().unwrap_or_default().to_string())
        .target(target)
        .target_health(TargetHealth::builder().state(state).set_reason(reason).build())
        .build()
}

pub fn health(targets: &[TargetHealthDescription]) -> DescribeTargetHealthOutput {
    DescribeTargetHealthOutput::builder()
        .set_target_health_descriptions(Some(targets.to_vec()))
        .build()
}

/// DescribeTargetHealth of one group, answering the same every time.
pub fn health_of(group: &str, targets: Vec<TargetHealthDescription>) -> Rule {
    let arn = arn(group);
    mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_health)
        .match_requests(move |r| r.target_group_arn() == Some(arn.as_str()) && r.targets().is_empty())
        .then_output(move || health(&targets))
}

/// DescribeTargetHealth of one group: what the sweep sees, then what the verify pass sees.
pub fn health_before_and_after(
    group: &str,
    before: Vec<TargetHealthDescription>,
    after: Vec<TargetHealthDescription>,
) -> Rule {
    let arn = arn(group);
    mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_health)
        .match_requests(move |r| r.target_group_arn() == Some(arn.as_str()) && r.targets().is_empty())
        .sequence()
        .output(move || health(&before))
        .output(move || health(&after))
        .build()
}

/// DescribeTargetGroupAttributes of one group, with its deregistration delay.
pub fn delay_of(group: &str, seconds: u32) -> Rule {
    let arn = arn(group);
    mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_group_attributes)
        .match_requests(move |r| r.target_group_arn() == Some(arn.as_str()))
        .then_output(move || {
            DescribeTargetGroupAttributesOutput::builder()
                .attributes(
                    TargetGroupAttribute::builder()
                        .key("stickiness.enabled")
                        .value("false")
                        .build(),
                )
                .attributes(
                    TargetGroupAttribute::builder()
                        .key("deregistration_delay.timeout_seconds")
                        .value(seconds.to_string())
                        .build(),
                )
                .build()
        })
}

/// Our instance on `port` in an instance-type group.
pub fn instance_target(group: &str, port: i32, state: &str) -> TargetRegistration {
    TargetRegistration {
        target_group_arn: arn(group),
        target_group_name: group.into(),
        instance_id: InstanceId::parse(INSTANCE).unwrap(),
        kind: TargetKind::Instance,
        target_id: INSTANCE.into(),
        port: Some(port),
        availability_zone: None,
        state: Some(state.into()),
    }
}

/// One of our instance's addresses on `port` in an ip-type group.
pub fn ip_target(group: &str, ip: &str, port: i32, zone: Option<&str>, state: &str) -> TargetRegistration {
    TargetRegistration {
        kind: TargetKind::Ip,
        target_id: ip.into(),
        availability_zone: zone.map(str::to_owned),
        ..instance_target(group, port, state)
    }
}

/// A target as DeregisterTargets should name it: id, port and, only if it was registered with one, zone.
pub fn deregistration(id: &str, port: i32, zone: Option<&str>) -> TargetDescription {
    TargetDescription::builder()
        .id(id)
        .port(port)
        .set_availability_zone(zone.map(str::to_owned))
        .build()
}

/// DeregisterTargets answering success for whatever it is sent, as AWS does, recording each request.
pub fn deregister_anything(sent: &Sent<DeregisterTargetsInput>) -> Rule {
    let sent = sent.clone();
    mock!(aws_sdk_elasticloadbalancingv2::Client::deregister_targets).then_compute_output(
        move |input: &DeregisterTargetsInput| {
            sent.record(input);
            DeregisterTargetsOutput::builder().build()
        },
    )
}

/// ELB's `Throttling`, as a throttled Describe* answers.
pub fn throttled() -> String {
    elb_error("Throttling", "Rate exceeded")
}

pub const ACCESS_DENIED: &str = "User: arn:aws:sts::123456789012:assumed-role/spot-cleanup/spot-cleanup is not authorized \
     to perform: elasticloadbalancing:DeregisterTargets on resource: \
     arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web-b/50dc6c495c0c9188";

/// DeregisterTargets for `web-b` is refused (an SCP, a tag-based policy...): 403 AccessDenied, not retried.
pub fn deregister_refused_for_b() -> Rule {
    mock!(aws_sdk_elasticloadbalancingv2::Client::deregister_targets)
        .match_requests(|r| r.target_group_arn() == Some(arn("web-b").as_str()))
        .sequence()
        .http_status(403, Some(elb_error("AccessDenied", ACCESS_DENIED)))
        .repeatedly()
        .build()
}
