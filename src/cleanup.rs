//! Orchestration: describe the instances, locate their registrations, deregister, quarantine, verify, and publish one
//! `Summary` per instance. Steps only report; this module decides the order and what goes into each summary.
//!
//! The order puts the most valuable change first: traffic stops (deregister) before the node is walled off
//! (quarantine), and checking (verify) comes after both, since it changes nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::bounded::bounded_all;
use crate::claim::{self, Claim, Token};
use crate::clients::Clients;
use crate::config::Config;
use crate::guard::{Refusal, RefusalKind};
use crate::input::{InstanceId, Request, Trigger};
use crate::instance::{Instance, describe_instances};
use crate::locate::{AutoScaling, Index, Located, Locator, Sweep, TargetRegistration};
use crate::monitoring::Monitoring;
use crate::monitoring::secrets::SecretClients;
use crate::pace::Pace;
use crate::places::{PlaceError, Places};
use crate::steplog::{self, StepLog, Tally};
use crate::steps::deregister::{self, Verdict};
use crate::steps::lifecycle::{self, DrainWait};
use crate::steps::notify;
use crate::steps::quarantine::{self, EniChange, EniStatus, QuarantineGroupCache};
use crate::steps::reregister;
use crate::summary::{InstanceInfo, Outcome, SCHEMA_VERSION, Step, StepError, Summary, TargetChange, Timings};

/// Spot's notice: the instance goes two minutes after the warning.
pub const SPOT_NOTICE: Duration = Duration::from_secs(120);

/// Everything an invocation needs, built once at init.
pub struct App {
    pub config: Config,
    pub clients: Clients,
    /// Cheap sources of known registrations, asked first, in priority order. What they find leaves its groups before
    /// the sweep starts.
    pub fast_locators: Vec<Box<dyn Locator>>,
    /// The full sweep: the safety net that finds the rest and checks what the fast path removed.
    pub locator: Box<dyn Locator>,
    /// This container's share of the account's ELB Describe* budget, for every Describe call the cleanup makes.
    pub elb_pace: Pace,
    /// A slower share for the index refresh, which is background work.
    pub refresh_pace: Pace,
    /// The monitoring systems told at notice time, alongside the cleanup.
    pub monitoring: Monitoring,
    /// How an Auto Scaling lifecycle cleanup waits for draining targets; None completes the action at once.
    pub drain_wait: Option<DrainWait>,
    /// Clients for other regions and accounts; None serves only this App's own.
    pub places: Option<Arc<Places>>,
    /// The quarantine groups by VPC, looked up during init (see `warm`) and again when stale.
    pub quarantine_groups: QuarantineGroupCache,
}

impl App {
    /// The production wiring: the registration index when one is configured (it knows exact ports and zones), the
    /// Auto Scaling fast path, then the full sweep, over the shared clients.
    pub fn new(config: Config, clients: Clients) -> Self {
        let mut fast_locators: Vec<Box<dyn Locator>> = Vec::new();
        if let Some(table) = &config.registration_index_table {
            fast_locators.push(Box::new(Index::new(clients.dynamodb.clone(), table.clone())));
        }
        fast_locators.push(Box::new(AutoScaling::new(
            clients.autoscaling.clone(),
            clients.elb.clone(),
        )));
        let rate = config.elb_describe_rate as u32;
        let elb_pace = Pace::new(rate * 4, f64::from(rate));
        let refresh_rate = config.refresh_concurrency as u32;
        let refresh_pace = Pace::new(refresh_rate, f64::from(refresh_rate));
        let locator = Box::new(Sweep::new(clients.elb.clone(), config.concurrency).paced(elb_pace.clone()));
        let monitoring = Monitoring::new(config.monitoring.clone(), None);
        let drain_wait = config.lifecycle_wait_for_draining.then(DrainWait::default);
        let quarantine_groups = QuarantineGroupCache::new(config.quarantine_groups.clone());
        App {
            monitoring,
            config,
            clients,
            fast_locators,
            locator,
            elb_pace,
            refresh_pace,
            drain_wait,
            places: None,
            quarantine_groups,
        }
    }

    /// Serve events from other regions and accounts too, with clients built from `shared` (this function's own SDK
    /// configuration) as each place is first seen.
    pub fn serving_other_places(mut self, shared: aws_config::SdkConfig) -> Self {
        let places = Places::new(
            shared,
            self.config.home_account.clone(),
            self.config.cross_account_role_name.clone(),
        );
        self.places = Some(Arc::new(places));
        self
    }
}

