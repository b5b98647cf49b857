//! The conformance runner: `prorata vectors PATH...` (shared/spec/vectors/README.md).
//!
//! For every file it starts the real server in-process on 127.0.0.1 with a fresh store
//! (a new SQLite file, or a new PostgreSQL schema with `--database-url`), drives it through
//! the generated gRPC clients over loopback, and compares each step with its expectation.
//! It reads any file in the vector format, including ones it has never seen.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context as _};
use rust_decimal::Decimal;
use serde_yaml_ng::{Mapping, Value};
use tonic::transport::Channel;
use tonic::Code;

use crate::app::App;
use crate::cache::CacheSettings;
use crate::grpc::pb;
use crate::grpc::pb::commission_service_client::CommissionServiceClient;
use crate::grpc::pb::network_service_client::NetworkServiceClient;
use crate::grpc::pb::rule_service_client::RuleServiceClient;
use crate::grpc::pb::settlement_service_client::SettlementServiceClient;
use crate::startup::{self, ServerLimits};
use crate::store::postgres::PgStore;
use crate::store::sqlite::SqliteStore;
use crate::store::Store;

/// Counts of one run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Files that passed.
    pub passed: usize,
    /// Files that failed.
    pub failed: usize,
}

/// The gRPC status name ("INVALID_ARGUMENT").
pub fn code_name(c: Code) -> &'static str {
    match c {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Expands directories (recursively, sorted) into `.yaml`/`.yml` files.
pub fn collect_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("reading {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            entries.sort();
            let (dirs, files): (Vec<PathBuf>, Vec<PathBuf>) =
                entries.into_iter().partition(|e| e.is_dir());
            out.extend(files.into_iter().filter(|f| {
                matches!(f.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
            }));
            out.extend(collect_files(&dirs)?);
        } else if p.exists() {
            out.push(p.clone());
        } else {
            bail!("{} does not exist", p.display());
        }
    }
    Ok(out)
}

/// Runs every file; prints `PASS name` / `FAIL name: ...` per file and the summary line.
pub async fn run(paths: &[PathBuf], database_url: Option<&str>) -> anyhow::Result<Summary> {
    let files = collect_files(paths)?;
    let mut summary = Summary::default();
    for (i, f) in files.iter().enumerate() {
        match run_file(f, database_url, i).await {
            Ok(name) => {
                summary.passed += 1;
                println!("PASS {name}");
            }
            Err((name, why)) => {
                summary.failed += 1;
                println!("FAIL {name}: {why}");
            }
        }
    }
    println!("{} passed, {} failed", summary.passed, summary.failed);
    Ok(summary)
}

struct Clients {
    commission: CommissionServiceClient<Channel>,
    rules: RuleServiceClient<Channel>,
    network: NetworkServiceClient<Channel>,
    settlement: SettlementServiceClient<Channel>,
}

/// Runs one file against a fresh server; `Err((name, reason))` on failure.
async fn run_file(
    path: &Path,
    database_url: Option<&str>,
    seq: usize,
) -> Result<String, (String, String)> {
    let fallback = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("?")
        .to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| (fallback.clone(), format!("cannot read: {e}")))?;
    let doc: Value =
        serde_yaml_ng::from_str(&text).map_err(|e| (fallback.clone(), format!("not YAML: {e}")))?;
    let name = doc
        .get("name")
        .and_then(Value::as_str)
        .map_or(fallback, str::to_string);
    let tmp = tempfile::tempdir().map_err(|e| (name.clone(), format!("setup: {e}")))?;
    let schema = format!("prorata_vec_{}_{seq}", std::process::id());
    let store: Arc<dyn Store> = match database_url {
        None => Arc::new(
            SqliteStore::open(&tmp.path().join("vectors.db"))
                .await
                .map_err(|e| (name.clone(), format!("setup: {e}")))?,
        ),
        Some(url) => Arc::new(
            PgStore::connect(url, 8, Some(&schema))
                .await
                .map_err(|e| (name.clone(), format!("setup: {e}")))?,
        ),
    };
    let outcome = serve_and_run(&doc, store).await;
    if let Some(url) = database_url {
        if let Err(e) = PgStore::drop_schema(url, &schema).await {
            tracing::warn!(error = %e, schema, "could not drop the vector schema");
        }
    }
    outcome.map(|()| name.clone()).map_err(|e| (name, e))
}

