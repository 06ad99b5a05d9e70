//! A wave of interruptions is driven as one: several cleanups, each its own `App` as separate execution environments
//! would be, start at the same moment against moto through the recording proxy, which holds each DescribeTargetHealth
//! a while so that the sweep takes long enough for the others to arrive. With the function's table, one of them drives
//! (it finds, deregisters with one call per group for everyone, and checks) and the others wait for their answers;
//! each summary says how its registrations were found.

use std::time::{Duration, SystemTime};

use lambda_runtime::{Context, LambdaEvent};
use spot_cleanup::{App, Clients, Summary, handle};

use crate::common::fleet::Fleet;
use crate::common::proxy::start_proxy;
use crate::common::{self, Moto};

const TABLE: &str = "spot-cleanup-wave";

/// The sweep's own reads: a DescribeTargetHealth of a whole group (a check of particular targets names them).
fn sweep_reads(calls: &[crate::common::proxy::Call]) -> usize {
    calls
        .iter()
        .filter(|c| c.action == "DescribeTargetHealth" && !c.body.contains("Targets.member"))
        .count()
}

/// How the wave is delivered and what AWS does meanwhile.
#[derive(Clone, Copy, Default)]
struct Conditions {
    /// AWS's documented ELB and EC2 buckets, metered by the proxy.
    metered: bool,
    /// These calls of the table answer only after this, once the index is refreshed; with it, each invocation has a
    /// deadline (`DEADLINE`), which a follower never answered would run into.
    slow_table: Option<(Duration, &'static [&'static str])>,
}

/// An invocation's time under a slow table: shorter than the template's, so that a wave stuck waiting fails soon.
const DEADLINE: Duration = Duration::from_secs(60);

async fn wave(spot: usize, table: Option<&str>) -> (Vec<Summary>, usize, usize) {
    let (summaries, calls, groups) = wave_with(spot, table, Conditions::default()).await;
    (summaries, sweep_reads(&calls), groups)
}

/// A wave with the table and the index refreshed, behind AWS's documented buckets.
async fn wave_metered(spot: usize) -> (Vec<Summary>, Vec<crate::common::proxy::Call>, usize) {
    let metered = Conditions {
        metered: true,
        ..Conditions::default()
    };
    wave_with(spot, Some(TABLE), metered).await
}

async fn wave_with(
    spot: usize,
    table: Option<&str>,
    conditions: Conditions,
) -> (Vec<Summary>, Vec<crate::common::proxy::Call>, usize) {
    let moto = Moto::start();
    let direct = moto.sdk_config().await;
    if let Some(table) = table {
        common::create_index_table(&direct, table).await;
    }
    let fleet = Fleet::build(&direct, spot).await;
    let proxy = start_proxy(&moto.endpoint);
    proxy.slow_down("DescribeTargetHealth", Duration::from_millis(300));
    let shared = common::sdk_config_for(&proxy.endpoint).await;
    let extra: Vec<(&str, &str)> = table.map(|t| ("REGISTRATION_INDEX_TABLE", t)).into_iter().collect();
    let apps: Vec<App> = (0..spot)
        .map(|_| App::new(fleet.config_with(&extra).unwrap(), Clients::from_shared(&shared)))
        .collect();
    let groups = fleet.target_groups.len();
    if table.is_some() {
        // The template's schedule keeps the index filled: the fast path then knows every registration.
        let refresh = common::event_for("scheduled-refresh.json", "i-0123456789abcdef0");
        handle(&apps[0], LambdaEvent::new(refresh, Context::default()))
            .await
            .expect("refreshed");
    }
    let before = fleet.registrations().await;
    proxy.calls.clear();
    if conditions.metered {
        proxy.meter_aws_buckets();
    }
    let mut context = Context::default();
    if let Some((by, actions)) = conditions.slow_table {
        for action in actions {
            proxy.slow_down(action, by);
        }
        let end = SystemTime::now() + DEADLINE;
        context.deadline = end.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis() as u64;
    }

    let answers = futures_join(apps.iter().zip(&fleet.spot).map(|(app, node)| {
        let event = common::event_for("spot-interruption-terminate.json", &node.id);
        let context = context.clone();
        async move { handle(app, LambdaEvent::new(event, context)).await }
    }))
    .await;

    let summaries: Vec<Summary> = answers
        .into_iter()
        .map(|a| serde_json::from_value::<Summary>(a.expect("cleaned")).unwrap())
        .collect();
    for (summary, node) in summaries.iter().zip(&fleet.spot) {
        assert_eq!(summary.outcome.as_str(), "cleaned", "{summary:#?}");
        assert_eq!(common::removed(summary), fleet.registrations_of(node, &before));
    }
    for node in &fleet.spot {
        assert!(fleet.registrations_of(node, &fleet.registrations().await).is_empty());
    }
    (summaries, proxy.calls.calls(), groups)
}

/// Poll every future to the end side by side, in this task (the handler's future borrows its `App`).
async fn futures_join<F: std::future::Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut pending: Vec<Option<std::pin::Pin<Box<F>>>> = futures.into_iter().map(|f| Some(Box::pin(f))).collect();
    let mut results: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        for (slot, result) in pending.iter_mut().zip(results.iter_mut()) {
            if let Some(future) = slot
                && let std::task::Poll::Ready(output) = future.as_mut().poll(cx)
            {
                *result = Some(output);
                *slot = None;
            }
        }
        if pending.iter().all(Option::is_none) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    results.into_iter().flatten().collect()
}

