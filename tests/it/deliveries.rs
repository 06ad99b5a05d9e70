//! Every way AWS delivers the news, end to end against moto through the real handler: a lifecycle hook whose
//! notification target is an SNS topic (SNS -> Lambda), a Spot warning an EventBridge rule fanned out to a topic that
//! an SQS queue reads without raw delivery (an SNS envelope inside the SQS body), a batch that mixes an event with
//! nothing to do, a malformed record and a real warning, and an on-demand instance terminating under the default
//! `EVENT_SCOPE=spot`, whose calls are counted on the wire by the test proxy.

use crate::common;

use std::sync::{Arc, Mutex};

use aws_sdk_autoscaling::operation::complete_lifecycle_action::{
    CompleteLifecycleActionInput, CompleteLifecycleActionOutput,
};
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use common::fleet::Fleet;
use common::proxy::start_proxy;
use common::{Moto, live_sample};
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};
use spot_cleanup::{App, Clients, Config, HandlerError, handle};

async fn invoke(app: &App, payload: Value) -> Result<Value, HandlerError> {
    handle(app, LambdaEvent::new(payload, Context::default())).await
}

/// The fleet's configuration; the samples' lifecycle hook is the function's own.
fn config(fleet: &Fleet) -> Config {
    fleet
        .config_with(&[("LIFECYCLE_HOOK_NAMES", "spot-cleanup")])
        .expect("valid configuration")
}

/// Moto answers CompleteLifecycleAction "not implemented": Auto Scaling is a mock that records it.
fn completing_app(
    shared: &aws_config::SdkConfig,
    fleet: &Fleet,
) -> (App, Arc<Mutex<Vec<CompleteLifecycleActionInput>>>) {
    let sent = Arc::new(Mutex::new(Vec::new()));
    let recorder = sent.clone();
    let rule = mock!(aws_sdk_autoscaling::Client::complete_lifecycle_action)
        .match_requests(move |input| {
            recorder.lock().unwrap().push(input.clone());
            true
        })
        .then_output(|| CompleteLifecycleActionOutput::builder().build());
    let mut clients = Clients::from_shared(shared);
    clients.autoscaling = mock_client!(aws_sdk_autoscaling, RuleMode::MatchAny, [&rule]);
    (App::new(config(fleet), clients), sent)
}

#[tokio::test]
async fn a_lifecycle_hook_delivered_by_sns_is_cleaned_and_completed_with_continue() {
    let moto = Moto::start();
    let shared = moto.sdk_config().await;
    let fleet = Fleet::build(&shared, 1).await;
    let node = &fleet.spot[0];
    let (app, completed) = completing_app(&shared, &fleet);

    let answer = invoke(&app, live_sample("sns-lifecycle-hook.json", &node.id))
        .await
        .expect("the SNS record is done");
    assert_eq!(answer, json!({ "notifications": 1 }));
    assert!(fleet.registrations_of(node, &fleet.registrations().await).is_empty());
    assert_eq!(
        fleet.enis_in_group(node, &fleet.quarantine_group).await,
        node.enis.iter().cloned().collect()
    );
    let completed = completed.lock().unwrap().clone();
    assert_eq!(completed.len(), 1, "{completed:?}");
    assert_eq!(completed[0].lifecycle_action_result(), Some("CONTINUE"));
    assert_eq!(completed[0].instance_id(), Some(node.id.as_str()));
    assert_eq!(completed[0].lifecycle_hook_name(), Some("spot-cleanup"));
    let published = fleet.published().await;
    assert_eq!(published.len(), 1, "one summary");
}

