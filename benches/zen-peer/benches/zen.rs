//! Criterion benchmark of our split engine beside GoRules ZEN (`zen-engine`), the rules
//! engine a Rust team would otherwise pick, on the same 20 rules.
//!
//! Group `zen`, one run, so the ratio compares numbers measured together:
//!
//! - `engine_split_5_levels_20_rules`: `engine::compute` on the order, rule set and
//!   snapshot of `split_5_levels_20_rules` in `benches/engine.rs` (built by
//!   `common/mod.rs`): rule selection per line, and then every amount computed exactly,
//!   allocated, explained and checked.
//! - `zen_decision_table_20_rules`: a JDM graph `inputNode -> decisionTableNode ->
//!   outputNode`, hit policy `first`, whose 20 rows are generated from the compiled rule
//!   set, in the engine's priority order. One iteration is what ZEN needs to select the
//!   rules of that order: one `Decision::evaluate` per line (2 lines), inside one
//!   `block_on` of a tokio current-thread runtime. ZEN only selects the rule and returns
//!   its id and 5 level rates: it does far less work than the engine.
//! - `zen_decision_table_20_rules_compiled`: the same after `Decision::compile()`, ZEN's
//!   opt-in precompilation (expression bytecode cache and decision-table row index).
//! - `tokio_block_on_empty`: `block_on` of an empty future on the same runtime, the
//!   runtime overhead included once in each ZEN iteration.
//!
//! The engine, the graph and the decisions are built once, outside the measured loop, and
//! a check before measuring asserts that ZEN selects the same rule id and rates as the
//! engine for each line. After criterion finishes, the medians are read back from
//! criterion's `estimates.json` files and the ratios are printed.
//!
//! Run: `cargo bench --bench zen`. Results: `benches/RESULTS.md`, section 6.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{black_box, Criterion};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use zen_engine::model::DecisionContent;
use zen_engine::{Decision, DecisionEngine, Variable};

use prorata::domain::engine;
use prorata::domain::exact::Exact;
use prorata::domain::order::{Order, RawOrder};
use prorata::domain::ruleset::{Conditions, Rule, RuleSet, Schedule};
use prorata::domain::split::{ShareKind, SplitResult};

#[path = "../../common/mod.rs"]
mod common;
use common::{chain_snapshot, compile, five_level_document, inputs, raw_order};

/// The same allocator as the `prorata` binary and `benches/engine.rs`; ZEN runs on it too.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Criterion group name, also the folder of the estimates under the criterion home.
const GROUP: &str = "zen";
const ENGINE_BENCH: &str = "engine_split_5_levels_20_rules";
const ZEN_BENCH: &str = "zen_decision_table_20_rules";
const ZEN_COMPILED_BENCH: &str = "zen_decision_table_20_rules_compiled";
const BLOCK_ON_BENCH: &str = "tokio_block_on_empty";

/// The decision-table input columns, each named like the fact it reads. All but `tags` are
/// unary tests on one string; `tags` is a list, tested with `some($, # in [...])`.
const INPUT_COLUMNS: [&str; 5] = ["category", "sku", "merchant", "channel", "tags"];

