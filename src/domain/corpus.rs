//! A deterministic corpus of splits that pins the engine's output byte for byte.
//!
//! Thousands of pseudo-random rule sets, orders and networks (fixed seed, no randomness
//! at run time) are computed and serialized exactly as the store serializes a result
//! (`serde_json::to_string`); the SHA-256 of all of it is pinned below. A change of a
//! single cent, digit of an explanation or byte of the JSON changes the hash.
//!
//! To see what changed: `PRORATA_CORPUS_OUT=/tmp/a.txt cargo test --lib corpus` before
//! and after, then diff the two files.

use std::fmt::Write as _;

use chrono::{Duration, TimeZone, Utc};
use sha2::{Digest, Sha256};

use super::engine::{self, Context, Inputs};
use super::network::{NetworkSnapshot, PromoterNode, Status};
use super::order::{Funder, Order, RawAmount, RawCoupon, RawLine, RawOrder, RawReferral};
use super::ruleset;
use super::split::{ChainMember, SplitResult, WeightEntry};

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }
}

const RATES: &[&str] = &[
    "0.10",
    "0.05",
    "0.03",
    "0.02",
    "0.01",
    "0.1",
    "0.2",
    "0.333",
    "0.0125",
    "0.07",
    "0.015",
    "0.011",
    "0.0333333",
    "0.125",
    "0.3",
    "0",
    "0.000001",
    "0.1234567890123456789012345678",
    "0.0000000000000000000000000001",
    "0.49",
];

/// A rate: from the pool, or random digits with 1–9 decimals below `max_thousandths`.
fn rate(r: &mut Rng, max_thousandths: u64) -> String {
    if r.chance(50) {
        let s = r.pick(RATES);
        if s.parse::<f64>()
            .is_ok_and(|v| v * 1000.0 <= max_thousandths as f64)
        {
            return s.to_string();
        }
    }
    let digits = 1 + r.below(9) as u32;
    let scale = 10u64.pow(digits);
    let max = (scale * max_thousandths / 1000).max(1);
    let m = r.below(max + 1);
    let s = format!("{m:0>width$}", width = digits as usize + 1);
    let (i, f) = s.split_at(s.len() - digits as usize);
    format!("{i}.{f}")
}

fn when(r: &mut Rng) -> String {
    let mut parts = Vec::new();
    if r.chance(20) {
        parts.push(format!(
            "category: [{}]",
            r.pick(&["books", "home", "toys", "misc"])
        ));
    }
    if r.chance(10) {
        parts.push(format!("sku: [{}]", r.pick(&["A", "B", "C"])));
    }
    if r.chance(10) {
        parts.push(format!("merchant: [{}]", r.pick(&["M1", "M2"])));
    }
    if r.chance(10) {
        parts.push(format!(
            "channel: [{}]",
            r.pick(&["alipay", "wechat", "default"])
        ));
    }
    if r.chance(15) {
        parts.push(format!("tags: [{}]", r.pick(&["vip", "organic", "sale"])));
    }
    if r.chance(10) {
        parts.push(format!("promoter_grade: [{}]", r.pick(&["gold", "silver"])));
    }
    if r.chance(10) {
        parts.push(format!("first_order: {}", r.chance(50)));
    }
    if r.chance(10) {
        parts.push(format!(
            "order_amount: {{gte: \"{}\"}}",
            r.pick(&["10", "100.5", "1000"])
        ));
    }
    format!("{{{}}}", parts.join(", "))
}

fn ladder(r: &mut Rng, with_levels: usize) -> String {
    let metric = r.pick(&[
        "promoter_month_sales",
        "merchant_month_sales",
        "order_amount",
    ]);
    let mode = if metric == "order_amount" {
        "flat"
    } else {
        r.pick(&["flat", "marginal"])
    };
    let mut s = format!("{{metric: {metric}, mode: {mode}, tiers: [");
    let tiers = 1 + r.below(3);
    let mut from = 0u64;
    for t in 0..tiers {
        if t > 0 {
            from += 1 + r.below(500);
            s.push_str(", ");
        }
        write!(s, "{{from: \"{from}\", rate: \"{}\"}}", rate(r, 150)).unwrap();
    }
    s.push(']');
    if with_levels > 0 {
        s.push_str(", levels: [");
        for k in 0..with_levels {
            if k > 0 {
                s.push_str(", ");
            }
            write!(s, "\"{}\"", rate(r, 50)).unwrap();
        }
        s.push(']');
    }
    s.push('}');
    s
}

