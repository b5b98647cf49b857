//! The idempotency fingerprint of an order: SHA-256 of its canonical content.
//!
//! Canonical means parsed: amounts in minor units whatever form they were sent in, times
//! as UTC instants. Two requests with the same fingerprint describe the same order.

use sha2::{Digest, Sha256};

use super::order::Order;

/// Hex SHA-256 of the canonical JSON of a parsed order.
pub fn of(order: &Order) -> String {
    // Serialising a plain struct of strings, integers and vectors cannot fail.
    let canonical = serde_json::to_vec(order).expect("an Order always serialises");
    hex::encode(Sha256::digest(&canonical))
}

/// Hex SHA-256 of arbitrary bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
