//! The driver: one loop that makes every ELB call of the wave. It composes a DeregisterTargets only when the budget
//! would send it at once, so the call carries every registration queued in its group by then; it reads when the reads'
//! share allows, never ahead of a deregistration; and it answers each member as soon as that member's work is done.
//! With the table, it also takes in members that join while it drives, and hands their answers back through the
//! table; it holds the driver's lease while it drives, and lets go of it when nobody is left.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::deregistration::Deregistration;
use super::roster::Roster;
use super::state::{Call, Job, Member, State};
use crate::aws::{CallError, ElbBudget, ElbKind, join_all};
use crate::deadline::Deadline;
use crate::input::InstanceId;
use crate::instance::Instance;
use crate::lease::{Lease, Renewal};
use crate::locate::sweep::list_target_groups;
use crate::locate::sweep::read::{GroupRead, read_group};
use crate::locate::{Located, Locator};
use crate::steps::{deregister, verify};
use crate::table::GroupInfo;

/// How often a driver with a table looks for members that joined.
pub const INTAKE_EVERY: Duration = Duration::from_millis(250);
/// ELB reads in flight at most: the Describe* bucket's burst (`aws::paced::ELB_DESCRIBE`), as many as could be sent at
/// once. The ELB budget sets their pace; this only bounds how many wait at once on a slow answer.
const READS_IN_FLIGHT: usize = 40;
/// How long a driver waits before it writes again an answer whose write failed.
const ANSWER_AGAIN_AFTER: Duration = Duration::from_millis(250);

/// What the driver calls with.
pub struct Tools<'a> {
    pub elb: &'a aws_sdk_elasticloadbalancingv2::Client,
    pub budget: &'a ElbBudget,
    pub fast_locators: &'a [Box<dyn Locator>],
}

/// The members this cleanup brought, and where their answers go once every one is in.
pub struct Own {
    tokens: HashMap<InstanceId, String>,
    answers: HashMap<InstanceId, Deregistration>,
    to: Option<oneshot::Sender<HashMap<InstanceId, Deregistration>>>,
}

impl Own {
    pub fn new(members: &[Member], to: oneshot::Sender<HashMap<InstanceId, Deregistration>>) -> Self {
        Own {
            tokens: members
                .iter()
                .map(|m| (m.instance.id.clone(), m.token.clone()))
                .collect(),
            answers: HashMap::new(),
            to: Some(to),
        }
    }

    pub fn is_own(&self, member: &Member) -> bool {
        self.tokens.get(&member.instance.id) == Some(&member.token)
    }

    /// An answer for one of ours: sent on once every one is in.
    pub fn take(&mut self, id: InstanceId, deregistration: Deregistration) {
        self.answers.insert(id, deregistration);
        if self.answers.len() >= self.tokens.len()
            && let Some(to) = self.to.take()
        {
            let _ = to.send(std::mem::take(&mut self.answers));
        }
    }

    pub fn waiting(&self) -> Vec<(InstanceId, String)> {
        self.tokens
            .iter()
            .filter(|(id, _)| !self.answers.contains_key(*id))
            .map(|(id, token)| (id.clone(), token.clone()))
            .collect()
    }

    pub fn is_answered_for(&self, member: &Member) -> bool {
        self.to.is_none() || self.answers.contains_key(&member.instance.id)
    }

    pub fn is_answered(&self) -> bool {
        self.to.is_none()
    }
}

/// The driver's lease, held in the table: the roster it is on, and the token it was taken with.
pub struct DriverLease<'r> {
    pub roster: &'r Roster,
    pub token: String,
    pub lease: Lease,
}

enum Event {
    Listed(Result<Vec<GroupInfo>, CallError>, DateTime<Utc>),
    Read(GroupRead),
    Answered(Call, Result<(), CallError>, DateTime<Utc>),
    Delay(String, Option<u32>),
    Joined(Result<Vec<Member>, CallError>, Instant),
    Written,
}

