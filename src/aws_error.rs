//! One readable line for any AWS SDK error: the service's code and message when it sent them.

use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata};

/// `Throttling: Rate exceeded`, or the whole error chain when the service never answered (timeouts, DNS, TLS).
pub fn explain<E>(err: &E) -> String
where
    E: ProvideErrorMetadata + std::error::Error,
{
    match (err.code(), err.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_owned(),
        _ => DisplayErrorContext(err).to_string(),
    }
}

/// The service's error code, if it sent one.
pub fn code<E: ProvideErrorMetadata>(err: &E) -> Option<&str> {
    err.code()
}
