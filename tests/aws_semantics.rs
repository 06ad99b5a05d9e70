//! The AWS behaviour moto gets wrong, checked against the requests the SDK really builds (`aws-smithy-mocks`).
//!
//! moto keys ELB targets by id instead of (id, port), fails a deregistration of a target that is not there (AWS
//! answers success), and mishandles instances with several ENIs. Each test sets up what AWS would answer, runs one
//! step or the whole cleanup, and asserts on exactly which requests were sent and how many times.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_ec2::operation::create_tags::CreateTagsInput;
use aws_sdk_ec2::operation::modify_network_interface_attribute::{
    ModifyNetworkInterfaceAttributeInput, ModifyNetworkInterfaceAttributeOutput,
};
use aws_sdk_ec2::types::Tag;
use aws_sdk_elasticloadbalancingv2::operation::deregister_targets::{DeregisterTargetsInput, DeregisterTargetsOutput};
use aws_sdk_elasticloadbalancingv2::types::TargetTypeEnum;
use aws_sdk_sns::operation::publish::PublishInput;
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use spot_cleanup::locate::{Locator, Sweep, UncheckedGroup};
use spot_cleanup::pace::Pace;
use spot_cleanup::steps::deregister::{self, Verdict};
use spot_cleanup::steps::quarantine::{self, EniChange, EniStatus, ORIGINAL_GROUPS_TAG};
use spot_cleanup::summary::{Outcome, Step, Summary};
use spot_cleanup::{App, Clients, Config};

use fixture::*;

/// Builders for what AWS answers, and recorders for what the SDK sent. Everything here is plain data; the tests say
/// which answers they need.
mod fixture {
    use std::collections::HashMap;
    use std::net::IpAddr;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

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
    use aws_sdk_elasticloadbalancingv2::operation::describe_target_group_attributes::DescribeTargetGroupAttributesOutput;
    use aws_sdk_elasticloadbalancingv2::operation::describe_target_groups::DescribeTargetGroupsOutput;
    use aws_sdk_elasticloadbalancingv2::operation::describe_target_health::DescribeTargetHealthOutput;
    use aws_sdk_elasticloadbalancingv2::types::{
        ProtocolEnum, TargetDescription, TargetGroup, TargetGroupAttribute, TargetHealth, TargetHealthDescription,
        TargetHealthReasonEnum, TargetHealthStateEnum, TargetTypeEnum,
    };
    use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
    use spot_cleanup::InstanceId;
    use spot_cleanup::instance::{Instance, NetworkInterface};
    use spot_cleanup::locate::{TargetKind, TargetRegistration};
    use spot_cleanup::steps::quarantine::QuarantineGroups;

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
                })
                .collect(),
        }
    }

    /// The quarantine group of our VPC, as `resolve_quarantine_groups` finds it.
    pub fn quarantine_groups() -> QuarantineGroups {
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
}

/// DeregisterTargets answering success for whatever it is sent, as AWS does, recording each request.
fn deregister_anything(sent: &Sent<DeregisterTargetsInput>) -> Rule {
    let sent = sent.clone();
    mock!(aws_sdk_elasticloadbalancingv2::Client::deregister_targets).then_compute_output(
        move |input: &DeregisterTargetsInput| {
            sent.record(input);
            DeregisterTargetsOutput::builder().build()
        },
    )
}

// ---- 1. One instance, several registrations ----------------------------------------------------------------------

