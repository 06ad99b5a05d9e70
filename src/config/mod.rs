//! Environment -> `Config`, read and validated once at init; every error names the variable. This is the only module
//! that reads the function's environment (the SDK reads its own, `AWS_ENDPOINT_URL` and the like). Each concern owns
//! the type of its settings (`TrustConfig`, `MonitoringConfig`, `NotifyFormat`, `SecurityGroupId`); this module fills
//! them in.

mod monitoring;
pub mod settings;
mod trust;
mod vars;

use crate::monitoring::MonitoringConfig;
use crate::notify::NotifyFormat;
use crate::steps::quarantine::SecurityGroupId;
use crate::trust::TrustConfig;
use settings::*;
use vars::Vars;

#[derive(Clone, Debug)]
pub struct Config {
    /// Where summaries are published.
    pub sns_topic_arn: String,
    /// Candidate quarantine groups; the one in an ENI's VPC is used.
    pub quarantine_groups: Vec<SecurityGroupId>,
    /// Compute and publish the plan, change nothing.
    pub dry_run: bool,
    /// The DynamoDB table of the registration index; None turns the index off.
    pub registration_index_table: Option<String>,
    /// ELB Describe* calls per second this function allows itself, with a burst of four times that. 10 is AWS's
    /// refill rate for the whole account and region.
    pub elb_describe_rate: usize,
    /// The monitoring systems told at notice time (`DATADOG_*`, `MACKEREL_*`, `MONITORING_WEBHOOK_*`).
    pub monitoring: MonitoringConfig,
    pub notify_format: NotifyFormat,
    pub rebalance_action: EventAction,
    pub health_action: EventAction,
    /// After an Auto Scaling lifecycle cleanup, wait (bounded by the deadline) until its targets leave `draining`
    /// before completing the action.
    pub lifecycle_wait_for_draining: bool,
    /// This function's own account (`HOME_ACCOUNT_ID`, else the account of `SNS_TOPIC_ARN`).
    pub home_account: String,
    /// The role assumed in another account (`CROSS_ACCOUNT_ROLE_NAME`); None refuses events for other accounts.
    pub cross_account_role_name: Option<String>,
    /// Scope, event age and identity proof: what `trust` refuses (`src/trust/`).
    pub trust: TrustConfig,
    /// Open the connections to every AWS endpoint from init; see `warm`.
    pub warm_up: bool,
    /// Record the targets an instance that may come back (stop, hibernate) left, and register them again when it is
    /// restored.
    pub reregister_on_restore: bool,
    /// The length of the one lease (`crate::lease`), held by each claim and by the wave's driver: how long a holder
    /// that died can hold up the others.
    pub claim_lease: std::time::Duration,
    /// The KMS HMAC key that signs the records a restore acts on (`RECORD_KEY_ID`: a key id, key ARN or alias). Without
    /// it records are unsigned and a restore refuses them.
    pub record_key_id: Option<String>,
    /// Which requests this function serves. A restore is
    /// accepted only by a function deployed as the restore entry point, so whoever may ask for a cleanup cannot undo
    /// one; node agents get the agent entry point, which serves their own proven requests and nothing else.
    pub entry_point: EntryPoint,
    /// The most records one invocation may carry: a batch beyond it is rejected whole, before any work. SQS delivers
    /// at most the event source's batch size, SNS one.
    pub max_batch_records: usize,
    /// The deprecated variables that are set, and ignored; init warns of each.
    pub deprecated: Vec<&'static Setting<Deprecated>>,
}

/// The three deployments of the one binary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EntryPoint {
    /// Cleanups from AWS's delivery paths (rules, queues, topics); a restore asked here is refused as a security
    /// signal.
    #[default]
    Cleanup,
    /// Restores only: an operator's request, or EventBridge's `running` event.
    Restore,
    /// Node agents only: a node-agent payload for the sender's own instance, proven by its identity document
    /// (`REQUIRE_IDENTITY_PROOF` defaults to on here). Anything else is refused with a security alert.
    Agent,
}

