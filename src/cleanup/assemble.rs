//! One summary per instance, from what the phases recorded: where each registration went, what each ENI became, what
//! went wrong, and what a person should know that is not a failure.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use super::admit::Admitted;
use super::context::{Clock, Work};
use super::ledger::{Fate, Ledger};
use crate::changes::{EniChange, EniStatus};
use crate::deadline::elapsed_ms;
use crate::input::InstanceId;
use crate::registration::{TargetRegistration, TargetState};
use crate::steps::verify::Verdict;
use crate::summary::{InstanceInfo, Outcome, Step, StepError, Summary, TargetChange, Timings};
use crate::telemetry::steplog::Tally;

/// The summaries of a run that changed things.
pub fn summaries(
    admitted: &Admitted<'_>,
    ledger: &Ledger,
    mut enis: HashMap<InstanceId, Vec<EniChange>>,
    timings: Timings,
    clock: &Clock,
) -> Vec<Summary> {
    admitted
        .work
        .iter()
        .map(|work| {
            let mut summary = start(work, ledger, &admitted.claims.warnings, &timings, clock);
            summary.network_interfaces = enis.remove(&work.instance.id).unwrap_or_default();
            for registration in ledger.all().filter(|r| r.instance_id == work.instance.id) {
                place(&mut summary, registration, ledger);
            }
            total(summary, clock)
        })
        .collect()
}

/// The summary before its targets: the instance, its trigger, what the locators could not read, and the warnings
/// that are known from the start.
pub fn start(
    work: &Work<'_>,
    ledger: &Ledger,
    claim_warnings: &HashMap<InstanceId, String>,
    timings: &Timings,
    clock: &Clock,
) -> Summary {
    let (request, instance) = (work.request, &work.instance);
    let mut summary = Summary::new(
        InstanceInfo::of(instance),
        request.trigger.clone(),
        Outcome::Failed,
        clock.started_at,
    );
    summary.target_groups_checked = ledger.target_groups_checked;
    summary.swept_by = ledger.swept_by.map(str::to_owned);
    summary.timings_ms = timings.clone();
    summary.warnings.extend(ledger.fast_path_warnings.iter().cloned());
    summary.warnings.extend(claim_warnings.get(&instance.id).cloned());
    if request.trigger.keeps_network() {
        summary
            .warnings
            .push("returns to a warm pool: its network interfaces were left as they are".into());
    }
    for error in &ledger.locate_errors {
        summary.errors.push(StepError {
            step: Step::Locate,
            message: format!("{error}; registrations may remain"),
        });
    }
    let unchecked = ledger.unchecked.iter();
    for group in unchecked.filter(|g| g.vpc_id.is_none() || g.vpc_id == instance.vpc_id) {
        summary.errors.push(StepError {
            step: Step::Locate,
            message: format!(
                "target group {} could not be checked, registrations there may remain: {}",
                group.target_group_name, group.error
            ),
        });
    }
    summary
}

/// File one registration under removed or remaining, with why.
fn place(summary: &mut Summary, registration: &TargetRegistration, ledger: &Ledger) {
    let mut change = target_change(registration);
    change.deregistration_delay_seconds = ledger.delays.get(&registration.target_group_arn).copied();
    change.found_by = ledger.found_by(registration).map(str::to_owned);
    match ledger.fate(registration) {
        Fate::Refused(error) => {
            change.reason = Some(error.to_string());
            summary.errors.push(StepError {
                step: Step::Deregister,
                message: format!("{}: {}", registration.target_group_name, error.reason()),
            });
            summary.remaining.push(change);
        }
        Fate::Seen(Verdict::Deregistered) => {
            change.state = Some(TargetState::Deregistered.as_str().into());
            summary.removed.push(change);
        }
        Fate::Seen(Verdict::Draining) => {
            change.state = Some(TargetState::Draining.as_str().into());
            summary.removed.push(change);
        }
        Fate::Seen(Verdict::Remains { state, reason }) => {
            change.state = Some(state.clone());
            change.reason = reason.clone();
            summary.remaining.push(change);
        }
        Fate::Seen(Verdict::Unknown { error }) => {
            change.reason = Some(format!("could not verify: {error}"));
            summary.errors.push(StepError {
                step: Step::Verify,
                message: format!("{}: {error}", registration.target_group_name),
            });
            summary.remaining.push(change);
        }
        Fate::NotVerified => {
            change.reason = Some("not verified before the deadline".into());
            summary.remaining.push(change);
        }
    }
}

