//! The wave's answers: which members are done, and what became of each one's registrations.

use tokio::time::Instant;

use super::{Delay, Fast, Group, Listing, Member, OUT_OF_TIME, Serving, State, ms_since, sent_ok};
use crate::input::InstanceId;
use crate::locate::sweep::read::GroupAnswer;
use crate::wave::deregistration::{Deregistration, Fate, Target};
use crate::wave::ledger::{Line, Sent};

impl State {
    /// Members whose work is done, now or (`out_of_time`) because the deadline came: each with its token and what
    /// became of its registrations. Each member is answered once.
    pub fn complete(&mut self, now: Instant, out_of_time: bool) -> Vec<(Member, Deregistration)> {
        let ready: Vec<InstanceId> = self
            .members
            .iter()
            .filter(|(_, s)| !s.done && (out_of_time || self.is_complete(s)))
            .map(|(id, _)| id.clone())
            .collect();
        ready
            .into_iter()
            .map(|id| {
                let deregistration = self.deregistration(&self.members[&id], now);
                let serving = self.members.get_mut(&id).expect("listed above");
                serving.done = true;
                (serving.member.clone(), deregistration)
            })
            .collect()
    }

    /// Every member answered.
    pub fn all_done(&self) -> bool {
        self.members.values().all(|s| s.done)
    }

    fn is_complete(&self, serving: &Serving) -> bool {
        if serving.fast != Fast::Done {
            return false;
        }
        let located = match self.listing {
            Listing::NotYet | Listing::Asked => false,
            Listing::Failed(_) => true,
            Listing::Listed(_) => self
                .candidates_of(serving)
                .all(|g| !g.reading && g.read.as_ref().is_some_and(|r| r.read_at >= serving.member.since)),
        };
        if !located {
            return false;
        }
        let id = &serving.member.instance.id;
        if self.dry_run {
            return true;
        }
        self.ledger.of(id).all(|entry| {
            let delay_known = !sent_ok(entry)
                || self
                    .groups
                    .get(&entry.registration.target_group_arn)
                    .is_none_or(|g| matches!(g.delay, Delay::Known(_)));
            entry.is_final() && delay_known
        })
    }

    fn candidates_of<'a>(&'a self, serving: &'a Serving) -> impl Iterator<Item = &'a Group> + 'a {
        self.groups
            .values()
            .filter(move |g| g.listed && serving.wanted.covers(&g.info))
    }

    fn deregistration(&self, serving: &Serving, now: Instant) -> Deregistration {
        let id = &serving.member.instance.id;
        let targets = self
            .ledger
            .of(id)
            .map(|entry| Target {
                registration: entry.registration.clone(),
                found_by: entry.found_by.to_owned(),
                fate: self.fate(entry),
                delay_seconds: self
                    .groups
                    .get(&entry.registration.target_group_arn)
                    .and_then(|g| match g.delay {
                        Delay::Known(seconds) => seconds,
                        _ => None,
                    }),
            })
            .collect();
        let mut unchecked = serving.unchecked.clone();
        let mut checked = 0;
        let mut locate_errors = Vec::new();
        match &self.listing {
            Listing::Failed(error) => locate_errors.push(error.clone()),
            Listing::NotYet | Listing::Asked => locate_errors.push(format!("target groups not listed: {OUT_OF_TIME}")),
            Listing::Listed(_) => {
                for group in self.candidates_of(serving) {
                    let fresh = group.read.as_ref().filter(|r| r.read_at >= serving.member.since);
                    match fresh.map(|r| &r.answer) {
                        Some(GroupAnswer::Targets(_) | GroupAnswer::Gone) => checked += 1,
                        Some(GroupAnswer::Failed(error)) => {
                            checked += 1;
                            unchecked.push(group.unchecked(error));
                        }
                        None => unchecked.push(group.unchecked(OUT_OF_TIME)),
                    }
                }
            }
        }
        unchecked.sort_by(|a, b| a.target_group_arn.cmp(&b.target_group_arn));
        let mut timings = serving.timings.clone();
        timings.verify = ms_since(serving.joined, now);
        Deregistration {
            targets,
            unchecked,
            locate_errors,
            fast_path_warnings: serving.warnings.clone(),
            target_groups_checked: checked,
            swept_by: "sweep".into(),
            timings,
        }
    }

    fn fate(&self, entry: &Line) -> Fate {
        if self.dry_run {
            return Fate::Planned;
        }
        match (&entry.sent, &entry.verdict) {
            (Some(Sent { result: Err(error), .. }), _) => Fate::Refused {
                code: error.code.clone(),
                message: error.message.clone(),
            },
            (_, Some(verdict)) => Fate::Seen {
                verdict: verdict.clone(),
            },
            _ => Fate::NotVerified,
        }
    }
}