fn document(r: &mut Rng) -> String {
    let mut d = String::new();
    let levels = 1 + r.below(5) as usize;
    writeln!(d, "max_levels: {levels}").unwrap();
    let currency = r.chance(40).then(|| r.pick(&["CNY", "JPY", "KWD"]));
    if let Some(c) = currency {
        writeln!(d, "currency: {c}").unwrap();
    }
    if r.chance(60) {
        writeln!(d, "rounding: {}", r.pick(&["down", "half_up", "half_even"])).unwrap();
    }
    if r.chance(30) {
        writeln!(d, "base: {}", r.pick(&["paid", "list", "profit"])).unwrap();
    }
    if r.chance(30) {
        writeln!(
            d,
            "coupon_in_base: {}",
            r.pick(&["none", "platform_funded", "all"])
        )
        .unwrap();
    }
    if r.chance(30) {
        writeln!(d, "compression: true").unwrap();
    }
    if r.chance(50) {
        let model = r.pick(&["last_click", "first_click", "linear", "position_based"]);
        writeln!(d, "attribution: {{model: {model}, window_days: 30").unwrap();
        if model == "position_based" && r.chance(70) {
            let (f, l) = [
                ("0.4", "0.4"),
                ("0.3", "0.5"),
                ("0.25", "0.25"),
                ("0.333", "0.333"),
            ][r.below(4) as usize];
            d.pop();
            writeln!(d, ", first: \"{f}\", last: \"{l}\"").unwrap();
        }
        d.pop();
        d.push_str("}\n");
    }
    if r.chance(80) {
        writeln!(
            d,
            "payment_fee: {{default: \"{}\", by_channel: {{alipay: \"{}\"}}}}",
            rate(r, 30),
            rate(r, 30)
        )
        .unwrap();
    }
    if r.chance(85) {
        d.push_str("platform: {");
        if r.chance(20) {
            write!(d, "ladder: {}", ladder(r, 0)).unwrap();
        } else {
            write!(d, "rate: \"{}\"", rate(r, 200)).unwrap();
        }
        match r.below(3) {
            0 => {}
            1 => write!(d, ", partners: [{{id: pa, share: \"{}\"}}]", rate(r, 500)).unwrap(),
            _ => write!(
                d,
                ", partners: [{{id: pb, share: \"{}\"}}, {{id: pa, share: \"{}\"}}]",
                rate(r, 400),
                rate(r, 400)
            )
            .unwrap(),
        }
        d.push_str("}\n");
    }
    if r.chance(30) {
        writeln!(d, "cap: \"{}\"", rate(r, 300)).unwrap();
    }
    d.push_str("rules:\n");
    let rules = 1 + r.below(4);
    for i in 0..rules {
        let w = if i + 1 == rules && r.chance(70) {
            "{}".to_string()
        } else {
            when(r)
        };
        write!(d, "  - {{id: r{i}, priority: {}, when: {w}", r.below(5)).unwrap();
        if r.chance(10) {
            write!(d, ", platform_rate: \"{}\"", rate(r, 100)).unwrap();
        }
        let n = if i + 1 == rules {
            levels
        } else {
            1 + r.below(levels as u64) as usize
        };
        match r.below(10) {
            0..=5 => {
                let rs: Vec<String> = (0..n).map(|_| format!("\"{}\"", rate(r, 150))).collect();
                write!(d, ", levels: [{}]", rs.join(", ")).unwrap();
            }
            6 => write!(
                d,
                ", decay: {{first: \"{}\", factor: \"{}\", levels: {n}}}",
                rate(r, 150),
                r.pick(&["0.5", "0.3", "0.333", "0.9"])
            )
            .unwrap(),
            7 => {
                let fs: Vec<String> = (0..n)
                    .map(|_| {
                        format!(
                            "\"{}\"",
                            if currency == Some("JPY") {
                                r.pick(&["1", "2", "3"])
                            } else {
                                r.pick(&["1", "0.5", "2.25", "0.01", "3"])
                            }
                        )
                    })
                    .collect();
                write!(d, ", fixed: [{}]", fs.join(", ")).unwrap();
            }
            _ => write!(d, ", ladder: {}", ladder(r, n - 1)).unwrap(),
        }
        d.push_str("}\n");
    }
    let adjustments = r.below(3);
    if adjustments > 0 {
        d.push_str("adjustments:\n");
        for i in 0..adjustments {
            writeln!(
                d,
                "  - {{id: adj{i}, when: {}, level: {}, add: \"{}\"}}",
                when(r),
                1 + r.below(levels as u64),
                rate(r, 30)
            )
            .unwrap();
        }
    }
    d
}

