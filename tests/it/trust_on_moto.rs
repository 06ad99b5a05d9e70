//! The guard, the claim and the restore against moto, through the real handler: what is refused changes
//! nothing and is reported as a security signal; a second delivery ends quietly; a quarantine can be undone.

use crate::common;

use std::collections::BTreeSet;

use common::fleet::{Fleet, Node};
use common::{CallCounter, Moto};
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};
use spot_cleanup::tags::{CLAIM_TAG_PREFIX, DONE_TAG, LEFT_TARGETS_TAG, ORIGINAL_GROUPS_TAG};
use spot_cleanup::{App, Config, HandlerError, Summary, handle};

const OWN_ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:spot-cleanup";

/// The calls that change something in AWS. Refused requests must send none of them.
const MUTATIONS: [&str; 6] = [
    "DeregisterTargets",
    "ModifyNetworkInterfaceAttribute",
    "CreateTags",
    "DeleteTags",
    "PutItem",
    "ModifyInstanceAttribute",
];

fn context() -> Context {
    let mut context = Context::default();
    context.invoked_function_arn = OWN_ARN.into();
    context
}

async fn invoke(app: &App, payload: Value) -> Result<Value, HandlerError> {
    handle(app, LambdaEvent::new(payload, context())).await
}

async fn app_with(moto: &Moto, config: Config) -> (App, CallCounter) {
    let (clients, counter) = common::counted_clients(&moto.sdk_config().await);
    (App::new(config, clients), counter)
}

/// The same deployment's restore entry point (`ENTRY_POINT=restore`), the only one that serves restores.
async fn restorer_with(moto: &Moto, mut config: Config) -> (App, CallCounter) {
    config.entry_point = spot_cleanup::config::EntryPoint::Restore;
    app_with(moto, config).await
}

fn mutations(calls: &CallCounter) -> Vec<String> {
    calls
        .sequence()
        .into_iter()
        .filter(|op| MUTATIONS.contains(&op.as_str()))
        .collect()
}

/// What a test compares before and after: every registration and every ENI (groups and tags) of the fleet.
async fn fleet_state(fleet: &Fleet) -> (BTreeSet<common::fleet::Registration>, Vec<String>) {
    let mut enis = Vec::new();
    for node in fleet.spot.iter().chain([&fleet.neighbour]) {
        enis.push(format!("{:?}", fleet.enis(node).await));
    }
    (fleet.registrations().await, enis)
}

