//! How the function's DynamoDB table is laid out: the registration index's items, and the delivery markers that share
//! the table. Plain data: the calls that read and write it are in `store`.
//!
//! One item per registration: pk `instance#<instance id>` or `ip#<vpc id>#<address>`, sk `<target group ARN>#<port>`,
//! so a cleanup finds everything known about an instance with one Query per instance id and per address. One more
//! item per target group, pk `group#<ARN>` and sk `group`, keeps the group's name, type, VPC and default port: they
//! never change for an ARN, so a CloudTrail update needs no Describe call for a group the index has already seen.
//!
//! Every item carries `updated_at` (RFC 3339, milliseconds, UTC, so strings compare in time order) and `expires_at`
//! (epoch seconds, the table's TTL attribute). An item past `expires_at` is ignored even before DynamoDB deletes it,
//! so an index whose refresh stopped empties itself instead of going stale.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_elasticloadbalancingv2::types::{TargetGroup, TargetTypeEnum};
use chrono::{DateTime, SecondsFormat, Utc};

use crate::input::InstanceId;
use crate::registration::{TargetKind, TargetRegistration};

pub type Item = HashMap<String, AttributeValue>;

/// Why an item could not be read: something else wrote it, or an older layout did.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ItemError {
    #[error("{0} is missing")]
    Missing(String),
    #[error("{0} is not a string")]
    NotText(String),
    #[error("{0} is not a number")]
    NotNumber(String),
    #[error("{attribute}: {reason}")]
    Unreadable { attribute: &'static str, reason: String },
    #[error("{0}")]
    Inconsistent(String),
}

/// The table's TTL attribute.
pub const TTL_ATTRIBUTE: &str = "expires_at";
/// How long every item of the table lives unless it is written again: an index item (a refresh rewrites an unchanged
/// one once less than half is left), a delivery marker (by then the instance is long gone or was restored), the wave's
/// items (by then the wave is long over).
pub const TIME_TO_LIVE: Duration = Duration::from_secs(24 * 60 * 60);
/// The sort key of a target group's own item.
pub const GROUP_SK: &str = "group";
/// Delivery markers (`claim#<instance id>`, sk `claim`) share the table; they are not the index's to keep or delete.
pub const CLAIM_PK_PREFIX: &str = "claim#";
pub const CLAIM_SK: &str = "claim";

