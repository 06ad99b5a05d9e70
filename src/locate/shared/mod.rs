//! A sweep shared by the cleanups that run at the same time. Spot takes capacity back by pool, so interruptions come
//! in waves, each delivered on its own (a node agent per node, one EventBridge event per instance) to its own
//! execution environment. Swept alone, N of them cost N sweeps from the account's one Describe* budget, and throttle
//! each other into failing. Shared, a wave costs about one.
//!
//! Per VPC, a board in the function's table (`items`) says who sweeps. A cleanup that needs a sweep:
//! - takes it when nobody sweeps, when the last sweep covered only notices older than its own, or when the last
//!   sweeper stopped renewing its lease (it died) or gave up at its deadline;
//! - else waits for the running sweep, first asking it to cover its own notice (`wanted_after`);
//! - and then reads the result: each group's whole target list as the sweeper read it, left in the table. A group
//!   read before this cleanup's notice is read again by it (and left for the others); so is one the sweeper could
//!   not read.
//!
//! The sweeper reads every group, leaving each read in the table as it goes, then reads again, once, the groups it
//! read before the latest notice of those waiting (the first seconds of a sweep, while the wave is still arriving),
//! and marks the board done. A lone interruption takes the board and sweeps as it would alone; the board's writes
//! run beside its reads.

mod board;
mod items;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::task::{JoinHandle, JoinSet};

use super::sweep::found::Found;
use super::sweep::read::{Candidate, GroupRead, Outcome, Reader};
use super::sweep::{Wanted, list_target_groups};
use super::{LocateError, LocateFuture, Located, Locator};
use crate::aws::join_all;
use crate::deadline::Deadline;
use crate::instance::Instance;
use board::{Boards, Turn};
use items::{Board, Phase};

/// How often a waiting cleanup looks at the board.
const POLL: Duration = Duration::from_millis(500);
/// Groups read between two writes of their reads to the table.
const CHUNK: usize = 40;

pub struct SharedSweep {
    reader: Reader,
    boards: Boards,
    /// How long a sweeper is taken for alive without renewing its lease (`CLAIM_LEASE_SECONDS`, as for the delivery
    /// markers: how long one that died can hold up the others); it renews three times as often.
    lease: Duration,
}

impl SharedSweep {
    pub fn new(reader: Reader, dynamodb: aws_sdk_dynamodb::Client, table: String, lease: Duration) -> Self {
        SharedSweep {
            reader,
            boards: Boards { dynamodb, table },
            lease,
        }
    }
}

impl Locator for SharedSweep {
    fn name(&self) -> &'static str {
        "shared-sweep"
    }

    fn locate<'a>(&'a self, instances: &'a [Instance], since: DateTime<Utc>, deadline: Deadline) -> LocateFuture<'a> {
        self.locate_handing(instances, since, deadline, Found::nowhere())
    }

    fn locate_handing<'a>(
        &'a self,
        instances: &'a [Instance],
        since: DateTime<Utc>,
        deadline: Deadline,
        found: Found,
    ) -> LocateFuture<'a> {
        Box::pin(async move { self.locate_all(instances, since, deadline, &found).await })
    }
}

/// Whose reads a VPC's registrations came from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Whose {
    Own,
    Shared,
}

impl SharedSweep {
    async fn locate_all(
        &self,
        instances: &[Instance],
        since: DateTime<Utc>,
        deadline: Deadline,
        found: &Found,
    ) -> Result<Located, LocateError> {
        let wanted = Wanted::new(instances);
        if wanted.any_vpc {
            // Groups cannot be told apart by VPC: no board covers them.
            let groups = list_target_groups(&self.reader.elb).await?;
            let reads = self
                .reader
                .read(wanted.candidates(&groups), deadline, found.hand())
                .await;
            let mut located = wanted.located(&reads, true);
            located.found_by = Some("sweep");
            return Ok(located);
        }
        let mut vpcs: Vec<&String> = wanted.vpcs().collect();
        vpcs.sort();
        let per_vpc = join_all(vpcs.iter().map(|vpc| self.vpc(vpc, since, deadline, found))).await;
        let mut reads = Vec::new();
        let mut whose = Whose::Own;
        for answer in per_vpc {
            let (vpc_reads, vpc_whose) = answer?;
            reads.extend(vpc_reads);
            if vpc_whose == Whose::Shared {
                whose = Whose::Shared;
            }
        }
        let mut located = wanted.located(&reads, true);
        located.found_by = Some(if whose == Whose::Own { "sweep" } else { "shared-sweep" });
        Ok(located)
    }

