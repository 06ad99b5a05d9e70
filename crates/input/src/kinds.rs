//! The kinds of EventBridge event this crate reads, by the `source` and `detail-type` AWS gives them: the names the
//! router matches, the error messages list and the function's trust checks compare a trigger with. Only names here,
//! no parsing, so that everything else can import it.

/// EC2's Spot Instance Interruption Warning: the detail-type that starts a cleanup.
pub const SPOT_INTERRUPTION: &str = "EC2 Spot Instance Interruption Warning";
pub const REBALANCE_RECOMMENDATION: &str = "EC2 Instance Rebalance Recommendation";
pub const STATE_CHANGE: &str = "EC2 Instance State-change Notification";
pub const AUTOSCALING_SOURCE: &str = "aws.autoscaling";
pub const TERMINATE_LIFECYCLE_ACTION: &str = "EC2 Instance-terminate Lifecycle Action";
/// Its launch twin: a well-formed event with nothing to clean up.
pub(crate) const LAUNCH_LIFECYCLE_ACTION: &str = "EC2 Instance-launch Lifecycle Action";
pub const HEALTH_SOURCE: &str = "aws.health";
pub const AWS_HEALTH_EVENT: &str = "AWS Health Event";
/// What an EventBridge schedule sends: refresh the registration index.
pub const SCHEDULED_EVENT: &str = "Scheduled Event";
/// A management API call recorded by CloudTrail, as EventBridge delivers it.
pub const CLOUDTRAIL_API_CALL: &str = "AWS API Call via CloudTrail";

const EC2_SOURCE: &str = "aws.ec2";
const EVENTS_SOURCE: &str = "aws.events";
const ELB_SOURCE: &str = "aws.elasticloadbalancing";

/// The detail-types `aws.ec2` sends that start work here, for error messages.
const EC2_DETAIL_TYPES: &str = "\"EC2 Spot Instance Interruption Warning\", \"EC2 Instance Rebalance Recommendation\" \
     or \"EC2 Instance State-change Notification\"";

/// Which parser reads an EventBridge event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    SpotInterruption,
    RebalanceRecommendation,
    StateChange,
    TerminateLifecycleAction,
    LaunchLifecycleAction,
    HealthEvent,
    ScheduledEvent,
    CloudTrailApiCall,
}

impl Kind {
    /// The kind of an event from a handled `source`, or `None` for a detail-type not read from there.
    pub(crate) fn of(source: &str, detail_type: &str) -> Option<Kind> {
        Some(match (source, detail_type) {
            (EC2_SOURCE, SPOT_INTERRUPTION) => Kind::SpotInterruption,
            (EC2_SOURCE, REBALANCE_RECOMMENDATION) => Kind::RebalanceRecommendation,
            (EC2_SOURCE, STATE_CHANGE) => Kind::StateChange,
            (AUTOSCALING_SOURCE, TERMINATE_LIFECYCLE_ACTION) => Kind::TerminateLifecycleAction,
            (AUTOSCALING_SOURCE, LAUNCH_LIFECYCLE_ACTION) => Kind::LaunchLifecycleAction,
            (HEALTH_SOURCE, AWS_HEALTH_EVENT) => Kind::HealthEvent,
            (EVENTS_SOURCE, SCHEDULED_EVENT) => Kind::ScheduledEvent,
            (ELB_SOURCE, CLOUDTRAIL_API_CALL) => Kind::CloudTrailApiCall,
            _ => return None,
        })
    }
}

/// The detail-types read from `source`, as an error message lists them; `None` when nothing from `source` is read.
pub(crate) fn detail_types_from(source: &str) -> Option<&'static str> {
    match source {
        EC2_SOURCE => Some(EC2_DETAIL_TYPES),
        AUTOSCALING_SOURCE => Some("\"EC2 Instance-terminate Lifecycle Action\" (or the launch one, ignored)"),
        HEALTH_SOURCE => Some("\"AWS Health Event\""),
        EVENTS_SOURCE => Some("\"Scheduled Event\""),
        ELB_SOURCE => Some("\"AWS API Call via CloudTrail\""),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_source_that_has_a_kind_lists_its_detail_types() {
        for (source, detail_type) in [
            (EC2_SOURCE, SPOT_INTERRUPTION),
            (EC2_SOURCE, REBALANCE_RECOMMENDATION),
            (EC2_SOURCE, STATE_CHANGE),
            (AUTOSCALING_SOURCE, TERMINATE_LIFECYCLE_ACTION),
            (HEALTH_SOURCE, AWS_HEALTH_EVENT),
            (EVENTS_SOURCE, SCHEDULED_EVENT),
            (ELB_SOURCE, CLOUDTRAIL_API_CALL),
        ] {
            assert!(Kind::of(source, detail_type).is_some(), "{source} {detail_type}");
            let listed = detail_types_from(source).unwrap();
            assert!(listed.contains(detail_type), "{source}: {listed}");
        }
        assert_eq!(Kind::of(SPOT_INTERRUPTION, EC2_SOURCE), None);
        assert_eq!(detail_types_from("aws.s3"), None);
    }
}
