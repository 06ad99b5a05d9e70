//! Which instances this function may touch. A request that names anything else changes nothing and is refused: a
//! node agent, a replayed event or a wrong rule must never widen what the function does to production networking.
//!
//! Three rules, each optional where it can be:
//! - a Spot trigger acts only on a Spot instance (`InstanceLifecycle=spot`);
//! - `REQUIRED_TAGS` (`key=value,key2=,key3`): every listed tag must be on the instance; an empty or absent value
//!   means the key only has to be present;
//! - the event's `account` and `region` must be the function's own. The account check is off when cross-account
//!   handling is configured (`CROSS_ACCOUNT_ROLE_NAME`): events of other accounts are expected then.

use std::collections::BTreeMap;

use crate::input::{
    AWS_HEALTH_EVENT, Action, Quoted, REBALANCE_RECOMMENDATION, Request, SPOT_INTERRUPTION, STATE_CHANGE, Source,
    Trigger,
};
use crate::instance::Instance;

/// One tag the instance must carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequiredTag {
    pub key: String,
    /// None: the key must be present, with any value.
    pub value: Option<String>,
}

/// The scope rules, read once at init.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scope {
    pub required_tags: Vec<RequiredTag>,
    /// Events from other accounts are expected (`CROSS_ACCOUNT_ROLE_NAME` is set).
    pub cross_account: bool,
    /// `AWS_REGION`: the function's region when the invocation's ARN does not say.
    pub fallback_region: Option<String>,
    /// Which instances the account-wide events (state changes, AWS Health) act on (`EVENT_SCOPE`).
    pub event_scope: EventScope,
    /// The SNS topics a message may come through (`SNS_SOURCE_TOPIC_ARNS`); empty accepts any.
    pub sns_topics: Vec<String>,
    /// The Auto Scaling lifecycle hooks this function owns (`LIFECYCLE_HOOK_NAMES`); empty owns none, and every
    /// lifecycle action is left to its hook's owner.
    pub lifecycle_hooks: Vec<String>,
}

/// Which instances the events AWS sends about every instance of the account act on: an instance state change, an AWS
/// Health scheduled change and an Auto Scaling lifecycle action. Spot's own notices are not affected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EventScope {
    /// Spot instances only: an on-demand instance terminated by a scale-in or a deploy costs one DescribeInstances
    /// and changes nothing.
    #[default]
    Spot,
    /// Every instance.
    All,
}

/// The events AWS sends about every instance of the account, Spot or not: a lifecycle action too, whichever way it
/// came (EventBridge, or the hook's own message through SQS or SNS).
fn is_account_wide(trigger: &Trigger) -> bool {
    let event = trigger.source == Source::EventBridge
        && matches!(trigger.detail_type.as_deref(), Some(STATE_CHANGE | AWS_HEALTH_EVENT));
    event || trigger.lifecycle.is_some()
}

/// The longest lifecycle hook name Auto Scaling accepts.
const HOOK_NAME_MAX: usize = 255;

/// `LIFECYCLE_HOOK_NAMES`: comma-separated hook names, each 1 to 255 of the characters Auto Scaling allows
/// (`A-Z a-z 0-9 - _ /`). Blank entries are dropped; none at all owns no hook.
pub fn parse_hook_names(raw: &str) -> Result<Vec<String>, &'static str> {
    let mut names = Vec::new();
    for name in raw.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '/');
        if name.len() > HOOK_NAME_MAX || !name.chars().all(allowed) {
            return Err(
                "expected comma-separated lifecycle hook names of 1 to 255 characters of A-Z, a-z, 0-9, -, _ and /",
            );
        }
        if !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

/// `REQUIRED_TAGS`: comma-separated `key=value`, `key=` or `key`. Keys may contain `=`-free text only; a value may
/// contain `=` (the first one splits).
pub fn parse_required_tags(raw: &str) -> Result<Vec<RequiredTag>, &'static str> {
    let mut tags = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = match part.split_once('=') {
            Some((key, value)) => (key.trim(), Some(value.trim()).filter(|v| !v.is_empty())),
            None => (part, None),
        };
        if key.is_empty() || key.len() > 128 {
            return Err("expected comma-separated key=value (or key) with keys of 1 to 128 characters");
        }
        tags.push(RequiredTag {
            key: key.to_owned(),
            value: value.map(str::to_owned),
        });
    }
    Ok(tags)
}

