//! The driver against scripted ELB answers: what AWS really does, which moto gets wrong (see `crate::testing`), and
//! how the calls of a wave are shared.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_elasticloadbalancingv2::types::TargetHealthStateEnum::{Draining, Healthy};
use aws_sdk_elasticloadbalancingv2::types::TargetTypeEnum;
use aws_smithy_mocks::mock;

use super::*;
use crate::aws::ElbBudget;
use crate::registration::UncheckedGroup;
use crate::steps::verify::Verdict;
use crate::testing::*;

const THIRD: &str = "i-0aaaaaaaaaaaaaaa3";

/// Serve `instances` as one cleanup without a table would, against `elb`.
async fn served(
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    instances: Vec<Instance>,
    dry_run: bool,
    deadline: Deadline,
) -> HashMap<InstanceId, Deregistration> {
    let budget = ElbBudget::unlimited();
    let tools = Tools {
        elb,
        budget: &budget,
        fast_locators: &[],
    };
    let wave = Wave::new(None, Duration::from_secs(15));
    let (driving, answers) = wave.serve(&tools, instances, dry_run, deadline);
    let ((), answers) = tokio::join!(driving, answers);
    answers
}

fn id(text: &str) -> InstanceId {
    InstanceId::parse(text).unwrap()
}

/// (group, target, port, fate) of every target, sorted.
fn fates(deregistration: &Deregistration) -> Vec<(String, String, Option<i32>, Fate)> {
    let mut rows: Vec<_> = deregistration
        .targets
        .iter()
        .map(|t| {
            let r = &t.registration;
            (r.target_group_name.clone(), r.target_id.clone(), r.port, t.fate.clone())
        })
        .collect();
    rows.sort_by(|a, b| (&a.0, &a.1, a.2).cmp(&(&b.0, &b.1, b.2)));
    rows
}

fn seen(verdict: Verdict) -> Fate {
    Fate::Seen { verdict }
}

/// A Kubernetes node serves two NodePorts in one target group and a pod IP (its secondary address) in an ip-type
/// group. Both leave in one DeregisterTargets per group, each target with its exact port and zone; the neighbour on
/// the same ports is never sent, and groups of other VPCs and Lambda groups cost not a single Describe.
#[tokio::test]
async fn every_port_of_the_instance_leaves_its_group_in_one_call() {
    let node = instance(
        INSTANCE,
        &[eni("eni-0aaa0000000000001", &[WEB_SG], &[PRIMARY_IP, SECONDARY_IP])],
    );
    let listing = listing(vec![
        target_group("nodeports", TargetTypeEnum::Instance, VPC),
        target_group("pods", TargetTypeEnum::Ip, VPC),
        target_group("other-vpc-pods", TargetTypeEnum::Ip, OTHER_VPC),
        target_group("lambda", TargetTypeEnum::Lambda, VPC),
    ]);
    let nodeports = health_before_and_after(
        "nodeports",
        vec![
            target(INSTANCE, 30080, Healthy),
            target(NEIGHBOUR, 30080, Healthy),
            target(INSTANCE, 30443, Healthy),
            target(NEIGHBOUR, 30443, Healthy),
        ],
        vec![target(NEIGHBOUR, 30080, Healthy), target(NEIGHBOUR, 30443, Healthy)],
    );
    let pods = health_before_and_after(
        "pods",
        vec![
            target_in_zone(SECONDARY_IP, 8080, "us-east-1a", Healthy),
            target_in_zone("10.0.1.12", 8080, "us-east-1a", Healthy),
        ],
        vec![
            target_in_zone(SECONDARY_IP, 8080, "us-east-1a", Draining),
            target_in_zone("10.0.1.12", 8080, "us-east-1a", Healthy),
        ],
    );
    let other_vpc = health_of("other-vpc-pods", vec![target(SECONDARY_IP, 8080, Healthy)]);
    let lambda = health_of("lambda", vec![]);
    let sent = Sent::new();
    let deregister = deregister_anything(&sent);
    let delays = [delay_of("nodeports", 300), delay_of("pods", 30)];
    let elb = elb_client(&[
        &listing,
        &nodeports,
        &pods,
        &other_vpc,
        &lambda,
        &deregister,
        &delays[0],
        &delays[1],
    ]);

    let answers = served(&elb, vec![node], false, Deadline::none()).await;

    let answer = &answers[&id(INSTANCE)];
    assert_eq!(
        fates(answer),
        [
            (
                "nodeports".into(),
                INSTANCE.into(),
                Some(30080),
                seen(Verdict::Deregistered)
            ),
            (
                "nodeports".into(),
                INSTANCE.into(),
                Some(30443),
                seen(Verdict::Deregistered)
            ),
            ("pods".into(), SECONDARY_IP.into(), Some(8080), seen(Verdict::Draining)),
        ]
    );
    assert_eq!(answer.target_groups_checked, 2);
    assert!(answer.unchecked.is_empty() && answer.locate_errors.is_empty());
    let mut requests = sent.all();
    requests.sort_by(|a, b| a.target_group_arn().cmp(&b.target_group_arn()));
    assert_eq!(requests.len(), 2, "one DeregisterTargets per target group");
    assert_eq!(
        requests[0].targets(),
        [
            deregistration(INSTANCE, 30080, None),
            deregistration(INSTANCE, 30443, None)
        ]
    );
    assert_eq!(
        requests[1].targets(),
        [deregistration(SECONDARY_IP, 8080, Some("us-east-1a"))]
    );
    // Read to find, then once more to check; nothing spent on groups that cannot hold the node.
    assert_eq!((nodeports.num_calls(), pods.num_calls()), (2, 2));
    assert_eq!((other_vpc.num_calls(), lambda.num_calls()), (0, 0));
    let delay_seconds: Vec<Option<u32>> = answer.targets.iter().map(|t| t.delay_seconds).collect();
    assert_eq!(delay_seconds, [Some(300), Some(300), Some(30)]);
}

