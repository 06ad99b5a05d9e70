//! Beside other tools' lifecycle hooks, with the environment template.yaml deploys (its defaults, or the parameters
//! each test names), against moto through the test proxy, which records every call on the wire. moto does not
//! implement CompleteLifecycleAction, so Auto Scaling is a mock that records what it is sent.
//!
//! - With no hook named (the default), no lifecycle action is handled, not even one named like ours.
//! - Another tool's hook (NTH's, a log shipper's, another team's drain) is ignored on every delivery path: no call at
//!   all, no CompleteLifecycleAction, no summary, no alert.
//! - Our own hook is cleaned up and completed with CONTINUE, as before.
//! - Under EVENT_SCOPE=spot an on-demand instance on our hook costs one DescribeInstances and is only let go.

use crate::common;

use std::sync::{Arc, Mutex};

use aws_sdk_autoscaling::operation::complete_lifecycle_action::{
    CompleteLifecycleActionInput, CompleteLifecycleActionOutput,
};
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use common::fleet::{Fleet, Node};
use common::proxy::{Proxy, start_proxy};
use common::template::TemplateEnv;
use common::{Moto, live_sample};
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};
use spot_cleanup::{App, Clients, HandlerError, handle};

const OURS: &str = "spot-cleanup";
const THEIRS: &str = "nth-queue-processor";
const TABLE: &str = "spot-cleanup-index";

/// The function as the template deploys it with `parameters`, in front of a fleet on moto.
struct Deployed {
    _moto: Moto,
    fleet: Fleet,
    proxy: Proxy,
    app: App,
    completed: Arc<Mutex<Vec<CompleteLifecycleActionInput>>>,
    env: TemplateEnv,
}

impl Deployed {
    async fn with(parameters: &[(&str, &str)]) -> Deployed {
        let moto = Moto::start();
        let shared = moto.sdk_config().await;
        let fleet = Fleet::build(&shared, 1).await;
        common::create_index_table(&shared, TABLE).await;
        let env = TemplateEnv::cleanup_function(parameters);
        let config = env.config(&[
            ("SummaryTopic", &fleet.topic_arn),
            ("QuarantineSecurityGroup.GroupId", &fleet.quarantine_group),
            ("RecordKey.Arn", &fleet.record_key),
            ("RegistrationIndexTable", TABLE),
        ]);
        let proxy = start_proxy(&moto.endpoint);
        let mut clients = Clients::from_shared(&common::sdk_config_for(&proxy.endpoint).await);
        let completed = Arc::new(Mutex::new(Vec::new()));
        let recorder = completed.clone();
        let rule = mock!(aws_sdk_autoscaling::Client::complete_lifecycle_action)
            .match_requests(move |input| {
                recorder.lock().unwrap().push(input.clone());
                true
            })
            .then_output(|| CompleteLifecycleActionOutput::builder().build());
        clients.autoscaling = mock_client!(aws_sdk_autoscaling, RuleMode::MatchAny, [&rule]);
        Deployed {
            app: App::new(config, clients),
            _moto: moto,
            fleet,
            proxy,
            completed,
            env,
        }
    }

    async fn invoke(&self, payload: Value) -> Result<Value, HandlerError> {
        handle(&self.app, LambdaEvent::new(payload, Context::default())).await
    }

    fn completed(&self) -> Vec<CompleteLifecycleActionInput> {
        self.completed.lock().unwrap().clone()
    }

    /// Nothing happened in AWS: not one call on the wire, nothing completed, published or quarantined, every
    /// registration where it was.
    async fn assert_untouched(&self, before: &std::collections::BTreeSet<common::fleet::Registration>) {
        assert_eq!(self.proxy.calls.sequence(), Vec::<String>::new(), "no AWS call at all");
        assert!(
            self.completed().is_empty(),
            "no CompleteLifecycleAction: {:?}",
            self.completed()
        );
        assert_eq!(&self.fleet.registrations().await, before);
        assert!(self.fleet.published().await.is_empty(), "no summary, no alert");
        for node in self.fleet.spot.iter().chain([&self.fleet.neighbour]) {
            assert!(
                self.fleet
                    .enis_in_group(node, &self.fleet.quarantine_group)
                    .await
                    .is_empty()
            );
        }
    }
}

