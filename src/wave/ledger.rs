//! Every registration the wave knows, from any member: who found it, what DeregisterTargets answered for it, and what
//! a later read of its group said. Pure bookkeeping: the driver makes the calls and hands their answers here.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::aws::CallError;
use crate::input::InstanceId;
use crate::locate::sweep::read::{GroupAnswer, GroupRead};
use crate::registration::{RegistrationKey, TargetRegistration};
use crate::steps::verify::{self, Verdict, leaving};

/// A registration is sent at most this often: once, and once more if its call was refused for a target that is not
/// there (`InvalidTarget`: one stale entry fails the whole call) and a read after it still shows this one.
const MAX_SENDS: u8 = 2;

/// What DeregisterTargets answered, and when the answer came: a read sent after then shows its effect.
#[derive(Clone, Debug, PartialEq)]
pub struct Sent {
    pub result: Result<(), CallError>,
    pub at: DateTime<Utc>,
}

/// One line of the ledger: a registration, and what became of it.
#[derive(Clone, Debug)]
pub struct Line {
    pub registration: TargetRegistration,
    /// The locator that found it first (`index`, `auto-scaling`, `sweep`).
    pub found_by: &'static str,
    pub sends: u8,
    /// A call carrying it is under way.
    pub in_flight: bool,
    pub sent: Option<Sent>,
    /// What a read of its group after the call (or, for a target already leaving, when it was found) said.
    pub verdict: Option<Verdict>,
}

impl Line {
    /// Settled: nothing more will be sent for it, and nothing more learned unless its group is read again.
    pub fn is_final(&self) -> bool {
        !self.in_flight
            && (self.verdict.is_some()
                || matches!(&self.sent, Some(Sent { result: Err(e), .. }) if self.sends >= MAX_SENDS || !e.is("InvalidTarget")))
    }
}

#[derive(Debug, Default)]
pub struct Ledger {
    lines: BTreeMap<RegistrationKey, Line>,
}

/// What a registration needs after the ledger took it in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needs {
    /// A DeregisterTargets.
    Call,
    Nothing,
}

impl Ledger {
    #[cfg(test)]
    pub fn get(&self, key: &RegistrationKey) -> Option<&Line> {
        self.lines.get(key)
    }

