//! What the handler asks of the app besides a cleanup: the invocation's start, the checks that need no AWS call, the
//! one alert of an invocation's refusals, a restore (or one sent to the wrong entry point), and the registration
//! index's two workflows wired to this function's own table, clients and pace.

use super::App;
use crate::deadline::Deadline;
use crate::index::{self, IndexError, RefreshReport, UpdateReport};
use crate::input::{IndexUpdate, Invocation, Request, RestoreRequest};
use crate::restore;
use crate::summary::RestoreSummary;
use crate::trust::scope::Home;
use crate::trust::{self, MisdirectedRestore, Refusal};

impl App {
    /// Start an invocation: every client retries until its end, and forgets what a breaker learned in the last one.
    pub(crate) fn begin(&self, deadline: &Deadline) {
        self.home_place.clients.budget.begin(deadline.end_left());
    }

    /// Set aside the requests whose lifecycle hook is another tool's (`LIFECYCLE_HOOK_NAMES`).
    pub(crate) fn set_aside_other_hooks(&self, invocation: &mut Invocation) {
        invocation.ignore_requests(|request| self.config.trust.scope.not_our_hook(&request.trigger));
    }

    /// Where this function runs: the region and account its ARN names (the region falls back to `AWS_REGION`).
    pub(crate) fn home_of(&self, function_arn: &str) -> Home {
        Home::from_function_arn(function_arn, &self.config.trust.scope)
    }

    /// What the agent entry point refuses of a payload that is not a node agent's own request: one refusal per
    /// instance it names (`trust::at_agent_entry_point`).
    pub(crate) fn refused_at_agent_entry_point(&self, invocation: &Invocation) -> Vec<Refusal> {
        trust::at_agent_entry_point(invocation)
    }

    /// The undo of a cleanup, in the home place; a refusal is published before it is returned.
    pub(crate) async fn restore(&self, home: &Home, request: &RestoreRequest) -> Result<RestoreSummary, Refusal> {
        restore::run(&self.restore_context(), home, request).await
    }

    /// The trust checks that need no AWS call. A refusal is returned for the invocation's one alert
    /// (`publish_refusals`).
    pub(crate) fn precheck(&self, home: &Home, request: &Request) -> Result<(), Refusal> {
        self.config.trust.precheck(home, request)
    }

    /// A restore asked of the cleanup entry point: ignored (a `running` event, for this reason) or refused. Nothing is
    /// changed.
    pub(crate) fn restore_not_here(&self, request: &RestoreRequest) -> Result<&'static str, Refusal> {
        match trust::restore_at_cleanup_entry_point(request) {
            MisdirectedRestore::Dropped(reason) => Ok(reason),
            MisdirectedRestore::Refused(refusal) => Err(refusal),
        }
    }

    /// Every refusal of one invocation, published as one alert: a batch of refused records, or a hostile payload
    /// naming many instances, costs one SNS message, not one per instance.
    pub(crate) async fn publish_refusals(&self, refusals: &[Refusal]) {
        if !refusals.is_empty() {
            self.publisher.refusals(refusals).await;
        }
    }

    /// The scheduled refresh of the registration index, over the home place at the refresh's own pace.
    pub(crate) async fn refresh_index(
        &self,
        event_id: Option<String>,
        deadline: Deadline,
    ) -> Result<RefreshReport, IndexError> {
        let table = self.index_table("a Scheduled Event (registration index refresh)")?;
        let clients = &self.home_place.clients;
        let mut report = index::refresh(
            &clients.elb,
            &clients.dynamodb,
            table,
            &self.home_place.refresh_pace,
            deadline,
        )
        .await;
        report.event_id = event_id;
        Ok(report)
    }

    /// One CloudTrail RegisterTargets/DeregisterTargets event applied to the registration index.
    pub(crate) async fn update_index(&self, update: IndexUpdate) -> Result<UpdateReport, IndexError> {
        let table = self.index_table("a RegisterTargets/DeregisterTargets event (registration index update)")?;
        let clients = &self.home_place.clients;
        match update {
            IndexUpdate::Apply(change) => Ok(index::apply(&clients.elb, &clients.dynamodb, table, &change).await?),
            IndexUpdate::FailedCall {
                call,
                error_code,
                event_id,
            } => Ok(UpdateReport::failed_call(event_id, call, &error_code)),
        }
    }

    /// The index's table, or the refusal of an index event when there is none: nothing is touched.
    fn index_table(&self, what: &'static str) -> Result<&str, IndexError> {
        self.home_place.table.as_deref().ok_or(IndexError::NotConfigured(what))
    }
}