/// A Kubernetes node serves two NodePorts in one target group and a pod IP (its secondary address) in an ip-type group.
/// The sweep finds all three registrations, and deregistration sends one DeregisterTargets per group carrying every
/// one of them with its exact port and zone. The neighbour node on the same ports is never sent.
#[tokio::test]
async fn every_port_of_the_instance_leaves_its_group_in_one_call() {
    use aws_sdk_elasticloadbalancingv2::types::TargetHealthStateEnum::Healthy;

    let node = instance(
        INSTANCE,
        &[eni("eni-0aaa0000000000001", &[WEB_SG], &[PRIMARY_IP, SECONDARY_IP])],
    );
    let listing = listing(vec![
        target_group("nodeports", TargetTypeEnum::Instance, VPC),
        target_group("pods", TargetTypeEnum::Ip, VPC),
        // Same address space, different network: 10.0.1.11 there is some other host.
        target_group("other-vpc-pods", TargetTypeEnum::Ip, OTHER_VPC),
        target_group("lambda", TargetTypeEnum::Lambda, VPC),
    ]);
    let nodeports = health_of(
        "nodeports",
        vec![
            target(INSTANCE, 30080, Healthy),
            target(NEIGHBOUR, 30080, Healthy),
            target(INSTANCE, 30443, Healthy),
            target(NEIGHBOUR, 30443, Healthy),
        ],
    );
    let pods = health_of(
        "pods",
        vec![
            target_in_zone(SECONDARY_IP, 8080, "us-east-1a", Healthy),
            target_in_zone("10.0.1.12", 8080, "us-east-1a", Healthy),
        ],
    );
    let other_vpc = health_of("other-vpc-pods", vec![target(SECONDARY_IP, 8080, Healthy)]);
    let lambda = health_of("lambda", vec![]);
    let sent = Sent::new();
    let deregister = deregister_anything(&sent);
    let elb = elb_client(&[&listing, &nodeports, &pods, &other_vpc, &lambda, &deregister]);

    let located = Sweep::new(elb.clone(), 10)
        .locate(std::slice::from_ref(&node), None)
        .await
        .unwrap();

    assert_eq!(
        located.registrations,
        vec![
            instance_target("nodeports", 30080, "healthy"),
            instance_target("nodeports", 30443, "healthy"),
            ip_target("pods", SECONDARY_IP, 8080, Some("us-east-1a"), "healthy"),
        ]
    );
    assert_eq!(located.target_groups_checked, 2);
    assert!(located.unchecked.is_empty());
    assert_eq!((nodeports.num_calls(), pods.num_calls()), (1, 1));
    // Groups in other VPCs and Lambda groups cannot hold this instance: not a single Describe is spent on them.
    assert_eq!((other_vpc.num_calls(), lambda.num_calls()), (0, 0));

    let results = deregister::deregister_all(&elb, &located.registrations, 10).await;

    assert_eq!(
        results,
        BTreeMap::from([(arn("nodeports"), Ok(())), (arn("pods"), Ok(()))])
    );
    let mut requests = sent.all();
    requests.sort_by(|a, b| a.target_group_arn().cmp(&b.target_group_arn()));
    assert_eq!(requests.len(), 2, "one DeregisterTargets per target group");
    assert_eq!(requests[0].target_group_arn(), Some(arn("nodeports").as_str()));
    assert_eq!(
        requests[0].targets(),
        [
            deregistration(INSTANCE, 30080, None),
            deregistration(INSTANCE, 30443, None)
        ]
    );
    assert_eq!(requests[1].target_group_arn(), Some(arn("pods").as_str()));
    assert_eq!(
        requests[1].targets(),
        [deregistration(SECONDARY_IP, 8080, Some("us-east-1a"))]
    );
}

/// An IP target from outside its group's VPC (a peered VPC, on premises) is registered with AvailabilityZone `all`,
/// and ELB requires the zone for such a target on deregistration too. The registration's zone is sent exactly as found.
#[tokio::test]
async fn a_target_registered_with_zone_all_is_deregistered_with_zone_all() {
    let sent = Sent::new();
    let deregister = deregister_anything(&sent);
    let elb = elb_client(&[&deregister]);
    let registrations = [
        ip_target("peered-pods", SECONDARY_IP, 8080, Some("all"), "healthy"),
        ip_target("peered-pods", SECONDARY_IP, 9090, Some("all"), "healthy"),
    ];

    let results = deregister::deregister_all(&elb, &registrations, 10).await;

    assert_eq!(results, BTreeMap::from([(arn("peered-pods"), Ok(()))]));
    let requests = sent.all();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].targets(),
        [
            deregistration(SECONDARY_IP, 8080, Some("all")),
            deregistration(SECONDARY_IP, 9090, Some("all"))
        ]
    );
}

// ---- 2. Success proves nothing: the verify pass ------------------------------------------------------------------