fn attribute(note: &Value, name: &str) -> String {
    note["MessageAttributes"][name]["Value"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn summary(answer: Value) -> Summary {
    serde_json::from_value(answer.clone()).unwrap_or_else(|e| panic!("a summary ({e}): {answer:#}"))
}

async fn instance_tags(fleet: &Fleet, node: &Node) -> BTreeSet<String> {
    let output = fleet
        .ec2
        .describe_tags()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("resource-id")
                .values(&node.id)
                .build(),
        )
        .send()
        .await
        .unwrap();
    output
        .tags()
        .iter()
        .filter_map(|t| t.key())
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_spot_notice_for_an_on_demand_instance_is_refused_alerted_and_changes_nothing() {
    let moto = Moto::start();
    let fleet = Fleet::build(&moto.sdk_config().await, 1).await;
    let (app, calls) = app_with(&moto, fleet.config(false)).await;
    let before = fleet_state(&fleet).await;

    let error = invoke(
        &app,
        common::event_for("spot-interruption-terminate.json", &fleet.neighbour.id),
    )
    .await
    .expect_err("the neighbour is on-demand");
    assert_eq!(error.error_type(), "OutOfScope", "{error}");
    assert!(error.to_string().contains("not Spot"), "{error}");

    assert_eq!(fleet_state(&fleet).await, before);
    assert_eq!(mutations(&calls), Vec::<String>::new(), "{:?}", calls.sequence());
    let published = fleet.published().await;
    assert_eq!(published.len(), 1, "{published:#?}");
    assert_eq!(attribute(&published[0], "security"), "true");
    assert_eq!(attribute(&published[0], "outcome"), "refused");
    assert_eq!(attribute(&published[0], "error_type"), "OutOfScope");
    assert_eq!(attribute(&published[0], "instance_id"), fleet.neighbour.id);
}

#[tokio::test]
async fn required_tags_and_the_events_account_bound_what_may_be_touched() {
    let moto = Moto::start();
    let fleet = Fleet::build(&moto.sdk_config().await, 2).await;
    let before = fleet_state(&fleet).await;

    // The Spot nodes are tagged Name=spot-N only: a required cluster tag puts them out of scope.
    let config = fleet
        .config_with(&[("REQUIRED_TAGS", "kubernetes.io/cluster/prod=owned")])
        .unwrap();
    let (app, calls) = app_with(&moto, config).await;
    let error = invoke(&app, common::event_for("node-agent.json", &fleet.spot[0].id))
        .await
        .expect_err("untagged");
    assert_eq!(error.error_type(), "OutOfScope");
    assert!(
        error.to_string().contains("no tag kubernetes.io/cluster/prod"),
        "{error}"
    );

    // An event of another account, without cross-account handling: refused before anything is described.
    let (app, _) = app_with(&moto, fleet.config(false)).await;
    let mut foreign = common::event_for("spot-interruption-terminate.json", &fleet.spot[1].id);
    foreign["account"] = json!("210987654321");
    let error = invoke(&app, foreign.clone()).await.expect_err("another account");
    assert_eq!(error.error_type(), "OutOfScope");
    assert!(error.to_string().contains("account 210987654321"), "{error}");
    let mut elsewhere = common::event_for("spot-interruption-terminate.json", &fleet.spot[1].id);
    elsewhere["region"] = json!("eu-west-1");
    assert_eq!(invoke(&app, elsewhere).await.unwrap_err().error_type(), "OutOfScope");

    assert_eq!(fleet_state(&fleet).await, before);
    assert_eq!(mutations(&calls), Vec::<String>::new());
    let published = fleet.published().await;
    assert_eq!(published.len(), 3);
    assert!(published.iter().all(|n| attribute(n, "security") == "true"));

    // With cross-account handling configured, the account no longer bounds it (the region still does).
    let config = fleet
        .config_with(&[("CROSS_ACCOUNT_ROLE_NAME", "spot-cleanup-member")])
        .unwrap();
    let (app, _) = app_with(&moto, config).await;
    let answer = invoke(&app, foreign).await.expect("cross-account is expected now");
    assert_eq!(summary(answer).outcome.as_str(), "cleaned");
}

#[tokio::test]
async fn a_stale_event_is_refused_and_reported_but_not_as_a_security_signal() {
    let moto = Moto::start();
    let fleet = Fleet::build(&moto.sdk_config().await, 1).await;
    let config = fleet.config_with(&[("MAX_EVENT_AGE", "5m")]).unwrap();
    let (app, calls) = app_with(&moto, config).await;
    let before = fleet_state(&fleet).await;
    let node = &fleet.spot[0];
    let ago = |minutes: i64| (chrono::Utc::now() - chrono::Duration::minutes(minutes)).to_rfc3339();

    let mut event = common::event_for("spot-interruption-terminate.json", &node.id);
    event["time"] = json!(ago(6));
    let error = invoke(&app, event).await.expect_err("six minutes old");
    assert_eq!(error.error_type(), "StaleEvent", "{error}");
    let mut agent = common::event_for("node-agent.json", &node.id);
    agent["time"] = json!(ago(6));
    assert_eq!(invoke(&app, agent).await.unwrap_err().error_type(), "StaleEvent");

    assert_eq!(fleet_state(&fleet).await, before);
    assert_eq!(mutations(&calls), Vec::<String>::new());
    let published = fleet.published().await;
    assert_eq!(published.len(), 2);
    for note in &published {
        assert_eq!(attribute(note, "outcome"), "stale");
        assert_eq!(attribute(note, "security"), "false");
    }

    // Four minutes old is within the age: it is acted on.
    let mut event = common::event_for("spot-interruption-terminate.json", &node.id);
    event["time"] = json!(ago(4));
    assert_eq!(summary(invoke(&app, event).await.unwrap()).outcome.as_str(), "cleaned");
}

/// Two deliveries of one interruption at once (the node agent and EventBridge): one cleans up and publishes, the
/// other ends quietly. Then a late third one finds the work done.
async fn concurrent_deliveries(config: Config, moto: &Moto, fleet: &Fleet) {
    let (app, _) = app_with(moto, config).await;
    let node = &fleet.spot[0];
    let (agent, eventbridge) = tokio::join!(
        invoke(&app, common::event_for("node-agent.json", &node.id)),
        invoke(&app, common::event_for("spot-interruption-terminate.json", &node.id)),
    );
    let mut outcomes: Vec<String> = [agent, eventbridge]
        .into_iter()
        .map(|answer| summary(answer.expect("both succeed")).outcome.as_str().to_owned())
        .collect();
    outcomes.sort();
    assert_eq!(outcomes, ["already-handled", "cleaned"]);
    assert_eq!(fleet.published().await.len(), 1, "one alert per interruption");
    assert!(fleet.registrations_of(node, &fleet.registrations().await).is_empty());

    let late = summary(
        invoke(&app, common::event_for("spot-interruption-stop.json", &node.id))
            .await
            .unwrap(),
    );
    assert_eq!(late.outcome.as_str(), "already-handled");
    assert!(
        late.warnings[0].contains("already cleaned it up"),
        "{:?}",
        late.warnings
    );
    assert!(fleet.published().await.is_empty());
}

#[tokio::test]
async fn concurrent_deliveries_with_instance_tags_act_once() {
    let moto = Moto::start();
    let fleet = Fleet::build(&moto.sdk_config().await, 1).await;
    concurrent_deliveries(fleet.config(false), &moto, &fleet).await;
    let tags = instance_tags(&fleet, &fleet.spot[0]).await;
    assert!(tags.contains(DONE_TAG), "{tags:?}");
    assert!(
        !tags.iter().any(|t| t.starts_with(CLAIM_TAG_PREFIX)),
        "claims are released: {tags:?}"
    );
}

#[tokio::test]
async fn concurrent_deliveries_with_the_index_table_act_once() {
    let moto = Moto::start();
    let shared = moto.sdk_config().await;
    let fleet = Fleet::build(&shared, 1).await;
    common::create_index_table(&shared, "registrations").await;
    concurrent_deliveries(fleet.config_with_index("registrations"), &moto, &fleet).await;
    let item = aws_sdk_dynamodb::Client::new(&shared)
        .get_item()
        .table_name("registrations")
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("claim#{}", fleet.spot[0].id)),
        )
        .key("sk", aws_sdk_dynamodb::types::AttributeValue::S("claim".into()))
        .send()
        .await
        .unwrap();
    let state = item
        .item()
        .and_then(|i| i.get("state"))
        .and_then(|v| v.as_s().ok())
        .cloned();
    assert_eq!(state.as_deref(), Some("done"));
    let tags = instance_tags(&fleet, &fleet.spot[0]).await;
    assert!(
        !tags.iter().any(|t| t.starts_with("spot-cleanup:")),
        "the table holds the marker, not the instance: {tags:?}"
    );
}

