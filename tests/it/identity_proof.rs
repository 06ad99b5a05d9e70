//! Authentic node-agent requests, through the real handler against moto: with `REQUIRE_IDENTITY_PROOF=true`, only an
//! agent payload carrying an identity document signed by the configured certificate, for the instance, account and
//! region it names, is acted on. The certificate and signatures are made here with the openssl CLI.

use crate::common;

use common::Moto;
use common::fleet::Fleet;
use common::identity::{Signer, document};
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};
use spot_cleanup::{App, HandlerError, handle};

const ACCOUNT: &str = "123456789012";

async fn invoke(app: &App, payload: Value) -> Result<Value, HandlerError> {
    let mut context = Context::default();
    context.invoked_function_arn = format!("arn:aws:lambda:us-east-1:{ACCOUNT}:function:spot-cleanup");
    handle(app, LambdaEvent::new(payload, context)).await
}

fn agent(instance_id: &str, document: &str, signature: &str) -> Value {
    let mut payload = common::event_for("node-agent.json", instance_id);
    payload["identity_document"] = json!(document);
    payload["identity_signature"] = json!(signature);
    payload
}

#[tokio::test]
async fn only_a_validly_signed_agent_request_for_its_own_instance_is_acted_on() {
    let moto = Moto::start();
    let fleet = Fleet::build(&moto.sdk_config().await, 2).await;
    let signer = Signer::new();
    let other_signer = Signer::new();
    let cert_path = signer.cert_path();
    let config = fleet
        .config_with(&[
            ("IDENTITY_CERT_PEM", cert_path.to_str().unwrap()),
            ("REQUIRE_IDENTITY_PROOF", "true"),
        ])
        .unwrap();
    let (clients, calls) = common::counted_clients(&moto.sdk_config().await);
    let app = App::new(config, clients);
    let (node, other) = (&fleet.spot[0], &fleet.spot[1]);
    let before = fleet.registrations().await;
    let own = document(&node.id, ACCOUNT, "us-east-1");

    let mut tampered = own.replace("m5.large", "m5.xlarge");
    tampered.push(' ');
    let refused = [
        ("unsigned", common::event_for("node-agent.json", &node.id)),
        ("signed by another key", agent(&node.id, &own, &other_signer.sign(&own))),
        (
            "document changed after signing",
            agent(&node.id, &tampered, &signer.sign(&own)),
        ),
        ("signature not base64", agent(&node.id, &own, "not base64 at all!")),
        (
            "a valid proof for another instance",
            agent(
                &node.id,
                &document(&other.id, ACCOUNT, "us-east-1"),
                &signer.sign(&document(&other.id, ACCOUNT, "us-east-1")),
            ),
        ),
        (
            "a valid proof from another account",
            agent(
                &node.id,
                &document(&node.id, "210987654321", "us-east-1"),
                &signer.sign(&document(&node.id, "210987654321", "us-east-1")),
            ),
        ),
    ];
    for (what, payload) in refused {
        let error = invoke(&app, payload).await.expect_err(what);
        assert_eq!(error.error_type(), "IdentityNotProven", "{what}: {error}");
    }
    let mut half = common::event_for("node-agent.json", &node.id);
    half["identity_document"] = json!(own);
    assert_eq!(
        invoke(&app, half).await.unwrap_err().error_type(),
        "InvalidInput",
        "a document without its signature"
    );
    assert_eq!(fleet.registrations().await, before, "nothing moved");
    assert!(
        !calls
            .sequence()
            .iter()
            .any(|op| ["DeregisterTargets", "ModifyNetworkInterfaceAttribute", "CreateTags"].contains(&op.as_str())),
        "{:?}",
        calls.sequence()
    );
    let published = fleet.published().await;
    assert_eq!(published.len(), 6, "each refusal is reported");
    assert!(
        published
            .iter()
            .all(|n| n["MessageAttributes"]["security"]["Value"] == "true")
    );

    // The genuine article.
    let answer = invoke(&app, agent(&node.id, &own, &signer.sign(&own)))
        .await
        .expect("a valid proof");
    assert_eq!(answer["outcome"], "cleaned", "{answer:#}");
    // EventBridge events need no proof: AWS sends them.
    let answer = invoke(&app, common::event_for("spot-interruption-terminate.json", &other.id))
        .await
        .expect("an EventBridge event");
    assert_eq!(answer["outcome"], "cleaned");
}

#[tokio::test]
async fn without_require_a_missing_proof_is_fine_but_a_bad_one_is_not() {
    let moto = Moto::start();
    let fleet = Fleet::build(&moto.sdk_config().await, 2).await;
    let signer = Signer::new();
    let config = fleet.config_with(&[("IDENTITY_CERT_PEM", &signer.cert_pem)]).unwrap();
    let (clients, _) = common::counted_clients(&moto.sdk_config().await);
    let app = App::new(config, clients);
    let (node, other) = (&fleet.spot[0], &fleet.spot[1]);

    let forged = document(&node.id, ACCOUNT, "us-east-1");
    let error = invoke(&app, agent(&node.id, &forged, &Signer::new().sign(&forged)))
        .await
        .expect_err("a proof that is sent is checked");
    assert_eq!(error.error_type(), "IdentityNotProven");
    let answer = invoke(&app, common::event_for("node-agent.json", &other.id))
        .await
        .expect("no proof, none required");
    assert_eq!(answer["outcome"], "cleaned");
}

/// AWS's certificates ship with the function, so requiring a proof needs no certificate; one that is given must be
/// a readable PEM certificate, or init fails naming the variable.
#[test]
fn requiring_a_proof_needs_no_certificate_and_a_bad_certificate_fails_init() {
    let lookup = |vars: &'static [(&'static str, &'static str)]| {
        spot_cleanup::Config::from_lookup(move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
                .or_else(|| match name {
                    "SNS_TOPIC_ARN" => Some("arn:aws:sns:us-east-1:123456789012:t".into()),
                    "QUARANTINE_SECURITY_GROUP_ID" => Some("sg-0123abcd".into()),
                    _ => None,
                })
        })
    };
    let required = lookup(&[("REQUIRE_IDENTITY_PROOF", "true")]).expect("AWS's certificates are shipped");
    assert!(required.trust.identity.required);
    let agent = lookup(&[("ENTRY_POINT", "agent")]).unwrap();
    assert!(agent.trust.identity.required, "on by default at the agent entry point");
    assert!(
        !lookup(&[]).unwrap().trust.identity.required,
        "off by default at the cleanup entry point"
    );
    let message = lookup(&[("IDENTITY_CERT_PEM", "/nonexistent/cert.pem")])
        .unwrap_err()
        .to_string();
    assert!(message.starts_with("IDENTITY_CERT_PEM="), "{message}");
    let message = lookup(&[(
        "IDENTITY_CERT_PEM",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----",
    )])
    .unwrap_err()
    .to_string();
    assert!(message.contains("not a PEM X.509 certificate"), "{message}");
}
