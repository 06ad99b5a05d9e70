//! The driver's state, and its decisions: who is in the wave, what is known of every target group, and which call to
//! make next. Pure: the driver (`drive`) makes the calls and hands their answers here.
//!
//! A registration, whoever found it, waits in its group's queue, and one DeregisterTargets carries every registration
//! queued in the group when the call is composed (`next_call`). Reads (`next_job`) come in this order:
//! 1. once the fast locators have answered (in milliseconds: what they know leaves first), the listing of the target
//!    groups;
//! 2. finding reads: a group that could hold a member and was not read since the
//!    member's notice. A group with a call queued or under way is read after its call, so that the one read also
//!    checks it;
//! 3. checks: a group with a call answered since its last read, once no call is queued or under way anywhere and the
//!    last answer is `SETTLE` old, so that a group is checked once for the whole wave;
//! 4. the deregistration delay of each group a call went to.
//!
//! `jobs` chooses the next read, `answer` decides who is done and what to answer them.

mod answer;
mod jobs;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::deregistration::WaveTimings;
use super::ledger::{Ledger, Line, Needs, Sent};
use crate::aws::CallError;
use crate::input::InstanceId;
use crate::instance::Instance;
use crate::locate::Located;
use crate::locate::sweep::Wanted;
use crate::locate::sweep::read::GroupRead;
use crate::registration::{RegistrationKey, TargetRegistration, UncheckedGroup};
use crate::steps::deregister::MAX_TARGETS_PER_CALL;
use crate::table::GroupInfo;

/// How long after the last DeregisterTargets answer the checks start: calls that follow each other closely are checked
/// by one read.
pub const SETTLE: Duration = Duration::from_millis(250);
/// A listing older than this when a member joins is listed again: a group created since could hold it.
const RELIST_AFTER: chrono::TimeDelta = chrono::TimeDelta::seconds(30);
/// Why a group was not read for a member when the deadline came.
pub const OUT_OF_TIME: &str = "not checked: out of time before the deadline";

/// One instance the wave serves.
#[derive(Clone, Debug)]
pub struct Member {
    /// Whose request this is: the cleanup that joined it, and only it, takes the answer.
    pub token: String,
    pub instance: Instance,
    /// When its notice came: a group read before then may not show what it must leave.
    pub since: DateTime<Utc>,
}

#[derive(Debug)]
struct Serving {
    member: Member,
    wanted: Wanted,
    joined: Instant,
    fast: Fast,
    warnings: Vec<String>,
    unchecked: Vec<UncheckedGroup>,
    timings: WaveTimings,
    done: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fast {
    Waiting,
    Locating,
    Done,
}

#[derive(Debug)]
struct Group {
    info: GroupInfo,
    /// Listed by DescribeTargetGroups (and so swept), not only known from a registration.
    listed: bool,
    read: Option<GroupRead>,
    reading: bool,
    /// Registrations waiting for a call, each with when it was queued.
    queue: BTreeMap<RegistrationKey, (TargetRegistration, Instant)>,
    sending: bool,
    delay: Delay,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Delay {
    Unknown,
    Reading,
    Known(Option<u32>),
}

#[derive(Clone, Debug)]
enum Listing {
    NotYet,
    Asked,
    Listed(DateTime<Utc>),
    Failed(String),
}

/// A DeregisterTargets to make: every registration queued in one group (up to the call's limit).
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    pub arn: String,
    pub registrations: Vec<TargetRegistration>,
}

/// A read to make.
#[derive(Clone, Debug, PartialEq)]
pub enum Job {
    List,
    Read(GroupInfo),
    Delay(String),
}

#[derive(Debug)]
pub struct State {
    members: BTreeMap<InstanceId, Serving>,
    ledger: Ledger,
    groups: BTreeMap<String, Group>,
    listing: Listing,
    dry_run: bool,
    last_answer: Option<Instant>,
}

impl State {
    pub fn new(dry_run: bool) -> Self {
        State {
            members: BTreeMap::new(),
            ledger: Ledger::default(),
            groups: BTreeMap::new(),
            listing: Listing::NotYet,
            dry_run,
            last_answer: None,
        }
    }

