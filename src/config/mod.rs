//! Environment -> `Config`, read and validated once at init; every error names the variable. This is the only module
//! that reads the function's environment (the SDK reads its own, `AWS_ENDPOINT_URL` and the like). Each concern owns
//! the type of its settings (`TrustConfig`, `MonitoringConfig`, `NotifyFormat`, `SecurityGroupId`); this module fills
//! them in.

mod monitoring;
mod trust;
mod vars;

use crate::lease::DEFAULT_LEASE;
use crate::monitoring::MonitoringConfig;
use crate::notify::NotifyFormat;
use crate::steps::quarantine::SecurityGroupId;
use crate::trust::TrustConfig;
use vars::Vars;

/// Default number of ELB reads in flight at once. The rate is the ELB budget's business (`aws::paced`); this only
/// bounds how many reads wait at once on a slow answer. With 10, an ELB answering in 2 s read 5 groups a second.
pub const DEFAULT_CONCURRENCY: usize = 40;
/// The reads' share of the account's ELB refill of 10 a second: the rest is kept for other tools (`aws::paced`).
pub const DEFAULT_ELB_DESCRIBE_RATE: usize = 8;

/// Default number of concurrent DescribeTargetHealth calls of a registration index refresh. Deliberately low: the
/// refresh is background work and must leave most of the shared Describe* budget to everything else in the account.
pub const DEFAULT_REFRESH_CONCURRENCY: usize = 2;

#[derive(Clone, Debug)]
pub struct Config {
    /// Where summaries are published.
    pub sns_topic_arn: String,
    /// Candidate quarantine groups; the one in an ENI's VPC is used.
    pub quarantine_groups: Vec<SecurityGroupId>,
    /// Compute and publish the plan, change nothing.
    pub dry_run: bool,
    /// Bound on concurrent ELB calls.
    pub concurrency: usize,
    /// The DynamoDB table of the registration index; None turns the index off.
    pub registration_index_table: Option<String>,
    /// Bound on concurrent DescribeTargetHealth calls while the index is refreshed.
    pub refresh_concurrency: usize,
    /// ELB Describe* calls per second this function allows itself (`ELB_DESCRIBE_RATE`, 1 to 40, default 10), with a
    /// burst of four times that. 10 is AWS's refill rate for the whole account and region.
    pub elb_describe_rate: usize,
    /// The monitoring systems told at notice time (`DATADOG_*`, `MACKEREL_*`, `MONITORING_WEBHOOK_*`); none by default.
    pub monitoring: MonitoringConfig,
    /// The SNS message's form (`NOTIFY_FORMAT`: json, email or chatbot; default json).
    pub notify_format: NotifyFormat,
    /// What a rebalance recommendation does (`REBALANCE_ACTION`, default notify).
    pub rebalance_action: EventAction,
    /// What an AWS Health scheduled change does (`HEALTH_ACTION`, default notify).
    pub health_action: EventAction,
    /// After an Auto Scaling lifecycle cleanup, wait (bounded by the deadline) until its targets leave `draining`
    /// before completing the action (`LIFECYCLE_WAIT_FOR_DRAINING`, default false).
    pub lifecycle_wait_for_draining: bool,
    /// This function's own account (`HOME_ACCOUNT_ID`, else the account of `SNS_TOPIC_ARN`).
    pub home_account: String,
    /// The role assumed in another account (`CROSS_ACCOUNT_ROLE_NAME`); None refuses events for other accounts.
    pub cross_account_role_name: Option<String>,
    /// Scope, event age and identity proof: what `trust` refuses (`src/trust/`).
    pub trust: TrustConfig,
    /// Open the connections to every AWS endpoint from init (`WARM_UP`, default false); see `warm`.
    pub warm_up: bool,
    /// Record the targets an instance that may come back (stop, hibernate) left, and register them again when it is
    /// restored (`REREGISTER_ON_RESTORE`, default false).
    pub reregister_on_restore: bool,
    /// The length of the one lease (`crate::lease`; `CLAIM_LEASE_SECONDS`, 1 to 60, default 15), held by each claim
    /// and by the wave's driver: how long a holder that died can hold up the others.
    pub claim_lease: std::time::Duration,
    /// The KMS HMAC key that signs the records a restore acts on (`RECORD_KEY_ID`: a key id, key ARN or alias). Without
    /// it records are unsigned and a restore refuses them.
    pub record_key_id: Option<String>,
    /// Which requests this function serves (`ENTRY_POINT`: cleanup, the default, restore or agent). A restore is
    /// accepted only by a function deployed as the restore entry point, so whoever may ask for a cleanup cannot undo
    /// one; node agents get the agent entry point, which serves their own proven requests and nothing else.
    pub entry_point: EntryPoint,
    /// The most records one invocation may carry (`MAX_BATCH_RECORDS`, 1 to 10,000, default 100): a batch beyond it
    /// is rejected whole, before any work. SQS delivers at most the event source's batch size, SNS one.
    pub max_batch_records: usize,
}

