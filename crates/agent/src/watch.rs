//! The watch loop: read the notice paths every round, hand each new notice to the function once (and, on Kubernetes,
//! label the node out of the load balancers), and stop cleanly on SIGTERM or SIGINT.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use spot_cleanup_input::Action;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use crate::config::AgentConfig;
use crate::health::Health;
use crate::identity::{self, Identity};
use crate::imds::{Metadata, MetadataError};
use crate::invoke::{Delivery, Invoker};
use crate::metrics::Metrics;
use crate::node;
use crate::notice::{self, Notice, NoticeError, NoticeKey};

/// After SIGTERM, deliveries under way get this long to finish: a pod is usually given 30 s, and the notice that is
/// being delivered is the reason the agent exists.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// While instance metadata keeps failing the same way, say so again every this many rounds, not every round.
const REPEAT_FAILURE_EVERY: u32 = 60;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot listen for signals: {0}")]
    Signals(#[from] std::io::Error),
}

/// SIGTERM (Kubernetes, systemd) and SIGINT (a terminal) both mean: stop watching, finish what is under way, exit 0.
struct Shutdown {
    term: Signal,
    int: Signal,
}

impl Shutdown {
    fn listen() -> Result<Self, AgentError> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn requested(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// Says that instance metadata fails when it starts failing, again now and then while it goes on, and when it is
/// back, instead of once per poll.
#[derive(Default)]
struct FailureLog {
    streak: u32,
    kind: Option<&'static str>,
}

impl FailureLog {
    fn failed(&mut self, error: &MetadataError) {
        let kind = error.kind();
        if self.kind != Some(kind) || self.streak.is_multiple_of(REPEAT_FAILURE_EVERY) {
            tracing::error!(error = %error, failed_rounds = self.streak + 1, "instance metadata failed");
        }
        self.kind = Some(kind);
        self.streak += 1;
    }

    fn answered(&mut self) {
        if self.streak > 0 {
            tracing::info!(failed_rounds = self.streak, "instance metadata answers again");
        }
        *self = Self::default();
    }

    /// Tell the probes and the metrics how the round that just ended went.
    fn report(&self, health: &Health, metrics: &Metrics) {
        health.round_ended(self.streak == 0);
        if self.streak > 0 {
            metrics.metadata_failed();
        }
    }
}

/// Watch until SIGTERM or SIGINT. Only a failure to listen for signals ends it early: everything else is logged and
/// retried on the next round.
pub async fn run(config: AgentConfig, health: Arc<Health>, metrics: Arc<Metrics>) -> Result<(), AgentError> {
    let mut shutdown = Shutdown::listen()?;
    let mut metadata = Metadata::new();
    let mut failures = FailureLog::default();
    let mut rounds = tokio::time::interval(config.poll_interval);
    rounds.set_missed_tick_behavior(MissedTickBehavior::Delay);

    let identity = loop {
        tokio::select! {
            why = shutdown.requested() => {
                tracing::info!(signal = why, "stopping before the instance identity was read");
                return Ok(());
            }
            _ = rounds.tick() => {
                let identity = read_identity(&mut metadata, &mut failures).await;
                failures.report(&health, &metrics);
                if let Some(identity) = identity {
                    break identity;
                }
            }
        }
    };
    let invoker = Invoker::from_env(config.function.clone(), &identity.region).await;
    let node = match &config.node {
        Some(name) => node::NodeLabel::connect(name.clone())
            .await
            .inspect_err(|e| tracing::error!(node = %name, error = %e, "cannot reach the Kubernetes API; the node will not be labelled"))
            .ok(),
        None => None,
    };
    health.watching();
    tracing::info!(
        instance_id = %identity.instance_id,
        region = %identity.region,
        function = %config.function,
        poll_interval_s = config.poll_interval.as_secs(),
        node = node.as_ref().map(node::NodeLabel::name),
        "watching instance metadata"
    );

    let mut watcher = Watcher::default();
    let mut deliveries = JoinSet::new();
    // The node's label from before a stop or hibernation is removed once, after the first round that read every path
    // and found no notice that excludes the node.
    let mut back = node.clone();
    let why = loop {
        tokio::select! {
            why = shutdown.requested() => break why,
            _ = rounds.tick() => {
                let fresh = watcher.round(&mut metadata, &mut failures).await;
                failures.report(&health, &metrics);
                for notice in &fresh {
                    if let Some(node) = node.as_ref().filter(|_| excludes_node(notice.action)) {
                        deliveries.spawn(exclude(node.clone(), notice.deadline));
                    }
                }
                if failures.streak == 0
                    && let Some(node) = back.take()
                    && fresh.iter().all(|n| !excludes_node(n.action))
                {
                    deliveries.spawn(release(node));
                }
                for notice in fresh {
                    metrics.notice(notice.action);
                    deliveries.spawn(deliver(invoker.clone(), identity.clone(), notice, metrics.clone()));
                }
            }
            Some(_) = deliveries.join_next() => {}
        }
    };
    if deliveries.is_empty() {
        tracing::info!(signal = why, "stopping");
        return Ok(());
    }
    tracing::info!(
        signal = why,
        deliveries = deliveries.len(),
        grace_s = SHUTDOWN_GRACE.as_secs(),
        "stopping once the deliveries under way end"
    );
    let drained = async { while deliveries.join_next().await.is_some() {} };
    tokio::select! {
        _ = drained => tracing::info!("stopping"),
        _ = tokio::time::sleep(SHUTDOWN_GRACE) => tracing::warn!("stopping with deliveries unfinished: grace is over"),
        why = shutdown.requested() => tracing::warn!(signal = why, "stopping with deliveries unfinished"),
    }
    Ok(())
}

async fn read_identity(metadata: &mut Metadata, failures: &mut FailureLog) -> Option<Identity> {
    let mut texts = Vec::with_capacity(2);
    for path in [identity::DOCUMENT_PATH, identity::SIGNATURE_PATH] {
        match metadata.get(path).await {
            Ok(Some(text)) => texts.push(text),
            Ok(None) => {
                failures.answered();
                tracing::error!(path, "instance metadata has nothing at this path; retrying");
                return None;
            }
            Err(e) => {
                failures.failed(&e);
                return None;
            }
        }
    }
    failures.answered();
    let [document, signature]: [String; 2] = texts.try_into().ok()?;
    Identity::parse(document, signature)
        .inspect_err(|e| tracing::error!(error = %e, "cannot use the instance identity; retrying"))
        .ok()
}

/// What the agent remembers between rounds: the notices already handed on, and the last malformed answer of each
/// path, so that a path stuck on the same garbage is reported once.
#[derive(Default)]
struct Watcher {
    handled: HashSet<NoticeKey>,
    malformed: HashMap<&'static str, String>,
}

impl Watcher {
    /// One read of each notice path; returns the notices not seen before.
    async fn round(&mut self, metadata: &mut Metadata, failures: &mut FailureLog) -> Vec<Notice> {
        let mut fresh = Vec::new();
        for path in [
            notice::INSTANCE_ACTION_PATH,
            notice::REBALANCE_PATH,
            notice::LIFECYCLE_STATE_PATH,
        ] {
            let body = match metadata.get(path).await {
                Ok(body) => body,
                Err(e) => {
                    failures.failed(&e);
                    return fresh;
                }
            };
            failures.answered();
            let Some(body) = body else {
                self.malformed.remove(path);
                continue;
            };
            match parse(path, &body) {
                Ok(Some(notice)) => {
                    self.malformed.remove(path);
                    if self.handled.insert(notice.key.clone()) {
                        fresh.push(notice);
                    }
                }
                Ok(None) => {
                    self.malformed.remove(path);
                }
                Err(e) => {
                    if self.malformed.get(path) != Some(&body) {
                        tracing::error!(path, error = %e, "ignoring a malformed answer");
                        self.malformed.insert(path, body);
                    }
                }
            }
        }
        fresh
    }
}

fn parse(path: &'static str, body: &str) -> Result<Option<Notice>, NoticeError> {
    match path {
        notice::INSTANCE_ACTION_PATH => notice::parse_instance_action(body).map(Some),
        notice::REBALANCE_PATH => notice::parse_rebalance(body).map(Some),
        _ => notice::parse_lifecycle_state(body, Utc::now()),
    }
}

/// The notices after which the node is going: a Spot interruption and an Auto Scaling termination. A rebalance
/// recommendation is only advice, and the node keeps serving.
fn excludes_node(action: Action) -> bool {
    action.is_spot_interruption() || action == Action::ScaleIn
}

async fn exclude(node: node::NodeLabel, deadline: DateTime<Utc>) {
    node::until(&node, "node excluded from external load balancers", deadline, || {
        node.exclude()
    })
    .await;
}

/// How long the agent keeps trying to remove its label from a node that is back: the label only delays the node's
/// return to the load balancers, so a while, not forever.
const RELEASE_FOR: chrono::TimeDelta = chrono::TimeDelta::minutes(2);

async fn release(node: node::NodeLabel) {
    let deadline = Utc::now() + RELEASE_FOR;
    node::until(&node, "node back: our exclusion label checked", deadline, || {
        node.release()
    })
    .await;
}

async fn deliver(invoker: Invoker, identity: Identity, notice: Notice, metrics: Arc<Metrics>) {
    let payload = notice::payload(&identity, &notice);
    let body = serde_json::to_vec(&payload).expect("the payload is plain strings");
    tracing::info!(
        instance_id = %identity.instance_id,
        action = ?notice.action,
        time = payload.time.as_deref().unwrap_or_default(),
        deadline = %notice.deadline.to_rfc3339(),
        "notice; invoking the cleanup function"
    );
    let delivery = invoker.deliver(&body, notice.deadline).await;
    metrics.delivered(&delivery);
    match delivery {
        Delivery::Accepted { attempts } => tracing::info!(
            instance_id = %identity.instance_id,
            action = ?notice.action,
            attempts,
            "the cleanup function accepted the notice"
        ),
        Delivery::GaveUp { attempts, last_error } => tracing::error!(
            instance_id = %identity.instance_id,
            action = ?notice.action,
            attempts,
            error = last_error,
            "giving up: the notice's deadline has passed and the cleanup function never accepted it"
        ),
    }
}
