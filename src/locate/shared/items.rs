//! How a shared sweep lives in the function's table, under pk `sweep#<vpc id>` (see `table::SWEEP_PK_PREFIX`):
//!
//! - the board, sk `sweep`: who sweeps (`token`), `state` (`running`, `done`, `incomplete`), when it started
//!   (`started_at`), until when its sweeper is known to be alive (`lease_until`, renewed as it works), the latest
//!   notice a cleanup waiting on it was given (`wanted_after`), and the groups it listed (`groups`, each
//!   `kind|ARN|name`);
//! - one item per target group, sk `group#<ARN>`: when it was read (`read_at`), and what it held (`targets`, each
//!   `id|port|zone|state`), or that it is gone, or why it could not be read.
//!
//! Times are `table::stamp`s, so strings compare in time order in condition expressions. Every item expires a day
//! after it was last written.

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};

use crate::locate::sweep::read::{Candidate, GroupRead, Outcome, Seen};
use crate::registration::TargetKind;
use crate::table::{Item, ItemError, SWEEP_PK_PREFIX, TTL_ATTRIBUTE, expires_from, s, stamp, text, time};

pub const BOARD_SK: &str = "sweep";
const GROUP_SK_PREFIX: &str = "group#";

pub fn sweep_pk(vpc: &str) -> String {
    format!("{SWEEP_PK_PREFIX}{vpc}")
}

/// How far a sweep got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Running,
    /// Every listed group was read after `wanted_after`.
    Done,
    /// Its sweeper stopped before that (its deadline came): whoever needs it next takes over.
    Incomplete,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Running => "running",
            Phase::Done => "done",
            Phase::Incomplete => "incomplete",
        }
    }

    fn parse(value: &str) -> Option<Self> {
        [Phase::Running, Phase::Done, Phase::Incomplete]
            .into_iter()
            .find(|p| p.as_str() == value)
    }
}

/// The board, as read.
#[derive(Clone, Debug, PartialEq)]
pub struct Board {
    pub token: String,
    pub phase: Phase,
    pub started_at: DateTime<Utc>,
    pub lease_until: DateTime<Utc>,
    pub wanted_after: Option<DateTime<Utc>>,
    /// None until the sweeper has listed the groups.
    pub groups: Option<Vec<Candidate>>,
}