/// Three nodes of a wave, every one in both NodePort groups: each group gets one DeregisterTargets carrying all three,
/// and is read twice in all (to find, and once after its call to check), not once per node.
#[tokio::test]
async fn a_wave_leaves_each_group_in_one_call_and_each_group_is_checked_once() {
    let nodes = [INSTANCE, NEIGHBOUR, THIRD];
    let members: Vec<Instance> = nodes.iter().map(|n| instance(n, &[])).collect();
    let everyone = |port| nodes.iter().map(|n| target(n, port, Healthy)).collect::<Vec<_>>();
    let listing = listing(vec![
        target_group("web", TargetTypeEnum::Instance, VPC),
        target_group("api", TargetTypeEnum::Instance, VPC),
    ]);
    let web = health_before_and_after("web", everyone(30080), vec![]);
    let api = health_before_and_after("api", everyone(30443), vec![]);
    let sent = Sent::new();
    let deregister = deregister_anything(&sent);
    let delays = [delay_of("web", 300), delay_of("api", 300)];
    let elb = elb_client(&[&listing, &web, &api, &deregister, &delays[0], &delays[1]]);

    let answers = served(&elb, members, false, Deadline::none()).await;

    assert_eq!(answers.len(), 3);
    for node in nodes {
        let verdicts: Vec<Fate> = fates(&answers[&id(node)]).into_iter().map(|row| row.3).collect();
        assert_eq!(
            verdicts,
            [seen(Verdict::Deregistered), seen(Verdict::Deregistered)],
            "{node}"
        );
    }
    let requests = sent.all();
    assert_eq!(requests.len(), 2, "one call per group for the whole wave");
    assert!(requests.iter().all(|r| r.targets().len() == 3), "{requests:?}");
    assert_eq!((web.num_calls(), api.num_calls()), (2, 2));
    assert!(delays.iter().all(|d| d.num_calls() == 1));
}

