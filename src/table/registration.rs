//! The registration index's items. One item per registration: pk `instance#<instance id>` or
//! `ip#<vpc id>#<address>`, sk `<target group ARN>#<port>`, so a cleanup finds everything known about an instance with
//! one Query per instance id and per address. One more item per target group, pk `group#<ARN>` and sk `group`, keeps
//! the group's name, type, VPC and default port: they never change for an ARN, so a CloudTrail update needs no
//! Describe call for a group the index has already seen.

use std::net::IpAddr;

use aws_sdk_dynamodb::operation::delete_item::builders::DeleteItemFluentBuilder;
use aws_sdk_dynamodb::operation::put_item::builders::PutItemFluentBuilder;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_elasticloadbalancingv2::types::{TargetGroup, TargetTypeEnum};
use chrono::{DateTime, Utc};

use super::{Item, ItemError, TTL_ATTRIBUTE, expires_from, key, key_of, optional, s, stamp, text, updated_at};
use crate::input::InstanceId;
use crate::registration::{TargetKind, TargetRegistration};

/// The sort key of a target group's own item.
pub const GROUP_SK: &str = "group";
/// A CloudTrail update's write: only over an item that is not newer than the call.
const NOT_NEWER: &str = "attribute_not_exists(pk) OR updated_at <= :called_at";

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
fn registration_sk(target_group_arn: &str, port: i32) -> String {
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
        let mut item = key(self.key.pk(), self.sk());
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
    pub target_type: TargetTypeEnum,
    pub vpc_id: Option<String>,
    /// The port a target registered without one gets.
    pub port: Option<i32>,
}

impl GroupInfo {
    pub fn from_sdk(group: &TargetGroup) -> Option<Self> {
        Some(GroupInfo {
            arn: group.target_group_arn()?.to_owned(),
            name: group.target_group_name().unwrap_or_default().to_owned(),
            target_type: group.target_type().cloned().unwrap_or_else(|| TargetTypeEnum::from("")),
            vpc_id: group.vpc_id().map(str::to_owned),
            port: group.port(),
        })
    }

    /// A group of `kind` known only from one of its registrations: its VPC and port are not known.
    pub fn of_registration(registration: &TargetRegistration) -> Self {
        GroupInfo {
            arn: registration.target_group_arn.clone(),
            name: registration.target_group_name.clone(),
            target_type: match registration.kind {
                TargetKind::Instance => TargetTypeEnum::Instance,
                TargetKind::Ip => TargetTypeEnum::Ip,
            },
            vpc_id: None,
            port: None,
        }
    }

    /// The kind of targets it holds; None for Lambda and ALB groups, which cannot hold an instance.
    pub fn kind(&self) -> Option<TargetKind> {
        match self.target_type {
            TargetTypeEnum::Instance => Some(TargetKind::Instance),
            TargetTypeEnum::Ip => Some(TargetKind::Ip),
            _ => None,
        }
    }

    pub fn pk(&self) -> String {
        group_pk(&self.arn)
    }

    pub fn to_item(&self, updated_at: DateTime<Utc>, now: DateTime<Utc>) -> Item {
        let mut item = key(self.pk(), GROUP_SK);
        item.insert("target_group_arn".into(), s(&self.arn));
        item.insert("target_group_name".into(), s(&self.name));
        item.insert("target_type".into(), s(self.target_type.as_str()));
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
            target_type: TargetTypeEnum::from(text(item, "target_type")?),
            vpc_id: optional(item, "vpc_id"),
            port,
        })
    }
}

pub fn group_pk(arn: &str) -> String {
    format!("group#{arn}")
}

/// Whether an item is a target group's own item rather than a registration.
pub fn is_group_item(item: &Item) -> bool {
    key_of(item).is_some_and(|(_, sk)| sk == GROUP_SK)
}

/// Put a registration's item, unless the table's is newer than the entry.
pub fn put_if_not_newer(put: PutItemFluentBuilder, entry: &Entry, now: DateTime<Utc>) -> PutItemFluentBuilder {
    put.set_item(Some(entry.to_item(now)))
        .condition_expression(NOT_NEWER)
        .expression_attribute_values(":called_at", s(stamp(entry.updated_at)))
}

/// Delete a registration's item, unless it is newer than the entry.
pub fn delete_if_not_newer(delete: DeleteItemFluentBuilder, entry: &Entry) -> DeleteItemFluentBuilder {
    delete
        .set_key(Some(key(entry.key.pk(), entry.sk())))
        .condition_expression(NOT_NEWER)
        .expression_attribute_values(":called_at", s(stamp(entry.updated_at)))
}

fn port(item: &Item) -> Result<i32, ItemError> {
    let text = match item.get("port") {
        Some(AttributeValue::N(value)) => value,
        Some(_) => return Err(ItemError::NotNumber("port".to_owned())),
        None => return Err(ItemError::Missing("port".to_owned())),
    };
    text.parse::<i32>().map_err(|e| ItemError::Unreadable {
        attribute: "port",
        reason: e.to_string(),
    })
}

fn stamp_item(item: &mut Item, updated_at: DateTime<Utc>, now: DateTime<Utc>) {
    item.insert("updated_at".into(), s(stamp(updated_at)));
    item.insert(TTL_ATTRIBUTE.into(), expires_from(now));
}

fn kind_name(kind: TargetKind) -> &'static str {
    match kind {
        TargetKind::Instance => "instance",
        TargetKind::Ip => "ip",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{is_expired, needs_renewal, same_content};

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
            target_type: TargetTypeEnum::Ip,
            vpc_id: Some("vpc-1".into()),
            port: Some(8080),
        };
        let item = group.to_item(now, now);
        assert!(is_group_item(&item));
        assert_eq!(key_of(&item), Some((format!("group#{ARN}"), "group".into())));
        assert_eq!(GroupInfo::from_item(&item), Ok(group.clone()));
        assert_eq!(group.kind(), Some(TargetKind::Ip));
        let lambda = GroupInfo {
            target_type: TargetTypeEnum::Lambda,
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
