//! Every attempt of a paced action waits for a token of its class's bucket before it is sent, retries included.
//!
//! AWS throttles by action class, per account and region, so the function keeps a bucket of its own per class
//! (`Class`), sized as AWS sizes the class: a throttle of one class never slows another, and nothing one invocation
//! learns slows the next (the buckets only count our own sends). An interceptor tags each attempt's request with the
//! bucket of its operation; the HTTP connector, which sends every attempt, waits for a token first.
//!
//! ELB Describe* calls take the token of their first attempt where they are made (the sweep, the checks and the
//! lifecycle's drain wait pace themselves with the place's bucket, `Clients::elb_describe`), so the connector paces
//! only their retries, from the same bucket.

use std::sync::Arc;

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextMut;
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, Metadata};
use aws_smithy_runtime_api::client::retries::RequestAttempts;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

use super::pace::Pace;

/// An action class and its bucket: a burst, then a steady rate per second.
#[derive(Clone, Copy, Debug)]
pub struct Class {
    pub name: &'static str,
    /// Which operations draw on it.
    pub operations: Operations,
    pub burst: u32,
    pub per_second: f64,
    /// The first attempt this class paces: 1 for every attempt, 2 when the caller paced the first one.
    pub from_attempt: u32,
}

/// The operations a class covers.
#[derive(Clone, Copy, Debug)]
pub enum Operations {
    /// Every operation whose name starts so (`Describe`).
    Prefix(&'static str),
    Named(&'static [&'static str]),
}

impl Operations {
    fn cover(&self, operation: &str) -> bool {
        match self {
            Operations::Prefix(prefix) => operation.starts_with(prefix),
            Operations::Named(names) => names.contains(&operation),
        }
    }
}

/// ELB's Describe* calls share one bucket per account and region: 40 burst, then 10 per second (`ELB_DESCRIBE_RATE`
/// takes a share of it).
pub fn elb_describe(rate: u32) -> Class {
    Class {
        name: "elb-describe",
        operations: Operations::Prefix("Describe"),
        burst: rate * 4,
        per_second: f64::from(rate),
        from_attempt: 2,
    }
}

/// ELB's RegisterTargets and DeregisterTargets, which a batch sends once per target group.
pub const ELB_REGISTRATION: Class = Class {
    name: "elb-registration",
    operations: Operations::Named(&["DeregisterTargets", "RegisterTargets"]),
    burst: 40,
    per_second: 10.0,
    from_attempt: 1,
};

/// EC2 evaluates each mutating action on a bucket of its own: 50 burst, then 5 per second.
const fn ec2_mutating(name: &'static str, operations: &'static [&'static str]) -> Class {
    Class {
        name,
        operations: Operations::Named(operations),
        burst: 50,
        per_second: 5.0,
        from_attempt: 1,
    }
}

pub const EC2_MODIFY_NETWORK_INTERFACE: Class =
    ec2_mutating("ec2-modify-network-interface", &["ModifyNetworkInterfaceAttribute"]);
/// The records and the tag marker.
pub const EC2_CREATE_TAGS: Class = ec2_mutating("ec2-create-tags", &["CreateTags"]);
pub const EC2_DELETE_TAGS: Class = ec2_mutating("ec2-delete-tags", &["DeleteTags"]);

/// The buckets of one client (one service, one account and region).
#[derive(Clone, Debug)]
pub struct Pacing(Arc<Vec<(Class, Pace)>>);

impl Pacing {
    /// A full bucket per class.
    pub fn new(classes: &[Class]) -> Self {
        Pacing(Arc::new(
            classes.iter().map(|c| (*c, Pace::new(c.burst, c.per_second))).collect(),
        ))
    }

    /// The bucket an operation's attempt draws on (attempts count from 1); None for one that is not paced.
    pub fn for_attempt(&self, operation: &str, attempt: u32) -> Option<&Pace> {
        self.0
            .iter()
            .find(|(class, _)| class.operations.cover(operation))
            .filter(|(class, _)| attempt >= class.from_attempt)
            .map(|(_, pace)| pace)
    }

    /// The bucket of a class, by name.
    pub fn bucket(&self, name: &str) -> Option<&Pace> {
        self.0
            .iter()
            .find(|(class, _)| class.name == name)
            .map(|(_, pace)| pace)
    }

    /// The interceptor that tags each attempt with its bucket.
    pub fn interceptor(&self) -> Tagger {
        Tagger(self.clone())
    }
}

/// The bucket an attempt must take a token from, carried on its request.
#[derive(Clone, Debug)]
struct Ticket(Pace);

#[derive(Debug)]
pub struct Tagger(Pacing);

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
        let attempt = cfg.load::<RequestAttempts>().map_or(1, |a| a.attempts());
        let pace = cfg
            .load::<Metadata>()
            .and_then(|metadata| self.0.for_attempt(metadata.name(), attempt));
        if let Some(pace) = pace {
            context.request_mut().add_extension(Ticket(pace.clone()));
        }
        Ok(())
    }
}

/// The HTTP client every attempt goes through: it waits for the attempt's token, then sends.
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
        let pace = request.extension::<Ticket>().map(|t| t.0.clone());
        let inner = self.0.clone();
        HttpConnectorFuture::new(async move {
            if let Some(pace) = pace {
                pace.acquire().await;
            }
            inner.call(request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_operation_draws_on_its_own_class_only() {
        let elb = Pacing::new(&[elb_describe(10), ELB_REGISTRATION]);
        // A Describe's first attempt was paced where it was made; its retries are paced here, from the same bucket.
        assert!(elb.for_attempt("DescribeTargetHealth", 1).is_none());
        let describe = elb.for_attempt("DescribeTargetHealth", 2).unwrap() as *const Pace;
        assert_eq!(elb.bucket("elb-describe").unwrap() as *const Pace, describe);
        assert_eq!(
            elb.for_attempt("DescribeTargetGroups", 3).unwrap() as *const Pace,
            describe
        );
        let deregister = elb.for_attempt("DeregisterTargets", 1).unwrap() as *const Pace;
        assert_ne!(describe, deregister, "a throttled read never holds up a deregistration");
        assert_eq!(
            elb.for_attempt("RegisterTargets", 2).unwrap() as *const Pace,
            deregister
        );
        assert!(elb.for_attempt("AddTags", 1).is_none());

        let ec2 = Pacing::new(&[EC2_MODIFY_NETWORK_INTERFACE, EC2_CREATE_TAGS, EC2_DELETE_TAGS]);
        let modify = ec2.for_attempt("ModifyNetworkInterfaceAttribute", 1).unwrap() as *const Pace;
        assert_ne!(modify, ec2.for_attempt("CreateTags", 1).unwrap() as *const Pace);
        assert!(ec2.for_attempt("DescribeInstances", 1).is_none());
    }
}