impl App {
    /// Let the monitoring step read `ssm:` and `secretsmanager:` secrets.
    pub fn with_secret_clients(mut self, secrets: SecretClients) -> Self {
        self.monitoring = Monitoring::new(self.config.monitoring.clone(), Some(secrets));
        self
    }
}

/// Why an instance could not be cleaned at all. Nothing was changed.
#[derive(Clone, Debug, thiserror::Error, PartialEq)]
pub enum InstanceError {
    #[error("instance {0} was not found in this account and region; nothing was changed")]
    NotFound(InstanceId),
    #[error("could not describe instance {instance}: {reason}; nothing was changed")]
    Describe { instance: InstanceId, reason: String },
    #[error("instance {instance} cannot be served: {reason}")]
    NotServed { instance: InstanceId, reason: PlaceError },
    #[error(transparent)]
    Refused(#[from] Refusal),
}

/// The result for one instance.
#[derive(Clone, Debug)]
pub struct Report {
    pub instance_id: InstanceId,
    pub result: Result<Summary, InstanceError>,
}

impl Report {
    /// Done, with nothing left for a retry to do.
    pub fn is_complete(&self) -> bool {
        self.result.as_ref().is_ok_and(Summary::is_complete)
    }
}

/// Clean up every instance named by `requests` in one pass: one DescribeInstances, one sweep, and DeregisterTargets
/// calls per target group for the whole batch. A request for an instance already seen is folded into the first.
/// No new locate or verify call starts after `deadline`; what was not done by then is reported as such.
pub async fn clean_up(app: &App, requests: &[Request], deadline: Option<Instant>) -> Vec<Report> {
    let clock = Instant::now();
    let started_at = Utc::now();
    let mut seen = HashSet::new();
    let requests: Vec<&Request> = requests.iter().filter(|r| seen.insert(r.instance_id.clone())).collect();
    let ids: Vec<InstanceId> = requests.iter().map(|r| r.instance_id.clone()).collect();
    // At notice time, beside everything else: nothing below waits for the monitoring systems until the summaries.
    let monitoring = tokio::spawn(
        app.monitoring
            .clone()
            .disable_hosts(requests.iter().map(|r| (*r).clone()).collect()),
    );

    let described = describe_instances(&app.clients.ec2, &ids).await;
    let describe_ms = elapsed_ms(clock);
    let mut described = match described {
        Ok(found) => found,
        Err(e) => {
            return ids
                .into_iter()
                .map(|instance| Report {
                    result: Err(InstanceError::Describe {
                        instance: instance.clone(),
                        reason: e.0.clone(),
                    }),
                    instance_id: instance,
                })
                .collect();
        }
    };
    let mut work: Vec<(&Request, Instance)> = Vec::new();
    let mut reports = Vec::new();
    for request in &requests {
        let found = described.remove(&request.instance_id);
        steplog::request_step("describe", request, describe_ms, Tally::one(found.is_some()));
        match found {
            Some(instance) => {
                // The scope guard: nothing below runs for an instance this function may not touch.
                let reasons = app.config.trust.scope.check_instance(request, &instance);
                if reasons.is_empty() {
                    work.push((request, instance));
                } else {
                    let refusal = Refusal {
                        kind: RefusalKind::OutOfScope,
                        instance_id: request.instance_id.clone(),
                        reasons,
                        trigger: Box::new(request.trigger.clone()),
                    };
                    crate::guard::announce(app, &refusal).await;
                    reports.push(Report {
                        instance_id: request.instance_id.clone(),
                        result: Err(InstanceError::Refused(refusal)),
                    });
                }
            }
            None => reports.push(Report {
                instance_id: request.instance_id.clone(),
                result: Err(InstanceError::NotFound(request.instance_id.clone())),
            }),
        }
    }
    // One delivery per interruption acts; a later or concurrent one ends quietly here, before any change.
    let marker = claim::marker(app);
    let mut tokens: HashMap<InstanceId, Token> = HashMap::new();
    let mut claim_warnings: HashMap<InstanceId, String> = HashMap::new();
    if !app.config.dry_run && !work.is_empty() {
        let lease = deadline.map_or(claim::DEFAULT_LEASE, |d| {
            d.saturating_duration_since(Instant::now()) + Duration::from_secs(10)
        });
        let lease_until = Utc::now() + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::minutes(5));
        let claims = futures_join_all(
            work.iter()
                .map(|(request, _)| claim::claim(&marker, &request.instance_id, lease_until)),
        )
        .await;
        let mut claimed = Vec::new();
        for ((request, instance), outcome) in work.into_iter().zip(claims) {
            match outcome {
                Claim::Won(token) => {
                    steplog::request_step("claim", request, 0, Tally::one(true));
                    tokens.insert(instance.id.clone(), token);
                    claimed.push((request, instance));
                }
                Claim::Unavailable(warning) => {
                    // The cleanup goes on without the marker; the summary carries the warning.
                    steplog::request_step("claim", request, 0, Tally::one(false));
                    claim_warnings.insert(instance.id.clone(), warning);
                    claimed.push((request, instance));
                }
                Claim::Taken { state, since } => {
                    tracing::info!(
                        step = "claim",
                        instance_id = instance.id.as_str(),
                        event_id = steplog::event_id(&request.trigger),
                        state = %state,
                        "already handled by another delivery"
                    );
                    reports.push(Report {
                        instance_id: instance.id.clone(),
                        result: Ok(already_handled(
                            request,
                            &instance,
                            &state,
                            since.as_deref(),
                            started_at,
                        )),
                    });
                }
            }
        }
        work = claimed;
    }
    if work.is_empty() {
        return reports;
    }
    let log = StepLog::new(work.iter().map(|(r, _)| *r));
    let instances: Vec<Instance> = work.iter().map(|(_, i)| i.clone()).collect();
    // An instance going back to a warm pool will serve again: it leaves its groups but keeps its network.
    let to_quarantine: Vec<Instance> = work
        .iter()
        .filter(|(r, _)| !r.trigger.keeps_network())
        .map(|(_, i)| i.clone())
        .collect();
    let mut known = Registrations::default();

