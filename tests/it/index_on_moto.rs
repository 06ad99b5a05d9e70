//! The registration index against moto, which serves DynamoDB as well as ELB: a scheduled refresh fills it,
//! CloudTrail events keep it current, and an interruption deregisters what it knows before the sweep starts.
//!
//! moto answers DeregisterTargets for a target that is not registered with InvalidTarget, where AWS answers success.
//! An index entry whose target has left is harmless on AWS, so these tests keep the index accurate unless the test is
//! about staleness, and then say what moto does differently.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_dynamodb::types::AttributeValue;
use common::fleet::{self, Fleet};
use common::{CallCounter, Moto};
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};
use spot_cleanup::registration::TargetState;
use spot_cleanup::{App, HandlerError, Summary, handle};

const TABLE: &str = "spot-cleanup-registrations";

async fn invoke(app: &App, payload: Value) -> Result<Value, HandlerError> {
    handle(app, LambdaEvent::new(payload, Context::default())).await
}

/// The function with the index on, and a fresh counter of the calls it sends.
async fn app_with_index(moto: &Moto, fleet: &Fleet, table: &str) -> (App, CallCounter) {
    let (clients, counter) = common::counted_clients(&moto.sdk_config().await);
    (App::new(fleet.config_with_index(table), clients), counter)
}

/// Every item of the index, by (pk, sk).
async fn index_items(moto: &Moto) -> BTreeMap<(String, String), BTreeMap<String, AttributeValue>> {
    let dynamodb = aws_sdk_dynamodb::Client::new(&moto.sdk_config().await);
    let scan = dynamodb.scan().table_name(TABLE).send().await.unwrap();
    scan.items()
        .iter()
        .map(|item| {
            let text = |name: &str| item[name].as_s().unwrap().clone();
            ((text("pk"), text("sk")), item.clone().into_iter().collect())
        })
        .collect()
}

/// The (pk, sk) of the registrations in the index, group items left out.
async fn indexed(moto: &Moto) -> BTreeSet<(String, String)> {
    index_items(moto)
        .await
        .into_keys()
        // Group items, and the claims that share the table (src/steps/claim/), are not registrations.
        .filter(|(pk, sk)| sk != "group" && !pk.starts_with("claim#"))
        .collect()
}

/// A CloudTrail event from `events/` for this group and these targets, made just now.
fn cloudtrail(file: &str, target_group_arn: &str, targets: Value) -> Value {
    let mut event = common::event_for(file, "i-0123456789abcdef0");
    event["detail"]["eventTime"] = event["time"].clone();
    event["detail"]["requestParameters"] = json!({"targetGroupArn": target_group_arn, "targets": targets});
    event
}

fn refresh_event() -> Value {
    common::event_for("scheduled-refresh.json", "i-0123456789abcdef0")
}