/// The ENIs' errors, the warnings, the outcome and the total time.
pub fn total(mut summary: Summary, clock: &Clock) -> Summary {
    let failed = summary
        .network_interfaces
        .iter()
        .filter(|e| e.status == EniStatus::Failed);
    let errors: Vec<StepError> = failed
        .map(|eni| StepError {
            step: Step::Quarantine,
            message: format!(
                "{}: {}",
                eni.network_interface_id,
                eni.error.as_deref().unwrap_or("failed")
            ),
        })
        .collect();
    summary.errors.extend(errors);
    let caveats: Vec<String> = summary
        .network_interfaces
        .iter()
        .flat_map(|eni| {
            [&eni.note, &eni.warning]
                .into_iter()
                .flatten()
                .map(|w| format!("{}: {w}", eni.network_interface_id))
        })
        .collect();
    summary.warnings.extend(caveats);
    let warnings = warnings(&summary, clock.started_at);
    summary.warnings.extend(warnings);
    summary.settle_outcome();
    summary.timings_ms.total = elapsed_ms(clock.started);
    summary
}

pub fn target_change(registration: &TargetRegistration) -> TargetChange {
    TargetChange {
        target_group_arn: registration.target_group_arn.clone(),
        target_group_name: registration.target_group_name.clone(),
        kind: registration.kind,
        target_id: registration.target_id.clone(),
        port: registration.port,
        availability_zone: registration.availability_zone.clone(),
        state: registration.state.clone(),
        reason: None,
        deregistration_delay_seconds: None,
        found_by: None,
    }
}

/// ENIs walled off (or already so, or gone), against ENIs that could not be changed.
pub fn eni_tally(changes: Option<&Vec<EniChange>>) -> Tally {
    changes
        .into_iter()
        .flatten()
        .map(|change| change.status != EniStatus::Failed)
        .collect()
}

/// Things a person should know that are not failures.
fn warnings(summary: &Summary, now: DateTime<Utc>) -> Vec<String> {
    let mut warnings = Vec::new();
    if let Some(state) = summary.instance.state.as_deref()
        && matches!(state, "shutting-down" | "terminated" | "stopping" | "stopped")
    {
        warnings.push(format!("the instance is already {state}"));
    }
    let Some(terminates_at) = summary.terminates_at else {
        return warnings;
    };
    let left = (terminates_at - now).num_seconds();
    if left <= 0 {
        warnings.push(format!(
            "termination time {} had already passed when cleanup started",
            terminates_at.to_rfc3339()
        ));
    }
    let mut seen = HashSet::new();
    for target in &summary.removed {
        if let Some(delay) = target.deregistration_delay_seconds
            && i64::from(delay) > left.max(0)
            && TargetState::Draining.is(target.state.as_deref())
            && seen.insert(&target.target_group_arn)
        {
            warnings.push(format!(
                "target group {}: draining started, but its deregistration delay is {delay} s and only {} s are left \
                 before termination; requests still in flight then will be cut off",
                target.target_group_name,
                left.max(0)
            ));
        }
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::{Action, Source, Trigger};
    use crate::registration::TargetKind;

    fn summary_with(removed: Vec<TargetChange>, terminates_at: Option<DateTime<Utc>>) -> Summary {
        let trigger = Trigger {
            event_source: Some("aws.ec2".into()),
            action: Some(Action::Terminate),
            ..Trigger::from_source(Source::EventBridge)
        };
        let mut instance = InstanceInfo::id_only(InstanceId::parse("i-0123abcd").unwrap());
        instance.state = Some("running".into());
        let mut summary = Summary::new(instance, trigger, Outcome::Cleaned, Utc::now());
        summary.terminates_at = terminates_at;
        summary.removed = removed;
        summary
    }

    fn draining(name: &str, delay: u32) -> TargetChange {
        TargetChange {
            target_group_arn: format!("arn:{name}"),
            target_group_name: name.into(),
            kind: TargetKind::Instance,
            target_id: "i-0123abcd".into(),
            port: Some(30080),
            availability_zone: None,
            state: Some("draining".into()),
            reason: None,
            deregistration_delay_seconds: Some(delay),
            found_by: None,
        }
    }

    #[test]
    fn warns_when_draining_cannot_finish_before_termination() {
        let now = Utc::now();
        let summary = summary_with(
            vec![draining("slow", 300), draining("slow", 300), draining("quick", 30)],
            Some(now + chrono::Duration::seconds(90)),
        );
        let warnings = warnings(&summary, now);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("target group slow: draining started"));
        assert!(warnings[0].contains("delay is 300 s and only 90 s are left"));
    }

    #[test]
    fn warns_when_the_termination_time_has_passed() {
        let now = Utc::now();
        let summary = summary_with(vec![draining("any", 5)], Some(now - chrono::Duration::seconds(10)));
        let warnings = warnings(&summary, now);
        assert!(warnings[0].contains("had already passed"));
        assert!(warnings[1].contains("only 0 s are left"));
    }
}
