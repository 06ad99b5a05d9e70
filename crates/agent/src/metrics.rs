//! The agent's counters, and their Prometheus text exposition (format 0.0.4) for `/metrics`.
//!
//! A notice is counted when it is first seen, never again on the later polls that still see it. Invoke calls are
//! counted when their delivery ends (accepted, or given up at the notice's deadline), with every retry in it.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use spot_cleanup_input::Action;

use crate::health::Health;
use crate::invoke::Delivery;

/// The actions a notice can carry (`notice`), each with its own series from the start, so that a rate over a series
/// that has never moved is 0 rather than missing.
const ACTIONS: [Action; 5] = [
    Action::Terminate,
    Action::Stop,
    Action::Hibernate,
    Action::Rebalance,
    Action::ScaleIn,
];

#[derive(Default)]
pub struct Metrics {
    notices: [AtomicU64; ACTIONS.len()],
    invocations: AtomicU64,
    invocation_failures: AtomicU64,
    accepted: AtomicU64,
    gave_up: AtomicU64,
    metadata_failures: AtomicU64,
}

impl Metrics {
    /// A notice seen for the first time.
    pub fn notice(&self, action: Action) {
        if let Some(i) = ACTIONS.iter().position(|a| *a == action) {
            self.notices[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A round in which instance metadata did not answer.
    pub fn metadata_failed(&self) {
        self.metadata_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// How one notice's delivery ended: every attempt was an Invoke call, all but an accepted last one failed.
    pub fn delivered(&self, delivery: &Delivery) {
        let (attempts, failed) = match delivery {
            Delivery::Accepted { attempts } => {
                self.accepted.fetch_add(1, Ordering::Relaxed);
                (*attempts, attempts.saturating_sub(1))
            }
            Delivery::GaveUp { attempts, .. } => {
                self.gave_up.fetch_add(1, Ordering::Relaxed);
                (*attempts, *attempts)
            }
        };
        self.invocations.fetch_add(u64::from(attempts), Ordering::Relaxed);
        self.invocation_failures.fetch_add(u64::from(failed), Ordering::Relaxed);
    }

    /// Everything, in the Prometheus text format.
    pub fn render(&self, health: &Health) -> String {
        let mut out = String::with_capacity(2048);
        let notices: Vec<_> = ACTIONS
            .iter()
            .zip(&self.notices)
            .map(|(action, n)| (format!("action=\"{}\"", action.as_str()), load(n)))
            .collect();
        family(
            &mut out,
            "spot_agent_notices_total",
            "counter",
            "Notices seen in instance metadata, each counted once however many polls see it.",
            &notices,
        );
        single(
            &mut out,
            "spot_agent_invocations_total",
            "counter",
            "Invoke calls sent to the cleanup function, retries included.",
            load(&self.invocations),
        );
        single(
            &mut out,
            "spot_agent_invocation_failures_total",
            "counter",
            "Invoke calls that failed; each is retried until the notice's deadline.",
            load(&self.invocation_failures),
        );
        family(
            &mut out,
            "spot_agent_deliveries_total",
            "counter",
            "Notices the function accepted, or gave up on when the notice's deadline passed without it accepting them.",
            &[
                ("result=\"accepted\"".to_owned(), load(&self.accepted)),
                ("result=\"gave-up\"".to_owned(), load(&self.gave_up)),
            ],
        );
        single(
            &mut out,
            "spot_agent_metadata_failures_total",
            "counter",
            "Poll rounds in which instance metadata did not answer.",
            load(&self.metadata_failures),
        );
        if let Some(seconds) = health.last_round_unix_seconds() {
            single(
                &mut out,
                "spot_agent_last_poll_timestamp_seconds",
                "gauge",
                "When the last poll round of instance metadata ended, in Unix seconds.",
                seconds,
            );
        }
        single(
            &mut out,
            "spot_agent_ready",
            "gauge",
            "1 while the agent watches its instance's metadata and it answers.",
            if health.is_ready() { 1.0 } else { 0.0 },
        );
        out
    }
}

fn load(counter: &AtomicU64) -> f64 {
    counter.load(Ordering::Relaxed) as f64
}

fn single(out: &mut String, name: &str, kind: &str, help: &str, value: f64) {
    family(out, name, kind, help, &[(String::new(), value)]);
}

fn family(out: &mut String, name: &str, kind: &str, help: &str, series: &[(String, f64)]) {
    // Writing to a String cannot fail.
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in series {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `name{labels} value` lines, without the comments.
    fn samples(text: &str) -> Vec<(String, String)> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let (series, value) = l.rsplit_once(' ').expect("a value");
                (series.to_owned(), value.to_owned())
            })
            .collect()
    }

    fn value(text: &str, series: &str) -> Option<String> {
        samples(text).into_iter().find(|(s, _)| s == series).map(|(_, v)| v)
    }

    #[test]
    fn every_series_exists_from_the_start_at_zero() {
        let text = Metrics::default().render(&Health::new());
        for action in ["terminate", "stop", "hibernate", "rebalance", "scale-in"] {
            assert_eq!(
                value(&text, &format!("spot_agent_notices_total{{action=\"{action}\"}}")).as_deref(),
                Some("0")
            );
        }
        assert_eq!(value(&text, "spot_agent_invocations_total").as_deref(), Some("0"));
        assert_eq!(value(&text, "spot_agent_ready").as_deref(), Some("0"));
        assert_eq!(
            value(&text, "spot_agent_last_poll_timestamp_seconds"),
            None,
            "no poll yet"
        );
        // Each family is announced once, before its samples, with a type Prometheus knows.
        for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
            assert!(line.ends_with(" counter") || line.ends_with(" gauge"), "{line}");
        }
        let families = text.lines().filter(|l| l.starts_with("# TYPE")).count();
        let helps = text.lines().filter(|l| l.starts_with("# HELP")).count();
        assert_eq!((families, helps), (6, 6));
    }

    #[test]
    fn deliveries_count_every_attempt_and_every_failed_one() {
        let metrics = Metrics::default();
        metrics.notice(Action::Terminate);
        metrics.notice(Action::ScaleIn);
        metrics.delivered(&Delivery::Accepted { attempts: 3 });
        metrics.delivered(&Delivery::GaveUp {
            attempts: 4,
            last_error: "ServiceException".to_owned(),
        });
        metrics.metadata_failed();
        let health = Health::new();
        health.watching();
        health.round_ended(true);
        let text = metrics.render(&health);
        let expect = [
            ("spot_agent_notices_total{action=\"terminate\"}", "1"),
            ("spot_agent_notices_total{action=\"scale-in\"}", "1"),
            ("spot_agent_notices_total{action=\"stop\"}", "0"),
            ("spot_agent_invocations_total", "7"),
            ("spot_agent_invocation_failures_total", "6"),
            ("spot_agent_deliveries_total{result=\"accepted\"}", "1"),
            ("spot_agent_deliveries_total{result=\"gave-up\"}", "1"),
            ("spot_agent_metadata_failures_total", "1"),
            ("spot_agent_ready", "1"),
        ];
        for (series, want) in expect {
            assert_eq!(value(&text, series).as_deref(), Some(want), "{series}\n{text}");
        }
        let polled: f64 = value(&text, "spot_agent_last_poll_timestamp_seconds")
            .expect("a poll")
            .parse()
            .expect("a number");
        assert!(polled > 1.7e9, "Unix seconds: {polled}");
    }
}
