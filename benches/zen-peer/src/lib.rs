//! Empty: the benchmark is benches/zen.rs.