    /// A member joins. One already serving with another token (a later delivery) starts over.
    pub fn join(&mut self, member: Member, now: Instant) {
        if let Some(serving) = self.members.get(&member.instance.id)
            && serving.member.token == member.token
        {
            return;
        }
        if let Listing::Listed(at) = self.listing
            && member.since > at + RELIST_AFTER
        {
            self.listing = Listing::NotYet;
        }
        let wanted = Wanted::new(std::slice::from_ref(&member.instance));
        self.members.insert(
            member.instance.id.clone(),
            Serving {
                member,
                wanted,
                joined: now,
                fast: Fast::Waiting,
                warnings: Vec::new(),
                unchecked: Vec::new(),
                timings: WaveTimings::default(),
                done: false,
            },
        );
    }

    /// Whether the member is in the wave with this token.
    pub fn serves(&self, id: &InstanceId, token: &str) -> bool {
        self.members.get(id).is_some_and(|s| s.member.token == token)
    }

    /// Members no fast locator has been asked about yet, now marked as being asked.
    pub fn take_fast_path(&mut self) -> Vec<Instance> {
        self.members
            .values_mut()
            .filter(|s| s.fast == Fast::Waiting && !s.done)
            .map(|s| {
                s.fast = Fast::Locating;
                s.member.instance.clone()
            })
            .collect()
    }

