//! The Outpost node runtime.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod control;
pub mod crypto;
pub mod envelope;
pub mod identity;
pub mod ids;
pub mod store;
pub mod sync;
pub mod core;
pub mod net;
pub mod home;
pub mod api;
pub mod client;
pub mod daemon;