/// A token no other writer makes: the time in milliseconds (so tokens sort by age), then 64 random bits.
pub fn unique_token() -> String {
    use std::hash::{BuildHasher, RandomState};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let random = RandomState::new().hash_one((nanos, std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
    format!("{:013}-{random:016x}", Utc::now().timestamp_millis())
}

/// `updated_at` as stored: fixed width, so that string order is time order (condition expressions rely on it).
pub fn stamp(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Where a target is filed: by instance id for instance targets, by (VPC, address) for IP targets.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TargetKey {
    Instance(InstanceId),
    Ip { vpc_id: String, address: IpAddr },
}

impl TargetKey {
    /// The key of `target_id` in a target group of this kind and VPC; None when the id is not that kind of target (an
    /// IP group without a VPC, an instance group holding something other than an instance id).
    pub fn for_target(kind: TargetKind, vpc_id: Option<&str>, target_id: &str) -> Option<Self> {
        match kind {
            TargetKind::Instance => InstanceId::parse(target_id).ok().map(TargetKey::Instance),
            TargetKind::Ip => Some(TargetKey::Ip {
                vpc_id: vpc_id.filter(|v| !v.is_empty() && !v.contains('#'))?.to_owned(),
                address: target_id.parse().ok()?,
            }),
        }
    }

    pub fn kind(&self) -> TargetKind {
        match self {
            TargetKey::Instance(_) => TargetKind::Instance,
            TargetKey::Ip { .. } => TargetKind::Ip,
        }
    }

    /// The partition key. Addresses are written the canonical way (`IpAddr`'s), whatever form ELB was given.
    pub fn pk(&self) -> String {
        match self {
            TargetKey::Instance(id) => format!("instance#{id}"),
            TargetKey::Ip { vpc_id, address } => format!("ip#{vpc_id}#{address}"),
        }
    }

    pub fn parse_pk(pk: &str) -> Option<Self> {
        if let Some(id) = pk.strip_prefix("instance#") {
            return InstanceId::parse(id).ok().map(TargetKey::Instance);
        }
        let (vpc_id, address) = pk.strip_prefix("ip#")?.split_once('#')?;
        Some(TargetKey::Ip {
            vpc_id: vpc_id.to_owned(),
            address: address.parse().ok()?,
        })
    }
}

/// The sort key of one registration: target group ARNs never contain `#`.
pub fn registration_sk(target_group_arn: &str, port: i32) -> String {
    format!("{target_group_arn}#{port}")
}

/// One known registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub key: TargetKey,
    /// The target id as ELB knows it (for IP targets, possibly not in canonical form).
    pub target_id: String,
    pub target_group_arn: String,
    pub target_group_name: String,
    pub port: i32,
    pub availability_zone: Option<String>,
    pub vpc_id: Option<String>,
    pub updated_at: DateTime<Utc>,
}

impl Entry {
    pub fn sk(&self) -> String {
        registration_sk(&self.target_group_arn, self.port)
    }

    pub fn to_item(&self, now: DateTime<Utc>) -> Item {
        let mut item = Item::new();
        item.insert("pk".into(), s(self.key.pk()));
        item.insert("sk".into(), s(self.sk()));
        item.insert("kind".into(), s(kind_name(self.key.kind())));
        item.insert("target_id".into(), s(&self.target_id));
        item.insert("target_group_arn".into(), s(&self.target_group_arn));
        item.insert("target_group_name".into(), s(&self.target_group_name));
        item.insert("port".into(), AttributeValue::N(self.port.to_string()));
        if let Some(zone) = &self.availability_zone {
            item.insert("availability_zone".into(), s(zone));
        }
        if let Some(vpc) = &self.vpc_id {
            item.insert("vpc_id".into(), s(vpc));
        }
        stamp_item(&mut item, self.updated_at, now);
        item
    }

    pub fn from_item(item: &Item) -> Result<Self, ItemError> {
        let key = TargetKey::parse_pk(text(item, "pk")?)
            .ok_or_else(|| ItemError::Inconsistent("pk is not an instance# or ip# key".into()))?;
        let kind = text(item, "kind")?;
        if kind != kind_name(key.kind()) {
            return Err(ItemError::Inconsistent(format!("kind {kind:?} does not match pk")));
        }
        let port = port(item)?;
        let entry = Entry {
            key,
            target_id: text(item, "target_id")?.to_owned(),
            target_group_arn: text(item, "target_group_arn")?.to_owned(),
            target_group_name: text(item, "target_group_name")?.to_owned(),
            port,
            availability_zone: optional(item, "availability_zone"),
            vpc_id: optional(item, "vpc_id"),
            updated_at: updated_at(item)?,
        };
        if text(item, "sk")? != entry.sk() {
            return Err(ItemError::Inconsistent(
                "sk does not match target_group_arn and port".into(),
            ));
        }
        Ok(entry)
    }

    /// The registration a cleanup acts on. The state is unknown: the index says where, not how healthy.
    pub fn registration(&self, instance_id: &InstanceId) -> TargetRegistration {
        TargetRegistration {
            target_group_arn: self.target_group_arn.clone(),
            target_group_name: self.target_group_name.clone(),
            instance_id: instance_id.clone(),
            kind: self.key.kind(),
            target_id: self.target_id.clone(),
            port: Some(self.port),
            availability_zone: self.availability_zone.clone(),
            state: None,
        }
    }
}

/// What never changes about a target group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupInfo {
    pub arn: String,
    pub name: String,
    /// `instance`, `ip`, `lambda` or `alb`.
    pub target_type: String,
    pub vpc_id: Option<String>,
    /// The port a target registered without one gets.
    pub port: Option<i32>,
}

impl GroupInfo {
    pub fn from_sdk(group: &TargetGroup) -> Option<Self> {
        Some(GroupInfo {
            arn: group.target_group_arn()?.to_owned(),
            name: group.target_group_name().unwrap_or_default().to_owned(),
            target_type: group.target_type().map(|t| t.as_str().to_owned()).unwrap_or_default(),
            vpc_id: group.vpc_id().map(str::to_owned),
            port: group.port(),
        })
    }

    /// The kind of targets the index keeps for this group; None for Lambda and ALB groups.
    pub fn kind(&self) -> Option<TargetKind> {
        match TargetTypeEnum::from(self.target_type.as_str()) {
            TargetTypeEnum::Instance => Some(TargetKind::Instance),
            TargetTypeEnum::Ip => Some(TargetKind::Ip),
            _ => None,
        }
    }

    pub fn pk(&self) -> String {
        group_pk(&self.arn)
    }

    pub fn to_item(&self, updated_at: DateTime<Utc>, now: DateTime<Utc>) -> Item {
        let mut item = Item::new();
        item.insert("pk".into(), s(self.pk()));
        item.insert("sk".into(), s(GROUP_SK));
        item.insert("target_group_arn".into(), s(&self.arn));
        item.insert("target_group_name".into(), s(&self.name));
        item.insert("target_type".into(), s(&self.target_type));
        if let Some(vpc) = &self.vpc_id {
            item.insert("vpc_id".into(), s(vpc));
        }
        if let Some(port) = self.port {
            item.insert("port".into(), AttributeValue::N(port.to_string()));
        }
        stamp_item(&mut item, updated_at, now);
        item
    }

    pub fn from_item(item: &Item) -> Result<Self, ItemError> {
        let arn = text(item, "target_group_arn")?;
        if text(item, "pk")? != group_pk(arn) || text(item, "sk")? != GROUP_SK {
            return Err(ItemError::Inconsistent("not a target group item".into()));
        }
        let port = match item.get("port") {
            None => None,
            Some(_) => Some(port(item)?),
        };
        Ok(GroupInfo {
            arn: arn.to_owned(),
            name: text(item, "target_group_name")?.to_owned(),
            target_type: text(item, "target_type")?.to_owned(),
            vpc_id: optional(item, "vpc_id"),
            port,
        })
    }
}

/// The delivery marker's partition key for an instance.
pub fn claim_pk(instance: &InstanceId) -> String {
    format!("{CLAIM_PK_PREFIX}{instance}")
}

/// Whether an item is a delivery marker rather than the index's.
pub fn is_claim(item: &Item) -> bool {
    key_of(item).is_some_and(|(pk, _)| pk.starts_with(CLAIM_PK_PREFIX))
}

/// The wave shares the table too (see the `wave` module): under pk `wave`, who drives it (sk `driver`), the instances waiting
/// for it (sk `member#<instance id>`) and what it answered them (sk `answer#<instance id>`). They are not the index's
/// to keep or delete either.
pub const WAVE_PK: &str = "wave";

/// Whether an item belongs to the wave rather than to the index.
pub fn is_wave(item: &Item) -> bool {
    key_of(item).is_some_and(|(pk, _)| pk == WAVE_PK)
}

pub fn group_pk(arn: &str) -> String {
    format!("group#{arn}")
}

/// Whether an item is a target group's own item rather than a registration.
pub fn is_group_item(item: &Item) -> bool {
    item.get("sk")
        .and_then(|v| v.as_s().ok())
        .is_some_and(|sk| sk == GROUP_SK)
}

/// Past its `expires_at`: DynamoDB's TTL deletes such items lazily, so readers skip them themselves.
pub fn is_expired(item: &Item, now: DateTime<Utc>) -> bool {
    expires_at(item).is_some_and(|at| at <= now.timestamp())
}

/// Whether a refresh should write the item again although nothing in it changed: less than half its life left.
pub fn needs_renewal(item: &Item, now: DateTime<Utc>) -> bool {
    let half = i64::try_from(TIME_TO_LIVE.as_secs() / 2).unwrap_or(i64::MAX);
    expires_at(item).is_none_or(|at| at - now.timestamp() < half)
}

/// Whether two items say the same thing, timestamps aside.
pub fn same_content(a: &Item, b: &Item) -> bool {
    let strip = |item: &Item| -> Item {
        item.iter()
            .filter(|(k, _)| k.as_str() != "updated_at" && k.as_str() != TTL_ATTRIBUTE)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    strip(a) == strip(b)
}

pub fn key_of(item: &Item) -> Option<(String, String)> {
    let pk = item.get("pk")?.as_s().ok()?;
    let sk = item.get("sk")?.as_s().ok()?;
    Some((pk.clone(), sk.clone()))
}

pub fn updated_at(item: &Item) -> Result<DateTime<Utc>, ItemError> {
    time(item, "updated_at")
}

/// An RFC 3339 time attribute, as `stamp` writes it.
pub fn time(item: &Item, attribute: &'static str) -> Result<DateTime<Utc>, ItemError> {
    DateTime::parse_from_rfc3339(text(item, attribute)?)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| ItemError::Unreadable {
            attribute,
            reason: e.to_string(),
        })
}

fn port(item: &Item) -> Result<i32, ItemError> {
    text_n(item, "port")?.parse::<i32>().map_err(|e| ItemError::Unreadable {
        attribute: "port",
        reason: e.to_string(),
    })
}

fn expires_at(item: &Item) -> Option<i64> {
    item.get(TTL_ATTRIBUTE)?.as_n().ok()?.parse().ok()
}

fn stamp_item(item: &mut Item, updated_at: DateTime<Utc>, now: DateTime<Utc>) {
    item.insert("updated_at".into(), s(stamp(updated_at)));
    item.insert(TTL_ATTRIBUTE.into(), expires_from(now));
}

/// The `expires_at` of an item written `now`: `TIME_TO_LIVE` later, in epoch seconds.
pub fn expires_from(now: DateTime<Utc>) -> AttributeValue {
    let ttl = i64::try_from(TIME_TO_LIVE.as_secs()).unwrap_or(i64::MAX);
    AttributeValue::N((now.timestamp() + ttl).to_string())
}

fn kind_name(kind: TargetKind) -> &'static str {
    match kind {
        TargetKind::Instance => "instance",
        TargetKind::Ip => "ip",
    }
}