#[tokio::test]
async fn a_scheduled_refresh_fills_the_index_and_an_interruption_deregisters_from_it_first() {
    let moto = Moto::start();
    let shared = moto.sdk_config().await;
    let fleet = Fleet::build(&shared, 1).await;
    common::create_index_table(&shared, TABLE).await;
    let node = &fleet.spot[0];
    let vpc = &fleet.vpc_id;
    let before = fleet.registrations().await;

    // The refresh: every instance and IP group of the region, described two at a time, written to the table.
    let (app, refresh_calls) = app_with_index(&moto, &fleet, TABLE).await;
    let answer = invoke(&app, refresh_event()).await.expect("the refresh answers");
    let report = &answer["index_refresh"];
    assert_eq!(report["errors"], json!([]), "{answer}");
    assert_eq!(
        report["target_groups"],
        json!(5),
        "four in the fleet's VPC, one in the other"
    );
    assert_eq!(report["target_groups_described"], json!(5));
    assert_eq!(report["registrations"], json!(before.len()));
    assert_eq!(
        report["written"],
        json!(before.len() + 5),
        "each registration, and each group's own item"
    );
    assert_eq!(report["deleted"], json!(0));
    assert_eq!(report["event_id"], json!("53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa"));
    assert_eq!(refresh_calls.get("DescribeTargetGroups"), 1);
    assert_eq!(refresh_calls.get("DescribeTargetHealth"), 5);

    let index = index_items(&moto).await;
    let web = &fleet.target_groups["web-nodeport"];
    let pods = &fleet.target_groups["pods-ip"];
    let item = &index[&(format!("instance#{}", node.id), format!("{web}#30080"))];
    assert_eq!(item["target_group_name"].as_s().unwrap(), "web-nodeport");
    assert_eq!(item["kind"].as_s().unwrap(), "instance");
    assert_eq!(item["vpc_id"].as_s().unwrap(), vpc);
    assert!(item.contains_key("updated_at") && item.contains_key("expires_at"));
    for ip in &node.pod_ips {
        let item = &index[&(format!("ip#{vpc}#{ip}"), format!("{pods}#8080"))];
        assert_eq!(item["kind"].as_s().unwrap(), "ip");
        assert_eq!(item["target_id"].as_s().unwrap(), ip);
    }
    assert!(
        index.contains_key(&(
            format!("ip#{}#{}", fleet.other_vpc_id, node.primary_ip),
            format!("{}#8080", fleet.other_vpc_group)
        )),
        "the other VPC's registration of the same address is filed under that VPC"
    );
    assert!(!index.contains_key(&(format!("ip#{vpc}#{}", node.primary_ip), format!("{pods}#8080"))));

    // A second refresh finds nothing changed and writes nothing: the table costs reads, not writes, when idle.
    let again = invoke(&app, refresh_event()).await.unwrap();
    assert_eq!(again["index_refresh"]["written"], json!(0), "{again}");
    assert_eq!(again["index_refresh"]["unchanged"], json!(before.len() + 5));
    assert_eq!(index_items(&moto).await, index, "nothing rewritten");

    // The interruption: what the index knows leaves before the sweep sends its first DescribeTargetHealth.
    let (app, calls) = app_with_index(&moto, &fleet, TABLE).await;
    let answer = invoke(&app, common::event_for("spot-interruption-terminate.json", &node.id))
        .await
        .expect("cleanup succeeds");
    let summary: Summary = serde_json::from_value(answer).unwrap();

    let ours = fleet.registrations_of(node, &before);
    let expected: BTreeSet<_> = before.difference(&ours).cloned().collect();
    assert_eq!(
        fleet.registrations().await,
        expected,
        "only the node's registrations left"
    );
    assert_eq!(summary.outcome.as_str(), "cleaned", "{summary:#?}");
    assert!(summary.errors.is_empty() && summary.remaining.is_empty() && summary.warnings.is_empty());
    assert_eq!(common::removed(&summary), ours);
    assert!(
        summary
            .removed
            .iter()
            .all(|t| t.state == Some(TargetState::Deregistered))
    );

    let sequence = calls.sequence();
    let first_describe = sequence.iter().position(|o| o == "DescribeTargetHealth").unwrap();
    let early = sequence[..first_describe]
        .iter()
        .filter(|o| *o == "DeregisterTargets")
        .count();
    assert_eq!(early, 3, "all three groups left before the sweep began: {sequence:?}");
    let first_deregister = sequence.iter().position(|o| o == "DeregisterTargets").unwrap();
    let elb_reads = [
        "DescribeTargetGroups",
        "DescribeTargetHealth",
        "DescribeTargetGroupAttributes",
    ];
    assert!(
        !sequence[..first_deregister]
            .iter()
            .any(|o| elb_reads.contains(&o.as_str())),
        "nothing from ELB's Describe* budget was spent before: {sequence:?}"
    );
    // The instance id and its three addresses; the others are the wave's driver looking for members joining.
    assert!(calls.get("Query") > 3, "{sequence:?}");
    assert_eq!(
        calls.get("DeregisterTargets"),
        3,
        "one wave, nothing left for the sweep to add"
    );
    assert_eq!(
        calls.get("DescribeTargetHealth"),
        4,
        "the sweep's view of the four groups is the check; sweep + verify would need 4 + 3"
    );
}

