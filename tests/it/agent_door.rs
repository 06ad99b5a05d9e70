//! The agent entry point (`ENTRY_POINT=agent`, the template's AgentFunction) against moto, through the real handler,
//! tried as an attacker on a node would: a payload for another instance, one with no proof or a forged one, and
//! EventBridge-, SQS-, SNS-shaped and restore payloads sent straight to it. Each changes nothing in AWS and raises
//! exactly one security alert. A genuine proof of the sender's own instance is acted on.

use crate::common;

use common::fleet::Fleet;
use common::identity::{Signer, document};
use common::{CallCounter, Moto};
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};
use spot_cleanup::{App, HandlerError, handle};

const ACCOUNT: &str = "123456789012";

/// The calls that change something in AWS.
const MUTATIONS: [&str; 6] = [
    "DeregisterTargets",
    "ModifyNetworkInterfaceAttribute",
    "CreateTags",
    "DeleteTags",
    "PutItem",
    "UpdateItem",
];

async fn invoke(app: &App, payload: Value) -> Result<Value, HandlerError> {
    let mut context = Context::default();
    context.invoked_function_arn = format!("arn:aws:lambda:us-east-1:{ACCOUNT}:function:spot-cleanup-agent");
    handle(app, LambdaEvent::new(payload, context)).await
}

/// The agent function as the template deploys it: ENTRY_POINT=agent, nothing about identity set (so the proof is
/// required, against AWS's shipped certificates), plus `extra`.
async fn agent_function(moto: &Moto, fleet: &Fleet, extra: &[(&str, &str)]) -> (App, CallCounter) {
    let mut vars = vec![("ENTRY_POINT", "agent")];
    vars.extend_from_slice(extra);
    let config = fleet.config_with(&vars).expect("the template's configuration");
    let (clients, calls) = common::counted_clients(&moto.sdk_config().await);
    (App::new(config, clients), calls)
}

fn mutations(calls: &CallCounter) -> Vec<String> {
    let sequence = calls.sequence();
    sequence
        .into_iter()
        .filter(|op| MUTATIONS.contains(&op.as_str()))
        .collect()
}