/// `MAX_BATCH_RECORDS` when unset: ten times the template's SQS batch size.
pub const DEFAULT_MAX_BATCH_RECORDS: usize = 100;

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
        reason: &'static str,
    },
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Build from any variable lookup, so tests need not touch the process environment.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let vars = Vars::new(&get);
        let sns_topic_arn = vars.required("SNS_TOPIC_ARN", "the ARN of the topic that receives summaries")?;
        if !is_topic_arn(&sns_topic_arn) {
            return Err(vars.invalid(
                "SNS_TOPIC_ARN",
                &sns_topic_arn,
                "expected arn:<partition>:sns:<region>:<account>:<topic>",
            ));
        }
        let home_account = match vars.set("HOME_ACCOUNT_ID") {
            None => sns_topic_arn.split(':').nth(4).unwrap_or_default().to_owned(),
            Some(v) if v.len() == 12 && v.bytes().all(|b| b.is_ascii_digit()) => v,
            Some(v) => return Err(vars.invalid("HOME_ACCOUNT_ID", &v, "expected a 12-digit account id")),
        };
        let entry_point = match vars.set("ENTRY_POINT") {
            None => EntryPoint::Cleanup,
            Some(v) if v.eq_ignore_ascii_case("cleanup") => EntryPoint::Cleanup,
            Some(v) if v.eq_ignore_ascii_case("restore") => EntryPoint::Restore,
            Some(v) if v.eq_ignore_ascii_case("agent") => EntryPoint::Agent,
            Some(v) => return Err(vars.invalid("ENTRY_POINT", &v, "expected cleanup, restore or agent")),
        };
        Ok(Config {
            quarantine_groups: quarantine_groups(&vars)?,
            dry_run: vars.flag("DRY_RUN", false)?,
            warm_up: vars.flag("WARM_UP", false)?,
            concurrency: vars.bounded("ELB_CONCURRENCY", DEFAULT_CONCURRENCY)?,
            refresh_concurrency: vars.bounded("INDEX_REFRESH_CONCURRENCY", DEFAULT_REFRESH_CONCURRENCY)?,
            // The share of the account's ELB Describe* refill rate this function may use; its burst is four seconds'
            // worth.
            elb_describe_rate: vars.bounded("ELB_DESCRIBE_RATE", DEFAULT_ELB_DESCRIBE_RATE)?,
            registration_index_table: vars.checked(
                "REGISTRATION_INDEX_TABLE",
                is_table_name,
                "expected a DynamoDB table name: 3 to 255 characters of A-Z, a-z, 0-9, _, - and .",
            )?,
            monitoring: monitoring::monitoring(&vars)?,
            notify_format: match get("NOTIFY_FORMAT") {
                None => NotifyFormat::Json,
                Some(v) => NotifyFormat::parse(&v)
                    .ok_or_else(|| vars.invalid("NOTIFY_FORMAT", &v, "expected json, email or chatbot"))?,
            },
            rebalance_action: event_action(&vars, "REBALANCE_ACTION")?,
            health_action: event_action(&vars, "HEALTH_ACTION")?,
            lifecycle_wait_for_draining: vars.flag("LIFECYCLE_WAIT_FOR_DRAINING", false)?,
            reregister_on_restore: vars.flag("REREGISTER_ON_RESTORE", false)?,
            claim_lease: vars.seconds("CLAIM_LEASE_SECONDS", DEFAULT_LEASE, 1..=60)?,
            record_key_id: vars.checked(
                "RECORD_KEY_ID",
                is_key_id,
                "expected a KMS key id, key ARN, alias/<name> or alias ARN",
            )?,
            entry_point,
            cross_account_role_name: vars.checked(
                "CROSS_ACCOUNT_ROLE_NAME",
                is_role_name,
                "expected an IAM role name: 1 to 64 characters of A-Z, a-z, 0-9 and +=,.@_-",
            )?,
            trust: trust::trust(&vars, entry_point)?,
            max_batch_records: vars.count("MAX_BATCH_RECORDS", DEFAULT_MAX_BATCH_RECORDS, 1..=10_000)?,
            sns_topic_arn,
            home_account,
        })
    }
}