/// The lifecycle action of hook `hook` for `node`, in every shape it arrives in: the EventBridge event (LifecycleRule
/// or a buffer), the hook's own message (its SQS queue), the same message as an SNS topic delivers it to the function,
/// and as an SQS queue subscribed to that topic receives it (an SNS envelope in the body).
fn deliveries(node: &Node, hook: &str) -> Vec<(&'static str, Value)> {
    let mut event = live_sample("asg-terminate-lifecycle.json", &node.id);
    event["detail"]["LifecycleHookName"] = hook.into();
    let mut message = live_sample("asg-terminate-lifecycle-direct.json", &node.id);
    message["LifecycleHookName"] = hook.into();
    let mut sns = live_sample("sns-lifecycle-hook.json", &node.id);
    sns["Records"][0]["Sns"]["Message"] = message.to_string().into();
    let mut envelope_record = live_sample("sqs-sns-envelope.json", &node.id)["Records"][0].clone();
    let mut envelope: Value = serde_json::from_str(envelope_record["body"].as_str().unwrap()).unwrap();
    envelope["Message"] = message.to_string().into();
    envelope_record["body"] = envelope.to_string().into();
    envelope_record["messageId"] = "in-envelope".into();
    let batch = json!({"Records": [
        {"messageId": "eventbridge", "body": event.to_string()},
        {"messageId": "hook-message", "body": message.to_string()},
        envelope_record,
    ]});
    vec![("EventBridge", event), ("SQS batch", batch), ("SNS", sns)]
}

/// What an ignored delivery is answered, by its shape.
fn assert_ignored(path: &str, answer: &Value, why: &str) {
    match path {
        "EventBridge" => {
            let reason = answer["ignored"].as_str().unwrap_or_default();
            assert!(reason.contains(why), "{path}: {answer}");
        }
        "SQS batch" => assert_eq!(answer, &json!({"batchItemFailures": []}), "{path}: no record fails"),
        _ => assert_eq!(answer, &json!({"notifications": 1}), "{path}: the message is done"),
    }
}

#[tokio::test]
async fn with_the_template_defaults_no_lifecycle_action_is_handled() {
    let deployed = Deployed::with(&[]).await;
    assert_eq!(
        deployed.env.get("LIFECYCLE_HOOK_NAMES"),
        Some(""),
        "the default names no hook"
    );
    assert_eq!(deployed.env.get("EVENT_SCOPE"), Some("spot"));
    let before = deployed.fleet.registrations().await;
    deployed.proxy.calls.clear();

    // Even a hook named like ours is nobody's until it is named in LifecycleHookNames.
    for (path, payload) in deliveries(&deployed.fleet.spot[0], OURS) {
        let answer = deployed.invoke(payload).await.expect("ignored is not an error");
        assert_ignored(path, &answer, "LIFECYCLE_HOOK_NAMES names none");
    }
    deployed.assert_untouched(&before).await;
}

#[tokio::test]
async fn another_tools_hook_is_ignored_on_every_delivery_path() {
    let deployed = Deployed::with(&[("LifecycleHookNames", OURS)]).await;
    assert_eq!(deployed.env.get("LIFECYCLE_HOOK_NAMES"), Some(OURS));
    let before = deployed.fleet.registrations().await;
    deployed.proxy.calls.clear();

    for node in [&deployed.fleet.spot[0], &deployed.fleet.neighbour] {
        for (path, payload) in deliveries(node, THEIRS) {
            let answer = deployed.invoke(payload).await.expect("ignored is not an error");
            assert_ignored(path, &answer, "its owner completes it");
        }
    }
    deployed.assert_untouched(&before).await;
}

#[tokio::test]
async fn our_hook_is_cleaned_up_and_completed_with_continue_on_every_delivery_path() {
    let deployed = Deployed::with(&[("LifecycleHookNames", &format!("{THEIRS}-not,{OURS}"))]).await;
    let node = &deployed.fleet.spot[0];

    for (n, (path, payload)) in deliveries(node, OURS).into_iter().enumerate() {
        let answer = deployed.invoke(payload).await.expect("cleaned");
        match path {
            "EventBridge" => {
                assert_eq!(answer["outcome"], "cleaned", "{answer:#}");
                assert_eq!(answer["lifecycle"]["result"], "CONTINUE");
                assert!(
                    deployed
                        .fleet
                        .registrations_of(node, &deployed.fleet.registrations().await)
                        .is_empty()
                );
                assert_eq!(
                    deployed
                        .fleet
                        .enis_in_group(node, &deployed.fleet.quarantine_group)
                        .await,
                    node.enis.iter().cloned().collect()
                );
            }
            // Later deliveries of the same action find it done (the claim) and end quietly.
            "SQS batch" => assert_eq!(answer, json!({"batchItemFailures": []}), "{answer:#}"),
            _ => assert_eq!(answer, json!({"notifications": 1}), "{answer:#}"),
        }
        if n == 0 {
            let completed = deployed.completed();
            assert_eq!(completed.len(), 1, "{completed:?}");
            assert_eq!(completed[0].lifecycle_hook_name(), Some(OURS));
            assert_eq!(completed[0].instance_id(), Some(node.id.as_str()));
            assert_eq!(completed[0].lifecycle_action_result(), Some("CONTINUE"));
        }
    }
    assert_eq!(
        deployed.fleet.published().await.len(),
        1,
        "one summary for the one action"
    );
}