async fn serve_and_run(doc: &Value, store: Arc<dyn Store>) -> Result<(), String> {
    let app = App::new(store, &CacheSettings::default())
        .await
        .map_err(|e| format!("setup: {e}"))?;
    let (listener, addr) = startup::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("setup: {e}"))?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(startup::run(
        listener,
        app,
        ServerLimits::default(),
        async {
            let _ = stopped.await;
        },
    ));
    let result = async {
        let channel = Channel::from_shared(format!("http://{addr}"))
            .map_err(|e| format!("setup: {e}"))?
            .connect()
            .await
            .map_err(|e| format!("setup: connecting to {addr}: {e}"))?;
        let mut c = Clients {
            commission: CommissionServiceClient::new(channel.clone()),
            rules: RuleServiceClient::new(channel.clone()),
            network: NetworkServiceClient::new(channel.clone()),
            settlement: SettlementServiceClient::new(channel),
        };
        setup(doc, &mut c)
            .await
            .map_err(|e| format!("setup: {e:#}"))?;
        let steps = doc
            .get("steps")
            .and_then(Value::as_sequence)
            .cloned()
            .unwrap_or_default();
        for (i, step) in steps.iter().enumerate() {
            run_step(step, &mut c)
                .await
                .map_err(|e| format!("step {}: {e:#}", i + 1))?;
        }
        Ok(())
    }
    .await;
    let _ = stop.send(());
    let _ = server.await;
    result
}

async fn setup(doc: &Value, c: &mut Clients) -> anyhow::Result<()> {
    if let Some(net) = doc.get("network") {
        for p in net
            .get("promoters")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            c.network
                .upsert_promoter(upsert_request(p)?)
                .await
                .map_err(|s| anyhow!("promoter {p:?}: {s}"))?;
        }
        for b in net
            .get("customers")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            let req = pb::BindCustomerRequest {
                customer: text(b.get("id")),
                promoter: text(b.get("promoter")),
            };
            c.network
                .bind_customer(req)
                .await
                .map_err(|s| anyhow!("customer {b:?}: {s}"))?;
        }
    }
    let mut docs: Vec<&Value> = Vec::new();
    if let Some(rs) = doc.get("ruleset") {
        docs.push(rs);
    }
    docs.extend(
        doc.get("rulesets")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten(),
    );
    for rs in docs {
        let document = serde_yaml_ng::to_string(rs)?;
        c.rules
            .publish_rule_set(pb::PublishRuleSetRequest { document })
            .await
            .map_err(|s| anyhow!("publishing a rule set: {s}"))?;
    }
    Ok(())
}

/// A scalar as text ("" when absent).
fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

fn money(v: Option<&Value>) -> Option<pb::Money> {
    v.filter(|v| !v.is_null()).map(|v| pb::Money {
        amount: Some(pb::money::Amount::Decimal(text(Some(v)))),
    })
}

fn timestamp(v: Option<&Value>) -> Option<prost_types::Timestamp> {
    let s = text(v);
    chrono::DateTime::parse_from_rfc3339(s.trim())
        .ok()
        .map(|t| prost_types::Timestamp {
            seconds: t.timestamp(),
            nanos: t.timestamp_subsec_nanos() as i32,
        })
}

fn int(v: Option<&Value>) -> i64 {
    match v {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(i64::MIN),
        Some(Value::String(s)) => s.trim().parse().unwrap_or(i64::MIN),
        _ => 0,
    }
}

