//! Every other way an instance leaves a fleet, end to end against moto through the real handler: Auto Scaling's
//! terminate lifecycle action (both shapes, the test notification, a warm pool), the rebalance recommendation, the
//! instance state change, and AWS Health's scheduled change.
//!
//! moto 5.2.5 answers CompleteLifecycleAction and RecordLifecycleActionHeartbeat with "not implemented", so the Auto
//! Scaling client in the lifecycle tests is an aws-smithy-mocks client that records those two calls; everything else
//! (EC2, ELB, SNS) is moto.

use crate::common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use aws_sdk_autoscaling::operation::complete_lifecycle_action::{
    CompleteLifecycleActionInput, CompleteLifecycleActionOutput,
};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use common::Moto;
use common::fleet::Fleet;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};
use spot_cleanup::{App, Config, HandlerError, Summary, handle};

async fn invoke(app: &App, payload: Value) -> Result<Value, HandlerError> {
    handle(app, LambdaEvent::new(payload, Context::default())).await
}

/// The fleet's configuration plus the given variables; the samples' lifecycle hook is the function's own.
fn config(fleet: &Fleet, extra: &[(&str, &str)]) -> Config {
    Config::from_lookup(|name| match name {
        "SNS_TOPIC_ARN" => Some(fleet.topic_arn.clone()),
        "QUARANTINE_SECURITY_GROUP_ID" => Some(fleet.quarantine_group.clone()),
        "LIFECYCLE_HOOK_NAMES" => Some("spot-cleanup".into()),
        _ => extra.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string()),
    })
    .expect("valid configuration")
}

async fn app(moto: &Moto, fleet: &Fleet, extra: &[(&str, &str)]) -> (App, common::CallCounter) {
    let (clients, counter) = common::counted_clients(&moto.sdk_config().await);
    (App::new(config(fleet, extra), clients), counter)
}

/// The function against moto, with Auto Scaling answering `rule` instead (moto does not implement
/// CompleteLifecycleAction).
async fn app_completing(moto: &Moto, fleet: &Fleet, rule: &Rule) -> (App, common::CallCounter) {
    let (mut clients, counter) = common::counted_clients(&moto.sdk_config().await);
    clients.autoscaling = mock_client!(aws_sdk_autoscaling, RuleMode::MatchAny, [rule]);
    (App::new(config(fleet, &[]), clients), counter)
}

/// What CompleteLifecycleAction was sent (moto does not implement it).
fn completions() -> (Rule, Arc<Mutex<Vec<CompleteLifecycleActionInput>>>) {
    let sent = Arc::new(Mutex::new(Vec::new()));
    let recorder = sent.clone();
    let rule = mock!(aws_sdk_autoscaling::Client::complete_lifecycle_action)
        .match_requests(move |input| {
            recorder.lock().unwrap().push(input.clone());
            true
        })
        .then_output(|| CompleteLifecycleActionOutput::builder().build());
    (rule, sent)
}

fn summary(answer: Value) -> Summary {
    serde_json::from_value(answer).expect("a summary")
}

/// Every registration of the node is gone; the neighbour's are all there.
async fn assert_left_its_groups(fleet: &Fleet, before: &BTreeSet<common::fleet::Registration>, node: usize) {
    let ours = fleet.registrations_of(&fleet.spot[node], before);
    assert_eq!(ours.len(), 4, "{ours:?}");
    let expected: BTreeSet<_> = before.difference(&ours).cloned().collect();
    assert_eq!(fleet.registrations().await, expected);
}

#[tokio::test]
async fn a_terminate_lifecycle_action_is_cleaned_up_then_completed() {
    let moto = Moto::start();
    let fleet = Fleet::build(&moto.sdk_config().await, 1).await;
    let (rule, sent) = completions();
    let (app, _) = app_completing(&moto, &fleet, &rule).await;
    let node = &fleet.spot[0];
    let before = fleet.registrations().await;

    let answer = invoke(&app, common::event_for("asg-terminate-lifecycle.json", &node.id))
        .await
        .expect("cleanup succeeds");
    let summary = summary(answer);

    assert_left_its_groups(&fleet, &before, 0).await;
    let quarantined = fleet.enis_in_group(node, &fleet.quarantine_group).await;
    assert_eq!(quarantined, node.enis.iter().cloned().collect());
    assert_eq!(summary.outcome.as_str(), "cleaned");
    let lifecycle = summary.lifecycle.expect("the action is reported");
    assert_eq!(lifecycle.result.as_deref(), Some("CONTINUE"));
    assert_eq!(lifecycle.heartbeats, 0, "no wait configured");

    let sent = sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].lifecycle_hook_name(), Some("spot-cleanup"));
    assert_eq!(sent[0].auto_scaling_group_name(), Some("nodes"));
    assert_eq!(
        sent[0].lifecycle_action_token(),
        Some("87654321-4321-4321-4321-210987654321")
    );
    assert_eq!(sent[0].instance_id(), Some(node.id.as_str()));
    assert_eq!(sent[0].lifecycle_action_result(), Some("CONTINUE"));

    // The summary reached SNS with the completed action in it.
    let published = fleet.published().await;
    assert_eq!(published.len(), 1);
    let message: Summary = serde_json::from_str(published[0]["Message"].as_str().unwrap()).unwrap();
    assert_eq!(message.lifecycle.unwrap().result.as_deref(), Some("CONTINUE"));
    assert_eq!(published[0]["MessageAttributes"]["action"]["Value"], json!("scale-in"));
}

