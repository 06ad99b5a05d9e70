//! The real binary under the Lambda runtime loop (`cargo lambda watch` as the Runtime API, `cargo lambda invoke` as
//! the caller), against moto: one process cleans up an interruption, refuses bad payloads without touching AWS, and
//! keeps serving afterwards, down to an SQS batch answered record by record.

mod common;

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
    let answer = runtime
        .invoke_json(&common::event_for("spot-interruption-terminate.json", &first.id))
        .expect("the cleanup succeeds");
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
    assert_eq!(
        published,
        BTreeSet::from([
            (first.id.clone(), "cleaned".to_owned()),
            (second.id.clone(), "cleaned".to_owned()),
        ])
    );
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
