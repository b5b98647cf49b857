//! The integration suite: one binary, the real server on a loopback port per test, real
//! gRPC clients, SQLite and PostgreSQL (PostgreSQL half skipped with a message when it is
//! unreachable, unless PRORATA_REQUIRE_SERVICES=1).

mod helpers;

mod bad_input;
mod behaviour;
mod cli;
mod concurrency;
mod events;
mod frames;
mod lifecycle;
mod partitions;
mod replicas;
mod store_suite;
mod vectors;