impl Board {
    pub fn from_item(item: &Item) -> Result<Self, ItemError> {
        let phase = text(item, "state")?;
        let groups = match item.get("groups") {
            None => None,
            Some(AttributeValue::L(values)) => Some(
                values
                    .iter()
                    .map(|v| {
                        v.as_s()
                            .map_err(|_| ItemError::NotText("groups".into()))
                            .and_then(|g| candidate(g))
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            Some(_) => return Err(ItemError::Inconsistent("groups is not a list".into())),
        };
        Ok(Board {
            token: text(item, "token")?.to_owned(),
            phase: Phase::parse(phase).ok_or_else(|| ItemError::Inconsistent(format!("state {phase:?}")))?,
            started_at: time(item, "started_at")?,
            lease_until: time(item, "lease_until")?,
            wanted_after: item
                .contains_key("wanted_after")
                .then(|| time(item, "wanted_after"))
                .transpose()?,
            groups,
        })
    }

    /// Its sweeper is alive, as far as anyone can tell.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.phase == Phase::Running && self.lease_until >= now
    }
}

/// The listed groups, for the board.
pub fn groups_value(groups: &[Candidate]) -> AttributeValue {
    AttributeValue::L(
        groups
            .iter()
            .map(|g| s(format!("{}|{}|{}", kind_name(g.kind), g.arn, g.name)))
            .collect(),
    )
}

fn candidate(value: &str) -> Result<Candidate, ItemError> {
    let bad = || ItemError::Unreadable {
        attribute: "groups",
        reason: format!("{value:.80} is not kind|ARN|name"),
    };
    let mut parts = value.splitn(3, '|');
    let (Some(kind), Some(arn), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    Ok(Candidate {
        kind: parse_kind(kind).ok_or_else(bad)?,
        arn: arn.to_owned(),
        name: name.to_owned(),
        vpc_id: None,
    })
}

/// A group as read, as its item.
pub fn read_item(vpc: &str, read: &GroupRead, now: DateTime<Utc>) -> Item {
    let mut item = Item::new();
    item.insert("pk".into(), s(sweep_pk(vpc)));
    item.insert("sk".into(), s(format!("{GROUP_SK_PREFIX}{}", read.candidate.arn)));
    item.insert("name".into(), s(&read.candidate.name));
    item.insert("kind".into(), s(kind_name(read.candidate.kind)));
    item.insert("read_at".into(), s(stamp(read.read_at)));
    match &read.outcome {
        Outcome::Targets(seen) => {
            item.insert("outcome".into(), s("targets"));
            let targets = seen.iter().map(|t| s(target_text(t))).collect();
            item.insert("targets".into(), AttributeValue::L(targets));
        }
        Outcome::Gone => {
            item.insert("outcome".into(), s("gone"));
        }
        Outcome::Failed(error) => {
            item.insert("outcome".into(), s("failed"));
            item.insert("error".into(), s(error));
        }
    }
    item.insert(TTL_ATTRIBUTE.into(), expires_from(now));
    item
}

/// Read back what `read_item` wrote; None for the board itself.
pub fn read_from_item(vpc: &str, item: &Item) -> Result<Option<GroupRead>, ItemError> {
    let Some(arn) = text(item, "sk")?.strip_prefix(GROUP_SK_PREFIX) else {
        return Ok(None);
    };
    let kind = text(item, "kind")?;
    let candidate = Candidate {
        arn: arn.to_owned(),
        name: text(item, "name")?.to_owned(),
        kind: parse_kind(kind).ok_or_else(|| ItemError::Inconsistent(format!("kind {kind:?}")))?,
        vpc_id: Some(vpc.to_owned()),
    };
    let outcome = match text(item, "outcome")? {
        "targets" => {
            let values = match item.get("targets") {
                Some(AttributeValue::L(values)) => values.as_slice(),
                None => &[],
                Some(_) => return Err(ItemError::Inconsistent("targets is not a list".into())),
            };
            let seen = values
                .iter()
                .map(|v| {
                    v.as_s()
                        .map_err(|_| ItemError::NotText("targets".into()))
                        .and_then(|t| parse_target(t))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Outcome::Targets(seen)
        }
        "gone" => Outcome::Gone,
        "failed" => Outcome::Failed(text(item, "error").unwrap_or("failed").to_owned()),
        other => return Err(ItemError::Inconsistent(format!("outcome {other:?}"))),
    };
    Ok(Some(GroupRead {
        candidate,
        read_at: time(item, "read_at")?,
        outcome,
    }))
}

fn target_text(target: &Seen) -> String {
    format!(
        "{}|{}|{}|{}",
        target.id,
        target.port.map(|p| p.to_string()).unwrap_or_default(),
        target.zone.as_deref().unwrap_or_default(),
        target.state.as_deref().unwrap_or_default()
    )
}

fn parse_target(value: &str) -> Result<Seen, ItemError> {
    let bad = || ItemError::Unreadable {
        attribute: "targets",
        reason: format!("{value:.80} is not id|port|zone|state"),
    };
    let parts: Vec<&str> = value.split('|').collect();
    let [id, port, zone, state] = parts.as_slice() else {
        return Err(bad());
    };
    let optional = |v: &str| (!v.is_empty()).then(|| v.to_owned());
    Ok(Seen {
        id: (*id).to_owned(),
        port: match *port {
            "" => None,
            p => Some(p.parse().map_err(|_| bad())?),
        },
        zone: optional(zone),
        state: optional(state),
    })
}

fn kind_name(kind: TargetKind) -> &'static str {
    match kind {
        TargetKind::Instance => "instance",
        TargetKind::Ip => "ip",
    }
}

fn parse_kind(value: &str) -> Option<TargetKind> {
    match value {
        "instance" => Some(TargetKind::Instance),
        "ip" => Some(TargetKind::Ip),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(outcome: Outcome) -> GroupRead {
        GroupRead {
            candidate: Candidate {
                arn: "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/pods/0123456789abcdef".into(),
                name: "pods".into(),
                kind: TargetKind::Ip,
                vpc_id: Some("vpc-0abc".into()),
            },
            read_at: DateTime::parse_from_rfc3339("2026-12-01T10:00:00.123Z")
                .unwrap()
                .with_timezone(&Utc),
            outcome,
        }
    }

    #[test]
    fn every_outcome_survives_its_item() {
        let seen = vec![
            Seen {
                id: "10.0.2.24".into(),
                port: Some(8080),
                zone: Some("all".into()),
                state: Some("healthy".into()),
            },
            Seen {
                id: "2001:db8::7".into(),
                port: None,
                zone: None,
                state: None,
            },
        ];
        for outcome in [
            Outcome::Targets(seen),
            Outcome::Targets(Vec::new()),
            Outcome::Gone,
            Outcome::Failed("Throttling: Rate exceeded".into()),
        ] {
            let original = read(outcome);
            let item = read_item("vpc-0abc", &original, Utc::now());
            assert_eq!(read_from_item("vpc-0abc", &item).unwrap(), Some(original));
        }
    }

    #[test]
    fn the_board_lists_its_groups() {
        let groups = vec![read(Outcome::Gone).candidate];
        let mut item = Item::new();
        item.insert("pk".into(), s(sweep_pk("vpc-0abc")));
        item.insert("sk".into(), s(BOARD_SK));
        item.insert("token".into(), s("t"));
        item.insert("state".into(), s("running"));
        item.insert("started_at".into(), s("2026-12-01T10:00:00.000Z"));
        item.insert("lease_until".into(), s("2026-12-01T10:00:10.000Z"));
        item.insert("groups".into(), groups_value(&groups));
        let board = Board::from_item(&item).unwrap();
        assert_eq!(board.phase, Phase::Running);
        assert_eq!(board.wanted_after, None);
        let listed = board.groups.unwrap();
        assert_eq!(
            (listed[0].arn.as_str(), listed[0].kind),
            (groups[0].arn.as_str(), TargetKind::Ip)
        );
        assert!(
            read_from_item("vpc-0abc", &item).unwrap().is_none(),
            "the board is not a group"
        );
    }
}
