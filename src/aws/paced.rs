//! Every attempt of a metered AWS call waits for its tokens before it is sent, retries included, so that the function
//! never sends faster than AWS answers.
//!
//! ELB meters every call twice, per account and region (ELB user guide, "Request throttling for the ELB API"): on one
//! account-level bucket shared by every ELB action and every caller in the account (40 tokens, 10 a second), and on
//! its category's bucket: registration (RegisterTargets, DeregisterTargets: 20, 4 a second), non-mutating (Describe*:
//! 40, 10 a second) and mutating (the rest: 20, 3 a second). `ElbBudget` keeps the same buckets, and splits the
//! account bucket: a deregistration takes its token first (`Priority::Urgent`); a read takes one only while
//! `READ_RESERVE` tokens are left and no deregistration waits, and no more than its share a second
//! (`ELB_DESCRIBE_RATE`), so the rest is kept for deregistrations and for the other tools of the account.
//!
//! EC2 meters each action on a bucket of its own (EC2 API reference, "Request throttling"): ModifyNetworkInterface-
//! Attribute 100 tokens, 5 a second; CreateTags 100, 10 a second; other mutating actions (DeleteTags) 50, 5 a second.
//!
//! An interceptor tags each attempt with the client's meter and its operation; the HTTP connector, which sends every
//! attempt, takes the tokens first. The buckets count only this process's own sends: nothing one invocation learns
//! slows the next.

use std::time::Duration;

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextMut;
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, Metadata};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

use super::bucket::{Bucket, Priority};

/// A bucket's size as AWS documents it: its capacity, and the tokens it gets back each second.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Size {
    pub capacity: u32,
    pub per_second: f64,
}

impl Size {
    fn bucket(self) -> Bucket {
        Bucket::new(self.capacity, self.per_second)
    }
}

/// Every ELB call of the account and region.
pub const ELB_ACCOUNT: Size = Size {
    capacity: 40,
    per_second: 10.0,
};
/// RegisterTargets and DeregisterTargets.
pub const ELB_REGISTRATION: Size = Size {
    capacity: 20,
    per_second: 4.0,
};
/// Describe*.
pub const ELB_DESCRIBE: Size = Size {
    capacity: 40,
    per_second: 10.0,
};
/// Every other ELB action.
pub const ELB_MUTATING: Size = Size {
    capacity: 20,
    per_second: 3.0,
};
/// The account-level tokens a read leaves for the deregistrations and the account's other tools.
pub const READ_RESERVE: f64 = 10.0;

pub const EC2_MODIFY_NETWORK_INTERFACE: Size = Size {
    capacity: 100,
    per_second: 5.0,
};
pub const EC2_CREATE_TAGS: Size = Size {
    capacity: 100,
    per_second: 10.0,
};
/// EC2's other mutating actions (DeleteTags, the claims').
pub const EC2_MUTATING: Size = Size {
    capacity: 50,
    per_second: 5.0,
};

/// What an ELB call is, for its budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElbKind {
    /// RegisterTargets, DeregisterTargets: the safety work, first.
    Registration,
    /// Describe*: what can wait.
    Read,
    /// Any other action.
    Mutation,
}

impl ElbKind {
    pub fn of(operation: &str) -> Self {
        match operation {
            "RegisterTargets" | "DeregisterTargets" => ElbKind::Registration,
            read if read.starts_with("Describe") => ElbKind::Read,
            _ => ElbKind::Mutation,
        }
    }
}

/// One account and region's ELB budget, as this process spends it.
#[derive(Clone, Debug)]
pub struct ElbBudget {
    account: Bucket,
    registration: Bucket,
    describe: Bucket,
    mutating: Bucket,
    /// The reads' share of the account bucket: `ELB_DESCRIBE_RATE` a second.
    share: Bucket,
}