    /// What the fast locators said about `instances`: each locator's name and answer.
    pub fn fast_located(
        &mut self,
        instances: &[InstanceId],
        answers: Vec<(&'static str, Result<Located, String>)>,
        now: Instant,
    ) {
        for (name, answer) in answers {
            match answer {
                Ok(located) => {
                    for registration in located.registrations {
                        if instances.contains(&registration.instance_id) {
                            self.found(registration, name, now);
                        }
                    }
                    for serving in self
                        .members
                        .values_mut()
                        .filter(|s| instances.contains(&s.member.instance.id))
                    {
                        let vpc = &serving.member.instance.vpc_id;
                        let theirs = located
                            .unchecked
                            .iter()
                            .filter(|g| g.vpc_id.is_none() || &g.vpc_id == vpc);
                        serving.unchecked.extend(theirs.cloned());
                    }
                }
                Err(error) => {
                    for serving in self
                        .members
                        .values_mut()
                        .filter(|s| instances.contains(&s.member.instance.id))
                    {
                        serving
                            .warnings
                            .push(format!("{name} locator failed, the sweep covers it: {error}"));
                    }
                }
            }
        }
        for serving in self
            .members
            .values_mut()
            .filter(|s| instances.contains(&s.member.instance.id))
        {
            if serving.fast == Fast::Locating {
                serving.fast = Fast::Done;
                serving.timings.fast_locate = ms_since(serving.joined, now);
            }
        }
    }

    /// A registration found by `by`: queued in its group unless it needs no call.
    fn found(&mut self, registration: TargetRegistration, by: &'static str, now: Instant) {
        let needs = self.ledger.found(registration.clone(), by);
        let dry_run = self.dry_run;
        let group = self.group_of(&registration);
        if needs == Needs::Call && !dry_run {
            group.queue.entry(registration.key()).or_insert((registration, now));
        }
    }

    fn group_of(&mut self, registration: &TargetRegistration) -> &mut Group {
        self.groups
            .entry(registration.target_group_arn.clone())
            .or_insert_with(|| Group::new(GroupInfo::of_registration(registration), false))
    }

    /// The next DeregisterTargets: the group whose registration has waited longest, with everything queued there.
    pub fn next_call(&mut self) -> Option<Call> {
        let (arn, group) = self
            .groups
            .iter_mut()
            .filter(|(_, g)| !g.sending && !g.queue.is_empty())
            .min_by_key(|(_, g)| g.queue.values().map(|(_, at)| *at).min())?;
        let keys: Vec<RegistrationKey> = group.queue.keys().take(MAX_TARGETS_PER_CALL).cloned().collect();
        let registrations: Vec<TargetRegistration> = keys
            .iter()
            .filter_map(|k| group.queue.remove(k).map(|(r, _)| r))
            .collect();
        group.sending = true;
        let call = Call {
            arn: arn.clone(),
            registrations,
        };
        self.ledger.sending(&call.registrations);
        Some(call)
    }

    /// Whether a call is waiting to be made.
    pub fn has_call(&self) -> bool {
        self.groups.values().any(|g| !g.sending && !g.queue.is_empty())
    }

    /// DeregisterTargets answered `result` at `at`.
    pub fn answered(&mut self, call: &Call, result: Result<(), CallError>, at: DateTime<Utc>, now: Instant) {
        if let Some(group) = self.groups.get_mut(&call.arn) {
            group.sending = false;
        }
        self.ledger.sent(&call.registrations, &result, at);
        self.last_answer = Some(now);
        for registration in &call.registrations {
            if let Some(serving) = self.members.get_mut(&registration.instance_id) {
                serving.timings.deregister = ms_since(serving.joined, now);
            }
        }
    }

    /// DescribeTargetGroups answered: every instance and IP group is a candidate.
    pub fn listed(&mut self, answer: Result<Vec<GroupInfo>, CallError>, at: DateTime<Utc>) {
        match answer {
            Ok(listed) => {
                for info in listed {
                    let group = self
                        .groups
                        .entry(info.arn.clone())
                        .or_insert_with(|| Group::new(info.clone(), true));
                    group.info = info;
                    group.listed = true;
                }
                self.listing = Listing::Listed(at);
            }
            Err(error) => self.listing = Listing::Failed(error.to_string()),
        }
    }

    /// A group was read: the check of what was sent there before, and the members' registrations in it.
    pub fn read(&mut self, read: GroupRead, now: Instant) {
        let arn = read.group.arn.clone();
        for again in self.ledger.read(&read) {
            let group = self.group_of(&again);
            group.queue.entry(again.key()).or_insert((again, now));
        }
        let found: Vec<TargetRegistration> = self
            .members
            .values()
            .filter(|s| !s.done && s.wanted.covers(&read.group))
            .flat_map(|s| s.wanted.registrations(&read))
            .collect();
        for serving in self.members.values_mut() {
            if !serving.done && serving.wanted.covers(&read.group) && read.read_at >= serving.member.since {
                serving.timings.locate = ms_since(serving.joined, now);
            }
        }
        for registration in found {
            self.found(registration, "sweep", now);
        }
        if let Some(group) = self.groups.get_mut(&arn) {
            group.reading = false;
            // A drop of a queued registration the read showed stale.
            group.queue.retain(|k, _| self.ledger.contains(k));
            if group.read.as_ref().is_none_or(|r| r.read_at <= read.read_at) {
                group.read = Some(read);
            }
        }
    }

    pub fn delay(&mut self, arn: &str, seconds: Option<u32>) {
        if let Some(group) = self.groups.get_mut(arn) {
            group.delay = Delay::Known(seconds);
        }
    }
}

impl Group {
    fn new(info: GroupInfo, listed: bool) -> Self {
        Group {
            info,
            listed,
            read: None,
            reading: false,
            queue: BTreeMap::new(),
            sending: false,
            delay: Delay::Unknown,
        }
    }

    fn unchecked(&self, error: &str) -> UncheckedGroup {
        UncheckedGroup {
            target_group_arn: self.info.arn.clone(),
            target_group_name: self.info.name.clone(),
            vpc_id: self.info.vpc_id.clone(),
            error: error.to_owned(),
        }
    }
}

fn sent_ok(entry: &Line) -> bool {
    matches!(entry.sent, Some(Sent { result: Ok(()), .. }))
}

fn ms_since(since: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(since).as_millis()).unwrap_or(u64::MAX)
}
