//! The AWS edge every other module stands on: the clients and their retry modes, a typed call error, the client-side
//! pacing of ELB Describe* calls, and bounded concurrency for many independent calls.

pub mod bounded;
mod clients;
pub mod error;
pub mod pace;

pub use bounded::{bounded_all, join_all};
pub use clients::{Clients, load_shared};
pub use error::CallError;
pub use pace::Pace;