/// A first run that could not finish (no quarantine group for the VPC) leaves the marker open, so its retry does
/// the rest; only then does a further delivery end quietly.
async fn retry_after_partial_failure(extra: &[(&str, &str)], moto: &Moto, fleet: &Fleet) {
    let node = &fleet.spot[0];
    let mut broken: Vec<(&str, &str)> = extra.to_vec();
    broken.push(("QUARANTINE_SECURITY_GROUP_ID", &fleet.other_vpc_quarantine_group));
    let (app, _) = app_with(moto, fleet.config_with(&broken).unwrap()).await;
    let error = invoke(&app, common::event_for("spot-interruption-terminate.json", &node.id))
        .await
        .expect_err("quarantine cannot be done");
    assert_eq!(error.error_type(), "CleanupIncomplete");
    assert_eq!(fleet.published().await.len(), 1);

    let (app, _) = app_with(moto, fleet.config_with(extra).unwrap()).await;
    let retry = summary(
        invoke(&app, common::event_for("spot-interruption-terminate.json", &node.id))
            .await
            .expect("the retry finishes the work"),
    );
    assert_eq!(retry.outcome.as_str(), "cleaned");
    assert_eq!(
        fleet.enis_in_group(node, &fleet.quarantine_group).await,
        node.enis.iter().cloned().collect()
    );
    assert_eq!(fleet.published().await.len(), 1);
    let again = summary(
        invoke(&app, common::event_for("node-agent.json", &node.id))
            .await
            .unwrap(),
    );
    assert_eq!(again.outcome.as_str(), "already-handled");
    assert!(fleet.published().await.is_empty());
}