/// A vector's order (YAML) as the proto order the runner sends.
pub fn order(v: &Value) -> pb::Order {
    let seq = |k: &str| {
        v.get(k)
            .and_then(Value::as_sequence)
            .cloned()
            .unwrap_or_default()
    };
    pb::Order {
        id: text(v.get("id")),
        merchant: text(v.get("merchant")),
        buyer: text(v.get("buyer")),
        paid_at: timestamp(v.get("paid_at")),
        currency: text(v.get("currency")),
        channel: text(v.get("channel")),
        tags: seq("tags").iter().map(|t| text(Some(t))).collect(),
        referrals: seq("referrals")
            .iter()
            .map(|r| pb::Referral {
                promoter: text(r.get("promoter")),
                at: timestamp(r.get("at")),
            })
            .collect(),
        shipping: money(v.get("shipping")),
        lines: seq("lines")
            .iter()
            .map(|l| pb::OrderLine {
                id: text(l.get("id")),
                sku: text(l.get("sku")),
                category: text(l.get("category")),
                quantity: int(l.get("quantity")),
                unit_price: money(l.get("unit_price")),
                discount: money(l.get("discount")),
                coupon: l.get("coupon").map(|c| pb::Coupon {
                    amount: money(c.get("amount")),
                    funded_by: match text(c.get("funded_by")).as_str() {
                        "platform" => pb::Funder::Platform as i32,
                        "merchant" => pb::Funder::Merchant as i32,
                        _ => pb::Funder::Unspecified as i32,
                    },
                }),
                unit_cost: money(l.get("unit_cost")),
                uses: u32::try_from(int(l.get("uses"))).unwrap_or(u32::MAX),
            })
            .collect(),
    }
}

fn upsert_request(p: &Value) -> anyhow::Result<pb::UpsertPromoterRequest> {
    let opt = |k: &str| {
        p.get(k).map(|v| {
            if v.is_null() {
                String::new()
            } else {
                text(Some(v))
            }
        })
    };
    let status = match opt("status").as_deref() {
        None => pb::PromoterStatus::Unspecified,
        Some("active") => pb::PromoterStatus::Active,
        Some("frozen") => pb::PromoterStatus::Frozen,
        Some("closed") => pb::PromoterStatus::Closed,
        Some(other) => bail!("unknown promoter status {other:?}"),
    };
    Ok(pb::UpsertPromoterRequest {
        id: text(p.get("id")),
        parent: opt("parent"),
        grade: opt("grade"),
        status: status as i32,
    })
}

/// What a step produced: account totals (minor units + exponent), or plain success.
enum Got {
    Accounts(Vec<pb::AccountAmount>, u32),
    Ok,
}

