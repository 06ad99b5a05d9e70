//! RegisterTargets and DeregisterTargets calls that CloudTrail recorded, as EventBridge delivers them: they keep the
//! registration index current between refreshes. A call that failed changed nothing and is reported as such.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::envelope::event;
use crate::error::InputError;
use crate::index_update::{ChangedTarget, IndexUpdate, TargetsCall, TargetsChange};
use crate::quoted::Quoted;
use crate::values::parse_time;

/// CloudTrail's `eventSource` for ELBv2 calls.
const ELB_EVENT_SOURCE: &str = "elasticloadbalancing.amazonaws.com";

/// The part of a CloudTrail record this function reads. CloudTrail adds fields over time, so others are ignored.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CloudTrailDetail {
    event_source: String,
    event_name: String,
    event_time: Option<String>,
    error_code: Option<String>,
    request_parameters: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TargetsParameters {
    target_group_arn: String,
    targets: Vec<ChangedTarget>,
}

pub(crate) fn parse(payload: &Value) -> Result<IndexUpdate, InputError> {
    let event = event::<CloudTrailDetail>(payload, "CloudTrail event")?;
    let detail = event.detail;
    if detail.event_source != ELB_EVENT_SOURCE {
        return Err(InputError::InvalidField {
            field: "detail.eventSource",
            reason: format!("{} is not {ELB_EVENT_SOURCE}", Quoted::new(&detail.event_source)),
        });
    }
    let call = match detail.event_name.as_str() {
        "RegisterTargets" => TargetsCall::RegisterTargets,
        "DeregisterTargets" => TargetsCall::DeregisterTargets,
        other => return Err(InputError::UnsupportedApiCall(Quoted::new(other))),
    };
    if let Some(error_code) = detail.error_code {
        return Ok(IndexUpdate::FailedCall {
            call,
            error_code: Quoted::new(&error_code).into_inner(),
            event_id: event.id,
        });
    }
    let parameters = detail.request_parameters.ok_or_else(|| InputError::Malformed {
        what: "CloudTrail event",
        reason: "missing field `detail.requestParameters`".into(),
    })?;
    let parameters = TargetsParameters::deserialize(&parameters)
        .map_err(|e| InputError::malformed("detail.requestParameters", e))?;
    check(&parameters)?;
    let event_time = detail
        .event_time
        .as_deref()
        .map(|t| parse_time("detail.eventTime", t))
        .transpose()?
        .or(event.time);
    Ok(IndexUpdate::Apply(TargetsChange {
        call,
        target_group_arn: parameters.target_group_arn,
        targets: parameters.targets,
        event_id: event.id,
        event_time,
    }))
}

/// A call's parameters name one target group by ARN and at least one target, each with an id and a real port.
fn check(parameters: &TargetsParameters) -> Result<(), InputError> {
    if !is_target_group_arn(&parameters.target_group_arn) {
        return Err(InputError::InvalidField {
            field: "detail.requestParameters.targetGroupArn",
            reason: format!(
                "{} is not a target group ARN",
                Quoted::new(&parameters.target_group_arn)
            ),
        });
    }
    if parameters.targets.is_empty() {
        return Err(InputError::InvalidField {
            field: "detail.requestParameters.targets",
            reason: "names no target".into(),
        });
    }
    for target in &parameters.targets {
        if target.id.is_empty() || target.id.len() > 2048 {
            return Err(InputError::InvalidField {
                field: "detail.requestParameters.targets[].id",
                reason: format!("{} is not a target id", Quoted::new(&target.id)),
            });
        }
        if let Some(port) = target.port
            && !(1..=65535).contains(&port)
        {
            return Err(InputError::InvalidField {
                field: "detail.requestParameters.targets[].port",
                reason: format!("{port} is not a port"),
            });
        }
    }
    Ok(())
}

