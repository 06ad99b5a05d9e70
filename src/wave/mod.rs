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
//! answer, and take the wheel over if the driver stops renewing its lease. A lone interruption drives its own wave of
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
use drive::{Own, Wheel, drive, lease_until};
pub use roster::Roster;
use state::{Member, State};

use crate::deadline::Deadline;
use crate::input::InstanceId;
use crate::instance::Instance;

/// How often a member waiting for another cleanup's driver looks for its answer.
const LOOK_EVERY: Duration = Duration::from_millis(500);

/// One place's wave: shared through the table when there is one.
pub struct Wave {
    roster: Option<Roster>,
    /// How long a driver is taken for alive without renewing its lease (`CLAIM_LEASE_SECONDS`).
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
        let driving = async move {
            let mut own = own;
            match roster {
                Some(roster) => self.together(tools, roster, members, &mut own, deadline).await,
                None => alone(tools, members, &mut own, dry_run, deadline).await,
            }
        };
        let answers = async move { from.await.unwrap_or_default() };
        (driving, answers)
    }

    /// Post the members, then drive or wait for the driver, until they are answered.
    async fn together(
        &self,
        tools: &Tools<'_>,
        roster: &Roster,
        members: Vec<Member>,
        own: &mut Own,
        deadline: Deadline,
    ) {
        if let Err(error) = roster.post(&members).await {
            tracing::warn!(%error, "wave: the roster could not be used, driving alone");
            return alone(tools, members, own, false, deadline).await;
        }
        loop {
            let token = crate::table::unique_token();
            match roster.take(&token, lease_until(self.lease, deadline)).await {
                Ok(true) => {
                    tracing::info!("wave: driving");
                    let mut state = State::new(false);
                    let now = tokio::time::Instant::now();
                    members.iter().for_each(|m| state.join(m.clone(), now));
                    let wheel = Wheel {
                        roster,
                        token,
                        lease: self.lease,
                    };
                    drive(tools, &mut state, own, Some(&wheel), deadline).await;
                    return;
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(%error, "wave: the wheel could not be taken, driving alone");
                    let waiting: Vec<Member> = members.into_iter().filter(|m| !own.is_answered_for(m)).collect();
                    return alone(tools, waiting, own, false, deadline).await;
                }
            }
            // Somebody drives: wait for the answers, and take the wheel over if the driver stops.
            loop {
                match roster.look(&own.waiting()).await {
                    Ok(look) => {
                        for (id, deregistration) in look.answers {
                            own.take(id, deregistration.into_shared());
                        }
                        if own.is_answered() {
                            return;
                        }
                        if !look.driven {
                            break;
                        }
                    }
                    // Not driving alone: twenty cleanups each on its own are the storm the wave exists to prevent.
                    Err(error) => tracing::warn!(%error, "wave: the answers could not be read"),
                }
                if !deadline.within(LOOK_EVERY) {
                    for (id, _) in own.waiting() {
                        own.take(id, Deregistration::unanswered());
                    }
                    return;
                }
                tokio::time::sleep(LOOK_EVERY).await;
            }
        }
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
