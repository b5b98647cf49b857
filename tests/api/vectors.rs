//! Every vector in tests/vectors/core and tests/vectors/rules, through the runner, on both
//! backends.

use std::path::PathBuf;

use crate::helpers::{pg_url, postgres_available};

fn dirs() -> Vec<PathBuf> {
    ["tests/vectors/core", "tests/vectors/rules"]
        .iter()
        .map(PathBuf::from)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_core_and_rules_vector_passes_on_sqlite() {
    let files = prorata::vectors::collect_files(&dirs()).unwrap();
    assert!(files.len() >= 16, "vector files missing: {files:?}");
    let s = prorata::vectors::run(&dirs(), None).await.unwrap();
    assert_eq!((s.passed, s.failed), (files.len(), 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_core_and_rules_vector_passes_on_postgres() {
    if !postgres_available().await {
        return;
    }
    let files = prorata::vectors::collect_files(&dirs()).unwrap();
    let s = prorata::vectors::run(&dirs(), Some(&pg_url()))
        .await
        .unwrap();
    assert_eq!((s.passed, s.failed), (files.len(), 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_vector_is_reported_not_crashed() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("wrong.yaml");
    std::fs::write(
        &f,
        "name: wrong\nruleset: {platform: {rate: '0.10'}}\nsteps:\n- pay: {id: O-1, merchant: M1, buyer: C1, paid_at: '2026-11-01T10:00:00Z', currency: CNY, lines: [{id: L1, sku: A, category: x, quantity: 1, unit_price: '10.00'}]}\n  expect: {accounts: {merchant:M1: '9.01', platform: '0.99'}}\n- frobnicate: {}\n  expect: {ok: true}\n",
    )
    .unwrap();
    let s = prorata::vectors::run(&[f], None).await.unwrap();
    assert_eq!((s.passed, s.failed), (0, 1));
}