/// `arn:<partition>:elasticloadbalancing:<region>:<account>:targetgroup/<name>/<id>`
fn is_target_group_arn(value: &str) -> bool {
    let parts: Vec<&str> = value.splitn(6, ':').collect();
    parts.len() == 6
        && parts[0] == "arn"
        && !parts[1].is_empty()
        && parts[2] == "elasticloadbalancing"
        && !parts[3].is_empty()
        && parts[4].len() == 12
        && parts[4].bytes().all(|b| b.is_ascii_digit())
        && parts[5]
            .strip_prefix("targetgroup/")
            .is_some_and(|rest| rest.split('/').filter(|p| !p.is_empty()).count() == 2)
        && value.len() <= 512
        && !value.contains('#')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::samples::sample;
    use crate::{Invocation, parse_invocation};
    use serde_json::json;

    fn index_update(payload: Value) -> IndexUpdate {
        match parse_invocation(&payload).expect("parses") {
            Invocation::IndexUpdate(update) => update,
            other => panic!("expected an index update, got {other:?}"),
        }
    }

    #[test]
    fn cloudtrail_register_and_deregister_calls_update_the_index() {
        let IndexUpdate::Apply(register) = index_update(sample("cloudtrail-register-targets.json")) else {
            panic!("expected a change")
        };
        assert_eq!(register.call, TargetsCall::RegisterTargets);
        assert_eq!(
            register.target_group_arn,
            "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web-nodeport/0123456789abcdef"
        );
        assert_eq!(
            register.targets,
            vec![ChangedTarget {
                id: "i-0123456789abcdef0".into(),
                port: Some(30080),
                availability_zone: None
            }]
        );
        assert_eq!(register.event_time.unwrap().to_rfc3339(), "2026-11-21T09:58:12+00:00");
        assert_eq!(
            register.event_id.as_deref(),
            Some("3c1f8a2e-5d7b-4e0c-9a61-8b2d4f6e0a13")
        );

        let IndexUpdate::Apply(deregister) = index_update(sample("cloudtrail-deregister-targets.json")) else {
            panic!("expected a change")
        };
        assert_eq!(deregister.call, TargetsCall::DeregisterTargets);
        assert_eq!(deregister.targets.len(), 2);
        assert_eq!(deregister.targets[0].availability_zone.as_deref(), Some("us-east-1b"));
        assert_eq!(deregister.targets[1].port, None, "ELB uses the group's port then");
    }

    #[test]
    fn a_failed_call_changes_nothing_in_the_index() {
        let mut event = sample("cloudtrail-register-targets.json");
        event["detail"]["errorCode"] = json!("InvalidTarget");
        event["detail"]["errorMessage"] = json!("The following targets are not in a running state");
        event["detail"]["requestParameters"] = Value::Null;
        assert_eq!(
            index_update(event),
            IndexUpdate::FailedCall {
                call: TargetsCall::RegisterTargets,
                error_code: "InvalidTarget".into(),
                event_id: Some("3c1f8a2e-5d7b-4e0c-9a61-8b2d4f6e0a13".into()),
            }
        );
    }

    #[test]
    fn index_events_are_parsed_strictly() {
        let register = sample("cloudtrail-register-targets.json");
        let with = |path: &[&str], value: Value| {
            let mut event = register.clone();
            let mut at = &mut event;
            for key in &path[..path.len() - 1] {
                at = &mut at[*key];
            }
            at[path[path.len() - 1]] = value;
            event
        };
        let cases = [
            (
                with(&["detail", "eventName"], json!("CreateTargetGroup")),
                "only RegisterTargets and DeregisterTargets are handled",
            ),
            (
                with(&["detail", "eventSource"], json!("ec2.amazonaws.com")),
                "invalid detail.eventSource",
            ),
            (
                with(&["detail", "requestParameters"], Value::Null),
                "missing field `detail.requestParameters`",
            ),
            (
                with(
                    &["detail", "requestParameters", "targetGroupArn"],
                    json!("web-nodeport"),
                ),
                "is not a target group ARN",
            ),
            (
                with(&["detail", "requestParameters", "targetGroupArn"], json!(5)),
                "malformed detail.requestParameters",
            ),
            (
                with(&["detail", "requestParameters", "targets"], json!([])),
                "names no target",
            ),
            (
                with(
                    &["detail", "requestParameters", "targets"],
                    json!([{"id": "i-0123abcd", "port": 0}]),
                ),
                "0 is not a port",
            ),
            (
                with(&["detail", "requestParameters", "targets"], json!([{"port": 80}])),
                "missing field `id`",
            ),
            (with(&["detail", "eventTime"], json!("noon")), "RFC 3339"),
            (with(&["detail"], json!({})), "malformed CloudTrail event"),
            (
                with(&["detail-type"], json!("AWS Service Event via CloudTrail")),
                "only \"AWS API Call via CloudTrail\" is handled",
            ),
        ];
        for (payload, expected) in cases {
            let message = parse_invocation(&payload).unwrap_err().to_string();
            assert!(message.contains(expected), "{payload:.120}: {message}");
            assert!(message.len() < 400, "error message too long: {message:.100}...");
        }
    }

    #[test]
    fn index_events_do_not_ride_in_an_sqs_batch() {
        let payload = json!({"Records": [
            {"messageId": "m1", "body": sample("scheduled-refresh.json").to_string()},
            {"messageId": "m2", "body": sample("cloudtrail-register-targets.json").to_string()},
        ]});
        let Invocation::Batch(records) = parse_invocation(&payload).unwrap() else {
            panic!("expected a batch")
        };
        for record in records {
            assert_eq!(record.message, Err(InputError::IndexEventInBatch));
        }
    }
}