/// A unary test true when the field equals any of `values`: `"a", "b"`.
fn any_of(values: &prorata::domain::ruleset::IdSet) -> String {
    values
        .iter()
        .map(|v| Value::String(v.clone()).to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The level rates of a rule, as numbers ZEN reads back exactly.
fn rates(rule: &Rule) -> &[Exact] {
    match &rule.schedule {
        Schedule::Rates(r) => r,
        other => panic!(
            "rule {}: only level rates map to the ZEN table, not {other:?}",
            rule.id
        ),
    }
}

/// One decision-table row for a rule. Panics on a condition the table does not model, so
/// the table cannot silently differ from the rule set.
fn row(rule: &Rule, levels: usize) -> Value {
    let Conditions {
        category,
        sku,
        merchant,
        channel,
        tags,
        promoter_grade,
        first_order,
        order_amount,
    } = &rule.when;
    assert!(
        promoter_grade.is_none() && first_order.is_none() && order_amount.is_none(),
        "rule {}: the ZEN table models category, sku, merchant, channel and tags only",
        rule.id
    );
    assert!(
        rule.platform_rate.is_none(),
        "rule {}: platform_rate",
        rule.id
    );
    let mut r = serde_json::Map::new();
    r.insert("_id".into(), json!(rule.id));
    for (column, set) in INPUT_COLUMNS[..4]
        .iter()
        .zip([category, sku, merchant, channel])
    {
        r.insert(
            (*column).into(),
            json!(set.as_ref().map(any_of).unwrap_or_default()),
        );
    }
    let tags_cell = tags
        .as_ref()
        .map(|t| {
            let list = t
                .iter()
                .map(|v| Value::String(v.clone()).to_string())
                .collect::<Vec<_>>()
                .join(", ");
            format!("some($, # in [{list}])")
        })
        .unwrap_or_default();
    r.insert("tags".into(), json!(tags_cell));
    r.insert(
        "ruleId".into(),
        json!(Value::String(rule.id.clone()).to_string()),
    );
    let rs = rates(rule);
    assert_eq!(rs.len(), levels, "rule {}: {} levels", rule.id, rs.len());
    for (i, rate) in rs.iter().enumerate() {
        let literal = rate.to_string();
        let parsed = Decimal::from_str(&literal)
            .unwrap_or_else(|e| panic!("rule {}: rate {literal} is not a decimal: {e}", rule.id));
        assert!(
            Exact::from_decimal(parsed) == *rate,
            "rule {}: {literal}",
            rule.id
        );
        r.insert(format!("level{}", i + 1), json!(literal));
    }
    Value::Object(r)
}

/// The JDM graph: input -> decision table (hit policy first, rows in priority order) ->
/// output.
fn jdm_graph(rs: &RuleSet) -> Value {
    let levels = rs.max_levels as usize;
    let mut inputs = Vec::new();
    for c in INPUT_COLUMNS {
        inputs.push(json!({"id": c, "name": c, "field": c}));
    }
    let mut outputs = vec![json!({"id": "ruleId", "name": "rule id", "field": "ruleId"})];
    for i in 1..=levels {
        let f = format!("level{i}");
        outputs.push(json!({"id": f, "name": f, "field": f}));
    }
    let rules: Vec<Value> = rs.rules.iter().map(|r| row(r, levels)).collect();
    json!({
        "nodes": [
            {"id": "request", "name": "request", "type": "inputNode", "content": {}},
            {
                "id": "commission-rules",
                "name": "commission rules",
                "type": "decisionTableNode",
                "content": {
                    "hitPolicy": "first",
                    "inputs": inputs,
                    "outputs": outputs,
                    "rules": rules,
                }
            },
            {"id": "response", "name": "response", "type": "outputNode", "content": {}}
        ],
        "edges": [
            {"id": "e1", "sourceId": "request", "targetId": "commission-rules"},
            {"id": "e2", "sourceId": "commission-rules", "targetId": "response"}
        ]
    })
}

/// The facts of one line, as the engine's matcher reads them (`engine::matches`).
fn line_facts(order: &Order) -> Vec<Value> {
    order
        .lines
        .iter()
        .map(|l| {
            json!({
                "category": l.category,
                "sku": l.sku,
                "merchant": order.merchant,
                "channel": order.channel_id(),
                "tags": order.tags,
            })
        })
        .collect()
}

/// The rule the engine applied to each order line, from the commission explanations.
fn engine_rule_per_line(order: &Order, r: &SplitResult) -> Vec<String> {
    order
        .lines
        .iter()
        .map(|line| {
            let split = r
                .lines
                .iter()
                .find(|s| s.line_id == line.id)
                .unwrap_or_else(|| panic!("line {} is in the result", line.id));
            let mut ids: Vec<&str> = split
                .shares
                .iter()
                .flat_map(|s| &s.explanations)
                .filter(|e| e.kind == ShareKind::Commission && e.level >= 1)
                .map(|e| e.rule_id.as_str())
                .collect();
            ids.dedup();
            assert_eq!(ids.len(), 1, "line {}: one rule, got {ids:?}", line.id);
            ids[0].to_owned()
        })
        .collect()
}

/// Asserts that ZEN selected `want` for a line: same rule id, same exact level rates.
fn assert_same_rule(out: &Variable, want: &Rule, line: &str) {
    let id = out
        .dot("ruleId")
        .and_then(|v| v.as_str().map(str::to_owned));
    assert_eq!(id.as_deref(), Some(want.id.as_str()), "line {line}: {out}");
    for (i, rate) in rates(want).iter().enumerate() {
        let got = out
            .dot(&format!("level{}", i + 1))
            .and_then(|v| v.as_number())
            .unwrap_or_else(|| panic!("line {line}: level{} is a number in {out}", i + 1));
        assert!(
            Exact::from_decimal(got) == *rate,
            "line {line}: level{} is {got}, the rule says {rate}",
            i + 1
        );
    }
}

/// Orders that differ from the benchmark order in one or two facts, so that the higher-
/// priority rules match: the agreement check then covers more than the default row.
fn variant_orders() -> Vec<(&'static str, RawOrder)> {
    let base = raw_order();
    let with = |f: &dyn Fn(&mut RawOrder)| {
        let mut o = base.clone();
        f(&mut o);
        o
    };
    vec![
        (
            "category luxury",
            with(&|o| o.lines[0].category = "luxury".into()),
        ),
        (
            "sku SKU-9002",
            with(&|o| o.lines[1].sku = "SKU-9002".into()),
        ),
        (
            "merchant M-other-1",
            with(&|o| o.merchant = "M-other-1".into()),
        ),
        (
            "tag black-friday",
            with(&|o| o.tags.push("black-friday".into())),
        ),
        (
            "merchant M-other-2",
            with(&|o| o.merchant = "M-other-2".into()),
        ),
        (
            "sku SKU-1001 + tag clearance",
            with(&|o| {
                o.lines[0].sku = "SKU-1001".into();
                o.tags.push("clearance".into());
            }),
        ),
        (
            "category grocery",
            with(&|o| o.lines[1].category = "grocery".into()),
        ),
        (
            "tag members-only",
            with(&|o| o.tags.push("members-only".into())),
        ),
        ("channel wechat", with(&|o| o.channel = "wechat".into())),
        (
            "merchant M-other-5",
            with(&|o| o.merchant = "M-other-5".into()),
        ),
        (
            "category outdoor",
            with(&|o| o.lines[0].category = "outdoor".into()),
        ),
        (
            "sku SKU-7777",
            with(&|o| o.lines[1].sku = "SKU-7777".into()),
        ),
    ]
}

/// Asserts that ZEN and the engine select the same rule for every line of `raw`; returns
/// the engine's rule ids.
fn assert_agree(
    rt: &tokio::runtime::Runtime,
    d: &Decision,
    rs: &RuleSet,
    raw: &RawOrder,
    what: &str,
) -> Vec<String> {
    let order = Order::parse(raw, "order").unwrap_or_else(|e| panic!("{what}: {e:?}"));
    let snap = chain_snapshot(5);
    let r = engine::compute(&order, rs, &inputs(&snap)).expect("the engine splits it");
    let want_ids = engine_rule_per_line(&order, &r);
    for (f, (line, want_id)) in line_facts(&order)
        .iter()
        .zip(order.lines.iter().zip(&want_ids))
    {
        let resp = rt
            .block_on(d.evaluate(Variable::from(f)))
            .unwrap_or_else(|e| panic!("{what}: ZEN evaluates line {}: {e:?}", line.id));
        let want = rs
            .rules
            .iter()
            .find(|r| &r.id == want_id)
            .expect("the engine's rule is in the rule set");
        assert_same_rule(&resp.result, want, &format!("{} ({what})", line.id));
    }
    want_ids
}

fn bench_zen(c: &mut Criterion) {
    let order = Order::parse(&raw_order(), "order").expect("the benchmark order is valid");
    let rs = compile(&five_level_document());
    assert_eq!(rs.rules.len(), 20);
    assert_eq!(rs.max_levels, 5);
    let snap = chain_snapshot(5);
    let inp = inputs(&snap);
    let result = engine::compute(&order, &rs, &inp).expect("5-level split");
    result
        .check()
        .expect("5-level split satisfies the money invariants");
    let engine_rules = engine_rule_per_line(&order, &result);
    assert_eq!(engine_rules, ["default-5", "default-5"]);

    // The graph and the decisions are built once, outside the measured loop.
    let graph = jdm_graph(&rs);
    let content: DecisionContent =
        serde_json::from_value(graph).expect("the JDM graph deserializes");
    let zen = DecisionEngine::default();
    let decision: Decision = zen
        .create_decision(Arc::new(content))
        .expect("a graph, not a policy");
    decision.validate().expect("the JDM graph is valid");
    let mut compiled = decision.clone();
    compiled.compile();

    let facts = line_facts(&order);
    let contexts: Vec<Variable> = facts.iter().map(Variable::from).collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");

    // Assert once, outside the loop, that ZEN selects what the engine selected, per line,
    // and that evaluating leaves the shared input contexts as they were.
    for d in [&decision, &compiled] {
        for _ in 0..3 {
            for ((ctx, line), want_id) in contexts.iter().zip(&order.lines).zip(&engine_rules) {
                let resp = rt
                    .block_on(d.evaluate(ctx.clone()))
                    .unwrap_or_else(|e| panic!("ZEN evaluates line {}: {e:?}", line.id));
                let want = rs
                    .rules
                    .iter()
                    .find(|r| &r.id == want_id)
                    .expect("the engine's rule is in the rule set");
                assert_same_rule(&resp.result, want, &line.id);
            }
        }
    }
    for (ctx, f) in contexts.iter().zip(&facts) {
        assert_eq!(&ctx.to_value(), f, "ZEN left the input context unchanged");
    }
    let mut hit = std::collections::BTreeSet::new();
    for d in [&decision, &compiled] {
        for (what, raw) in variant_orders() {
            hit.extend(assert_agree(&rt, d, &rs, &raw, what));
        }
    }
    assert!(
        hit.len() >= 12,
        "the variants reach {} rules: {hit:?}",
        hit.len()
    );

    let mut g = c.benchmark_group(GROUP);
    g.measurement_time(Duration::from_secs(5));
    g.sample_size(50);
    g.bench_function(ENGINE_BENCH, |b| {
        b.iter(|| engine::compute(black_box(&order), black_box(&rs), black_box(&inp)))
    });
    for (name, d) in [(ZEN_BENCH, &decision), (ZEN_COMPILED_BENCH, &compiled)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(async {
                    for ctx in &contexts {
                        black_box(d.evaluate(black_box(ctx.clone())).await.expect("evaluates"));
                    }
                })
            })
        });
    }
    g.bench_function(BLOCK_ON_BENCH, |b| b.iter(|| rt.block_on(async {})));
    g.finish();
}