    // 1. What the fast locators know (the Auto Scaling group, the index) leaves its groups first.
    let step = Instant::now();
    for locator in &app.fast_locators {
        match locator.locate(&instances, deadline).await {
            Ok(located) => {
                known.add(located.registrations);
                known.unchecked.extend(located.unchecked);
            }
            // Not fatal: the sweep still covers everything in the VPC.
            Err(e) => known
                .fast_path_warnings
                .push(format!("{} locator failed, the sweep covers it: {e}", locator.name())),
        }
    }
    let fast_locate_ms = elapsed_ms(step);
    let step = Instant::now();
    if !app.config.dry_run {
        let fast: Vec<TargetRegistration> = known.all().cloned().collect();
        known.deregister(app, &fast).await;
    }
    let mut deregister_ms = elapsed_ms(step);
    log.step("fast-path", fast_locate_ms + deregister_ms, |id| known.sent_for(id));

    // 2. Wall the nodes off while the sweep, the slow part, runs: EC2 and ELB budgets are separate, so neither waits
    //    for the other. 3. The sweep finds the rest, and its fresh view of each group tells whether the fast path's
    //    targets left.
    let step = Instant::now();
    let ((mut eni_changes, quarantine_ms), (swept, locate_ms)) = tokio::join!(
        async {
            let changes = quarantine_all(app, &to_quarantine).await;
            (changes, elapsed_ms(step))
        },
        async {
            let swept = app.locator.locate(&instances, deadline).await;
            (swept, elapsed_ms(step))
        },
    );
    log.step("quarantine", quarantine_ms, |id| eni_tally(eni_changes.get(id)));
    let target_groups_checked = swept.as_ref().map(|l| l.target_groups_checked).unwrap_or(0);
    match swept {
        Ok(located) => known.absorb_sweep(located),
        Err(e) => known.locate_errors.push(e.to_string()),
    }
    // Groups the sweep could not read may hold any instance's registrations: each instance's line counts them.
    let unread = known.locate_errors.len() + known.unchecked.len();
    log.step("locate", locate_ms, |id| Tally::new(known.found_for(id), unread));
    let step = Instant::now();
    if !app.config.dry_run {
        let found = known.not_yet_sent();
        known.deregister(app, &found).await;
    }
    let sweep_deregister_ms = elapsed_ms(step);
    deregister_ms += sweep_deregister_ms;
    log.step("deregister", sweep_deregister_ms, |id| known.sent_for(id));

    // 4. Check what the sweep could not, and read each touched group's deregistration delay for the warnings.
    let step = Instant::now();
    if !app.config.dry_run {
        known.verify(app, deadline).await;
    }
    let verify_ms = elapsed_ms(step);
    log.step("verify", verify_ms, |id| known.verified_for(id));

