//! Setup shared by the benchmark binaries: the 5-level, 20-rule rule set, the 2-line
//! benchmark order and the cached promoter chain. `benches/engine.rs` times our engine on
//! them; `benches/zen.rs` also runs GoRules ZEN on the same rules, so both must read them
//! from here rather than from copies that could drift apart.

use std::fmt::Write as _;

use chrono::{TimeZone, Utc};

use prorata::domain::engine::{Context, Inputs};
use prorata::domain::network::{NetworkSnapshot, PromoterNode, Status};
use prorata::domain::order::{RawAmount, RawLine, RawOrder};
use prorata::domain::ruleset::{self, RuleSet};

/// The 5-level rule set: 19 rules that do not match the benchmark order, at various
/// priorities, and the matching rule with the lowest priority (sorted last).
pub fn five_level_document() -> String {
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

/// Compiles a rule set document, panicking on any error (benchmark setup only).
pub fn compile(doc: &str) -> RuleSet {
    let c = ruleset::compile(doc);
    assert!(c.errors.is_empty(), "rule set errors: {:?}", c.errors);
    c.ruleset.expect("no errors, so a rule set")
}

/// The benchmark order: 2 lines in CNY, paid with alipay, no referrals (the bound
/// promoter is level 1).
pub fn raw_order() -> RawOrder {
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
pub fn chain_snapshot(depth: usize) -> NetworkSnapshot {
    let mut snap = NetworkSnapshot::default();
    for i in 1..=depth {
        let parent = (i > 1).then(|| format!("P{}", i - 1));
        snap.insert(node(&format!("P{i}"), parent.as_deref()));
    }
    snap.bound = Some(format!("P{depth}"));
    snap
}

/// Engine inputs over a snapshot: no context, rule set version 1.
pub fn inputs(snap: &NetworkSnapshot) -> Inputs<'_> {
    Inputs {
        network: snap,
        context: Context::default(),
        ruleset_version: 1,
        fingerprint: String::new(),
        now: Utc::now(),
    }
}
