//! The cleanup's story in the logs: one JSON line per step and instance, each carrying the instance id and the id of
//! the event that asked, so `filter instance_id = "i-…"` in CloudWatch Logs Insights reads one instance's cleanup
//! step by step, and `stats sum(failed) by step` shows where a fleet's cleanups go wrong.
//!
//! Each line has `step`, `instance_id`, `event_id`, `ms` (the step's wall time, shared by the batch it ran for), and
//! `done` and `failed`: what the step did for that instance, in the step's own unit (registrations, ENIs, calls).

use crate::input::{InstanceId, Request};

/// What a step did for one instance, in that step's unit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub done: usize,
    pub failed: usize,
}

impl Tally {
    pub fn new(done: usize, failed: usize) -> Self {
        Tally { done, failed }
    }

    /// One thing that either worked or did not.
    pub fn one(ok: bool) -> Self {
        if ok { Tally::new(1, 0) } else { Tally::new(0, 1) }
    }
}

/// Count things that each worked (`true`) or did not.
impl FromIterator<bool> for Tally {
    fn from_iter<I: IntoIterator<Item = bool>>(outcomes: I) -> Self {
        outcomes.into_iter().fold(Tally::default(), |t, ok| {
            Tally::new(t.done + usize::from(ok), t.failed + usize::from(!ok))
        })
    }
}

/// The instances a batch's steps are logged for, each with its event id.
pub struct StepLog {
    subjects: Vec<(InstanceId, String)>,
}

impl StepLog {
    pub fn new<'a>(requests: impl IntoIterator<Item = &'a Request>) -> Self {
        StepLog {
            subjects: requests
                .into_iter()
                .map(|r| (r.instance_id.clone(), r.trigger.event_ref().to_owned()))
                .collect(),
        }
    }

    /// One line per instance for a step that took `ms`, with what `tally` says it did for each.
    pub fn step(&self, step: &'static str, ms: u64, tally: impl Fn(&InstanceId) -> Tally) {
        for (instance_id, event_id) in &self.subjects {
            let Tally { done, failed } = tally(instance_id);
            line(step, instance_id, event_id, ms, done, failed);
        }
    }
}

/// One step line for one request, for the steps that run per request (describe, the scope guard, the claim).
pub fn request_step(step: &'static str, request: &Request, ms: u64, tally: Tally) {
    line(
        step,
        &request.instance_id,
        request.trigger.event_ref(),
        ms,
        tally.done,
        tally.failed,
    );
}

fn line(step: &'static str, instance_id: &InstanceId, event_id: &str, ms: u64, done: usize, failed: usize) {
    // tracing fixes an event's level where it is written, so the one field list is written out at two levels.
    macro_rules! step_finished {
        ($level:ident) => {
            tracing::$level!(
                step,
                instance_id = instance_id.as_str(),
                event_id,
                ms,
                done,
                failed,
                "step finished"
            )
        };
    }
    if failed > 0 {
        step_finished!(warn);
    } else {
        step_finished!(info);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_counts_what_worked_and_what_failed() {
        assert_eq!([true, false, true].into_iter().collect::<Tally>(), Tally::new(2, 1));
        assert_eq!(std::iter::empty::<bool>().collect::<Tally>(), Tally::default());
        assert_eq!(Tally::one(false), Tally::new(0, 1));
    }
}