    /// The reads of every group of one VPC, fresh for a notice given at `since`.
    async fn vpc(
        &self,
        vpc: &str,
        since: DateTime<Utc>,
        deadline: Deadline,
        found: &Found,
    ) -> Result<(Vec<GroupRead>, Whose), LocateError> {
        loop {
            let turn = match self.boards.take(vpc, since, lease_until(self.lease, deadline)).await {
                Ok(turn) => turn,
                Err(error) => {
                    tracing::warn!(vpc, %error, "shared sweep: the board could not be used, sweeping alone");
                    return Ok((self.alone(vpc, deadline, found).await?, Whose::Own));
                }
            };
            let board = match turn {
                Turn::Sweep { token, started_at } => {
                    tracing::info!(vpc, "shared sweep: sweeping");
                    let reads = self.sweep(vpc, &token, started_at, since, deadline, found).await?;
                    return Ok((reads, Whose::Own));
                }
                Turn::Use(board) => board,
                Turn::Wait => {
                    tracing::info!(vpc, "shared sweep: waiting for the running sweep");
                    if let Err(error) = self.boards.want(vpc, since).await {
                        tracing::warn!(vpc, %error, "shared sweep: could not ask the sweep to cover this notice");
                    }
                    match self.wait(vpc, deadline).await {
                        Waited::Done(board) => board,
                        Waited::Lapsed if !deadline.passed() => continue,
                        Waited::Lapsed | Waited::Deadline => match self.boards.get(vpc).await {
                            Ok(Some(board)) => board,
                            _ => return Ok((self.alone(vpc, deadline, found).await?, Whose::Own)),
                        },
                        Waited::Failed => return Ok((self.alone(vpc, deadline, found).await?, Whose::Own)),
                    }
                }
            };
            return Ok((self.use_board(vpc, board, since, deadline, found).await?, Whose::Shared));
        }
    }

    /// Without the board: this VPC's groups, read by this cleanup alone.
    async fn alone(&self, vpc: &str, deadline: Deadline, found: &Found) -> Result<Vec<GroupRead>, LocateError> {
        let groups = list_target_groups(&self.reader.elb).await?;
        Ok(self.reader.read(in_vpc(&groups, vpc), deadline, found.hand()).await)
    }