/// DeregisterTargets answers success even for a target that is not registered (moto answers an error). So the verify
/// pass describes each group again and reports what it sees, target by target and port by port: gone, draining, or
/// still `healthy` in spite of the "successful" call. It also reads each group's deregistration delay.
#[tokio::test]
async fn a_successful_deregistration_is_checked_by_describing_the_group_again() {
    use aws_sdk_elasticloadbalancingv2::types::TargetHealthStateEnum::{Draining, Healthy};

    let registrations = vec![
        instance_target("nodeports", 30080, "healthy"),
        instance_target("nodeports", 30443, "healthy"),
        instance_target("api", 8080, "healthy"),
        ip_target("pods", SECONDARY_IP, 8080, None, "healthy"),
        instance_target("deleted", 80, "healthy"),
    ];
    let sent = Sent::new();
    let deregister = deregister_anything(&sent);
    // Only the 30080 registration went; 30443 is still listed, healthy. Matching on the id alone would call both
    // ports gone or both remaining: only (id, port) gets each right.
    let nodeports = health_of(
        "nodeports",
        vec![target(INSTANCE, 30443, Healthy), target(NEIGHBOUR, 30080, Healthy)],
    );
    let api = health_of("api", vec![target(INSTANCE, 8080, Draining)]);
    // The pod IP had already gone before this run; DeregisterTargets said yes all the same.
    let pods = health_of("pods", vec![target("10.0.1.12", 8080, Healthy)]);
    // Deleted since the sweep: nothing can be registered in it.
    let deleted = mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_health)
        .match_requests(|r| r.target_group_arn() == Some(arn("deleted").as_str()))
        .sequence()
        .http_status(
            400,
            Some(elb_error(
                "TargetGroupNotFound",
                "Target groups 'arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/deleted/50dc6c495c0c9188' not found",
            )),
        )
        .repeatedly()
        .build();
    let delays = [
        delay_of("nodeports", 30),
        delay_of("api", 300),
        delay_of("pods", 0),
        delay_of("deleted", 300),
    ];
    let mut rules = vec![&deregister, &nodeports, &api, &pods, &deleted];
    rules.extend(delays.iter());
    let elb = elb_client(&rules);

    let results = deregister::deregister_all(&elb, &registrations, 10).await;
    assert!(results.values().all(Result::is_ok), "{results:?}");
    assert_eq!(sent.all().len(), 4);

    let checks = deregister::verify_removed(&elb, &Pace::unlimited(), &registrations, 10).await;

    let verdicts: Vec<(String, Option<i32>, Verdict)> = checks
        .iter()
        .flat_map(|c| &c.verdicts)
        .map(|(r, v)| (r.target_group_name.clone(), r.port, v.clone()))
        .collect();
    assert_eq!(
        verdicts,
        vec![
            ("api".into(), Some(8080), Verdict::Draining),
            ("deleted".into(), Some(80), Verdict::Deregistered),
            ("nodeports".into(), Some(30080), Verdict::Deregistered),
            (
                "nodeports".into(),
                Some(30443),
                Verdict::Remains {
                    state: "healthy".into(),
                    reason: None
                }
            ),
            ("pods".into(), Some(8080), Verdict::Deregistered),
        ]
    );
    let delay = deregister::deregistration_delays(
        &elb,
        &Pace::unlimited(),
        ["api", "nodeports", "pods", "deleted"].map(arn),
        10,
    )
    .await;
    assert_eq!(delay.get(&arn("api")), Some(&300));
    assert_eq!(delay.get(&arn("nodeports")), Some(&30));
    assert_eq!(delay.get(&arn("pods")), Some(&0));
    // One Describe per group, however many of its targets are being checked; a missing group is not retried.
    for rule in [&nodeports, &api, &pods, &deleted] {
        assert_eq!(rule.num_calls(), 1);
    }
    assert!(delays.iter().all(|d| d.num_calls() == 1));
}

