//! The two minutes hold while AWS throttles and fails (issue 18). The template's configuration (the function's table
//! and the record key), an instance in 5 of 30 target groups, and the test proxy between the SDK and moto failing the
//! way AWS does under a mass reclaim: three in ten ELB and EC2 calls throttled, and each dependency (DynamoDB, KMS,
//! SNS) down or slow. Each test asserts the outcome from moto's side (no registration left, every ENI on the quarantine
//! group) and the order of the safety work on the wire; `bench/run --faults` measures the same rows for time.

use crate::common;

use std::time::{Duration, Instant, SystemTime};

use aws_sdk_elasticloadbalancingv2::types::TargetTypeEnum;
use common::Moto;
use common::fleet::{self, Fleet};
use common::proxy::{Call, Proxy, start_proxy};
use lambda_runtime::{Context, LambdaEvent};
use serde_json::Value;
use spot_cleanup::{App, Clients, HandlerError, handle};

const TABLE: &str = "spot-cleanup-faults";
/// The template's function timeout.
const TIMEOUT: Duration = Duration::from_secs(110);

struct Setup {
    _moto: Moto,
    fleet: Fleet,
    proxy: Proxy,
    app: App,
}

/// 30 target groups in the fleet's VPC, the first Spot instance in 5 of them (the fleet's two NodePorts and its pod
/// IP group, and two more), the neighbour in the rest.
async fn setup() -> Setup {
    let moto = Moto::start();
    let shared = moto.sdk_config().await;
    let fleet = Fleet::build(&shared, 1).await;
    common::create_index_table(&shared, TABLE).await;
    let node = &fleet.spot[0];
    for n in 0..2 {
        let arn = fleet::create_target_group(
            &fleet.elb,
            &format!("extra-{n}"),
            &fleet.vpc_id,
            TargetTypeEnum::Instance,
            9000 + n,
        )
        .await;
        fleet::register(
            &fleet.elb,
            &arn,
            vec![
                fleet::target(&node.id, 9000 + n),
                fleet::target(&fleet.neighbour.id, 9000 + n),
            ],
        )
        .await;
    }
    for n in 0..24 {
        let arn = fleet::create_target_group(
            &fleet.elb,
            &format!("other-{n}"),
            &fleet.vpc_id,
            TargetTypeEnum::Instance,
            7000 + n,
        )
        .await;
        fleet::register(&fleet.elb, &arn, vec![fleet::target(&fleet.neighbour.id, 7000 + n)]).await;
    }
    let proxy = start_proxy(&moto.endpoint);
    let through_proxy = common::sdk_config_for(&proxy.endpoint).await;
    let config = fleet
        .config_with(&[("REGISTRATION_INDEX_TABLE", TABLE)])
        .expect("valid configuration");
    let app = App::new(config, Clients::from_shared(&through_proxy));
    Setup {
        _moto: moto,
        fleet,
        proxy,
        app,
    }
}

/// A Spot interruption warning for the first instance, with the template's deadline, as Lambda would hand it over.
async fn interrupt(setup: &Setup) -> (Result<Value, HandlerError>, Duration) {
    let mut context = Context::default();
    let end = SystemTime::now() + TIMEOUT;
    context.deadline = end.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis() as u64;
    let event = common::event_for("spot-interruption-terminate.json", &setup.fleet.spot[0].id);
    let started = Instant::now();
    let answer = handle(&setup.app, LambdaEvent::new(event, context)).await;
    (answer, started.elapsed())
}

/// Nothing left behind: no registration of the instance anywhere, and every ENI on the quarantine group only.
async fn assert_cleaned(setup: &Setup) {
    let node = &setup.fleet.spot[0];
    let all = setup.fleet.registrations().await;
    assert!(
        setup.fleet.registrations_of(node, &all).is_empty(),
        "left registered: {all:?}"
    );
    let quarantined = setup.fleet.enis_in_group(node, &setup.fleet.quarantine_group).await;
    assert_eq!(quarantined.len(), node.enis.len(), "every ENI is walled off");
}

/// The calls that did the safety work, and went through.
fn safety_work(calls: &[Call]) -> Vec<&Call> {
    calls
        .iter()
        .filter(|c| {
            !c.failed
                && matches!(
                    c.action.as_str(),
                    "DeregisterTargets" | "ModifyNetworkInterfaceAttribute"
                )
        })
        .collect()
}

fn publishes(calls: &[Call]) -> Vec<&Call> {
    calls.iter().filter(|c| c.action == "Publish").collect()
}

#[tokio::test]
async fn three_in_ten_elb_and_ec2_calls_throttled_still_leave_nothing_registered() {
    let setup = setup().await;
    setup.proxy.calls.clear();
    setup.proxy.throttle(0.3, 18);

    let (answer, took) = interrupt(&setup).await;

    let answer = answer.expect("a complete cleanup");
    assert_eq!(answer["outcome"], "cleaned", "{answer:#}");
    setup.proxy.heal();
    assert_cleaned(&setup).await;
    let calls = setup.proxy.calls.calls();
    let throttled = calls.iter().filter(|c| c.failed).count();
    assert!(
        throttled >= 5,
        "the proxy throttled {throttled} calls: too few to prove anything"
    );
    // Every throttled deregistration was sent again, and went through: five groups, five successful calls at least.
    let deregistered = calls
        .iter()
        .filter(|c| c.action == "DeregisterTargets" && !c.failed)
        .count();
    assert!(deregistered >= 5, "{deregistered} DeregisterTargets went through");
    // The safety work is done before the summary goes out.
    let last_safety = safety_work(&calls).last().map(|c| c.at).expect("safety work");
    assert!(publishes(&calls).iter().all(|p| p.at > last_safety));
    // Short backoffs, not the SDK's seconds: far inside the two minutes (the figures are bench/run --faults').
    assert!(took < Duration::from_secs(30), "took {took:?}");
}

