//! Deregistration as the sweep finds: a group's registrations leave it as soon as the sweep has read that group, not
//! when the whole sweep is done. The last reads of a sweep can come seconds after the first (the Describe* budget
//! paces them, a slow ELB answers each late), and a shared sweep still has its board to keep after them.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::time::Instant;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinSet;

use super::ledger::{self, Key, Ledger};
use crate::aws::CallError;
use crate::deadline::elapsed_ms;
use crate::registration::TargetRegistration;
use crate::steps::deregister;

/// One batch sent while the sweep ran, and DeregisterTargets' answers for it, by target group.
pub struct Batch {
    pub registrations: Vec<TargetRegistration>,
    pub results: BTreeMap<String, Result<(), CallError>>,
}

/// What was sent while the sweep ran.
#[derive(Default)]
pub struct Early {
    pub sent: Vec<Batch>,
    /// From the first call to the last answer.
    pub ms: u64,
}

/// Run `locating` to its end, and meanwhile deregister each batch of registrations it hands over through `batches`
/// that `ledger` (as the phases before left it) says still needs a call. A registration handed over twice is sent
/// once. Returns the locator's answer and what was sent; a batch whose task died is not in it, and stays for the
/// next phase to send.
pub async fn deregister_as_found<T>(
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    concurrency: usize,
    ledger: &Ledger,
    mut batches: UnboundedReceiver<Vec<TargetRegistration>>,
    locating: impl Future<Output = T>,
) -> (T, Early) {
    let mut locating = std::pin::pin!(locating);
    let mut calls = JoinSet::new();
    let mut taken: HashSet<Key> = HashSet::new();
    let mut first: Option<Instant> = None;
    let mut send = |batch: Vec<TargetRegistration>, calls: &mut JoinSet<Batch>| {
        let due: Vec<TargetRegistration> = batch
            .into_iter()
            .filter(|r| ledger.needs_call(r) && taken.insert(ledger::key(r)))
            .collect();
        if due.is_empty() {
            return;
        }
        first.get_or_insert_with(Instant::now);
        let elb = elb.clone();
        calls.spawn(async move {
            let results = deregister::deregister_all(&elb, &due, concurrency).await;
            Batch {
                registrations: due,
                results,
            }
        });
    };
    let answer = loop {
        tokio::select! {
            answer = &mut locating => break answer,
            Some(batch) = batches.recv() => send(batch, &mut calls),
        }
    };
    // What the locator handed over just before it answered.
    batches.close();
    while let Ok(batch) = batches.try_recv() {
        send(batch, &mut calls);
    }
    let mut early = Early::default();
    while let Some(done) = calls.join_next().await {
        if let Ok(sent) = done {
            early.sent.push(sent);
        }
    }
    early.ms = first.map_or(0, elapsed_ms);
    (answer, early)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::mpsc;

    use super::*;
    use crate::testing::*;

    /// The first group's registration is sent while the locator is still reading. One the fast path already removed,
    /// one handed over twice, and one already draining cost no call.
    #[tokio::test]
    async fn a_batch_is_sent_while_the_locator_still_runs_and_each_registration_once() {
        let sent = Sent::new();
        let elb = elb_client(&[&deregister_anything(&sent)]);
        let removed = instance_target("fast", 80, "healthy");
        let mut ledger = Ledger::default();
        ledger.add(vec![removed.clone()], "index");
        ledger.record_sent(std::slice::from_ref(&removed), &BTreeMap::from([(arn("fast"), Ok(()))]));
        let (to, batches) = mpsc::unbounded_channel();
        let web = instance_target("web", 80, "healthy");
        let later = instance_target("later", 80, "healthy");

        let calls_seen = sent.clone();
        let locating = async move {
            to.send(vec![web.clone(), removed.clone()]).unwrap();
            to.send(vec![web.clone(), instance_target("draining", 80, "draining")])
                .unwrap();
            // The rest of the sweep takes a while: the first batch is sent meanwhile.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let sent_before_the_answer = calls_seen.all().len();
            to.send(vec![later.clone()]).unwrap();
            sent_before_the_answer
        };
        let (sent_before_the_answer, early) = deregister_as_found(&elb, 10, &ledger, batches, locating).await;

        assert_eq!(sent_before_the_answer, 1, "sent while the locator ran");
        let mut groups: Vec<String> = sent
            .all()
            .iter()
            .map(|r| r.target_group_arn().unwrap().to_owned())
            .collect();
        groups.sort();
        assert_eq!(
            groups,
            [arn("later"), arn("web")],
            "each registration once, none already gone"
        );
        let mut recorded: Vec<String> = early
            .sent
            .iter()
            .flat_map(|batch| batch.registrations.iter().map(|r| r.target_group_name.clone()))
            .collect();
        recorded.sort();
        assert_eq!(recorded, ["later", "web"]);
        assert!(early.sent.iter().all(|batch| batch.results.values().all(Result::is_ok)));
    }
}