#[tokio::test]
async fn an_incomplete_cleanup_leaves_the_lifecycle_action_for_the_retry() {
    let moto = Moto::start();
    let fleet = Fleet::build(&moto.sdk_config().await, 1).await;
    // A quarantine group of another VPC only: the ENIs cannot be quarantined, so the cleanup is partial.
    let config = Config::from_lookup(|name| match name {
        "SNS_TOPIC_ARN" => Some(fleet.topic_arn.clone()),
        "QUARANTINE_SECURITY_GROUP_ID" => Some(fleet.other_vpc_quarantine_group.clone()),
        "LIFECYCLE_HOOK_NAMES" => Some("spot-cleanup".into()),
        _ => None,
    })
    .unwrap();
    let (mut clients, _) = common::counted_clients(&moto.sdk_config().await);
    let (rule, sent) = completions();
    clients.autoscaling = mock_client!(aws_sdk_autoscaling, RuleMode::MatchAny, [&rule]);
    let app = App::new(config, clients);
    let node = &fleet.spot[0];

    let error = invoke(&app, common::event_for("asg-terminate-lifecycle.json", &node.id))
        .await
        .expect_err("incomplete");
    assert_eq!(error.error_type(), "CleanupIncomplete");
    assert!(sent.lock().unwrap().is_empty(), "not completed");
    let published = fleet.published().await;
    let message: Summary = serde_json::from_str(published[0]["Message"].as_str().unwrap()).unwrap();
    assert_eq!(message.lifecycle.unwrap().result, None);
    assert!(
        message
            .warnings
            .iter()
            .any(|w| w.contains("lifecycle action was not completed")),
        "{:?}",
        message.warnings
    );
}

#[tokio::test]
async fn the_direct_lifecycle_message_and_the_test_notification_ride_in_one_sqs_batch() {
    let moto = Moto::start();
    let fleet = Fleet::build(&moto.sdk_config().await, 1).await;
    let (rule, sent) = completions();
    let (app, calls) = app_completing(&moto, &fleet, &rule).await;
    let node = &fleet.spot[0];
    let before = fleet.registrations().await;
    let message = common::event_for("asg-terminate-lifecycle-direct.json", &node.id);
    let test = common::event_for("asg-test-notification.json", &node.id);
    let batch = json!({"Records": [
        {"messageId": "m-test", "body": test.to_string()},
        {"messageId": "m-hook", "body": message.to_string()},
    ]});

    let answer = invoke(&app, batch).await.expect("batch answer");
    assert_eq!(answer, json!({"batchItemFailures": []}), "neither record is retried");
    assert_left_its_groups(&fleet, &before, 0).await;
    assert_eq!(sent.lock().unwrap().len(), 1);
    assert_eq!(
        fleet.published().await.len(),
        1,
        "the test notification publishes nothing"
    );
    assert_eq!(calls.get("DescribeInstances"), 1);

    // Alone, the test notification is answered quietly and touches nothing.
    let skipped = invoke(&app, test).await.expect("a quiet answer");
    assert!(skipped["skipped"].as_str().unwrap().contains("TEST_NOTIFICATION"));
    assert_eq!(calls.get("DescribeInstances"), 1);
}