// ---- 3. Quarantine, ENI by ENI -----------------------------------------------------------------------------------

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

    let changes = quarantine::quarantine_enis(&ec2, &node, &quarantine_groups(), Some(&HashMap::new()), false).await;

    let quarantined = |id: &str, index: i32, before: &[&str]| EniChange {
        network_interface_id: id.into(),
        vpc_id: Some(VPC.into()),
        device_index: Some(index),
        status: EniStatus::Quarantined,
        groups_before: before.iter().map(|g| g.to_string()).collect(),
        groups_after: vec![QUARANTINE.into()],
        original_groups: Some(before.iter().map(|g| g.to_string()).collect()),
        error: None,
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
        vec![WEB_SG.to_owned(), SSH_SG.to_owned()],
    )]);
    let writes = Ec2Writes::succeeding();
    let ec2 = ec2_client(&writes.rules());

    let changes = quarantine::quarantine_enis(&ec2, &node, &quarantine_groups(), Some(&records), false).await;

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

    let changes = quarantine::quarantine_enis(&ec2, &node, &quarantine_groups(), None, false).await;

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

    let changes = quarantine::quarantine_enis(&ec2, &node, &quarantine_groups(), Some(&HashMap::new()), false).await;

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

    let changes = quarantine::quarantine_enis(&ec2, &node, &quarantine_groups(), Some(&HashMap::new()), false).await;

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

    let changes = quarantine::quarantine_enis(&ec2, &node, &quarantine_groups(), Some(&HashMap::new()), false).await;

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

// ---- 4. Throttling ---------------------------------------------------------------------------------------------

fn throttled() -> String {
    elb_error("Throttling", "Rate exceeded")
}

/// The account's ELB Describe* budget is shared with every other tool. DescribeTargetHealth answers `Throttling`
/// twice; the client retries and the sweep still finds the registration.
#[tokio::test]
async fn elb_throttling_is_retried_and_the_sweep_still_finds_the_target() {
    let node = instance(INSTANCE, &[eni("eni-0aaa0000000000001", &[WEB_SG], &[PRIMARY_IP])]);
    let listing = listing(vec![target_group("web", TargetTypeEnum::Instance, VPC)]);
    let web = mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_health)
        .match_requests(|r| r.target_group_arn() == Some(arn("web").as_str()))
        .sequence()
        .http_status(400, Some(throttled()))
        .times(2)
        .output(|| {
            health(&[target(
                INSTANCE,
                80,
                aws_sdk_elasticloadbalancingv2::types::TargetHealthStateEnum::Healthy,
            )])
        })
        .build();
    let elb = elb_client(&[&listing, &web]);

    let located = Sweep::new(elb, 10)
        .locate(std::slice::from_ref(&node), None)
        .await
        .unwrap();

    assert_eq!(located.registrations, [instance_target("web", 80, "healthy")]);
    assert!(located.unchecked.is_empty());
    assert_eq!(web.num_calls(), 3);
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

    let changes = quarantine::quarantine_enis(&ec2, &node, &quarantine_groups(), Some(&HashMap::new()), false).await;

    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].status, EniStatus::Quarantined, "{:?}", changes[0].error);
    assert_eq!(modify.num_calls(), 2);
    assert_eq!(writes.create_tags.num_calls(), 1);
    assert_eq!(
        writes.tags.all()[0].tags(),
        [Tag::builder().key(ORIGINAL_GROUPS_TAG).value(WEB_SG).build()]
    );
}

/// A throttle that never clears, after every attempt is spent, leaves that one group unchecked, with the reason, for
/// the summary to report. The other groups are still swept.
#[tokio::test]
async fn a_throttle_that_never_clears_leaves_the_group_unchecked() {
    let node = instance(INSTANCE, &[eni("eni-0aaa0000000000001", &[WEB_SG], &[PRIMARY_IP])]);
    let listing = listing(vec![
        target_group("web", TargetTypeEnum::Instance, VPC),
        target_group("busy", TargetTypeEnum::Instance, VPC),
    ]);
    let web = health_of(
        "web",
        vec![target(
            INSTANCE,
            80,
            aws_sdk_elasticloadbalancingv2::types::TargetHealthStateEnum::Healthy,
        )],
    );
    let busy = mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_health)
        .match_requests(|r| r.target_group_arn() == Some(arn("busy").as_str()))
        .sequence()
        .http_status(400, Some(throttled()))
        .repeatedly()
        .build();
    let elb = elb_client(&[&listing, &web, &busy]);

    let located = Sweep::new(elb, 10)
        .locate(std::slice::from_ref(&node), None)
        .await
        .unwrap();

    assert_eq!(located.registrations, [instance_target("web", 80, "healthy")]);
    assert_eq!(
        located.unchecked,
        [UncheckedGroup {
            target_group_arn: arn("busy"),
            target_group_name: "busy".into(),
            vpc_id: Some(VPC.into()),
            error: "Throttling: Rate exceeded".into(),
        }]
    );
    assert_eq!(located.target_groups_checked, 2);
    assert_eq!(busy.num_calls(), MAX_ATTEMPTS as usize);
}

