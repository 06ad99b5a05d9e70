//! Every integration test of the function, as one binary: linking the AWS SDK once instead of once per story. Each
//! module is one story: a fleet on moto (or scripted SDK responses), an invocation, and what AWS looks like after.

mod common;

mod agent_door;
mod cleanup_on_moto;
mod crash;
mod deliveries;
mod events_on_moto;
mod faults;
mod hooks_on_moto;
mod identity_proof;
mod index_on_moto;
mod layers;
mod metrics;
mod monitoring;
mod parse_properties;
mod places_on_moto;
mod records;
mod replay_dlq;
mod runtime_loop;
mod trust_on_moto;
mod warm_up;
mod wave;
