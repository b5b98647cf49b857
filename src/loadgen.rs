//! `prorata bench`: a gRPC load generator for a running server.
//!
//! Scenarios:
//! - `compute`: `CommissionService/Compute` of new orders (unique ids under a run-specific
//!   prefix); `--refund-ratio` of the orders computed are followed, by the same task, by a
//!   `SettlementService/Refund` of a random partial amount of one of their lines.
//! - `replay`: first stores `--replay-orders` orders (not measured), then sends random ones
//!   of them again: the idempotent replay path (the stored split is read back and checked).
//! - `empty`: `grpc.health.v1.Health/Check`, the cheapest RPC the server has: the ceiling of
//!   the gRPC stack (HTTP/2, tower layers, protobuf) on this machine.
//!
//! Modes:
//! - closed loop: `--concurrency` workers; each sends its next call when the previous
//!   one returned. Latency is measured from the send.
//! - open loop: operations are scheduled at `--rate` per second whatever the completions;
//!   latency is measured from the *scheduled* send time, so a stalled server shows up as
//!   latency instead of silently lowering the send rate (coordinated omission). At most
//!   [`MAX_IN_FLIGHT_OPEN`] operations are in flight; beyond that an operation is not sent
//!   and counted as "dropped (client saturated)". A refund that follows a compute is part
//!   of the same scheduled operation and is timed from its own send.
//!
//! Calls are spread round-robin over `--connections` HTTP/2 channels. The first
//! `--warmup` seconds are not recorded; then `--duration` seconds are. Latencies of
//! successful calls go into HDR histograms (microseconds, 3 significant digits); failed
//! calls are counted by gRPC status code.
//!
//! `--setup` first publishes [`SETUP_RULESET`] and imports the benchmark network with
//! `NetworkService/ImportNetwork`: [`SETUP_CHAINS`] chains of [`CHAIN_DEPTH`] promoters
//! (`bench-p-CCC-D`, D = 1 is the root) and [`CUSTOMERS_PER_PROMOTER`] customers bound to
//! each promoter (`bench-c-CCC-D-J`), i.e. 1,000 promoters and 5,000 customers. A
//! customer bound at depth D has a D-promoter upline, so an order of that buyer pays D
//! levels. Network ids are fixed, so `--setup` can be repeated (upserts); each repetition
//! publishes one more rule-set version with the same content.
//!
//! Orders are generated from the seed and the order's sequence number only (a small
//! xorshift PRNG), so a run's order mix does not depend on scheduling: 1-5 lines, 1-5
//! levels (uniform), 50 merchants, three channels, CNY amounts in minor units, some line
//! discounts and tags.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use hdrhistogram::Histogram;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::grpc::pb;
use crate::grpc::pb::commission_service_client::CommissionServiceClient;
use crate::grpc::pb::network_service_client::NetworkServiceClient;
use crate::grpc::pb::rule_service_client::RuleServiceClient;
use crate::grpc::pb::settlement_service_client::SettlementServiceClient;
use crate::vectors::code_name;

/// Open loop: operations in flight beyond this are not sent (counted as dropped), so a
/// stalled server cannot make the client grow without bound.
pub const MAX_IN_FLIGHT_OPEN: usize = 10_000;
/// Client-side deadline of one call: a hung call becomes DEADLINE_EXCEEDED, not a hang.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the end of a run waits for calls still in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest latency the histograms hold (1 hour, in microseconds); larger values saturate.
const HIST_MAX_US: u64 = 3_600_000_000;
/// Stats shards (mutexes) that concurrent tasks spread over.
const STAT_SHARDS: usize = 16;

/// Promoter chains the setup creates.
pub const SETUP_CHAINS: usize = 200;
/// Depth of each chain (= the most levels an order can pay).
pub const CHAIN_DEPTH: usize = 5;
/// Customers bound to each promoter.
pub const CUSTOMERS_PER_PROMOTER: usize = 5;
/// Merchants the orders are spread over.
const MERCHANTS: u64 = 50;
/// Largest number of lines in a generated order.
pub const MAX_LINES: usize = 5;