/// What to do with a warning that does not force the instance out (rebalance, scheduled change).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EventAction {
    /// Publish a summary saying it was announced; change nothing.
    #[default]
    Notify,
    /// Clean up as for a Spot interruption.
    Cleanup,
    /// Answer and do nothing.
    Ignore,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("{name} is not set: {hint}")]
    Missing { name: &'static str, hint: &'static str },
    #[error("{name}={value:?} is invalid: {reason}")]
    Invalid {
        name: &'static str,
        value: String,
        reason: String,
    },
}

impl Config {
    /// The function's environment, with a warning for each deprecated variable that is set.
    pub fn from_env() -> Result<Self, ConfigError> {
        let config = Self::from_lookup(|name| std::env::var(name).ok())?;
        for setting in &config.deprecated {
            tracing::warn!(
                variable = setting.name,
                instead = setting.kind.0,
                "a deprecated variable is set: ignored"
            );
        }
        Ok(config)
    }

    /// Build from any variable lookup, so tests need not touch the process environment.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let vars = Vars::new(&get);
        let sns_topic_arn = vars.required(&SNS_TOPIC_ARN)?;
        if !is_topic_arn(&sns_topic_arn) {
            let reason = "expected arn:<partition>:sns:<region>:<account>:<topic>";
            return Err(vars.invalid(&SNS_TOPIC_ARN, &sns_topic_arn, reason));
        }
        let home_account = match vars.set(&HOME_ACCOUNT_ID) {
            None => sns_topic_arn.split(':').nth(4).unwrap_or_default().to_owned(),
            Some(v) if v.len() == 12 && v.bytes().all(|b| b.is_ascii_digit()) => v,
            Some(v) => return Err(vars.invalid(&HOME_ACCOUNT_ID, &v, "expected a 12-digit account id")),
        };
        let entry_point = vars.choice(&ENTRY_POINT)?;
        Ok(Config {
            quarantine_groups: quarantine_groups(&vars)?,
            dry_run: vars.flag(&DRY_RUN)?,
            warm_up: vars.flag(&WARM_UP)?,
            elb_describe_rate: vars.number(&ELB_DESCRIBE_RATE)? as usize,
            registration_index_table: vars.checked(&REGISTRATION_INDEX_TABLE, is_table_name, TABLE_NAME)?,
            monitoring: monitoring::monitoring(&vars)?,
            notify_format: vars.choice(&NOTIFY_FORMAT)?,
            rebalance_action: vars.choice(&REBALANCE_ACTION)?,
            health_action: vars.choice(&HEALTH_ACTION)?,
            lifecycle_wait_for_draining: vars.flag(&LIFECYCLE_WAIT_FOR_DRAINING)?,
            reregister_on_restore: vars.flag(&REREGISTER_ON_RESTORE)?,
            claim_lease: std::time::Duration::from_secs(vars.number(&CLAIM_LEASE_SECONDS)?),
            record_key_id: vars.checked(&RECORD_KEY_ID, is_key_id, KEY_ID)?,
            entry_point,
            cross_account_role_name: vars.checked(&CROSS_ACCOUNT_ROLE_NAME, is_role_name, ROLE_NAME)?,
            trust: trust::trust(&vars, entry_point)?,
            max_batch_records: vars.number(&MAX_BATCH_RECORDS)? as usize,
            deprecated: DEPRECATED.into_iter().filter(|s| vars.set(s).is_some()).collect(),
            sns_topic_arn,
            home_account,
        })
    }
}

/// The log level: `RUST_LOG`, else Lambda's `AWS_LAMBDA_LOG_LEVEL`, else `info`. Read before the rest, so that a bad
/// configuration can be logged.
pub fn log_level() -> String {
    let get = |name: &str| std::env::var(name).ok();
    let vars = Vars::new(&get);
    let level = vars.raw(&RUST_LOG).or(vars.text(&AWS_LAMBDA_LOG_LEVEL));
    level.unwrap_or_default().to_lowercase()
}

fn quarantine_groups(vars: &Vars<'_>) -> Result<Vec<SecurityGroupId>, ConfigError> {
    let raw = vars.required(&QUARANTINE_SECURITY_GROUP_ID)?;
    let reason = "expected comma-separated ids like sg-0123456789abcdef0";
    let invalid = || vars.invalid(&QUARANTINE_SECURITY_GROUP_ID, &raw, reason);
    raw.split(',')
        .map(|g| SecurityGroupId::parse(g.trim()).ok_or_else(invalid))
        .collect()
}

