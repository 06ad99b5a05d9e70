//! The wave's reads: which one to make next (the order is in the parent's doc), and whether any is due.

use tokio::time::Instant;

use super::{Delay, Fast, Group, Job, Listing, SETTLE, Serving, State, sent_ok};
use crate::wave::ledger::Sent;

impl State {
    /// The next read to make, now marked as under way; None when nothing is to be read yet.
    pub fn next_job(&mut self, now: Instant) -> Option<Job> {
        let job = self.select_job(now)?;
        match &job {
            Job::List => self.listing = Listing::Asked,
            Job::Read(info) => {
                if let Some(group) = self.groups.get_mut(&info.arn) {
                    group.reading = true;
                }
            }
            Job::Delay(arn) => {
                if let Some(group) = self.groups.get_mut(arn) {
                    group.delay = Delay::Reading;
                }
            }
        }
        Some(job)
    }

    /// Whether a read is waiting to be made; and if only the settle holds the checks back, when it ends.
    pub fn has_job(&self, now: Instant) -> bool {
        self.select_job(now).is_some()
    }

    /// When the checks may start, if they wait for the settle.
    pub fn settled_at(&self) -> Option<Instant> {
        self.last_answer.map(|at| at + SETTLE)
    }

    fn select_job(&self, now: Instant) -> Option<Job> {
        let open: Vec<&Serving> = self.members.values().filter(|s| !s.done).collect();
        if open.is_empty() {
            return None;
        }
        // What the fast locators know leaves before the sweep reads anything: their answer (milliseconds) is waited
        // for, so a group they name is read once, after its call.
        let located = open.iter().all(|s| s.fast == Fast::Done);
        if matches!(self.listing, Listing::NotYet) && located {
            return Some(Job::List);
        }
        let stale_for = |group: &Group| {
            group.listed
                && open.iter().any(|s| {
                    s.wanted.covers(&group.info) && group.read.as_ref().is_none_or(|r| r.read_at < s.member.since)
                })
        };
        let free = |g: &&Group| !g.reading && !g.sending && g.queue.is_empty();
        // Never read first, then read too early for someone.
        let finding = located
            .then(|| {
                self.groups
                    .values()
                    .filter(free)
                    .filter(|g| stale_for(g))
                    .min_by_key(|g| g.read.is_some())
            })
            .flatten();
        if let Some(group) = finding {
            return Some(Job::Read(group.info.clone()));
        }
        // A refused call holds up everyone queued with it: which of its registrations are really there decides what
        // is sent again, at once.
        let refused = self.groups.values().filter(free).find(|g| self.awaits_retry(g));
        if let Some(group) = refused {
            return Some(Job::Read(group.info.clone()));
        }
        let quiet = !self.groups.values().any(|g| g.sending || !g.queue.is_empty())
            && located
            && self.settled_at().is_none_or(|at| now >= at);
        if quiet {
            let unchecked = self.groups.values().filter(free).find(|g| self.awaits_check(g));
            if let Some(group) = unchecked {
                return Some(Job::Read(group.info.clone()));
            }
        }
        if !self.dry_run {
            let delay = self
                .groups
                .iter()
                .find(|(arn, g)| g.delay == Delay::Unknown && self.ledger.in_group(arn).any(|(_, e)| sent_ok(e)));
            if let Some((arn, _)) = delay {
                return Some(Job::Delay(arn.clone()));
            }
        }
        None
    }

    /// A call went to the group since it was last read, and a registration it carried has no verdict yet.
    fn awaits_check(&self, group: &Group) -> bool {
        let read_at = group.read.as_ref().map(|r| r.read_at);
        self.ledger.in_group(&group.info.arn).any(|(_, e)| {
            e.verdict.is_none()
                && matches!(&e.sent, Some(Sent { result: Ok(()), at }) if read_at.is_none_or(|r| r < *at))
        })
    }

    /// A call to the group was refused since it was last read, and may be sent again.
    fn awaits_retry(&self, group: &Group) -> bool {
        let read_at = group.read.as_ref().map(|r| r.read_at);
        self.ledger.in_group(&group.info.arn).any(|(_, e)| {
            !e.is_final() && matches!(&e.sent, Some(Sent { result: Err(_), at }) if read_at.is_none_or(|r| r < *at))
        })
    }
}