#[tokio::test]
async fn cloudtrail_register_and_deregister_events_keep_the_index_current() {
    let moto = Moto::start();
    let shared = moto.sdk_config().await;
    let fleet = Fleet::build(&shared, 1).await;
    common::create_index_table(&shared, TABLE).await;
    let (app, calls) = app_with_index(&moto, &fleet, TABLE).await;
    let (node, neighbour) = (&fleet.spot[0], &fleet.neighbour);
    let (web, pods) = (&fleet.target_groups["web-nodeport"], &fleet.target_groups["pods-ip"]);
    let vpc = &fleet.vpc_id;
    let register = "cloudtrail-register-targets.json";
    let deregister = "cloudtrail-deregister-targets.json";

    // RegisterTargets: the group is described once, then remembered in the index.
    let answer = invoke(&app, cloudtrail(register, web, json!([{"id": node.id, "port": 30080}])))
        .await
        .unwrap();
    assert_eq!(answer["index_update"]["written"], json!(1), "{answer}");
    invoke(&app, cloudtrail(register, web, json!([{"id": neighbour.id}])))
        .await
        .unwrap();
    assert_eq!(
        calls.get("DescribeTargetGroups"),
        1,
        "the second event read the group from the index"
    );
    // An IP target without a port gets the group's, and is filed under the group's VPC.
    let ip = &node.pod_ips[0];
    invoke(
        &app,
        cloudtrail(register, pods, json!([{"id": ip, "availabilityZone": "us-east-1b"}])),
    )
    .await
    .unwrap();
    let items = index_items(&moto).await;
    let ip_item = &items[&(format!("ip#{vpc}#{ip}"), format!("{pods}#8080"))];
    assert_eq!(ip_item["availability_zone"].as_s().unwrap(), "us-east-1b");
    assert_eq!(
        indexed(&moto).await,
        BTreeSet::from([
            (format!("instance#{}", node.id), format!("{web}#30080")),
            (format!("instance#{}", neighbour.id), format!("{web}#30080")),
            (format!("ip#{vpc}#{ip}"), format!("{pods}#8080")),
        ])
    );
    assert_eq!(calls.get("DescribeTargetHealth"), 0, "updates never sweep");

    // DeregisterTargets without a port means the group's port.
    let answer = invoke(&app, cloudtrail(deregister, web, json!([{"id": node.id}])))
        .await
        .unwrap();
    assert_eq!(answer["index_update"]["deleted"], json!(1), "{answer}");
    invoke(&app, cloudtrail(deregister, pods, json!([{"id": ip, "port": 8080}])))
        .await
        .unwrap();
    assert_eq!(
        indexed(&moto).await,
        BTreeSet::from([(format!("instance#{}", neighbour.id), format!("{web}#30080"))])
    );

    // A call that failed changed nothing, and neither does its event.
    let mut failed = cloudtrail(deregister, web, json!([{"id": neighbour.id}]));
    failed["detail"]["errorCode"] = json!("AccessDenied");
    let answer = invoke(&app, failed).await.unwrap();
    assert!(
        answer["index_update"]["skipped"][0]
            .as_str()
            .unwrap()
            .contains("AccessDenied"),
        "{answer}"
    );
    // An event older than what the index holds (delivered late) does not undo the newer state.
    let mut late = cloudtrail(deregister, web, json!([{"id": neighbour.id}]));
    late["detail"]["eventTime"] = json!("2020-01-01T00:00:00Z");
    let answer = invoke(&app, late).await.unwrap();
    assert_eq!(answer["index_update"]["deleted"], json!(0), "{answer}");
    assert!(answer["index_update"]["skipped"][0].as_str().unwrap().contains("newer"));
    // A group that has since been deleted: nothing to file, and no error to retry.
    let gone = web.replace("web-nodeport", "deleted-group");
    let answer = invoke(&app, cloudtrail(register, &gone, json!([{"id": node.id}])))
        .await
        .unwrap();
    assert!(
        answer["index_update"]["skipped"][0]
            .as_str()
            .unwrap()
            .contains("no longer exists"),
        "{answer}"
    );
    assert_eq!(
        indexed(&moto).await,
        BTreeSet::from([(format!("instance#{}", neighbour.id), format!("{web}#30080"))])
    );
}

#[tokio::test]
async fn with_an_empty_or_missing_index_the_sweep_still_cleans_up() {
    let moto = Moto::start();
    let shared = moto.sdk_config().await;
    let fleet = Fleet::build(&shared, 2).await;
    common::create_index_table(&shared, TABLE).await;

    // Configured, never refreshed: the lookups find nothing and the sweep does the whole job.
    let (app, calls) = app_with_index(&moto, &fleet, TABLE).await;
    let answer = invoke(
        &app,
        common::event_for("spot-interruption-terminate.json", &fleet.spot[0].id),
    )
    .await
    .expect("cleanup succeeds");
    let summary: Summary = serde_json::from_value(answer).unwrap();
    assert_eq!(summary.outcome.as_str(), "cleaned", "{summary:#?}");
    assert_eq!(summary.removed.len(), 4);
    assert!(
        fleet
            .registrations_of(&fleet.spot[0], &fleet.registrations().await)
            .is_empty()
    );
    assert!(calls.get("Query") >= 1);
    assert_eq!(calls.get("DescribeTargetHealth"), 4 + 3, "sweep 4 groups, verify 3");

    // The table is not there at all: the index locator fails, the summary says so, and the sweep covers it.
    let (app, _) = app_with_index(&moto, &fleet, "no-such-table").await;
    let answer = invoke(
        &app,
        common::event_for("spot-interruption-terminate.json", &fleet.spot[1].id),
    )
    .await
    .expect("cleanup succeeds without the index");
    let summary: Summary = serde_json::from_value(answer).unwrap();
    assert_eq!(summary.outcome.as_str(), "cleaned", "{summary:#?}");
    assert_eq!(summary.removed.len(), 4);
    assert!(
        summary
            .warnings
            .iter()
            .any(|w| w.contains("index locator failed, the sweep covers it")),
        "{:?}",
        summary.warnings
    );
    assert!(
        fleet
            .registrations_of(&fleet.spot[1], &fleet.registrations().await)
            .is_empty()
    );
}

