//! The init warm-up: every endpoint is reached before the first invocation, only EC2 gets a real API call, and what
//! that call learned spares the first cleanup a lookup.

use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use aws_config::BehaviorVersion;
use aws_config::Region;
use common::Moto;
use common::fleet::Fleet;
use lambda_runtime::{Context, LambdaEvent};
use spot_cleanup::warm_up;
use spot_cleanup::{App, Clients, Config, Summary, handle};

/// One request as it arrived on the wire.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    signed: bool,
    /// The SDK's `api/<service>` user-agent entry: which client sent it.
    api: String,
    body: String,
}

/// An endpoint that writes down every request and answers each with a 400, as AWS answers an unsigned one.
fn recording_endpoint() -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let mut headers = Vec::new();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line.trim().is_empty() {
                    break;
                }
                let (name, value) = line.split_once(':').unwrap();
                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
            }
            let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
            let length: usize = header("content-length").map_or(0, |v| v.parse().unwrap());
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let mut parts = request_line.split_whitespace();
            let user_agent = header("x-amz-user-agent").or(header("user-agent")).unwrap_or_default();
            log.lock().unwrap().push(Seen {
                method: parts.next().unwrap().to_owned(),
                path: parts.next().unwrap().to_owned(),
                signed: header("authorization").is_some(),
                api: user_agent
                    .split_whitespace()
                    .find_map(|p| p.strip_prefix("api/"))
                    .unwrap_or_default()
                    .split('/')
                    .next()
                    .unwrap()
                    .to_owned(),
                body: String::from_utf8_lossy(&body).into_owned(),
            });
            let answer = "<ErrorResponse><Error><Code>MissingAuthenticationToken</Code></Error></ErrorResponse>";
            let _ = write!(
                stream,
                "HTTP/1.1 400 Bad Request\r\ncontent-type: text/xml\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    (endpoint, seen)
}

fn config(extra: &[(&str, &str)]) -> Config {
    Config::from_lookup(|name| match name {
        "SNS_TOPIC_ARN" => Some("arn:aws:sns:us-east-1:123456789012:spot-cleanup".into()),
        "QUARANTINE_SECURITY_GROUP_ID" => Some("sg-0123456789abcdef0".into()),
        _ => extra.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string()),
    })
    .unwrap()
}

#[tokio::test]
async fn warm_up_reaches_every_endpoint_and_spends_no_api_call_but_ec2s() {
    let (endpoint, seen) = recording_endpoint();
    let shared = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(&endpoint)
        .credentials_provider(aws_sdk_ec2::config::Credentials::new(
            "testing", "testing", None, None, "tests",
        ))
        .load()
        .await;
    let app = App::new(
        config(&[("REGISTRATION_INDEX_TABLE", "spot-cleanup-index")]),
        Clients::from_shared(&shared),
    );

    let report = warm_up(&app).await;

    let seen = seen.lock().unwrap().clone();
    let mut pings: Vec<&str> = seen
        .iter()
        .filter(|s| s.method == "GET")
        .map(|s| s.api.as_str())
        .collect();
    pings.sort();
    assert_eq!(
        pings,
        ["autoscaling", "dynamodb", "elasticloadbalancingv2", "sns"],
        "{seen:#?}"
    );
    for ping in seen.iter().filter(|s| s.method == "GET") {
        assert_eq!(ping.path, "/");
        assert!(
            !ping.signed,
            "a ping carries no signature, so no account is charged: {ping:?}"
        );
        assert!(ping.body.is_empty(), "a ping names no API action: {ping:?}");
    }
    let calls: Vec<&Seen> = seen.iter().filter(|s| s.method != "GET").collect();
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert!(calls[0].signed && calls[0].api == "ec2" && calls[0].body.contains("Action=DescribeSecurityGroups"));

    let mut warmed = report.warmed.clone();
    warmed.sort();
    assert_eq!(warmed, ["autoscaling", "dynamodb", "elb", "sns"], "{report:?}");
    assert!(
        !report.quarantine_groups_cached && report.failed.len() == 1 && report.failed[0].starts_with("ec2: "),
        "an EC2 error is kept for the log, and nothing is cached from it: {report:?}"
    );
}

#[tokio::test]
async fn the_first_cleanup_after_a_warm_up_does_not_look_up_the_quarantine_groups_again() {
    let moto = Moto::start();
    let fleet = Fleet::build(&moto.sdk_config().await, 1).await;
    let (clients, calls) = common::counted_clients(&moto.sdk_config().await);
    let app = App::new(fleet.config(false), clients);

    let report = warm_up(&app).await;
    assert!(report.quarantine_groups_cached, "{report:?}");
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(calls.get("DescribeSecurityGroups"), 1);

    let node = &fleet.spot[0];
    let event = common::event_for("spot-interruption-terminate.json", &node.id);
    let answer = handle(&app, LambdaEvent::new(event, Context::default())).await.unwrap();
    let summary: Summary = serde_json::from_value(answer).unwrap();
    assert_eq!(summary.outcome.as_str(), "cleaned", "{summary:#?}");
    assert_eq!(
        calls.get("DescribeSecurityGroups"),
        1,
        "the cleanup used the groups the warm-up found: {:?}",
        calls.sequence()
    );
}