#[tokio::test]
async fn with_event_scope_all_an_on_demand_instance_on_our_hook_is_cleaned_up_as_before() {
    let deployed = Deployed::with(&[("LifecycleHookNames", OURS), ("EventScope", "all")]).await;
    let neighbour = &deployed.fleet.neighbour;
    let (_, event) = deliveries(neighbour, OURS).remove(0);

    let answer = deployed.invoke(event).await.expect("cleaned");

    assert_eq!(answer["outcome"], "cleaned", "{answer:#}");
    assert!(
        deployed
            .fleet
            .registrations_of(neighbour, &deployed.fleet.registrations().await)
            .is_empty()
    );
    let completed = deployed.completed();
    assert_eq!(completed.len(), 1);
    assert_eq!(completed[0].instance_id(), Some(neighbour.id.as_str()));
    assert_eq!(completed[0].lifecycle_action_result(), Some("CONTINUE"));
}

/// EVENT_SCOPE=spot (the default) applies to lifecycle actions as to every account-wide event: an on-demand
/// instance's action on our hook changes nothing, publishes nothing, and is only completed with CONTINUE, so Auto
/// Scaling does not hold the instance until the hook times out.
#[tokio::test]
async fn under_event_scope_spot_an_on_demand_instance_on_our_hook_is_only_let_go() {
    let deployed = Deployed::with(&[("LifecycleHookNames", OURS)]).await;
    let neighbour = &deployed.fleet.neighbour;
    let before = deployed.fleet.registrations().await;

    for (path, payload) in deliveries(neighbour, OURS) {
        deployed.proxy.calls.clear();
        let answer = deployed.invoke(payload).await.expect("ignored is not an error");
        assert_ignored(path, &answer, "EVENT_SCOPE=spot");
        assert_eq!(deployed.proxy.calls.sequence(), ["DescribeInstances"], "{path}");
    }
    let completed = deployed.completed();
    // One per invocation: the batch's three records of one instance are one request.
    assert_eq!(completed.len(), 3, "{completed:?}");
    for input in &completed {
        assert_eq!(input.lifecycle_hook_name(), Some(OURS));
        assert_eq!(input.instance_id(), Some(neighbour.id.as_str()));
        assert_eq!(input.lifecycle_action_result(), Some("CONTINUE"));
    }
    assert_eq!(deployed.fleet.registrations().await, before);
    assert!(deployed.fleet.published().await.is_empty());
    assert!(
        deployed
            .fleet
            .enis_in_group(neighbour, &deployed.fleet.quarantine_group)
            .await
            .is_empty()
    );
}

/// The scope tag applies to lifecycle actions too: an instance without it is refused (and the refusal published, as
/// for every source), nothing is changed, and our own hook's action is still completed with CONTINUE.
#[tokio::test]
async fn an_instance_without_the_scope_tag_is_refused_and_let_go() {
    let deployed = Deployed::with(&[("LifecycleHookNames", OURS), ("ScopeTag", "prod")]).await;
    let node = &deployed.fleet.spot[0];
    let before = deployed.fleet.registrations().await;
    let (_, event) = deliveries(node, OURS).remove(0);

    let error = deployed.invoke(event).await.expect_err("refused");

    assert_eq!(error.error_type(), "OutOfScope", "{error}");
    assert_eq!(deployed.fleet.registrations().await, before);
    assert!(
        deployed
            .fleet
            .enis_in_group(node, &deployed.fleet.quarantine_group)
            .await
            .is_empty()
    );
    let completed = deployed.completed();
    assert_eq!(completed.len(), 1);
    assert_eq!(completed[0].lifecycle_action_result(), Some("CONTINUE"));
    let published = deployed.fleet.published().await;
    assert_eq!(published.len(), 1, "the refusal, as for any source");
    assert_eq!(published[0]["MessageAttributes"]["outcome"]["Value"], "refused");
}