/// DeregisterTargets answers success even for a target that is not registered (moto answers an error): only a read
/// after the call tells. Here one NodePort left and the other is still listed healthy; a draining API target counts
/// as removed; the pod address had already gone; a group deleted since it was read took its target with it. One
/// group refuses the call outright: its target remains, with ELB's reason, and the others are not held up.
#[tokio::test]
async fn a_read_after_the_call_decides_what_is_reported_removed() {
    let node = instance(INSTANCE, &[eni("eni-0aaa0000000000001", &[WEB_SG], &[SECONDARY_IP])]);
    let listing = listing(vec![
        target_group("nodeports", TargetTypeEnum::Instance, VPC),
        target_group("api", TargetTypeEnum::Instance, VPC),
        target_group("pods", TargetTypeEnum::Ip, VPC),
        target_group("deleted", TargetTypeEnum::Instance, VPC),
        target_group("web-b", TargetTypeEnum::Instance, VPC),
    ]);
    let nodeports = health_before_and_after(
        "nodeports",
        vec![target(INSTANCE, 30080, Healthy), target(INSTANCE, 30443, Healthy)],
        vec![target(INSTANCE, 30443, Healthy)],
    );
    let api = health_before_and_after(
        "api",
        vec![target(INSTANCE, 8080, Healthy)],
        vec![target(INSTANCE, 8080, Draining)],
    );
    let pods = health_before_and_after("pods", vec![target(SECONDARY_IP, 8080, Healthy)], vec![]);
    let deleted = mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_health)
        .match_requests(|r| r.target_group_arn() == Some(arn("deleted").as_str()))
        .sequence()
        .output(|| health(&[target(INSTANCE, 80, Healthy)]))
        .http_status(
            400,
            Some(elb_error("TargetGroupNotFound", "Target groups 'deleted' not found")),
        )
        .repeatedly()
        .build();
    let web_b = health_of("web-b", vec![target(INSTANCE, 30080, Healthy)]);
    let refused = deregister_refused_for_b();
    let sent = Sent::new();
    let deregister = deregister_anything(&sent);
    let delays = [
        delay_of("nodeports", 30),
        delay_of("api", 300),
        delay_of("pods", 0),
        delay_of("deleted", 300),
    ];
    let mut rules = vec![
        &listing,
        &nodeports,
        &api,
        &pods,
        &deleted,
        &web_b,
        &refused,
        &deregister,
    ];
    rules.extend(delays.iter());
    let elb = elb_client(&rules);

    let answers = served(&elb, vec![node], false, Deadline::none()).await;

    let answer = &answers[&id(INSTANCE)];
    let remains = Verdict::Remains {
        state: "healthy".into(),
        reason: None,
    };
    assert_eq!(
        fates(answer),
        [
            ("api".into(), INSTANCE.into(), Some(8080), seen(Verdict::Draining)),
            ("deleted".into(), INSTANCE.into(), Some(80), seen(Verdict::Deregistered)),
            (
                "nodeports".into(),
                INSTANCE.into(),
                Some(30080),
                seen(Verdict::Deregistered)
            ),
            ("nodeports".into(), INSTANCE.into(), Some(30443), seen(remains)),
            (
                "pods".into(),
                SECONDARY_IP.into(),
                Some(8080),
                seen(Verdict::Deregistered)
            ),
            (
                "web-b".into(),
                INSTANCE.into(),
                Some(30080),
                Fate::Refused {
                    code: Some("AccessDenied".into()),
                    message: ACCESS_DENIED.into()
                }
            ),
        ]
    );
    assert_eq!(sent.all().len(), 4);
    assert_eq!(refused.num_calls(), 1, "an access denial is not sent again");
    assert_eq!(web_b.num_calls(), 1, "nothing was done there: nothing to check");
    for rule in [&nodeports, &api, &pods, &deleted] {
        assert_eq!(rule.num_calls(), 2, "read, then checked once");
    }
    assert!(delays.iter().all(|d| d.num_calls() == 1));
}