fn amount(r: &mut Rng, huge: bool, exponent: u32) -> RawAmount {
    let m = if huge {
        r.below(1_000_000_000_000_000 / 8)
    } else {
        r.below(100_000)
    };
    if r.chance(50) || exponent == 0 {
        RawAmount::Minor(m as i64)
    } else {
        let unit = 10u64.pow(exponent);
        let frac = format!("{:0>w$}", m % unit, w = exponent as usize);
        RawAmount::Decimal(format!("{}.{frac}", m / unit))
    }
}

const PROMOTERS: &[&str] = &["P0", "P1", "P2", "P3", "P4", "P5", "P6", "P7"];

fn snapshot(r: &mut Rng) -> NetworkSnapshot {
    let mut snap = NetworkSnapshot::default();
    for (i, id) in PROMOTERS.iter().enumerate() {
        let parent = (i > 0 && r.chance(85)).then(|| PROMOTERS[r.below(i as u64) as usize]);
        snap.insert(PromoterNode {
            id: id.to_string(),
            parent: parent.map(str::to_string),
            grade: r
                .chance(30)
                .then(|| r.pick(&["gold", "silver", "bronze"]).to_string()),
            status: match r.below(10) {
                0 => Status::Frozen,
                1 => Status::Closed,
                _ => Status::Active,
            },
        });
    }
    if r.chance(80) {
        snap.bound = Some(PROMOTERS[r.below(PROMOTERS.len() as u64) as usize].to_string());
    }
    snap
}

fn raw_order(r: &mut Rng, i: usize) -> RawOrder {
    let huge = r.chance(5);
    let paid_at = Utc.with_ymd_and_hms(2026, 11, 20, 10, 0, 0).unwrap();
    let currency = if r.chance(70) {
        "CNY"
    } else {
        r.pick(&["JPY", "KWD"])
    };
    let lines = (0..1 + r.below(4))
        .map(|k| {
            let exponent = match currency {
                "JPY" => 0,
                "KWD" => 3,
                _ => 2,
            };
            let price = amount(r, huge, exponent);
            RawLine {
                id: format!("L{k}"),
                sku: r.pick(&["A", "B", "C", "D"]).into(),
                category: r.pick(&["books", "home", "toys", "misc"]).into(),
                quantity: 1 + r.below(if huge { 2 } else { 5 }) as i64,
                unit_price: price,
                discount: if r.chance(20) {
                    RawAmount::Minor(r.below(50) as i64)
                } else {
                    RawAmount::Absent
                },
                coupon: r.chance(15).then(|| RawCoupon {
                    amount: RawAmount::Minor(r.below(30) as i64),
                    funded_by: Some(if r.chance(50) {
                        Funder::Platform
                    } else {
                        Funder::Merchant
                    }),
                }),
                unit_cost: if r.chance(40) {
                    RawAmount::Minor(r.below(20_000) as i64)
                } else {
                    RawAmount::Absent
                },
                uses: 0,
            }
        })
        .collect();
    let referrals = (0..r.below(5))
        .map(|_| RawReferral {
            promoter: if r.chance(90) {
                PROMOTERS[r.below(PROMOTERS.len() as u64) as usize].to_string()
            } else {
                "NOBODY".into()
            },
            at: Some(paid_at - Duration::hours(r.below(24 * 40) as i64)),
        })
        .collect();
    RawOrder {
        id: format!("O-{i}"),
        merchant: r.pick(&["M1", "M2"]).into(),
        buyer: "C1".into(),
        paid_at: Some(paid_at),
        currency: currency.into(),
        channel: r.pick(&["alipay", "wechat", ""]).into(),
        tags: if r.chance(50) {
            vec![r.pick(&["vip", "organic", "sale"]).into()]
        } else {
            vec![]
        },
        referrals,
        shipping: if r.chance(30) {
            RawAmount::Minor(r.below(2000) as i64)
        } else {
            RawAmount::Absent
        },
        lines,
    }
}

/// What became of one case of the corpus.
enum Case {
    /// The rule-set document did not compile (its errors).
    InvalidRuleSet(String),
    /// The order did not parse (the error).
    InvalidOrder(String),
    /// The engine's answer.
    Computed(Result<Box<SplitResult>, engine::EngineError>),
}