pub fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub fn text<'a>(item: &'a Item, name: &str) -> Result<&'a str, ItemError> {
    match item.get(name) {
        Some(AttributeValue::S(value)) => Ok(value),
        Some(_) => Err(ItemError::NotText(name.to_owned())),
        None => Err(ItemError::Missing(name.to_owned())),
    }
}

fn text_n<'a>(item: &'a Item, name: &str) -> Result<&'a str, ItemError> {
    match item.get(name) {
        Some(AttributeValue::N(value)) => Ok(value),
        Some(_) => Err(ItemError::NotNumber(name.to_owned())),
        None => Err(ItemError::Missing(name.to_owned())),
    }
}

fn optional(item: &Item, name: &str) -> Option<String> {
    item.get(name).and_then(|v| v.as_s().ok()).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web/0123456789abcdef";

    fn entry(key: TargetKey, target_id: &str) -> Entry {
        Entry {
            key,
            target_id: target_id.into(),
            target_group_arn: ARN.into(),
            target_group_name: "web".into(),
            port: 30080,
            availability_zone: Some("us-east-1a".into()),
            vpc_id: Some("vpc-0123abcd".into()),
            updated_at: DateTime::parse_from_rfc3339("2026-11-21T10:00:00.5Z").unwrap().into(),
        }
    }

    #[test]
    fn keys_file_instances_by_id_and_ip_targets_by_vpc_and_canonical_address() {
        let instance = TargetKey::for_target(TargetKind::Instance, Some("vpc-1"), "i-0123abcd").unwrap();
        assert_eq!(instance.pk(), "instance#i-0123abcd");
        let ip = TargetKey::for_target(TargetKind::Ip, Some("vpc-1"), "2600:1F18:0::0001").unwrap();
        assert_eq!(ip.pk(), "ip#vpc-1#2600:1f18::1");
        for key in [instance, ip] {
            assert_eq!(TargetKey::parse_pk(&key.pk()), Some(key));
        }
        assert_eq!(TargetKey::for_target(TargetKind::Ip, None, "10.0.0.1"), None);
        assert_eq!(TargetKey::for_target(TargetKind::Ip, Some("vpc-1"), "i-0123abcd"), None);
        assert_eq!(
            TargetKey::for_target(TargetKind::Instance, Some("vpc-1"), "10.0.0.1"),
            None
        );
        assert_eq!(TargetKey::parse_pk("group#arn"), None);
        assert_eq!(TargetKey::parse_pk("ip#vpc-1#not-an-address"), None);
    }

    #[test]
    fn an_entry_round_trips_through_its_item() {
        let now = Utc::now();
        let key = TargetKey::Ip {
            vpc_id: "vpc-0123abcd".into(),
            address: "10.0.2.7".parse().unwrap(),
        };
        let original = entry(key, "10.0.2.7");
        let item = original.to_item(now);
        assert_eq!(item["pk"], s("ip#vpc-0123abcd#10.0.2.7"));
        assert_eq!(item["sk"], s(format!("{ARN}#30080")));
        assert_eq!(item["kind"], s("ip"));
        assert_eq!(item["port"], AttributeValue::N("30080".into()));
        assert_eq!(item["updated_at"], s("2026-11-21T10:00:00.500Z"));
        assert_eq!(
            item[TTL_ATTRIBUTE],
            AttributeValue::N((now.timestamp() + 86_400).to_string())
        );
        assert_eq!(Entry::from_item(&item), Ok(original.clone()));

        let registration = original.registration(&InstanceId::parse("i-0123abcd").unwrap());
        assert_eq!(registration.kind, TargetKind::Ip);
        assert_eq!(registration.port, Some(30080));
        assert_eq!(registration.availability_zone.as_deref(), Some("us-east-1a"));
        assert_eq!(registration.state, None);
    }

    #[test]
    fn items_that_do_not_add_up_are_refused() {
        let now = Utc::now();
        let good = entry(
            TargetKey::Instance(InstanceId::parse("i-0123abcd").unwrap()),
            "i-0123abcd",
        )
        .to_item(now);
        let broken = |name: &str, value: Option<AttributeValue>| {
            let mut item = good.clone();
            match value {
                Some(value) => item.insert(name.into(), value),
                None => item.remove(name),
            };
            Entry::from_item(&item).unwrap_err().to_string()
        };
        assert!(broken("kind", Some(s("ip"))).contains("does not match"));
        assert!(broken("port", Some(s("30080"))).contains("not a number"));
        assert!(broken("sk", Some(s(format!("{ARN}#1")))).contains("sk does not match"));
        assert!(broken("target_group_name", None).contains("missing"));
        assert!(broken("pk", Some(s("instance#nope"))).contains("pk"));
    }

    #[test]
    fn a_group_item_round_trips_and_says_which_groups_are_indexed() {
        let now = Utc::now();
        let group = GroupInfo {
            arn: ARN.into(),
            name: "web".into(),
            target_type: "ip".into(),
            vpc_id: Some("vpc-1".into()),
            port: Some(8080),
        };
        let item = group.to_item(now, now);
        assert!(is_group_item(&item));
        assert_eq!(key_of(&item), Some((format!("group#{ARN}"), "group".into())));
        assert_eq!(GroupInfo::from_item(&item), Ok(group.clone()));
        assert_eq!(group.kind(), Some(TargetKind::Ip));
        let lambda = GroupInfo {
            target_type: "lambda".into(),
            vpc_id: None,
            port: None,
            ..group
        };
        assert_eq!(GroupInfo::from_item(&lambda.to_item(now, now)), Ok(lambda.clone()));
        assert_eq!(lambda.kind(), None);
    }

    #[test]
    fn timestamps_expire_renew_and_do_not_count_as_content() {
        let now = Utc::now();
        let fresh = entry(
            TargetKey::Instance(InstanceId::parse("i-0123abcd").unwrap()),
            "i-0123abcd",
        );
        let item = fresh.to_item(now);
        assert!(!is_expired(&item, now));
        assert!(is_expired(&item, now + chrono::Duration::hours(25)));
        assert!(!needs_renewal(&item, now + chrono::Duration::hours(11)));
        assert!(needs_renewal(&item, now + chrono::Duration::hours(13)));

        let later = Entry {
            updated_at: now,
            ..fresh.clone()
        };
        assert!(same_content(&item, &later.to_item(now + chrono::Duration::hours(1))));
        let moved = Entry {
            availability_zone: None,
            ..fresh
        };
        assert!(!same_content(&item, &moved.to_item(now)));
        assert!(stamp(now) < stamp(now + chrono::Duration::milliseconds(1)));
    }
}
