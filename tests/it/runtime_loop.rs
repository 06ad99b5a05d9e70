//! The real binary under the Lambda runtime loop (`cargo lambda watch` as the Runtime API, `cargo lambda invoke` as
//! the caller), against moto: one process cleans up an interruption, refuses bad payloads without touching AWS, and
//! keeps serving afterwards, down to an SQS batch answered record by record.

use crate::common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::Moto;
use common::fleet::{Fleet, Registration};
use common::runtime::{LambdaRuntime, error_type, function_env};
use serde_json::{Value, json};
use spot_cleanup::Summary;

#[tokio::test]
async fn one_function_process_cleans_up_refuses_bad_input_and_keeps_serving() {
    let moto = Moto::start();
    let fleet = Fleet::build(&moto.sdk_config().await, 2).await;
    let runtime = LambdaRuntime::start(
        Path::new(env!("CARGO_BIN_EXE_spot-cleanup")),
        &function_env(&moto, &fleet, false),
    );
    let (first, second) = (&fleet.spot[0], &fleet.spot[1]);
    let before = fleet.registrations().await;
    let ours = fleet.registrations_of(first, &before);
    assert_eq!(ours.len(), 4, "two NodePorts and two pod IPs: {ours:?}");

    // An interruption warning for the first instance: it leaves every group, and its ENIs are walled off.
    let warning = common::event_for("spot-interruption-terminate.json", &first.id);
    let answer = runtime.invoke_json(&warning).expect("the cleanup succeeds");
    let summary: Summary =
        serde_json::from_value(answer.clone()).unwrap_or_else(|e| panic!("the answer is a Summary ({e}): {answer:#}"));
    assert_eq!(summary.outcome.as_str(), "cleaned", "{answer:#}");
    assert_eq!(summary.instance.id.as_str(), first.id);
    let removed: BTreeSet<Registration> = summary
        .removed
        .iter()
        .map(|t| (t.target_group_name.clone(), t.target_id.clone(), t.port))
        .collect();
    assert_eq!(removed, ours);
    let cleaned = fleet.registrations().await;
    assert_eq!(cleaned, before.difference(&ours).cloned().collect());
    assert_eq!(
        fleet.enis_in_group(first, &fleet.quarantine_group).await,
        first.enis.iter().cloned().collect()
    );
    assert_eq!(fleet.published().await.len(), 1);
    let event_id = warning["id"].as_str().unwrap();
    assert_one_line_per_step(&runtime.log_lines(), &first.id, event_id, first.enis.len());

    // Bad payloads are refused, each with an errorType an alarm can match, and nothing in AWS moves.
    let second_enis = fleet.enis(second).await;
    let (status, body) = runtime.post_raw(b"{bad");
    assert_eq!(status, 500, "{body}");
    let body: Value = serde_json::from_str(&body).expect("the error is JSON");
    assert!(
        body["errorType"]
            .as_str()
            .is_some_and(|t| t.ends_with("DeserializeError")),
        "not JSON is refused by the runtime before the handler: {body}"
    );
    let mut malformed: Vec<PathBuf> = std::fs::read_dir(common::repo_root().join("events/malformed"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    malformed.sort();
    assert!(malformed.len() >= 10, "{malformed:?}");
    for file in &malformed {
        let is_json = serde_json::from_str::<Value>(&std::fs::read_to_string(file).unwrap()).is_ok();
        let expected = if is_json {
            "InvalidInput"
        } else {
            "lambda_runtime::deserializer::DeserializeError"
        };
        let stderr = runtime.invoke_file(file).expect_err("refused");
        assert_eq!(error_type(&stderr), Some(expected), "{}: {stderr}", file.display());
    }
    assert_eq!(fleet.registrations().await, cleaned);
    assert_eq!(fleet.enis(second).await, second_enis);
    assert!(fleet.published().await.is_empty());

    // The same process then takes an SQS batch: a redelivery for the first instance, a stop notice for the second,
    // and a record for an instance that does not exist. Only that record is reported back to SQS.
    let answer = runtime
        .invoke_json(&sqs_batch(&first.id, &second.id))
        .expect("a batch answers with its failures");
    assert_eq!(answer, json!({"batchItemFailures": [{"itemIdentifier": "m-gone"}]}));
    let after = fleet.registrations().await;
    assert!(fleet.registrations_of(second, &after).is_empty(), "{after:?}");
    assert_eq!(
        fleet.enis_in_group(second, &fleet.quarantine_group).await,
        second.enis.iter().cloned().collect()
    );
    assert_eq!(
        fleet.registrations_of(&fleet.neighbour, &after).len(),
        5,
        "the neighbour keeps its registrations"
    );
    let published: BTreeSet<(String, String)> = fleet
        .published()
        .await
        .iter()
        .map(|note| {
            let attribute = |name: &str| {
                note["MessageAttributes"][name]["Value"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            };
            (attribute("instance_id"), attribute("outcome"))
        })
        .collect();
    // The redelivery for the first instance found its work done (the claim): it ends quietly, unpublished.
    assert_eq!(published, BTreeSet::from([(second.id.clone(), "cleaned".to_owned())]));
}

/// The function logged each step of the instance's cleanup once, as a JSON object whose top-level fields name the
/// instance and the event, and which carries the runtime's request id.
fn assert_one_line_per_step(lines: &[Value], instance_id: &str, event_id: &str, enis: usize) {
    // The metrics (EMF) lines name the instance too, but they are not steps.
    let ours: Vec<&Value> = lines
        .iter()
        .filter(|l| l["instance_id"] == instance_id && l.get("step").is_some())
        .collect();
    let steps: Vec<&str> = ours.iter().filter_map(|l| l["step"].as_str()).collect();
    assert_eq!(
        steps,
        [
            "describe",
            "claim",
            "fast-path",
            "quarantine",
            "locate",
            "deregister",
            "verify",
            "monitoring",
            "notify",
            "summary"
        ],
        "{ours:#?}"
    );
    for line in &ours {
        assert_eq!(line["event_id"], event_id, "{line}");
        assert!(line["ms"].is_u64() || line["step"] == "summary", "{line}");
        assert!(
            line["spans"][0]["requestId"].as_str().is_some_and(|id| !id.is_empty()),
            "each line carries the Lambda request id: {line}"
        );
    }
    let count = |step: &str, field: &str| {
        ours.iter()
            .filter(|l| l["step"] == step)
            .map(|l| l[field].as_u64().unwrap())
            .sum::<u64>()
    };
    // Two NodePorts and two pod IPs found and removed, and every ENI walled off, with nothing failed.
    assert_eq!(count("locate", "done"), 4);
    assert_eq!(count("fast-path", "done") + count("deregister", "done"), 4);
    assert_eq!(count("verify", "done"), 4);
    assert_eq!(count("quarantine", "done"), enis as u64);
    let failed: u64 = ours.iter().filter_map(|l| l["failed"].as_u64()).sum();
    assert_eq!(failed, 0, "{ours:#?}");
}

/// `events/sqs-batch.json` for two of the fleet's instances, with its event time moved to now, plus a record naming
/// an instance that does not exist.
fn sqs_batch(first: &str, second: &str) -> Value {
    let text = std::fs::read_to_string(common::repo_root().join("events/sqs-batch.json"))
        .expect("sample batch exists")
        .replace("i-0123456789abcdef0", first)
        .replace("i-0fedcba9876543210", second);
    let mut batch: Value = serde_json::from_str(&text).expect("sample batch is JSON");
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let records = batch["Records"].as_array_mut().expect("records");
    for record in records.iter_mut() {
        let mut body: Value = serde_json::from_str(record["body"].as_str().expect("a body")).expect("JSON body");
        if body.get("detail-type").is_some() {
            body["time"] = now.clone().into();
        }
        record["body"] = body.to_string().into();
    }
    let mut gone = records[1].clone();
    gone["messageId"] = "m-gone".into();
    gone["body"] = json!({"instance_id": "i-0badc0ffee0ddf00d"}).to_string().into();
    records.push(gone);
    batch
}

/// Hostile and malformed payloads against the real binary under the runtime loop, with the identity certificate
/// configured: each is refused with its own errorType, not one mutating AWS call goes out (counted on the wire by a
/// proxy in front of moto), and the same process then still cleans up a genuine interruption.
#[tokio::test]
async fn hostile_payloads_are_refused_without_a_single_aws_change_and_the_runtime_keeps_serving() {
    let moto = Moto::start();
    let fleet = Fleet::build(&moto.sdk_config().await, 1).await;
    let signer = common::identity::Signer::new();
    let (proxy, wire) = common::proxy::start(&moto.endpoint);
    let mut env = function_env(&moto, &fleet, false);
    for (name, value) in env.iter_mut() {
        if *name == "AWS_ENDPOINT_URL" {
            *value = proxy.clone();
        }
    }
    env.push(("IDENTITY_CERT_PEM", signer.cert_path().display().to_string()));
    env.push(("MAX_EVENT_AGE", "10m".into()));
    let runtime = LambdaRuntime::start(Path::new(env!("CARGO_BIN_EXE_spot-cleanup")), &env);
    let node = &fleet.spot[0];
    let spot_event = || common::event_for("spot-interruption-terminate.json", &node.id);
    let agent = || common::event_for("node-agent.json", &node.id);
    let with = |mut payload: Value, key: &str, value: Value| {
        payload[key] = value;
        payload
    };
    let own_document = common::identity::document(&node.id, "123456789012", "us-east-1");
    let forged_signature = common::identity::Signer::new().sign(&own_document);
    let stale = (chrono::Utc::now() - chrono::Duration::minutes(30)).to_rfc3339();

    let hostile: Vec<(&str, Value, &str)> = vec![
        (
            "a Spot warning naming an on-demand instance",
            common::event_for("spot-interruption-terminate.json", &fleet.neighbour.id),
            "OutOfScope",
        ),
        (
            "a Spot warning from another region",
            with(spot_event(), "region", json!("eu-west-1")),
            "OutOfScope",
        ),
        (
            "a replayed warning 30 minutes old",
            with(spot_event(), "time", json!(stale)),
            "StaleEvent",
        ),
        (
            "an agent action time 30 minutes past",
            with(agent(), "time", json!(stale)),
            "StaleEvent",
        ),
        (
            // Once passed every check, changed AWS, then aborted the process in terminates_at (issue 25).
            "a Spot warning from the year 262142",
            with(spot_event(), "time", json!("+262142-12-31T23:59:00Z")),
            "InvalidInput",
        ),
        (
            "a Spot warning from the year 9999",
            with(spot_event(), "time", json!("9999-12-31T23:59:59Z")),
            "InvalidInput",
        ),
        (
            "an agent action time in the year 9999",
            with(agent(), "time", json!("9999-12-31T23:59:59Z")),
            "InvalidInput",
        ),
        (
            "an agent proof signed by someone else's key",
            with(
                with(agent(), "identity_document", json!(own_document)),
                "identity_signature",
                json!(forged_signature),
            ),
            "IdentityNotProven",
        ),
        (
            "an identity document without its signature",
            with(agent(), "identity_document", json!(own_document)),
            "InvalidInput",
        ),
        (
            "a restore that tries to choose the groups",
            json!({"action": "restore", "instance_id": node.id, "groups": [fleet.app_group]}),
            "InvalidInput",
        ),
        (
            "shell metacharacters in the instance id",
            json!({"instance_id": "i-0123abcd; aws ec2 terminate-instances"}),
            "InvalidInput",
        ),
        (
            "a wildcard instance id in a restore",
            json!({"action": "restore", "instance_id": "i-*"}),
            "InvalidInput",
        ),
        (
            "a megabyte-long instance id",
            json!({"instance_id": "i-".to_owned() + &"0".repeat(1 << 20)}),
            "InvalidInput",
        ),
        (
            "control characters and unicode in the detail-type",
            with(
                spot_event(),
                "detail-type",
                json!("EC2 Spot\u{0000}Instance\u{202e}Warning"),
            ),
            "InvalidInput",
        ),
        (
            "an action the agent cannot ask for",
            json!({"instance_id": node.id, "action": "quarantine-everything"}),
            "InvalidInput",
        ),
        (
            "an index refresh with the index switched off",
            common::event_for("scheduled-refresh.json", &node.id),
            "InvalidInput",
        ),
    ];
    let before = (
        fleet.registrations().await,
        fleet.enis(node).await,
        fleet.enis(&fleet.neighbour).await,
    );
    for (what, payload, expected) in &hostile {
        let stderr = runtime.invoke_json(payload).expect_err(what);
        assert_eq!(error_type(&stderr), Some(*expected), "{what}: {stderr}");
    }
    // Not even valid JSON, and JSON nested deeper than any event: the runtime refuses them before the handler.
    for raw in [
        b"{\"instance_id\": \"i-0123abcd\"".to_vec(),
        "[".repeat(10_000).into_bytes(),
    ] {
        let (status, body) = runtime.post_raw(&raw);
        assert_eq!(status, 500, "{body}");
        assert!(body.contains("DeserializeError"), "{body}");
    }
    let mutations: Vec<String> = wire
        .sequence()
        .into_iter()
        .filter(|op| {
            [
                "DeregisterTargets",
                "ModifyNetworkInterfaceAttribute",
                "CreateTags",
                "DeleteTags",
                "PutItem",
            ]
            .contains(&op.as_str())
        })
        .collect();
    assert_eq!(mutations, Vec::<String>::new(), "calls sent: {:?}", wire.sequence());
    assert_eq!(
        (
            fleet.registrations().await,
            fleet.enis(node).await,
            fleet.enis(&fleet.neighbour).await
        ),
        before
    );
    let alerts = fleet.published().await;
    let security: Vec<String> = alerts
        .iter()
        .map(|n| {
            n["MessageAttributes"]["security"]["Value"]
                .as_str()
                .unwrap_or("-")
                .to_owned()
        })
        .collect();
    assert_eq!(
        security.iter().filter(|s| *s == "true").count(),
        3,
        "out of scope twice, unproven once: {alerts:#?}"
    );
    assert_eq!(security.iter().filter(|s| *s == "false").count(), 2, "two stale");

    // Still serving: a genuine warning is acted on, and a valid proof is accepted.
    let answer = runtime
        .invoke_json(&with(
            with(agent(), "identity_document", json!(own_document)),
            "identity_signature",
            json!(signer.sign(&own_document)),
        ))
        .expect("a genuine, signed agent request");
    assert_eq!(answer["outcome"], "cleaned", "{answer:#}");
    assert!(fleet.registrations_of(node, &fleet.registrations().await).is_empty());
}