// ---- 5. One group failing, and the whole cleanup -----------------------------------------------------------------

const ACCESS_DENIED: &str = "User: arn:aws:sts::123456789012:assumed-role/spot-cleanup/spot-cleanup is not authorized \
     to perform: elasticloadbalancing:DeregisterTargets on resource: \
     arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web-b/50dc6c495c0c9188";

/// DeregisterTargets for `web-b` is refused (an SCP, a tag-based policy...): 403 AccessDenied, not retried.
fn deregister_refused_for_b() -> Rule {
    mock!(aws_sdk_elasticloadbalancingv2::Client::deregister_targets)
        .match_requests(|r| r.target_group_arn() == Some(arn("web-b").as_str()))
        .sequence()
        .http_status(403, Some(elb_error("AccessDenied", ACCESS_DENIED)))
        .repeatedly()
        .build()
}

/// Groups A and C leave; B refuses. Each group is its own call with its own result, so B's failure costs nothing
/// elsewhere and is reported with ELB's code.
#[tokio::test]
async fn one_refusing_target_group_does_not_stop_the_others() {
    let refused = deregister_refused_for_b();
    let sent = Sent::new();
    let others = deregister_anything(&sent);
    let elb = elb_client(&[&refused, &others]);
    let registrations = [
        instance_target("web-a", 80, "healthy"),
        instance_target("web-b", 80, "healthy"),
        instance_target("web-c", 80, "healthy"),
    ];

    let results = deregister::deregister_all(&elb, &registrations, 10).await;

    assert_eq!(
        results,
        BTreeMap::from([
            (arn("web-a"), Ok(())),
            (arn("web-b"), Err(format!("AccessDenied: {ACCESS_DENIED}"))),
            (arn("web-c"), Ok(())),
        ])
    );
    let mut answered: Vec<String> = sent
        .all()
        .iter()
        .map(|r| r.target_group_arn().unwrap().to_owned())
        .collect();
    answered.sort();
    assert_eq!(answered, [arn("web-a"), arn("web-c")]);
    assert_eq!(refused.num_calls(), 1, "AccessDenied is not retried");
}

/// A whole account for `clean_up`: a Spot node with two ENIs, registered in `web-a` (two NodePorts), `web-b` (which
/// refuses DeregisterTargets) and `pods-c` (its secondary IP), next to a neighbour node; and every answer a run needs.
struct Account {
    describe_instances: Rule,
    describe_security_groups: Rule,
    describe_network_interfaces: Rule,
    listing: Rule,
    health_a: Rule,
    health_b: Rule,
    health_c: Rule,
    delays: [Rule; 3],
    deregister_refused: Rule,
    deregister: Rule,
    deregistrations: Sent<DeregisterTargetsInput>,
    writes: Ec2Writes,
    publish: Rule,
    published: Sent<PublishInput>,
}

