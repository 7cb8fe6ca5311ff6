//! The Outpost node runtime.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod api;
pub mod blobs;
pub mod client;
pub mod clock;
pub mod control;
pub mod core;
pub mod crypto;
pub mod daemon;
pub mod envelope;
pub mod home;
pub mod identity;
pub mod ids;
pub mod link;
pub mod net;
pub mod org;
pub mod search;
pub mod snapshot;
pub mod store;
pub mod sync;
