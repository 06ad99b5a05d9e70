//! A small production-shaped fleet on moto: Spot instances with a second ENI behind NodePort-style instance target
//! groups and an IP target group, a neighbour in the same groups, a target group in another VPC, and an SNS topic
//! read through an SQS subscription.

use std::collections::{BTreeMap, BTreeSet};

use aws_config::SdkConfig;
use aws_sdk_ec2::types::{
    Filter, InstanceMarketOptionsRequest, InstanceType, MarketType, PrivateIpAddressSpecification, ResourceType, Tag,
    TagSpecification,
};
use aws_sdk_elasticloadbalancingv2::types::{TargetDescription, TargetTypeEnum};

/// Instance target groups, one per NodePort (moto keys targets by id, so one port per group here; several ports in
/// one group are proven with aws-smithy-mocks in tests/aws_semantics.rs).
pub const NODE_PORTS: [(&str, i32); 2] = [("web-nodeport", 30080), ("api-nodeport", 30443)];
pub const POD_PORT: i32 = 8080;

pub struct Fleet {
    pub ec2: aws_sdk_ec2::Client,
    pub elb: aws_sdk_elasticloadbalancingv2::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub vpc_id: String,
    pub other_vpc_id: String,
    pub app_group: String,
    pub quarantine_group: String,
    pub other_vpc_quarantine_group: String,
    pub spot: Vec<Node>,
    pub neighbour: Node,
    /// Target groups in the fleet's VPC, by name.
    pub target_groups: BTreeMap<String, String>,
    /// An IP target group in another VPC that holds one of the Spot instances' addresses: it must not be touched.
    pub other_vpc_group: String,
    pub topic_arn: String,
    pub queue_url: String,
    /// The KMS HMAC key that signs the records (`RECORD_KEY_ID`), as template.yaml creates it.
    pub record_key: String,
}

pub struct Node {
    pub id: String,
    /// Primary ENI first, then the second one.
    pub enis: Vec<String>,
    /// Addresses of the second ENI (primary and secondary): registered as IP targets.
    pub pod_ips: Vec<String>,
    pub primary_ip: String,
}

/// One registration as ELB reports it.
pub type Registration = (String, String, Option<i32>);

impl Fleet {
    pub async fn build(shared: &SdkConfig, spot_count: usize) -> Fleet {
        let ec2 = aws_sdk_ec2::Client::new(shared);
        let elb = aws_sdk_elasticloadbalancingv2::Client::new(shared);
        let sns = aws_sdk_sns::Client::new(shared);
        let sqs = aws_sdk_sqs::Client::new(shared);

        let vpc_id = create_vpc(&ec2, "10.0.0.0/16").await;
        let other_vpc_id = create_vpc(&ec2, "10.1.0.0/16").await;
        let subnet_a = create_subnet(&ec2, &vpc_id, "10.0.1.0/24", "us-east-1a").await;
        let subnet_b = create_subnet(&ec2, &vpc_id, "10.0.2.0/24", "us-east-1b").await;
        let app_group = create_group(&ec2, &vpc_id, "app").await;
        let quarantine_group = create_group(&ec2, &vpc_id, "quarantine").await;
        let other_vpc_quarantine_group = create_group(&ec2, &other_vpc_id, "quarantine-other").await;
        let image = ec2
            .describe_images()
            .send()
            .await
            .unwrap()
            .images()
            .first()
            .and_then(|i| i.image_id())
            .expect("moto serves images")
            .to_owned();

        let subnets = (subnet_a.as_str(), subnet_b.as_str());
        let mut spot = Vec::new();
        for n in 0..spot_count {
            spot.push(launch(&ec2, &image, subnets, &app_group, n, true, &format!("spot-{n}")).await);
        }
        let neighbour = launch(&ec2, &image, subnets, &app_group, spot_count, false, "neighbour").await;

        let mut target_groups = BTreeMap::new();
        for (name, port) in NODE_PORTS {
            let arn = create_target_group(&elb, name, &vpc_id, TargetTypeEnum::Instance, port).await;
            let targets = spot.iter().chain([&neighbour]).map(|node| target(&node.id, port));
            register(&elb, &arn, targets.collect()).await;
            target_groups.insert(name.to_owned(), arn);
        }
        let pods = create_target_group(&elb, "pods-ip", &vpc_id, TargetTypeEnum::Ip, POD_PORT).await;
        let pod_targets = spot
            .iter()
            .chain([&neighbour])
            .flat_map(|node| node.pod_ips.iter().map(|ip| target(ip, POD_PORT)));
        register(&elb, &pods, pod_targets.collect()).await;
        target_groups.insert("pods-ip".to_owned(), pods);
        let neighbour_only = create_target_group(&elb, "neighbour-only", &vpc_id, TargetTypeEnum::Instance, 80).await;
        register(&elb, &neighbour_only, vec![target(&neighbour.id, 80)]).await;
        target_groups.insert("neighbour-only".to_owned(), neighbour_only);

        let other_vpc_group =
            create_target_group(&elb, "other-vpc-ip", &other_vpc_id, TargetTypeEnum::Ip, POD_PORT).await;
        register(&elb, &other_vpc_group, vec![target(&spot[0].primary_ip, POD_PORT)]).await;

        let topic_arn = sns
            .create_topic()
            .name("spot-cleanup")
            .send()
            .await
            .unwrap()
            .topic_arn()
            .unwrap()
            .to_owned();
        let queue_url = sqs
            .create_queue()
            .queue_name("summaries")
            .send()
            .await
            .unwrap()
            .queue_url()
            .unwrap()
            .to_owned();
        let queue_arn = format!("arn:aws:sqs:{}:123456789012:summaries", super::REGION);
        sns.subscribe()
            .topic_arn(&topic_arn)
            .protocol("sqs")
            .endpoint(queue_arn)
            .send()
            .await
            .unwrap();

        let record_key = create_record_key(shared).await;

        Fleet {
            record_key,
            ec2,
            elb,
            sqs,
            vpc_id,
            other_vpc_id,
            app_group,
            quarantine_group,
            other_vpc_quarantine_group,
            spot,
            neighbour,
            target_groups,
            other_vpc_group,
            topic_arn,
            queue_url,
        }
    }

