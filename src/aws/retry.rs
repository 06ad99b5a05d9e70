//! The retry policy of every AWS call: made for the invocation's deadline, not for a count.
//!
//! A throttle or a transient error is retried after a short full-jitter backoff (a random wait below 25 ms, doubling
//! per attempt up to 400 ms), for as long as the invocation's deadline allows: on the cleanup's path a call given up
//! is a registration left behind. The SDK's standard strategy does the backoff; what it cannot know, the deadline,
//! comes from `CallBudget`, which the handler starts anew for every invocation and `DeadlineClassifier` reads before
//! each retry. Nothing adaptive is kept between calls: adaptive mode's client rate limiter, which after one throttle
//! slowed every call of the service in the process and kept doing so into later invocations, is not used, and each
//! client has a retry partition of its own with no retry quota. Pacing our own sends is `pace::Pacing`'s job, per
//! action class.
//!
//! The dependencies off the safety path (DynamoDB, KMS, SNS) get a few quick attempts instead, and a `Breaker`: the
//! deregistration and the quarantine must never wait on them. The wave's roster is on the table too, but it is how the
//! cleanups of a wave share one driver, so it is not given up like a dependency: its calls are retried until the
//! deadline, and an attempt may take as long as a loaded table takes (`Policy::COORDINATION`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_smithy_runtime::client::retries::RetryPartition;
use aws_smithy_runtime::client::retries::TokenBucket;
use aws_smithy_runtime_api::client::interceptors::context::InterceptorContext;
use aws_smithy_runtime_api::client::retries::classifiers::{ClassifyRetry, RetryAction, RetryClassifierPriority};

/// The first retry waits a random time below this; each later one doubles it.
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(25);
/// No wait between attempts is longer than this.
pub const MAX_BACKOFF: Duration = Duration::from_millis(400);
/// A call made outside any invocation (at init), or in one without a deadline (a test calling the handler), may be
/// retried for this long.
pub const WITHOUT_DEADLINE: Duration = Duration::from_secs(60);

/// How one client's calls are retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// The client's own retry partition: no other client shares its state.
    pub partition: &'static str,
    /// A ceiling only for the safety calls, whose retries the deadline ends first.
    pub max_attempts: u32,
    /// One attempt that hangs longer than this is abandoned, and retried if the policy allows.
    pub attempt_timeout: Duration,
    /// Retries stop this long before the invocation ends.
    pub reserve: Duration,
}

/// The summaries are built and published in the invocation's last seconds; the safety calls leave them to it.
const SAFETY_RESERVE: Duration = Duration::from_secs(5);
/// A healthy DynamoDB or KMS answers in milliseconds. One that takes longer than this is treated as down for the rest
/// of the invocation (`Breaker`).
const DEPENDENCY_ATTEMPT: Duration = Duration::from_secs(1);
/// The wave's roster calls wait for a table this slow: a wave of cleanups at once is what loads it.
const COORDINATION_ATTEMPT: Duration = Duration::from_secs(5);

impl Policy {
    /// ELB: deregistration, and every read that finds and checks registrations.
    pub const ELB: Policy = Policy::safety("spot-cleanup-elb");
    /// EC2: the quarantine, the records, the claims on tags.
    pub const EC2: Policy = Policy::safety("spot-cleanup-ec2");
    /// Auto Scaling: the fast path's attached groups, the lifecycle actions.
    pub const AUTOSCALING: Policy = Policy::safety("spot-cleanup-autoscaling");
    /// The claim and the index: each falls back without it.
    pub const DYNAMODB: Policy = Policy::dependency("spot-cleanup-dynamodb", DEPENDENCY_ATTEMPT);
    /// The wave's roster, once a cleanup is on it: the others wait for its driver's answers, and a driver that cannot
    /// read or write the roster would leave them waiting, or drive alone into the retry storm the wave prevents. Its
    /// calls are retried until the deadline, each attempt may take `COORDINATION_ATTEMPT`, and no breaker stops them.
    pub const COORDINATION: Policy = Policy {
        partition: "spot-cleanup-wave",
        max_attempts: 1_000,
        attempt_timeout: COORDINATION_ATTEMPT,
        reserve: SAFETY_RESERVE,
    };
    /// The records' signatures: a record left unsigned is reported, the quarantine goes ahead.
    pub const KMS: Policy = Policy::dependency("spot-cleanup-kms", DEPENDENCY_ATTEMPT);
    /// The summaries, at the end: a failed publish ends the invocation in error, so it is retried.
    pub const SNS: Policy = Policy {
        partition: "spot-cleanup-sns",
        max_attempts: 4,
        attempt_timeout: Duration::from_secs(3),
        reserve: Duration::from_secs(1),
    };

    const fn safety(partition: &'static str) -> Policy {
        Policy {
            partition,
            max_attempts: 1_000,
            attempt_timeout: Duration::from_secs(10),
            reserve: SAFETY_RESERVE,
        }
    }