fn attribute(note: &Value, name: &str) -> String {
    note["MessageAttributes"][name]["Value"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn with_proof(mut payload: Value, document: &str, signature: &str) -> Value {
    payload["identity_document"] = json!(document);
    payload["identity_signature"] = json!(signature);
    payload
}

/// What an SQS event source would deliver: one record per body.
fn sqs(bodies: &[Value]) -> Value {
    let records: Vec<Value> = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| json!({"messageId": format!("m-{i}"), "body": body.to_string(), "eventSource": "aws:sqs"}))
        .collect();
    json!({ "Records": records })
}

/// What SNS would deliver to a subscribed function: one record carrying `message`.
fn sns(message: &Value) -> Value {
    json!({"Records": [{
        "EventSource": "aws:sns",
        "EventVersion": "1.0",
        "EventSubscriptionArn": format!("arn:aws:sns:us-east-1:{ACCOUNT}:spot-events:2bcfbf39-05c3-41de-beaa-fcfcc21c8f55"),
        "Sns": {
            "Type": "Notification",
            "MessageId": "95df01b4-ee98-5cb9-9903-4c221d41eb5e",
            "TopicArn": format!("arn:aws:sns:us-east-1:{ACCOUNT}:spot-events"),
            "Subject": null,
            "Message": message.to_string(),
            "Timestamp": chrono::Utc::now().to_rfc3339(),
            "SignatureVersion": "1",
            "Signature": "EXAMPLE",
            "SigningCertUrl": "https://sns.us-east-1.amazonaws.com/cert.pem",
            "UnsubscribeUrl": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
            "MessageAttributes": {}
        }
    }]})
}

#[tokio::test]
async fn an_attacker_on_a_node_changes_nothing_and_each_try_raises_one_alert() {
    let moto = Moto::start();
    let fleet = Fleet::build(&moto.sdk_config().await, 2).await;
    let (node, victim) = (&fleet.spot[0], &fleet.spot[1]);
    let (app, calls) = agent_function(&moto, &fleet, &[]).await;
    let before = (
        fleet.registrations().await,
        fleet.enis(node).await,
        fleet.enis(victim).await,
    );
    let warning = |id: &str| common::event_for("spot-interruption-terminate.json", id);
    let forged = document(&victim.id, ACCOUNT, "us-east-1");
    let attempts = [
        (
            "an agent payload with no proof",
            common::event_for("node-agent.json", &victim.id),
            1,
        ),
        (
            "an agent payload with a proof signed by anyone but AWS",
            with_proof(
                common::event_for("node-agent.json", &victim.id),
                &forged,
                &Signer::new().sign(&forged),
            ),
            1,
        ),
        ("an EventBridge Spot warning", warning(&victim.id), 1),
        (
            "an SQS batch naming two instances",
            sqs(&[warning(&victim.id), warning(&node.id)]),
            2,
        ),
        ("an SNS delivery", sns(&warning(&victim.id)), 1),
        (
            "agent payloads inside an SNS delivery",
            sns(&common::event_for("node-agent.json", &victim.id)),
            1,
        ),
        ("a restore", json!({"action": "restore", "instance_id": victim.id}), 1),
    ];
    for (what, payload, named) in attempts {
        let error = invoke(&app, payload).await.expect_err(what);
        assert_eq!(error.error_type(), "IdentityNotProven", "{what}: {error}");
        let alerts = fleet.published().await;
        assert_eq!(alerts.len(), 1, "{what}: one alert, {alerts:#?}");
        let alert = &alerts[0];
        assert_eq!(attribute(alert, "security"), "true", "{what}");
        assert_eq!(attribute(alert, "error_type"), "IdentityNotProven", "{what}");
        let message: Value = serde_json::from_str(alert["Message"].as_str().unwrap()).unwrap();
        assert_eq!(message["changed"], "nothing", "{what}: {message:#}");
        if named > 1 {
            assert_eq!(message["count"], named, "{what}: {message:#}");
            assert_eq!(attribute(alert, "refusals"), named.to_string(), "{what}");
        } else {
            assert_eq!(attribute(alert, "instance_id"), victim.id, "{what}");
        }
    }
    assert_eq!(mutations(&calls), Vec::<String>::new(), "{:?}", calls.sequence());
    assert_eq!(
        (
            fleet.registrations().await,
            fleet.enis(node).await,
            fleet.enis(victim).await
        ),
        before,
        "nothing moved"
    );
    // A payload naming no instance (an index refresh) is rejected as invalid input; there is nothing to alert about.
    let error = invoke(&app, common::event_for("scheduled-refresh.json", &victim.id))
        .await
        .unwrap_err();
    assert_eq!(error.error_type(), "InvalidInput", "{error}");
    assert!(error.to_string().contains("agent entry point"), "{error}");
    assert!(fleet.published().await.is_empty());
}

/// The test signs with its own certificate (`IDENTITY_CERT_PEM`), since no test can sign with AWS's keys: a genuine
/// proof of the node's own instance, sent for another instance, is refused; for its own, it is acted on.
#[tokio::test]
async fn a_nodes_genuine_proof_names_its_own_instance_and_no_other() {
    let moto = Moto::start();
    let fleet = Fleet::build(&moto.sdk_config().await, 2).await;
    let (node, victim) = (&fleet.spot[0], &fleet.spot[1]);
    let signer = Signer::new();
    let cert = signer.cert_path();
    let (app, calls) = agent_function(&moto, &fleet, &[("IDENTITY_CERT_PEM", cert.to_str().unwrap())]).await;
    let own = document(&node.id, ACCOUNT, "us-east-1");
    let before = fleet.registrations().await;

    let stolen = with_proof(
        common::event_for("node-agent.json", &victim.id),
        &own,
        &signer.sign(&own),
    );
    let error = invoke(&app, stolen).await.expect_err("another instance");
    assert_eq!(error.error_type(), "IdentityNotProven");
    assert!(error.to_string().contains("instanceId"), "{error}");
    assert_eq!(fleet.published().await.len(), 1, "one alert");
    assert_eq!(mutations(&calls), Vec::<String>::new());
    assert_eq!(fleet.registrations().await, before);

    let answer = invoke(
        &app,
        with_proof(common::event_for("node-agent.json", &node.id), &own, &signer.sign(&own)),
    )
    .await
    .expect("its own instance, proven");
    assert_eq!(answer["outcome"], "cleaned", "{answer:#}");
    let after = fleet.registrations().await;
    assert!(fleet.registrations_of(node, &after).is_empty());
    assert_eq!(
        fleet.registrations_of(victim, &after),
        fleet.registrations_of(victim, &before)
    );
}
