//! The domain: exact money, orders, rule sets, the network and the split engine.
//!
//! Everything here is pure and synchronous: no I/O, no async, no proto types. Values are
//! parsed once at the boundary (`Order::parse`, `ruleset::compile`) and cannot be invalid
//! afterwards.

pub mod catalog;
pub mod engine;
pub mod exact;
pub mod fingerprint;
pub mod grades;
pub mod ledger;
pub mod lifecycle;
pub mod money;
pub mod network;
pub mod order;
pub mod ruleset;
pub mod split;

#[cfg(test)]
pub(crate) mod corpus;