    /// Sweep the VPC for everyone: every group read after the latest notice waiting on it.
    async fn sweep(
        &self,
        vpc: &str,
        token: &str,
        started_at: DateTime<Utc>,
        since: DateTime<Utc>,
        deadline: Deadline,
        found: &Found,
    ) -> Result<Vec<GroupRead>, LocateError> {
        let _renewing = self.keep(vpc, token, deadline);
        let (listed, earlier) = tokio::join!(list_target_groups(&self.reader.elb), self.boards.reads(vpc));
        let candidates = match listed {
            Ok(groups) => in_vpc(&groups, vpc),
            Err(error) => {
                let _ = self.boards.close(vpc, token, Phase::Incomplete).await;
                return Err(error.into());
            }
        };
        let mut writes = JoinSet::new();
        self.list_on_board(&mut writes, vpc, token, &candidates);
        // What a sweeper that died left behind is still good if it was read after the notice.
        let mut reads: BTreeMap<String, GroupRead> = earlier
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.read_at >= since && !matches!(r.outcome, Outcome::Failed(_)))
            .map(|r| (r.candidate.arn.clone(), r))
            .collect();
        reads.values().for_each(|read| found.read(read));
        let covered = self
            .read_pending(vpc, token, &candidates, &mut reads, Ask { since, deadline, found })
            .await;
        while writes.join_next().await.is_some() {}
        let complete = candidates.iter().all(|c| {
            reads
                .get(&c.arn)
                .is_some_and(|r| r.read_at >= covered && !matches!(r.outcome, Outcome::Failed(_)))
        });
        let phase = if complete { Phase::Done } else { Phase::Incomplete };
        if let Err(error) = self.boards.close(vpc, token, phase).await {
            tracing::warn!(vpc, %error, "shared sweep: the board was not updated; it lapses with the lease");
        }
        tracing::info!(
            vpc,
            groups = candidates.len(),
            done = complete,
            since_start_ms = (Utc::now() - started_at).num_milliseconds(),
            "shared sweep: swept"
        );
        Ok(candidates.iter().filter_map(|c| reads.remove(&c.arn)).collect())
    }

    /// List the candidates on the board, in the background: those who come to wait see what is being swept.
    fn list_on_board(&self, writes: &mut JoinSet<()>, vpc: &str, token: &str, candidates: &[Candidate]) {
        let (boards, vpc, token, candidates) = (
            self.boards.clone(),
            vpc.to_owned(),
            token.to_owned(),
            candidates.to_vec(),
        );
        writes.spawn(async move {
            if let Err(error) = boards.listed(&vpc, &token, &candidates).await {
                tracing::warn!(vpc, %error, "shared sweep: the groups were not listed on the board");
            }
        });
    }

    /// Read every candidate not read since `since`, chunk by chunk, each chunk published on the board as it comes;
    /// then again for the notices of those that came to wait meanwhile. Returns the notice time the reads cover, once
    /// every chunk is on the board.
    async fn read_pending(
        &self,
        vpc: &str,
        token: &str,
        candidates: &[Candidate],
        reads: &mut BTreeMap<String, GroupRead>,
        ask: Ask<'_>,
    ) -> DateTime<Utc> {
        let Ask { since, deadline, found } = ask;
        let mut writes = JoinSet::new();
        let mut covered = since;
        loop {
            let pending: Vec<Candidate> = candidates
                .iter()
                .filter(|c| reads.get(&c.arn).is_none_or(|r| r.read_at < covered))
                .cloned()
                .collect();
            if pending.is_empty() || deadline.passed() {
                break;
            }
            for chunk in pending.chunks(CHUNK) {
                let read = self.reader.read(chunk.to_vec(), deadline, found.hand()).await;
                let (boards, vpc, published) = (self.boards.clone(), vpc.to_owned(), read.clone());
                writes.spawn(async move { boards.publish(&vpc, &published).await });
                reads.extend(read.into_iter().map(|r| (r.candidate.arn.clone(), r)));
            }
            // Cover the notices of those that came to wait meanwhile.
            let wanted = match self.boards.get(vpc).await {
                Ok(Some(board)) if board.token == token => board.wanted_after.unwrap_or(since),
                _ => covered,
            };
            if wanted <= covered {
                break;
            }
            covered = wanted;
        }
        while writes.join_next().await.is_some() {}
        covered
    }

    /// Renew the sweeper's lease until the returned guard is dropped.
    fn keep(&self, vpc: &str, token: &str, deadline: Deadline) -> Renewing {
        let (boards, vpc, token, lease) = (self.boards.clone(), vpc.to_owned(), token.to_owned(), self.lease);
        Renewing(tokio::spawn(async move {
            loop {
                tokio::time::sleep(lease / 3).await;
                match boards.renew(&vpc, &token, lease_until(lease, deadline)).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(vpc, "shared sweep: another cleanup took the sweep over");
                        return;
                    }
                    Err(error) => tracing::warn!(vpc, %error, "shared sweep: lease not renewed"),
                }
            }
        }))
    }

    /// Wait until the running sweep is done, or its sweeper stops (it died, or its deadline came).
    async fn wait(&self, vpc: &str, deadline: Deadline) -> Waited {
        loop {
            if !deadline.within(POLL) {
                return Waited::Deadline;
            }
            tokio::time::sleep(POLL).await;
            match self.boards.get(vpc).await {
                Ok(Some(board)) if board.phase == Phase::Done => return Waited::Done(board),
                Ok(Some(board)) if board.is_live(Utc::now()) => {}
                Ok(_) => return Waited::Lapsed,
                Err(error) => {
                    tracing::warn!(vpc, %error, "shared sweep: the board could not be read");
                    return Waited::Failed;
                }
            }
        }
    }

    /// A finished (or abandoned) sweep's reads: those made after `since` as they are, the others read again here and
    /// left for the next.
    async fn use_board(
        &self,
        vpc: &str,
        board: Board,
        since: DateTime<Utc>,
        deadline: Deadline,
        found: &Found,
    ) -> Result<Vec<GroupRead>, LocateError> {
        let Some(listed) = board.groups else {
            return self.alone(vpc, deadline, found).await;
        };
        let mut on_board: BTreeMap<String, GroupRead> = match self.boards.reads(vpc).await {
            Ok(reads) => reads.into_iter().map(|r| (r.candidate.arn.clone(), r)).collect(),
            Err(error) => {
                tracing::warn!(vpc, %error, "shared sweep: its reads could not be fetched");
                BTreeMap::new()
            }
        };
        let mut fresh = Vec::new();
        let mut stale = Vec::new();
        for mut candidate in listed {
            candidate.vpc_id = Some(vpc.to_owned());
            match on_board.remove(&candidate.arn) {
                Some(read) if read.read_at >= since && !matches!(read.outcome, Outcome::Failed(_)) => {
                    found.read(&read);
                    fresh.push(read);
                }
                _ => stale.push(candidate),
            }
        }
        if !stale.is_empty() {
            tracing::info!(
                vpc,
                groups = stale.len(),
                "shared sweep: reading again what was read before this notice"
            );
            let again = self.reader.read(stale, deadline, found.hand()).await;
            self.boards.publish(vpc, &again).await;
            fresh.extend(again);
        }
        Ok(fresh)
    }
}

/// What the sweeping cleanup asks of its reads: fresh for its notice at `since`, by `deadline`, each registration of
/// its instances handed to `found` as it is read.
struct Ask<'f> {
    since: DateTime<Utc>,
    deadline: Deadline,
    found: &'f Found,
}

enum Waited {
    Done(Board),
    Lapsed,
    Deadline,
    Failed,
}

/// Aborts the renewal task when the sweep ends, however it ends.
struct Renewing(JoinHandle<()>);

impl Drop for Renewing {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A lease taken or renewed now: `lease` from now, never past the invocation's end.
fn lease_until(lease: Duration, deadline: Deadline) -> DateTime<Utc> {
    let length = deadline.end_left().map_or(lease, |left| lease.min(left));
    Utc::now() + chrono::Duration::from_std(length).unwrap_or(chrono::Duration::seconds(10))
}

fn in_vpc(groups: &[aws_sdk_elasticloadbalancingv2::types::TargetGroup], vpc: &str) -> Vec<Candidate> {
    groups
        .iter()
        .filter(|g| g.vpc_id() == Some(vpc))
        .filter_map(Candidate::of)
        .collect()
}