type FastPath<'a> =
    Pin<Box<dyn Future<Output = (Vec<InstanceId>, Vec<(&'static str, Result<Located, String>)>)> + Send + 'a>>;

/// Drive the wave until every member is answered (and, with the table, nobody is left on the roster) or the deadline
/// comes.
pub async fn drive(
    tools: &Tools<'_>,
    state: &mut State,
    own: &mut Own,
    held: Option<&DriverLease<'_>>,
    deadline: Deadline,
) {
    let now = Instant::now();
    let mut driver = Driver {
        tools,
        held,
        renewal: held.map(|h| h.roster.keep(&h.token, h.lease)),
        deadline,
        tasks: JoinSet::new(),
        reads: 0,
        next_intake: now,
        intake_running: false,
        looked: false,
        last_answer: now,
        nobody_new: false,
        stop: deadline.left().map(|left| now + left),
    };
    let mut fast: Option<FastPath<'_>> = None;
    loop {
        let now = Instant::now();
        let out_of_time = deadline.passed();
        // With the table, the members already on the roster are taken in first, so the first calls carry them too.
        let ready = held.is_none() || driver.looked;
        if fast.is_none() && !out_of_time && ready {
            let instances = state.take_fast_path();
            if !instances.is_empty() {
                fast = Some(Box::pin(fast_path(tools.fast_locators, instances, deadline)));
            }
        }
        if !out_of_time {
            driver.start_calls(state, now);
        }
        driver.answer(state, own, now, out_of_time);
        let idle = fast.is_none() && driver.tasks.is_empty() && (held.is_none() || driver.nobody_new);
        if state.all_done() && (out_of_time || idle) {
            break;
        }
        let wake = driver.wake_at(state, now);
        tokio::select! {
            Some(done) = driver.tasks.join_next() => match done {
                Ok(event) => driver.take_in(state, own, event),
                // A call's task died: its group is left for the deadline to report.
                Err(error) => tracing::error!(%error, "wave: a call's task died"),
            },
            Some((instances, answers)) = async { match fast.as_mut() { Some(f) => Some(f.await), None => None } } => {
                fast = None;
                state.fast_located(&instances, answers, Instant::now());
            }
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
    driver.finish().await;
}

/// The driver's loop state: its calls under way, and with the table its looks at the roster and its lease.
struct Driver<'t, 'w> {
    tools: &'t Tools<'t>,
    held: Option<&'w DriverLease<'w>>,
    /// The lease's renewal, from when the driver starts until it lets go.
    renewal: Option<Renewal>,
    deadline: Deadline,
    tasks: JoinSet<Event>,
    /// Reads under way.
    reads: usize,
    next_intake: Instant,
    intake_running: bool,
    /// The roster was looked at once since the lease was taken.
    looked: bool,
    /// When the last answer was given: a look at the roster that started after it and found nobody new ends the wave.
    last_answer: Instant,
    nobody_new: bool,
    stop: Option<Instant>,
}

impl Driver<'_, '_> {
    /// Every call the budget would send now: deregistrations first, then reads; with the table, a look at the roster
    /// when it is due.
    fn start_calls(&mut self, state: &mut State, now: Instant) {
        let budget = self.tools.budget;
        while state.has_call() && budget.ready_in(ElbKind::Registration).is_zero() {
            let call = state.next_call().expect("a call is waiting");
            let elb = self.tools.elb.clone();
            self.tasks.spawn(async move {
                let result = deregister::deregister_group(&elb, &call.arn, &call.registrations).await;
                Event::Answered(call, result, Utc::now())
            });
        }
        while self.reads < READS_IN_FLIGHT && budget.ready_in(ElbKind::Read).is_zero() {
            let Some(job) = state.next_job(now) else { break };
            self.reads += 1;
            let elb = self.tools.elb.clone();
            self.tasks.spawn(async move { read(elb, job).await });
        }
        let Some(held) = self.held else { return };
        if !self.intake_running && now >= self.next_intake {
            self.intake_running = true;
            let roster = held.roster.clone();
            self.tasks.spawn(async move {
                let started = Instant::now();
                Event::Joined(roster.members().await, started)
            });
        }
    }

    /// Answer every member whose work is done (all of them when the deadline has come).
    fn answer(&mut self, state: &mut State, own: &mut Own, now: Instant, out_of_time: bool) {
        let answered = state.complete(now, out_of_time);
        if !answered.is_empty() {
            self.last_answer = now;
            self.nobody_new = false;
        }
        for (member, deregistration) in answered {
            deliver(&mut self.tasks, own, self.held, member, deregistration, self.deadline);
        }
    }

    /// What a call's task brought back.
    fn take_in(&mut self, state: &mut State, own: &Own, event: Event) {
        match event {
            Event::Read(read) => {
                self.reads -= 1;
                state.read(read, Instant::now());
            }
            Event::Listed(answer, at) => {
                self.reads -= 1;
                state.listed(answer, at);
            }
            Event::Delay(arn, seconds) => {
                self.reads -= 1;
                state.delay(&arn, seconds);
            }
            Event::Answered(call, result, at) => state.answered(&call, result, at, Instant::now()),
            Event::Joined(joined, started) => {
                self.intake_running = false;
                self.looked = true;
                self.next_intake = Instant::now() + INTAKE_EVERY;
                match joined {
                    Ok(members) => {
                        let new: Vec<Member> = members
                            .into_iter()
                            .filter(|m| !state.serves(&m.instance.id, &m.token) && !own.is_own(m))
                            .collect();
                        if new.is_empty() && state.all_done() && started >= self.last_answer {
                            self.nobody_new = true;
                        }
                        for member in new {
                            tracing::info!(instance = %member.instance.id, "wave: a member joined");
                            state.join(member, Instant::now());
                        }
                    }
                    Err(error) => tracing::warn!(%error, "wave: the roster could not be read"),
                }
            }
            Event::Written => {}
        }
    }

    /// When to look again: the budget's next token for what is waiting, the settle, the roster, or the deadline.
    fn wake_at(&self, state: &State, now: Instant) -> Instant {
        let budget = self.tools.budget;
        let soon = |wait: Duration| now + wait.max(Duration::from_millis(1));
        let mut wake = now + Duration::from_secs(3600);
        if state.has_call() {
            wake = wake.min(soon(budget.ready_in(ElbKind::Registration)));
        }
        if self.reads < READS_IN_FLIGHT && state.has_job(now) {
            wake = wake.min(soon(budget.ready_in(ElbKind::Read)));
        }
        if let Some(settled) = state.settled_at().filter(|at| *at > now) {
            wake = wake.min(settled);
        }
        let roster = self.held.map(|_| self.next_intake);
        for at in [self.stop, roster].into_iter().flatten() {
            wake = wake.min(at.max(now + Duration::from_millis(1)));
        }
        wake
    }

    /// The answers being written are what the others wait for: they get a moment; reads and looks do not. Then the
    /// driver's lease is let go.
    async fn finish(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        self.tasks.abort_all();
        drop(self.renewal.take());
        if let Some(held) = self.held
            && let Err(error) = held.roster.release(&held.token).await
        {
            tracing::warn!(%error, "wave: the driver's lease was not released; it lapses");
        }
    }
}

/// Give a member its answer: this cleanup's own here, another's through the table, where that cleanup looks for it.
/// A write that fails is made again until the deadline: the other cleanup waits for nothing else.
fn deliver(
    tasks: &mut JoinSet<Event>,
    own: &mut Own,
    held: Option<&DriverLease<'_>>,
    member: Member,
    deregistration: Deregistration,
    deadline: Deadline,
) {
    let mine = own.is_own(&member);
    if let Some(held) = held {
        let roster = held.roster.clone();
        let (member, answer) = (member.clone(), (!mine).then(|| deregistration.clone()));
        tasks.spawn(async move {
            loop {
                let Err(error) = roster.answer(&member, answer.as_ref()).await else {
                    break;
                };
                if !deadline.within(ANSWER_AGAIN_AFTER) {
                    tracing::warn!(instance = %member.instance.id, %error, "wave: the answer was not written");
                    break;
                }
                tracing::warn!(instance = %member.instance.id, %error, "wave: the answer was not written; writing it again");
                tokio::time::sleep(ANSWER_AGAIN_AFTER).await;
            }
            Event::Written
        });
    }
    if mine {
        own.take(member.instance.id, deregistration);
    }
}

async fn read(elb: aws_sdk_elasticloadbalancingv2::Client, job: Job) -> Event {
    match job {
        Job::List => {
            let at = Utc::now();
            let listed = list_target_groups(&elb).await.map(|groups| {
                groups
                    .iter()
                    .filter_map(GroupInfo::from_sdk)
                    .filter(|g| g.kind().is_some())
                    .collect()
            });
            Event::Listed(listed, at)
        }
        Job::Read(group) => Event::Read(read_group(&elb, group).await),
        Job::Delay(arn) => {
            let seconds = verify::deregistration_delay(&elb, &arn).await;
            Event::Delay(arn, seconds)
        }
    }
}

/// Ask every fast locator about the new members, side by side.
async fn fast_path(
    locators: &[Box<dyn Locator>],
    instances: Vec<Instance>,
    deadline: Deadline,
) -> (Vec<InstanceId>, Vec<(&'static str, Result<Located, String>)>) {
    let since = Utc::now();
    let answers = join_all(locators.iter().map(|locator| {
        let instances = &instances;
        async move {
            let located = locator.locate(instances, since, deadline).await;
            (locator.name(), located.map_err(|e| e.to_string()))
        }
    }))
    .await;
    (instances.into_iter().map(|i| i.id).collect(), answers)
}