/// The budget is shared with every tool of the account, so a read is throttled now and then: the SDK's retries find
/// the registration. A throttle that outlasts them leaves that group unchecked, with the reason, and the other groups
/// are still swept.
#[tokio::test]
async fn a_throttled_read_is_retried_and_one_that_never_clears_is_reported_unchecked() {
    let node = instance(INSTANCE, &[]);
    let listing = listing(vec![
        target_group("web", TargetTypeEnum::Instance, VPC),
        target_group("busy", TargetTypeEnum::Instance, VPC),
    ]);
    let web = mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_health)
        .match_requests(|r| r.target_group_arn() == Some(arn("web").as_str()))
        .sequence()
        .http_status(400, Some(throttled()))
        .times(2)
        .output(|| health(&[target(INSTANCE, 80, Healthy)]))
        .output(|| health(&[]))
        .build();
    let busy = mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_health)
        .match_requests(|r| r.target_group_arn() == Some(arn("busy").as_str()))
        .sequence()
        .http_status(400, Some(throttled()))
        .repeatedly()
        .build();
    let sent = Sent::new();
    let deregister = deregister_anything(&sent);
    let delay = delay_of("web", 300);
    let elb = elb_client(&[&listing, &web, &busy, &deregister, &delay]);

    let answers = served(&elb, vec![node], false, Deadline::none()).await;

    let answer = &answers[&id(INSTANCE)];
    assert_eq!(
        fates(answer),
        [("web".into(), INSTANCE.into(), Some(80), seen(Verdict::Deregistered))]
    );
    assert_eq!(web.num_calls(), 4, "two throttled, the read, the check");
    assert_eq!(busy.num_calls(), MAX_ATTEMPTS as usize);
    assert_eq!(
        answer.unchecked,
        [UncheckedGroup {
            target_group_arn: arn("busy"),
            target_group_name: "busy".into(),
            vpc_id: Some(VPC.into()),
            error: "Throttling: Rate exceeded".into(),
        }]
    );
    assert_eq!(answer.target_groups_checked, 2);
}

/// A dry run reads each group once and sends nothing: every registration found is planned.
#[tokio::test]
async fn a_dry_run_reads_once_and_sends_nothing() {
    let node = instance(INSTANCE, &[]);
    let listing = listing(vec![target_group("web", TargetTypeEnum::Instance, VPC)]);
    let web = health_of(
        "web",
        vec![target(INSTANCE, 80, Healthy), target(INSTANCE, 81, Draining)],
    );
    let sent = Sent::new();
    let deregister = deregister_anything(&sent);
    let elb = elb_client(&[&listing, &web, &deregister]);

    let answers = served(&elb, vec![node], true, Deadline::none()).await;

    let rows: Vec<Fate> = fates(&answers[&id(INSTANCE)]).into_iter().map(|r| r.3).collect();
    assert_eq!(rows, [Fate::Planned, Fate::Planned]);
    assert!(sent.all().is_empty());
    assert_eq!(web.num_calls(), 1);
}

/// The deadline ends the wave: what was not read by then is reported unchecked, and the answer still comes.
#[tokio::test]
async fn the_deadline_answers_with_what_was_done() {
    let node = instance(INSTANCE, &[]);
    let listing = listing(vec![target_group("web", TargetTypeEnum::Instance, VPC)]);
    let elb = elb_client(&[&listing]);

    let answers = served(&elb, vec![node], false, Deadline::after(Duration::ZERO)).await;

    let answer = &answers[&id(INSTANCE)];
    assert!(answer.targets.is_empty());
    assert_eq!(
        answer.locate_errors,
        [format!("target groups not listed: {}", state::OUT_OF_TIME)]
    );
    assert_eq!(listing.num_calls(), 0, "nothing starts after the deadline");
}

