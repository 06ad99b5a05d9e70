//! The cleanup end to end against moto, through the real handler and the real AWS SDK over HTTP: arrange a fleet,
//! invoke, and assert what AWS looks like afterwards.

use crate::common;

use std::collections::BTreeSet;

use common::Moto;
use common::fleet::Fleet;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};
use spot_cleanup::registration::TargetState;
use spot_cleanup::tags::ORIGINAL_GROUPS_TAG;
use spot_cleanup::{App, HandlerError, Summary, handle};

async fn invoke(app: &App, payload: Value) -> Result<Value, HandlerError> {
    handle(app, LambdaEvent::new(payload, Context::default())).await
}

async fn app_for(moto: &Moto, fleet: &Fleet, dry_run: bool) -> (App, common::CallCounter) {
    let (clients, counter) = common::counted_clients(&moto.sdk_config().await);
    (App::new(fleet.config(dry_run), clients), counter)
}

#[tokio::test]
async fn spot_interruption_leaves_every_group_and_quarantines_every_eni() {
    let moto = Moto::start();
    let fleet = Fleet::build(&moto.sdk_config().await, 1).await;
    let (app, calls) = app_for(&moto, &fleet, false).await;
    let node = &fleet.spot[0];
    let before = fleet.registrations().await;
    let ours = fleet.registrations_of(node, &before);
    assert_eq!(ours.len(), 4, "two NodePorts and two pod IPs: {ours:?}");

    let answer = invoke(&app, common::event_for("spot-interruption-terminate.json", &node.id))
        .await
        .expect("cleanup succeeds");
    let summary: Summary = serde_json::from_value(answer).unwrap();

    // The registrations are gone; the neighbour's and the other VPC's are untouched.
    let after = fleet.registrations().await;
    let expected: BTreeSet<_> = before.difference(&ours).cloned().collect();
    assert_eq!(after, expected);
    assert!(after.contains(&("other-vpc-ip".into(), node.primary_ip.clone(), Some(8080))));

    // The summary says so, target by target.
    assert_eq!(summary.outcome.as_str(), "cleaned");
    assert_eq!(summary.instance.id.as_str(), node.id);
    assert_eq!(summary.instance.lifecycle.as_deref(), Some("spot"));
    assert_eq!(summary.removed.len(), 4);
    assert!(
        summary.remaining.is_empty() && summary.errors.is_empty(),
        "{summary:#?}"
    );
    assert_eq!(
        summary.target_groups_checked, 4,
        "only the fleet VPC's groups are swept"
    );
    assert_eq!(common::removed(&summary), ours);
    assert!(
        summary
            .removed
            .iter()
            .all(|t| t.deregistration_delay_seconds == Some(300))
    );
    // moto removes a target at once instead of draining it, so no drain can outlast the notice here (the warning
    // for a drain that cannot finish in time is proven in cleanup's unit tests).
    assert!(
        summary
            .removed
            .iter()
            .all(|t| t.state == Some(TargetState::Deregistered))
    );
    assert_eq!(summary.warnings, Vec::<String>::new());
    let left = (summary.terminates_at.unwrap() - summary.started_at).num_seconds();
    assert!(
        (100..=120).contains(&left),
        "the event says two minutes from now: {left} s"
    );

    // Both ENIs are on the quarantine group, each with its original groups recorded in a tag.
    let quarantined = fleet.enis_in_group(node, &fleet.quarantine_group).await;
    assert_eq!(quarantined, node.enis.iter().cloned().collect());
    for (eni, (_, tags)) in fleet.enis(node).await {
        assert_eq!(tags.get(ORIGINAL_GROUPS_TAG), Some(&fleet.app_group), "{eni}");
    }
    assert_eq!(summary.network_interfaces.len(), 2);
    for change in &summary.network_interfaces {
        assert_eq!(change.groups_after, vec![fleet.quarantine_group.clone()]);
        assert_eq!(change.original_groups, Some(vec![fleet.app_group.clone()]));
    }

    // One message reached the subscription, with attributes a filter policy can use.
    let published = fleet.published().await;
    assert_eq!(published.len(), 1);
    let note = &published[0];
    let subject = note["Subject"].as_str().unwrap();
    assert!(subject.len() <= 100 && subject.contains(&node.id), "{subject}");
    assert_eq!(
        subject,
        format!("spot-cleanup: {} left 3 target groups, quarantined", node.id)
    );
    assert_eq!(note["MessageAttributes"]["instance_id"]["Value"], json!(node.id));
    assert_eq!(note["MessageAttributes"]["outcome"]["Value"], json!("cleaned"));
    assert_eq!(note["MessageAttributes"]["trigger"]["Value"], json!("eventbridge"));
    let message: Summary = serde_json::from_str(note["Message"].as_str().unwrap()).unwrap();
    assert_eq!(message.removed, summary.removed);

    // One DescribeInstances, one sweep, one DeregisterTargets per group, one Publish.
    assert_eq!(calls.get("DescribeInstances"), 1);
    assert_eq!(calls.get("DeregisterTargets"), 3);
    assert_eq!(calls.get("DescribeTargetHealth"), 4 + 3, "sweep 4 groups, verify 3");
    assert_eq!(calls.get("ModifyNetworkInterfaceAttribute"), 2);
    assert_eq!(calls.get("ModifyInstanceAttribute"), 0);
    assert_eq!(calls.get("Publish"), 1);
}