const ROLE_NAME: &str = "expected an IAM role name: 1 to 64 characters of A-Z, a-z, 0-9 and +=,.@_-";
const KEY_ID: &str = "expected a KMS key id, key ARN, alias/<name> or alias ARN";
const TABLE_NAME: &str = "expected a DynamoDB table name: 3 to 255 characters of A-Z, a-z, 0-9, _, - and .";

/// `value` is `len` bytes of ASCII letters, digits and `extra`.
fn made_of(value: &str, len: std::ops::RangeInclusive<usize>, extra: &[u8]) -> bool {
    len.contains(&value.len()) && value.bytes().all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
}

fn is_role_name(value: &str) -> bool {
    made_of(value, 1..=64, b"+=,.@_-")
}

fn is_key_id(value: &str) -> bool {
    let name_ok = |name: &str| made_of(name, 1..=usize::MAX, b"_-/");
    if let Some(alias) = value.strip_prefix("alias/") {
        return name_ok(alias) && value.len() <= 256;
    }
    if value.starts_with("arn:") {
        let parts: Vec<&str> = value.splitn(6, ':').collect();
        return parts.len() == 6
            && parts[2] == "kms"
            && (parts[5].strip_prefix("key/").is_some_and(name_ok)
                || parts[5].strip_prefix("alias/").is_some_and(name_ok));
    }
    // A key id: a UUID, or `mrk-` and hex for a multi-Region key.
    made_of(value, 1..=64, b"-")
}

fn is_table_name(value: &str) -> bool {
    made_of(value, 3..=255, b"_-.")
}

