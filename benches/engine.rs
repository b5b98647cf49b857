//! Criterion benchmarks of the pure split engine (no I/O, no gRPC, no store).
//!
//! - `split_5_levels_20_rules`: a 5-level rule set with 20 rules where only the last
//!   (lowest-priority) rule matches, so rule selection scans all 20; one adjustment, a
//!   channel fee, a platform take with one partner and a cap. The network snapshot holds
//!   the cached 5-deep chain P1 <- P2 <- P3 <- P4 <- P5 with the buyer bound to P5.
//! - `split_1_level_1_rule`: the smallest useful rule set, as a baseline.
//! - `parse_order_and_fingerprint`: the boundary cost, `Order::parse` + `fingerprint::of`.
//!
//! Only `engine::compute` is timed in the split benchmarks: the order, rule set and
//! snapshot are built once, outside the measured loop.
//!
//! Run: `cargo bench --bench engine`. Results: `benches/RESULTS.md`.

use std::fmt::Write as _;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use criterion::{black_box, criterion_group, criterion_main, Criterion};

use prorata::domain::engine::{self, Context, Inputs};
use prorata::domain::fingerprint;
use prorata::domain::network::{NetworkSnapshot, PromoterNode, Status};
use prorata::domain::order::{Order, RawAmount, RawLine, RawOrder};
use prorata::domain::ruleset::{self, RuleSet};
use prorata::domain::split::{Account, SplitResult};

/// The same allocator as the `prorata` binary, so the engine is measured as it runs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The 5-level rule set: 19 rules that do not match the benchmark order, at various
/// priorities, and the matching rule with the lowest priority (sorted last).
fn five_level_document() -> String {
    let mut doc = String::from(
        r#"timezone: Asia/Shanghai
currency: CNY
max_levels: 5
payment_fee:
  default: "0.01"
  by_channel:
    alipay: "0.006"
    wechat: "0.006"
platform:
  rate: "0.05"
  partners:
    - {id: partner-a, share: "0.2"}
cap: "0.5"
rules:
"#,
    );
    // 19 non-matching rules. Conditions are on distinct categories, skus, merchants and
    // tags; several combine a condition the order meets with one it does not, so the
    // matcher cannot always stop at the first field.
    let non_matching = [
        (100, r#"{category: [luxury]}"#),
        (95, r#"{sku: [SKU-9001, SKU-9002]}"#),
        (90, r#"{merchant: [M-other-1]}"#),
        (85, r#"{tags: [vip, black-friday]}"#),
        (80, r#"{category: [electronics], merchant: [M-other-2]}"#),
        (75, r#"{category: [books, music]}"#),
        (70, r#"{sku: [SKU-1001], tags: [clearance]}"#),
        (65, r#"{merchant: [M-other-3, M-other-4]}"#),
        (60, r#"{category: [grocery], channel: [alipay]}"#),
        (55, r#"{tags: [livestream]}"#),
        (50, r#"{category: [electronics, home], sku: [SKU-7777]}"#),
        (45, r#"{merchant: [M-bench], tags: [members-only]}"#),
        (40, r#"{category: [toys]}"#),
        (35, r#"{sku: [SKU-5000, SKU-5001, SKU-5002]}"#),
        (30, r#"{channel: [wechat]}"#),
        (25, r#"{category: [beauty], tags: [new-year]}"#),
        (20, r#"{merchant: [M-other-5], channel: [alipay]}"#),
        (15, r#"{tags: [flash-sale, pre-order]}"#),
        (10, r#"{category: [sports, outdoor]}"#),
    ];
    assert_eq!(non_matching.len(), 19);
    for (i, (priority, when)) in non_matching.iter().enumerate() {
        writeln!(
            doc,
            r#"  - {{id: r{i:02}, priority: {priority}, when: {when}, levels: ["0.2", "0.1", "0.05", "0.02", "0.01"]}}"#
        )
        .unwrap();
    }
    doc.push_str(
        r#"  - id: default-5
    priority: 0
    when: {channel: [alipay]}
    levels: ["0.10", "0.05", "0.03", "0.02", "0.01"]
adjustments:
  - {id: organic-boost, when: {tags: [organic]}, level: 1, add: "0.01"}
"#,
    );
    doc
}

const ONE_LEVEL_DOCUMENT: &str = r#"max_levels: 1
payment_fee:
  by_channel:
    alipay: "0.006"
platform:
  rate: "0.05"
rules:
  - {id: only, levels: ["0.10"]}
"#;

fn compile(doc: &str) -> RuleSet {
    let c = ruleset::compile(doc);
    assert!(c.errors.is_empty(), "rule set errors: {:?}", c.errors);
    c.ruleset.expect("no errors, so a rule set")
}

/// The benchmark order: 2 lines in CNY, paid with alipay, no referrals (the bound
/// promoter is level 1).
fn raw_order() -> RawOrder {
    RawOrder {
        id: "O-bench-1".into(),
        merchant: "M-bench".into(),
        buyer: "C-bench".into(),
        paid_at: Some(Utc.with_ymd_and_hms(2026, 11, 11, 12, 0, 0).unwrap()),
        currency: "CNY".into(),
        channel: "alipay".into(),
        tags: vec!["organic".into(), "repeat-buyer".into()],
        referrals: vec![],
        shipping: RawAmount::Absent,
        lines: vec![
            RawLine {
                id: "L1".into(),
                sku: "SKU-1234".into(),
                category: "electronics".into(),
                quantity: 2,
                unit_price: RawAmount::Decimal("199.00".into()),
                discount: RawAmount::Decimal("10.00".into()),
                ..Default::default()
            },
            RawLine {
                id: "L2".into(),
                sku: "SKU-5678".into(),
                category: "home".into(),
                quantity: 1,
                unit_price: RawAmount::Minor(8990),
                ..Default::default()
            },
        ],
    }
}

fn node(id: &str, parent: Option<&str>) -> PromoterNode {
    PromoterNode {
        id: id.into(),
        parent: parent.map(Into::into),
        grade: None,
        status: Status::Active,
    }
}

/// The cached chain P1 <- P2 <- ... <- Pn (P1 is the root), buyer bound to Pn.
fn chain_snapshot(depth: usize) -> NetworkSnapshot {
    let mut snap = NetworkSnapshot::default();
    for i in 1..=depth {
        let parent = (i > 1).then(|| format!("P{}", i - 1));
        snap.insert(node(&format!("P{i}"), parent.as_deref()));
    }
    snap.bound = Some(format!("P{depth}"));
    snap
}

fn inputs(snap: &NetworkSnapshot) -> Inputs<'_> {
    Inputs {
        network: snap,
        context: Context::default(),
        ruleset_version: 1,
        fingerprint: String::new(),
        now: Utc::now(),
    }
}

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