impl Account {
    fn new() -> Self {
        use aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput;
        use aws_sdk_ec2::operation::describe_network_interfaces::DescribeNetworkInterfacesOutput;
        use aws_sdk_ec2::operation::describe_security_groups::DescribeSecurityGroupsOutput;
        use aws_sdk_ec2::types::SecurityGroup;
        use aws_sdk_elasticloadbalancingv2::types::TargetHealthStateEnum::{Draining, Healthy};
        use aws_sdk_sns::operation::publish::PublishOutput;

        let described: DescribeInstancesOutput = described_instance(
            INSTANCE,
            &[
                eni("eni-0aaa0000000000001", &[WEB_SG, SSH_SG], &[PRIMARY_IP, SECONDARY_IP]),
                eni("eni-0bbb0000000000002", &[DB_SG], &["10.0.2.20"]),
            ],
        );
        let describe_instances = mock!(aws_sdk_ec2::Client::describe_instances)
            .match_requests(|r| {
                r.filters().len() == 1
                    && r.filters()[0].name() == Some("instance-id")
                    && r.filters()[0].values() == [INSTANCE]
            })
            .then_output(move || described.clone());
        let describe_security_groups = mock!(aws_sdk_ec2::Client::describe_security_groups)
            .match_requests(|r| r.group_ids() == [QUARANTINE])
            .then_output(|| {
                DescribeSecurityGroupsOutput::builder()
                    .security_groups(
                        SecurityGroup::builder()
                            .group_id(QUARANTINE)
                            .vpc_id(VPC)
                            .group_name("spot-quarantine")
                            .build(),
                    )
                    .build()
            });
        // No ENI carries a record yet: this is the first run.
        let describe_network_interfaces = mock!(aws_sdk_ec2::Client::describe_network_interfaces)
            .then_output(|| DescribeNetworkInterfacesOutput::builder().build());

        let listing = listing(vec![
            target_group("web-a", TargetTypeEnum::Instance, VPC),
            target_group("web-b", TargetTypeEnum::Instance, VPC),
            target_group("pods-c", TargetTypeEnum::Ip, VPC),
        ]);
        let health_a = health_before_and_after(
            "web-a",
            vec![
                target(INSTANCE, 30080, Healthy),
                target(INSTANCE, 30443, Healthy),
                target(NEIGHBOUR, 30080, Healthy),
            ],
            vec![target(NEIGHBOUR, 30080, Healthy)],
        );
        let health_b = health_of(
            "web-b",
            vec![target(INSTANCE, 30080, Healthy), target(NEIGHBOUR, 30080, Healthy)],
        );
        let health_c = health_before_and_after(
            "pods-c",
            vec![target(SECONDARY_IP, 8080, Healthy)],
            vec![target(SECONDARY_IP, 8080, Draining)],
        );
        let deregistrations = Sent::new();
        let published = Sent::new();
        let publish = {
            let published = published.clone();
            mock!(aws_sdk_sns::Client::publish).then_compute_output(move |input: &PublishInput| {
                published.record(input);
                PublishOutput::builder()
                    .message_id("3f1c2b4a-5d6e-4f70-8a9b-0c1d2e3f4a5b")
                    .build()
            })
        };
        Account {
            describe_instances,
            describe_security_groups,
            describe_network_interfaces,
            listing,
            health_a,
            health_b,
            health_c,
            delays: [delay_of("web-a", 300), delay_of("web-b", 300), delay_of("pods-c", 60)],
            deregister_refused: deregister_refused_for_b(),
            deregister: deregister_anything(&deregistrations),
            deregistrations,
            writes: Ec2Writes::succeeding(),
            publish,
            published,
        }
    }

    /// The function as deployed, with `DRY_RUN` set or not, talking to this account.
    fn app(&self, dry_run: bool) -> App {
        let config = Config::from_lookup(|name| match name {
            "SNS_TOPIC_ARN" => Some(TOPIC.into()),
            "QUARANTINE_SECURITY_GROUP_ID" => Some(QUARANTINE.into()),
            "DRY_RUN" => Some(dry_run.to_string()),
            _ => None,
        })
        .unwrap();
        let mut elb_rules = vec![
            &self.listing,
            &self.health_a,
            &self.health_b,
            &self.health_c,
            &self.deregister_refused,
            &self.deregister,
        ];
        elb_rules.extend(self.delays.iter());
        // The delivery marker's tags on the instance (src/claim.rs): nobody else claims it, so this run does the work.
        let marker = [
            mock!(aws_sdk_ec2::Client::describe_tags)
                .then_output(|| aws_sdk_ec2::operation::describe_tags::DescribeTagsOutput::builder().build()),
            mock!(aws_sdk_ec2::Client::create_tags)
                .match_requests(|input| input.resources().iter().all(|r| r.starts_with("i-")))
                .then_output(|| aws_sdk_ec2::operation::create_tags::CreateTagsOutput::builder().build()),
            mock!(aws_sdk_ec2::Client::delete_tags)
                .then_output(|| aws_sdk_ec2::operation::delete_tags::DeleteTagsOutput::builder().build()),
        ];
        let mut ec2_rules: Vec<&Rule> = marker.iter().collect();
        ec2_rules.extend([
            &self.describe_instances,
            &self.describe_security_groups,
            &self.describe_network_interfaces,
        ]);
        ec2_rules.extend(self.writes.rules());
        let clients = Clients {
            elb: elb_client(&elb_rules),
            ec2: ec2_client(&ec2_rules),
            sns: sns_client(&[&self.publish]),
            // No instance here belongs to an Auto Scaling group, so the fast path asks nothing.
            autoscaling: mock_client!(aws_sdk_autoscaling, RuleMode::MatchAny, Vec::<&Rule>::new()),
            // The registration index is off in these tests, so nothing asks DynamoDB.
            dynamodb: mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, Vec::<&Rule>::new()),
        };
        App::new(config, clients)
    }
}