    /// The instance's registrations.
    pub fn of<'a>(&'a self, instance: &'a InstanceId) -> impl Iterator<Item = &'a Line> + 'a {
        self.lines
            .values()
            .filter(move |e| &e.registration.instance_id == instance)
    }

    /// The registrations in one group.
    pub fn in_group<'a>(&'a self, arn: &'a str) -> impl Iterator<Item = (&'a RegistrationKey, &'a Line)> + 'a {
        self.lines
            .range(group_range(arn))
            .filter(move |(k, _)| k.target_group_arn == arn)
    }

    /// A registration found by `by`. A target already leaving its group (draining, unused) needs no call, and its state
    /// is its verdict.
    pub fn found(&mut self, registration: TargetRegistration, by: &'static str) -> Needs {
        let k = registration.key();
        let entry = self.lines.entry(k).or_insert_with(|| Line {
            registration,
            found_by: by,
            sends: 0,
            in_flight: false,
            sent: None,
            verdict: None,
        });
        if entry.sent.is_some() || entry.verdict.is_some() {
            return Needs::Nothing;
        }
        match entry.registration.state.as_ref().and_then(leaving) {
            Some(verdict) => {
                entry.verdict = Some(verdict);
                Needs::Nothing
            }
            None => Needs::Call,
        }
    }

    /// A call is about to carry these.
    pub fn sending(&mut self, registrations: &[TargetRegistration]) {
        for registration in registrations {
            if let Some(entry) = self.lines.get_mut(&registration.key()) {
                entry.sends += 1;
                entry.in_flight = true;
            }
        }
    }

    /// DeregisterTargets answered for these. A group that no longer exists took its registrations with it.
    pub fn sent(&mut self, registrations: &[TargetRegistration], result: &Result<(), CallError>, at: DateTime<Utc>) {
        for registration in registrations {
            let k = registration.key();
            match result {
                Err(error) if error.is("TargetGroupNotFound") => {
                    // Stale knowledge (the group was deleted): nothing to remove, nothing to report.
                    self.lines.remove(&k);
                }
                _ => {
                    if let Some(entry) = self.lines.get_mut(&k) {
                        entry.in_flight = false;
                        entry.sent = Some(Sent {
                            result: result.clone(),
                            at,
                        });
                    }
                }
            }
        }
    }

    /// Take in a read of a group: it is the check of every call answered before it was sent, and it tells which
    /// registrations known some other way were stale. Returns the known registrations that need a call (again):
    /// ones whose call was refused and that the read still shows, once.
    pub fn read(&mut self, read: &GroupRead) -> Vec<TargetRegistration> {
        let arn = read.group.arn.clone();
        let keys: Vec<RegistrationKey> = self.in_group(&arn).map(|(k, _)| k.clone()).collect();
        let mut again = Vec::new();
        for k in keys {
            let entry = self.lines.get_mut(&k).expect("listed just above");
            let after_call = entry.sent.as_ref().is_some_and(|s| s.at <= read.read_at);
            let seen = match &read.answer {
                // The check could not be made: what the call did is not known.
                GroupAnswer::Failed(error) => {
                    if after_call && entry.verdict.is_none() && entry.sent.as_ref().is_some_and(|s| s.result.is_ok()) {
                        entry.verdict = Some(Verdict::Unknown { error: error.clone() });
                    }
                    continue;
                }
                GroupAnswer::Gone => None,
                GroupAnswer::Targets(seen) => Some(seen.iter().find(|s| s.id == k.target_id && s.port == k.port)),
            };
            match (&entry.sent, seen) {
                // The group is gone, and everything with it.
                (Some(Sent { result: Ok(()), .. }), None) if after_call => entry.verdict = Some(Verdict::Deregistered),
                (Some(Sent { result: Ok(()), .. }), Some(seen)) if after_call => {
                    entry.verdict = Some(verify::verdict(seen));
                }
                // Refused, and still there: sent once more. Refused and not there: it never was (a stale index entry).
                (Some(Sent { result: Err(_), .. }), Some(Some(seen))) if after_call => {
                    let still = seen.state.as_ref().and_then(leaving).is_none();
                    if !entry.is_final() && still {
                        again.push(entry.registration.clone());
                    }
                }
                (Some(Sent { result: Err(_), .. }), Some(None) | None) if after_call => {
                    self.lines.remove(&k);
                }
                // Known, not sent yet, and not in its group: stale. Already leaving: that is its verdict.
                (None, None | Some(None)) if entry.verdict.is_none() => {
                    self.lines.remove(&k);
                }
                (None, Some(Some(seen))) if entry.verdict.is_none() => {
                    if let Some(verdict) = seen.state.as_ref().and_then(leaving) {
                        entry.verdict = Some(verdict);
                    }
                }
                _ => {}
            }
        }
        again
    }

    /// Whether a known registration is still waiting for its call, a check, or nothing at all.
    pub fn contains(&self, k: &RegistrationKey) -> bool {
        self.lines.contains_key(k)
    }
}

