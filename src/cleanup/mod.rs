//! The cleanup workflow: one pass over a batch of interrupted instances, in the order that puts the most valuable
//! change first. The instances join the wave (`crate::wave`), which takes their registrations out of every target
//! group under the account's ELB budget, one call per group for every cleanup running at the same time; meanwhile
//! their ENIs are walled off. Checking comes last, since it changes nothing.
//!
//! `run` lists the phases; the claim and the scope are `admit`, the summaries `assemble`, and the end of the run
//! `finish`. A dry run is decided once, in `clean_up`: it goes through `dry` and makes no write.

mod admit;
mod assemble;
mod context;
mod dispose;
mod dry;
mod finish;
mod lifecycle;
mod report;

use std::collections::HashMap;
use std::time::Instant;

use crate::aws::bounded_all;
use crate::changes::EniChange;
use crate::deadline::{Deadline, elapsed_ms};
use crate::input::{InstanceId, Request};
use crate::instance::Instance;
use crate::steps::quarantine;
use crate::steps::records;
use crate::steps::records::Signing;
use crate::telemetry::steplog::StepLog;
pub use context::Context;
use context::{Clock, Work};
pub use report::{Handled, InstanceError, Report};

/// Run every request as its disposition says: a cleanup for most, a notice that changes nothing for warnings that
/// do not force the instance out (`REBALANCE_ACTION`, `HEALTH_ACTION`), or nothing at all. One report per distinct
/// instance.
pub async fn run(ctx: &Context<'_>, requests: &[Request], deadline: Deadline) -> Vec<Report> {
    let (cleanups, mut reports) = dispose::split(ctx, requests).await;
    if !cleanups.is_empty() {
        reports.extend(clean_up(ctx, &cleanups, deadline).await);
    }
    reports
}

/// Clean up every instance named by `requests` in one pass: one DescribeInstances, then the wave, which deregisters
/// with one DeregisterTargets per target group for this batch and every other cleanup running at the same time. A
/// request for an instance already seen is folded into the first. No new ELB call starts after `deadline`; what was
/// not done by then is reported as such.
async fn clean_up(ctx: &Context<'_>, requests: &[Request], deadline: Deadline) -> Vec<Report> {
    let clock = Clock::start();
    let requests = dispose::distinct(requests);
    if ctx.config.dry_run {
        let admitted = admit::admit(ctx, &requests, &clock, deadline).await;
        let summaries = dry::plan(ctx, &admitted, &clock, deadline).await;
        return finish::dry_run(ctx, admitted, summaries).await;
    }
    let mut admitted = admit::admit(ctx, &requests, &clock, deadline).await;
    let republished = finish::publish_unpublished(ctx, std::mem::take(&mut admitted.unpublished)).await;
    admitted.reports.extend(republished);
    if admitted.work.is_empty() {
        return admitted.reports;
    }
    // As soon as the instances are known to be this run's, beside everything else: nothing below waits for the
    // monitoring systems until the summaries. An instance refused, ignored or already handled is not told about.
    let notices = admitted.work.iter().map(|w| w.request.clone()).collect();
    let monitoring = tokio::spawn(ctx.monitoring.clone().disable_hosts(notices));
    let instances: Vec<Instance> = admitted.work.iter().map(|w| w.instance.clone()).collect();
    let tools = ctx.wave_tools();
    let (driving, answers) = ctx.wave.serve(&tools, instances, false, deadline);
    // The wave goes on serving the other cleanups after this one's answers are in: the summaries are published
    // meanwhile.
    let this_run = async move {
        let log = StepLog::new(admitted.work.iter().map(|w| w.request));
        let mut timings = admitted.timings.clone();
        let ((enis, quarantine_ms), deregistrations) = tokio::join!(
            async {
                let step = Instant::now();
                let changes = quarantine_all(ctx, &admitted.work, &admitted.claims.episodes).await;
                (changes, elapsed_ms(step))
            },
            answers,
        );
        timings.quarantine = quarantine_ms;
        assemble::log_steps(&log, &deregistrations, &enis, quarantine_ms);
        let summaries = assemble::summaries(&admitted, &deregistrations, enis, timings, &clock);
        finish::finish(ctx, admitted, summaries, monitoring, deadline).await
    };
    let ((), reports) = tokio::join!(driving, this_run);
    reports
}