    let mut summaries = Vec::new();
    for (request, instance) in &work {
        let mut summary = Summary {
            version: SCHEMA_VERSION,
            instance: InstanceInfo::of(instance),
            trigger: request.trigger.clone(),
            dry_run: app.config.dry_run,
            outcome: Outcome::Failed,
            started_at,
            terminates_at: terminates_at(&request.trigger, started_at),
            target_groups_checked,
            removed: Vec::new(),
            planned: Vec::new(),
            remaining: Vec::new(),
            network_interfaces: eni_changes.remove(&instance.id).unwrap_or_default(),
            warnings: known
                .fast_path_warnings
                .iter()
                .cloned()
                .chain(claim_warnings.remove(&instance.id))
                .collect(),
            errors: Vec::new(),
            timings_ms: Timings {
                describe: describe_ms,
                fast_locate: fast_locate_ms,
                locate: locate_ms,
                deregister: deregister_ms,
                quarantine: quarantine_ms,
                verify: verify_ms,
                total: 0,
            },
            monitoring: Vec::new(),
            lifecycle: None,
        };
        if request.trigger.keeps_network() {
            summary
                .warnings
                .push("returns to a warm pool: its network interfaces were left as they are".into());
        }
        for error in &known.locate_errors {
            summary.errors.push(StepError {
                step: Step::Locate,
                message: format!("{error}; registrations may remain"),
            });
        }
        for group in known
            .unchecked
            .iter()
            .filter(|g| g.vpc_id.is_none() || g.vpc_id == instance.vpc_id)
        {
            summary.errors.push(StepError {
                step: Step::Locate,
                message: format!(
                    "target group {} could not be checked, registrations there may remain: {}",
                    group.target_group_name, group.error
                ),
            });
        }
        for registration in known.all().filter(|r| r.instance_id == instance.id) {
            let mut change = target_change(registration);
            change.deregistration_delay_seconds = known.delays.get(&registration.target_group_arn).copied();
            if app.config.dry_run {
                summary.planned.push(change);
                continue;
            }
            let key = key(registration);
            match (known.sent.get(&key), known.verdicts.get(&key)) {
                (Some(Err(error)), _) => {
                    change.reason = Some(format!("DeregisterTargets failed: {error}"));
                    summary.errors.push(StepError {
                        step: Step::Deregister,
                        message: format!("{}: {error}", registration.target_group_name),
                    });
                    summary.remaining.push(change);
                }
                (_, Some(Verdict::Deregistered)) => {
                    change.state = Some("deregistered".into());
                    summary.removed.push(change);
                }
                (_, Some(Verdict::Draining)) => {
                    change.state = Some("draining".into());
                    summary.removed.push(change);
                }
                (_, Some(Verdict::Remains { state, reason })) => {
                    change.state = Some(state.clone());
                    change.reason = reason.clone();
                    summary.remaining.push(change);
                }
                (_, Some(Verdict::Unknown { error })) => {
                    change.reason = Some(format!("could not verify: {error}"));
                    summary.errors.push(StepError {
                        step: Step::Verify,
                        message: format!("{}: {error}", registration.target_group_name),
                    });
                    summary.remaining.push(change);
                }
                (_, None) => {
                    change.reason = Some("not verified before the deadline".into());
                    summary.remaining.push(change);
                }
            }
        }
        for eni in summary
            .network_interfaces
            .iter()
            .filter(|e| e.status == EniStatus::Failed)
        {
            summary.errors.push(StepError {
                step: Step::Quarantine,
                message: format!(
                    "{}: {}",
                    eni.network_interface_id,
                    eni.error.as_deref().unwrap_or("failed")
                ),
            });
        }
        summary.warnings.extend(warnings(&summary, started_at));
        summary.settle_outcome();
        summary.timings_ms.total = elapsed_ms(clock);
        summaries.push(summary);
    }
    if app.config.reregister_on_restore && !app.config.dry_run {
        record_left_targets(app, &work, &mut summaries).await;
    }

    let step = Instant::now();
    let mut monitored = monitoring.await.unwrap_or_default();
    // The monitoring calls ran beside every step above; this is how long the cleanup then waited for them.
    let monitoring_wait_ms = elapsed_ms(step);
    for summary in &mut summaries {
        summary.monitoring = monitored.remove(&summary.instance.id).unwrap_or_default();
        for failed in summary.monitoring.iter().filter(|c| !c.ok) {
            summary.warnings.push(format!(
                "monitoring: {:?} could not be told ({}): {}",
                failed.system,
                failed.action,
                failed.error.as_deref().unwrap_or("failed")
            ));
        }
    }
    log.step("monitoring", monitoring_wait_ms, |id| {
        let calls = summaries
            .iter()
            .filter(|s| &s.instance.id == id)
            .flat_map(|s| &s.monitoring);
        calls.map(|c| c.ok).collect()
    });
    // An Auto Scaling lifecycle action is completed once its cleanup is, so the summary can say it was.
    let step = Instant::now();
    lifecycle::finish_all(
        &app.clients.autoscaling,
        &app.clients.elb,
        &app.elb_pace,
        app.drain_wait,
        &mut summaries,
        deadline,
    )
    .await;
    let lifecycle_ms = elapsed_ms(step);
    for (summary, request) in summaries.iter().zip(&work) {
        if let Some(report) = &summary.lifecycle {
            steplog::request_step(
                "lifecycle",
                request.0,
                lifecycle_ms,
                Tally::one(report.result.is_some()),
            );
        }
    }