#[tokio::test]
async fn a_retry_after_a_partial_failure_still_finishes_with_instance_tags() {
    let moto = Moto::start();
    let fleet = Fleet::build(&moto.sdk_config().await, 1).await;
    retry_after_partial_failure(&[], &moto, &fleet).await;
}

#[tokio::test]
async fn a_retry_after_a_partial_failure_still_finishes_with_the_index_table() {
    let moto = Moto::start();
    let shared = moto.sdk_config().await;
    let fleet = Fleet::build(&shared, 1).await;
    common::create_index_table(&shared, "registrations").await;
    retry_after_partial_failure(&[("REGISTRATION_INDEX_TABLE", "registrations")], &moto, &fleet).await;
}

#[tokio::test]
async fn restore_puts_every_eni_back_removes_the_record_and_reopens_the_marker() {
    let moto = Moto::start();
    let fleet = Fleet::build(&moto.sdk_config().await, 1).await;
    let (app, _) = app_with(&moto, fleet.config(false)).await;
    let (restorer, _) = restorer_with(&moto, fleet.config(false)).await;
    let node = &fleet.spot[0];
    let original = fleet.enis(node).await;
    invoke(&app, common::event_for("spot-interruption-stop.json", &node.id))
        .await
        .expect("cleaned");
    assert_eq!(fleet.published().await.len(), 1);

    let restore = json!({"action": "restore", "instance_id": node.id});
    let answer = invoke(&restorer, restore.clone()).await.expect("restored");
    assert_eq!(answer["restore"]["outcome"], "restored", "{answer:#}");
    assert_eq!(answer["restore"]["network_interfaces"].as_array().unwrap().len(), 2);
    for (eni, (groups, tags)) in fleet.enis(node).await {
        assert_eq!(groups, BTreeSet::from([fleet.app_group.clone()]), "{eni}");
        assert!(
            !tags.keys().any(|k| k.starts_with(ORIGINAL_GROUPS_TAG)),
            "{eni}: {tags:?}"
        );
    }
    assert_eq!(fleet.enis(node).await, original);
    let published = fleet.published().await;
    assert_eq!(published.len(), 1);
    assert_eq!(attribute(&published[0], "kind"), "restore");
    assert_eq!(attribute(&published[0], "outcome"), "restored");
    assert!(
        instance_tags(&fleet, node)
            .await
            .iter()
            .all(|t| !t.starts_with("spot-cleanup:"))
    );

    // Nothing recorded any more: a second restore has nothing to do and says nothing.
    let answer = invoke(&restorer, restore).await.unwrap();
    assert_eq!(answer["restore"]["outcome"], "nothing-to-restore");
    assert!(fleet.published().await.is_empty());
    // The marker went with the record, so the next interruption of this instance is handled again.
    let next = summary(
        invoke(&app, common::event_for("spot-interruption-terminate.json", &node.id))
            .await
            .unwrap(),
    );
    assert_eq!(next.outcome.as_str(), "cleaned");
}

#[tokio::test]
async fn an_instance_that_is_running_again_is_restored_automatically() {
    let moto = Moto::start();
    let fleet = Fleet::build(&moto.sdk_config().await, 2).await;
    let (app, _) = app_with(&moto, fleet.config(false)).await;
    let (restorer, calls) = restorer_with(&moto, fleet.config(false)).await;
    let (stopped, untouched) = (&fleet.spot[0], &fleet.spot[1]);
    let original = fleet.enis(stopped).await;
    invoke(&app, common::event_for("spot-interruption-hibernate.json", &stopped.id))
        .await
        .expect("cleaned");
    fleet.published().await;
    let quarantined = fleet.enis(stopped).await;

    // A replayed "running" event from long ago must not undo a quarantine.
    let mut replayed = common::event_for("ec2-state-change-running.json", &stopped.id);
    replayed["time"] = json!((chrono::Utc::now() - chrono::Duration::hours(2)).to_rfc3339());
    assert_eq!(
        invoke(&restorer, replayed).await.unwrap_err().error_type(),
        "StaleEvent"
    );
    assert_eq!(fleet.enis(stopped).await, quarantined);
    assert_eq!(attribute(&fleet.published().await[0], "outcome"), "stale");

    let answer = invoke(
        &restorer,
        common::event_for("ec2-state-change-running.json", &stopped.id),
    )
    .await
    .expect("restored");
    assert_eq!(answer["restore"]["outcome"], "restored", "{answer:#}");
    assert_eq!(answer["restore"]["trigger"]["source"], "eventbridge");
    // Every ENI has its groups back and no record left: exactly as before the interruption.
    assert_eq!(fleet.enis(stopped).await, original);
    assert_eq!(fleet.published().await.len(), 1);
    // By default its target groups' owners register it again, not the restore.
    assert!(fleet.registrations_of(stopped, &fleet.registrations().await).is_empty());
    assert!(answer["restore"].get("targets").is_none(), "{answer:#}");

    // An instance that was never quarantined starting up: nothing changes, nothing is published.
    let before = fleet.enis(untouched).await;
    let writes_before = mutations(&calls).len();
    let answer = invoke(
        &restorer,
        common::event_for("ec2-state-change-running.json", &untouched.id),
    )
    .await
    .unwrap();
    assert_eq!(answer["restore"]["outcome"], "nothing-to-restore");
    assert_eq!(fleet.enis(untouched).await, before);
    assert_eq!(mutations(&calls).len(), writes_before);
    assert!(fleet.published().await.is_empty());
}