/// Quarantine every instance's ENIs, instances side by side. One DescribeSecurityGroups resolves the quarantine group
/// of each VPC for the whole batch.
/// An instance going back to a warm pool will serve again: it leaves its groups but keeps its network.
async fn quarantine_all(
    ctx: &Context<'_>,
    work: &[Work<'_>],
    episodes: &HashMap<InstanceId, String>,
) -> HashMap<InstanceId, Vec<EniChange>> {
    let with_enis: Vec<&Instance> = work
        .iter()
        .filter(|w| !w.request.trigger.keeps_network())
        .map(|w| &w.instance)
        .filter(|i| !i.network_interfaces.is_empty())
        .collect();
    if with_enis.is_empty() {
        return HashMap::new();
    }
    let ec2 = &ctx.clients.ec2;
    let groups = match ctx.quarantine_groups.get(ec2).await {
        Ok(groups) => groups,
        Err(e) => {
            let message = e.to_string();
            return with_enis
                .iter()
                .map(|i| (i.id.clone(), quarantine::all_unchanged(i, &message)))
                .collect();
        }
    };
    let records = std::sync::Arc::new(records::recorded_groups(ec2, &with_enis).await);
    // A few instances at a time: each sends two EC2 writes per ENI, and EC2's per-action buckets are small. 20 with
    // an ENI each send 20 of each action at once, inside the bursts of 100 (`aws::paced`).
    let limit = 20;
    let changes = bounded_all(limit, with_enis.iter().map(|i| (*i).clone()), |instance| {
        let (ec2, groups, records) = (ec2.clone(), groups.clone(), records.clone());
        let signing = Signing {
            signer: ctx.signer.cloned(),
            episode: episodes.get(&instance.id).cloned().unwrap_or_default(),
        };
        async move { quarantine::quarantine_enis(&ec2, &instance, &groups, records.as_ref().as_ref(), &signing).await }
    })
    .await;
    with_enis
        .iter()
        .zip(changes)
        .map(|(instance, change)| {
            let change = change.unwrap_or_else(|e| quarantine::all_unchanged(instance, &e.to_string()));
            (instance.id.clone(), change)
        })
        .collect()
}

/// A whole run against scripted AWS answers: one group refusing, and a dry run.
#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use aws_sdk_elasticloadbalancingv2::operation::deregister_targets::DeregisterTargetsInput;
    use aws_sdk_elasticloadbalancingv2::types::TargetTypeEnum;
    use aws_sdk_sns::operation::publish::PublishInput;
    use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};

    use crate::app::App;
    use crate::aws::{Clients, ElbBudget};
    use crate::changes::EniStatus;
    use crate::config::Config;
    use crate::deadline::Deadline;
    use crate::input::Request;
    use crate::registration::TargetState;
    use crate::summary::{Outcome, Step, Summary, TargetChange};
    use crate::testing::*;

    /// A whole account for `clean_up`: a Spot node with two ENIs, registered in `web-a` (two NodePorts), `web-b` (which
    /// refuses DeregisterTargets) and `pods-c` (its secondary IP), next to a neighbour node; and every answer a run needs.
    struct Account {
        describe_instances: Rule,
        describe_security_groups: Rule,
        describe_network_interfaces: Rule,
        listing: Rule,
        health_a: Rule,
        health_b: Rule,
        health_c: Rule,
        delays: [Rule; 3],
        deregister_refused: Rule,
        deregister: Rule,
        deregistrations: Sent<DeregisterTargetsInput>,
        writes: Ec2Writes,
        publish: Rule,
        published: Sent<PublishInput>,
    }

    impl Account {
        fn new() -> Self {
            use aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput;
            use aws_sdk_ec2::operation::describe_network_interfaces::DescribeNetworkInterfacesOutput;
            use aws_sdk_ec2::operation::describe_security_groups::DescribeSecurityGroupsOutput;
            use aws_sdk_ec2::types::SecurityGroup;
            use aws_sdk_elasticloadbalancingv2::types::TargetHealthStateEnum::{Draining, Healthy};
            use aws_sdk_sns::operation::publish::PublishOutput;

            let described: DescribeInstancesOutput = described_instance(
                INSTANCE,
                &[
                    eni("eni-0aaa0000000000001", &[WEB_SG, SSH_SG], &[PRIMARY_IP, SECONDARY_IP]),
                    eni("eni-0bbb0000000000002", &[DB_SG], &["10.0.2.20"]),
                ],
            );
            let describe_instances = mock!(aws_sdk_ec2::Client::describe_instances)
                .match_requests(|r| {
                    r.filters().len() == 1
                        && r.filters()[0].name() == Some("instance-id")
                        && r.filters()[0].values() == [INSTANCE]
                })
                .then_output(move || described.clone());
            let describe_security_groups = mock!(aws_sdk_ec2::Client::describe_security_groups)
                .match_requests(|r| r.group_ids() == [QUARANTINE])
                .then_output(|| {
                    DescribeSecurityGroupsOutput::builder()
                        .security_groups(
                            SecurityGroup::builder()
                                .group_id(QUARANTINE)
                                .vpc_id(VPC)
                                .group_name("spot-quarantine")
                                .build(),
                        )
                        .build()
                });
            // No ENI carries a record yet: this is the first run.
            let describe_network_interfaces = mock!(aws_sdk_ec2::Client::describe_network_interfaces)
                .then_output(|| DescribeNetworkInterfacesOutput::builder().build());

            let listing = listing(vec![
                target_group("web-a", TargetTypeEnum::Instance, VPC),
                target_group("web-b", TargetTypeEnum::Instance, VPC),
                target_group("pods-c", TargetTypeEnum::Ip, VPC),
            ]);
            let health_a = health_before_and_after(
                "web-a",
                vec![
                    target(INSTANCE, 30080, Healthy),
                    target(INSTANCE, 30443, Healthy),
                    target(NEIGHBOUR, 30080, Healthy),
                ],
                vec![target(NEIGHBOUR, 30080, Healthy)],
            );
            let health_b = health_of(
                "web-b",
                vec![target(INSTANCE, 30080, Healthy), target(NEIGHBOUR, 30080, Healthy)],
            );
            let health_c = health_before_and_after(
                "pods-c",
                vec![target(SECONDARY_IP, 8080, Healthy)],
                vec![target(SECONDARY_IP, 8080, Draining)],
            );
            let deregistrations = Sent::new();
            let published = Sent::new();
            let publish = {
                let published = published.clone();
                mock!(aws_sdk_sns::Client::publish).then_compute_output(move |input: &PublishInput| {
                    published.record(input);
                    PublishOutput::builder()
                        .message_id("3f1c2b4a-5d6e-4f70-8a9b-0c1d2e3f4a5b")
                        .build()
                })
            };
            Account {
                describe_instances,
                describe_security_groups,
                describe_network_interfaces,
                listing,
                health_a,
                health_b,
                health_c,
                delays: [delay_of("web-a", 300), delay_of("web-b", 300), delay_of("pods-c", 60)],
                deregister_refused: deregister_refused_for_b(),
                deregister: deregister_anything(&deregistrations),
                deregistrations,
                writes: Ec2Writes::succeeding(),
                publish,
                published,
            }
        }

        /// The function as deployed, with `DRY_RUN` set or not, talking to this account.
        fn app(&self, dry_run: bool) -> App {
            let config = Config::from_lookup(|name| match name {
                "SNS_TOPIC_ARN" => Some(TOPIC.into()),
                "QUARANTINE_SECURITY_GROUP_ID" => Some(QUARANTINE.into()),
                "DRY_RUN" => Some(dry_run.to_string()),
                _ => None,
            })
            .unwrap();
            let mut elb_rules = vec![
                &self.listing,
                &self.health_a,
                &self.health_b,
                &self.health_c,
                &self.deregister_refused,
                &self.deregister,
            ];
            elb_rules.extend(self.delays.iter());
            // The claim's tags on the instance (src/steps/claim/): nobody else claims it, so this run does the work.
            let claim_tags = [
                mock!(aws_sdk_ec2::Client::describe_tags)
                    .then_output(|| aws_sdk_ec2::operation::describe_tags::DescribeTagsOutput::builder().build()),
                mock!(aws_sdk_ec2::Client::create_tags)
                    .match_requests(|input| input.resources().iter().all(|r| r.starts_with("i-")))
                    .then_output(|| aws_sdk_ec2::operation::create_tags::CreateTagsOutput::builder().build()),
                mock!(aws_sdk_ec2::Client::delete_tags)
                    .then_output(|| aws_sdk_ec2::operation::delete_tags::DeleteTagsOutput::builder().build()),
            ];
            let mut ec2_rules: Vec<&Rule> = claim_tags.iter().collect();
            ec2_rules.extend([
                &self.describe_instances,
                &self.describe_security_groups,
                &self.describe_network_interfaces,
            ]);
            ec2_rules.extend(self.writes.rules());
            let budget = crate::aws::CallBudget::default();
            let clients = Clients {
                elb: elb_client(&elb_rules),
                ec2: ec2_client(&ec2_rules),
                sns: sns_client(&[&self.publish]),
                // No instance here belongs to an Auto Scaling group, so the fast path asks nothing.
                autoscaling: mock_client!(aws_sdk_autoscaling, RuleMode::MatchAny, Vec::<&Rule>::new()),
                // The registration index is off in these tests, so nothing asks DynamoDB.
                dynamodb: mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, Vec::<&Rule>::new()),
                roster: mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, Vec::<&Rule>::new()),
                table_breaker: crate::aws::Breaker::new("DynamoDB", &budget),
                // No record key is configured here, so nothing is signed.
                kms: mock_client!(aws_sdk_kms, RuleMode::MatchAny, Vec::<&Rule>::new()),
                budget,
                elb_budget: ElbBudget::unlimited(),
            };
            App::new(config, clients)
        }
    }

    /// A target as DeregisterTargets was sent it: (id, port).
    type Target = (String, Option<i32>);

    /// The EventBridge warning the cleanup runs on.
    fn spot_warning() -> Request {
        let event: serde_json::Value = serde_json::from_str(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/events/spot-interruption-terminate.json"
        )))
        .unwrap();
        match crate::input::parse_invocation(&event).unwrap() {
            crate::input::Invocation::Direct(request) => request,
            other => panic!("expected one request, got {other:?}"),
        }
    }

    /// (group, target, port, state, reason) of each target in a summary list.
    fn rows(targets: &[TargetChange]) -> Vec<(&str, &str, i32, &str, Option<&str>)> {
        let mut rows: Vec<_> = targets
            .iter()
            .map(|t| {
                (
                    t.target_group_name.as_str(),
                    t.target_id.as_str(),
                    t.port.unwrap_or_default(),
                    t.state.as_ref().map_or("", TargetState::as_str),
                    t.reason.as_deref(),
                )
            })
            .collect();
        rows.sort();
        rows
    }

    /// The full run when one group refuses: the others are left, B's target is reported as remaining with the reason,
    /// the ENIs are quarantined anyway, and one SNS message carries the summary, with a subject that fits SNS's limit and
    /// the attributes subscription filters match on.
    #[tokio::test]
    async fn a_partial_cleanup_is_summarised_and_published_once() {
        let account = Account::new();
        let app = account.app(false);

        let reports = app.clean_up(&[spot_warning()], Deadline::none()).await;

        assert_eq!(reports.len(), 1);
        let summary = reports[0].summary_ref().unwrap();
        assert_eq!(summary.outcome, Outcome::Partial);
        assert_eq!(summary.target_groups_checked, 3);
        assert_eq!(
            rows(&summary.removed),
            [
                ("pods-c", SECONDARY_IP, 8080, "draining", None),
                ("web-a", INSTANCE, 30080, "deregistered", None),
                ("web-a", INSTANCE, 30443, "deregistered", None),
            ]
        );
        let refused = format!("DeregisterTargets failed: AccessDenied: {ACCESS_DENIED}");
        assert_eq!(
            rows(&summary.remaining),
            [("web-b", INSTANCE, 30080, "healthy", Some(refused.as_str()))]
        );
        assert_eq!(summary.errors.len(), 1, "{:?}", summary.errors);
        assert_eq!(summary.errors[0].step, Step::Deregister);
        assert!(summary.errors[0].message.starts_with("web-b: AccessDenied: "));
        let delays: Vec<(&str, Option<u32>)> = summary
            .removed
            .iter()
            .map(|t| (t.target_group_name.as_str(), t.deregistration_delay_seconds))
            .collect();
        assert_eq!(
            delays,
            [("pods-c", Some(60)), ("web-a", Some(300)), ("web-a", Some(300))]
        );

        // Quarantine does not depend on deregistration having worked.
        let statuses: Vec<EniStatus> = summary.network_interfaces.iter().map(|e| e.status).collect();
        assert_eq!(statuses, [EniStatus::Quarantined, EniStatus::Quarantined]);
        assert_eq!(account.writes.modify_eni.num_calls(), 2);
        assert_eq!(account.writes.modify_instance.num_calls(), 0);

        // What each ENI was moved onto: the quarantine group alone.
        let moved: Vec<(String, Vec<String>)> = account
            .writes
            .modifications
            .all()
            .iter()
            .map(|m| (m.network_interface_id().unwrap().to_owned(), m.groups().to_vec()))
            .collect();
        assert_eq!(
            moved.iter().map(|(_, groups)| groups.clone()).collect::<Vec<_>>(),
            [vec![QUARANTINE.to_owned()], vec![QUARANTINE.to_owned()]],
            "{moved:?}"
        );

        // B was sent once and refused; it is not verified, because nothing was done there. A and C were each sent
        // their own targets, every port of the instance in one call, and none of the neighbour's.
        assert_eq!(account.deregister_refused.num_calls(), 1);
        let mut sent: Vec<(String, Vec<Target>)> = account
            .deregistrations
            .all()
            .iter()
            .map(|call| {
                let mut targets: Vec<Target> = call
                    .targets()
                    .iter()
                    .map(|t| (t.id().unwrap_or_default().to_owned(), t.port()))
                    .collect();
                targets.sort();
                (call.target_group_arn().unwrap().to_owned(), targets)
            })
            .collect();
        sent.sort();
        assert_eq!(
            sent,
            [
                (arn("pods-c"), vec![(SECONDARY_IP.to_owned(), Some(8080))]),
                (
                    arn("web-a"),
                    vec![(INSTANCE.to_owned(), Some(30080)), (INSTANCE.to_owned(), Some(30443))]
                ),
            ]
        );
        assert_eq!(account.health_a.num_calls(), 2, "swept, then verified");
        assert_eq!(account.health_b.num_calls(), 1, "swept only");
        assert_eq!(account.health_c.num_calls(), 2, "swept, then verified");
        assert_eq!(account.describe_instances.num_calls(), 1);
        assert_eq!(account.describe_security_groups.num_calls(), 1);
        assert_eq!(account.describe_network_interfaces.num_calls(), 1);

        assert_eq!(account.publish.num_calls(), 1);
        let published = &account.published.all()[0];
        assert_eq!(published.topic_arn(), Some(TOPIC));
        let subject = published.subject().unwrap();
        assert!(subject.len() <= 100, "{subject}");
        assert!(
            subject.starts_with("spot-cleanup PARTIAL: i-0123456789abcdef0 "),
            "{subject}"
        );
        let attributes: BTreeMap<&str, (&str, &str)> = published
            .message_attributes()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.as_str(), (v.data_type(), v.string_value().unwrap())))
            .collect();
        assert_eq!(
            attributes,
            BTreeMap::from([
                ("action", ("String", "terminate")),
                ("instance_id", ("String", INSTANCE)),
                ("outcome", ("String", "partial")),
                ("trigger", ("String", "eventbridge")),
            ])
        );
        let message: Summary = serde_json::from_str(published.message().unwrap()).unwrap();
        assert_eq!(&message, summary, "the message is the summary");
    }
    /// With DRY_RUN the function looks at everything and changes nothing: not one DeregisterTargets, CreateTags or
    /// ModifyNetworkInterfaceAttribute is sent. The summary lists the plan and what would be quarantined.
    #[tokio::test]
    async fn a_dry_run_changes_nothing_and_publishes_the_plan() {
        let account = Account::new();
        let app = account.app(true);

        let reports = app.clean_up(&[spot_warning()], Deadline::none()).await;

        let summary = reports[0].summary_ref().unwrap();
        assert_eq!(account.deregister.num_calls(), 0);
        assert_eq!(account.deregister_refused.num_calls(), 0);
        assert_eq!(account.writes.create_tags.num_calls(), 0);
        assert_eq!(account.writes.modify_eni.num_calls(), 0);
        assert_eq!(account.writes.modify_instance.num_calls(), 0);
        assert!(account.delays.iter().all(|d| d.num_calls() == 0), "nothing to verify");
        for health in [&account.health_a, &account.health_b, &account.health_c] {
            assert_eq!(health.num_calls(), 1, "swept once, never verified");
        }

        assert_eq!(summary.outcome, Outcome::DryRun);
        assert!(summary.dry_run);
        assert_eq!(
            rows(&summary.planned),
            [
                ("pods-c", SECONDARY_IP, 8080, "healthy", None),
                ("web-a", INSTANCE, 30080, "healthy", None),
                ("web-a", INSTANCE, 30443, "healthy", None),
                ("web-b", INSTANCE, 30080, "healthy", None),
            ]
        );
        assert!(summary.removed.is_empty() && summary.remaining.is_empty());
        assert!(summary.errors.is_empty(), "{:?}", summary.errors);
        let json = serde_json::to_value(summary).unwrap();
        assert_eq!(json["outcome"], "dry-run");
        let statuses: Vec<&str> = json["network_interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["status"].as_str().unwrap())
            .collect();
        assert_eq!(statuses, ["would-quarantine", "would-quarantine"]);
        assert_eq!(
            json["network_interfaces"][0]["groups_after"],
            serde_json::json!([QUARANTINE])
        );
        assert_eq!(
            json["network_interfaces"][0]["original_groups"],
            serde_json::json!([WEB_SG, SSH_SG])
        );

        assert_eq!(account.publish.num_calls(), 1);
        let published = &account.published.all()[0];
        assert_eq!(
            published.subject(),
            Some("spot-cleanup DRY RUN: i-0123456789abcdef0 would leave 3 target groups, quarantine 2 ENIs")
        );
        let outcome = published.message_attributes().unwrap()["outcome"].string_value();
        assert_eq!(outcome, Some("dry-run"));
    }

    /// A dry run of an Auto Scaling lifecycle action leaves the action for its hook's default result: no heartbeat, no
    /// completion, and the summary says so.
    #[tokio::test]
    async fn a_dry_run_leaves_the_lifecycle_action_alone() {
        use aws_sdk_autoscaling::operation::complete_lifecycle_action::CompleteLifecycleActionOutput;
        use aws_sdk_autoscaling::operation::record_lifecycle_action_heartbeat::RecordLifecycleActionHeartbeatOutput;

        let account = Account::new();
        let complete = mock!(aws_sdk_autoscaling::Client::complete_lifecycle_action)
            .then_output(|| CompleteLifecycleActionOutput::builder().build());
        let heartbeat = mock!(aws_sdk_autoscaling::Client::record_lifecycle_action_heartbeat)
            .then_output(|| RecordLifecycleActionHeartbeatOutput::builder().build());
        let mut app = account.app(true);
        app.home_place.clients.autoscaling =
            mock_client!(aws_sdk_autoscaling, RuleMode::MatchAny, [&complete, &heartbeat]);
        let event: serde_json::Value = serde_json::from_str(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/events/asg-terminate-lifecycle.json"
        )))
        .unwrap();
        let crate::input::Invocation::Direct(request) = crate::input::parse_invocation(&event).unwrap() else {
            panic!("one request")
        };

        let reports = app.clean_up(&[request], Deadline::none()).await;

        let summary = reports[0].summary_ref().unwrap();
        assert_eq!(summary.outcome, Outcome::DryRun);
        assert_eq!((complete.num_calls(), heartbeat.num_calls()), (0, 0));
        assert_eq!(summary.lifecycle.as_ref().unwrap().result, None);
        assert!(
            summary.warnings.iter().any(|w| w.contains("dry run")),
            "{:?}",
            summary.warnings
        );
    }
}