    // Publishing is independent per instance, and the last step: run them together.
    let step = Instant::now();
    let (sns, topic) = (&app.clients.sns, &app.config.sns_topic_arn);
    let published = notify::publish_all(sns, topic, app.config.notify_format, &mut summaries).await;
    let notify_ms = elapsed_ms(step);
    for ((summary, published), (request, _)) in summaries.iter_mut().zip(published).zip(&work) {
        steplog::request_step("notify", request, notify_ms, Tally::one(published));
        if !published {
            summary.settle_outcome();
        }
    }
    for summary in &summaries {
        if let Some(token) = tokens.get(&summary.instance.id)
            && let Err(e) = claim::finish(&marker, &summary.instance.id, token, summary.is_complete()).await
        {
            tracing::warn!(instance_id = summary.instance.id.as_str(), error = %e, "delivery marker not updated");
        }
    }
    for summary in summaries {
        tracing::info!(
            step = "summary",
            instance_id = summary.instance.id.as_str(),
            event_id = steplog::event_id(&summary.trigger),
            outcome = summary.outcome.as_str(),
            summary = %serde_json::to_string(&summary).unwrap_or_default(),
            "cleanup finished"
        );
        crate::metrics::emit(&summary);
        reports.push(Report {
            instance_id: summary.instance.id.clone(),
            result: Ok(summary),
        });
    }
    reports
}

/// With `REREGISTER_ON_RESTORE`, an instance that may come back (stop, hibernate) carries a record of the targets it
/// left, for the restore. A record that cannot be written is a warning: the cleanup itself is done.
async fn record_left_targets(app: &App, work: &[(&Request, Instance)], summaries: &mut [Summary]) {
    let step = Instant::now();
    let wanted: Vec<usize> = (0..summaries.len())
        .filter(|&i| {
            let comes_back = work[i].0.trigger.action.is_some_and(|a| a.may_come_back());
            comes_back && !summaries[i].removed.is_empty()
        })
        .collect();
    let records = futures_join_all(wanted.iter().map(|&i| {
        let (summary, instance) = (&summaries[i], &work[i].1);
        reregister::record(&app.clients.ec2, &instance.id, &instance.tags, &summary.removed)
    }))
    .await;
    let ms = elapsed_ms(step);
    for (i, recorded) in wanted.into_iter().zip(records) {
        steplog::request_step("record", work[i].0, ms, Tally::one(recorded.is_ok()));
        summaries[i].warnings.extend(recorded.unwrap_or_else(Some));
    }
}

/// ENIs walled off (or already so, or gone), against ENIs that could not be changed.
fn eni_tally(changes: Option<&Vec<EniChange>>) -> Tally {
    changes
        .into_iter()
        .flatten()
        .map(|change| change.status != EniStatus::Failed)
        .collect()
}

/// Run the futures side by side (the claims of a batch wait out their settle time together).
async fn futures_join_all<F: std::future::Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut set: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in set.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().map(|o| o.expect("every future finished")).collect()
}

/// The answer of a delivery that found the work done or under way: nothing changed, nothing published.
fn already_handled(
    request: &Request,
    instance: &Instance,
    state: &str,
    since: Option<&str>,
    started_at: DateTime<Utc>,
) -> Summary {
    let what = if state == "done" {
        "another delivery of this interruption already cleaned it up"
    } else {
        "another delivery of this interruption is cleaning it up"
    };
    Summary {
        version: SCHEMA_VERSION,
        instance: InstanceInfo::of(instance),
        trigger: request.trigger.clone(),
        dry_run: false,
        outcome: Outcome::AlreadyHandled,
        started_at,
        terminates_at: terminates_at(&request.trigger, started_at),
        target_groups_checked: 0,
        monitoring: Vec::new(),
        lifecycle: None,
        removed: Vec::new(),
        planned: Vec::new(),
        remaining: Vec::new(),
        network_interfaces: Vec::new(),
        warnings: vec![format!(
            "already handled: {what} (marker {state}{}); nothing was changed or published",
            since.map(|s| format!(" since {s}")).unwrap_or_default()
        )],
        errors: Vec::new(),
        timings_ms: Timings::default(),
    }
}

