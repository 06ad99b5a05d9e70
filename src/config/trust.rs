//! The trust settings: `REQUIRED_TAGS`, `MAX_EVENT_AGE`, `IDENTITY_CERT_PEM` (else AWS's shipped certificates),
//! `REQUIRE_IDENTITY_PROOF` (on by default at the agent entry point), `EVENT_SCOPE`, `SNS_SOURCE_TOPIC_ARNS`,
//! `LIFECYCLE_HOOK_NAMES`, and what the scope needs of `CROSS_ACCOUNT_ROLE_NAME` and `AWS_REGION`.

use super::settings::*;
use super::{ConfigError, EntryPoint, Vars, is_topic_arn};
use crate::trust::TrustConfig;
use crate::trust::freshness;
use crate::trust::identity::{Certificates, IdentityPolicy, IdentityVerifier};
use crate::trust::scope::{Scope, parse_hook_names, parse_required_tags};

pub(super) fn trust(vars: &Vars<'_>, entry_point: EntryPoint) -> Result<TrustConfig, ConfigError> {
    let load = |pem: &str| IdentityVerifier::load(pem).map(Certificates::One);
    // The agent entry point exists for node agents, whose requests must prove where they come from.
    let required = vars.flag_or(&REQUIRE_IDENTITY_PROOF, entry_point == EntryPoint::Agent)?;
    Ok(TrustConfig {
        scope: Scope {
            event_scope: vars.choice(&EVENT_SCOPE)?,
            sns_topics: vars.parsed(&SNS_SOURCE_TOPIC_ARNS, topic_arns)?,
            lifecycle_hooks: vars.parsed(&LIFECYCLE_HOOK_NAMES, parse_hook_names)?,
            required_tags: vars.parsed(&REQUIRED_TAGS, parse_required_tags)?,
            // The cross-account setting's own variable: when it is set, events of other accounts are expected.
            cross_account: vars.set(&CROSS_ACCOUNT_ROLE_NAME).is_some(),
            fallback_region: vars.raw(&AWS_REGION).filter(|v| !v.trim().is_empty()),
        },
        max_event_age: vars.parsed(&MAX_EVENT_AGE, freshness::parse_max_age)?,
        identity: IdentityPolicy {
            certificates: vars.parsed(&IDENTITY_CERT_PEM, load)?,
            required,
        },
    })
}

fn topic_arns(value: &str) -> Result<Vec<String>, &'static str> {
    let topics = value.split(',').map(str::trim).filter(|t| !t.is_empty());
    match topics.clone().all(is_topic_arn) {
        true => Ok(topics.map(str::to_owned).collect()),
        false => Err("expected comma-separated topic ARNs, arn:<partition>:sns:<region>:<account>:<topic>"),
    }
}