    /// An instance launched by an Auto Scaling group attached to a new target group, the way EKS managed node groups
    /// are, and also registered by hand (as a controller would) on the fleet's web NodePort. Returns its id.
    pub async fn auto_scaling_node(&self, shared: &SdkConfig, target_group: &str, port: i32) -> String {
        let autoscaling = aws_sdk_autoscaling::Client::new(shared);
        let arn = create_target_group(&self.elb, target_group, &self.vpc_id, TargetTypeEnum::Instance, port).await;
        let subnet = self
            .ec2
            .describe_subnets()
            .filters(Filter::builder().name("vpc-id").values(&self.vpc_id).build())
            .send()
            .await
            .unwrap()
            .subnets()[0]
            .subnet_id()
            .unwrap()
            .to_owned();
        let image = self.ec2.describe_images().send().await.unwrap().images()[0]
            .image_id()
            .unwrap()
            .to_owned();
        self.ec2
            .create_launch_template()
            .launch_template_name("nodes-template")
            .launch_template_data(
                aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
                    .image_id(image)
                    .instance_type(InstanceType::M5Large)
                    .security_group_ids(&self.app_group)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        autoscaling
            .create_auto_scaling_group()
            .auto_scaling_group_name("nodes")
            .launch_template(
                aws_sdk_autoscaling::types::LaunchTemplateSpecification::builder()
                    .launch_template_name("nodes-template")
                    .build(),
            )
            .min_size(1)
            .max_size(1)
            .desired_capacity(1)
            .vpc_zone_identifier(subnet)
            .target_group_arns(&arn)
            .send()
            .await
            .unwrap();
        let group = autoscaling
            .describe_auto_scaling_groups()
            .auto_scaling_group_names("nodes")
            .send()
            .await
            .unwrap();
        let id = group.auto_scaling_groups()[0].instances()[0]
            .instance_id()
            .unwrap()
            .to_owned();
        register(&self.elb, &self.target_groups["web-nodeport"], vec![target(&id, 30080)]).await;
        id
    }

    /// The function's configuration for this fleet: quarantine groups for both VPCs, so it must pick by VPC.
    pub fn config(&self, dry_run: bool) -> spot_cleanup::Config {
        self.config_from(dry_run, None)
    }

    /// The same, with the registration index kept in `table`.
    pub fn config_with_index(&self, table: &str) -> spot_cleanup::Config {
        self.config_from(false, Some(table))
    }

    /// The same, with more variables (`REQUIRED_TAGS`, `MAX_EVENT_AGE`, ...) on top.
    pub fn config_with(
        &self,
        extra: &[(&str, &str)],
    ) -> Result<spot_cleanup::Config, spot_cleanup::config::ConfigError> {
        let index_table = extra
            .iter()
            .find(|(k, _)| *k == "REGISTRATION_INDEX_TABLE")
            .map(|(_, v)| v.to_string());
        spot_cleanup::Config::from_lookup(|name| {
            if let Some((_, value)) = extra.iter().find(|(k, _)| *k == name) {
                return Some(value.to_string());
            }
            self.base_variable(name, false, index_table.as_deref())
        })
    }

    fn base_variable(&self, name: &str, dry_run: bool, index_table: Option<&str>) -> Option<String> {
        match name {
            "SNS_TOPIC_ARN" => Some(self.topic_arn.clone()),
            "QUARANTINE_SECURITY_GROUP_ID" => {
                Some(format!("{},{}", self.other_vpc_quarantine_group, self.quarantine_group))
            }
            "DRY_RUN" => Some(dry_run.to_string()),
            "REGISTRATION_INDEX_TABLE" => index_table.map(str::to_owned),
            "RECORD_KEY_ID" => Some(self.record_key.clone()),
            _ => None,
        }
    }

    fn config_from(&self, dry_run: bool, index_table: Option<&str>) -> spot_cleanup::Config {
        spot_cleanup::Config::from_lookup(|name| self.base_variable(name, dry_run, index_table))
            .expect("valid configuration")
    }

    /// Every (target group name, target id, port) registered anywhere, including the other VPC's group.
    pub async fn registrations(&self) -> BTreeSet<Registration> {
        let mut all = BTreeSet::new();
        let other = "other-vpc-ip".to_owned();
        let groups = self.target_groups.iter().chain([(&other, &self.other_vpc_group)]);
        for (name, arn) in groups {
            let health = self
                .elb
                .describe_target_health()
                .target_group_arn(arn)
                .send()
                .await
                .unwrap();
            for description in health.target_health_descriptions() {
                let target = description.target().unwrap();
                all.insert((name.clone(), target.id().unwrap().to_owned(), target.port()));
            }
        }
        all
    }

    /// The registrations that belong to a node (its instance id or any of its addresses).
    pub fn registrations_of(&self, node: &Node, all: &BTreeSet<Registration>) -> BTreeSet<Registration> {
        all.iter()
            .filter(|(group, id, _)| {
                group != "other-vpc-ip" && (id == &node.id || node.pod_ips.contains(id) || id == &node.primary_ip)
            })
            .cloned()
            .collect()
    }

    /// ENI id -> (security groups, tags), for one instance's ENIs.
    ///
    /// moto reports an attached ENI's groups merged with the instance's launch groups, so callers check that the
    /// quarantine group is present with `enis_in_group`, not that the list is exact.
    pub async fn enis(&self, node: &Node) -> BTreeMap<String, (BTreeSet<String>, BTreeMap<String, String>)> {
        let output = self
            .ec2
            .describe_network_interfaces()
            .set_network_interface_ids(Some(node.enis.clone()))
            .send()
            .await
            .unwrap();
        output
            .network_interfaces()
            .iter()
            .map(|eni| {
                let groups = eni
                    .groups()
                    .iter()
                    .filter_map(|g| g.group_id())
                    .map(str::to_owned)
                    .collect();
                let tags = eni
                    .tag_set()
                    .iter()
                    .map(|t| (t.key().unwrap().to_owned(), t.value().unwrap_or_default().to_owned()))
                    .collect();
                (eni.network_interface_id().unwrap().to_owned(), (groups, tags))
            })
            .collect()
    }

    /// The node's ENIs that EC2 files under a security group.
    pub async fn enis_in_group(&self, node: &Node, group: &str) -> BTreeSet<String> {
        let output = self
            .ec2
            .describe_network_interfaces()
            .filters(Filter::builder().name("group-id").values(group).build())
            .send()
            .await
            .unwrap();
        output
            .network_interfaces()
            .iter()
            .filter_map(|eni| eni.network_interface_id())
            .filter(|id| node.enis.iter().any(|e| e == id))
            .map(str::to_owned)
            .collect()
    }

    /// Every SNS notification delivered to the subscribed queue so far, as the SNS envelope JSON.
    pub async fn published(&self) -> Vec<serde_json::Value> {
        let mut messages = Vec::new();
        loop {
            let output = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .send()
                .await
                .unwrap();
            if output.messages().is_empty() {
                return messages;
            }
            for message in output.messages() {
                messages.push(serde_json::from_str(message.body().unwrap()).unwrap());
                self.sqs
                    .delete_message()
                    .queue_url(&self.queue_url)
                    .receipt_handle(message.receipt_handle().unwrap())
                    .send()
                    .await
                    .unwrap();
            }
        }
    }
}

async fn create_vpc(ec2: &aws_sdk_ec2::Client, cidr: &str) -> String {
    let vpc = ec2.create_vpc().cidr_block(cidr).send().await.unwrap();
    vpc.vpc().unwrap().vpc_id().unwrap().to_owned()
}

async fn create_subnet(ec2: &aws_sdk_ec2::Client, vpc: &str, cidr: &str, zone: &str) -> String {
    let subnet = ec2
        .create_subnet()
        .vpc_id(vpc)
        .cidr_block(cidr)
        .availability_zone(zone)
        .send()
        .await
        .unwrap();
    subnet.subnet().unwrap().subnet_id().unwrap().to_owned()
}

pub async fn create_group(ec2: &aws_sdk_ec2::Client, vpc: &str, name: &str) -> String {
    let group = ec2
        .create_security_group()
        .vpc_id(vpc)
        .group_name(name)
        .description(name)
        .send()
        .await
        .unwrap();
    group.group_id().unwrap().to_owned()
}

/// Launches node number `n` with addresses of its own: 10.0.1.(10+n) for the primary ENI, 10.0.2.(10+2n) and
/// 10.0.2.(11+2n) for the second one. moto draws addresses at random and never checks that they are free, and it keys
/// targets by id, so two nodes that drew the same pod IP would share one registration.
async fn launch(
    ec2: &aws_sdk_ec2::Client,
    image: &str,
    (subnet, second_subnet): (&str, &str),
    group: &str,
    n: usize,
    spot: bool,
    name: &str,
) -> Node {
    assert!(n < 100, "the fleet's addresses are numbered for up to 100 nodes");
    let mut request = ec2
        .run_instances()
        .image_id(image)
        .instance_type(InstanceType::M5Large)
        .min_count(1)
        .max_count(1)
        .subnet_id(subnet)
        .private_ip_address(format!("10.0.1.{}", 10 + n))
        .security_group_ids(group)
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Instance)
                .tags(Tag::builder().key("Name").value(name).build())
                .build(),
        );
    if spot {
        request = request.instance_market_options(
            InstanceMarketOptionsRequest::builder()
                .market_type(MarketType::Spot)
                .build(),
        );
    }
    let run = request.send().await.unwrap();
    let instance = &run.instances()[0];
    let id = instance.instance_id().unwrap().to_owned();
    let primary_eni = instance.network_interfaces()[0]
        .network_interface_id()
        .unwrap()
        .to_owned();
    let primary_ip = instance.private_ip_address().unwrap().to_owned();

    // A second ENI with a secondary address, as the VPC CNI gives pods.
    let eni = ec2
        .create_network_interface()
        .subnet_id(second_subnet)
        .groups(group)
        .private_ip_addresses(address(format!("10.0.2.{}", 10 + 2 * n), true))
        .private_ip_addresses(address(format!("10.0.2.{}", 11 + 2 * n), false))
        .send()
        .await
        .unwrap();
    let eni = eni.network_interface().unwrap();
    let eni_id = eni.network_interface_id().unwrap().to_owned();
    let pod_ips = eni
        .private_ip_addresses()
        .iter()
        .filter_map(|a| a.private_ip_address())
        .map(str::to_owned)
        .collect();
    ec2.attach_network_interface()
        .network_interface_id(&eni_id)
        .instance_id(&id)
        .device_index(1)
        .send()
        .await
        .unwrap();
    Node {
        id,
        enis: vec![primary_eni, eni_id],
        pod_ips,
        primary_ip,
    }
}