/// Where the function itself runs: from the invocation's ARN (`arn:aws:lambda:<region>:<account>:function:...`),
/// falling back to `AWS_REGION` for the region. An unknown account skips the account check (only emulators omit it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Home {
    pub account: Option<String>,
    pub region: Option<String>,
}

impl Home {
    pub fn from_function_arn(arn: &str, scope: &Scope) -> Home {
        let parts: Vec<&str> = arn.split(':').collect();
        let field = |i: usize, ok: fn(&str) -> bool| {
            (parts.len() >= 7 && parts[0] == "arn" && parts[2] == "lambda")
                .then(|| parts[i])
                .filter(|v| ok(v))
                .map(str::to_owned)
        };
        let account = field(4, |v| v.len() == 12 && v.bytes().all(|b| b.is_ascii_digit()));
        let region = field(3, |v| !v.is_empty()).or_else(|| scope.fallback_region.clone());
        Home { account, region }
    }
}

/// An instance of another account than the function's own, and no role to reach it.
#[derive(Clone, Debug, thiserror::Error, PartialEq)]
#[error(
    "the instance is in account {account}, not this function's ({home}), and CROSS_ACCOUNT_ROLE_NAME is not set; \
     nothing was changed"
)]
pub struct AccountNotAllowed {
    pub account: String,
    pub home: String,
}