#[tokio::test]
async fn an_instance_going_to_a_warm_pool_leaves_its_groups_but_keeps_its_network() {
    let moto = Moto::start();
    let fleet = Fleet::build(&moto.sdk_config().await, 1).await;
    let (rule, sent) = completions();
    let (app, calls) = app_completing(&moto, &fleet, &rule).await;
    let node = &fleet.spot[0];
    let before = fleet.registrations().await;
    let mut event = common::event_for("asg-terminate-lifecycle.json", &node.id);
    event["detail"]["Destination"] = "WarmPool".into();

    let summary = summary(invoke(&app, event).await.expect("cleanup succeeds"));
    assert_left_its_groups(&fleet, &before, 0).await;
    assert!(fleet.enis_in_group(node, &fleet.quarantine_group).await.is_empty());
    assert_eq!(calls.get("ModifyNetworkInterfaceAttribute"), 0);
    assert!(summary.network_interfaces.is_empty());
    assert!(
        summary.warnings.iter().any(|w| w.contains("warm pool")),
        "{:?}",
        summary.warnings
    );
    assert_eq!(summary.outcome.as_str(), "cleaned");
    assert_eq!(sent.lock().unwrap().len(), 1, "the action is still completed");
}

#[tokio::test]
async fn a_rebalance_recommendation_notifies_by_default_and_cleans_up_when_told() {
    let moto = Moto::start();
    let fleet = Fleet::build(&moto.sdk_config().await, 1).await;
    let node = &fleet.spot[0];
    let before = fleet.registrations().await;
    let event = common::event_for("rebalance-recommendation.json", &node.id);

    // notify (the default): one message saying so, nothing changed.
    let (app_notify, calls) = app(&moto, &fleet, &[]).await;
    let notice = summary(invoke(&app_notify, event.clone()).await.expect("answered"));
    assert_eq!(notice.outcome.as_str(), "notified");
    assert_eq!(fleet.registrations().await, before);
    assert!(fleet.enis_in_group(node, &fleet.quarantine_group).await.is_empty());
    let published = fleet.published().await;
    assert_eq!(published.len(), 1);
    assert_eq!(
        published[0]["Subject"],
        json!(format!(
            "spot-cleanup: rebalance recommended for {}, nothing changed",
            node.id
        ))
    );
    assert_eq!(published[0]["MessageAttributes"]["outcome"]["Value"], json!("notified"));
    assert_eq!(published[0]["MessageAttributes"]["action"]["Value"], json!("rebalance"));
    let snapshot = calls.snapshot();
    assert_eq!(
        snapshot.keys().collect::<Vec<_>>(),
        ["Publish"],
        "nothing else was called"
    );

    // ignore: nothing at all.
    let (app_ignore, calls) = app(&moto, &fleet, &[("REBALANCE_ACTION", "ignore")]).await;
    let ignored = summary(invoke(&app_ignore, event.clone()).await.expect("answered"));
    assert_eq!(ignored.outcome.as_str(), "ignored");
    assert!(calls.snapshot().is_empty());
    assert!(fleet.published().await.is_empty());

    // cleanup: as for a Spot interruption.
    let (app_cleanup, _) = app(&moto, &fleet, &[("REBALANCE_ACTION", "cleanup")]).await;
    let cleaned = summary(invoke(&app_cleanup, event).await.expect("cleanup succeeds"));
    assert_eq!(cleaned.outcome.as_str(), "cleaned");
    assert_left_its_groups(&fleet, &before, 0).await;
    assert_eq!(
        fleet.enis_in_group(node, &fleet.quarantine_group).await,
        node.enis.iter().cloned().collect()
    );
}

#[tokio::test]
async fn a_terminated_instance_loses_what_registrations_remain_and_a_redelivery_changes_nothing() {
    let moto = Moto::start();
    let fleet = Fleet::build(&moto.sdk_config().await, 1).await;
    let (app, _) = app(&moto, &fleet, &[]).await;
    let node = &fleet.spot[0];
    let before = fleet.registrations().await;
    fleet
        .ec2
        .terminate_instances()
        .instance_ids(&node.id)
        .send()
        .await
        .unwrap();
    // ELB (and moto, like it) drops a terminated instance's instance targets by itself; its pod IPs stay registered.
    let remaining = fleet.registrations_of(node, &fleet.registrations().await);
    let pod_ips: BTreeSet<String> = node.pod_ips.iter().cloned().collect();
    assert_eq!(
        remaining.iter().map(|(_, id, _)| id.clone()).collect::<BTreeSet<_>>(),
        pod_ips
    );
    let event = common::event_for("state-change-terminated.json", &node.id);

    let first = summary(invoke(&app, event.clone()).await.expect("cleanup succeeds"));
    assert_eq!(first.outcome.as_str(), "cleaned", "{first:#?}");
    assert_eq!(first.trigger.event_code.as_deref(), Some("terminated"));
    assert_eq!(common::removed(&first), remaining, "what remained is removed");
    assert_left_its_groups(&fleet, &before, 0).await;
    assert!(first.warnings.iter().any(|w| w == "the instance is already terminated"));

    // The claim: a redelivery is answered quietly, with no second alert.
    let second = summary(invoke(&app, event).await.expect("a redelivery succeeds"));
    assert_eq!(second.outcome.as_str(), "already-handled");
    assert!(second.removed.is_empty() && second.remaining.is_empty());
    assert_eq!(fleet.published().await.len(), 1);
}

