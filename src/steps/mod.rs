//! The steps that call AWS, one concern each: look the instances up (and the branch ENIs of their trunk ENIs), take the claims, leave target groups
//! and check they left, quarantine ENIs, finish an Auto Scaling lifecycle action, put a restored instance back in its
//! target groups. Steps take plain SDK clients and values, and report plain data; they decide no order.

pub mod branches;
pub mod claim;
pub mod deregister;
pub mod describe;
pub mod lifecycle;
pub mod quarantine;
pub mod records;
pub mod reregister;
pub mod tags;
pub mod verify;