/// The same registration, whichever locator found it.
type Key = (String, String, Option<i32>);

fn key(registration: &TargetRegistration) -> Key {
    (
        registration.target_group_arn.clone(),
        registration.target_id.clone(),
        registration.port,
    )
}

/// Everything known about the batch's registrations as the steps go: who found them, what was sent, what was seen
/// afterwards.
#[derive(Default)]
struct Registrations {
    found: BTreeMap<Key, TargetRegistration>,
    /// DeregisterTargets' answer for each registration it carried.
    sent: HashMap<Key, Result<(), String>>,
    /// What a later look at the group said about each registration.
    verdicts: HashMap<Key, Verdict>,
    delays: HashMap<String, u32>,
    /// Registrations the sweep saw in their group, after the fast path's calls.
    swept: HashSet<Key>,
    unchecked: Vec<crate::locate::UncheckedGroup>,
    locate_errors: Vec<String>,
    fast_path_warnings: Vec<String>,
}

impl Registrations {
    fn all(&self) -> impl Iterator<Item = &TargetRegistration> {
        self.found.values()
    }

    fn of<'a>(&'a self, instance: &'a InstanceId) -> impl Iterator<Item = (Key, &'a TargetRegistration)> + 'a {
        self.found
            .iter()
            .filter(move |(_, r)| &r.instance_id == instance)
            .map(|(k, r)| (k.clone(), r))
    }

    fn found_for(&self, instance: &InstanceId) -> usize {
        self.of(instance).count()
    }

    /// DeregisterTargets' answers so far for the instance's registrations.
    fn sent_for(&self, instance: &InstanceId) -> Tally {
        self.of(instance)
            .filter_map(|(key, _)| self.sent.get(&key).map(Result::is_ok))
            .collect()
    }

    /// Gone or draining, against still there or not known.
    fn verified_for(&self, instance: &InstanceId) -> Tally {
        self.of(instance)
            .filter_map(|(key, _)| self.verdicts.get(&key))
            .map(|verdict| match verdict {
                Verdict::Deregistered | Verdict::Draining => true,
                Verdict::Remains { .. } | Verdict::Unknown { .. } => false,
            })
            .collect()
    }

    fn add(&mut self, registrations: Vec<TargetRegistration>) {
        for registration in registrations {
            self.found.entry(key(&registration)).or_insert(registration);
        }
    }

    /// Registrations found but not yet sent to DeregisterTargets, and those whose fast-path call failed but the sweep
    /// still saw (one stale entry can fail a whole group's call); ones already draining or unused need no call.
    fn not_yet_sent(&self) -> Vec<TargetRegistration> {
        self.found
            .iter()
            .filter(|(k, _)| match self.sent.get(*k) {
                None => true,
                Some(Err(_)) => self.swept.contains(*k),
                Some(Ok(())) => false,
            })
            .filter(|(_, r)| !matches!(r.state.as_deref(), Some("draining" | "unused")))
            .map(|(_, r)| r.clone())
            .collect()
    }

    async fn deregister(&mut self, app: &App, registrations: &[TargetRegistration]) {
        if registrations.is_empty() {
            return;
        }
        let results = deregister::deregister_all(&app.clients.elb, registrations, app.config.concurrency).await;
        for registration in registrations {
            if let Some(result) = results.get(&registration.target_group_arn) {
                self.sent.insert(key(registration), result.clone());
            }
        }
    }

    /// Take in the sweep's view. It ran after the fast path's deregistration, so for a target the fast path sent it
    /// is the check: absent or draining means removed. Anything else it found is new.
    fn absorb_sweep(&mut self, located: Located) {
        let checked: HashSet<&String> = located.checked_groups.iter().collect();
        let seen: HashSet<Key> = located.registrations.iter().map(key).collect();
        // A fast-path registration whose call failed and that is not in its group (the sweep read the group, or ELB
        // said the group is gone) was stale knowledge: there is nothing to remove and nothing to report.
        let stale: Vec<Key> = self
            .sent
            .iter()
            .filter(|(k, result)| match result {
                Err(error) => {
                    (checked.contains(&k.0) && !seen.contains(*k)) || error.starts_with("TargetGroupNotFound")
                }
                Ok(()) => false,
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            self.sent.remove(&k);
            self.found.remove(&k);
        }
        for (k, result) in &self.sent {
            if result.is_ok() && checked.contains(&k.0) && !seen.contains(k) {
                self.verdicts.insert(k.clone(), Verdict::Deregistered);
            }
        }
        self.swept = seen;
        for registration in located.registrations {
            let k = key(&registration);
            let state = registration.state.clone().unwrap_or_default();
            if matches!(state.as_str(), "draining" | "unused") {
                let verdict = if state == "draining" {
                    Verdict::Draining
                } else {
                    Verdict::Deregistered
                };
                self.verdicts.insert(k.clone(), verdict);
            } else if matches!(self.sent.get(&k), Some(Ok(()))) {
                self.verdicts
                    .insert(k.clone(), Verdict::Remains { state, reason: None });
            }
            self.found.entry(k).or_insert(registration);
        }
        self.unchecked.extend(located.unchecked);
    }

    /// Describe again the groups whose sent targets have no verdict yet, and read every touched group's delay.
    async fn verify(&mut self, app: &App, deadline: Option<std::time::Instant>) {
        let unverified: Vec<TargetRegistration> = self
            .found
            .iter()
            .filter(|(k, _)| matches!(self.sent.get(*k), Some(Ok(()))) && !self.verdicts.contains_key(*k))
            .map(|(_, r)| r.clone())
            .collect();
        if !unverified.is_empty() && !crate::locate::past(deadline) {
            let checks =
                deregister::verify_removed(&app.clients.elb, &app.elb_pace, &unverified, app.config.concurrency).await;
            for check in checks {
                for (registration, verdict) in check.verdicts {
                    self.verdicts.insert(key(&registration), verdict);
                }
            }
        }
        let touched: BTreeSet<String> = self.sent.keys().map(|k| k.0.clone()).collect();
        if !touched.is_empty() && !crate::locate::past(deadline) {
            self.delays =
                deregister::deregistration_delays(&app.clients.elb, &app.elb_pace, touched, app.config.concurrency)
                    .await;
        }
    }
}