#[tokio::test]
async fn with_reregister_on_restore_a_stopped_instance_goes_back_into_the_groups_it_left() {
    let moto = Moto::start();
    let fleet = Fleet::build(&moto.sdk_config().await, 2).await;
    let config = fleet.config_with(&[("REREGISTER_ON_RESTORE", "true")]).unwrap();
    let (app, _calls) = app_with(&moto, config.clone()).await;
    let (restorer, _) = restorer_with(&moto, config).await;
    let (stopped, terminated) = (&fleet.spot[0], &fleet.spot[1]);
    let original = fleet.enis(stopped).await;
    let before = fleet.registrations().await;
    let left = fleet.registrations_of(stopped, &before);
    assert_eq!(left.len(), 4, "two NodePorts and two pod IPs: {left:?}");

    // Spot stops it: it leaves every group, and the instance records what it left.
    let cleaned = invoke(&app, common::event_for("spot-interruption-stop.json", &stopped.id))
        .await
        .expect("cleaned");
    assert_eq!(common::removed(&summary(cleaned)), left);
    assert!(fleet.registrations_of(stopped, &fleet.registrations().await).is_empty());
    let tags = instance_tags(&fleet, stopped).await;
    assert!(tags.contains(LEFT_TARGETS_TAG), "{tags:?}");
    // A terminated instance will not come back: nothing is recorded for it.
    invoke(
        &app,
        common::event_for("spot-interruption-terminate.json", &terminated.id),
    )
    .await
    .expect("cleaned");
    assert!(!instance_tags(&fleet, terminated).await.contains(LEFT_TARGETS_TAG));
    fleet.published().await;

    // While it was stopped, one pod address went elsewhere: that target must not come back with it.
    let (moved, kept) = (&stopped.pod_ips[1], &stopped.pod_ips[0]);
    fleet
        .ec2
        .unassign_private_ip_addresses()
        .network_interface_id(&stopped.enis[1])
        .private_ip_addresses(moved)
        .send()
        .await
        .unwrap();

    let answer = invoke(
        &restorer,
        common::event_for("ec2-state-change-running.json", &stopped.id),
    )
    .await
    .expect("restored");
    let restore = &answer["restore"];
    assert_eq!(restore["outcome"], "restored", "{answer:#}");
    assert_eq!(fleet.enis(stopped).await, original);
    let back = fleet.registrations_of(stopped, &fleet.registrations().await);
    let expected: BTreeSet<_> = left.iter().filter(|(_, id, _)| id != moved).cloned().collect();
    assert_eq!(back, expected);
    assert!(back.iter().any(|(_, id, _)| id == kept) && back.iter().any(|(_, id, _)| id == &stopped.id));
    let targets = restore["targets"].as_array().expect("the targets are reported");
    assert_eq!(targets.len(), 4, "{restore:#}");
    let skipped: Vec<&Value> = targets.iter().filter(|t| t["registered"] == false).collect();
    assert_eq!(skipped.len(), 1, "{restore:#}");
    assert_eq!(skipped[0]["target_id"], moved.as_str());
    assert_eq!(skipped[0]["reason"], "the address is no longer one of the instance's");
    // The record is gone, so a second "running" event registers nothing again.
    let tags = instance_tags(&fleet, stopped).await;
    assert!(!tags.iter().any(|t| t.starts_with(LEFT_TARGETS_TAG)), "{tags:?}");
    assert_eq!(attribute(&fleet.published().await[0], "outcome"), "restored");
}