/// The one cross-account check: an instance of `account` is served from `home` only when they are one account, or a
/// role reaches the others (`cross_account`: `CROSS_ACCOUNT_ROLE_NAME` is set). An unknown account is not compared.
pub fn check_account(home: Option<&str>, account: Option<&str>, cross_account: bool) -> Result<(), AccountNotAllowed> {
    match (home, account) {
        (Some(home), Some(account)) if home != account && !cross_account => Err(AccountNotAllowed {
            account: account.to_owned(),
            home: home.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// Spot's own notices: the interruption warning and the rebalance recommendation, and the node agent's actions that
/// come from Spot's `spot/instance-action` or rebalance paths. Auto Scaling lifecycle actions, EC2 state changes,
/// AWS Health events and the agent's `scale-in` concern any instance, Spot or not.
pub fn is_spot_trigger(trigger: &Trigger) -> bool {
    match trigger.source {
        // The agent watches Spot's metadata paths; only its Auto Scaling `scale-in` is about any instance.
        Source::NodeAgent => trigger.action != Some(Action::ScaleIn),
        Source::EventBridge => matches!(
            trigger.detail_type.as_deref(),
            Some(SPOT_INTERRUPTION | REBALANCE_RECOMMENDATION)
        ),
        Source::AutoScaling | Source::Operator => false,
    }
}

impl Scope {
    /// The event's own claims about where it comes from, checked before anything is described.
    pub fn check_origin(&self, home: &Home, trigger: &Trigger) -> Vec<String> {
        let mut reasons = Vec::new();
        if let (Some(theirs), Some(ours)) = (&trigger.region, &home.region)
            && theirs != ours
        {
            reasons.push(format!(
                "the event is for region {theirs}, this function runs in {ours}"
            ));
        }
        if let Err(refused) = check_account(home.account.as_deref(), trigger.account.as_deref(), self.cross_account) {
            reasons.push(refused.to_string());
        }
        if let Some(topic) = &trigger.sns_topic_arn
            && !self.sns_topics.is_empty()
            && !self.sns_topics.contains(topic)
        {
            reasons.push(format!(
                "the message came through SNS topic {topic:.256}, which SNS_SOURCE_TOPIC_ARNS does not list"
            ));
        }
        reasons
    }

    /// Why a lifecycle action is none of this function's business, if it is: its hook is not one of
    /// `LIFECYCLE_HOOK_NAMES`. NTH, a log shipper or another team's drain hook holds the instance for its own work,
    /// and completing its action would end that wait early. Not a refusal: nothing is checked, changed, completed or
    /// published for it. Requests without a lifecycle action are not concerned.
    pub fn not_our_hook(&self, trigger: &Trigger) -> Option<String> {
        let action = trigger.lifecycle.as_deref()?;
        if self.lifecycle_hooks.contains(&action.hook_name) {
            return None;
        }
        let hook = Quoted::new(&action.hook_name);
        let group = Quoted::new(&action.group_name);
        Some(if self.lifecycle_hooks.is_empty() {
            format!(
                "lifecycle hook {hook} of group {group} is not this function's: LIFECYCLE_HOOK_NAMES names none, so \
                 every lifecycle action is left to its hook's owner"
            )
        } else {
            format!(
                "lifecycle hook {hook} of group {group} is not this function's (LIFECYCLE_HOOK_NAMES: {}): its owner \
                 completes it",
                self.lifecycle_hooks.join(",")
            )
        })
    }

    /// Why an account-wide event about this instance is left alone, if it is: outside `EVENT_SCOPE`. Not a refusal:
    /// AWS sends these events for every instance.
    pub fn leaves_alone(&self, request: &Request, instance: &Instance) -> Option<String> {
        let spot = instance.lifecycle.as_deref() == Some("spot");
        (self.event_scope == EventScope::Spot && is_account_wide(&request.trigger) && !spot).then(|| {
            format!(
                "{} is not a Spot instance, and EVENT_SCOPE=spot acts on state changes, Health events and lifecycle \
                 actions of Spot instances only",
                instance.id
            )
        })
    }

    /// The instance as EC2 describes it. Empty when it is in scope.
    pub fn check_instance(&self, request: &Request, instance: &Instance) -> Vec<String> {
        let mut reasons = Vec::new();
        if is_spot_trigger(&request.trigger) && instance.lifecycle.as_deref() != Some("spot") {
            reasons.push(format!(
                "a Spot trigger named an instance that is not Spot (lifecycle {})",
                instance.lifecycle.as_deref().unwrap_or("on-demand")
            ));
        }
        reasons.extend(missing_tags(&self.required_tags, &instance.tags));
        reasons
    }
}

fn missing_tags(required: &[RequiredTag], tags: &BTreeMap<String, String>) -> Vec<String> {
    required
        .iter()
        .filter_map(|tag| match (&tag.value, tags.get(&tag.key)) {
            (_, None) => Some(format!("the instance has no tag {}", tag.key)),
            (Some(want), Some(have)) if want != have => {
                Some(format!("tag {} is {have:?}, REQUIRED_TAGS wants {want:?}", tag.key))
            }
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::{InstanceId, Source};

    /// A node agent's request: Spot's unless its action is `scale-in`.
    fn trigger(action: Option<Action>, region: Option<&str>, account: Option<&str>) -> Trigger {
        Trigger {
            action,
            region: region.map(str::to_owned),
            account: account.map(str::to_owned),
            ..Trigger::from_source(Source::NodeAgent)
        }
    }

    fn instance(lifecycle: Option<&str>, tags: &[(&str, &str)]) -> Instance {
        Instance {
            id: InstanceId::parse("i-0123abcd").unwrap(),
            vpc_id: None,
            state: Some("running".into()),
            lifecycle: lifecycle.map(str::to_owned),
            tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            network_interfaces: vec![],
        }
    }

    fn request(action: Option<Action>) -> Request {
        Request {
            instance_id: InstanceId::parse("i-0123abcd").unwrap(),
            trigger: trigger(action, None, None),
            identity: None,
        }
    }

    #[test]
    fn required_tags_parse_with_and_without_values() {
        let tags = parse_required_tags("kubernetes.io/cluster/prod=owned, team=, spot-cleanup").unwrap();
        assert_eq!(
            tags,
            vec![
                RequiredTag {
                    key: "kubernetes.io/cluster/prod".into(),
                    value: Some("owned".into())
                },
                RequiredTag {
                    key: "team".into(),
                    value: None
                },
                RequiredTag {
                    key: "spot-cleanup".into(),
                    value: None
                },
            ]
        );
        assert!(parse_required_tags("=x").is_err());
        assert_eq!(parse_required_tags(" , ").unwrap(), vec![]);
    }

    #[test]
    fn only_spots_own_notices_are_spot_triggers() {
        let event = |detail_type: &str, action| Trigger {
            source: Source::EventBridge,
            detail_type: Some(detail_type.into()),
            ..trigger(Some(action), None, None)
        };
        assert!(is_spot_trigger(&event(SPOT_INTERRUPTION, Action::Stop)));
        assert!(is_spot_trigger(&event(REBALANCE_RECOMMENDATION, Action::Rebalance)));
        // A stopping or terminated instance, or a scheduled change, may be on-demand.
        assert!(!is_spot_trigger(&event(
            "EC2 Instance State-change Notification",
            Action::Stop
        )));
        assert!(!is_spot_trigger(&event("AWS Health Event", Action::ScheduledChange)));
        let lifecycle = Trigger {
            source: Source::AutoScaling,
            ..trigger(Some(Action::ScaleIn), None, None)
        };
        assert!(!is_spot_trigger(&lifecycle));
    }

    #[test]
    fn spot_triggers_need_spot_instances_and_the_required_tags() {
        let scope = Scope {
            required_tags: parse_required_tags("cluster=prod,team").unwrap(),
            ..Scope::default()
        };
        let good = instance(Some("spot"), &[("cluster", "prod"), ("team", "x")]);
        assert!(
            scope
                .check_instance(&request(Some(Action::Terminate)), &good)
                .is_empty()
        );
        let on_demand = instance(None, &[("cluster", "prod"), ("team", "x")]);
        let reasons = scope.check_instance(&request(Some(Action::Terminate)), &on_demand);
        assert!(reasons[0].contains("not Spot"), "{reasons:?}");
        assert!(
            scope
                .check_instance(&request(Some(Action::ScaleIn)), &on_demand)
                .is_empty(),
            "scale-in is not a Spot trigger"
        );
        assert!(
            !scope.check_instance(&request(None), &on_demand).is_empty(),
            "the agent is"
        );
        let wrong = instance(Some("spot"), &[("cluster", "dev")]);
        let reasons = scope.check_instance(&request(None), &wrong);
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        assert!(reasons[0].contains("\"dev\""));
        assert!(reasons[1].contains("no tag team"));
    }

    #[test]
    fn the_event_must_come_from_home_unless_cross_account_is_on() {
        let mut scope = Scope {
            fallback_region: Some("eu-west-1".into()),
            ..Scope::default()
        };
        let home = Home::from_function_arn("arn:aws:lambda:us-east-1:123456789012:function:spot-cleanup", &scope);
        assert_eq!(home.account.as_deref(), Some("123456789012"));
        assert_eq!(home.region.as_deref(), Some("us-east-1"));
        let ours = trigger(None, Some("us-east-1"), Some("123456789012"));
        assert!(scope.check_origin(&home, &ours).is_empty());
        let elsewhere = trigger(None, Some("eu-west-1"), Some("210987654321"));
        assert_eq!(scope.check_origin(&home, &elsewhere).len(), 2);
        scope.cross_account = true;
        let reasons = scope.check_origin(&home, &elsewhere);
        assert_eq!(reasons.len(), 1, "the region still has to match: {reasons:?}");

        let emulated = Home::from_function_arn("", &scope);
        assert_eq!(emulated.account, None);
        assert_eq!(emulated.region.as_deref(), Some("eu-west-1"), "AWS_REGION");
    }

    /// With `SNS_SOURCE_TOPIC_ARNS`, a message that came through any other topic is out of scope; one that came
    /// through no topic at all, or a listed one, is not. Unset, every topic is accepted.
    #[test]
    fn sns_deliveries_come_only_through_the_listed_topics() {
        let listed = "arn:aws:sns:us-east-1:123456789012:spot-cleanup-lifecycle";
        let mut scope = Scope {
            sns_topics: vec![listed.to_owned()],
            ..Scope::default()
        };
        let home = Home::from_function_arn("arn:aws:lambda:us-east-1:123456789012:function:spot-cleanup", &scope);
        let through = |topic: Option<&str>| Trigger {
            sns_topic_arn: topic.map(str::to_owned),
            ..trigger(None, Some("us-east-1"), Some("123456789012"))
        };
        assert!(scope.check_origin(&home, &through(Some(listed))).is_empty());
        assert!(scope.check_origin(&home, &through(None)).is_empty());
        let other = scope.check_origin(&home, &through(Some("arn:aws:sns:us-east-1:123456789012:someone-else")));
        assert_eq!(other.len(), 1);
        assert!(other[0].contains("SNS_SOURCE_TOPIC_ARNS"), "{other:?}");
        scope.sns_topics.clear();
        assert!(
            scope
                .check_origin(&home, &through(Some("arn:aws:sns:us-east-1:123456789012:any")))
                .is_empty()
        );
    }

    fn lifecycle_trigger(hook: &str, source: Source) -> Trigger {
        Trigger {
            lifecycle: Some(Box::new(crate::input::LifecycleAction {
                hook_name: hook.into(),
                group_name: "nodes".into(),
                token: None,
                destination: crate::input::LifecycleDestination::Ec2,
            })),
            source,
            ..trigger(Some(Action::ScaleIn), None, None)
        }
    }

    #[test]
    fn hook_names_are_auto_scalings_own_characters() {
        assert_eq!(
            parse_hook_names(" spot-cleanup, team/drain_1 ,,spot-cleanup").unwrap(),
            ["spot-cleanup", "team/drain_1"]
        );
        assert_eq!(parse_hook_names("").unwrap(), Vec::<String>::new());
        assert_eq!(parse_hook_names(" , ").unwrap(), Vec::<String>::new());
        for bad in ["spot cleanup", "hook*", "ünïcode", &"h".repeat(256)] {
            assert!(parse_hook_names(bad).is_err(), "{bad:?}");
        }
        assert!(parse_hook_names(&"h".repeat(255)).is_ok());
    }

    /// Only a lifecycle action of a hook named in LIFECYCLE_HOOK_NAMES is this function's; with none named, none is.
    /// Requests without a lifecycle action are not concerned.
    #[test]
    fn only_our_own_hooks_are_ours() {
        let mut scope = Scope::default();
        for source in [Source::EventBridge, Source::AutoScaling] {
            let reason = scope.not_our_hook(&lifecycle_trigger("spot-cleanup", source)).unwrap();
            assert!(reason.contains("LIFECYCLE_HOOK_NAMES names none"), "{reason}");
        }
        assert_eq!(scope.not_our_hook(&trigger(Some(Action::Terminate), None, None)), None);

        scope.lifecycle_hooks = vec!["spot-cleanup".into(), "drain".into()];
        for source in [Source::EventBridge, Source::AutoScaling] {
            assert_eq!(scope.not_our_hook(&lifecycle_trigger("spot-cleanup", source)), None);
            assert_eq!(scope.not_our_hook(&lifecycle_trigger("drain", source)), None);
            let reason = scope.not_our_hook(&lifecycle_trigger("nth", source)).unwrap();
            assert!(reason.contains("\"nth\""), "{reason}");
            assert!(reason.contains("spot-cleanup,drain"), "{reason}");
        }
        // Names are compared exactly, as Auto Scaling does.
        assert!(
            scope
                .not_our_hook(&lifecycle_trigger("Spot-Cleanup", Source::EventBridge))
                .is_some()
        );
    }

    /// Under EVENT_SCOPE=spot a lifecycle action, whichever way it came, acts on Spot instances only; under all, on any.
    #[test]
    fn event_scope_applies_to_lifecycle_actions() {
        let on_demand = instance(None, &[]);
        let spot = instance(Some("spot"), &[]);
        let mut scope = Scope::default();
        for source in [Source::EventBridge, Source::AutoScaling] {
            let request = Request {
                trigger: lifecycle_trigger("spot-cleanup", source),
                ..request(Some(Action::ScaleIn))
            };
            let reason = scope.leaves_alone(&request, &on_demand).unwrap();
            assert!(reason.contains("lifecycle actions"), "{reason}");
            assert_eq!(scope.leaves_alone(&request, &spot), None);
            scope.event_scope = EventScope::All;
            assert_eq!(scope.leaves_alone(&request, &on_demand), None);
            scope.event_scope = EventScope::Spot;
        }
        // The agent's own scale-in is not an Auto Scaling lifecycle action.
        assert_eq!(scope.leaves_alone(&request(Some(Action::ScaleIn)), &on_demand), None);
    }
}