/// Every key of one group, and a few after it (filtered by the caller).
fn group_range(arn: &str) -> std::ops::RangeFrom<RegistrationKey> {
    RegistrationKey {
        target_group_arn: arn.to_owned(),
        target_id: String::new(),
        port: None,
    }..
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::locate::sweep::read::GroupTarget;
    use crate::registration::{TargetKind, TargetState};
    use crate::table::GroupInfo;
    use aws_sdk_elasticloadbalancingv2::types::TargetTypeEnum;

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
            state: state.map(TargetState::from),
        }
    }

    fn read(group: &str, at: DateTime<Utc>, seen: &[(i32, &str)]) -> GroupRead {
        GroupRead {
            group: GroupInfo {
                arn: group.into(),
                name: group.rsplit('/').nth(1).unwrap().into(),
                target_type: TargetTypeEnum::Instance,
                vpc_id: None,
                port: None,
            },
            read_at: at,
            answer: GroupAnswer::Targets(
                seen.iter()
                    .map(|(port, state)| GroupTarget {
                        id: "i-0123abcd".into(),
                        port: Some(*port),
                        zone: None,
                        state: Some((*state).into()),
                        reason: None,
                    })
                    .collect(),
            ),
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
    fn a_read_after_the_call_is_its_check_and_one_before_it_is_not() {
        let mut ledger = Ledger::default();
        let gone = registration(A, 80, None);
        let still = registration(B, 81, None);
        assert_eq!(ledger.found(gone.clone(), "index"), Needs::Call);
        assert_eq!(ledger.found(still.clone(), "index"), Needs::Call);
        let before = Utc::now();
        let at = before + chrono::Duration::milliseconds(10);
        ledger.sending(&[gone.clone(), still.clone()]);
        ledger.sent(&[gone.clone(), still.clone()], &Ok(()), at);
        // Read before the answer: it says nothing about the call.
        ledger.read(&read(A, before, &[(80, "healthy")]));
        assert_eq!(ledger.get(&gone.key()).unwrap().verdict, None);
        let after = at + chrono::Duration::milliseconds(10);
        ledger.read(&read(A, after, &[]));
        ledger.read(&read(B, after, &[(81, "draining")]));
        assert_eq!(ledger.get(&gone.key()).unwrap().verdict, Some(Verdict::Deregistered));
        assert_eq!(ledger.get(&still.key()).unwrap().verdict, Some(Verdict::Draining));
        assert!(ledger.of(&id()).all(Line::is_final));
    }

    #[test]
    fn a_stale_entry_is_dropped_and_a_refused_call_is_sent_again_if_a_read_still_shows_it() {
        let mut ledger = Ledger::default();
        let stale = registration(A, 80, None);
        let real = registration(B, 81, None);
        let deleted = registration(
            "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/c/3",
            82,
            None,
        );
        for r in [&stale, &real, &deleted] {
            ledger.found(r.clone(), "index");
        }
        let at = Utc::now();
        ledger.sending(&[stale.clone(), real.clone(), deleted.clone()]);
        ledger.sent(std::slice::from_ref(&stale), &refused("InvalidTarget"), at);
        ledger.sent(std::slice::from_ref(&real), &refused("InvalidTarget"), at);
        ledger.sent(std::slice::from_ref(&deleted), &refused("TargetGroupNotFound"), at);
        assert!(!ledger.contains(&deleted.key()), "its group is gone");
        let later = at + chrono::Duration::milliseconds(5);
        assert!(ledger.read(&read(A, later, &[])).is_empty());
        assert!(!ledger.contains(&stale.key()), "it was never there");
        assert_eq!(ledger.read(&read(B, later, &[(81, "healthy")])), vec![real.clone()]);
        ledger.sending(std::slice::from_ref(&real));
        assert!(
            !ledger.get(&real.key()).unwrap().is_final(),
            "its second call is under way"
        );
        ledger.sent(std::slice::from_ref(&real), &refused("InvalidTarget"), later);
        assert!(
            ledger.get(&real.key()).unwrap().is_final(),
            "sent twice: that was its last"
        );
        assert!(ledger.read(&read(B, later, &[(81, "healthy")])).is_empty());
    }

    #[test]
    fn a_target_already_leaving_needs_no_call_and_its_state_is_its_verdict() {
        let mut ledger = Ledger::default();
        assert_eq!(
            ledger.found(registration(A, 80, Some("draining")), "sweep"),
            Needs::Nothing
        );
        assert_eq!(
            ledger.found(registration(A, 81, Some("unused")), "sweep"),
            Needs::Nothing
        );
        let verdicts: Vec<_> = ledger.of(&id()).map(|e| e.verdict.clone()).collect();
        assert_eq!(verdicts, [Some(Verdict::Draining), Some(Verdict::Deregistered)]);
        // Found again by another locator: still nothing to do, and the first finder keeps the credit.
        assert_eq!(
            ledger.found(registration(A, 80, Some("healthy")), "index"),
            Needs::Nothing
        );
        assert_eq!(ledger.of(&id()).next().unwrap().found_by, "sweep");
    }
}