#[tokio::test]
async fn a_spot_warning_in_an_sns_envelope_in_an_sqs_record_is_cleaned_with_no_failed_record() {
    let moto = Moto::start();
    let shared = moto.sdk_config().await;
    let fleet = Fleet::build(&shared, 1).await;
    let node = &fleet.spot[0];
    let app = App::new(config(&fleet), Clients::from_shared(&shared));
    // The sample's first record: a standard topic's signed envelope, `Subject: null`, pretty-printed.
    let mut batch = live_sample("sqs-sns-envelope.json", &node.id);
    batch["Records"] = json!([batch["Records"][0].clone()]);

    let answer = invoke(&app, batch).await.expect("a batch answer");
    assert_eq!(answer["batchItemFailures"], json!([]), "{answer:#}");
    assert!(fleet.registrations_of(node, &fleet.registrations().await).is_empty());
    assert_eq!(
        fleet.enis_in_group(node, &fleet.quarantine_group).await,
        node.enis.iter().cloned().collect()
    );
    let published = fleet.published().await;
    assert_eq!(published.len(), 1);
}

#[tokio::test]
async fn a_batch_of_an_ignored_event_a_malformed_record_and_a_warning_fails_only_the_malformed_one() {
    let moto = Moto::start();
    let shared = moto.sdk_config().await;
    let fleet = Fleet::build(&shared, 1).await;
    let node = &fleet.spot[0];
    let app = App::new(config(&fleet), Clients::from_shared(&shared));
    let template = live_sample("sqs-sns-envelope.json", &node.id)["Records"][0].clone();
    let record = |id: &str, body: String| {
        let mut record = template.clone();
        record["messageId"] = id.into();
        record["body"] = body.into();
        record
    };
    let pending = live_sample("ignored/state-change-pending.json", &fleet.neighbour.id);
    let warning = live_sample("spot-interruption-terminate.json", &node.id);
    let batch = json!({ "Records": [
        record("ignored", pending.to_string()),
        record("malformed", "{\"detail-type\": \"EC2 Spot Instance Interruption Warning\"".into()),
        record("warning", warning.to_string()),
    ]});
    let neighbour_before = fleet.registrations_of(&fleet.neighbour, &fleet.registrations().await);

    let answer = invoke(&app, batch).await.expect("a batch answer");
    assert_eq!(
        answer["batchItemFailures"],
        json!([{ "itemIdentifier": "malformed" }]),
        "{answer:#}"
    );
    assert!(fleet.registrations_of(node, &fleet.registrations().await).is_empty());
    assert_eq!(
        fleet.registrations_of(&fleet.neighbour, &fleet.registrations().await),
        neighbour_before,
        "the neighbour, whose event was ignored, keeps every registration"
    );
    assert!(!neighbour_before.is_empty());
}

/// Under the default `EVENT_SCOPE=spot`, a scale-in or a deploy terminating an on-demand instance costs exactly one
/// DescribeInstances: no sweep, no claim, no write, no summary. Counted on the wire, between the SDK and moto.
#[tokio::test]
async fn a_terminated_on_demand_instance_costs_one_describe_instances_and_changes_nothing() {
    let moto = Moto::start();
    let fleet = Fleet::build(&moto.sdk_config().await, 1).await;
    let proxy = start_proxy(&moto.endpoint);
    let through_proxy = common::sdk_config_for(&proxy.endpoint).await;
    let app = App::new(config(&fleet), Clients::from_shared(&through_proxy));
    let before = fleet.registrations().await;
    proxy.calls.clear();

    let answer = invoke(
        &app,
        common::event_for("state-change-terminated.json", &fleet.neighbour.id),
    )
    .await
    .expect("ignored is not an error");

    assert_eq!(proxy.calls.sequence(), ["DescribeInstances"]);
    let ignored = answer["ignored"].as_str().unwrap_or_default();
    assert!(ignored.contains("EVENT_SCOPE=spot"), "{answer:#}");
    assert_eq!(fleet.registrations().await, before);
    assert!(fleet.published().await.is_empty());

    // With EVENT_SCOPE=all the same event is a cleanup, as before.
    let everything = fleet.config_with(&[("EVENT_SCOPE", "all")]).unwrap();
    let app = App::new(everything, Clients::from_shared(&through_proxy));
    let answer = invoke(
        &app,
        common::event_for("state-change-terminated.json", &fleet.neighbour.id),
    )
    .await
    .expect("cleaned");
    assert_eq!(answer["outcome"], "cleaned", "{answer:#}");
    assert!(proxy.calls.sequence().iter().any(|c| c == "DescribeTargetHealth"));
}
