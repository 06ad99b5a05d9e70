//! One summary per instance, from what the wave answered and the quarantine did: where each registration went, what
//! each ENI became, what went wrong, and what a person should know that is not a failure.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use super::admit::Admitted;
use super::context::{Clock, Deregistrations, Work};
use crate::changes::{EniChange, EniStatus};
use crate::deadline::elapsed_ms;
use crate::input::InstanceId;
use crate::registration::{TargetRegistration, TargetState};
use crate::steps::verify::{Verdict, leaving};
use crate::summary::{InstanceInfo, Outcome, Step, StepError, Summary, TargetChange, Timings};
use crate::telemetry::steplog::{StepLog, Tally};
use crate::wave::{Deregistration, Fate, Target};

/// The summaries of a run that changed things.
pub fn summaries(
    admitted: &Admitted<'_>,
    deregistrations: &Deregistrations,
    mut enis: HashMap<InstanceId, Vec<EniChange>>,
    timings: Timings,
    clock: &Clock,
) -> Vec<Summary> {
    admitted
        .work
        .iter()
        .map(|work| {
            let deregistration = answer_for(deregistrations, &work.instance.id);
            let mut summary = start(work, &deregistration, &admitted.claims.warnings, &timings, clock);
            summary.network_interfaces = enis.remove(&work.instance.id).unwrap_or_default();
            for target in &deregistration.targets {
                place(&mut summary, target);
            }
            total(summary, clock)
        })
        .collect()
}

/// The wave's answer for an instance; one it did not answer (its task died) is reported as not done.
pub fn answer_for(deregistrations: &Deregistrations, id: &InstanceId) -> Deregistration {
    deregistrations
        .get(id)
        .cloned()
        .unwrap_or_else(Deregistration::unanswered)
}

/// The summary before its targets: the instance, its trigger, what could not be read, and the warnings that are known
/// from the start.
pub fn start(
    work: &Work<'_>,
    deregistration: &Deregistration,
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
    summary.target_groups_checked = deregistration.target_groups_checked;
    summary.swept_by = Some(deregistration.swept_by.clone());
    let wave = &deregistration.timings;
    summary.timings_ms = Timings {
        fast_locate: wave.fast_locate,
        locate: wave.locate,
        deregister: wave.deregister,
        verify: wave.verify,
        ..timings.clone()
    };
    summary
        .warnings
        .extend(deregistration.fast_path_warnings.iter().cloned());
    summary.warnings.extend(claim_warnings.get(&instance.id).cloned());
    if request.trigger.keeps_network() {
        summary
            .warnings
            .push("returns to a warm pool: its network interfaces were left as they are".into());
    }
    for error in &deregistration.locate_errors {
        summary.errors.push(StepError {
            step: Step::Locate,
            message: format!("{error}; registrations may remain"),
        });
    }
    for group in &deregistration.unchecked {
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
fn place(summary: &mut Summary, target: &Target) {
    let registration = &target.registration;
    let mut change = target_change(registration);
    change.deregistration_delay_seconds = target.delay_seconds;
    change.found_by = Some(target.found_by.clone());
    match &target.fate {
        // A dry run lists its plan itself (`dry`).
        Fate::Planned => summary.planned.push(change),
        Fate::Refused { .. } => {
            let error = target.fate.refusal().expect("a refusal");
            change.reason = Some(error.to_string());
            summary.errors.push(StepError {
                step: Step::Deregister,
                message: format!("{}: {}", registration.target_group_name, error.reason()),
            });
            summary.remaining.push(change);
        }
        Fate::Seen { verdict } => match verdict {
            Verdict::Deregistered => {
                change.state = Some(TargetState::Deregistered);
                summary.removed.push(change);
            }
            Verdict::Draining => {
                change.state = Some(TargetState::DRAINING);
                summary.removed.push(change);
            }
            Verdict::Remains { state, reason } => {
                change.state = Some(state.clone());
                change.reason = reason.clone();
                summary.remaining.push(change);
            }
            Verdict::Unknown { error } => {
                change.reason = Some(format!("could not verify: {error}"));
                summary.errors.push(StepError {
                    step: Step::Verify,
                    message: format!("{}: {error}", registration.target_group_name),
                });
                summary.remaining.push(change);
            }
        },
        Fate::NotVerified => {
            change.reason = Some("not verified before the deadline".into());
            summary.remaining.push(change);
        }
    }
}

/// One log line per step and instance: what the fast locators found and what left, what was walled off, what the
/// sweep found, what the calls carried, and what the checks saw.
pub fn log_steps(
    log: &StepLog,
    deregistrations: &Deregistrations,
    enis: &HashMap<InstanceId, Vec<EniChange>>,
    quarantine_ms: u64,
) {
    let of = |id: &InstanceId| answer_for(deregistrations, id);
    let ms = |f: fn(&Deregistration) -> u64| deregistrations.values().map(f).max().unwrap_or_default();
    let sent = |d: &Deregistration, fast: bool| -> Tally {
        d.targets
            .iter()
            .filter(|t| (t.found_by == "index" || t.found_by == "auto-scaling") == fast)
            .filter_map(|t| match &t.fate {
                Fate::Refused { .. } => Some(false),
                Fate::Seen { .. } | Fate::NotVerified if t.registration.state.as_ref().and_then(leaving).is_none() => {
                    Some(true)
                }
                _ => None,
            })
            .collect()
    };
    log.step("fast-path", ms(|d| d.timings.fast_locate), |id| sent(&of(id), true));
    log.step("quarantine", quarantine_ms, |id| eni_tally(enis.get(id)));
    log.step("locate", ms(|d| d.timings.locate), |id| {
        let d = of(id);
        Tally::new(d.targets.len(), d.unchecked.len() + d.locate_errors.len())
    });
    log.step("deregister", ms(|d| d.timings.deregister), |id| sent(&of(id), false));
    log.step("verify", ms(|d| d.timings.verify), |id| {
        of(id)
            .targets
            .iter()
            .filter_map(|t| match &t.fate {
                Fate::Seen {
                    verdict: Verdict::Deregistered | Verdict::Draining,
                } => Some(true),
                Fate::Seen { .. } | Fate::NotVerified => Some(false),
                _ => None,
            })
            .collect()
    });
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
            && target.state == Some(TargetState::DRAINING)
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
            state: Some(TargetState::DRAINING),
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