/// Quarantine every instance's ENIs, instances side by side. One DescribeSecurityGroups resolves the quarantine group
/// of each VPC for the whole batch.
async fn quarantine_all(app: &App, instances: &[Instance]) -> HashMap<InstanceId, Vec<EniChange>> {
    let with_enis: Vec<&Instance> = instances.iter().filter(|i| !i.network_interfaces.is_empty()).collect();
    if with_enis.is_empty() {
        return HashMap::new();
    }
    let unchanged = |instance: &Instance, error: &str| -> Vec<EniChange> {
        let vpc = instance.vpc_id.clone();
        instance
            .network_interfaces
            .iter()
            .map(|eni| quarantine::unchanged(eni, vpc.clone(), error))
            .collect()
    };
    let groups = match app.quarantine_groups.get(&app.clients.ec2).await {
        Ok(groups) => groups,
        Err(e) => {
            let message = e.to_string();
            return with_enis
                .iter()
                .map(|i| (i.id.clone(), unchanged(i, &message)))
                .collect();
        }
    };
    let records = Arc::new(quarantine::recorded_groups(&app.clients.ec2, &with_enis).await);
    // A few instances at a time: each sends two EC2 writes per ENI, and EC2's per-action buckets are small.
    let limit = app.config.concurrency.div_ceil(2);
    let changes = bounded_all(limit, with_enis.iter().map(|i| (*i).clone()), |instance| {
        let (ec2, groups, records, dry_run) = (
            app.clients.ec2.clone(),
            Arc::clone(&groups),
            Arc::clone(&records),
            app.config.dry_run,
        );
        async move {
            let records = records.as_ref().as_ref();
            quarantine::quarantine_enis(&ec2, &instance, &groups, records, dry_run).await
        }
    })
    .await;
    with_enis
        .iter()
        .zip(changes)
        .map(|(instance, change)| {
            let change = change.unwrap_or_else(|e| unchanged(instance, &e.to_string()));
            (instance.id.clone(), change)
        })
        .collect()
}

fn target_change(registration: &TargetRegistration) -> TargetChange {
    TargetChange {
        target_group_arn: registration.target_group_arn.clone(),
        target_group_name: registration.target_group_name.clone(),
        kind: registration.kind,
        target_id: registration.target_id.clone(),
        port: registration.port,
        availability_zone: registration.availability_zone.clone(),
        state: registration.state.clone(),
        reason: None,
        deregistration_delay_seconds: None,
    }
}

