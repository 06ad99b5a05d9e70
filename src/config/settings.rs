//! Every variable of the function's environment, declared once: its name, what it is when unset, its bounds where it
//! has them, and its one-line doc. `Config` is read from these, and docs/configuration.md's tables are checked against
//! them (the test below), so a name, a default or a bound is written here and nowhere else.

use super::{EntryPoint, EventAction};
use crate::lease::DEFAULT_LEASE;
use crate::monitoring::mackerel::{self, MackerelAction};
use crate::monitoring::{DEFAULT_WEBHOOK_BODY, datadog};
use crate::notify::NotifyFormat;
use crate::trust::scope::EventScope;

/// One variable: `kind` says what it holds and what it is when unset.
#[derive(Debug)]
pub struct Setting<K: 'static> {
    pub name: &'static str,
    pub kind: K,
    /// One line; for a required setting or one that others require, what init's error says to give.
    pub doc: &'static str,
}

/// A whole number: its default, and the least and the most it may be.
pub struct Number(pub u64, pub u64, pub u64);

/// One of these words, in any case; the first is the default.
pub struct Choice<T: 'static>(pub &'static [(&'static str, T)]);

/// Text that the reader checks or parses.
pub enum Text {
    /// Init fails without it; the doc says what to give.
    Required,
    /// Unset means none, or off.
    Unset,
    /// This value when unset.
    Or(&'static str),
    /// When unset, what the doc describes, worked out from other settings.
    Derived(&'static str),
}

/// Accepted and ignored, with a warning at init naming what replaces it.
#[derive(Debug)]
pub struct Deprecated(pub &'static str);

/// Declares each setting as a `pub const` of its own name, and (for the docs test) lists them all.
macro_rules! declare {
    ($($name:ident: $kind:ty = $value:expr, $doc:literal;)*) => {
        $(pub const $name: Setting<$kind> = Setting { name: stringify!($name), kind: $value, doc: $doc };)*
        #[cfg(test)]
        pub const ALL: &[&dyn tests::Declared] = &[$(&$name),*];
    };
}

const ACTIONS: Choice<EventAction> = Choice(&[
    ("notify", EventAction::Notify),
    ("cleanup", EventAction::Cleanup),
    ("ignore", EventAction::Ignore),
]);

declare! {
    SNS_TOPIC_ARN: Text = Text::Required, "the ARN of the topic that receives summaries";
    QUARANTINE_SECURITY_GROUP_ID: Text = Text::Required,
        "one or more security group ids, comma-separated (one per VPC)";
    DRY_RUN: bool = false, "Compute and publish the plan, change nothing.";
    WARM_UP: bool = false, "Open the connections to every AWS endpoint from init.";
    ELB_DESCRIBE_RATE: Number = Number(8, 1, 40), "The reads' share of the account's ELB refill of 10 a second.";
    REGISTRATION_INDEX_TABLE: Text = Text::Unset, "The function's DynamoDB table; unset turns the index off.";
    NOTIFY_FORMAT: Choice<NotifyFormat> = Choice(&[("json", NotifyFormat::Json), ("email", NotifyFormat::Email),
        ("chatbot", NotifyFormat::Chatbot)]), "The SNS message's form.";
    REBALANCE_ACTION: Choice<EventAction> = ACTIONS, "What a rebalance recommendation does.";
    HEALTH_ACTION: Choice<EventAction> = ACTIONS, "What an AWS Health scheduled change does.";
    LIFECYCLE_WAIT_FOR_DRAINING: bool = false, "Wait until a lifecycle cleanup's targets leave draining.";
    REREGISTER_ON_RESTORE: bool = false, "Register again at its restore the targets an instance left.";
    HOME_ACCOUNT_ID: Text = Text::Derived("the account in `SNS_TOPIC_ARN`"), "This function's own account.";
    CROSS_ACCOUNT_ROLE_NAME: Text = Text::Unset, "The role assumed in another account.";
    CLAIM_LEASE_SECONDS: Number = Number(DEFAULT_LEASE.as_secs(), 1, 60), "The length of the one lease, held by each claim and by the wave's driver.";
    RECORD_KEY_ID: Text = Text::Unset, "The KMS HMAC key that signs the records a restore acts on.";
    ENTRY_POINT: Choice<EntryPoint> = Choice(&[("cleanup", EntryPoint::Cleanup), ("restore", EntryPoint::Restore),
        ("agent", EntryPoint::Agent)]), "Which requests this deployment serves.";
    MAX_BATCH_RECORDS: Number = Number(100, 1, 10_000), "The most records one invocation may carry.";
    REQUIRED_TAGS: Text = Text::Unset, "Tags an instance must carry to be in scope.";
    MAX_EVENT_AGE: Text = Text::Or("10m"), "Older events are refused as stale.";
    IDENTITY_CERT_PEM: Text = Text::Derived("AWS's certificates"), "The certificate of instance identity documents.";
    REQUIRE_IDENTITY_PROOF: Text = Text::Derived("`true` at the agent entry point, else `false`"),
        "Refuse node-agent payloads without a valid identity proof.";
    EVENT_SCOPE: Choice<EventScope> = Choice(&[("spot", EventScope::Spot), ("all", EventScope::All)]),
        "Whether events about any instance act on Spot instances only.";
    SNS_SOURCE_TOPIC_ARNS: Text = Text::Unset, "The only topics SNS deliveries are accepted from.";
    LIFECYCLE_HOOK_NAMES: Text = Text::Unset, "The terminate lifecycle hooks this function owns.";
    AWS_REGION: Text = Text::Derived("set by Lambda"), "The function's region: where an event that names none is.";
    RUST_LOG: Text = Text::Or("info"), "The log level.";
    AWS_LAMBDA_LOG_LEVEL: Text = Text::Or("info"), "Lambda's log level, when `RUST_LOG` is unset.";
    DATADOG_API_KEY: Text = Text::Unset, "Turns Datadog on.";
    DATADOG_APP_KEY: Text = Text::Unset, "muting a host needs an application key as well as DATADOG_API_KEY";
    DATADOG_API_URL: Text = Text::Or(datadog::DEFAULT_API_URL), "Datadog's site.";
    MACKEREL_API_KEY: Text = Text::Unset, "Turns Mackerel on.";
    MACKEREL_API_URL: Text = Text::Or(mackerel::DEFAULT_API_URL), "Mackerel's API.";
    MACKEREL_ACTION: Choice<MackerelAction> = Choice(&[("maintenance", MackerelAction::Maintenance),
        ("retire", MackerelAction::Retire)]), "What Mackerel is told of the host.";
    MONITORING_WEBHOOK_URL: Text = Text::Unset, "Turns the webhook on.";
    MONITORING_WEBHOOK_BODY: Text = Text::Or(DEFAULT_WEBHOOK_BODY), "The webhook's JSON template.";
    MONITORING_WEBHOOK_HEADERS: Text = Text::Or("{}"), "The webhook's headers, a JSON object.";
    ELB_CONCURRENCY: Deprecated = Deprecated("ELB_DESCRIBE_RATE: the ELB budget paces the reads"),
        "ELB reads in flight at once.";
    INDEX_REFRESH_CONCURRENCY: Deprecated = Deprecated("nothing: the index refresh reads 2 a second"),
        "Reads in flight, and a second, of an index refresh.";
}

/// The settings that are accepted and ignored.
pub const DEPRECATED: [&Setting<Deprecated>; 2] = [&ELB_CONCURRENCY, &INDEX_REFRESH_CONCURRENCY];

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// What docs/configuration.md must say of a setting: its Default cell, and what else its row must name (the
    /// bounds, the words allowed).
    pub trait Declared: Sync {
        fn name(&self) -> &'static str;
        fn documented(&self) -> (String, Vec<String>);
    }

    /// `10000` as the docs write it, `10,000`.
    fn written(n: u64) -> String {
        let digits = n.to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        out
    }

    impl Declared for Setting<bool> {
        fn name(&self) -> &'static str {
            self.name
        }
        fn documented(&self) -> (String, Vec<String>) {
            (format!("`{}`", self.kind), vec![])
        }
    }

    impl Declared for Setting<Number> {
        fn name(&self) -> &'static str {
            self.name
        }
        fn documented(&self) -> (String, Vec<String>) {
            let Number(default, min, max) = self.kind;
            (written(default), vec![format!("{}–{}", written(min), written(max))])
        }
    }

    impl<T: Sync> Declared for Setting<Choice<T>> {
        fn name(&self) -> &'static str {
            self.name
        }
        fn documented(&self) -> (String, Vec<String>) {
            let words: Vec<String> = self.kind.0.iter().map(|(word, _)| format!("`{word}`")).collect();
            (words[0].clone(), words)
        }
    }

    impl Declared for Setting<Text> {
        fn name(&self) -> &'static str {
            self.name
        }
        fn documented(&self) -> (String, Vec<String>) {
            let default = match self.kind {
                Text::Required => "required".to_owned(),
                Text::Unset => "unset".to_owned(),
                Text::Or(value) => format!("`{value}`"),
                Text::Derived(what) => what.to_owned(),
            };
            (default, vec![])
        }
    }

    impl Declared for Setting<Deprecated> {
        fn name(&self) -> &'static str {
            self.name
        }
        fn documented(&self) -> (String, Vec<String>) {
            ("ignored".to_owned(), vec![])
        }
    }

    /// The rows of the docs' tables that name variables: the names, the Default cell, and the whole row.
    fn documented_rows() -> Vec<(Vec<String>, String, String)> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md");
        let docs = std::fs::read_to_string(path).expect("docs/configuration.md");
        docs.lines()
            .filter(|line| line.starts_with("| `"))
            .map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                let names = cells[1]
                    .split('`')
                    .skip(1)
                    .step_by(2)
                    .filter(|name| {
                        name.bytes()
                            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
                    })
                    .map(str::to_owned)
                    .collect();
                (names, cells[2].to_owned(), line.to_owned())
            })
            .collect()
    }

    #[test]
    fn the_docs_table_says_what_each_setting_is_declared_to_be() {
        let rows = documented_rows();
        for setting in ALL {
            let named: Vec<_> = rows
                .iter()
                .filter(|(names, ..)| names.iter().any(|n| n == setting.name()))
                .collect();
            assert_eq!(
                named.len(),
                1,
                "{} should have one row in docs/configuration.md",
                setting.name()
            );
            let (_, default, row) = named[0];
            let (expected, also) = setting.documented();
            assert_eq!(default, &expected, "the Default cell of {}", setting.name());
            for word in also {
                assert!(row.contains(&word), "the row of {} should say {word}", setting.name());
            }
        }
        for (names, ..) in &rows {
            for name in names {
                assert!(
                    ALL.iter().any(|s| s.name() == name),
                    "docs/configuration.md lists {name}, which is not declared"
                );
            }
        }
    }
}
