//! A dependency that failed once is not waited on again in the same invocation.
//!
//! DynamoDB and KMS serve the cleanup (the claim, the index, the records' signatures), but
//! each has a fallback, and none of them may hold up the deregistration and the quarantine. The breaker opens when an
//! attempt times out (the service is slow: waiting for another attempt would cost as much again), or when a call ends
//! for want of the service after its few retries (the connection failed, or it answered 5xx). Then every later attempt
//! to that service in this invocation, a retry included, fails at once, with a message that names the first failure,
//! and its caller takes its fallback. The next invocation (`CallBudget::begin`) closes it again.

use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

use super::retry::CallBudget;

#[derive(Clone, Debug)]
pub struct Breaker {
    service: &'static str,
    budget: CallBudget,
    /// The invocation in which it opened, and why.
    open: Arc<Mutex<Option<(u64, String)>>>,
}

/// Why a call failed for want of the service, if it did.
fn unavailable(timed_out: bool, connector: bool, status: Option<u16>) -> Option<String> {
    match (timed_out, connector, status) {
        (true, _, _) => Some("an attempt timed out".into()),
        (_, true, _) => Some("the connection failed".into()),
        (_, _, Some(status)) if status >= 500 => Some(format!("it answered HTTP {status}")),
        _ => None,
    }
}

impl Breaker {
    pub fn new(service: &'static str, budget: &CallBudget) -> Self {
        Breaker {
            service,
            budget: budget.clone(),
            open: Arc::default(),
        }
    }

    /// Why calls to the service fail at once in this invocation; None while it is closed.
    pub fn opened_because(&self) -> Option<String> {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.as_ref()
            .filter(|(generation, _)| *generation == self.budget.generation())
            .map(|(_, why)| why.clone())
    }

    fn trip(&self, why: String) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let generation = self.budget.generation();
        if open.as_ref().is_none_or(|(g, _)| *g != generation) {
            tracing::warn!(
                service = self.service,
                reason = why.as_str(),
                "treating the service as unavailable for the rest of this invocation"
            );
            *open = Some((generation, why));
        }
    }
}

impl Intercept for Breaker {
    fn name(&self) -> &'static str {
        "spot-cleanup breaker"
    }

    fn read_before_attempt(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        match self.opened_because() {
            Some(why) => Err(format!(
                "{} is treated as unavailable for the rest of this invocation: an earlier call failed ({why})",
                self.service
            )
            .into()),
            None => Ok(()),
        }
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(Err(error)) = context.output_or_error()
            && error.is_timeout_error()
        {
            self.trip("an attempt timed out".into());
        }
        Ok(())
    }

    fn read_after_execution(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(Err(error)) = context.output_or_error()
            && !error.is_interceptor_error()
        {
            let status = context.response().map(|r| r.status().as_u16());
            if let Some(why) = unavailable(error.is_timeout_error(), error.is_connector_error(), status) {
                self.trip(why);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_opens_for_a_missing_service_only_and_closes_with_the_next_invocation() {
        assert_eq!(
            unavailable(false, false, Some(400)),
            None,
            "a client error is an answer"
        );
        assert_eq!(unavailable(false, false, None), None);
        assert!(unavailable(true, false, None).is_some());
        assert!(unavailable(false, true, None).is_some());
        assert_eq!(
            unavailable(false, false, Some(503)).as_deref(),
            Some("it answered HTTP 503")
        );

        let budget = CallBudget::default();
        budget.begin(None);
        let breaker = Breaker::new("DynamoDB", &budget);
        assert_eq!(breaker.opened_because(), None);
        breaker.trip("an attempt timed out".into());
        assert_eq!(breaker.opened_because().as_deref(), Some("an attempt timed out"));
        budget.begin(None);
        assert_eq!(
            breaker.opened_because(),
            None,
            "a new invocation tries the service again"
        );
    }
}
