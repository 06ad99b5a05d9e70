//! `scripts/replay-dlq` against moto's SQS and the real binary under the Lambda runtime loop: messages in the three
//! shapes AWS writes to the dead-letter queue (EventBridge's target DLQ, Lambda's OnFailure record, SNS's redrive) are
//! put through the function and deleted once it answered without an error; the ones it refuses, or that are in no
//! known shape, stay. A dry run lists them and changes nothing.
//!
//! Moto does not route failed deliveries there itself (its EventBridge has no Lambda targets and ignores
//! DeadLetterConfig, its Lambda keeps EventInvokeConfig without acting on it, and SNS-to-Lambda needs Docker), so the
//! messages are written as AWS writes them (events/dlq/), and scripts/check-template proves the wiring instead.

use crate::common;

use std::path::Path;
use std::process::{Command, Output};

use aws_sdk_sqs::types::{MessageAttributeValue, QueueAttributeName};
use common::Moto;
use common::fleet::{Fleet, Node};
use common::runtime::{LambdaRuntime, function_env};
use serde_json::Value;

/// The emulator's only function, which the replayed records name.
const FUNCTION_ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:_";

/// A message from `events/dlq/`: its body (with the instance id and the inner event's time replaced) and attributes.
fn dlq_sample(file: &str, instance_id: &str, time: &str) -> (String, Vec<(String, String)>) {
    let text = std::fs::read_to_string(common::repo_root().join("events/dlq").join(file)).expect("sample exists");
    let sample: Value = serde_json::from_str(&text).expect("sample is JSON");
    let mut body: Value = serde_json::from_str(sample["Body"].as_str().expect("a body")).expect("a JSON body");
    // The original event, wherever the shape keeps it.
    match file {
        "lambda-on-failure.json" => {
            body["requestPayload"]["time"] = time.into();
            body["requestContext"]["functionArn"] = format!("{FUNCTION_ARN}:$LATEST").into();
        }
        "sns-redrive.json" => {
            // A Spot warning a topic of the account's forwards (SnsSourceTopicArns), as in events/sqs-sns-envelope.json.
            let mut event = common::event_for("spot-interruption-terminate.json", instance_id);
            event["time"] = time.into();
            body["Message"] = event.to_string().into();
        }
        _ => body["time"] = time.into(),
    }
    let body = body.to_string().replace("i-0123456789abcdef0", instance_id);
    let attributes = sample["MessageAttributes"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, value)| {
            let value = value["StringValue"].as_str().unwrap();
            let value = if name == "TARGET_ARN" { FUNCTION_ARN } else { value };
            (name.clone(), value.to_owned())
        })
        .collect();
    (body, attributes)
}

async fn send(fleet: &Fleet, queue: &str, (body, attributes): (String, Vec<(String, String)>)) {
    let mut request = fleet.sqs.send_message().queue_url(queue).message_body(body);
    for (name, value) in attributes {
        let value = MessageAttributeValue::builder()
            .data_type("String")
            .string_value(value)
            .build()
            .unwrap();
        request = request.message_attributes(name, value);
    }
    request.send().await.expect("the message is queued");
}

/// (visible, in flight) messages in the queue.
async fn counts(fleet: &Fleet, queue: &str) -> (u64, u64) {
    let attributes = fleet
        .sqs
        .get_queue_attributes()
        .queue_url(queue)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .unwrap();
    let get = |name: QueueAttributeName| {
        attributes
            .attributes()
            .and_then(|a| a.get(&name))
            .and_then(|v| v.parse().ok())
            .unwrap_or(u64::MAX)
    };
    (
        get(QueueAttributeName::ApproximateNumberOfMessages),
        get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
    )
}

fn replay(moto: &Moto, runtime: &LambdaRuntime, queue: &str, extra: &[&str]) -> Output {
    Command::new(common::venv_bin("python"))
        .arg(common::repo_root().join("scripts/replay-dlq"))
        .args(["--queue-url", queue, "--function", "_"])
        .args(extra)
        .env_clear()
        .envs(moto.env())
        .env("AWS_ENDPOINT_URL_LAMBDA", runtime.invoke_endpoint())
        .output()
        .expect("scripts/replay-dlq runs")
}

fn cleaned(
    fleet: &Fleet,
    node: &Node,
    registrations: &std::collections::BTreeSet<common::fleet::Registration>,
) -> bool {
    fleet.registrations_of(node, registrations).is_empty()
}