/// The EventBridge warning the cleanup runs on.
fn spot_warning() -> spot_cleanup::Request {
    let event: serde_json::Value =
        serde_json::from_str(include_str!("../events/spot-interruption-terminate.json")).unwrap();
    match spot_cleanup::input::parse_invocation(&event).unwrap() {
        spot_cleanup::input::Invocation::Direct(request) => request,
        other => panic!("expected one request, got {other:?}"),
    }
}

/// (group, target, port, state, reason) of each target in a summary list.
fn rows(targets: &[spot_cleanup::summary::TargetChange]) -> Vec<(&str, &str, i32, &str, Option<&str>)> {
    let mut rows: Vec<_> = targets
        .iter()
        .map(|t| {
            (
                t.target_group_name.as_str(),
                t.target_id.as_str(),
                t.port.unwrap_or_default(),
                t.state.as_deref().unwrap_or_default(),
                t.reason.as_deref(),
            )
        })
        .collect();
    rows.sort();
    rows
}

/// The full run when one group refuses: the others are left, B's target is reported as remaining with the reason,
/// the ENIs are quarantined anyway, and one SNS message carries the summary, with a subject that fits SNS's limit and
/// the attributes subscription filters match on.
#[tokio::test]
async fn a_partial_cleanup_is_summarised_and_published_once() {
    let account = Account::new();
    let app = account.app(false);

    let reports = spot_cleanup::clean_up(&app, &[spot_warning()], None).await;

    assert_eq!(reports.len(), 1);
    let summary = reports[0].result.as_ref().unwrap();
    assert_eq!(summary.outcome, Outcome::Partial);
    assert_eq!(summary.target_groups_checked, 3);
    assert_eq!(
        rows(&summary.removed),
        [
            ("pods-c", SECONDARY_IP, 8080, "draining", None),
            ("web-a", INSTANCE, 30080, "deregistered", None),
            ("web-a", INSTANCE, 30443, "deregistered", None),
        ]
    );
    let refused = format!("DeregisterTargets failed: AccessDenied: {ACCESS_DENIED}");
    assert_eq!(
        rows(&summary.remaining),
        [("web-b", INSTANCE, 30080, "healthy", Some(refused.as_str()))]
    );
    assert_eq!(summary.errors.len(), 1, "{:?}", summary.errors);
    assert_eq!(summary.errors[0].step, Step::Deregister);
    assert!(summary.errors[0].message.starts_with("web-b: AccessDenied: "));
    let delays: Vec<(&str, Option<u32>)> = summary
        .removed
        .iter()
        .map(|t| (t.target_group_name.as_str(), t.deregistration_delay_seconds))
        .collect();
    assert_eq!(
        delays,
        [("pods-c", Some(60)), ("web-a", Some(300)), ("web-a", Some(300))]
    );

    // Quarantine does not depend on deregistration having worked.
    let statuses: Vec<EniStatus> = summary.network_interfaces.iter().map(|e| e.status).collect();
    assert_eq!(statuses, [EniStatus::Quarantined, EniStatus::Quarantined]);
    assert_eq!(account.writes.modify_eni.num_calls(), 2);
    assert_eq!(account.writes.modify_instance.num_calls(), 0);

    // B was sent once and refused; it is not verified, because nothing was done there.
    assert_eq!(account.deregister_refused.num_calls(), 1);
    assert_eq!(account.deregistrations.all().len(), 2);
    assert_eq!(account.health_a.num_calls(), 2, "swept, then verified");
    assert_eq!(account.health_b.num_calls(), 1, "swept only");
    assert_eq!(account.health_c.num_calls(), 2, "swept, then verified");
    assert_eq!(account.describe_instances.num_calls(), 1);
    assert_eq!(account.describe_security_groups.num_calls(), 1);
    assert_eq!(account.describe_network_interfaces.num_calls(), 1);

    assert_eq!(account.publish.num_calls(), 1);
    let published = &account.published.all()[0];
    assert_eq!(published.topic_arn(), Some(TOPIC));
    let subject = published.subject().unwrap();
    assert!(subject.len() <= 100, "{subject}");
    assert!(
        subject.starts_with("spot-cleanup PARTIAL: i-0123456789abcdef0 "),
        "{subject}"
    );
    let attributes: BTreeMap<&str, (&str, &str)> = published
        .message_attributes()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.as_str(), (v.data_type(), v.string_value().unwrap())))
        .collect();
    assert_eq!(
        attributes,
        BTreeMap::from([
            ("action", ("String", "terminate")),
            ("instance_id", ("String", INSTANCE)),
            ("outcome", ("String", "partial")),
            ("trigger", ("String", "eventbridge")),
        ])
    );
    let message: Summary = serde_json::from_str(published.message().unwrap()).unwrap();
    assert_eq!(&message, summary, "the message is the summary");
}