/// When the instance goes: what the sender said, else Spot's two minutes from the event (or from now).
pub fn terminates_at(trigger: &Trigger, started_at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if trigger.action_time.is_some() {
        return trigger.action_time;
    }
    let spot = trigger.action.is_some_and(|a| a.is_spot_interruption());
    let notice = chrono::Duration::from_std(SPOT_NOTICE).expect("two minutes fit");
    spot.then(|| trigger.event_time.unwrap_or(started_at) + notice)
}

/// Things a person should know that are not failures.
fn warnings(summary: &Summary, now: DateTime<Utc>) -> Vec<String> {
    let mut warnings = Vec::new();
    if let Some(state) = summary.instance.state.as_deref()
        && matches!(state, "shutting-down" | "terminated" | "stopping" | "stopped")
    {
        warnings.push(format!("the instance is already {state}"));
    }
    let Some(terminates_at) = summary.terminates_at else {
        return warnings;
    };
    let left = (terminates_at - now).num_seconds();
    if left <= 0 {
        warnings.push(format!(
            "termination time {} had already passed when cleanup started",
            terminates_at.to_rfc3339()
        ));
    }
    let mut seen = HashSet::new();
    for target in &summary.removed {
        if let Some(delay) = target.deregistration_delay_seconds
            && i64::from(delay) > left.max(0)
            && target.state.as_deref() == Some("draining")
            && seen.insert(&target.target_group_arn)
        {
            warnings.push(format!(
                "target group {}: draining started, but its deregistration delay is {delay} s and only {} s are left \
                 before termination; requests still in flight then will be cut off",
                target.target_group_name,
                left.max(0)
            ));
        }
    }
    warnings
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::{Action, Source};
    use crate::locate::TargetKind;

    fn trigger(action: Option<Action>, event_time: Option<DateTime<Utc>>) -> Trigger {
        Trigger {
            event_source: Some("aws.ec2".into()),
            action,
            event_time,
            ..Trigger::from_source(Source::EventBridge)
        }
    }

    fn summary_with(removed: Vec<TargetChange>, terminates_at: Option<DateTime<Utc>>) -> Summary {
        Summary {
            version: SCHEMA_VERSION,
            instance: InstanceInfo {
                id: InstanceId::parse("i-0123abcd").unwrap(),
                vpc_id: None,
                state: Some("running".into()),
                lifecycle: Some("spot".into()),
                addresses: vec![],
            },
            trigger: trigger(Some(Action::Terminate), None),
            dry_run: false,
            outcome: Outcome::Cleaned,
            started_at: Utc::now(),
            terminates_at,
            target_groups_checked: 1,
            removed,
            planned: vec![],
            remaining: vec![],
            network_interfaces: vec![],
            warnings: vec![],
            errors: vec![],
            timings_ms: Timings::default(),
            monitoring: vec![],
            lifecycle: None,
        }
    }

    fn draining(name: &str, delay: u32) -> TargetChange {
        TargetChange {
            target_group_arn: format!("arn:{name}"),
            target_group_name: name.into(),
            kind: TargetKind::Instance,
            target_id: "i-0123abcd".into(),
            port: Some(30080),
            availability_zone: None,
            state: Some("draining".into()),
            reason: None,
            deregistration_delay_seconds: Some(delay),
        }
    }

    #[test]
    fn spot_actions_terminate_two_minutes_after_the_event() {
        let event = Utc::now() - chrono::Duration::seconds(30);
        let at = terminates_at(&trigger(Some(Action::Stop), Some(event)), Utc::now()).unwrap();
        assert_eq!((at - event).num_seconds(), 120);
        assert_eq!(
            terminates_at(&trigger(Some(Action::Rebalance), Some(event)), Utc::now()),
            None
        );
        let mut agent = trigger(Some(Action::Terminate), None);
        agent.action_time = Some(event);
        assert_eq!(terminates_at(&agent, Utc::now()), Some(event));
    }

    #[test]
    fn warns_when_draining_cannot_finish_before_termination() {
        let now = Utc::now();
        let summary = summary_with(
            vec![draining("slow", 300), draining("slow", 300), draining("quick", 30)],
            Some(now + chrono::Duration::seconds(90)),
        );
        let warnings = warnings(&summary, now);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("target group slow: draining started"));
        assert!(warnings[0].contains("delay is 300 s and only 90 s are left"));
    }

    #[test]
    fn warns_when_the_termination_time_has_passed() {
        let now = Utc::now();
        let summary = summary_with(vec![draining("any", 5)], Some(now - chrono::Duration::seconds(10)));
        let warnings = warnings(&summary, now);
        assert!(warnings[0].contains("had already passed"));
        assert!(warnings[1].contains("only 0 s are left"));
    }
}