/// The rule set `--setup` publishes: 5 levels (a compliance warning, not an error), a
/// payment fee per channel, a platform take with one partner, a cap, and a category rule
/// ahead of the default schedule.
pub const SETUP_RULESET: &str = r#"timezone: Asia/Shanghai
currency: CNY
hold_days: 7
max_levels: 5
payment_fee:
  default: "0.006"
  by_channel: {alipay: "0.006", wechat: "0.006", card: "0.01"}
platform:
  rate: "0.05"
  partners:
    - {id: bench-partner, share: "0.2"}
cap: "0.3"
rules:
  - id: beauty
    priority: 10
    when: {category: [beauty]}
    levels: ["0.12", "0.06", "0.03", "0.02", "0.01"]
  - id: default
    levels: ["0.10", "0.05", "0.03", "0.02", "0.01"]
"#;

const CATEGORIES: [&str; 5] = ["beauty", "food", "apparel", "home", "electronics"];
/// 2026-11-01T00:00:00Z: generated orders are paid during November 2026.
const PAID_AT_BASE: i64 = 1_793_491_200;

/// Closed or open loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Send at `--rate` operations per second whatever the completions.
    Open,
    /// `--concurrency` workers, each sending its next call when the previous returned.
    Closed,
}

/// What is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Compute of new orders (plus refunds, see `--refund-ratio`).
    Compute,
    /// Compute of orders already stored (the idempotent replay).
    Replay,
    /// grpc.health.v1.Health/Check: the gRPC ceiling.
    Empty,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Open => "open",
            Mode::Closed => "closed",
        }
    }
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Compute => "compute",
            Scenario::Replay => "replay",
            Scenario::Empty => "empty",
        }
    }
}