/// With DRY_RUN the function looks at everything and changes nothing: not one DeregisterTargets, CreateTags or
/// ModifyNetworkInterfaceAttribute is sent. The summary lists the plan and what would be quarantined.
#[tokio::test]
async fn a_dry_run_changes_nothing_and_publishes_the_plan() {
    let account = Account::new();
    let app = account.app(true);

    let reports = spot_cleanup::clean_up(&app, &[spot_warning()], None).await;

    let summary = reports[0].result.as_ref().unwrap();
    assert_eq!(account.deregister.num_calls(), 0);
    assert_eq!(account.deregister_refused.num_calls(), 0);
    assert_eq!(account.writes.create_tags.num_calls(), 0);
    assert_eq!(account.writes.modify_eni.num_calls(), 0);
    assert_eq!(account.writes.modify_instance.num_calls(), 0);
    assert!(account.delays.iter().all(|d| d.num_calls() == 0), "nothing to verify");
    for health in [&account.health_a, &account.health_b, &account.health_c] {
        assert_eq!(health.num_calls(), 1, "swept once, never verified");
    }

    assert_eq!(summary.outcome, Outcome::DryRun);
    assert!(summary.dry_run);
    assert_eq!(
        rows(&summary.planned),
        [
            ("pods-c", SECONDARY_IP, 8080, "healthy", None),
            ("web-a", INSTANCE, 30080, "healthy", None),
            ("web-a", INSTANCE, 30443, "healthy", None),
            ("web-b", INSTANCE, 30080, "healthy", None),
        ]
    );
    assert!(summary.removed.is_empty() && summary.remaining.is_empty());
    assert!(summary.errors.is_empty(), "{:?}", summary.errors);
    let json = serde_json::to_value(summary).unwrap();
    assert_eq!(json["outcome"], "dry-run");
    let statuses: Vec<&str> = json["network_interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["would-quarantine", "would-quarantine"]);
    assert_eq!(
        json["network_interfaces"][0]["groups_after"],
        serde_json::json!([QUARANTINE])
    );
    assert_eq!(
        json["network_interfaces"][0]["original_groups"],
        serde_json::json!([WEB_SG, SSH_SG])
    );

    assert_eq!(account.publish.num_calls(), 1);
    let published = &account.published.all()[0];
    assert_eq!(
        published.subject(),
        Some("spot-cleanup DRY RUN: i-0123456789abcdef0 would leave 3 target groups, quarantine 2 ENIs")
    );
    let outcome = published.message_attributes().unwrap()["outcome"].string_value();
    assert_eq!(outcome, Some("dry-run"));
}