/// The sent registrations are those queued when a call is composed: a registration found while its group's call is
/// under way waits for the next call, and a queued group is read only after its call.
#[test]
fn a_group_with_a_call_waiting_is_read_after_its_call() {
    use crate::locate::sweep::read::{GroupAnswer, GroupRead, GroupTarget};
    use crate::table::GroupInfo;
    use tokio::time::Instant;

    let now = Instant::now();
    let mut state = State::new(false);
    let member = |token: &str, node: &str| state::Member {
        token: token.into(),
        instance: instance(node, &[]),
        since: chrono::Utc::now(),
    };
    state.join(member("a", INSTANCE), now);
    let candidate = GroupInfo {
        arn: arn("web"),
        name: "web".into(),
        target_type: TargetTypeEnum::Instance,
        vpc_id: Some(VPC.into()),
        port: None,
    };
    state.listed(Ok(vec![candidate.clone()]), chrono::Utc::now());
    // The fast path knew the registration: the group is not read until its call is answered.
    let fast = crate::locate::Located {
        registrations: vec![instance_target("web", 80, "healthy")],
        unchecked: Vec::new(),
    };
    state.take_fast_path();
    state.fast_located(&[id(INSTANCE)], vec![("index", Ok(fast))], now);
    assert_eq!(state.next_job(now), None, "the read waits for the call");
    let call = state.next_call().expect("a call");
    assert_eq!(call.registrations.len(), 1);
    // A member joins while the call is under way: its registration, found by a read, waits for the next call.
    state.join(member("b", NEIGHBOUR), now);
    state.answered(&call, Ok(()), chrono::Utc::now(), now);
    assert_eq!(state.take_fast_path().len(), 1);
    assert_eq!(
        state.next_job(now),
        Some(state::Job::Delay(arn("web"))),
        "reads wait for the fast locators"
    );
    state.fast_located(&[id(NEIGHBOUR)], vec![("index", Ok(Default::default()))], now);
    let read_at = chrono::Utc::now();
    assert_eq!(state.next_job(now), Some(state::Job::Read(candidate.clone())));
    state.read(
        GroupRead {
            group: candidate,
            read_at,
            answer: GroupAnswer::Targets(vec![GroupTarget {
                id: NEIGHBOUR.into(),
                port: Some(80),
                zone: None,
                state: Some("healthy".into()),
                reason: None,
            }]),
        },
        now,
    );
    let next = state.next_call().expect("the neighbour's call");
    assert_eq!(next.registrations[0].target_id, NEIGHBOUR);
    let done = state.complete(now, false);
    assert!(
        done.is_empty(),
        "the first is checked but its delay is being read: {done:?}"
    );
    state.delay(&arn("web"), Some(300));
    let done = state.complete(now, false);
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(done[0].1.targets[0].fate, seen(Verdict::Deregistered));
}

/// An IP target from outside its group's VPC (a peered VPC, on premises) is registered with AvailabilityZone `all`,
/// and ELB requires the zone for such a target on deregistration too: it is sent exactly as it was found.
#[tokio::test]
async fn a_target_registered_with_zone_all_is_deregistered_with_zone_all() {
    let node = instance(INSTANCE, &[eni("eni-0aaa0000000000001", &[WEB_SG], &[SECONDARY_IP])]);
    let listing = listing(vec![target_group("peered-pods", TargetTypeEnum::Ip, VPC)]);
    let pods = health_before_and_after(
        "peered-pods",
        vec![
            target_in_zone(SECONDARY_IP, 8080, "all", Healthy),
            target_in_zone(SECONDARY_IP, 9090, "all", Healthy),
        ],
        vec![],
    );
    let sent = Sent::new();
    let deregister = deregister_anything(&sent);
    let delay = delay_of("peered-pods", 300);
    let elb = elb_client(&[&listing, &pods, &deregister, &delay]);

    let answers = served(&elb, vec![node], false, Deadline::none()).await;

    let found: Vec<_> = answers[&id(INSTANCE)]
        .targets
        .iter()
        .map(|t| t.registration.clone())
        .collect();
    assert_eq!(
        found,
        [
            ip_target("peered-pods", SECONDARY_IP, 8080, Some("all"), "healthy"),
            ip_target("peered-pods", SECONDARY_IP, 9090, Some("all"), "healthy"),
        ]
    );
    let requests = sent.all();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].targets(),
        [
            deregistration(SECONDARY_IP, 8080, Some("all")),
            deregistration(SECONDARY_IP, 9090, Some("all"))
        ]
    );
}

