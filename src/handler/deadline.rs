//! The invocation's deadline from Lambda's context, less a reserve for building and publishing the summaries.

use std::time::{Duration, SystemTime};

use lambda_runtime::Context;

use crate::deadline::Deadline;

/// Time kept back from Lambda's deadline for building and publishing the summaries.
const PUBLISH_RESERVE: Duration = Duration::from_secs(5);

/// Deadlines below this (September 2001 in epoch milliseconds) are durations, not instants: `cargo lambda watch`
/// sends its timeout that way, where Lambda sends the epoch time.
const EPOCH_MS_FLOOR: u64 = 1_000_000_000_000;

/// When to stop starting new locate and verify calls: Lambda's deadline less the reserve. None when the runtime
/// gave no usable deadline (tests calling the handler directly).
pub fn of(context: &Context) -> Deadline {
    let left = match context.deadline {
        0 => return Deadline::none(),
        relative if relative < EPOCH_MS_FLOOR => Duration::from_millis(relative),
        _ => match context.deadline().duration_since(SystemTime::now()) {
            Ok(left) => left,
            Err(_) => {
                tracing::warn!(
                    deadline_ms = context.deadline,
                    "the invocation's deadline has already passed; ignoring it"
                );
                return Deadline::none();
            }
        },
    };
    tracing::debug!(left_ms = left.as_millis() as u64, "invocation deadline");
    Deadline::ending(left, PUBLISH_RESERVE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(deadline: u64) -> Context {
        let mut context = Context::default();
        context.deadline = deadline;
        context
    }

    #[test]
    fn the_deadline_keeps_a_reserve_for_publishing() {
        let in_a_minute = SystemTime::now() + Duration::from_secs(60);
        let epoch_ms = in_a_minute.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis() as u64;
        let left = of(&context(epoch_ms)).left().unwrap();
        assert!(
            (Duration::from_secs(53)..=Duration::from_secs(55)).contains(&left),
            "{left:?}"
        );
    }

    #[test]
    fn an_emulator_duration_or_a_past_deadline_does_not_stop_the_work() {
        let left = of(&context(600_000)).left().unwrap();
        assert!(left > Duration::from_secs(590), "{left:?}");
        assert_eq!(of(&context(EPOCH_MS_FLOOR + 1)), Deadline::none());
        assert_eq!(of(&context(0)), Deadline::none());
    }
}
