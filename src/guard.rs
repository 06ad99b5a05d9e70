//! The checks that run before anything is changed: where the request comes from (scope), how old it is (freshness)
//! and who sent it (identity). A refused request changes nothing, is answered with a typed error, and is reported
//! to SNS, marked as a security signal when someone asked for something they should not.

use std::fmt;
use std::time::Duration;

use chrono::Utc;
use serde::Serialize;

use crate::config::ConfigError;
use crate::freshness::{self, DEFAULT_MAX_EVENT_AGE};
use crate::identity::{IdentityPolicy, IdentityVerifier};
use crate::input::{InstanceId, Request, Trigger};
use crate::scope::{Home, Scope, parse_required_tags};

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RefusalKind {
    /// Not an instance this function may touch, or not from this account and region.
    OutOfScope,
    /// Older than `MAX_EVENT_AGE`.
    Stale,
    /// A node-agent request whose identity proof is missing (where required), invalid or for someone else.
    IdentityNotProven,
}

impl RefusalKind {
    /// Lambda's `errorType`, stable for alarms.
    pub fn error_type(self) -> &'static str {
        match self {
            RefusalKind::OutOfScope => "OutOfScope",
            RefusalKind::Stale => "StaleEvent",
            RefusalKind::IdentityNotProven => "IdentityNotProven",
        }
    }

    /// Someone asked for something they should not: subscribers filter on `security=true`.
    pub fn is_security_signal(self) -> bool {
        !matches!(self, RefusalKind::Stale)
    }

    /// The SNS `outcome` attribute.
    pub fn outcome(self) -> &'static str {
        match self {
            RefusalKind::Stale => "stale",
            _ => "refused",
        }
    }
}

impl fmt::Display for RefusalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RefusalKind::OutOfScope => "out of scope",
            RefusalKind::Stale => "stale",
            RefusalKind::IdentityNotProven => "identity not proven",
        })
    }
}

/// A request that was refused, and why. Nothing was changed.
#[derive(Clone, Debug, PartialEq, Serialize, thiserror::Error)]
#[error("refused ({kind}) for {instance_id}: {}; nothing was changed", reasons.join("; "))]
pub struct Refusal {
    pub kind: RefusalKind,
    pub instance_id: InstanceId,
    pub reasons: Vec<String>,
    /// Boxed: it is most of the refusal's size, and errors travel by value.
    pub trigger: Box<Trigger>,
}

/// The trust settings, read once at init with the rest of the configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct TrustConfig {
    pub scope: Scope,
    /// `MAX_EVENT_AGE` (default 10 minutes).
    pub max_event_age: Duration,
    pub identity: IdentityPolicy,
}

impl Default for TrustConfig {
    fn default() -> Self {
        TrustConfig {
            scope: Scope::default(),
            max_event_age: DEFAULT_MAX_EVENT_AGE,
            identity: IdentityPolicy::default(),
        }
    }
}

impl TrustConfig {
    pub fn from_lookup(get: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let set = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let invalid = |name: &'static str, value: &str, reason: &'static str| ConfigError::Invalid {
            name,
            value: value.chars().take(80).collect(),
            reason,
        };
        let required_tags = match set("REQUIRED_TAGS") {
            None => Vec::new(),
            Some(v) => parse_required_tags(&v).map_err(|reason| invalid("REQUIRED_TAGS", &v, reason))?,
        };
        let max_event_age = match set("MAX_EVENT_AGE") {
            None => DEFAULT_MAX_EVENT_AGE,
            Some(v) => freshness::parse_max_age(&v).map_err(|reason| invalid("MAX_EVENT_AGE", &v, reason))?,
        };
        let verifier = match set("IDENTITY_CERT_PEM") {
            None => None,
            Some(v) => Some(IdentityVerifier::load(&v).map_err(|reason| invalid("IDENTITY_CERT_PEM", &v, reason))?),
        };
        let required = match set("REQUIRE_IDENTITY_PROOF").as_deref().map(str::trim) {
            None => false,
            Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => true,
            Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => false,
            Some(v) => return Err(invalid("REQUIRE_IDENTITY_PROOF", v, "expected true or false")),
        };
        if required && verifier.is_none() {
            return Err(ConfigError::Missing {
                name: "IDENTITY_CERT_PEM",
                hint: "REQUIRE_IDENTITY_PROOF=true needs the certificate that signs identity documents",
            });
        }
        Ok(TrustConfig {
            scope: Scope {
                required_tags,
                // The cross-account setting's own variable: when it is set, events of other accounts are expected.
                cross_account: set("CROSS_ACCOUNT_ROLE_NAME").is_some(),
                fallback_region: set("AWS_REGION"),
            },
            max_event_age,
            identity: IdentityPolicy { verifier, required },
        })
    }

    /// The checks that need no AWS call, in order of cost: where the event says it comes from, its age, its proof.
    pub fn admit(&self, home: &Home, request: &Request) -> Result<(), Refusal> {
        let refuse = |kind, reasons| Refusal {
            kind,
            instance_id: request.instance_id.clone(),
            reasons,
            trigger: Box::new(request.trigger.clone()),
        };
        let origin = self.scope.check_origin(home, &request.trigger);
        if !origin.is_empty() {
            return Err(refuse(RefusalKind::OutOfScope, origin));
        }
        if let Some(reason) = self.identity.check(request, home) {
            return Err(refuse(RefusalKind::IdentityNotProven, vec![reason]));
        }
        if let Some(reason) = freshness::staleness(&request.trigger, self.max_event_age, Utc::now()) {
            return Err(refuse(RefusalKind::Stale, vec![reason]));
        }
        Ok(())
    }
}

/// Log the refusal and publish it to SNS. A failed publish is logged: the refusal itself stands either way.
pub async fn announce(app: &crate::cleanup::App, refusal: &Refusal) {
    tracing::warn!(
        step = "scope",
        instance_id = refusal.instance_id.as_str(),
        event_id = crate::steplog::event_id(&refusal.trigger),
        error_type = refusal.kind.error_type(),
        security = refusal.kind.is_security_signal(),
        reasons = %refusal.reasons.join("; "),
        "request refused, nothing was changed"
    );
    if let Err(e) = crate::steps::alert::publish_refusal(&app.clients.sns, &app.config.sns_topic_arn, refusal).await {
        tracing::error!(error = %e, "the refusal could not be published to SNS");
    }
}