fn found_by(summary: &Summary) -> Vec<&str> {
    let mut by: Vec<&str> = summary.removed.iter().filter_map(|t| t.found_by.as_deref()).collect();
    by.dedup();
    by
}

/// Four cleanups at once with the table (and the index the template's schedule keeps filled): one driver serves all
/// four. Each group is read about once: a group the index named is read after its call, so that read is the check
/// too, and a few are read again because they were read before the last of the four was ready for them.
#[tokio::test]
async fn four_interruptions_at_once_share_one_wave() {
    let (summaries, reads, groups) = wave(4, Some(TABLE)).await;
    assert!(
        reads <= groups + 3,
        "{reads} reads of {groups} groups: about one sweep for all four"
    );
    let ways: Vec<Vec<&str>> = summaries.iter().map(found_by).collect();
    // The index found every registration first; the sweep, one cleanup's, found nothing more.
    assert!(ways.iter().all(|w| w == &["index"]), "{ways:?}");
    let mut swept_by: Vec<&str> = summaries.iter().filter_map(|s| s.swept_by.as_deref()).collect();
    swept_by.sort();
    assert_eq!(swept_by, ["shared-sweep", "shared-sweep", "shared-sweep", "sweep"]);
}

/// The same wave without a table: each cleanup drives its own wave, sweeps alone, and then checks the three groups it
/// left: seven reads each.
#[tokio::test]
async fn without_the_table_each_interruption_drives_alone() {
    let (summaries, reads, groups) = wave(4, None).await;
    assert_eq!(reads, 4 * (groups + 3));
    assert!(
        summaries
            .iter()
            .all(|s| found_by(s) == ["sweep"] && s.swept_by.as_deref() == Some("sweep"))
    );
}

/// The same wave behind a proxy that meters AWS's documented ELB and EC2 buckets, shared by the six cleanups as an
/// account shares them: one call per group for all of them, so nothing is throttled.
#[tokio::test]
async fn six_interruptions_at_once_stay_inside_the_accounts_buckets() {
    let (summaries, calls, groups) = wave_metered(6).await;
    let throttled: Vec<&crate::common::proxy::Call> = calls.iter().filter(|c| c.failed).collect();
    assert!(
        throttled.is_empty(),
        "{:?}",
        throttled.iter().map(|c| &c.action).collect::<Vec<_>>()
    );
    let deregistrations = calls.iter().filter(|c| c.action == "DeregisterTargets").count();
    assert!(
        deregistrations <= 2 * 3,
        "{deregistrations} DeregisterTargets for 6 nodes in 3 groups each"
    );
    let reads = sweep_reads(&calls);
    assert!(reads <= 2 * groups, "{reads} reads of {groups} groups");
    assert_eq!(summaries.len(), 6);
}

/// The table's reads: the index's and the roster's queries (Query), and the followers' looks (BatchGetItem).
const TABLE_READS: &[&str] = &["Query", "BatchGetItem"];
/// The batched writes too: the posts on the roster, and the driver's answers (BatchWriteItem). The claim's and the
/// driver lease's single-item writes stay quick.
const TABLE_READS_AND_WRITES: &[&str] = &["Query", "BatchGetItem", "BatchWriteItem"];

/// The same wave while the table answers slower than a dependency's attempt may take (`calls` of it, 1.5 s each):
/// the index's query is given up, and DynamoDB is treated as unavailable for the rest of the invocation. The roster
/// is the wave's coordination, not a dependency, so it waits for the table's answers: one driver still serves all
/// four, every follower gets its answer, and nobody drives alone.
async fn a_slow_table_still_coordinates_the_wave(calls: &'static [&'static str]) {
    let slow = Conditions {
        metered: true,
        slow_table: Some((Duration::from_millis(1500), calls)),
    };
    let (summaries, calls, _) = wave_with(4, Some(TABLE), slow).await;
    let deregistrations = calls.iter().filter(|c| c.action == "DeregisterTargets").count();
    assert!(
        deregistrations <= 2 * 3,
        "{deregistrations} DeregisterTargets for 4 nodes in 3 groups each: some drove alone"
    );
    let mut swept_by: Vec<&str> = summaries.iter().filter_map(|s| s.swept_by.as_deref()).collect();
    swept_by.sort();
    assert_eq!(swept_by, ["shared-sweep", "shared-sweep", "shared-sweep", "sweep"]);
}

/// The followers' looks and the driver's own index query slower than a dependency's attempt: the looks go on, and
/// the driver's answers are written, though the table is down for the claim and the index.
#[tokio::test]
async fn a_table_slow_to_read_still_answers_every_follower() {
    a_slow_table_still_coordinates_the_wave(TABLE_READS).await;
}

/// The posts too: a cleanup joins the wave on a table slower than a dependency's attempt, rather than drive alone.
#[tokio::test]
async fn a_table_slow_to_read_and_write_still_takes_every_cleanup_in() {
    a_slow_table_still_coordinates_the_wave(TABLE_READS_AND_WRITES).await;
}
