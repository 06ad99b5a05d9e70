//! A failed AWS call as a value: the operation, the service's error code and its message. Decisions match on the code
//! (`error.is("TargetGroupNotFound")`), never on the text, and the text reads `Operation failed: Code: message`.

use std::fmt;

use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata};

/// Error codes that mean "slow down": ELB answers `Throttling`, EC2 `RequestLimitExceeded`, the JSON services
/// `ThrottlingException` and friends.
const THROTTLING: [&str; 5] = [
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallError {
    /// The API operation, as AWS names it (`DeregisterTargets`).
    pub operation: &'static str,
    /// The service's error code, when it answered with one.
    pub code: Option<String>,
    /// The service's message; when it never answered (timeout, DNS, TLS), the whole error chain.
    pub message: String,
}

impl CallError {
    /// What an SDK call failed with.
    pub fn new<E>(operation: &'static str, err: &E) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error,
    {
        let message = match (err.code(), err.message()) {
            (Some(_), Some(message)) => message.to_owned(),
            (Some(_), None) => String::new(),
            _ => DisplayErrorContext(err).to_string(),
        };
        CallError {
            operation,
            code: err.code().map(str::to_owned),
            message,
        }
    }

    /// A call that could not be made or finished for a reason of ours (a task that died, the deadline).
    pub fn local(operation: &'static str, why: impl fmt::Display) -> Self {
        CallError {
            operation,
            code: None,
            message: why.to_string(),
        }
    }

    /// Whether AWS answered with this error code.
    pub fn is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }

    pub fn is_throttling(&self) -> bool {
        self.code.as_deref().is_some_and(|code| THROTTLING.contains(&code))
    }

    /// `Code: message` (or the chain when there is no code), without the operation: for messages that name the call
    /// themselves.
    pub fn reason(&self) -> String {
        match (&self.code, self.message.is_empty()) {
            (Some(code), true) => code.clone(),
            (Some(code), false) => format!("{code}: {}", self.message),
            (None, _) => self.message.clone(),
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed: {}", self.operation, self.reason())
    }
}

impl std::error::Error for CallError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_names_the_call_the_code_and_the_message() {
        let throttled = CallError {
            operation: "DescribeTargetHealth",
            code: Some("Throttling".into()),
            message: "Rate exceeded".into(),
        };
        assert_eq!(
            throttled.to_string(),
            "DescribeTargetHealth failed: Throttling: Rate exceeded"
        );
        assert!(throttled.is("Throttling") && throttled.is_throttling());
        assert!(!throttled.is("TargetGroupNotFound"));
        let local = CallError::local("DeregisterTargets", "the task for this call did not finish");
        assert_eq!(local.reason(), "the task for this call did not finish");
        assert!(!local.is_throttling());
    }
}