fn is_topic_arn(value: &str) -> bool {
    let parts: Vec<&str> = value.split(':').collect();
    parts.len() == 6
        && parts[0] == "arn"
        && !parts[1].is_empty()
        && parts[2] == "sns"
        && !parts[3].is_empty()
        && parts[4].len() == 12
        && parts[4].bytes().all(|b| b.is_ascii_digit())
        && !parts[5].is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:spot-cleanup";

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn minimal_configuration() {
        let c = config(&[
            ("SNS_TOPIC_ARN", TOPIC),
            ("QUARANTINE_SECURITY_GROUP_ID", "sg-0123abcd"),
        ])
        .unwrap();
        assert_eq!(
            c.quarantine_groups,
            vec![SecurityGroupId::parse("sg-0123abcd").unwrap()]
        );
        assert!(!c.dry_run);
        assert_eq!(c.registration_index_table, None, "the index is optional");
        assert_eq!(c.elb_describe_rate, 8);
        assert_eq!(c.max_batch_records, 100);
        assert_eq!(c.claim_lease, crate::lease::DEFAULT_LEASE);
        assert_eq!(c.trust.max_event_age, crate::trust::freshness::DEFAULT_MAX_EVENT_AGE);
        assert_eq!(c.entry_point, EntryPoint::Cleanup);
        assert_eq!(c.notify_format, NotifyFormat::Json);
        assert!(c.deprecated.is_empty());
        assert!(
            !c.warm_up,
            "warming connections at init is for environments started ahead of their events"
        );
    }

    #[test]
    fn the_registration_index_is_on_when_a_table_is_named() {
        let base = [
            ("SNS_TOPIC_ARN", TOPIC),
            ("QUARANTINE_SECURITY_GROUP_ID", "sg-0123abcd"),
        ];
        let with = |extra: &[(&'static str, &'static str)]| {
            let vars: Vec<(&str, &str)> = base.iter().chain(extra).copied().collect();
            config(&vars)
        };
        let c = with(&[("REGISTRATION_INDEX_TABLE", "spot-cleanup.registrations_v-1")]).unwrap();
        assert_eq!(
            c.registration_index_table.as_deref(),
            Some("spot-cleanup.registrations_v-1")
        );
        assert_eq!(
            with(&[("REGISTRATION_INDEX_TABLE", " ")])
                .unwrap()
                .registration_index_table,
            None
        );
        let longest = "t".repeat(255);
        let longest: &'static str = Box::leak(longest.into_boxed_str());
        assert!(with(&[("REGISTRATION_INDEX_TABLE", longest)]).is_ok());
        let too_long: &'static str = Box::leak("t".repeat(256).into_boxed_str());
        for bad in [
            "ab",
            "has space",
            "arn:aws:dynamodb:us-east-1:123456789012:table/x",
            "t\u{e9}",
            too_long,
        ] {
            let message = with(&[("REGISTRATION_INDEX_TABLE", bad)]).unwrap_err().to_string();
            assert!(message.starts_with("REGISTRATION_INDEX_TABLE="), "{message:.100}");
            assert!(message.contains("DynamoDB table name"), "{message:.100}");
        }
    }

    /// The rate is the ELB budget's now: the old bounds on calls in flight are accepted, whatever their value, and
    /// ignored, and each that is set is warned of, naming what replaces it.
    #[test]
    fn deprecated_settings_are_ignored_with_a_notice_each() {
        let base = [
            ("SNS_TOPIC_ARN", TOPIC),
            ("QUARANTINE_SECURITY_GROUP_ID", "sg-0123abcd"),
        ];
        // The notices: each variable's name and what replaces it.
        let with = |extra: &[(&'static str, &'static str)]| {
            let vars: Vec<(&str, &str)> = base.iter().chain(extra).copied().collect();
            let c = config(&vars).unwrap();
            c.deprecated.iter().map(|s| (s.name, s.kind.0)).collect::<Vec<_>>()
        };
        assert_eq!(with(&[]), vec![]);
        assert_eq!(with(&[("ELB_CONCURRENCY", " ")]), vec![], "blank is unset");
        let elb = ("ELB_CONCURRENCY", "ELB_DESCRIBE_RATE: the ELB budget paces the reads");
        assert_eq!(with(&[("ELB_CONCURRENCY", "0")]), vec![elb]);
        let refresh = (
            "INDEX_REFRESH_CONCURRENCY",
            "nothing: the index refresh reads 2 a second",
        );
        assert_eq!(with(&[("INDEX_REFRESH_CONCURRENCY", "41")]), vec![refresh]);
        assert_eq!(
            with(&[("ELB_CONCURRENCY", "many"), ("INDEX_REFRESH_CONCURRENCY", "5")]),
            vec![elb, refresh]
        );
    }

    #[test]
    fn warnings_that_do_not_force_the_instance_out_default_to_notify() {
        let base = [
            ("SNS_TOPIC_ARN", TOPIC),
            ("QUARANTINE_SECURITY_GROUP_ID", "sg-0123abcd"),
        ];
        let c = config(&base).unwrap();
        assert_eq!(c.rebalance_action, EventAction::Notify);
        assert_eq!(c.health_action, EventAction::Notify);
        assert!(!c.lifecycle_wait_for_draining);
        let mut vars = base.to_vec();
        vars.extend([
            ("REBALANCE_ACTION", "Cleanup"),
            ("HEALTH_ACTION", "ignore"),
            ("LIFECYCLE_WAIT_FOR_DRAINING", "true"),
        ]);
        let c = config(&vars).unwrap();
        assert_eq!(c.rebalance_action, EventAction::Cleanup);
        assert_eq!(c.health_action, EventAction::Ignore);
        assert!(c.lifecycle_wait_for_draining);
        for (name, bad) in [
            ("REBALANCE_ACTION", "drain"),
            ("HEALTH_ACTION", "yes"),
            ("LIFECYCLE_WAIT_FOR_DRAINING", "maybe"),
        ] {
            let mut vars = base.to_vec();
            vars.push((name, bad));
            let message = config(&vars).unwrap_err().to_string();
            assert!(message.starts_with(&format!("{name}=")), "{message}");
        }
    }

    #[test]
    fn the_home_account_and_the_cross_account_role() {
        let base = [
            ("SNS_TOPIC_ARN", TOPIC),
            ("QUARANTINE_SECURITY_GROUP_ID", "sg-0123abcd"),
        ];
        let c = config(&base).unwrap();
        assert_eq!(c.home_account, "123456789012", "the topic's account");
        assert_eq!(c.cross_account_role_name, None);
        let mut vars = base.to_vec();
        vars.extend([
            ("HOME_ACCOUNT_ID", "210987654321"),
            ("CROSS_ACCOUNT_ROLE_NAME", "spot-cleanup-member"),
        ]);
        let c = config(&vars).unwrap();
        assert_eq!(c.home_account, "210987654321");
        assert_eq!(c.cross_account_role_name.as_deref(), Some("spot-cleanup-member"));
        for (name, bad) in [
            ("HOME_ACCOUNT_ID", "1234"),
            ("CROSS_ACCOUNT_ROLE_NAME", "role/with/path"),
        ] {
            let mut vars = base.to_vec();
            vars.push((name, bad));
            let message = config(&vars).unwrap_err().to_string();
            assert!(message.starts_with(&format!("{name}=")), "{message}");
        }
    }

    #[test]
    fn several_quarantine_groups_and_dry_run() {
        let c = config(&[
            ("SNS_TOPIC_ARN", TOPIC),
            ("QUARANTINE_SECURITY_GROUP_ID", "sg-0123abcd, sg-0123456789abcdef0"),
            ("DRY_RUN", "TRUE"),
            ("ELB_DESCRIBE_RATE", "4"),
        ])
        .unwrap();
        assert_eq!(c.quarantine_groups.len(), 2);
        assert!(c.dry_run);
        assert_eq!(c.elb_describe_rate, 4);
    }

    #[test]
    fn errors_name_the_variable() {
        let cases: [(&[(&str, &str)], &str); 10] = [
            (
                &[("QUARANTINE_SECURITY_GROUP_ID", "sg-0123abcd")],
                "SNS_TOPIC_ARN is not set",
            ),
            (
                &[
                    ("SNS_TOPIC_ARN", "topic"),
                    ("QUARANTINE_SECURITY_GROUP_ID", "sg-0123abcd"),
                ],
                "SNS_TOPIC_ARN=",
            ),
            (&[("SNS_TOPIC_ARN", TOPIC)], "QUARANTINE_SECURITY_GROUP_ID is not set"),
            (
                &[
                    ("SNS_TOPIC_ARN", TOPIC),
                    ("QUARANTINE_SECURITY_GROUP_ID", "sg-1,sg-0123abcd"),
                ],
                "QUARANTINE_SECURITY_GROUP_ID=",
            ),
            (
                &[
                    ("SNS_TOPIC_ARN", TOPIC),
                    ("QUARANTINE_SECURITY_GROUP_ID", "sg-0123abcd,"),
                ],
                "QUARANTINE_SECURITY_GROUP_ID=",
            ),
            (
                &[
                    ("SNS_TOPIC_ARN", TOPIC),
                    ("QUARANTINE_SECURITY_GROUP_ID", "sg-0123abcd"),
                    ("DRY_RUN", "yes"),
                ],
                "DRY_RUN=",
            ),
            (
                &[
                    ("SNS_TOPIC_ARN", TOPIC),
                    ("QUARANTINE_SECURITY_GROUP_ID", "sg-0123abcd"),
                    ("ELB_DESCRIBE_RATE", "0"),
                ],
                "ELB_DESCRIBE_RATE=\"0\" is invalid: expected a whole number from 1 to 40",
            ),
            (
                &[
                    ("SNS_TOPIC_ARN", TOPIC),
                    ("QUARANTINE_SECURITY_GROUP_ID", "sg-0123abcd"),
                    ("MAX_BATCH_RECORDS", "10001"),
                ],
                "MAX_BATCH_RECORDS=\"10001\" is invalid: expected a whole number from 1 to 10000",
            ),
            (
                &[
                    ("SNS_TOPIC_ARN", TOPIC),
                    ("QUARANTINE_SECURITY_GROUP_ID", "sg-0123abcd"),
                    ("CLAIM_LEASE_SECONDS", "61"),
                ],
                "CLAIM_LEASE_SECONDS=\"61\" is invalid: expected a whole number from 1 to 60",
            ),
            (
                &[
                    ("SNS_TOPIC_ARN", TOPIC),
                    ("QUARANTINE_SECURITY_GROUP_ID", "sg-0123abcd"),
                    ("ENTRY_POINT", "both"),
                ],
                "ENTRY_POINT=\"both\" is invalid: expected cleanup, restore or agent",
            ),
        ];
        for (vars, expected) in cases {
            let message = config(vars).unwrap_err().to_string();
            assert!(message.starts_with(expected), "{message}");
        }
    }
}