fn address(ip: String, primary: bool) -> PrivateIpAddressSpecification {
    PrivateIpAddressSpecification::builder()
        .private_ip_address(ip)
        .primary(primary)
        .build()
}

pub async fn create_target_group(
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    name: &str,
    vpc: &str,
    kind: TargetTypeEnum,
    port: i32,
) -> String {
    let output = elb
        .create_target_group()
        .name(name)
        .protocol(aws_sdk_elasticloadbalancingv2::types::ProtocolEnum::Http)
        .port(port)
        .vpc_id(vpc)
        .target_type(kind)
        .send()
        .await
        .unwrap();
    output.target_groups()[0].target_group_arn().unwrap().to_owned()
}

pub fn target(id: &str, port: i32) -> TargetDescription {
    TargetDescription::builder().id(id).port(port).build()
}

pub async fn register(elb: &aws_sdk_elasticloadbalancingv2::Client, arn: &str, targets: Vec<TargetDescription>) {
    elb.register_targets()
        .target_group_arn(arn)
        .set_targets(Some(targets))
        .send()
        .await
        .unwrap();
}

/// An HMAC key for records, shaped as template.yaml's `RecordKey`: HMAC_256, for GenerateMac and VerifyMac.
pub async fn create_record_key(shared: &SdkConfig) -> String {
    use aws_sdk_kms::types::{KeySpec, KeyUsageType};
    let kms = aws_sdk_kms::Client::new(shared);
    let key = kms
        .create_key()
        .key_spec(KeySpec::Hmac256)
        .key_usage(KeyUsageType::GenerateVerifyMac)
        .description("spot-cleanup records")
        .send()
        .await
        .unwrap();
    key.key_metadata().unwrap().key_id().to_owned()
}
