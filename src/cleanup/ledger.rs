//! Everything known about a batch's registrations as the phases go: who found them, what DeregisterTargets said for
//! each, and what a later look at the group saw. Pure bookkeeping: the phases make the calls and hand their answers
//! here, and the summaries are read from it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};

use crate::aws::CallError;
use crate::input::InstanceId;
use crate::locate::Located;
use crate::registration::{TargetRegistration, TargetState, UncheckedGroup};
use crate::steps::verify::{GroupCheck, Verdict};
use crate::telemetry::steplog::Tally;

/// The same registration, whichever locator found it: (target group ARN, target id, port).
pub type Key = (String, String, Option<i32>);

pub fn key(registration: &TargetRegistration) -> Key {
    (
        registration.target_group_arn.clone(),
        registration.target_id.clone(),
        registration.port,
    )
}

#[derive(Debug, Default)]
pub struct Ledger {
    found: BTreeMap<Key, TargetRegistration>,
    /// Which locator found each registration first (`index`, `auto-scaling`, `sweep`, `shared-sweep`).
    found_by: HashMap<Key, &'static str>,
    /// When DeregisterTargets answered, by target group: a view of the group read before then does not show it.
    sent_at: HashMap<String, DateTime<Utc>>,
    /// DeregisterTargets' answer for each registration it carried.
    sent: HashMap<Key, Result<(), CallError>>,
    /// What a later look at the group said about each registration.
    verdicts: HashMap<Key, Verdict>,
    /// Each touched group's `deregistration_delay.timeout_seconds`, where it could be read.
    pub delays: HashMap<String, u32>,
    /// Registrations the sweep saw in their group, after the fast path's calls, and not sent since.
    swept: HashSet<Key>,
    pub unchecked: Vec<UncheckedGroup>,
    /// Why a locator failed as a whole (the sweep could not list the target groups).
    pub locate_errors: Vec<String>,
    /// A fast locator that failed: not fatal, the sweep still covers everything in the VPC.
    pub fast_path_warnings: Vec<String>,
    /// How many target groups the sweep looked into.
    pub target_groups_checked: usize,
    /// Whose sweep it was (`sweep` or `shared-sweep`).
    pub swept_by: Option<&'static str>,
}

/// Already leaving its group: a call would change nothing.
fn leaving(registration: &TargetRegistration) -> bool {
    let state = registration.state.as_deref();
    TargetState::Draining.is(state) || TargetState::Unused.is(state)
}

