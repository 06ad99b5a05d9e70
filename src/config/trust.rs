//! The trust settings: `REQUIRED_TAGS`, `MAX_EVENT_AGE`, `IDENTITY_CERT_PEM` (else AWS's shipped certificates),
//! `REQUIRE_IDENTITY_PROOF` (on by default at the agent entry point), `EVENT_SCOPE`, `SNS_SOURCE_TOPIC_ARNS`,
//! `LIFECYCLE_HOOK_NAMES`, and what the scope needs of `CROSS_ACCOUNT_ROLE_NAME` and `AWS_REGION`.

use super::{ConfigError, EntryPoint, Vars, is_topic_arn};
use crate::trust::TrustConfig;
use crate::trust::freshness::{self, DEFAULT_MAX_EVENT_AGE};
use crate::trust::identity::{Certificates, IdentityPolicy, IdentityVerifier};
use crate::trust::scope::{EventScope, Scope, parse_hook_names, parse_required_tags};

pub(super) fn trust(vars: &Vars<'_>, entry_point: EntryPoint) -> Result<TrustConfig, ConfigError> {
    // Values that may be long (a PEM) are quoted back cut short.
    let invalid = |name: &'static str, value: &str, reason: &'static str| ConfigError::Invalid {
        name,
        value: value.chars().take(80).collect(),
        reason,
    };
    let required_tags = match vars.raw("REQUIRED_TAGS").filter(|v| !v.trim().is_empty()) {
        None => Vec::new(),
        Some(v) => parse_required_tags(&v).map_err(|reason| invalid("REQUIRED_TAGS", &v, reason))?,
    };
    let max_event_age = match vars.set("MAX_EVENT_AGE") {
        None => DEFAULT_MAX_EVENT_AGE,
        Some(v) => freshness::parse_max_age(&v).map_err(|reason| invalid("MAX_EVENT_AGE", &v, reason))?,
    };
    let certificates = match vars.raw("IDENTITY_CERT_PEM").filter(|v| !v.trim().is_empty()) {
        None => Certificates::default(),
        Some(v) => {
            Certificates::One(IdentityVerifier::load(&v).map_err(|reason| invalid("IDENTITY_CERT_PEM", &v, reason))?)
        }
    };
    // The agent entry point exists for node agents, whose requests must prove where they come from.
    let required = vars.flag("REQUIRE_IDENTITY_PROOF", entry_point == EntryPoint::Agent)?;
    let event_scope = match vars.set("EVENT_SCOPE") {
        None => EventScope::default(),
        Some(v) => EventScope::parse(&v).ok_or_else(|| invalid("EVENT_SCOPE", &v, "expected spot or all"))?,
    };
    let sns_topics = match vars.set("SNS_SOURCE_TOPIC_ARNS") {
        None => Vec::new(),
        Some(v) => {
            let topics: Vec<String> = v
                .split(',')
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
                .collect();
            if topics.iter().any(|t| !is_topic_arn(t)) {
                return Err(invalid(
                    "SNS_SOURCE_TOPIC_ARNS",
                    &v,
                    "expected comma-separated topic ARNs, arn:<partition>:sns:<region>:<account>:<topic>",
                ));
            }
            topics
        }
    };
    let lifecycle_hooks = match vars.raw("LIFECYCLE_HOOK_NAMES") {
        None => Vec::new(),
        Some(v) => parse_hook_names(&v).map_err(|reason| invalid("LIFECYCLE_HOOK_NAMES", &v, reason))?,
    };
    Ok(TrustConfig {
        scope: Scope {
            event_scope,
            sns_topics,
            lifecycle_hooks,
            required_tags,
            // The cross-account setting's own variable: when it is set, events of other accounts are expected.
            cross_account: vars.set("CROSS_ACCOUNT_ROLE_NAME").is_some(),
            fallback_region: vars.raw("AWS_REGION").filter(|v| !v.trim().is_empty()),
        },
        max_event_age,
        identity: IdentityPolicy { certificates, required },
    })
}