#[tokio::test]
async fn a_dry_run_restore_publishes_what_it_would_put_back_and_changes_nothing() {
    let moto = Moto::start();
    let fleet = Fleet::build(&moto.sdk_config().await, 1).await;
    let config = fleet.config_with(&[("REREGISTER_ON_RESTORE", "true")]).unwrap();
    let (app, _) = app_with(&moto, config).await;
    let dry = fleet
        .config_with(&[("REREGISTER_ON_RESTORE", "true"), ("DRY_RUN", "true")])
        .unwrap();
    let (restorer, calls) = restorer_with(&moto, dry).await;
    let node = &fleet.spot[0];
    let original = fleet.enis(node).await;
    let left = fleet.registrations_of(node, &fleet.registrations().await);
    invoke(&app, common::event_for("spot-interruption-stop.json", &node.id))
        .await
        .expect("cleaned");
    fleet.published().await;
    let quarantined = fleet.enis(node).await;
    let tags_before = instance_tags(&fleet, node).await;

    let answer = invoke(&restorer, json!({"action": "restore", "instance_id": node.id}))
        .await
        .expect("a plan is a complete answer");
    let restore = &answer["restore"];
    assert_eq!(restore["outcome"], "planned", "{answer:#}");
    // Each ENI with the groups it would get back: exactly those it had before the quarantine.
    let enis = restore["network_interfaces"].as_array().expect("the ENIs are listed");
    assert_eq!(enis.len(), original.len(), "{restore:#}");
    for eni in enis {
        let id = eni["network_interface_id"].as_str().unwrap();
        let after: BTreeSet<String> = serde_json::from_value(eni["groups_after"].clone()).unwrap();
        assert_eq!(after, original[id].0, "{eni}");
        assert_eq!(eni["restored"], false, "{eni}");
    }
    // Each target it left, none registered.
    let targets = restore["targets"].as_array().expect("the targets are listed");
    assert_eq!(targets.len(), left.len(), "{restore:#}");
    assert!(targets.iter().all(|t| t["registered"] == false), "{restore:#}");

    // Nothing changed: no write at all, the ENIs still quarantined, the records and the marker kept.
    assert!(mutations(&calls).is_empty(), "{:?}", mutations(&calls));
    assert_eq!(fleet.enis(node).await, quarantined);
    assert!(fleet.registrations_of(node, &fleet.registrations().await).is_empty());
    assert_eq!(instance_tags(&fleet, node).await, tags_before);
    // The plan is published, labelled as one.
    let published = fleet.published().await;
    assert_eq!(published.len(), 1);
    assert_eq!(attribute(&published[0], "kind"), "restore");
    assert_eq!(attribute(&published[0], "outcome"), "planned");
}

/// Times no notice can carry: the year 262142 (which once passed every check, changed AWS and then aborted the
/// process) and the year 9999, in every shape that carries a time. Each is rejected as invalid input before any AWS
/// call; in a batch, the record fails alone.
#[tokio::test]
async fn far_future_times_are_invalid_input_and_change_nothing() {
    let moto = Moto::start();
    let fleet = Fleet::build(&moto.sdk_config().await, 1).await;
    let (app, calls) = app_with(&moto, fleet.config(false)).await;
    let before = fleet_state(&fleet).await;
    let node = &fleet.spot[0];
    let with = |file: &str, key: &str, value: &str| {
        let mut event = common::event_for(file, &node.id);
        event[key] = json!(value);
        event
    };
    let mut health = common::event_for("health-scheduled-change.json", &node.id);
    health["detail"]["startTime"] = json!("Fri, 31 Dec 9999 23:59:59 GMT");
    let payloads = [
        with("spot-interruption-terminate.json", "time", "+262142-12-31T23:59:00Z"),
        with("spot-interruption-stop.json", "time", "9999-12-31T23:59:59Z"),
        with("state-change-terminated.json", "time", "9999-12-31T23:59:59Z"),
        with("node-agent.json", "time", "9999-12-31T23:59:59Z"),
        with("asg-terminate-lifecycle-direct.json", "Time", "9999-12-31T23:59:59Z"),
        health,
    ];
    for payload in payloads {
        let error = invoke(&app, payload.clone()).await.expect_err("a time from the future");
        assert_eq!(error.error_type(), "InvalidInput", "{payload:.120}: {error}");
        assert!(error.to_string().contains("ahead of this function's clock"), "{error}");
    }
    let far = with("spot-interruption-terminate.json", "time", "+262142-12-31T23:59:00Z");
    let batch = json!({"Records": [{"messageId": "far", "body": far.to_string()}]});
    let answer = invoke(&app, batch)
        .await
        .expect("a batch answers with its failed records");
    assert_eq!(
        answer["batchItemFailures"],
        json!([{"itemIdentifier": "far"}]),
        "{answer:#}"
    );

    assert_eq!(calls.sequence(), Vec::<String>::new(), "not a single AWS call");
    assert_eq!(mutations(&calls), Vec::<String>::new());
    assert_eq!(fleet_state(&fleet).await, before);
    assert!(fleet.published().await.is_empty(), "bad input is not news");
}

