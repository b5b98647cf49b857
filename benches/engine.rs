//! Criterion benchmarks of the pure split engine (no I/O, no gRPC, no store).
//!
//! - `split_5_levels_20_rules`: a 5-level rule set with 20 rules where only the last
//!   (lowest-priority) rule matches, so rule selection scans all 20; one adjustment, a
//!   channel fee, a platform take with one partner and a cap. The network snapshot holds
//!   the cached 5-deep chain P1 <- P2 <- P3 <- P4 <- P5 with the buyer bound to P5.
//! - `split_1_level_1_rule`: the smallest useful rule set, as a baseline.
//! - `parse_order_and_fingerprint`: the boundary cost, `Order::parse` + `fingerprint::of`.
//! - `result_json_5_levels`, `result_proto_5_levels`: the 5-level result as the store keeps
//!   it (JSON) and as Compute answers it (the encoded protobuf `Split`).
//!
//! Only `engine::compute` is timed in the split benchmarks: the order, rule set and
//! snapshot are built once, outside the measured loop.
//!
//! The rule sets, order and snapshot are built in `common/mod.rs`, shared with
//! `benches/zen.rs`.
//!
//! Run: `cargo bench --bench engine`. Results: `benches/RESULTS.md`.

use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion};

use prorata::domain::engine;
use prorata::domain::fingerprint;
use prorata::domain::order::Order;
use prorata::domain::split::{Account, SplitResult};
use prorata::grpc::encode;
use prorata::store::result_json;

mod common;
use common::{chain_snapshot, compile, five_level_document, inputs, raw_order};

/// The same allocator as the `prorata` binary, so the engine is measured as it runs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ONE_LEVEL_DOCUMENT: &str = r#"max_levels: 1
payment_fee:
  by_channel:
    alipay: "0.006"
platform:
  rate: "0.05"
rules:
  - {id: only, levels: ["0.10"]}
"#;

fn promoter_totals(r: &SplitResult) -> usize {
    r.totals
        .iter()
        .filter(|t| matches!(t.account, Account::Promoter(_)))
        .count()
}

fn bench_engine(c: &mut Criterion) {
    let order = Order::parse(&raw_order(), "order").expect("the benchmark order is valid");

    let rs5 = compile(&five_level_document());
    assert_eq!(rs5.rules.len(), 20);
    assert_eq!(rs5.max_levels, 5);
    let snap5 = chain_snapshot(5);
    let in5 = inputs(&snap5);
    // Assert once, outside the loop, that the benchmark does the intended work.
    let r5 = engine::compute(&order, &rs5, &in5).expect("5-level split");
    assert_eq!(promoter_totals(&r5), 5, "totals: {:?}", r5.totals);
    assert_eq!(r5.chain.len(), 5);
    assert!(r5
        .lines
        .iter()
        .flat_map(|l| &l.shares)
        .flat_map(|s| &s.explanations)
        .filter(|e| e.level >= 1)
        .all(|e| e.rule_id == "default-5"));
    assert!(r5.lines.iter().flat_map(|l| &l.shares).any(|s| s
        .explanations
        .iter()
        .any(|e| e.adjustments == ["organic-boost"] && e.rate == "0.11")));
    r5.check()
        .expect("5-level split satisfies the money invariants");

    let rs1 = compile(ONE_LEVEL_DOCUMENT);
    let snap1 = chain_snapshot(1);
    let in1 = inputs(&snap1);
    let r1 = engine::compute(&order, &rs1, &in1).expect("1-level split");
    assert_eq!(promoter_totals(&r1), 1, "totals: {:?}", r1.totals);
    r1.check()
        .expect("1-level split satisfies the money invariants");

    let raw = raw_order();
    assert_eq!(fingerprint::of(&order).len(), 64);

    let mut g = c.benchmark_group("engine");
    g.measurement_time(Duration::from_secs(5));
    g.sample_size(50);
    g.bench_function("split_5_levels_20_rules", |b| {
        b.iter(|| engine::compute(black_box(&order), black_box(&rs5), black_box(&in5)))
    });
    g.bench_function("split_1_level_1_rule", |b| {
        b.iter(|| engine::compute(black_box(&order), black_box(&rs1), black_box(&in1)))
    });
    // What a fresh Compute does with the result besides computing it: the JSON the store
    // keeps, and the protobuf `Split` the answer carries.
    g.bench_function("result_json_5_levels", |b| {
        b.iter(|| result_json::write(black_box(&r5)))
    });
    g.bench_function("result_proto_5_levels", |b| {
        b.iter(|| encode::split(black_box(&r5)))
    });
    g.bench_function("parse_order_and_fingerprint", |b| {
        b.iter(|| {
            let o = Order::parse(black_box(&raw), "order").expect("valid");
            fingerprint::of(&o)
        })
    });
    g.finish();
}

criterion_group!(benches, bench_engine);
criterion_main!(benches);