#[tokio::test]
async fn a_second_delivery_is_idempotent_and_keeps_the_original_record() {
    let moto = Moto::start();
    let fleet = Fleet::build(&moto.sdk_config().await, 1).await;
    let (app, _) = app_for(&moto, &fleet, false).await;
    let node = &fleet.spot[0];

    invoke(&app, common::event_for("node-agent.json", &node.id))
        .await
        .expect("first run");
    let again = invoke(&app, common::event_for("spot-interruption-stop.json", &node.id))
        .await
        .expect("the retry also succeeds");
    let summary: Summary = serde_json::from_value(again).unwrap();

    // The second delivery finds the interruption handled (src/steps/claim/): it changes nothing and publishes nothing.
    assert_eq!(summary.outcome.as_str(), "already-handled");
    assert!(summary.removed.is_empty(), "nothing left to deregister");
    for (eni, (_, tags)) in fleet.enis(node).await {
        assert_eq!(
            tags.get(ORIGINAL_GROUPS_TAG),
            Some(&fleet.app_group),
            "{eni}: the record must still name the original group, not the quarantine group"
        );
    }
    assert_eq!(fleet.published().await.len(), 1);
}

#[tokio::test]
async fn an_sqs_batch_is_cleaned_in_one_pass_and_reports_exactly_the_failed_records() {
    let moto = Moto::start();
    let fleet = Fleet::build(&moto.sdk_config().await, 3).await;
    let (app, calls) = app_for(&moto, &fleet, false).await;

    let record = |id: &str, body: Value| json!({"messageId": id, "body": body.to_string()});
    let payload = json!({"Records": [
        record("m-0", common::event_for("spot-interruption-terminate.json", &fleet.spot[0].id)),
        record("m-1", json!({"instance_id": fleet.spot[1].id, "action": "terminate"})),
        record("m-2", json!({"instance-id": fleet.spot[2].id})),
        record("m-dup", json!({"instance_id": fleet.spot[2].id})),
        record("m-bad", json!({"instance_id": "i-nothex!"})),
        record("m-gone", json!({"instance_id": "i-0badc0ffee0ddf00d"})),
    ]});
    let answer = invoke(&app, payload).await.expect("a batch answers with its failures");
    assert_eq!(
        answer,
        json!({"batchItemFailures": [{"itemIdentifier": "m-bad"}, {"itemIdentifier": "m-gone"}]})
    );

    let after = fleet.registrations().await;
    for node in &fleet.spot {
        assert!(
            fleet.registrations_of(node, &after).is_empty(),
            "{} still registered",
            node.id
        );
        assert_eq!(fleet.enis_in_group(node, &fleet.quarantine_group).await.len(), 2);
    }
    assert_eq!(fleet.registrations_of(&fleet.neighbour, &after).len(), 5);
    assert_eq!(calls.get("DescribeInstances"), 1, "one describe for the whole batch");
    assert_eq!(
        calls.get("DescribeTargetHealth"),
        4 + 3,
        "each group swept once for all three instances"
    );
    assert_eq!(
        calls.get("DeregisterTargets"),
        3,
        "one call per group for all three instances"
    );
    assert_eq!(fleet.published().await.len(), 3, "one summary per instance");
}

#[tokio::test]
async fn dry_run_publishes_the_plan_and_changes_nothing() {
    let moto = Moto::start();
    let fleet = Fleet::build(&moto.sdk_config().await, 1).await;
    let (app, calls) = app_for(&moto, &fleet, true).await;
    let node = &fleet.spot[0];
    let before = fleet.registrations().await;
    let enis_before = fleet.enis(node).await;

    let answer = invoke(&app, common::event_for("spot-interruption-terminate.json", &node.id))
        .await
        .unwrap();
    let summary: Summary = serde_json::from_value(answer).unwrap();

    assert_eq!(fleet.registrations().await, before);
    assert_eq!(fleet.enis(node).await, enis_before);
    assert!(summary.dry_run);
    assert_eq!(summary.outcome.as_str(), "dry-run");
    assert_eq!(summary.planned.len(), 4);
    assert!(summary.removed.is_empty());
    assert!(
        summary
            .network_interfaces
            .iter()
            .all(|e| e.groups_after == vec![fleet.quarantine_group.clone()])
    );
    for mutation in ["DeregisterTargets", "CreateTags", "ModifyNetworkInterfaceAttribute"] {
        assert_eq!(calls.get(mutation), 0, "{mutation} in a dry run");
    }
    let published = fleet.published().await;
    assert_eq!(published[0]["MessageAttributes"]["outcome"]["Value"], json!("dry-run"));
    assert!(published[0]["Subject"].as_str().unwrap().contains("DRY RUN"));
}

