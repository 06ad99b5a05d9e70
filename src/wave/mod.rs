//! The wave: every cleanup of a place running at the same time, and the one path by which their registrations leave
//! their target groups.
//!
//! Spot takes capacity back by pool, so interruptions come in waves, each delivered on its own (a node agent per node,
//! one EventBridge event per instance) to its own execution environment. In the seed's topology every node is in
//! every target group, so N nodes in M groups are N × M registrations; left to each cleanup, they cost N × M
//! DeregisterTargets against an account budget of 4 a second, and a retry storm. Driven together, they cost about one
//! call per group.
//!
//! One cleanup drives (`drive`): it asks the fast locators about every member, sweeps every group that could hold one
//! of them, sends one DeregisterTargets per group carrying every member's registrations queued there, checks each
//! group once after its calls, and reads each touched group's deregistration delay, all under the account's ELB
//! budget (`aws::paced`). The others post themselves on the roster in the function's table (`roster`), wait for their
//! answer, and take the driver's lease over if the driver stops renewing it. A lone interruption drives its own wave of
//! one; without the table, or in a dry run, each cleanup drives its own.

pub mod deregistration;
mod drive;
mod ledger;
mod roster;
mod state;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::oneshot;

pub use deregistration::{Deregistration, Fate, Target};
pub use drive::Tools;
use drive::{DriverLease, Own, drive};
pub use roster::Roster;
use state::{Member, State};

use crate::deadline::Deadline;
use crate::input::InstanceId;
use crate::instance::Instance;
use crate::lease::Lease;

/// How often a member waiting for another cleanup's driver looks for its answer.
const LOOK_EVERY: Duration = Duration::from_millis(500);
/// A table that has not taken a cleanup's members in, and answered its first try for the driver's lease, within this is taken
/// for down: the cleanup drives alone, as without a table. A table loaded by a wave answers in a few seconds at worst.
const JOIN_WITHIN: Duration = Duration::from_secs(10);

/// One place's wave: shared through the table when there is one.
pub struct Wave {
    roster: Option<Roster>,
    /// The length of the driver's lease (`CLAIM_LEASE_SECONDS`).
    lease: Duration,
}

impl Wave {
    pub fn new(roster: Option<Roster>, lease: Duration) -> Self {
        Wave { roster, lease }
    }

