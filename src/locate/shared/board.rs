//! The board's conditional writes, which decide who sweeps a VPC; and the group items a sweep leaves for the others.

use aws_sdk_dynamodb::types::ReturnValue;
use chrono::{DateTime, Utc};

use super::items::{BOARD_SK, Board, Phase, groups_value, read_from_item, read_item, sweep_pk};
use crate::aws::CallError;
use crate::locate::sweep::read::{Candidate, GroupRead};
use crate::store;
use crate::table::{Item, expires_from, s, stamp};

/// What the board said to a cleanup that needs a sweep of a VPC.
#[derive(Debug)]
pub enum Turn {
    /// This cleanup sweeps: nobody is, or the last sweep began before its notice, or its sweeper died.
    Sweep { token: String, started_at: DateTime<Utc> },
    /// Another cleanup is sweeping: wait for it.
    Wait,
    /// A sweep that began after this cleanup's notice is done: use it.
    Use(Board),
}

/// One table's boards.
#[derive(Clone, Debug)]
pub struct Boards {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub table: String,
}

impl Boards {
    /// Take the VPC's sweep, or learn whose it is.
    pub async fn take(&self, vpc: &str, since: DateTime<Utc>, lease_until: DateTime<Utc>) -> Result<Turn, CallError> {
        let token = crate::table::unique_token();
        let now = Utc::now();
        let taken = self
            .dynamodb
            .update_item()
            .table_name(&self.table)
            .key("pk", s(sweep_pk(vpc)))
            .key("sk", s(BOARD_SK))
            .update_expression(
                "SET #token = :token, #state = :running, started_at = :now, lease_until = :until, \
                 wanted_after = :since, expires_at = :expires REMOVE #groups",
            )
            .condition_expression(
                "attribute_not_exists(pk) OR #state = :incomplete OR (#state = :running AND lease_until < :now) \
                 OR (#state = :done AND started_at < :since)",
            )
            .expression_attribute_names("#token", "token")
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#groups", "groups")
            .expression_attribute_values(":token", s(&token))
            .expression_attribute_values(":running", s(Phase::Running.as_str()))
            .expression_attribute_values(":done", s(Phase::Done.as_str()))
            .expression_attribute_values(":incomplete", s(Phase::Incomplete.as_str()))
            .expression_attribute_values(":now", s(stamp(now)))
            .expression_attribute_values(":until", s(stamp(lease_until)))
            .expression_attribute_values(":since", s(stamp(since)))
            .expression_attribute_values(":expires", expires_from(now))
            .send()
            .await;
        match taken.map_err(|e| CallError::new("UpdateItem", &e)) {
            Ok(_) => Ok(Turn::Sweep { token, started_at: now }),
            Err(e) if e.is("ConditionalCheckFailedException") => match self.get(vpc).await? {
                Some(board) if board.phase == Phase::Done => Ok(Turn::Use(board)),
                Some(_) => Ok(Turn::Wait),
                // Deleted in between (its TTL): try again.
                None => Box::pin(self.take(vpc, since, lease_until)).await,
            },
            Err(e) => Err(e),
        }
    }

    /// Ask the running sweep to cover a notice given at `since`: it reads again every group it read before then.
    pub async fn want(&self, vpc: &str, since: DateTime<Utc>) -> Result<(), CallError> {
        let asked = self
            .dynamodb
            .update_item()
            .table_name(&self.table)
            .key("pk", s(sweep_pk(vpc)))
            .key("sk", s(BOARD_SK))
            .update_expression("SET wanted_after = :since")
            .condition_expression("#state = :running AND (attribute_not_exists(wanted_after) OR wanted_after < :since)")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":running", s(Phase::Running.as_str()))
            .expression_attribute_values(":since", s(stamp(since)))
            .send()
            .await;
        match asked.map_err(|e| CallError::new("UpdateItem", &e)) {
            // Already wanted from a later notice, or no longer running: nothing to ask.
            Err(e) if e.is("ConditionalCheckFailedException") => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// The board as it is now (a consistent read).
    pub async fn get(&self, vpc: &str) -> Result<Option<Board>, CallError> {
        let item = store::get_consistent(&self.dynamodb, &self.table, sweep_pk(vpc), BOARD_SK).await?;
        Ok(item.and_then(|item| Board::from_item(&item).ok()))
    }

    /// The sweeper's writes: `set` (an update expression's SET part, with its values), only while it holds the
    /// sweep. False when it no longer does (its lease lapsed and another cleanup took over).
    async fn held_update(
        &self,
        vpc: &str,
        token: &str,
        set: &str,
        values: Vec<(&str, aws_sdk_dynamodb::types::AttributeValue)>,
    ) -> Result<bool, CallError> {
        let mut update = self
            .dynamodb
            .update_item()
            .table_name(&self.table)
            .key("pk", s(sweep_pk(vpc)))
            .key("sk", s(BOARD_SK))
            .update_expression(set)
            .condition_expression("#token = :token")
            .expression_attribute_names("#token", "token")
            .expression_attribute_values(":token", s(token))
            .return_values(ReturnValue::None);
        for (name, value) in values {
            update = update.expression_attribute_values(name, value);
        }
        if set.contains("#state") {
            update = update.expression_attribute_names("#state", "state");
        }
        if set.contains("#groups") {
            update = update.expression_attribute_names("#groups", "groups");
        }
        match update.send().await.map_err(|e| CallError::new("UpdateItem", &e)) {
            Ok(_) => Ok(true),
            Err(e) if e.is("ConditionalCheckFailedException") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Say which groups this sweep covers.
    pub async fn listed(&self, vpc: &str, token: &str, groups: &[Candidate]) -> Result<bool, CallError> {
        self.held_update(
            vpc,
            token,
            "SET #groups = :groups",
            vec![(":groups", groups_value(groups))],
        )
        .await
    }

    pub async fn renew(&self, vpc: &str, token: &str, lease_until: DateTime<Utc>) -> Result<bool, CallError> {
        self.held_update(
            vpc,
            token,
            "SET lease_until = :until",
            vec![(":until", s(stamp(lease_until)))],
        )
        .await
    }

    /// Record how the sweep ended.
    pub async fn close(&self, vpc: &str, token: &str, phase: Phase) -> Result<bool, CallError> {
        let values = vec![(":state", s(phase.as_str())), (":now", s(stamp(Utc::now())))];
        self.held_update(vpc, token, "SET #state = :state, finished_at = :now", values)
            .await
    }

    /// Every group item of the VPC: what the last reads found.
    pub async fn reads(&self, vpc: &str) -> Result<Vec<GroupRead>, CallError> {
        let items: Vec<Item> = store::query(&self.dynamodb, &self.table, &sweep_pk(vpc)).await?;
        Ok(items
            .iter()
            .filter_map(|item| read_from_item(vpc, item).ok().flatten())
            .collect())
    }

    /// Leave reads for the others. A failed write is logged: they then read those groups themselves.
    pub async fn publish(&self, vpc: &str, reads: &[GroupRead]) {
        let now = Utc::now();
        let requests = reads
            .iter()
            .map(|r| store::put_request(read_item(vpc, r, now)))
            .collect();
        let written = store::write_all(&self.dynamodb, &self.table, requests).await;
        for error in written.errors {
            tracing::warn!(vpc, %error, "shared sweep: reads not written");
        }
    }
}