#[tokio::test]
async fn stale_index_entries_do_not_fail_the_cleanup() {
    let moto = Moto::start();
    let shared = moto.sdk_config().await;
    let fleet = Fleet::build(&shared, 1).await;
    common::create_index_table(&shared, TABLE).await;
    let node = &fleet.spot[0];
    let pods = fleet.target_groups["pods-ip"].clone();
    let api = fleet.target_groups["api-nodeport"].clone();
    // Two registrations the index will remember after they are gone: the node's primary address in pods-ip, and a
    // whole target group that is deleted.
    fleet::register(&fleet.elb, &pods, vec![fleet::target(&node.primary_ip, 8080)]).await;
    let doomed = fleet::create_target_group(
        &fleet.elb,
        "doomed",
        &fleet.vpc_id,
        aws_sdk_elasticloadbalancingv2::types::TargetTypeEnum::Instance,
        9000,
    )
    .await;
    fleet::register(&fleet.elb, &doomed, vec![fleet::target(&node.id, 9000)]).await;
    let (app, _) = app_with_index(&moto, &fleet, TABLE).await;
    invoke(&app, refresh_event()).await.unwrap();

    // Changes the index never hears of (no CloudTrail here).
    let gone = |arn: &str, id: &str, port: i32| {
        fleet
            .elb
            .deregister_targets()
            .target_group_arn(arn)
            .targets(fleet::target(id, port))
            .send()
    };
    gone(&pods, &node.primary_ip, 8080).await.unwrap();
    gone(&api, &node.id, 30443).await.unwrap();
    gone(&doomed, &node.id, 9000).await.unwrap();
    fleet
        .elb
        .delete_target_group()
        .target_group_arn(&doomed)
        .send()
        .await
        .unwrap();

    // On moto each stale entry fails its group's whole DeregisterTargets (InvalidTarget, TargetGroupNotFound); on AWS
    // only the deleted group's would. Either way the sweep sees what is still registered, sends it again, and drops
    // what was stale knowledge instead of reporting it.
    let (app, calls) = app_with_index(&moto, &fleet, TABLE).await;
    let answer = invoke(&app, common::event_for("spot-interruption-terminate.json", &node.id))
        .await
        .expect("cleanup succeeds despite the stale entries");
    let summary: Summary = serde_json::from_value(answer).unwrap();
    assert_eq!(summary.outcome.as_str(), "cleaned", "{summary:#?}");
    assert!(summary.errors.is_empty(), "{:?}", summary.errors);
    assert!(fleet.registrations_of(node, &fleet.registrations().await).is_empty());
    assert_eq!(
        fleet
            .registrations_of(&fleet.neighbour, &fleet.registrations().await)
            .len(),
        5
    );
    assert!(
        summary.removed.iter().all(|t| t.target_group_name != "doomed"),
        "a group that no longer exists is not reported: {:?}",
        summary.removed
    );
    assert!(
        calls.get("DeregisterTargets") > 3,
        "the sweep's wave sent again what the stale calls left"
    );

    // The next refresh forgets both.
    let report = invoke(&app, refresh_event()).await.unwrap();
    assert_eq!(report["index_refresh"]["errors"], json!([]), "{report}");
    let index = indexed(&moto).await;
    let in_fleet_vpc = format!("ip#{}#{}", fleet.vpc_id, node.primary_ip);
    assert!(
        !index.iter().any(|(pk, _)| pk.contains(&node.id) || pk == &in_fleet_vpc),
        "{index:?}"
    );
    assert!(!index_items(&moto).await.keys().any(|(pk, _)| pk.contains("doomed")));
}

#[tokio::test]
async fn index_events_are_refused_without_an_index_and_change_nothing() {
    let moto = Moto::start();
    let shared = moto.sdk_config().await;
    let fleet = Fleet::build(&shared, 1).await;
    let (clients, calls) = common::counted_clients(&shared);
    let app = App::new(fleet.config(false), clients);
    let before = fleet.registrations().await;
    let web = &fleet.target_groups["web-nodeport"];

    for payload in [
        refresh_event(),
        cloudtrail(
            "cloudtrail-register-targets.json",
            web,
            json!([{"id": fleet.spot[0].id}]),
        ),
        cloudtrail(
            "cloudtrail-deregister-targets.json",
            web,
            json!([{"id": fleet.spot[0].id}]),
        ),
    ] {
        let error = invoke(&app, payload).await.expect_err("refused");
        assert_eq!(error.error_type(), "InvalidInput");
        assert!(
            error.to_string().contains("REGISTRATION_INDEX_TABLE is not set"),
            "{error}"
        );
    }
    assert!(
        calls.snapshot().is_empty(),
        "no AWS call at all: {:?}",
        calls.snapshot()
    );
    assert_eq!(fleet.registrations().await, before);
    assert!(fleet.published().await.is_empty());
}