impl ElbBudget {
    /// AWS's buckets, full, with reads allowed `share` a second.
    pub fn new(share: u32) -> Self {
        let share = share.max(1);
        ElbBudget {
            account: ELB_ACCOUNT.bucket(),
            registration: ELB_REGISTRATION.bucket(),
            describe: ELB_DESCRIBE.bucket(),
            mutating: ELB_MUTATING.bucket(),
            share: Bucket::new(share * 4, f64::from(share)),
        }
    }

    /// No limit (tests that script every answer).
    pub fn unlimited() -> Self {
        ElbBudget {
            account: Bucket::unlimited(),
            registration: Bucket::unlimited(),
            describe: Bucket::unlimited(),
            mutating: Bucket::unlimited(),
            share: Bucket::unlimited(),
        }
    }

    /// The buckets a call of `kind` draws on, in the order it takes them.
    fn draws(&self, kind: ElbKind) -> Vec<(&Bucket, Priority)> {
        match kind {
            ElbKind::Registration => vec![
                (&self.registration, Priority::Urgent),
                (&self.account, Priority::Urgent),
            ],
            ElbKind::Read => vec![
                (&self.share, Priority::Urgent),
                (&self.describe, Priority::Urgent),
                (&self.account, Priority::Patient { reserve: READ_RESERVE }),
            ],
            ElbKind::Mutation => vec![(&self.mutating, Priority::Urgent), (&self.account, Priority::Urgent)],
        }
    }

    /// How long until a call of `kind` could go without waiting (zero: now).
    pub fn ready_in(&self, kind: ElbKind) -> Duration {
        self.draws(kind)
            .into_iter()
            .map(|(bucket, priority)| bucket.ready_in(priority))
            .max()
            .unwrap_or_default()
    }

    /// Wait for, and take, every token a call of `kind` needs.
    pub async fn take(&self, kind: ElbKind) {
        for (bucket, priority) in self.draws(kind) {
            bucket.take(priority).await;
        }
    }
}

/// EC2's per-action buckets, for the actions a cleanup sends many of.
#[derive(Clone, Debug)]
pub struct Ec2Budget {
    modify_network_interface: Bucket,
    create_tags: Bucket,
    delete_tags: Bucket,
}

impl Ec2Budget {
    pub fn new() -> Self {
        Ec2Budget {
            modify_network_interface: EC2_MODIFY_NETWORK_INTERFACE.bucket(),
            create_tags: EC2_CREATE_TAGS.bucket(),
            delete_tags: EC2_MUTATING.bucket(),
        }
    }

    fn bucket(&self, operation: &str) -> Option<&Bucket> {
        match operation {
            "ModifyNetworkInterfaceAttribute" => Some(&self.modify_network_interface),
            "CreateTags" => Some(&self.create_tags),
            "DeleteTags" => Some(&self.delete_tags),
            _ => None,
        }
    }
}

/// What a client's attempts are metered by.
#[derive(Clone, Debug)]
pub enum Meter {
    Elb(ElbBudget),
    Ec2(Ec2Budget),
}

impl Meter {
    /// Take what an attempt of `operation` needs.
    async fn take(&self, operation: &str) {
        match self {
            Meter::Elb(budget) => budget.take(ElbKind::of(operation)).await,
            Meter::Ec2(budget) => {
                if let Some(bucket) = budget.bucket(operation) {
                    bucket.take(Priority::Urgent).await;
                }
            }
        }
    }

    /// The interceptor that tags each attempt with this meter.
    pub fn interceptor(&self) -> Tagger {
        Tagger(self.clone())
    }
}

/// What an attempt must take before it is sent, carried on its request.
#[derive(Clone, Debug)]
struct Ticket {
    meter: Meter,
    operation: String,
}

#[derive(Debug)]
pub struct Tagger(Meter);

impl Intercept for Tagger {
    fn name(&self) -> &'static str {
        "spot-cleanup pacing"
    }

    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(metadata) = cfg.load::<Metadata>() {
            let ticket = Ticket {
                meter: self.0.clone(),
                operation: metadata.name().to_owned(),
            };
            context.request_mut().add_extension(ticket);
        }
        Ok(())
    }
}

