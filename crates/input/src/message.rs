//! What one message asks for, whichever format it came in and whatever carried it: the type the parsers of messages
//! that may name several instances, or nothing to do, return.

use crate::request::Request;

/// What one message asks for.
#[derive(Debug, PartialEq)]
pub enum Message {
    /// Clean up these instances (an AWS Health event names several).
    Requests(Vec<Request>),
    /// A message that asks for nothing by design: Auto Scaling's test notification.
    Skipped(&'static str),
    /// A well-formed AWS event this function has nothing to do for (a state change to `pending`, a launch lifecycle
    /// action, a Health issue), and why. Not an error: a rule or queue shared with other consumers sends such events.
    Ignored(String),
}