/// A driver whose write of another cleanup's answer fails writes it again: that cleanup waits for nothing else. The
/// table, scripted: this cleanup posts itself and takes the driver's lease; its first look at the roster finds another member
/// posted (the neighbour, another cleanup's); the first write of that member's answer fails.
#[tokio::test]
async fn a_driver_writes_again_an_answer_whose_write_failed() {
    use aws_sdk_dynamodb::operation::batch_write_item::{BatchWriteItemError, BatchWriteItemOutput};
    use aws_sdk_dynamodb::types::error::ResourceNotFoundException;
    use aws_smithy_mocks::{RuleMode, mock_client};

    use crate::table::wave::WAVE_PK;
    use crate::table::{Item, s, stamp};

    let other = instance(NEIGHBOUR, &[]);
    let posted = Item::from([
        ("pk".to_owned(), s(WAVE_PK)),
        ("sk".to_owned(), s(format!("member#{NEIGHBOUR}"))),
        ("token".to_owned(), s("another-cleanup")),
        ("since".to_owned(), s(stamp(chrono::Utc::now()))),
        ("instance".to_owned(), s(serde_json::to_string(&other).unwrap())),
    ]);
    let roster_read = mock!(aws_sdk_dynamodb::Client::query)
        .sequence()
        .output(move || {
            aws_sdk_dynamodb::operation::query::QueryOutput::builder()
                .items(posted.clone())
                .build()
        })
        .output(|| aws_sdk_dynamodb::operation::query::QueryOutput::builder().build())
        .repeatedly()
        .build();
    let is_answer = |r: &aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemInput| {
        let requests = r.request_items().into_iter().flat_map(|items| items.values()).flatten();
        requests
            .filter_map(|w| w.put_request())
            .any(|p| p.item().get("sk").and_then(|sk| sk.as_s().ok()) == Some(&format!("answer#{NEIGHBOUR}")))
    };
    let answer_written = mock!(aws_sdk_dynamodb::Client::batch_write_item)
        .match_requests(is_answer)
        .sequence()
        .error(|| BatchWriteItemError::ResourceNotFoundException(ResourceNotFoundException::builder().build()))
        .output(|| BatchWriteItemOutput::builder().build())
        .repeatedly()
        .build();
    let other_writes =
        mock!(aws_sdk_dynamodb::Client::batch_write_item).then_output(|| BatchWriteItemOutput::builder().build());
    let lease_taken = mock!(aws_sdk_dynamodb::Client::put_item)
        .then_output(|| aws_sdk_dynamodb::operation::put_item::PutItemOutput::builder().build());
    let renewed = mock!(aws_sdk_dynamodb::Client::update_item)
        .then_output(|| aws_sdk_dynamodb::operation::update_item::UpdateItemOutput::builder().build());
    let released = mock!(aws_sdk_dynamodb::Client::delete_item)
        .then_output(|| aws_sdk_dynamodb::operation::delete_item::DeleteItemOutput::builder().build());
    let dynamodb = mock_client!(
        aws_sdk_dynamodb,
        RuleMode::MatchAny,
        &[
            &roster_read,
            &answer_written,
            &other_writes,
            &lease_taken,
            &renewed,
            &released
        ]
    );
    let budget = crate::aws::CallBudget::default();
    let roster = Roster {
        dynamodb,
        table: "spot-cleanup".into(),
        table_breaker: crate::aws::Breaker::new("DynamoDB", &budget),
    };
    let listing = listing(vec![target_group("web", TargetTypeEnum::Instance, VPC)]);
    let nobody_there = health_of("web", vec![]);
    let elb = elb_client(&[&listing, &nobody_there]);
    let elb_budget = ElbBudget::unlimited();
    let tools = Tools {
        elb: &elb,
        budget: &elb_budget,
        fast_locators: &[],
    };
    let wave = Wave::new(Some(roster), Duration::from_secs(15));

    let (driving, answers) = wave.serve(
        &tools,
        vec![instance(INSTANCE, &[])],
        false,
        Deadline::after(Duration::from_secs(30)),
    );
    let ((), answers) = tokio::join!(driving, answers);

    assert!(answers[&id(INSTANCE)].targets.is_empty());
    assert_eq!(
        answer_written.num_calls(),
        2,
        "the neighbour's answer: the failed write, then the one that went through"
    );
}