/// Options of `prorata bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Server address.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub addr: String,
    /// open: a fixed arrival rate (--rate); closed: a fixed number in flight (--concurrency).
    #[arg(long, value_enum, default_value_t = Mode::Closed)]
    pub mode: Mode,
    /// Open loop: operations scheduled per second.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Closed loop: calls in flight (workers).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// HTTP/2 connections the calls are spread over (round-robin).
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Recorded seconds (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before recording starts.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// compute | replay | empty.
    #[arg(long, value_enum, default_value_t = Scenario::Compute)]
    pub scenario: Scenario,
    /// Replay: orders stored first, then sent again at random.
    #[arg(long, default_value_t = 1000)]
    pub replay_orders: usize,
    /// Compute: fraction of computed orders followed by a partial refund of one line.
    #[arg(long, default_value_t = 0.10)]
    pub refund_ratio: f64,
    /// Publish the benchmark rule set and import the benchmark network first.
    #[arg(long)]
    pub setup: bool,
    /// Seed of the order mix.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Also write the summary as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// A small xorshift64* generator: deterministic, no dependencies, good enough for a mix.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator whose state is spread from `seed` (splitmix64); never the zero state.
    pub fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        XorShift(if z == 0 { 0x9E37_79B9_7F4A_7C15 } else { z })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n > 0`), by multiply-shift.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// A partial refund to send after the order is computed: one line, a per-mille of what
/// was paid for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefundPlan {
    /// Index of the line.
    pub line: usize,
    /// 100..=900: the share of the line's paid amount to refund.
    pub permille: u64,
}

/// One generated order.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedOrder {
    pub order: pb::Order,
    /// Promoter levels the buyer's binding gives (1..=5).
    pub levels: usize,
    pub refund: Option<RefundPlan>,
}

/// Deterministic orders: `order(n)` depends only on the seed, the prefix and `n`.
#[derive(Debug, Clone)]
pub struct OrderGen {
    pub seed: u64,
    /// Run-specific id prefix, so runs against one database never collide.
    pub prefix: String,
    pub refund_ratio: f64,
}

/// Promoter `bench-p-CCC-D` (depth 1 is the chain's root).
pub fn promoter_id(chain: usize, depth: usize) -> String {
    format!("bench-p-{chain:03}-{depth}")
}

/// Customer `bench-c-CCC-D-J`, bound to `promoter_id(chain, depth)`.
pub fn customer_id(chain: usize, depth: usize, j: usize) -> String {
    format!("bench-c-{chain:03}-{depth}-{j}")
}

fn minor(v: i64) -> Option<pb::Money> {
    Some(pb::Money {
        amount: Some(pb::money::Amount::Minor(v)),
    })
}

impl OrderGen {
    /// The `n`-th order of the run.
    pub fn order(&self, n: u64) -> GeneratedOrder {
        let mut rng = XorShift::new(self.seed ^ n.wrapping_mul(0xD1B5_4A32_D192_ED03));
        let levels = rng.range(1, CHAIN_DEPTH as u64) as usize;
        let chain = rng.below(SETUP_CHAINS as u64) as usize;
        let j = rng.below(CUSTOMERS_PER_PROMOTER as u64) as usize;
        let merchant = format!("bench-m-{:02}", rng.below(MERCHANTS));
        let channel = match rng.below(10) {
            0..=4 => "alipay",
            5..=8 => "wechat",
            _ => "card",
        };
        let paid_at = PAID_AT_BASE + rng.below(29 * 86_400) as i64;
        let tags = if rng.chance(0.3) {
            vec!["promo".to_string()]
        } else {
            Vec::new()
        };
        let n_lines = rng.range(1, MAX_LINES as u64) as usize;
        let lines = (0..n_lines)
            .map(|i| {
                let cat = rng.below(CATEGORIES.len() as u64) as usize;
                let quantity = rng.range(1, 3) as i64;
                // 5.00 .. 600.00 CNY, prices ending in 0 fen like real price lists.
                let unit_price = rng.range(50, 6_000) as i64 * 10;
                let discount = if rng.chance(0.2) {
                    minor(rng.range(1, (quantity * unit_price / 10) as u64) as i64)
                } else {
                    None
                };
                pb::OrderLine {
                    id: format!("L{}", i + 1),
                    sku: format!("SKU-{cat}{:03}", rng.below(200)),
                    category: CATEGORIES[cat].to_string(),
                    quantity,
                    unit_price: minor(unit_price),
                    discount,
                    ..Default::default()
                }
            })
            .collect();
        let refund = rng.chance(self.refund_ratio).then(|| RefundPlan {
            line: rng.below(n_lines as u64) as usize,
            permille: rng.range(100, 900),
        });
        GeneratedOrder {
            order: pb::Order {
                id: format!("{}-{n}", self.prefix),
                merchant,
                buyer: customer_id(chain, levels, j),
                paid_at: Some(prost_types::Timestamp {
                    seconds: paid_at,
                    nanos: 0,
                }),
                currency: "CNY".into(),
                channel: channel.into(),
                tags,
                referrals: Vec::new(),
                shipping: None,
                lines,
            },
            levels,
            refund,
        }
    }
}

/// The items of the setup import: every chain's promoters root first, then the bindings.
pub fn setup_network() -> Vec<pb::ImportNetworkRequest> {
    use pb::import_network_request::Item;
    let mut items = Vec::new();
    for c in 0..SETUP_CHAINS {
        for d in 1..=CHAIN_DEPTH {
            items.push(pb::ImportNetworkRequest {
                item: Some(Item::Promoter(pb::UpsertPromoterRequest {
                    id: promoter_id(c, d),
                    // "" makes (or keeps) the root a root.
                    parent: Some(if d == 1 {
                        String::new()
                    } else {
                        promoter_id(c, d - 1)
                    }),
                    grade: None,
                    status: pb::PromoterStatus::Active as i32,
                })),
            });
        }
    }
    for c in 0..SETUP_CHAINS {
        for d in 1..=CHAIN_DEPTH {
            for j in 0..CUSTOMERS_PER_PROMOTER {
                items.push(pb::ImportNetworkRequest {
                    item: Some(Item::Binding(pb::BindCustomerRequest {
                        customer: customer_id(c, d, j),
                        promoter: promoter_id(c, d),
                    })),
                });
            }
        }
    }
    items
}

/// What a call was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Compute = 0,
    Refund = 1,
    Replay = 2,
    Empty = 3,
}

const KINDS: [Kind; 4] = [Kind::Compute, Kind::Refund, Kind::Replay, Kind::Empty];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Compute => "compute",
            Kind::Refund => "refund",
            Kind::Replay => "replay",
            Kind::Empty => "empty",
        }
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).expect("valid histogram bounds")
}

/// Recorded results (one shard).
struct Stats {
    all: Histogram<u64>,
    by_kind: [Histogram<u64>; 4],
    ok: [u64; 4],
    failed: [u64; 4],
    /// Failures by status code name, with the first message seen.
    errors: BTreeMap<&'static str, (u64, String)>,
    /// Completion of the last recorded call.
    last_done: Option<Instant>,
}

impl Stats {
    fn new() -> Self {
        Stats {
            all: histogram(),
            by_kind: [histogram(), histogram(), histogram(), histogram()],
            ok: [0; 4],
            failed: [0; 4],
            errors: BTreeMap::new(),
            last_done: None,
        }
    }

    fn record(&mut self, kind: Kind, from: Instant, done: Instant, r: Result<(), tonic::Status>) {
        let k = kind as usize;
        match r {
            Ok(()) => {
                let us = done.saturating_duration_since(from).as_micros();
                let us = u64::try_from(us).unwrap_or(u64::MAX).max(1);
                self.all.saturating_record(us);
                self.by_kind[k].saturating_record(us);
                self.ok[k] += 1;
            }
            Err(s) => {
                self.failed[k] += 1;
                let e = self
                    .errors
                    .entry(code_name(s.code()))
                    .or_insert_with(|| (0, s.message().to_string()));
                e.0 += 1;
            }
        }
        self.last_done = Some(self.last_done.map_or(done, |t| t.max(done)));
    }

    fn merge(&mut self, o: &Stats) {
        self.all.add(&o.all).expect("same bounds");
        for k in 0..4 {
            self.by_kind[k].add(&o.by_kind[k]).expect("same bounds");
            self.ok[k] += o.ok[k];
            self.failed[k] += o.failed[k];
        }
        for (code, (n, msg)) in &o.errors {
            let e = self.errors.entry(code).or_insert_with(|| (0, msg.clone()));
            e.0 += n;
        }
        self.last_done = match (self.last_done, o.last_done) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
}

/// The clients of one HTTP/2 connection.
#[derive(Clone)]
struct Conn {
    commission: CommissionServiceClient<Channel>,
    settlement: SettlementServiceClient<Channel>,
    health: HealthClient<Channel>,
}

struct Ctx {
    scenario: Scenario,
    conns: Vec<Conn>,
    next_conn: AtomicUsize,
    gen: OrderGen,
    replays: Vec<pb::Order>,
    shards: Vec<Mutex<Stats>>,
}

impl Ctx {
    fn conn(&self) -> Conn {
        let i = self.next_conn.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        self.conns[i].clone()
    }

    fn record(&self, n: u64, kind: Kind, from: Instant, r: Result<(), tonic::Status>) {
        let done = Instant::now();
        let shard = &self.shards[(n % STAT_SHARDS as u64) as usize];
        shard
            .lock()
            .expect("stats lock")
            .record(kind, from, done, r);
    }

    /// Operation `n`, scheduled (open loop) or sent (closed loop) at `at`.
    async fn op(&self, n: u64, at: Instant, record: bool) {
        let c = self.conn();
        match self.scenario {
            Scenario::Empty => {
                let mut h = c.health;
                let r = h
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .map(|_| ());
                if record {
                    self.record(n, Kind::Empty, at, r);
                }
            }
            Scenario::Replay => {
                let mut rng = XorShift::new(self.gen.seed ^ n.wrapping_mul(0x9FB2_1C65_1E98_DF25));
                let order = self.replays[rng.below(self.replays.len() as u64) as usize].clone();
                let mut cm = c.commission;
                let r = cm
                    .compute(pb::ComputeRequest { order: Some(order) })
                    .await
                    .map(|_| ());
                if record {
                    self.record(n, Kind::Replay, at, r);
                }
            }
            Scenario::Compute => {
                let g = self.gen.order(n);
                let order_id = g.order.id.clone();
                let mut cm = c.commission;
                let r = cm
                    .compute(pb::ComputeRequest {
                        order: Some(g.order),
                    })
                    .await;
                let paid = match (&r, g.refund) {
                    (Ok(resp), Some(plan)) => {
                        let line_id = format!("L{}", plan.line + 1);
                        resp.get_ref()
                            .split
                            .as_ref()
                            .and_then(|s| s.lines.iter().find(|l| l.line_id == line_id))
                            .map(|l| (line_id, l.paid_minor, plan.permille))
                    }
                    _ => None,
                };
                if record {
                    self.record(n, Kind::Compute, at, r.map(|_| ()));
                }
                let Some((line_id, paid, permille)) = paid else {
                    return;
                };
                if paid < 2 {
                    return;
                }
                let amount = (paid * permille as i64 / 1000).clamp(1, paid - 1);
                let sent = Instant::now();
                let mut st = c.settlement;
                let r = st
                    .refund(pb::RefundRequest {
                        refund_id: format!("{order_id}-r1"),
                        order_id,
                        lines: vec![pb::RefundLine {
                            line_id,
                            amount: minor(amount),
                            uses: 0,
                        }],
                        full: false,
                    })
                    .await
                    .map(|_| ());
                if record {
                    self.record(n, Kind::Refund, sent, r);
                }
            }
        }
    }
}

/// The outcome of a run (the printed and JSON summaries hold more).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Successful calls in the measured window.
    pub ok: u64,
    /// Failed calls in the measured window.
    pub failed: u64,
    /// Successful calls per second over the measured window.
    pub throughput: f64,
}

async fn connect(addr: &str, n: usize) -> anyhow::Result<Vec<Channel>> {
    let ep = Endpoint::from_shared(addr.to_string())
        .with_context(|| format!("bad --addr {addr:?}"))?
        .timeout(CALL_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        // Each connect() opens its own HTTP/2 connection.
        out.push(
            ep.connect()
                .await
                .with_context(|| format!("connecting to {addr}"))?,
        );
    }
    Ok(out)
}

async fn setup(channel: Channel) -> anyhow::Result<()> {
    let t = Instant::now();
    let published = RuleServiceClient::new(channel.clone())
        .publish_rule_set(pb::PublishRuleSetRequest {
            document: SETUP_RULESET.to_string(),
        })
        .await
        .context("publishing the benchmark rule set")?
        .into_inner();
    let version = published.ruleset.map_or(0, |r| r.version);
    let items = setup_network();
    let imported = NetworkServiceClient::new(channel)
        .import_network(futures::stream::iter(items))
        .await
        .context("importing the benchmark network")?
        .into_inner();
    println!(
        "setup: rule set version {version} published; imported {} promoters and {} bindings in {:.2} s",
        imported.promoters,
        imported.bindings,
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Stores orders 0..count (concurrently), returning those stored.
async fn store_replay_orders(
    conns: &[Conn],
    gen: &OrderGen,
    count: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<pb::Order>> {
    let t = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..concurrency.max(1) {
        let (next, gen) = (next.clone(), gen.clone());
        let mut cm = conns[w % conns.len()].commission.clone();
        tasks.push(tokio::spawn(async move {
            let mut stored = Vec::new();
            let mut failures: BTreeMap<&'static str, (u64, String)> = BTreeMap::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count as u64 {
                    break;
                }
                let order = gen.order(n).order;
                match cm
                    .compute(pb::ComputeRequest {
                        order: Some(order.clone()),
                    })
                    .await
                {
                    Ok(_) => stored.push(order),
                    Err(s) => {
                        failures
                            .entry(code_name(s.code()))
                            .or_insert_with(|| (0, s.message().to_string()))
                            .0 += 1
                    }
                }
            }
            (stored, failures)
        }));
    }
    let mut out = Vec::with_capacity(count);
    for t in tasks {
        let (stored, failures) = t.await?;
        out.extend(stored);
        for (code, (n, msg)) in failures {
            eprintln!("replay setup: {n} × {code} (e.g. {msg})");
        }
    }
    if out.is_empty() {
        bail!("no order could be stored for the replay scenario (use --setup on a fresh server?)");
    }
    println!(
        "replay setup: stored {} of {count} orders in {:.2} s",
        out.len(),
        t.elapsed().as_secs_f64()
    );
    Ok(out)
}

fn check_args(a: &BenchArgs) -> anyhow::Result<()> {
    if a.connections == 0 {
        bail!("--connections must be at least 1");
    }
    if a.mode == Mode::Closed && a.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    if a.mode == Mode::Open && !(a.rate > 0.0 && a.rate.is_finite()) {
        bail!("--rate must be a positive number");
    }
    if !(a.duration > 0.0 && a.duration.is_finite()) {
        bail!("--duration must be a positive number of seconds");
    }
    if !(a.warmup >= 0.0 && a.warmup.is_finite()) {
        bail!("--warmup must be zero or a positive number of seconds");
    }
    if !(0.0..=1.0).contains(&a.refund_ratio) {
        bail!("--refund-ratio must be within [0, 1]");
    }
    if a.scenario == Scenario::Replay && a.replay_orders == 0 {
        bail!("--replay-orders must be at least 1");
    }
    Ok(())
}

/// Runs the benchmark, prints the summary (and writes the JSON one with `--json`).
pub async fn run(args: BenchArgs) -> anyhow::Result<Summary> {
    check_args(&args)?;
    let channels = connect(&args.addr, args.connections).await?;
    if args.setup {
        setup(channels[0].clone()).await?;
    }
    let conns: Vec<Conn> = channels
        .iter()
        .map(|ch| Conn {
            commission: CommissionServiceClient::new(ch.clone()),
            settlement: SettlementServiceClient::new(ch.clone()),
            health: HealthClient::new(ch.clone()),
        })
        .collect();
    let unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let gen = OrderGen {
        seed: args.seed,
        prefix: format!("bench-{unix_ms:x}-s{}", args.seed),
        refund_ratio: args.refund_ratio,
    };
    let replays = if args.scenario == Scenario::Replay {
        store_replay_orders(&conns, &gen, args.replay_orders, args.concurrency).await?
    } else {
        Vec::new()
    };
    let first_n = if args.scenario == Scenario::Replay {
        args.replay_orders as u64
    } else {
        0
    };
    let ctx = Arc::new(Ctx {
        scenario: args.scenario,
        conns,
        next_conn: AtomicUsize::new(0),
        gen,
        replays,
        shards: (0..STAT_SHARDS).map(|_| Mutex::new(Stats::new())).collect(),
    });

    let start = Instant::now();
    let window_start = start + Duration::from_secs_f64(args.warmup);
    let end = window_start + Duration::from_secs_f64(args.duration);
    let mut dropped = 0u64;
    let mut unfinished = 0u64;
    match args.mode {
        Mode::Closed => {
            let next = Arc::new(AtomicU64::new(first_n));
            let mut workers = Vec::with_capacity(args.concurrency);
            for _ in 0..args.concurrency {
                let (ctx, next) = (ctx.clone(), next.clone());
                workers.push(tokio::spawn(async move {
                    loop {
                        let sent = Instant::now();
                        if sent >= end {
                            break;
                        }
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        ctx.op(n, sent, sent >= window_start).await;
                    }
                }));
            }
            for w in workers {
                w.await?;
            }
        }
        Mode::Open => {
            let permits = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT_OPEN));
            let interval = 1.0 / args.rate;
            let mut i: u64 = 0;
            loop {
                let scheduled = start + Duration::from_secs_f64(i as f64 * interval);
                if scheduled >= end {
                    break;
                }
                if scheduled > Instant::now() {
                    tokio::time::sleep_until(scheduled.into()).await;
                }
                let record = scheduled >= window_start;
                let n = first_n + i;
                i += 1;
                match permits.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let ctx = ctx.clone();
                        tokio::spawn(async move {
                            ctx.op(n, scheduled, record).await;
                            drop(permit);
                        });
                    }
                    Err(_) => {
                        if record {
                            dropped += 1;
                        }
                    }
                }
            }
            let all = MAX_IN_FLIGHT_OPEN as u32;
            if tokio::time::timeout(DRAIN_TIMEOUT, permits.acquire_many(all))
                .await
                .is_err()
            {
                unfinished = (MAX_IN_FLIGHT_OPEN - permits.available_permits()) as u64;
            }
        }
    }

    let mut stats = Stats::new();
    for s in &ctx.shards {
        stats.merge(&s.lock().expect("stats lock"));
    }
    let measured = stats
        .last_done
        .map_or(0.0, |t| {
            t.saturating_duration_since(window_start).as_secs_f64()
        })
        .max(args.duration);
    let ok: u64 = stats.ok.iter().sum();
    let failed: u64 = stats.failed.iter().sum();
    let summary = Summary {
        ok,
        failed,
        throughput: ok as f64 / measured,
    };
    print_summary(
        &args,
        &ctx.gen.prefix,
        &stats,
        measured,
        dropped,
        unfinished,
        summary,
    );
    if let Some(path) = &args.json {
        let json = json_summary(
            &args,
            &ctx.gen.prefix,
            &stats,
            measured,
            dropped,
            unfinished,
            summary,
        );
        std::fs::write(path, serde_json::to_string_pretty(&json)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(summary)
}

fn quantiles(h: &Histogram<u64>) -> serde_json::Value {
    serde_json::json!({
        "count": h.len(),
        "mean": (h.mean() * 10.0).round() / 10.0,
        "p50": h.value_at_quantile(0.50),
        "p90": h.value_at_quantile(0.90),
        "p99": h.value_at_quantile(0.99),
        "p99_9": h.value_at_quantile(0.999),
        "max": h.max(),
    })
}

fn print_summary(
    a: &BenchArgs,
    prefix: &str,
    s: &Stats,
    measured: f64,
    dropped: u64,
    unfinished: u64,
    sum: Summary,
) {
    let load = match a.mode {
        Mode::Closed => format!("closed loop, concurrency {}", a.concurrency),
        Mode::Open => format!("open loop, {} ops/s", a.rate),
    };
    println!(
        "prorata bench: {} against {}; {load}; {} connections; {} s recorded after {} s warm-up; seed {}; order ids {prefix}-N",
        a.scenario.name(),
        a.addr,
        a.connections,
        a.duration,
        a.warmup,
        a.seed
    );
    println!(
        "ok calls: {} in {:.2} s = {:.1}/s; failed: {}; dropped (client saturated): {dropped}; unfinished: {unfinished}",
        sum.ok, measured, sum.throughput, sum.failed
    );
    println!(
        "{:<8} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}   (latency of ok calls, µs)",
        "call", "ok", "failed", "p50", "p90", "p99", "p99.9", "max"
    );
    let row = |name: &str, ok: u64, failed: u64, h: &Histogram<u64>| {
        println!(
            "{:<8} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}",
            name,
            ok,
            failed,
            h.value_at_quantile(0.50),
            h.value_at_quantile(0.90),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max()
        );
    };
    for k in KINDS {
        let i = k as usize;
        if s.ok[i] + s.failed[i] > 0 {
            row(k.name(), s.ok[i], s.failed[i], &s.by_kind[i]);
        }
    }
    row("all", sum.ok, sum.failed, &s.all);
    for (code, (n, msg)) in &s.errors {
        println!("error {code}: {n} (first: {msg})");
    }
}

fn json_summary(
    a: &BenchArgs,
    prefix: &str,
    s: &Stats,
    measured: f64,
    dropped: u64,
    unfinished: u64,
    sum: Summary,
) -> serde_json::Value {
    let mut counts = serde_json::Map::new();
    let mut latency = serde_json::Map::new();
    latency.insert("all".into(), quantiles(&s.all));
    for k in KINDS {
        let i = k as usize;
        counts.insert(
            k.name().into(),
            serde_json::json!({"ok": s.ok[i], "failed": s.failed[i]}),
        );
        if s.ok[i] > 0 {
            latency.insert(k.name().into(), quantiles(&s.by_kind[i]));
        }
    }
    let errors: serde_json::Map<String, serde_json::Value> = s
        .errors
        .iter()
        .map(|(code, (n, msg))| {
            (
                (*code).to_string(),
                serde_json::json!({"count": n, "first_message": msg}),
            )
        })
        .collect();
    serde_json::json!({
        "options": {
            "addr": a.addr,
            "mode": a.mode.name(),
            "rate": a.rate,
            "concurrency": a.concurrency,
            "connections": a.connections,
            "duration_s": a.duration,
            "warmup_s": a.warmup,
            "scenario": a.scenario.name(),
            "replay_orders": a.replay_orders,
            "refund_ratio": a.refund_ratio,
            "setup": a.setup,
            "seed": a.seed,
        },
        "order_id_prefix": prefix,
        "measured_s": measured,
        "ok": sum.ok,
        "failed": sum.failed,
        "throughput_ok_per_s": sum.throughput,
        "dropped_client_saturated": dropped,
        "unfinished": unfinished,
        "counts": counts,
        "errors": errors,
        "latency_us": latency,
        "latency_measured_from": match a.mode {
            Mode::Open => "scheduled send time",
            Mode::Closed => "send time",
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::order::Order;
    use crate::grpc::convert::raw_order;

    #[test]
    fn prng_is_deterministic_and_in_range() {
        let seq = |seed| {
            let mut r = XorShift::new(seed);
            (0..100).map(|_| r.next_u64()).collect::<Vec<_>>()
        };
        assert_eq!(seq(42), seq(42));
        assert_ne!(seq(42), seq(43));
        // Seed 0 is fine: the state is never zero.
        assert!(seq(0).iter().any(|&v| v != 0));
        let mut r = XorShift::new(7);
        let mut seen = [false; 5];
        for _ in 0..1000 {
            let v = r.range(1, 5);
            assert!((1..=5).contains(&v));
            seen[(v - 1) as usize] = true;
            assert!(r.below(3) < 3);
        }
        assert!(seen.iter().all(|&s| s), "every value of 1..=5 comes up");
    }

    #[test]
    fn generated_orders_are_valid_and_deterministic() {
        let gen = OrderGen {
            seed: 9,
            prefix: "bench-test-s9".into(),
            refund_ratio: 0.1,
        };
        let mut line_counts = [0usize; MAX_LINES + 1];
        let mut level_counts = [0usize; CHAIN_DEPTH + 1];
        let mut refunds = 0;
        for n in 0..500 {
            let g = gen.order(n);
            assert_eq!(g, gen.order(n), "order {n} is reproducible");
            assert_eq!(g.order.id, format!("bench-test-s9-{n}"));
            let raw = raw_order(&g.order).expect("converts");
            let order = Order::parse(&raw, "order")
                .unwrap_or_else(|e| panic!("order {n} is invalid: {e:?}"));
            assert!((1..=MAX_LINES).contains(&order.lines.len()));
            assert_eq!(order.lines.len(), g.order.lines.len());
            line_counts[order.lines.len()] += 1;
            assert!((1..=CHAIN_DEPTH).contains(&g.levels));
            level_counts[g.levels] += 1;
            // The buyer is one of the customers the setup binds at that depth.
            assert!(g.order.buyer.starts_with("bench-c-"));
            assert_eq!(
                g.order.buyer.split('-').nth(3),
                Some(g.levels.to_string().as_str())
            );
            if let Some(p) = g.refund {
                refunds += 1;
                assert!(p.line < g.order.lines.len());
                assert!((100..=900).contains(&p.permille));
            }
        }
        assert!(line_counts[1..].iter().all(|&c| c > 0), "{line_counts:?}");
        assert!(level_counts[1..].iter().all(|&c| c > 0), "{level_counts:?}");
        assert!(
            (20..=90).contains(&refunds),
            "about 10 % refunds: {refunds}"
        );
        let other = OrderGen {
            seed: 10,
            ..gen.clone()
        };
        assert_ne!(gen.order(0).order.lines, other.order(0).order.lines);
    }

    #[test]
    fn setup_ruleset_and_network_are_valid() {
        let c = crate::domain::ruleset::compile(SETUP_RULESET);
        assert!(c.errors.is_empty(), "{:?}", c.errors);
        let items = setup_network();
        let mut promoters = std::collections::HashSet::new();
        let mut bindings = 0;
        for it in &items {
            match it.item.as_ref().unwrap() {
                pb::import_network_request::Item::Promoter(p) => {
                    let parent = p.parent.as_deref().unwrap();
                    assert!(parent.is_empty() || promoters.contains(parent));
                    promoters.insert(p.id.clone());
                }
                pb::import_network_request::Item::Binding(b) => {
                    assert!(promoters.contains(&b.promoter));
                    bindings += 1;
                }
            }
        }
        assert_eq!(promoters.len(), 1000);
        assert_eq!(bindings, 5000);
    }
}