#[tokio::test]
async fn without_a_quarantine_group_in_the_vpc_it_still_deregisters_and_reports_the_error() {
    let moto = Moto::start();
    let fleet = Fleet::build(&moto.sdk_config().await, 1).await;
    let config = spot_cleanup::Config::from_lookup(|name| match name {
        "SNS_TOPIC_ARN" => Some(fleet.topic_arn.clone()),
        "QUARANTINE_SECURITY_GROUP_ID" => Some(fleet.other_vpc_quarantine_group.clone()),
        _ => None,
    })
    .unwrap();
    let app = App::new(config, spot_cleanup::Clients::from_shared(&moto.sdk_config().await));
    let node = &fleet.spot[0];
    let enis_before = fleet.enis(node).await;

    let error = invoke(&app, common::event_for("spot-interruption-terminate.json", &node.id))
        .await
        .expect_err("an incomplete cleanup fails the invocation so that it is retried");
    assert_eq!(error.error_type(), "CleanupIncomplete");
    assert!(error.to_string().contains("no quarantine security group"), "{error}");

    assert!(fleet.registrations_of(node, &fleet.registrations().await).is_empty());
    assert_eq!(fleet.enis(node).await, enis_before, "no security group was changed");
    let published = fleet.published().await;
    assert_eq!(published[0]["MessageAttributes"]["outcome"]["Value"], json!("partial"));
}

#[tokio::test]
async fn bad_input_and_unknown_instances_change_nothing() {
    let moto = Moto::start();
    let fleet = Fleet::build(&moto.sdk_config().await, 1).await;
    let (app, calls) = app_for(&moto, &fleet, false).await;
    let before = fleet.registrations().await;

    let mut payloads: Vec<Value> = std::fs::read_dir(common::repo_root().join("events/malformed"))
        .unwrap()
        .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap())
        .filter_map(|text| serde_json::from_str(&text).ok())
        .collect();
    payloads.push(json!({"instance_id": format!("i-{}", "a".repeat(1_000_000))}));
    assert!(payloads.len() >= 10);
    for payload in payloads {
        let error = invoke(&app, payload.clone()).await.expect_err("rejected");
        assert_eq!(error.error_type(), "InvalidInput", "{payload:.100}");
        assert!(error.to_string().len() < 500);
    }
    assert!(
        calls.snapshot().is_empty(),
        "no AWS call at all for bad input: {:?}",
        calls.snapshot()
    );

    let error = invoke(&app, json!({"instance_id": "i-0badc0ffee0ddf00d"}))
        .await
        .unwrap_err();
    assert_eq!(error.error_type(), "InstanceNotFound");
    assert!(error.to_string().contains("i-0badc0ffee0ddf00d was not found"));
    assert_eq!(fleet.registrations().await, before);
    assert!(fleet.published().await.is_empty());
}

#[tokio::test]
async fn an_auto_scaling_node_leaves_its_groups_target_groups_before_the_sweep_starts() {
    let moto = Moto::start();
    let shared = moto.sdk_config().await;
    let fleet = Fleet::build(&shared, 1).await;
    let node = fleet.auto_scaling_node(&shared, "asg-web", 8080).await;
    let (app, calls) = app_for(&moto, &fleet, false).await;

    // moto launches Auto Scaling instances on demand whatever the launch template asks, and the scope guard acts on
    // Spot triggers for Spot instances only; a scale-in reported by the agent is not a Spot trigger.
    let mut scale_in = common::event_for("node-agent.json", &node);
    scale_in["action"] = json!("scale-in");
    let answer = invoke(&app, scale_in).await.expect("cleanup succeeds");
    let summary: Summary = serde_json::from_value(answer).unwrap();

    let removed: BTreeSet<_> = summary
        .removed
        .iter()
        .map(|t| (t.target_group_name.as_str(), t.port))
        .collect();
    assert_eq!(
        removed,
        BTreeSet::from([("asg-web", Some(8080)), ("web-nodeport", Some(30080))]),
        "the group's own target group, and a NodePort registration only the sweep can find"
    );
    assert_eq!(summary.outcome.as_str(), "cleaned");
    assert!(!fleet.registrations().await.iter().any(|(_, id, _)| id == &node));

    // The known registration left before the first DescribeTargetHealth of the sweep was sent.
    let sequence = calls.sequence();
    let first = |operation: &str| sequence.iter().position(|o| o == operation).unwrap();
    assert!(
        first("DeregisterTargets") < first("DescribeTargetHealth"),
        "{sequence:?}"
    );
    assert_eq!(calls.get("DescribeAutoScalingGroups"), 1);
    assert_eq!(
        calls.get("DeregisterTargets"),
        2,
        "one wave for the fast path, one for what the sweep found"
    );
    assert_eq!(
        calls.get("DescribeTargetHealth"),
        5 + 1,
        "the sweep's view of asg-web is its check; only web-nodeport is described again"
    );
}