/// A batch whose records are refused for several reasons (stale, another region, an on-demand instance found once
/// described) costs one SNS message, naming each refusal, not one per record.
#[tokio::test]
async fn an_invocation_raises_one_alert_however_many_records_it_refuses() {
    let moto = Moto::start();
    let fleet = Fleet::build(&moto.sdk_config().await, 2).await;
    let (app, calls) = app_with(&moto, fleet.config(false)).await;
    let before = fleet_state(&fleet).await;
    let hour_ago = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let warning = |id: &str| common::event_for("spot-interruption-terminate.json", id);
    let mut stale = warning(&fleet.spot[0].id);
    stale["time"] = json!(hour_ago);
    let mut elsewhere = warning(&fleet.spot[1].id);
    elsewhere["region"] = json!("eu-west-1");
    let bodies = [stale, elsewhere, warning(&fleet.neighbour.id)];
    let records: Vec<Value> = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| json!({"messageId": format!("m{i}"), "body": body.to_string()}))
        .collect();
    let answer = invoke(&app, json!({ "Records": records })).await.unwrap();
    assert_eq!(answer["batchItemFailures"].as_array().unwrap().len(), 3, "{answer:#}");

    let published = fleet.published().await;
    assert_eq!(published.len(), 1, "one alert: {published:#?}");
    let alert = &published[0];
    assert_eq!(attribute(alert, "refusals"), "3");
    assert_eq!(attribute(alert, "security"), "true", "the batch holds security signals");
    let message: Value = serde_json::from_str(alert["Message"].as_str().unwrap()).unwrap();
    let kinds: BTreeSet<&str> = message["refusals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["error_type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, BTreeSet::from(["StaleEvent", "OutOfScope"]), "{message:#}");
    assert_eq!(message["instances"].as_array().unwrap().len(), 3, "{message:#}");
    assert_eq!(fleet_state(&fleet).await, before);
    assert_eq!(mutations(&calls), Vec::<String>::new());
}

/// More records than `MAX_BATCH_RECORDS` in one invocation: rejected whole before any AWS call.
#[tokio::test]
async fn an_invocation_with_more_records_than_allowed_is_rejected_whole() {
    let moto = Moto::start();
    let fleet = Fleet::build(&moto.sdk_config().await, 2).await;
    let config = fleet.config_with(&[("MAX_BATCH_RECORDS", "3")]).unwrap();
    let (app, calls) = app_with(&moto, config).await;
    let before = fleet_state(&fleet).await;
    let records: Vec<Value> = (0..4)
        .map(|i| {
            let body = common::event_for("spot-interruption-terminate.json", &fleet.spot[i % 2].id);
            json!({"messageId": format!("m{i}"), "body": body.to_string()})
        })
        .collect();
    let error = invoke(&app, json!({ "Records": records })).await.unwrap_err();
    assert_eq!(error.error_type(), "InvalidInput");
    assert!(error.to_string().contains("more than MAX_BATCH_RECORDS (3)"), "{error}");
    assert_eq!(calls.sequence(), Vec::<String>::new());
    assert_eq!(fleet_state(&fleet).await, before);
}

