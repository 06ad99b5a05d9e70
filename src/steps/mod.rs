//! The steps that change AWS, one concern each: leave target groups, quarantine ENIs, tell people, finish an Auto
//! Scaling lifecycle action, put a restored instance back in its target groups.

pub mod alert;
pub mod deregister;
pub mod lifecycle;
pub mod notify;
pub mod quarantine;
pub mod render;
pub mod reregister;