/// Generates every case, in order, with its label (`i` or `i.j`).
fn cases(mut each: impl FnMut(String, Case)) {
    let mut r = Rng(0x9E37_79B9_7F4A_7C15);
    let now = Utc.with_ymd_and_hms(2026, 11, 21, 0, 0, 0).unwrap();
    for i in 0..4000 {
        let doc = document(&mut r);
        let c = ruleset::compile(&doc);
        let Some(rs) = c.ruleset else {
            each(
                format!("{i}"),
                Case::InvalidRuleSet(format!("{:?}", c.errors)),
            );
            continue;
        };
        for j in 0..3 {
            let snap = snapshot(&mut r);
            let raw = raw_order(&mut r, i * 10 + j);
            let order = match Order::parse(&raw, "order") {
                Ok(o) => o,
                Err(e) => {
                    each(format!("{i}.{j}"), Case::InvalidOrder(format!("{e:?}")));
                    continue;
                }
            };
            let inputs = Inputs {
                network: &snap,
                context: Context {
                    first_order: r.chance(50),
                    promoter_month_prior: r.below(100_000) as i64,
                    merchant_month_prior: r.below(1_000_000) as i64,
                },
                ruleset_version: 7,
                fingerprint: "f".into(),
                now,
            };
            each(
                format!("{i}.{j}"),
                Case::Computed(engine::compute(&order, &rs, &inputs).map(Box::new)),
            );
        }
    }
}

/// Every result the corpus computes (for tests of what is made of results), computed
/// once per test binary.
pub(crate) fn results() -> &'static [SplitResult] {
    static RESULTS: std::sync::OnceLock<Vec<SplitResult>> = std::sync::OnceLock::new();
    RESULTS.get_or_init(|| {
        let mut out = Vec::new();
        cases(|_, case| {
            if let Case::Computed(Ok(res)) = case {
                out.push(*res);
            }
        });
        out
    })
}

/// A corpus result with what the corpus leaves at one value filled unusually: notes (one
/// empty, one with every control character, quotes, a backslash and non-ASCII text), a
/// chain with and without a grade and a long id, two attribution weights. For tests of
/// encodings of results.
pub(crate) fn unusual_result() -> SplitResult {
    let mut base = results()[0].clone();
    let nasty: String = (0u8..0x20).map(char::from).collect::<String>()
        + "\"quoted\" back\\slash é 中 \u{7f} \u{2028}";
    base.notes = vec![nasty.clone(), String::new(), "é".repeat(100)];
    base.chain = vec![
        ChainMember {
            level: 1,
            promoter: nasty.as_str().into(),
            status: "active".into(),
            grade: "gold".into(),
        },
        ChainMember {
            level: 2,
            promoter: "P".repeat(200).into(),
            status: "frozen".into(),
            grade: "".into(),
        },
    ];
    base.attribution = vec![
        WeightEntry {
            promoter: "P1".into(),
            weight: "1/3".into(),
            primary: true,
        },
        WeightEntry {
            promoter: "P\n2".into(),
            weight: "2/3".into(),
            primary: false,
        },
    ];
    base
}

/// Computes the corpus; returns (text of every case, number of computed splits).
fn run() -> (String, usize) {
    let mut out = String::new();
    let mut computed = 0;
    cases(|label, case| {
        match case {
            Case::InvalidRuleSet(errors) => writeln!(out, "{label} invalid {errors}"),
            Case::InvalidOrder(e) => writeln!(out, "{label} order {e}"),
            Case::Computed(Ok(res)) => {
                computed += 1;
                writeln!(out, "{label} {}", serde_json::to_string(&res).unwrap())
            }
            Case::Computed(Err(e)) => writeln!(out, "{label} error {e:?}"),
        }
        .unwrap()
    });
    (out, computed)
}

/// SHA-256 of the corpus output before the engine was optimised.
const PINNED: &str = "ac9e49e9a91810120c6d6c10bb6ab6256f7f61b78cb91ed6a396625b6ac3edee";

#[test]
fn corpus_output_is_unchanged() {
    let (out, computed) = run();
    if let Ok(path) = std::env::var("PRORATA_CORPUS_OUT") {
        std::fs::write(path, &out).unwrap();
    }
    assert!(computed > 5000, "only {computed} splits computed");
    let hash = hex::encode(Sha256::digest(out.as_bytes()));
    assert_eq!(hash, PINNED, "the engine's output changed");
}