/// What became of one registration, for its summary.
#[derive(Debug, PartialEq)]
pub enum Fate<'a> {
    /// DeregisterTargets refused it.
    Refused(&'a CallError),
    Seen(&'a Verdict),
    /// Sent, but not looked at again before the deadline.
    NotVerified,
}

impl Ledger {
    pub fn all(&self) -> impl Iterator<Item = &TargetRegistration> {
        self.found.values()
    }

    /// The instance's registrations, each with its key.
    pub fn of<'a>(&'a self, instance: &'a InstanceId) -> impl Iterator<Item = (Key, &'a TargetRegistration)> + 'a {
        self.found
            .iter()
            .filter(move |(_, r)| &r.instance_id == instance)
            .map(|(k, r)| (k.clone(), r))
    }

    pub fn found_for(&self, instance: &InstanceId) -> usize {
        self.of(instance).count()
    }

    /// DeregisterTargets' answers so far for the instance's registrations.
    pub fn sent_for(&self, instance: &InstanceId) -> Tally {
        self.of(instance)
            .filter_map(|(key, _)| self.sent.get(&key).map(Result::is_ok))
            .collect()
    }

    /// Gone or draining, against still there or not known.
    pub fn verified_for(&self, instance: &InstanceId) -> Tally {
        self.of(instance)
            .filter_map(|(key, _)| self.verdicts.get(&key))
            .map(|verdict| match verdict {
                Verdict::Deregistered | Verdict::Draining => true,
                Verdict::Remains { .. } | Verdict::Unknown { .. } => false,
            })
            .collect()
    }

    /// What became of a registration the ledger holds.
    pub fn fate(&self, registration: &TargetRegistration) -> Fate<'_> {
        let key = key(registration);
        match (self.sent.get(&key), self.verdicts.get(&key)) {
            (Some(Err(error)), _) => Fate::Refused(error),
            (_, Some(verdict)) => Fate::Seen(verdict),
            (_, None) => Fate::NotVerified,
        }
    }

    pub fn add(&mut self, registrations: Vec<TargetRegistration>, by: &'static str) {
        for registration in registrations {
            let k = key(&registration);
            self.found_by.entry(k.clone()).or_insert(by);
            self.found.entry(k).or_insert(registration);
        }
    }

    /// Which locator found a registration first.
    pub fn found_by(&self, registration: &TargetRegistration) -> Option<&'static str> {
        self.found_by.get(&key(registration)).copied()
    }

    /// What a fast locator found; registrations in groups it could not read are the sweep's to find.
    pub fn add_located(&mut self, located: Located, by: &'static str) {
        self.add(located.registrations, located.found_by.unwrap_or(by));
        self.unchecked.extend(located.unchecked);
    }

    /// Registrations found but not yet sent to DeregisterTargets, and those whose fast-path call failed but the sweep
    /// still saw (one stale entry can fail a whole group's call); ones already draining or unused need no call.
    pub fn not_yet_sent(&self) -> Vec<TargetRegistration> {
        self.found
            .iter()
            .filter(|(k, _)| match self.sent.get(*k) {
                None => true,
                Some(Err(_)) => self.swept.contains(*k),
                Some(Ok(())) => false,
            })
            .filter(|(_, r)| !leaving(r))
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// Whether a registration seen now still needs a DeregisterTargets: none accepted it yet, and it is not already
    /// draining or unused.
    pub fn needs_call(&self, registration: &TargetRegistration) -> bool {
        !matches!(self.sent.get(&key(registration)), Some(Ok(()))) && !leaving(registration)
    }

    /// DeregisterTargets' answers, by target group, for the registrations they carried. A call sent after the sweep
    /// saw its registration is that registration's last.
    pub fn record_sent(
        &mut self,
        registrations: &[TargetRegistration],
        results: &BTreeMap<String, Result<(), CallError>>,
    ) {
        let now = Utc::now();
        for registration in registrations {
            if let Some(result) = results.get(&registration.target_group_arn) {
                self.swept.remove(&key(registration));
                self.sent.insert(key(registration), result.clone());
                self.sent_at.insert(registration.target_group_arn.clone(), now);
            }
        }
    }

    /// Take in the sweep's view. Where it was read after the fast path's deregistration (always, for this run's own
    /// sweep), it is the check for a target the fast path sent: absent or draining means removed. A shared view read
    /// before then checks nothing; the verify phase looks again. Anything else it found is new.
    pub fn absorb_sweep(&mut self, located: Located, by: &'static str) {
        let by = located.found_by.unwrap_or(by);
        self.swept_by = Some(by);
        self.target_groups_checked = located.target_groups_checked;
        let after_sent = |group: &String| match (located.read_at.get(group), self.sent_at.get(group)) {
            (Some(read), Some(sent)) => read >= sent,
            _ => true,
        };
        let checked: HashSet<&String> = located.checked_groups.iter().filter(|g| after_sent(g)).collect();
        let seen: HashSet<Key> = located.registrations.iter().map(key).collect();
        // A fast-path registration whose call failed and that is not in its group (the sweep read the group, or ELB
        // said the group is gone) was stale knowledge: there is nothing to remove and nothing to report.
        let stale: Vec<Key> = self
            .sent
            .iter()
            .filter(|(k, result)| match result {
                Err(error) => (checked.contains(&k.0) && !seen.contains(*k)) || error.is("TargetGroupNotFound"),
                Ok(()) => false,
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            self.sent.remove(&k);
            self.found.remove(&k);
        }
        for (k, result) in &self.sent {
            if result.is_ok() && checked.contains(&k.0) && !seen.contains(k) {
                self.verdicts.insert(k.clone(), Verdict::Deregistered);
            }
        }
        self.swept = seen;
        for registration in located.registrations {
            let k = key(&registration);
            let state = registration.state.clone().unwrap_or_default();
            let leaving = match TargetState::parse(&state) {
                Some(TargetState::Draining) => Some(Verdict::Draining),
                Some(TargetState::Unused) => Some(Verdict::Deregistered),
                _ => None,
            };
            if let Some(verdict) = leaving {
                self.verdicts.insert(k.clone(), verdict);
            } else if matches!(self.sent.get(&k), Some(Ok(()))) && checked.contains(&k.0) {
                self.verdicts
                    .insert(k.clone(), Verdict::Remains { state, reason: None });
            }
            self.found_by.entry(k.clone()).or_insert(by);
            self.found.entry(k).or_insert(registration);
        }
        self.unchecked.extend(located.unchecked);
    }

    /// Sent and accepted, but not yet seen again: the verify phase describes their groups.
    pub fn unverified(&self) -> Vec<TargetRegistration> {
        self.found
            .iter()
            .filter(|(k, _)| matches!(self.sent.get(*k), Some(Ok(()))) && !self.verdicts.contains_key(*k))
            .map(|(_, r)| r.clone())
            .collect()
    }

    pub fn record_checks(&mut self, checks: Vec<GroupCheck>) {
        for check in checks {
            for (registration, verdict) in check.verdicts {
                self.verdicts.insert(key(&registration), verdict);
            }
        }
    }

    /// Every target group a DeregisterTargets went to.
    pub fn touched_groups(&self) -> BTreeSet<String> {
        self.sent.keys().map(|k| k.0.clone()).collect()
    }

    /// Groups the locators could not read, which may hold any instance's registrations.
    pub fn unread(&self) -> usize {
        self.locate_errors.len() + self.unchecked.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registration::TargetKind;

    const A: &str = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/a/1";
    const B: &str = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/b/2";

    fn id() -> InstanceId {
        InstanceId::parse("i-0123abcd").unwrap()
    }

    fn registration(group: &str, port: i32, state: Option<&str>) -> TargetRegistration {
        TargetRegistration {
            target_group_arn: group.into(),
            target_group_name: group.rsplit('/').nth(1).unwrap().into(),
            instance_id: id(),
            kind: TargetKind::Instance,
            target_id: "i-0123abcd".into(),
            port: Some(port),
            availability_zone: None,
            state: state.map(str::to_owned),
        }
    }

    impl Ledger {
        fn absorb_sweep_for_test(&mut self, located: Located) {
            self.absorb_sweep(located, "sweep");
        }
    }

    fn swept(registrations: Vec<TargetRegistration>, checked: &[&str]) -> Located {
        Located {
            registrations,
            unchecked: Vec::new(),
            target_groups_checked: checked.len(),
            checked_groups: checked.iter().map(|g| g.to_string()).collect(),
            read_at: Default::default(),
            found_by: None,
        }
    }

    fn refused(code: &str) -> Result<(), CallError> {
        Err(CallError {
            operation: "DeregisterTargets",
            code: Some(code.into()),
            message: String::new(),
        })
    }

    #[test]
    fn the_sweep_after_the_fast_path_is_its_check() {
        let mut ledger = Ledger::default();
        let gone = registration(A, 80, None);
        let still = registration(B, 81, None);
        ledger.add(vec![gone.clone(), still.clone()], "index");
        let sent = ledger.not_yet_sent();
        assert_eq!(sent.len(), 2);
        ledger.record_sent(&sent, &BTreeMap::from([(A.into(), Ok(())), (B.into(), Ok(()))]));
        // The sweep read both groups: A's target is absent, B's is draining.
        ledger.absorb_sweep_for_test(swept(vec![registration(B, 81, Some("draining"))], &[A, B]));
        assert_eq!(ledger.fate(&gone), Fate::Seen(&Verdict::Deregistered));
        assert_eq!(ledger.fate(&still), Fate::Seen(&Verdict::Draining));
        assert!(ledger.unverified().is_empty(), "nothing left to describe again");
        assert!(ledger.not_yet_sent().is_empty());
        assert_eq!(ledger.verified_for(&id()), Tally::new(2, 0));
    }

    #[test]
    fn a_stale_fast_path_entry_is_dropped_and_a_refused_call_is_sent_again_if_the_sweep_still_sees_it() {
        let mut ledger = Ledger::default();
        let stale = registration(A, 80, None);
        let real = registration(B, 81, None);
        ledger.add(vec![stale.clone(), real.clone()], "index");
        ledger.record_sent(
            &[stale.clone(), real.clone()],
            &BTreeMap::from([
                (A.into(), refused("TargetGroupNotFound")),
                (B.into(), refused("Throttling")),
            ]),
        );
        ledger.absorb_sweep_for_test(swept(vec![registration(B, 81, Some("healthy"))], &[B]));
        assert_eq!(ledger.all().count(), 1, "the deleted group's entry is gone: {ledger:?}");
        assert_eq!(ledger.not_yet_sent(), vec![registration(B, 81, None)]);
        assert!(matches!(ledger.fate(&real), Fate::Refused(e) if e.is("Throttling")));
    }

    #[test]
    fn what_no_look_confirmed_is_left_for_the_verify_phase() {
        let mut ledger = Ledger::default();
        let target = registration(A, 80, None);
        ledger.add(vec![target.clone()], "index");
        ledger.record_sent(std::slice::from_ref(&target), &BTreeMap::from([(A.into(), Ok(()))]));
        ledger.absorb_sweep_for_test(swept(Vec::new(), &[]));
        assert_eq!(ledger.unverified(), vec![target.clone()]);
        assert_eq!(ledger.fate(&target), Fate::NotVerified);
        assert_eq!(ledger.touched_groups(), BTreeSet::from([A.to_owned()]));
        ledger.record_checks(vec![GroupCheck {
            verdicts: vec![(
                target.clone(),
                Verdict::Remains {
                    state: "healthy".into(),
                    reason: None,
                },
            )],
        }]);
        assert!(matches!(ledger.fate(&target), Fate::Seen(Verdict::Remains { .. })));
        assert_eq!(ledger.verified_for(&id()), Tally::new(0, 1));
    }
}
