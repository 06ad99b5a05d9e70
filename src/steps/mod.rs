//! The steps that change AWS, one concern each: leave target groups, quarantine ENIs, tell people.

pub mod alert;
pub mod deregister;
pub mod notify;
pub mod quarantine;