/// The HTTP client every attempt goes through: it takes the attempt's tokens, then sends.
#[derive(Debug)]
pub struct PacedClient(pub SharedHttpClient);

impl HttpClient for PacedClient {
    fn http_connector(&self, settings: &HttpConnectorSettings, components: &RuntimeComponents) -> SharedHttpConnector {
        SharedHttpConnector::new(PacedConnector(self.0.http_connector(settings, components)))
    }

    fn connector_metadata(&self) -> Option<aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata> {
        self.0.connector_metadata()
    }
}

#[derive(Debug)]
struct PacedConnector(SharedHttpConnector);

impl HttpConnector for PacedConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let ticket = request.extension::<Ticket>().cloned();
        let inner = self.0.clone();
        HttpConnectorFuture::new(async move {
            if let Some(ticket) = ticket {
                ticket.meter.take(&ticket.operation).await;
            }
            inner.call(request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_operation_draws_on_its_category() {
        assert_eq!(ElbKind::of("DeregisterTargets"), ElbKind::Registration);
        assert_eq!(ElbKind::of("RegisterTargets"), ElbKind::Registration);
        assert_eq!(ElbKind::of("DescribeTargetHealth"), ElbKind::Read);
        assert_eq!(ElbKind::of("DescribeTargetGroupAttributes"), ElbKind::Read);
        assert_eq!(ElbKind::of("AddTags"), ElbKind::Mutation);
        let ec2 = Ec2Budget::new();
        assert!(
            ec2.bucket("DescribeInstances").is_none(),
            "EC2's reads are not ours to pace"
        );
        assert!(ec2.bucket("ModifyNetworkInterfaceAttribute").is_some());
    }

    /// The account bucket is shared: twenty deregistrations go at once, then four a second (their category); reads
    /// take what the deregistrations and the reserve leave, at most the share a second.
    #[tokio::test(start_paused = true)]
    async fn deregistrations_go_first_and_reads_take_their_share_of_the_rest() {
        let budget = ElbBudget::new(8);
        for _ in 0..20 {
            assert_eq!(budget.ready_in(ElbKind::Registration), Duration::ZERO);
            budget.take(ElbKind::Registration).await;
        }
        assert_eq!(budget.ready_in(ElbKind::Registration), Duration::from_millis(250));
        // Twenty of the account's forty are left: reads may take ten, leaving the reserve.
        for _ in 0..10 {
            assert_eq!(budget.ready_in(ElbKind::Read), Duration::ZERO);
            budget.take(ElbKind::Read).await;
        }
        assert!(budget.ready_in(ElbKind::Read) > Duration::ZERO);
        // Over the next ten seconds: every deregistration the category allows (4 a second), and reads in what is
        // left of the account's 10 a second, above the reserve.
        let start = tokio::time::Instant::now();
        let (reads, deregistrations) = tokio::join!(
            count_until(&budget, ElbKind::Read, start + Duration::from_secs(10)),
            count_until(&budget, ElbKind::Registration, start + Duration::from_secs(10)),
        );
        assert_eq!(
            deregistrations, 40,
            "the category's four a second, never held up by a read"
        );
        assert!(
            (55..=62).contains(&reads),
            "{reads}: the account's 100 less the 40 deregistrations"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn alone_the_reads_go_at_their_share() {
        let budget = ElbBudget::new(8);
        let start = tokio::time::Instant::now();
        let reads = count_until(&budget, ElbKind::Read, start + Duration::from_secs(10)).await;
        // Thirty at once (the account's 40 less the reserve), then the share: the 2 of its 32 left, and 8 a second.
        assert!((111..=112).contains(&reads), "{reads}");
    }

    async fn count_until(budget: &ElbBudget, kind: ElbKind, end: tokio::time::Instant) -> usize {
        let mut taken = 0;
        while tokio::time::timeout_at(end, budget.take(kind)).await.is_ok() {
            taken += 1;
        }
        taken
    }
}