/// Delete what DynamoDB's TTL would have deleted by `at`: every item whose `expires_at` lies before it.
async fn expire_items_as_of(moto: &Moto, table: &str, at: chrono::DateTime<chrono::Utc>) -> usize {
    let dynamodb = aws_sdk_dynamodb::Client::new(&moto.sdk_config().await);
    let items = dynamodb.scan().table_name(table).send().await.unwrap();
    let mut expired = 0;
    for item in items.items() {
        let expires = item
            .get("expires_at")
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse::<i64>().ok());
        if expires.is_some_and(|e| e <= at.timestamp()) {
            dynamodb
                .delete_item()
                .table_name(table)
                .key("pk", item["pk"].clone())
                .key("sk", item["sk"].clone())
                .send()
                .await
                .unwrap();
            expired += 1;
        }
    }
    expired
}

/// A validly signed record of an earlier interruption, put back on the ENI once the table's TTL has run (a day),
/// is refused: the marker of a quarantined instance that may come back does not expire, so the restore still knows
/// which interruption its records must belong to. The genuine record of the current one is restored.
#[tokio::test]
async fn an_earlier_interruptions_record_cannot_be_replayed_past_the_tables_ttl() {
    let moto = Moto::start();
    let fleet = Fleet::build(&moto.sdk_config().await, 1).await;
    let table = "spot-cleanup-replay";
    common::create_index_table(&moto.sdk_config().await, table).await;
    let (app, _) = app_with(&moto, fleet.config_with_index(table)).await;
    let (restorer, _) = restorer_with(&moto, fleet.config_with_index(table)).await;
    let node = &fleet.spot[0];
    let record_of = |tags: &std::collections::BTreeMap<String, String>| -> Vec<(String, String)> {
        let keys = tags.keys().filter(|k| k.starts_with(ORIGINAL_GROUPS_TAG));
        keys.map(|k| (k.clone(), tags[k].clone())).collect()
    };

    // The first interruption: a stop, its records signed for its episode, then restored.
    invoke(&app, common::event_for("spot-interruption-stop.json", &node.id))
        .await
        .expect("cleaned");
    let enis = fleet.enis(node).await;
    let (eni, (_, tags)) = enis.iter().next().expect("an ENI");
    let old_record = record_of(tags);
    assert!(
        old_record.iter().any(|(k, _)| k.ends_with(":episode")),
        "{old_record:?}"
    );
    let restore = json!({"action": "restore", "instance_id": node.id});
    assert_eq!(
        invoke(&restorer, restore.clone()).await.unwrap()["restore"]["outcome"],
        "restored"
    );

    // The second: another stop, another episode. A day and more passes; the table's TTL runs.
    invoke(&app, common::event_for("spot-interruption-stop.json", &node.id))
        .await
        .expect("cleaned");
    let quarantined = fleet.enis(node).await;
    let new_record = record_of(&quarantined[eni].1);
    assert_ne!(new_record, old_record, "a new interruption signs a new record");
    expire_items_as_of(&moto, table, chrono::Utc::now() + chrono::Duration::hours(25)).await;
    fleet.published().await;

    // Someone who may tag ENIs puts the first interruption's genuine record back.
    let tags: Vec<aws_sdk_ec2::types::Tag> = old_record
        .iter()
        .map(|(k, v)| aws_sdk_ec2::types::Tag::builder().key(k).value(v).build())
        .collect();
    fleet
        .ec2
        .create_tags()
        .resources(eni)
        .set_tags(Some(tags))
        .send()
        .await
        .unwrap();
    let error = invoke(&restorer, restore.clone()).await.expect_err("a replayed record");
    assert_eq!(error.error_type(), "RecordNotTrusted", "{error}");
    let mut replayed = quarantined.clone();
    replayed.get_mut(eni).unwrap().1.extend(old_record.iter().cloned());
    assert_eq!(fleet.enis(node).await, replayed, "nothing was restored");
    let alerts = fleet.published().await;
    assert_eq!(alerts.len(), 1);
    assert_eq!(attribute(&alerts[0], "error_type"), "RecordNotTrusted");

    // The current interruption's own record still restores, past the TTL.
    let tags: Vec<aws_sdk_ec2::types::Tag> = new_record
        .iter()
        .map(|(k, v)| aws_sdk_ec2::types::Tag::builder().key(k).value(v).build())
        .collect();
    fleet
        .ec2
        .create_tags()
        .resources(eni)
        .set_tags(Some(tags))
        .send()
        .await
        .unwrap();
    assert_eq!(
        invoke(&restorer, restore).await.unwrap()["restore"]["outcome"],
        "restored"
    );
}