    /// Serve `instances`, whose notices came before now. Returns two futures, both to be polled to their end, side by
    /// side: the first drives (or waits for whoever does), and goes on serving the other members after this cleanup's
    /// are answered; the second gives this cleanup's answers as soon as they are all in.
    pub fn serve<'a>(
        &'a self,
        tools: &'a Tools<'a>,
        instances: Vec<Instance>,
        dry_run: bool,
        deadline: Deadline,
    ) -> (
        impl Future<Output = ()> + 'a,
        impl Future<Output = HashMap<InstanceId, Deregistration>> + 'a,
    ) {
        let since = Utc::now();
        let members: Vec<Member> = instances
            .into_iter()
            .map(|instance| Member {
                token: crate::table::unique_token(),
                instance,
                since,
            })
            .collect();
        let (to, from) = oneshot::channel();
        let own = Own::new(&members, to);
        let roster = self.roster.as_ref().filter(|_| !dry_run);
        // Driving is the largest future of a cleanup: it is kept on the heap, so that an invocation's future stays
        // small wherever it is polled (two handlers joined side by side on a test thread's stack overflowed it).
        let driving = async move {
            let mut own = own;
            match roster {
                Some(roster) => Box::pin(self.together(tools, roster, members, &mut own, deadline)).await,
                None => Box::pin(alone(tools, members, &mut own, dry_run, deadline)).await,
            }
        };
        let answers = async move { from.await.unwrap_or_default() };
        (driving, answers)
    }

    /// Post the members, then drive or wait for the driver, until they are answered.
    ///
    /// Joining (the post and the first try for the driver's lease) is where a table that cannot be used is found: already known
    /// down in this invocation, answering with an error, or not within `JOIN_WITHIN`. The cleanup then drives alone, as
    /// it would without a table. Once on the roster it relies on it: a failed look or try for the lease is tried again
    /// until the deadline, never answered by driving alone (twenty cleanups each on its own are the retry storm the
    /// wave exists to prevent).
    async fn together(
        &self,
        tools: &Tools<'_>,
        roster: &Roster,
        members: Vec<Member>,
        own: &mut Own,
        deadline: Deadline,
    ) {
        if let Some(why) = roster.down_because() {
            tracing::warn!(reason = why.as_str(), "wave: the table is down, driving alone");
            return alone(tools, members, own, false, deadline).await;
        }
        let lease = Lease {
            length: self.lease,
            deadline,
        };
        let mut token = crate::table::unique_token();
        let joining = async {
            roster.post(&members).await?;
            roster.take(&token, lease.until()).await
        };
        let mut taken = match within(JOIN_WITHIN.min(deadline.left().unwrap_or(JOIN_WITHIN)), joining).await {
            Some(Ok(taken)) => taken,
            Some(Err(error)) => {
                tracing::warn!(%error, "wave: the roster could not be used, driving alone");
                return alone(tools, members, own, false, deadline).await;
            }
            None => {
                tracing::warn!(within = ?JOIN_WITHIN, "wave: the table did not take the members in, driving alone");
                return alone(tools, members, own, false, deadline).await;
            }
        };
        loop {
            if taken {
                tracing::info!("wave: driving");
                let mut state = State::new(false);
                let now = tokio::time::Instant::now();
                members
                    .iter()
                    .filter(|m| !own.is_answered_for(m))
                    .for_each(|m| state.join(m.clone(), now));
                let held = DriverLease { roster, token, lease };
                drive(tools, &mut state, own, Some(&held), deadline).await;
                return;
            }
            // Somebody drives: wait for the answers, and take the driver's lease over if the driver stops.
            if !self.wait(roster, own, deadline).await {
                return;
            }
            token = crate::table::unique_token();
            taken = match within_deadline(deadline, roster.take(&token, lease.until())).await {
                Some(Ok(taken)) => taken,
                Some(Err(error)) => {
                    tracing::warn!(%error, "wave: the driver's lease could not be taken; looking again");
                    false
                }
                None => false,
            };
        }
    }

    /// Look for the answers every `LOOK_EVERY` until they are all in (false), or until nobody drives (true: the
    /// driver's lease is free to take). At the deadline, whoever is still waiting is answered as unanswered (false).
    async fn wait(&self, roster: &Roster, own: &mut Own, deadline: Deadline) -> bool {
        loop {
            match within_deadline(deadline, roster.look(&own.waiting())).await {
                Some(Ok(look)) => {
                    for (id, deregistration) in look.answers {
                        own.take(id, deregistration.into_shared());
                    }
                    if own.is_answered() {
                        return false;
                    }
                    if !look.driven {
                        return true;
                    }
                }
                // The roster is looked at again: a table slow or failing for a while does not end the wait.
                Some(Err(error)) => tracing::warn!(%error, "wave: the answers could not be read"),
                None => {}
            }
            if !deadline.within(LOOK_EVERY) {
                for (id, _) in own.waiting() {
                    own.take(id, Deregistration::unanswered());
                }
                return false;
            }
            tokio::time::sleep(LOOK_EVERY).await;
        }
    }
}

/// `work`'s output, unless `limit` passes first.
async fn within<F: Future>(limit: Duration, work: F) -> Option<F::Output> {
    tokio::time::timeout(limit, work).await.ok()
}

/// `work`'s output, unless the deadline's stop comes first: a roster call waiting on a slow table never holds the
/// invocation past it.
async fn within_deadline<F: Future>(deadline: Deadline, work: F) -> Option<F::Output> {
    match deadline.left() {
        Some(left) => within(left, work).await,
        None => Some(work.await),
    }
}

/// This cleanup's own wave: its members, nobody else's.
async fn alone(tools: &Tools<'_>, members: Vec<Member>, own: &mut Own, dry_run: bool, deadline: Deadline) {
    let mut state = State::new(dry_run);
    let now = tokio::time::Instant::now();
    for member in members {
        state.join(member, now);
    }
    drive(tools, &mut state, own, None, deadline).await;
}