/// Where criterion writes, found as criterion 0.5 finds it: `$CRITERION_HOME`, else
/// `$CARGO_TARGET_DIR/criterion`, else the target directory from `cargo metadata`, else
/// `target/criterion`.
fn criterion_home() -> PathBuf {
    if let Some(home) = env::var_os("CRITERION_HOME") {
        return home.into();
    }
    if let Some(target) = env::var_os("CARGO_TARGET_DIR") {
        return Path::new(&target).join("criterion");
    }
    let from_metadata = env::var_os("CARGO").and_then(|cargo| {
        let out = Command::new(cargo)
            .args(["metadata", "--format-version", "1", "--no-deps"])
            .output()
            .ok()?;
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        Some(PathBuf::from(v["target_directory"].as_str()?))
    });
    from_metadata
        .map(|t| t.join("criterion"))
        .unwrap_or_else(|| PathBuf::from("target/criterion"))
}

/// The median (ns) of a benchmark, if criterion wrote it after `since` (in this run).
fn median_ns(home: &Path, bench: &str, since: SystemTime) -> Option<f64> {
    let path = home.join(GROUP).join(bench).join("new/estimates.json");
    let fresh = fs::metadata(&path).ok()?.modified().ok()? >= since;
    let v: Value = serde_json::from_str(&fs::read_to_string(&path).ok()?).ok()?;
    fresh.then(|| v["median"]["point_estimate"].as_f64())?
}