#[tokio::test]
async fn with_dynamodb_down_the_claim_is_given_up_at_once_and_the_work_goes_ahead() {
    let setup = setup().await;
    setup.proxy.calls.clear();
    setup.proxy.take_down("dynamodb");

    let (answer, _) = interrupt(&setup).await;

    let answer = answer.expect("a complete cleanup without the table");
    assert_eq!(answer["outcome"], "cleaned", "{answer:#}");
    let warnings = answer["warnings"].to_string();
    assert!(
        warnings.contains("the claim could not be"),
        "the summary says the claim was not taken: {warnings}"
    );
    setup.proxy.heal();
    assert_cleaned(&setup).await;
    // The first failed call opened the breaker: its two attempts, and no DynamoDB call after it.
    let calls = setup.proxy.calls.calls();
    let dynamodb: Vec<&Call> = calls.iter().filter(|c| c.service == "dynamodb").collect();
    assert!(
        dynamodb.len() <= 2,
        "DynamoDB was asked {} times: {:?}",
        dynamodb.len(),
        dynamodb.iter().map(|c| &c.action).collect::<Vec<_>>()
    );
    let first_safety = safety_work(&calls).first().map(|c| c.at).expect("safety work");
    assert!(dynamodb.iter().all(|c| c.at < first_safety + Duration::from_millis(1)) || dynamodb.is_empty());
}

#[tokio::test]
async fn with_dynamodb_answering_after_five_seconds_the_safety_work_does_not_wait_for_it() {
    let setup = setup().await;
    setup.proxy.calls.clear();
    setup.proxy.slow_service("dynamodb", Duration::from_secs(5));
    let started = Instant::now();

    let (answer, _) = interrupt(&setup).await;

    let answer = answer.expect("a complete cleanup");
    assert_eq!(answer["outcome"], "cleaned", "{answer:#}");
    setup.proxy.heal();
    assert_cleaned(&setup).await;
    let calls = setup.proxy.calls.calls();
    let dynamodb = calls.iter().filter(|c| c.service == "dynamodb").count();
    assert!(dynamodb <= 2, "DynamoDB was asked {dynamodb} times");
    // Two abandoned attempts of half a second, not one five-second answer per call.
    let last_deregistration = calls
        .iter()
        .filter(|c| c.action == "DeregisterTargets")
        .map(|c| c.at)
        .max()
        .unwrap();
    assert!(
        last_deregistration - started < Duration::from_secs(4),
        "{:?}",
        last_deregistration - started
    );
}

#[tokio::test]
async fn with_kms_down_the_quarantine_goes_ahead_and_the_summary_says_the_records_are_unsigned() {
    let setup = setup().await;
    setup.proxy.calls.clear();
    setup.proxy.take_down("kms");

    let (answer, _) = interrupt(&setup).await;

    setup.proxy.heal();
    assert_cleaned(&setup).await;
    let text = match &answer {
        Ok(summary) => summary.to_string(),
        Err(e) => e.to_string(),
    };
    assert!(
        text.contains("record is unsigned"),
        "the summary says a restore will refuse the records: {text}"
    );
    // The ENIs are signed side by side, so each first call may go out before the breaker opens: two attempts each at
    // most, and nothing after.
    let kms = setup.proxy.calls.calls().iter().filter(|c| c.service == "kms").count();
    let enis = setup.fleet.spot[0].enis.len();
    assert!(kms <= 2 * enis, "KMS was asked {kms} times for {enis} ENIs");
}

#[tokio::test]
async fn with_sns_down_the_work_is_done_and_the_answer_is_an_error_for_the_retry() {
    let setup = setup().await;
    setup.proxy.calls.clear();
    setup.proxy.take_down("sns");

    let (answer, took) = interrupt(&setup).await;

    let error = answer.expect_err("an unpublished summary is retried");
    assert!(error.to_string().contains("SNS"), "{error}");
    setup.proxy.heal();
    assert_cleaned(&setup).await;
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert!(setup.fleet.published().await.is_empty());

    // Lambda's retry, with SNS back: the summary of the work done goes out, and nothing in AWS is done again.
    setup.proxy.calls.clear();
    let (answer, _) = interrupt(&setup).await;

    let answer = answer.expect("the retry publishes");
    assert_eq!(answer["outcome"], "cleaned", "{answer:#}");
    let sequence = setup.proxy.calls.sequence();
    for redone in [
        "DeregisterTargets",
        "ModifyNetworkInterfaceAttribute",
        "DescribeTargetHealth",
        "CreateTags",
    ] {
        assert!(
            !sequence.iter().any(|a| a == redone),
            "the retry sent {redone}: {sequence:?}"
        );
    }
    assert_eq!(sequence.iter().filter(|a| *a == "Publish").count(), 1, "{sequence:?}");
    let published = setup.fleet.published().await;
    assert_eq!(published.len(), 1);
    let summary: Value = serde_json::from_str(published[0]["Message"].as_str().expect("an SNS envelope")).unwrap();
    assert_eq!(summary["instance"]["id"], setup.fleet.spot[0].id.as_str());
    assert_eq!(summary["outcome"], "cleaned");
    assert!(
        !summary["removed"].as_array().unwrap().is_empty(),
        "the first run's work: {summary:#}"
    );
    assert!(
        summary["warnings"]
            .to_string()
            .contains("published by a later delivery"),
        "{summary:#}"
    );

    // A third delivery finds it done.
    let (answer, _) = interrupt(&setup).await;
    assert_eq!(answer.expect("quiet")["outcome"], "already-handled");
}
