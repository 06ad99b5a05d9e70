//! The messages other than a cleanup summary: refusals and restores.
//!
//! A refusal is published so that a request the function would not act on is seen by people, not only logged.
//! Attributes let subscribers filter: `outcome` (`refused` or `stale`), `security` (`true` when someone asked for
//! something out of scope or unproven), `error_type`, `instance_id`, `trigger`.

use chrono::Utc;

use super::Publisher;
use crate::aws::CallError;
use crate::summary::{RestoreOutcome, RestoreSummary, Summary};
use crate::trust::Refusal;

/// How many refusals one alert tells in full (reasons and trigger); the rest are named by instance id. Keeps the
/// message far below SNS's 256 KB whatever an invocation carried.
const LISTED: usize = 20;

/// One refusal, in the function's log.
fn log(refusal: &Refusal) {
    tracing::warn!(
        step = "scope",
        instance_id = refusal.instance_id.as_str(),
        event_id = refusal.trigger.event_ref(),
        error_type = refusal.kind.error_type(),
        security = refusal.kind.is_security_signal(),
        reasons = %refusal.reasons.join("; "),
        "request refused, nothing was changed"
    );
}

impl Publisher {
    /// Log the refusal and publish it. A failed publish is logged: the refusal itself stands either way.
    pub async fn refusal(&self, refusal: &Refusal) {
        log(refusal);
        if let Err(e) = self.send_refusal(refusal).await {
            tracing::error!(error = %e, "the refusal could not be published to SNS");
        }
    }

    /// Every refusal of one invocation in one message: one refusal as `refusal` publishes it, several as a list. The
    /// attributes are those of the first security signal among them (else the first), with `refusals` the count, so
    /// that a filter on `security=true` sees a batch that mixes stale and hostile records. At most `LISTED` are told in
    /// full; the message names every instance.
    pub async fn refusals(&self, refusals: &[Refusal]) {
        let [first, ..] = refusals else {
            return;
        };
        if refusals.len() == 1 {
            return self.refusal(first).await;
        }
        refusals.iter().for_each(log);
        if let Err(e) = self.send_refusals(refusals).await {
            tracing::error!(error = %e, count = refusals.len(), "the refusals could not be published to SNS");
        }
    }

    async fn send_refusals(&self, refusals: &[Refusal]) -> Result<String, CallError> {
        let lead = refusals
            .iter()
            .find(|r| r.kind.is_security_signal())
            .unwrap_or(&refusals[0]);
        let kind = lead.kind;
        let listed: Vec<serde_json::Value> = refusals
            .iter()
            .take(LISTED)
            .map(|r| {
                serde_json::json!({
                    "error_type": r.kind.error_type(),
                    "security": r.kind.is_security_signal(),
                    "instance_id": r.instance_id,
                    "reasons": r.reasons,
                    "trigger": r.trigger,
                })
            })
            .collect();
        let instances: Vec<&str> = refusals.iter().map(|r| r.instance_id.as_str()).collect();
        let message = serde_json::json!({
            "version": 1,
            "outcome": kind.outcome(),
            "error_type": kind.error_type(),
            "security": kind.is_security_signal(),
            "instance_id": lead.instance_id,
            "count": refusals.len(),
            "instances": instances,
            "refusals": listed,
            "at": Utc::now(),
            "changed": "nothing",
        });
        let label = if kind.is_security_signal() { "SECURITY" } else { "STALE" };
        let subject = format!(
            "spot-cleanup {label}: refused {} requests ({kind}, {}, ...), nothing changed",
            refusals.len(),
            lead.instance_id
        );
        let security = kind.is_security_signal().to_string();
        let count = refusals.len().to_string();
        let attributes = [
            ("instance_id", lead.instance_id.as_str()),
            ("outcome", kind.outcome()),
            ("security", security.as_str()),
            ("error_type", kind.error_type()),
            ("trigger", lead.trigger.label()),
            ("refusals", count.as_str()),
        ];
        self.send(&subject, message.to_string(), &attributes).await
    }