async fn run_step(step: &Value, c: &mut Clients) -> anyhow::Result<()> {
    let map: &Mapping = step
        .as_mapping()
        .ok_or_else(|| anyhow!("a step must be a mapping"))?;
    let expect = step
        .get("expect")
        .ok_or_else(|| anyhow!("the step has no expect"))?;
    let (action, arg) = map
        .iter()
        .find(|(k, _)| k.as_str() != Some("expect"))
        .ok_or_else(|| anyhow!("the step has no action"))?;
    let action = action.as_str().unwrap_or_default();
    let got: Result<Got, tonic::Status> = match action {
        "pay" => c
            .commission
            .compute(pb::ComputeRequest {
                order: Some(order(arg)),
            })
            .await
            .map(|r| {
                r.into_inner()
                    .split
                    .map_or(Got::Ok, |s| Got::Accounts(s.totals, s.currency_exponent))
            }),
        "refund" => {
            let mut lines = Vec::new();
            if let Some(m) = arg.get("lines").and_then(Value::as_mapping) {
                for (k, v) in m {
                    let (amount, uses) = match v.get("uses") {
                        Some(u) => (None, u32::try_from(int(Some(u))).unwrap_or(u32::MAX)),
                        None => (money(Some(v)), 0),
                    };
                    lines.push(pb::RefundLine {
                        line_id: text(Some(k)),
                        amount,
                        uses,
                    });
                }
            }
            let req = pb::RefundRequest {
                order_id: text(arg.get("order")),
                refund_id: text(arg.get("refund")),
                lines,
                full: arg.get("full").and_then(Value::as_bool).unwrap_or(false),
            };
            c.settlement.refund(req).await.map(|r| {
                r.into_inner()
                    .reversal
                    .map_or(Got::Ok, |m| Got::Accounts(m.totals, m.currency_exponent))
            })
        }
        "redeem" => {
            let req = pb::RedeemRequest {
                order_id: text(arg.get("order")),
                line_id: text(arg.get("line")),
                redemption_id: text(arg.get("redemption")),
                uses: u32::try_from(int(arg.get("uses"))).unwrap_or(u32::MAX),
            };
            c.settlement.redeem(req).await.map(|r| {
                r.into_inner()
                    .redemption
                    .map_or(Got::Ok, |m| Got::Accounts(m.totals, m.currency_exponent))
            })
        }
        "promoter" => c
            .network
            .upsert_promoter(upsert_request(arg)?)
            .await
            .map(|_| Got::Ok),
        "bind" => c
            .network
            .bind_customer(pb::BindCustomerRequest {
                customer: text(arg.get("customer")),
                promoter: text(arg.get("promoter")),
            })
            .await
            .map(|_| Got::Ok),
        "publish" => c
            .rules
            .publish_rule_set(pb::PublishRuleSetRequest {
                document: serde_yaml_ng::to_string(arg)?,
            })
            .await
            .map(|_| Got::Ok),
        other => bail!("unknown step kind {other:?}"),
    };
    compare(action, expect, got)
}

fn compare(action: &str, expect: &Value, got: Result<Got, tonic::Status>) -> anyhow::Result<()> {
    if let Some(code) = expect.get("error") {
        let want = text(Some(code));
        return match got {
            Err(s) if code_name(s.code()) == want => Ok(()),
            Err(s) => bail!(
                "{action}: expected {want}, got {} ({})",
                code_name(s.code()),
                s.message()
            ),
            Ok(_) => bail!("{action}: expected {want}, got OK"),
        };
    }
    let got = got.map_err(|s| {
        anyhow!(
            "{action}: expected success, got {} ({})",
            code_name(s.code()),
            s.message()
        )
    })?;
    let Some(want) = expect.get("accounts") else {
        return Ok(()); // {ok: true}
    };
    let Got::Accounts(totals, exponent) = got else {
        bail!("{action}: expected accounts, got none")
    };
    let got_map: BTreeMap<String, i64> = totals
        .iter()
        .filter(|t| t.amount_minor != 0)
        .map(|t| (t.account.clone(), t.amount_minor))
        .collect();
    let mut want_map = BTreeMap::new();
    for (k, v) in want.as_mapping().into_iter().flatten() {
        let amount = to_minor(&text(Some(v)), exponent)
            .with_context(|| format!("expected amount of {}", text(Some(k))))?;
        if amount != 0 {
            want_map.insert(text(Some(k)), amount);
        }
    }
    if got_map != want_map {
        let show = |m: &BTreeMap<String, i64>| {
            let parts: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{k}={}", Decimal::new(*v, exponent)))
                .collect();
            format!("{{{}}}", parts.join(", "))
        };
        bail!(
            "{action}: expected {}, got {}",
            show(&want_map),
            show(&got_map)
        );
    }
    Ok(())
}

fn to_minor(s: &str, exponent: u32) -> anyhow::Result<i64> {
    let d = Decimal::from_str(s.trim()).map_err(|e| anyhow!("{s:?}: {e}"))?;
    let m = d * Decimal::from(10i64.pow(exponent));
    if !m.fract().is_zero() {
        bail!("{s:?} has more digits than the currency");
    }
    i64::try_from(m).map_err(|e| anyhow!("{s:?}: {e}"))
}