    const fn dependency(partition: &'static str, attempt_timeout: Duration) -> Policy {
        Policy {
            partition,
            max_attempts: 2,
            attempt_timeout,
            reserve: SAFETY_RESERVE,
        }
    }

    /// Standard mode (no client rate limiter), full-jitter backoff from `INITIAL_BACKOFF` up to `MAX_BACKOFF`.
    pub fn retry_config(&self) -> RetryConfig {
        RetryConfig::standard()
            .with_max_attempts(self.max_attempts)
            .with_initial_backoff(INITIAL_BACKOFF)
            .with_max_backoff(MAX_BACKOFF)
    }

    /// A partition of the client's own, whose retry quota never runs out: the deadline is the only limit.
    pub fn partition(&self) -> RetryPartition {
        RetryPartition::custom(self.partition)
            .token_bucket(TokenBucket::unlimited())
            .build()
    }

    pub fn timeouts(&self) -> TimeoutConfig {
        TimeoutConfig::builder()
            .operation_attempt_timeout(self.attempt_timeout)
            .build()
    }

    /// The classifier that ends this client's retries at the deadline.
    pub fn classifier(&self, budget: &CallBudget) -> DeadlineClassifier {
        DeadlineClassifier {
            budget: budget.clone(),
            reserve: self.reserve,
        }
    }
}

/// The current invocation, as every client sees it: when it ends, and which one it is (so that what a breaker
/// learned in one invocation is forgotten in the next). One per process; Lambda runs one invocation at a time.
#[derive(Clone, Debug)]
pub struct CallBudget(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    end: Mutex<Instant>,
    generation: AtomicU64,
}

impl Default for CallBudget {
    fn default() -> Self {
        CallBudget(Arc::new(Shared {
            end: Mutex::new(Instant::now() + WITHOUT_DEADLINE),
            generation: AtomicU64::new(0),
        }))
    }
}

impl CallBudget {
    /// A new invocation begins, ending `left` from now (None: it has no deadline, `WITHOUT_DEADLINE`).
    pub fn begin(&self, left: Option<Duration>) {
        let end = Instant::now() + left.unwrap_or(WITHOUT_DEADLINE);
        *self.0.end.lock().unwrap_or_else(|p| p.into_inner()) = end;
        self.0.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Which invocation this is.
    pub fn generation(&self) -> u64 {
        self.0.generation.load(Ordering::SeqCst)
    }

    /// Whether a wait of `wait` from now still ends before the invocation does.
    pub fn allows(&self, wait: Duration) -> bool {
        let end = *self.0.end.lock().unwrap_or_else(|p| p.into_inner());
        Instant::now() + wait < end
    }
}

/// Forbids a retry that the invocation's deadline does not leave room for: the longest backoff, and the client's
/// reserve. It runs after the SDK's own classifiers, and only ever takes a retry away.
#[derive(Debug)]
pub struct DeadlineClassifier {
    budget: CallBudget,
    reserve: Duration,
}

impl ClassifyRetry for DeadlineClassifier {
    fn classify_retry(&self, _ctx: &InterceptorContext) -> RetryAction {
        RetryAction::NoActionIndicated
    }

    fn classify_retry_v2(&self, _ctx: &InterceptorContext, previous: &RetryAction) -> RetryAction {
        if previous.should_retry() && !self.budget.allows(self.reserve + MAX_BACKOFF) {
            RetryAction::RetryForbidden
        } else {
            RetryAction::NoActionIndicated
        }
    }

    fn name(&self) -> &'static str {
        "spot-cleanup deadline"
    }

    fn priority(&self) -> RetryClassifierPriority {
        RetryClassifierPriority::run_after(RetryClassifierPriority::transient_error_classifier())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_is_forbidden_once_the_deadline_leaves_no_room_for_it() {
        let budget = CallBudget::default();
        let classifier = Policy::ELB.classifier(&budget);
        let ctx = InterceptorContext::new(aws_smithy_runtime_api::client::interceptors::context::Input::erase(()));
        let throttled = RetryAction::throttling_error();
        budget.begin(Some(Duration::from_secs(30)));
        assert_eq!(
            classifier.classify_retry_v2(&ctx, &throttled),
            RetryAction::NoActionIndicated
        );
        // Five seconds of reserve and one longest backoff no longer fit.
        budget.begin(Some(Duration::from_secs(5)));
        assert_eq!(
            classifier.classify_retry_v2(&ctx, &throttled),
            RetryAction::RetryForbidden
        );
        // It never makes a retry of what was not to be retried.
        assert_eq!(
            classifier.classify_retry_v2(&ctx, &RetryAction::NoActionIndicated),
            RetryAction::NoActionIndicated
        );
    }

    #[test]
    fn every_invocation_is_a_new_generation() {
        let budget = CallBudget::default();
        let first = budget.generation();
        budget.begin(None);
        assert_eq!(budget.generation(), first + 1);
        assert!(budget.allows(WITHOUT_DEADLINE - Duration::from_secs(1)));
    }
}