#[tokio::test]
async fn a_stopping_instance_is_cleaned_like_a_spot_stop() {
    let moto = Moto::start();
    let fleet = Fleet::build(&moto.sdk_config().await, 1).await;
    let (app, _) = app(&moto, &fleet, &[]).await;
    let node = &fleet.spot[0];
    let before = fleet.registrations().await;

    let summary = summary(
        invoke(&app, common::event_for("state-change-stopping.json", &node.id))
            .await
            .expect("cleanup succeeds"),
    );
    assert_eq!(summary.outcome.as_str(), "cleaned");
    assert_eq!(summary.trigger.action, Some(spot_cleanup::input::Action::Stop));
    assert_left_its_groups(&fleet, &before, 0).await;
    assert_eq!(
        fleet.enis_in_group(node, &fleet.quarantine_group).await,
        node.enis.iter().cloned().collect()
    );

    // `running` is the restore entry point's: the cleanup function leaves it alone...
    let mut running = common::event_for("state-change-stopping.json", &fleet.neighbour.id);
    running["detail"]["state"] = "running".into();
    let before_running = fleet.registrations().await;
    let answer = invoke(&app, running.clone()).await.expect("ignored, not failed");
    let ignored = answer["ignored"].as_str().unwrap_or_default();
    assert!(ignored.contains("ENTRY_POINT=restore"), "{answer}");
    // ...and the restore function restores: the neighbour was never quarantined, so nothing is touched.
    let (restorer, _) = self::app(&moto, &fleet, &[("ENTRY_POINT", "restore")]).await;
    let answer = invoke(&restorer, running)
        .await
        .expect("a restore with nothing recorded is no error");
    assert_eq!(answer["restore"]["outcome"], "nothing-to-restore", "{answer}");
    assert_eq!(fleet.registrations().await, before_running);
}

#[tokio::test]
async fn a_scheduled_change_notifies_about_every_affected_instance_or_cleans_them_all() {
    let moto = Moto::start();
    let fleet = Fleet::build(&moto.sdk_config().await, 2).await;
    let before = fleet.registrations().await;
    let text = std::fs::read_to_string(common::repo_root().join("events/health-scheduled-change.json")).unwrap();
    let text = text
        .replace("i-0123456789abcdef0", &fleet.spot[0].id)
        .replace("i-0fedcba9876543210", &fleet.spot[1].id);
    let mut event: Value = serde_json::from_str(&text).unwrap();
    // Fresh, or the guard refuses it as stale (MAX_EVENT_AGE).
    event["time"] = chrono::Utc::now().to_rfc3339().into();

    let (app_notify, _) = app(&moto, &fleet, &[]).await;
    let answer = invoke(&app_notify, event.clone()).await.expect("answered");
    let notices: Vec<Summary> = serde_json::from_value(answer["summaries"].clone()).unwrap();
    assert_eq!(notices.len(), 2);
    assert!(notices.iter().all(|s| s.outcome.as_str() == "notified"));
    assert_eq!(fleet.registrations().await, before);
    let subjects: BTreeSet<String> = fleet
        .published()
        .await
        .iter()
        .map(|n| n["Subject"].as_str().unwrap().to_owned())
        .collect();
    let expected: BTreeSet<String> = fleet
        .spot
        .iter()
        .map(|n| {
            format!(
                "spot-cleanup: AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED for {}, nothing changed",
                n.id
            )
        })
        .collect();
    assert_eq!(subjects, expected);

    let (app_cleanup, calls) = app(&moto, &fleet, &[("HEALTH_ACTION", "cleanup")]).await;
    let answer = invoke(&app_cleanup, event).await.expect("cleanup succeeds");
    let cleaned: Vec<Summary> = serde_json::from_value(answer["summaries"].clone()).unwrap();
    assert!(cleaned.iter().all(|s| s.outcome.as_str() == "cleaned"));
    let ours: BTreeSet<_> = fleet
        .spot
        .iter()
        .flat_map(|n| fleet.registrations_of(n, &before))
        .collect();
    assert_eq!(ours.len(), 8);
    let expected: BTreeSet<_> = before.difference(&ours).cloned().collect();
    assert_eq!(fleet.registrations().await, expected);
    assert_eq!(calls.get("DescribeInstances"), 1, "both instances in one pass");
}