    async fn send_refusal(&self, refusal: &Refusal) -> Result<String, CallError> {
        let kind = refusal.kind;
        let message = serde_json::json!({
            "version": 1,
            "outcome": kind.outcome(),
            "error_type": kind.error_type(),
            "security": kind.is_security_signal(),
            "instance_id": refusal.instance_id,
            "reasons": refusal.reasons,
            "trigger": refusal.trigger,
            "at": Utc::now(),
            "changed": "nothing",
        });
        let label = if kind.is_security_signal() { "SECURITY" } else { "STALE" };
        let subject = format!(
            "spot-cleanup {label}: refused {} ({kind}), nothing changed",
            refusal.instance_id
        );
        let security = kind.is_security_signal().to_string();
        let attributes = [
            ("instance_id", refusal.instance_id.as_str()),
            ("outcome", kind.outcome()),
            ("security", security.as_str()),
            ("error_type", kind.error_type()),
            ("trigger", refusal.trigger.label()),
        ];
        self.send(&subject, message.to_string(), &attributes).await
    }

    /// At quarantine time an ENI carried an original-groups record this function did not write (or one changed since):
    /// the cleanup went on, and what it did about each (replaced, or left the ENI alone) is in `notes`. Published as a
    /// security signal apart from the summary, so that the same subscribers see it as a refusal.
    pub async fn untrusted_records(&self, summary: &Summary, notes: &[String]) {
        tracing::warn!(
            step = "quarantine",
            instance_id = summary.instance.id.as_str(),
            event_id = summary.trigger.event_ref(),
            error_type = "RecordNotTrusted",
            security = true,
            notes = %notes.join("; "),
            "records this function did not write were found"
        );
        let message = serde_json::json!({
            "version": 1,
            "outcome": "untrusted-record",
            "error_type": "RecordNotTrusted",
            "security": true,
            "instance_id": summary.instance.id,
            "reasons": notes,
            "trigger": summary.trigger,
            "at": Utc::now(),
            "changed": "the cleanup went on; each reason says what was done with the record",
        });
        let subject = format!(
            "spot-cleanup SECURITY: {} carried {} record(s) this function did not write",
            summary.instance.id,
            notes.len()
        );
        let attributes = [
            ("instance_id", summary.instance.id.as_str()),
            ("outcome", "untrusted-record"),
            ("security", "true"),
            ("error_type", "RecordNotTrusted"),
            ("trigger", summary.trigger.label()),
        ];
        if let Err(e) = self.send(&subject, message.to_string(), &attributes).await {
            tracing::error!(error = %e, "the security alert could not be published to SNS");
        }
    }

    /// Publish what a restore did, or (a dry run) would do. Attributes as for a cleanup summary: `instance_id`,
    /// `outcome` (`restored`, `partial`, `failed`, `planned`), `trigger`, plus `kind=restore`.
    pub async fn restore(&self, summary: &RestoreSummary) -> Result<String, CallError> {
        let outcome = summary.outcome.as_str();
        let subject = if summary.outcome == RestoreOutcome::Planned {
            format!(
                "spot-cleanup restore: {} {outcome}, {} ENI(s) to go back on their groups",
                summary.instance_id,
                summary.network_interfaces.len()
            )
        } else {
            format!(
                "spot-cleanup restore: {} {outcome}, {} ENI(s) back on their groups",
                summary.instance_id,
                summary.network_interfaces.iter().filter(|e| e.restored).count()
            )
        };
        let message = serde_json::to_string(summary).expect("a restore summary always serializes");
        let attributes = [
            ("instance_id", summary.instance_id.as_str()),
            ("outcome", outcome),
            ("kind", "restore"),
            ("trigger", summary.trigger.label()),
        ];
        self.send(&subject, message, &attributes).await
    }
}
