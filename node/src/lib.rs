//! The Outpost node runtime.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod control;
pub mod crypto;
pub mod envelope;
pub mod identity;
pub mod ids;
pub mod store;
pub mod sync;