/// The log level: `RUST_LOG`, else Lambda's `AWS_LAMBDA_LOG_LEVEL`, else `info`. Read before the rest, so that a bad
/// configuration can be logged.
pub fn log_level() -> String {
    std::env::var("RUST_LOG")
        .or_else(|_| std::env::var("AWS_LAMBDA_LOG_LEVEL"))
        .map(|level| level.to_lowercase())
        .unwrap_or_else(|_| "info".to_owned())
}

fn quarantine_groups(vars: &Vars<'_>) -> Result<Vec<SecurityGroupId>, ConfigError> {
    let raw = vars.required(
        "QUARANTINE_SECURITY_GROUP_ID",
        "one or more security group ids, comma-separated (one per VPC)",
    )?;
    raw.split(',')
        .map(|g| {
            SecurityGroupId::parse(g.trim()).ok_or_else(|| {
                vars.invalid(
                    "QUARANTINE_SECURITY_GROUP_ID",
                    &raw,
                    "expected comma-separated ids like sg-0123456789abcdef0",
                )
            })
        })
        .collect()
}

fn event_action(vars: &Vars<'_>, name: &'static str) -> Result<EventAction, ConfigError> {
    match vars.set(name) {
        None => Ok(EventAction::default()),
        Some(v) if v.eq_ignore_ascii_case("notify") => Ok(EventAction::Notify),
        Some(v) if v.eq_ignore_ascii_case("cleanup") => Ok(EventAction::Cleanup),
        Some(v) if v.eq_ignore_ascii_case("ignore") => Ok(EventAction::Ignore),
        Some(v) => Err(vars.invalid(name, &v, "expected notify, cleanup or ignore")),
    }
}

fn is_role_name(value: &str) -> bool {
    (1..=64).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b))
}

fn is_key_id(value: &str) -> bool {
    let name_ok = |name: &str| {
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'/'))
    };
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
    (1..=64).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn is_table_name(value: &str) -> bool {
    (3..=255).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
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
        assert_eq!(c.concurrency, DEFAULT_CONCURRENCY);
        assert_eq!(c.registration_index_table, None, "the index is optional");
        assert_eq!(c.refresh_concurrency, DEFAULT_REFRESH_CONCURRENCY);
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
        let c = with(&[
            ("REGISTRATION_INDEX_TABLE", "spot-cleanup.registrations_v-1"),
            ("INDEX_REFRESH_CONCURRENCY", "5"),
        ])
        .unwrap();
        assert_eq!(
            c.registration_index_table.as_deref(),
            Some("spot-cleanup.registrations_v-1")
        );
        assert_eq!(c.refresh_concurrency, 5);
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
        let message = with(&[("INDEX_REFRESH_CONCURRENCY", "41")]).unwrap_err().to_string();
        assert!(message.starts_with("INDEX_REFRESH_CONCURRENCY="), "{message}");
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
            ("ELB_CONCURRENCY", "4"),
        ])
        .unwrap();
        assert_eq!(c.quarantine_groups.len(), 2);
        assert!(c.dry_run);
        assert_eq!(c.concurrency, 4);
    }

    #[test]
    fn errors_name_the_variable() {
        let cases: [(&[(&str, &str)], &str); 7] = [
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
                    ("ELB_CONCURRENCY", "0"),
                ],
                "ELB_CONCURRENCY=",
            ),
        ];
        for (vars, expected) in cases {
            let message = config(vars).unwrap_err().to_string();
            assert!(message.starts_with(expected), "{message}");
        }
    }
}