fn print_ratios(since: SystemTime) {
    let home = criterion_home();
    let m = |b| median_ns(&home, b, since);
    let (Some(engine), Some(zen), Some(compiled), Some(block_on)) = (
        m(ENGINE_BENCH),
        m(ZEN_BENCH),
        m(ZEN_COMPILED_BENCH),
        m(BLOCK_ON_BENCH),
    ) else {
        eprintln!(
            "ratios: not all 4 benchmarks of group `{GROUP}` were measured in this run \
             (estimates under {}), so no ratio is printed",
            home.display()
        );
        return;
    };
    println!(
        "medians (ns): {ENGINE_BENCH} {engine:.1}, {ZEN_BENCH} {zen:.1}, \
              {ZEN_COMPILED_BENCH} {compiled:.1}, {BLOCK_ON_BENCH} {block_on:.1}"
    );
    println!("zen/engine ratio (medians): {:.2}", zen / engine);
    println!(
        "zen compiled/engine ratio (medians): {:.2}",
        compiled / engine
    );
    println!(
        "without the block_on baseline: zen/engine {:.2}, zen compiled/engine {:.2}",
        (zen - block_on) / engine,
        (compiled - block_on) / engine
    );
}

fn main() {
    let start = SystemTime::now();
    let mut c = Criterion::default().configure_from_args();
    bench_zen(&mut c);
    c.final_summary();
    print_ratios(start);
}
