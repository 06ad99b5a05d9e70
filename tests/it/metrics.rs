//! The Embedded Metric Format record of a real cleanup on moto: the structure CloudWatch needs to turn the log line
//! into metrics, and values that match what was done.

use crate::common;

use chrono::Utc;
use common::Moto;
use common::fleet::Fleet;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};
use spot_cleanup::NotifyFormat;
use spot_cleanup::subject;
use spot_cleanup::summary::{Outcome, Step, StepError};
use spot_cleanup::{App, Summary, handle, metrics};

#[tokio::test]
async fn a_cleanup_becomes_one_emf_record_with_its_counts_and_the_time_left() {
    let moto = Moto::start();
    let fleet = Fleet::build(&moto.sdk_config().await, 1).await;
    let app = App::new(
        fleet.config(false),
        spot_cleanup::Clients::from_shared(&moto.sdk_config().await),
    );
    let node = &fleet.spot[0];
    let answer = handle(
        &app,
        LambdaEvent::new(
            common::event_for("spot-interruption-terminate.json", &node.id),
            Context::default(),
        ),
    )
    .await
    .unwrap();
    let mut summary: Summary = serde_json::from_value(answer).unwrap();
    let now = Utc::now();

    let record = metrics::record(&summary, now);

    let names = [
        "Cleanups",
        "Failures",
        "TargetsDeregistered",
        "EnisQuarantined",
        "Duration",
        "TimeLeftBeforeTermination",
    ];
    let directive = &record["_aws"]["CloudWatchMetrics"][0];
    assert_eq!(record["_aws"]["Timestamp"], json!(now.timestamp_millis()));
    assert_eq!(directive["Namespace"], "SpotCleanup");
    assert_eq!(directive["Dimensions"], json!([[], ["Outcome"], ["Action"]]));
    let declared: Vec<&str> = directive["Metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["Name"].as_str().unwrap())
        .collect();
    assert_eq!(declared, names);
    for name in names {
        assert!(
            record[name].is_number(),
            "{name} is a number at the top level: {record}"
        );
    }
    for dimension in ["Outcome", "Action"] {
        assert!(
            record[dimension].is_string(),
            "{dimension} is a string at the top level"
        );
    }
    assert_eq!(record["Outcome"], "cleaned");
    assert_eq!(record["Action"], "terminate");
    assert_eq!(record["Cleanups"], 1);
    assert_eq!(record["Failures"], 0);
    assert_eq!(record["TargetsDeregistered"], 4);
    assert_eq!(record["EnisQuarantined"], json!(node.enis.len()));
    assert_eq!(record["Duration"], json!(summary.timings_ms.total));
    let left = record["TimeLeftBeforeTermination"].as_f64().unwrap();
    assert!(left > 0.0 && left <= 120.0, "the warning was given just now: {left}");
    assert_eq!(record["instance_id"], node.id.as_str());
    assert!(record["event_id"].is_string());

    // An incomplete cleanup is a failure, which the alarm counts.
    summary.errors.push(StepError {
        step: Step::Deregister,
        message: "Throttling".into(),
    });
    summary.settle_outcome();
    assert_eq!(summary.outcome, Outcome::Partial);
    let record: Value = metrics::record(&summary, now);
    assert_eq!(record["Failures"], 1);
    assert_eq!(record["Outcome"], "partial");
}

#[tokio::test]
async fn the_sns_message_is_text_for_email_and_a_chatbot_notification_for_chat() {
    let moto = Moto::start();
    let fleet = Fleet::build(&moto.sdk_config().await, 2).await;
    let mut summaries = Vec::new();
    for (node, format) in fleet.spot.iter().zip([NotifyFormat::Email, NotifyFormat::Chatbot]) {
        let mut config = fleet.config(false);
        config.notify_format = format;
        let app = App::new(config, spot_cleanup::Clients::from_shared(&moto.sdk_config().await));
        let event = common::event_for("spot-interruption-terminate.json", &node.id);
        let answer = handle(&app, LambdaEvent::new(event, Context::default())).await.unwrap();
        summaries.push(serde_json::from_value::<Summary>(answer).unwrap());
    }
    let published = fleet.published().await;
    assert_eq!(published.len(), 2);
    let message_of = |id: &str| {
        published
            .iter()
            .map(|p| p["Message"].as_str().unwrap().to_owned())
            .find(|m| m.contains(id))
            .unwrap_or_else(|| panic!("a message about {id}"))
    };

    // E-mail: plain text a person reads top to bottom, no JSON.
    let email = message_of(&fleet.spot[0].id);
    assert!(serde_json::from_str::<Value>(&email).is_err(), "not JSON: {email}");
    let lines: Vec<&str> = email.lines().collect();
    assert_eq!(lines[0], subject(&summaries[0]), "the subject comes first");
    assert!(lines.contains(&"Outcome:     cleaned"), "{email}");
    assert!(lines.contains(&"Removed from target groups (4)"), "{email}");
    assert!(lines.contains(&"Still registered (0)"), "{email}");
    assert!(lines.contains(&"Errors (0)"), "{email}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("  - eni-") && l.contains("quarantined, original groups: sg-")),
        "{email}"
    );

    // Chat: AWS Chatbot's custom notification schema.
    let chat: Value = serde_json::from_str(&message_of(&fleet.spot[1].id)).expect("a chatbot notification is JSON");
    assert_eq!(chat["version"], "1.0");
    assert_eq!(chat["source"], "custom");
    assert_eq!(chat["content"]["textType"], "client-markdown");
    let title = chat["content"]["title"].as_str().unwrap();
    assert!(title.starts_with(":white_check_mark: spot-cleanup: "), "{title}");
    let description = chat["content"]["description"].as_str().unwrap();
    let groups = Summary::group_count(&summaries[1].removed);
    let expected = format!(
        "*cleaned* `{}`: left 4 target(s) in {groups} group(s)",
        fleet.spot[1].id
    );
    assert!(description.starts_with(&expected), "{description}");
    assert_eq!(chat["content"]["nextSteps"], json!([]));
    assert_eq!(chat["metadata"]["threadId"], fleet.spot[1].id.as_str());
    assert!(chat["id"].is_string());

    // NOTIFY_FORMAT is read in any case; a form it does not know fails init.
    let format = |value: &str| {
        spot_cleanup::Config::from_lookup(|name| match name {
            "SNS_TOPIC_ARN" => Some("arn:aws:sns:us-east-1:123456789012:spot-cleanup".into()),
            "QUARANTINE_SECURITY_GROUP_ID" => Some("sg-0123abcd".into()),
            "NOTIFY_FORMAT" => Some(value.into()),
            _ => None,
        })
        .map(|config| config.notify_format)
    };
    assert_eq!(format("EMAIL"), Ok(NotifyFormat::Email));
    assert!(format("slack").is_err());
}
