//! One deployment serving several regions and accounts, against moto: the event says where the instance lives, and
//! the function cleans it there with clients built for that place, while the summary still goes to the home topic.

use crate::common;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ec2::types::{Filter, InstanceMarketOptionsRequest, InstanceType, MarketType};
use aws_sdk_elasticloadbalancingv2::types::TargetTypeEnum;
use common::Moto;
use common::fleet::{self, Fleet};
use lambda_runtime::{Context, LambdaEvent};
use serde_json::Value;
use spot_cleanup::{App, Config, HandlerError, Summary, handle};

const WEST: &str = "us-west-2";
const OTHER_ACCOUNT: &str = "222222222222";

async fn invoke(app: &App, payload: Value) -> Result<Value, HandlerError> {
    handle(app, LambdaEvent::new(payload, Context::default())).await
}

/// One instance in a target group, and a quarantine group, wherever `shared` points.
struct Outpost {
    elb: aws_sdk_elasticloadbalancingv2::Client,
    ec2: aws_sdk_ec2::Client,
    instance: String,
    target_group: String,
    quarantine_group: String,
}

impl Outpost {
    async fn build(shared: &SdkConfig, zone: &str) -> Outpost {
        let ec2 = aws_sdk_ec2::Client::new(shared);
        let elb = aws_sdk_elasticloadbalancingv2::Client::new(shared);
        let vpc = ec2.create_vpc().cidr_block("10.9.0.0/16").send().await.unwrap();
        let vpc = vpc.vpc().unwrap().vpc_id().unwrap().to_owned();
        let subnet = ec2
            .create_subnet()
            .vpc_id(&vpc)
            .cidr_block("10.9.1.0/24")
            .availability_zone(zone)
            .send()
            .await
            .unwrap();
        let subnet = subnet.subnet().unwrap().subnet_id().unwrap().to_owned();
        let quarantine_group = ec2
            .create_security_group()
            .vpc_id(&vpc)
            .group_name("quarantine")
            .description("quarantine")
            .send()
            .await
            .unwrap()
            .group_id()
            .unwrap()
            .to_owned();
        let image = ec2.describe_images().send().await.unwrap().images()[0]
            .image_id()
            .unwrap()
            .to_owned();
        let run = ec2
            .run_instances()
            .image_id(image)
            .instance_type(InstanceType::M5Large)
            .min_count(1)
            .max_count(1)
            .subnet_id(subnet)
            // The guard acts on Spot warnings only for Spot instances.
            .instance_market_options(
                InstanceMarketOptionsRequest::builder()
                    .market_type(MarketType::Spot)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let instance = run.instances()[0].instance_id().unwrap().to_owned();
        let target_group = fleet::create_target_group(&elb, "outpost", &vpc, TargetTypeEnum::Instance, 30080).await;
        fleet::register(&elb, &target_group, vec![fleet::target(&instance, 30080)]).await;
        Outpost {
            elb,
            ec2,
            instance,
            target_group,
            quarantine_group,
        }
    }

    async fn targets(&self) -> usize {
        let health = self
            .elb
            .describe_target_health()
            .target_group_arn(&self.target_group)
            .send()
            .await
            .unwrap();
        health.target_health_descriptions().len()
    }

    async fn quarantined_enis(&self) -> usize {
        let output = self
            .ec2
            .describe_network_interfaces()
            .filters(
                Filter::builder()
                    .name("group-id")
                    .values(&self.quarantine_group)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        output.network_interfaces().len()
    }
}

/// The function as deployed in us-east-1, with quarantine groups of every place it serves.
async fn app(moto: &Moto, fleet: &Fleet, groups: &[&str], role: Option<&str>) -> App {
    let shared = moto.sdk_config().await;
    let groups = groups.join(",");
    let config = Config::from_lookup(|name| match name {
        "SNS_TOPIC_ARN" => Some(fleet.topic_arn.clone()),
        "QUARANTINE_SECURITY_GROUP_ID" => Some(groups.clone()),
        "CROSS_ACCOUNT_ROLE_NAME" => role.map(str::to_owned),
        _ => None,
    })
    .unwrap();
    let (clients, _) = common::counted_clients(&shared);
    App::new(config, clients).serving_other_places(shared)
}

fn spot_event(instance: &str, region: &str, account: &str) -> Value {
    let mut event = common::event_for("spot-interruption-terminate.json", instance);
    event["region"] = region.into();
    event["account"] = account.into();
    event
}

#[tokio::test]
async fn an_instance_in_another_region_is_cleaned_there_and_reported_home() {
    let moto = Moto::start();
    let home = moto.sdk_config().await;
    let fleet = Fleet::build(&home, 1).await;
    let west_config = home.to_builder().region(Region::new(WEST)).build();
    let west = Outpost::build(&west_config, "us-west-2a").await;
    let app = app(&moto, &fleet, &[&fleet.quarantine_group, &west.quarantine_group], None).await;
    let home_before = fleet.registrations().await;
    assert_eq!(west.targets().await, 1);

    let answer = invoke(&app, spot_event(&west.instance, WEST, "123456789012"))
        .await
        .expect("cleanup succeeds");
    let summary: Summary = serde_json::from_value(answer).unwrap();

    assert_eq!(summary.outcome.as_str(), "cleaned", "{summary:#?}");
    assert_eq!(summary.removed.len(), 1);
    assert_eq!(west.targets().await, 0, "deregistered in us-west-2");
    assert_eq!(west.quarantined_enis().await, 1, "quarantined with the us-west-2 group");
    assert_eq!(fleet.registrations().await, home_before, "us-east-1 untouched");
    let published = fleet.published().await;
    assert_eq!(published.len(), 1, "the summary went to the home topic");
    assert!(published[0]["Subject"].as_str().unwrap().contains(&west.instance));

    // The home region still works through the home clients, and us-west-2's clients are kept for the next event.
    let node = &fleet.spot[0];
    invoke(&app, spot_event(&node.id, "us-east-1", "123456789012"))
        .await
        .expect("home cleanup succeeds");
    assert!(fleet.registrations_of(node, &fleet.registrations().await).is_empty());
}

#[tokio::test]
async fn another_account_is_refused_without_a_role_and_nothing_is_touched() {
    let moto = Moto::start();
    let fleet = Fleet::build(&moto.sdk_config().await, 1).await;
    let app = app(&moto, &fleet, &[&fleet.quarantine_group], None).await;
    let node = &fleet.spot[0];
    let before = fleet.registrations().await;

    let error = invoke(&app, spot_event(&node.id, "us-east-1", OTHER_ACCOUNT))
        .await
        .expect_err("refused");
    assert_eq!(error.error_type(), "AccountNotAllowed");
    assert!(
        error.to_string().contains("CROSS_ACCOUNT_ROLE_NAME is not set"),
        "{error}"
    );
    assert_eq!(fleet.registrations().await, before);
    assert!(fleet.published().await.is_empty());
}

#[tokio::test]
async fn another_account_is_reached_through_the_configured_role() {
    let moto = Moto::start();
    let home = moto.sdk_config().await;
    let fleet = Fleet::build(&home, 1).await;
    // The other account's resources, created with that account's credentials: moto gives credentials from
    // AssumeRole the role's account.
    let role =
        aws_config::sts::AssumeRoleProvider::builder(format!("arn:aws:iam::{OTHER_ACCOUNT}:role/spot-cleanup-member"))
            .session_name("setup")
            .configure(&home)
            .build()
            .await;
    let other_config = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(role)
        .endpoint_url(&moto.endpoint)
        .load()
        .await;
    let outpost = Outpost::build(&other_config, "us-east-1a").await;
    let seen_from_home = fleet
        .ec2
        .describe_instances()
        .filters(Filter::builder().name("instance-id").values(&outpost.instance).build())
        .send()
        .await
        .unwrap();
    assert!(
        seen_from_home.reservations().is_empty(),
        "the instance is in the other account only"
    );
    let app = app(
        &moto,
        &fleet,
        &[&fleet.quarantine_group, &outpost.quarantine_group],
        Some("spot-cleanup-member"),
    )
    .await;

    let answer = invoke(&app, spot_event(&outpost.instance, "us-east-1", OTHER_ACCOUNT))
        .await
        .expect("cleanup succeeds");
    let summary: Summary = serde_json::from_value(answer).unwrap();
    assert_eq!(summary.outcome.as_str(), "cleaned", "{summary:#?}");
    assert_eq!(outpost.targets().await, 0);
    assert_eq!(outpost.quarantined_enis().await, 1);
    assert_eq!(fleet.published().await.len(), 1, "reported to the home topic");
}