#[tokio::test]
async fn a_replay_puts_each_dead_letter_through_the_function_and_leaves_what_it_refuses() {
    let moto = Moto::start();
    let fleet = Fleet::build(&moto.sdk_config().await, 3).await;
    let runtime = LambdaRuntime::start(
        Path::new(env!("CARGO_BIN_EXE_spot-cleanup")),
        &function_env(&moto, &fleet, false),
    );
    let queue = fleet
        .sqs
        .create_queue()
        .queue_name("spot-cleanup-dlq")
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_owned();
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let hour_ago = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (a, b, c) = (&fleet.spot[0], &fleet.spot[1], &fleet.spot[2]);
    send(&fleet, &queue, dlq_sample("eventbridge-target.json", &a.id, &now)).await;
    send(&fleet, &queue, dlq_sample("lambda-on-failure.json", &b.id, &now)).await;
    send(&fleet, &queue, dlq_sample("sns-redrive.json", &c.id, &now)).await;
    // An hour-old warning for the neighbour: the function refuses it as stale, on purpose, so it stays.
    send(
        &fleet,
        &queue,
        dlq_sample("eventbridge-target.json", &fleet.neighbour.id, &hour_ago),
    )
    .await;
    // Nothing AWS would write: left, named.
    send(&fleet, &queue, ("not an event".to_owned(), Vec::new())).await;
    let before = fleet.registrations().await;
    assert!(!cleaned(&fleet, a, &before) && !cleaned(&fleet, b, &before) && !cleaned(&fleet, c, &before));

    // A dry run lists four replays, one unreadable message, and changes nothing: everything stays, visible at once.
    let dry = replay(&moto, &runtime, &queue, &["--dry-run"]);
    let out = String::from_utf8_lossy(&dry.stdout);
    assert_eq!(
        dry.status.code(),
        Some(1),
        "one message would be left: {out}{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    let would: Vec<&str> = out.lines().filter(|l| l.starts_with("would")).collect();
    assert_eq!(would.len(), 4, "{out}");
    for (kind, node) in [("eventbridge", a), ("destination", b), ("sns", c)] {
        assert!(
            would
                .iter()
                .any(|l| l.contains(kind) && l.contains(&node.id) && l.contains("-> _")),
            "{kind} for {}: {out}",
            node.id
        );
    }
    assert!(
        out.contains("ThrottlingException") && out.contains("RetriesExhausted"),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.starts_with("left") && l.contains("not JSON")),
        "{out}"
    );
    assert_eq!(fleet.registrations().await, before);
    assert!(fleet.published().await.is_empty());
    assert_eq!(counts(&fleet, &queue).await, (5, 0));

    // The replay: three cleanups, each deleted; the stale warning and the unreadable message stay.
    let run = replay(&moto, &runtime, &queue, &[]);
    let out = String::from_utf8_lossy(&run.stdout);
    assert_eq!(
        run.status.code(),
        Some(1),
        "two are left: {out}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(out.lines().filter(|l| l.starts_with("replayed ")).count(), 3, "{out}");
    assert!(out.contains("replayed 3, left 2"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("left") && l.contains(&fleet.neighbour.id) && l.contains("StaleEvent")),
        "{out}"
    );
    let after = fleet.registrations().await;
    for node in [a, b, c] {
        assert!(cleaned(&fleet, node, &after), "{} still registered: {after:?}", node.id);
        assert_eq!(
            fleet.enis_in_group(node, &fleet.quarantine_group).await,
            node.enis.iter().cloned().collect(),
            "{} quarantined",
            node.id
        );
    }
    assert_eq!(
        fleet.registrations_of(&fleet.neighbour, &after),
        fleet.registrations_of(&fleet.neighbour, &before),
        "the stale warning changed nothing"
    );
    let outcomes: Vec<(String, String)> = fleet
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
        .filter(|(_, outcome)| outcome == "cleaned")
        .collect();
    assert_eq!(outcomes.len(), 3, "{outcomes:?}");
    assert_eq!(
        counts(&fleet, &queue).await,
        (2, 0),
        "the two left are visible again at once"
    );
    let left: Vec<String> = fleet
        .sqs
        .receive_message()
        .queue_url(&queue)
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap()
        .messages()
        .iter()
        .map(|m| m.body().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.iter().any(|b| b == "not an event"), "{left:?}");
    assert!(
        left.iter()
            .any(|b| b.contains(&fleet.neighbour.id) && b.contains(&hour_ago)),
        "{left:?}"
    );
}

/// A record in the queue that names a function other than the stack's (planted there, say) is left and named, never
/// invoked with the operator's credentials; the stack's own are replayed as usual.
#[tokio::test]
async fn a_replay_invokes_only_the_stacks_own_functions() {
    let moto = Moto::start();
    let fleet = Fleet::build(&moto.sdk_config().await, 1).await;
    let runtime = LambdaRuntime::start(
        Path::new(env!("CARGO_BIN_EXE_spot-cleanup")),
        &function_env(&moto, &fleet, false),
    );
    let queue = fleet
        .sqs
        .create_queue()
        .queue_name("spot-cleanup-dlq")
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_owned();
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let node = &fleet.spot[0];
    let (body, attributes) = dlq_sample("lambda-on-failure.json", &node.id, &now);
    let mut foreign: Value = serde_json::from_str(&body).unwrap();
    foreign["requestContext"]["functionArn"] =
        "arn:aws:lambda:us-east-1:123456789012:function:someone-elses:$LATEST".into();
    send(&fleet, &queue, (foreign.to_string(), attributes.clone())).await;
    send(&fleet, &queue, (body, attributes)).await;

    let run = replay(&moto, &runtime, &queue, &["--restore-function", "spot-cleanup-restore"]);
    let out = String::from_utf8_lossy(&run.stdout);
    assert_eq!(
        run.status.code(),
        Some(1),
        "{out}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("left") && l.contains("'someone-elses'") && l.contains("not invoked")),
        "{out}"
    );
    assert!(out.contains("replayed 1, left 1"), "{out}");
    assert!(
        fleet.registrations_of(node, &fleet.registrations().await).is_empty(),
        "the stack's own was replayed"
    );
    assert_eq!(counts(&fleet, &queue).await, (1, 0), "the foreign one stays");

    // Which functions are the stack's must be said: without --function nothing runs.
    let bare = Command::new(common::venv_bin("python"))
        .arg(common::repo_root().join("scripts/replay-dlq"))
        .args(["--queue-url", &queue])
        .env_clear()
        .envs(moto.env())
        .output()
        .unwrap();
    assert_eq!(bare.status.code(), Some(2), "{}", String::from_utf8_lossy(&bare.stderr));
}
