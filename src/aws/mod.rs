//! The AWS edge every other module stands on: the clients with their retry policy (made for the invocation's
//! deadline), the pacing of our own sends per action class, the breaker for dependencies off the safety path, a typed
//! call error, client-side token buckets, and bounded concurrency for many independent calls.

pub mod bounded;
mod breaker;
pub mod bucket;
mod clients;
pub mod error;
pub mod paced;
pub mod retry;

pub use bounded::{bounded_all, join_all};
pub use breaker::Breaker;
pub use bucket::{Bucket, Priority};
pub use clients::{Clients, load_shared};
pub use error::CallError;
pub use paced::{ElbBudget, ElbKind};
pub use retry::CallBudget;
