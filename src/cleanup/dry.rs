//! A dry run (`DRY_RUN=true`): the same reads as a real run, and a plan instead of the writes. The registrations every
//! locator finds are `planned`, each ENI says what it `would-quarantine` to; nothing is claimed, deregistered,
//! quarantined, recorded or completed, and no monitoring system is told. The plan is published like a summary.

use std::sync::Arc;
use std::time::Instant;

use super::admit::Admitted;
use super::assemble;
use super::context::{Clock, Context};
use crate::changes::{EniChange, LifecycleReport};
use crate::deadline::{Deadline, elapsed_ms};
use crate::instance::Instance;
use crate::steps::quarantine;
use crate::summary::Summary;

pub async fn plan(ctx: &Context<'_>, admitted: &Admitted<'_>, clock: &Clock, deadline: Deadline) -> Vec<Summary> {
    let instances: Vec<Instance> = admitted.work.iter().map(|w| w.instance.clone()).collect();
    let mut timings = admitted.timings.clone();
    // The wave's reads, without its writes: every registration found is planned, nothing is sent.
    let tools = ctx.wave_tools();
    let (driving, answers) = ctx.wave.serve(&tools, instances.clone(), true, deadline);
    let ((), deregistrations) = tokio::join!(driving, answers);
    let step = Instant::now();
    let enis = would_quarantine(ctx, &instances).await;
    timings.quarantine = elapsed_ms(step);
    admitted
        .work
        .iter()
        .zip(enis)
        .map(|(work, enis)| {
            let deregistration = assemble::answer_for(&deregistrations, &work.instance.id);
            let mut summary = assemble::start(work, &deregistration, &admitted.claims.warnings, &timings, clock);
            summary.dry_run = true;
            summary.network_interfaces = if work.request.trigger.keeps_network() {
                Vec::new()
            } else {
                enis
            };
            summary.planned = deregistration
                .targets
                .iter()
                .map(|target| {
                    let mut change = assemble::target_change(&target.registration);
                    change.found_by = Some(target.found_by.clone());
                    change.deregistration_delay_seconds = target.delay_seconds;
                    change
                })
                .collect();
            let mut summary = assemble::total(summary, clock);
            if let Some(action) = &work.request.trigger.lifecycle {
                summary.lifecycle = Some(LifecycleReport {
                    hook_name: action.hook_name.clone(),
                    group_name: action.group_name.clone(),
                    ..LifecycleReport::default()
                });
                summary
                    .warnings
                    .push("dry run: the lifecycle action was left for its hook's default result".into());
            }
            summary
        })
        .collect()
}

/// What each instance's ENIs would become, from the same reads a real quarantine makes.
async fn would_quarantine(ctx: &Context<'_>, instances: &[Instance]) -> Vec<Vec<EniChange>> {
    let ec2 = &ctx.clients.ec2;
    let groups = match ctx.quarantine_groups.get(ec2).await {
        Ok(groups) => groups,
        Err(e) => {
            let message = e.to_string();
            return instances
                .iter()
                .map(|i| quarantine::all_unchanged(i, &message))
                .collect();
        }
    };
    let with_enis: Vec<&Instance> = instances.iter().filter(|i| !i.network_interfaces.is_empty()).collect();
    let records = Arc::new(crate::steps::records::recorded_groups(ec2, &with_enis).await);
    instances
        .iter()
        .map(|instance| quarantine::plan(instance, &groups, records.as_ref().as_ref()))
        .collect()
}
