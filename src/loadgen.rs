//! `prorata bench`: a gRPC load generator for a running server.
//!
//! Scenarios:
//! - `compute`: `CommissionService/Compute` of new orders (unique ids under a run-specific
//!   prefix); `--refund-ratio` of the orders computed are followed, by the same task, by a
//!   `SettlementService/Refund` of a random partial amount of one of their lines. An
//!   order no refund follows is sent encoded and its answer is not decoded ([`RawCodec`],
//!   as replay below): only a refund needs the split's lines.
//! - `replay`: first stores `--replay-orders` orders (not measured), then sends random ones
//!   of them again: the idempotent replay path (the stored split is read back and checked).
//!   Each order's request is encoded once and sent as those bytes, and the answer is not
//!   decoded ([`RawCodec`]): on a box the client shares with the server, decoding a 1.5 KB
//!   split per call would be the client's cost counted against the server's replay rate,
//!   which the empty RPC it is compared with does not pay. Errors still count by status.
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
//! discounts and tags. `--lines N` and `--levels N` fix the shape of every order.
//! `--paid-at live` (the default) pays order `n` 10 ms after order `n - 1`, less up to 5 s
//! of jitter, as live checkout traffic arrives; `--paid-at month` pays each order at a
//! random second of November 2026, in random order, as a backfill would.
//!
//! Scenarios that isolate one cost (used by `benches/run.sh` for the growth curves):
//! - `preview`: `CommissionService/Preview` of new orders: the whole server path of a
//!   Compute (parse, rule selection, network from the cache, the volume reads, the engine,
//!   encoding) but nothing stored, so the curves measure compute cost rather than the disk.
//! - `upline`: `NetworkService/GetUpline` of random promoters at depth `--levels` (default:
//!   the chain depth) with `max_depth` = that depth, so each answer holds `--levels`
//!   promoters.
//! - `list-splits`: `CommissionService/ListSplits`, first page of one account (`--account`,
//!   default the account `--account-orders` fills).
//!
//! Larger set-ups (each independent, ids deterministic so they can be repeated):
//! - `--network N --chain-depth D` replaces the 1,000-promoter network by N promoters in
//!   N/D chains of D (`net-p-C-D`, D = 1 is the root), one customer bound to each
//!   (`net-c-C-D`), imported in `--import-batch` items per `ImportNetwork` call (each call
//!   is one transaction). `--network-from M` skips the first M promoters, imported by an
//!   earlier run, so a network can grow step by step.
//! - `--rules R` publishes a generated rule set instead of [`SETUP_RULESET`]: R-1
//!   conditional rules no generated order matches, ahead of the matching default that pays
//!   up to [`MAX_LEVELS`] levels, so every line scans all R rules (like `benches/engine.rs`).
//! - `--account-orders K` stores K orders that all pay one promoter (the root of chain 0;
//!   the buyers are bound at depths 1-5 of that chain) through `ComputeStream`, for
//!   `list-splits`.
//!
//! `--setup` does both the rule set and the network; `--setup-rules` and `--setup-network`
//! do one of them.

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
/// Set-up calls (imports, `ComputeStream` of many orders) run long; they get this deadline
/// instead of [`CALL_TIMEOUT`] (the server's own long-call timeout is an hour).
const SETUP_CALL_TIMEOUT: Duration = Duration::from_secs(3600);
/// `ComputeStream` calls run side by side by `--account-orders` (the server answers 32
/// orders of each stream at a time).
const ACCOUNT_STREAMS: usize = 4;
/// Depths of chain 0 the buyers of `--account-orders` are bound at: within the 5 levels
/// [`SETUP_RULESET`] pays, so its root is paid whichever rule set is in effect.
pub const ACCOUNT_DEPTHS: usize = 5;
/// Most levels a generated rule set pays (the server's bound, `ruleset::MAX_LEVELS`).
pub const MAX_LEVELS: usize = crate::domain::ruleset::MAX_LEVELS as usize;
/// Level rates of the generated rule sets' default rule (26 % in all, under the 0.3 cap).
pub const GENERATED_LEVEL_RATES: [&str; MAX_LEVELS] = [
    "0.10", "0.05", "0.03", "0.02", "0.01", "0.01", "0.01", "0.01", "0.01", "0.01",
];

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
/// `--paid-at live`: milliseconds between the payments of orders `n` and `n + 1`.
const LIVE_STEP_MS: i64 = 10;
/// `--paid-at live`: an order reaches prorata up to this long after later-numbered orders
/// were paid (an order system's retries and queues reorder a few seconds of payments).
const LIVE_JITTER_MS: u64 = 5_000;

/// When the generated orders were paid: the order in which rows reach the per-account
/// indexes (`split_accounts` by account and `paid_at`, entries by availability), which
/// changes how many pages a batch writes (benches/RESULTS.md §17).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PaidAt {
    /// Live checkout traffic: order `n` is paid [`LIVE_STEP_MS`] after order `n - 1`,
    /// less up to [`LIVE_JITTER_MS`], from November 1, 2026: orders arrive about in the
    /// order they were paid, as from an order system that calls Compute at payment.
    #[default]
    Live,
    /// A backfill: every order paid at a random second of November 2026, in random order.
    Month,
}

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
    /// Preview of new orders: the compute path, nothing stored.
    Preview,
    /// GetUpline of random promoters at depth --levels.
    Upline,
    /// ListSplits, first page of one account.
    ListSplits,
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
            Scenario::Preview => "preview",
            Scenario::Upline => "upline",
            Scenario::ListSplits => "list-splits",
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
    /// compute | replay | empty | preview | upline | list-splits.
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
    /// Only publish the benchmark rule set first (see --rules).
    #[arg(long)]
    pub setup_rules: bool,
    /// Only import the benchmark network first (see --network).
    #[arg(long)]
    pub setup_network: bool,
    /// Lines in every order (default: 1-5 at random).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=crate::domain::order::MAX_LINES as u64))]
    pub lines: Option<u64>,
    /// Levels every order pays, i.e. the depth its buyer is bound at (default: at random
    /// up to the chain depth); upline: the depth of the promoters asked for.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=MAX_LEVELS as u64))]
    pub levels: Option<u64>,
    /// Promoters of the generated network, a multiple of --chain-depth (0: the classic
    /// 1,000-promoter network).
    #[arg(long, default_value_t = 0)]
    pub network: u64,
    /// Promoters per chain of the generated network.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=crate::app::MAX_UPLINE_DEPTH as u64))]
    pub chain_depth: u64,
    /// Setup: promoters of the generated network already imported (skipped).
    #[arg(long, default_value_t = 0)]
    pub network_from: u64,
    /// Setup: items per ImportNetwork call (one transaction each).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=crate::store::MAX_IMPORT_ITEMS as u64))]
    pub import_batch: u64,
    /// Rules of the published rule set: R-1 that never match, then the default (0: the
    /// classic 2-rule set).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=crate::domain::ruleset::MAX_RULES as u64))]
    pub rules: u64,
    /// Setup: orders stored first (through ComputeStream) that all pay one promoter.
    #[arg(long, default_value_t = 0)]
    pub account_orders: u64,
    /// list-splits: the account (default: the promoter --account-orders pays).
    #[arg(long)]
    pub account: Option<String>,
    /// list-splits: page size (0: the server's default, 100).
    #[arg(long, default_value_t = 0)]
    pub page_size: u32,
    /// When the generated orders were paid: `live` (about in arrival order, as at
    /// checkout) or `month` (a backfill: random seconds of November 2026, random order).
    #[arg(long, value_enum, default_value_t = PaidAt::Live)]
    pub paid_at: PaidAt,
    /// Seed of the order mix.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Also write the summary as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the scenario's first request to this file, gRPC-framed, for load tools that
    /// send one fixed body (`h2load -d FILE`); replay: an order stored by the set-up.
    #[arg(long)]
    pub body_out: Option<PathBuf>,
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

/// The promoter network the orders' buyers are bound in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Network {
    /// The `--setup` network: [`SETUP_CHAINS`] chains of [`CHAIN_DEPTH`] promoters,
    /// [`CUSTOMERS_PER_PROMOTER`] customers bound to each.
    #[default]
    Classic,
    /// `--network`: `chains` chains of `depth` promoters, one customer bound to each.
    Chains { chains: usize, depth: usize },
}

impl Network {
    /// `--network N --chain-depth D` (N a multiple of D; 0 is the classic network).
    pub fn from_size(promoters: u64, depth: u64) -> Network {
        if promoters == 0 {
            Network::Classic
        } else {
            Network::Chains {
                chains: (promoters / depth) as usize,
                depth: depth as usize,
            }
        }
    }

    /// Number of chains.
    pub fn chains(self) -> usize {
        match self {
            Network::Classic => SETUP_CHAINS,
            Network::Chains { chains, .. } => chains,
        }
    }

    /// Promoters per chain: the most levels an order can pay.
    pub fn depth(self) -> usize {
        match self {
            Network::Classic => CHAIN_DEPTH,
            Network::Chains { depth, .. } => depth,
        }
    }

    /// The promoter at `depth` (1 = the root) of `chain`.
    pub fn promoter(self, chain: usize, depth: usize) -> String {
        match self {
            Network::Classic => promoter_id(chain, depth),
            Network::Chains { .. } => format!("net-p-{chain}-{depth}"),
        }
    }

    /// Customer `j` of the promoter at `depth` of `chain` (the generated network binds one
    /// customer per promoter: `j` is ignored).
    pub fn customer(self, chain: usize, depth: usize, j: usize) -> String {
        match self {
            Network::Classic => customer_id(chain, depth, j),
            Network::Chains { .. } => format!("net-c-{chain}-{depth}"),
        }
    }

    /// The account `--account-orders` pays: the root of chain 0.
    pub fn account(self) -> String {
        format!("promoter:{}", self.promoter(0, 1))
    }
}

/// What every order looks like beyond the random mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OrderShape {
    /// Lines per order; `None`: 1..=[`MAX_LINES`] at random.
    pub lines: Option<usize>,
    /// Levels per order (the depth of the buyer's promoter); `None`: at random up to the
    /// chain depth.
    pub levels: Option<usize>,
    /// Where the buyers are bound.
    pub network: Network,
    /// When the orders were paid.
    pub paid_at: PaidAt,
}

/// Deterministic orders: `order(n)` depends only on the seed, the prefix, the shape and `n`.
#[derive(Debug, Clone)]
pub struct OrderGen {
    pub seed: u64,
    /// Run-specific id prefix, so runs against one database never collide.
    pub prefix: String,
    pub refund_ratio: f64,
    pub shape: OrderShape,
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
        let net = self.shape.network;
        // Draw the random values even when the shape fixes them, so the rest of an order
        // does not change with the options.
        let levels = rng.range(1, net.depth() as u64) as usize;
        let levels = self.shape.levels.unwrap_or(levels);
        let chain = rng.below(net.chains() as u64) as usize;
        let j = rng.below(CUSTOMERS_PER_PROMOTER as u64) as usize;
        let merchant = format!("bench-m-{:02}", rng.below(MERCHANTS));
        let channel = match rng.below(10) {
            0..=4 => "alipay",
            5..=8 => "wechat",
            _ => "card",
        };
        // One draw for both models, so the rest of an order is the same in either.
        let spread = rng.below(29 * 86_400);
        let paid_at_ms = match self.shape.paid_at {
            PaidAt::Month => (PAID_AT_BASE + spread as i64) * 1_000,
            // Never before the base, so every order stays in November's counters.
            PaidAt::Live => {
                PAID_AT_BASE * 1_000
                    + LIVE_JITTER_MS as i64
                    + (n as i64).saturating_mul(LIVE_STEP_MS)
                    - (spread % LIVE_JITTER_MS) as i64
            }
        };
        let tags = if rng.chance(0.3) {
            vec!["promo".to_string()]
        } else {
            Vec::new()
        };
        let n_lines = rng.range(1, MAX_LINES as u64) as usize;
        let n_lines = self.shape.lines.unwrap_or(n_lines);
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
                buyer: net.customer(chain, levels, j),
                paid_at: Some(prost_types::Timestamp {
                    seconds: paid_at_ms.div_euclid(1_000),
                    nanos: (paid_at_ms.rem_euclid(1_000) * 1_000_000) as i32,
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

impl OrderGen {
    /// The `n`-th order of `--account-orders`: the shape's lines, bought by a customer of
    /// chain 0 bound at depth 1 to [`ACCOUNT_DEPTHS`] in turn, so every order pays the
    /// chain's root ([`Network::account`]), at the level of that depth. The orders' primary
    /// promoters (whose month counters every Compute locks) are spread over those depths:
    /// with a single one, concurrent Computes would queue on one counter row.
    pub fn account_order(&self, n: u64) -> GeneratedOrder {
        let net = self.shape.network;
        let depth = (n % ACCOUNT_DEPTHS.min(net.depth()) as u64) as usize + 1;
        let j = (n / ACCOUNT_DEPTHS as u64 % CUSTOMERS_PER_PROMOTER as u64) as usize;
        let mut g = self.order(n);
        g.order.id = format!("{}-a{n}", self.prefix);
        g.order.buyer = net.customer(0, depth, j);
        g.levels = depth;
        g.refund = None;
        g
    }
}

/// The items of one import of the generated network: chains `chains` of `depth`
/// promoters, each chain root first, then one customer bound to each of their promoters.
pub fn network_items(
    chains: std::ops::Range<usize>,
    depth: usize,
) -> Vec<pb::ImportNetworkRequest> {
    use pb::import_network_request::Item;
    let net = Network::Chains {
        chains: chains.end,
        depth,
    };
    let mut items = Vec::with_capacity(chains.len() * depth * 2);
    for c in chains.clone() {
        for d in 1..=depth {
            items.push(pb::ImportNetworkRequest {
                item: Some(Item::Promoter(pb::UpsertPromoterRequest {
                    id: net.promoter(c, d),
                    parent: Some(if d == 1 {
                        String::new()
                    } else {
                        net.promoter(c, d - 1)
                    }),
                    grade: None,
                    status: pb::PromoterStatus::Active as i32,
                })),
            });
        }
    }
    for c in chains {
        for d in 1..=depth {
            items.push(pb::ImportNetworkRequest {
                item: Some(Item::Binding(pb::BindCustomerRequest {
                    customer: net.customer(c, d, 0),
                    promoter: net.promoter(c, d),
                })),
            });
        }
    }
    items
}

/// The chains each `ImportNetwork` call of the generated network carries: whole chains
/// (a chain never straddles two transactions), about `batch` items per call (a chain of
/// `depth` is `2 * depth` items), from promoter `from` (a multiple of `depth`) on.
pub fn import_calls(
    chains: usize,
    depth: usize,
    from: usize,
    batch: usize,
) -> Vec<std::ops::Range<usize>> {
    let per_call = (batch / (2 * depth)).max(1);
    (from / depth..chains)
        .step_by(per_call)
        .map(|c| c..(c + per_call).min(chains))
        .collect()
}

/// A rule set of `rules` rules: `rules - 1` conditional rules that no generated order
/// matches, at priorities above the default rule, which matches everything and pays
/// [`GENERATED_LEVEL_RATES`] over up to [`MAX_LEVELS`] levels. Every line therefore scans
/// every rule. Conditions rotate over the fields the matcher checks, and some combine a
/// condition every order meets with one none does, so a check cannot always stop at the
/// first field. The fee, platform take, partner and cap are those of [`SETUP_RULESET`].
pub fn ruleset_document(rules: usize) -> String {
    use std::fmt::Write as _;
    let mut doc = format!(
        r#"timezone: Asia/Shanghai
currency: CNY
hold_days: 7
max_levels: {MAX_LEVELS}
payment_fee:
  default: "0.006"
  by_channel: {{alipay: "0.006", wechat: "0.006", card: "0.01"}}
platform:
  rate: "0.05"
  partners:
    - {{id: bench-partner, share: "0.2"}}
cap: "0.3"
rules:
"#
    );
    let all_categories = CATEGORIES.join(", ");
    for i in 0..rules.saturating_sub(1) {
        let when = match i % 5 {
            0 => format!("{{category: [nomatch-{i}]}}"),
            1 => format!("{{category: [{all_categories}], merchant: [nomatch-m-{i}]}}"),
            2 => format!("{{sku: [NOMATCH-{i}, NOMATCH-{i}-b]}}"),
            3 => format!("{{channel: [alipay, wechat, card], tags: [nomatch-{i}]}}"),
            _ => format!(
                "{{merchant: [bench-m-{:02}], channel: [nomatch-{i}]}}",
                i % 50
            ),
        };
        let _ = writeln!(
            doc,
            r#"  - {{id: r{i}, priority: {}, when: {when}, levels: ["0.2", "0.1"]}}"#,
            rules - i
        );
    }
    let rates: Vec<String> = GENERATED_LEVEL_RATES
        .iter()
        .map(|r| format!("\"{r}\""))
        .collect();
    let _ = writeln!(
        doc,
        "  - {{id: default, priority: 0, levels: [{}]}}",
        rates.join(", ")
    );
    doc
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
    Preview = 4,
    Upline = 5,
    ListSplits = 6,
}

const KINDS: [Kind; 7] = [
    Kind::Compute,
    Kind::Refund,
    Kind::Replay,
    Kind::Empty,
    Kind::Preview,
    Kind::Upline,
    Kind::ListSplits,
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Compute => "compute",
            Kind::Refund => "refund",
            Kind::Replay => "replay",
            Kind::Empty => "empty",
            Kind::Preview => "preview",
            Kind::Upline => "upline",
            Kind::ListSplits => "list-splits",
        }
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).expect("valid histogram bounds")
}

/// Recorded results (one shard).
struct Stats {
    all: Histogram<u64>,
    by_kind: [Histogram<u64>; KINDS.len()],
    ok: [u64; KINDS.len()],
    failed: [u64; KINDS.len()],
    /// Failures by status code name, with the first message seen.
    errors: BTreeMap<&'static str, (u64, String)>,
    /// Completion of the last recorded call.
    last_done: Option<Instant>,
}

impl Stats {
    fn new() -> Self {
        Stats {
            all: histogram(),
            by_kind: std::array::from_fn(|_| histogram()),
            ok: [0; KINDS.len()],
            failed: [0; KINDS.len()],
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
        for k in 0..KINDS.len() {
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

/// A codec that sends bytes already encoded as the request message and reads only the
/// length of the answer's message (replay: see the module docs).
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = bytes::Bytes;
    type Decode = usize;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = bytes::Bytes;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: bytes::Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = usize;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<usize>, tonic::Status> {
        let n = bytes::Buf::remaining(src);
        bytes::Buf::advance(src, n);
        Ok(Some(n))
    }
}

/// The path of Compute.
const COMPUTE_PATH: &str = "/prorata.v1.CommissionService/Compute";

/// The clients of one HTTP/2 connection.
#[derive(Clone)]
struct Conn {
    /// Compute with [`RawCodec`] (replay, and compute with no refund after it).
    raw: tonic::client::Grpc<Channel>,
    commission: CommissionServiceClient<Channel>,
    settlement: SettlementServiceClient<Channel>,
    health: HealthClient<Channel>,
    network: NetworkServiceClient<Channel>,
}

struct Ctx {
    scenario: Scenario,
    conns: Vec<Conn>,
    next_conn: AtomicUsize,
    gen: OrderGen,
    /// replay: the stored orders, each encoded once as a `ComputeRequest`.
    replay_bodies: Vec<bytes::Bytes>,
    /// upline: the depth of the promoters asked for (and the `max_depth` sent).
    upline_depth: usize,
    /// list-splits: the request sent.
    list: pb::ListSplitsRequest,
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
            Scenario::Preview => {
                let mut cm = c.commission;
                let r = cm
                    .preview(pb::PreviewRequest {
                        order: Some(self.gen.order(n).order),
                        ruleset_document: String::new(),
                    })
                    .await
                    .map(|_| ());
                if record {
                    self.record(n, Kind::Preview, at, r);
                }
            }
            Scenario::Upline => {
                let net = self.gen.shape.network;
                let mut rng = XorShift::new(self.gen.seed ^ n.wrapping_mul(0x9FB2_1C65_1E98_DF25));
                let chain = rng.below(net.chains() as u64) as usize;
                let mut nw = c.network;
                let r = nw
                    .get_upline(pb::GetUplineRequest {
                        promoter: net.promoter(chain, self.upline_depth),
                        max_depth: self.upline_depth as u32,
                    })
                    .await
                    .map(|_| ());
                if record {
                    self.record(n, Kind::Upline, at, r);
                }
            }
            Scenario::ListSplits => {
                let mut cm = c.commission;
                let r = cm.list_splits(self.list.clone()).await.map(|_| ());
                if record {
                    self.record(n, Kind::ListSplits, at, r);
                }
            }
            Scenario::Replay => {
                let mut rng = XorShift::new(self.gen.seed ^ n.wrapping_mul(0x9FB2_1C65_1E98_DF25));
                let i = rng.below(self.replay_bodies.len() as u64) as usize;
                let r = raw_compute(c.raw, self.replay_bodies[i].clone()).await;
                if record {
                    self.record(n, Kind::Replay, at, r);
                }
            }
            Scenario::Compute => {
                let g = self.gen.order(n);
                if g.refund.is_none() {
                    // Nothing follows: the answer's status is all the bench needs, so it is
                    // not decoded (see the module docs on the client's own cost).
                    let body = prost::Message::encode_to_vec(&pb::ComputeRequest {
                        order: Some(g.order),
                    });
                    let r = raw_compute(c.raw, body.into()).await;
                    if record {
                        self.record(n, Kind::Compute, at, r);
                    }
                    return;
                }
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

/// Compute of a request already encoded, its answer read but not decoded ([`RawCodec`]).
async fn raw_compute(
    mut raw: tonic::client::Grpc<Channel>,
    body: bytes::Bytes,
) -> Result<(), tonic::Status> {
    raw.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("connection not ready: {e}")))?;
    raw.unary(
        tonic::Request::new(body),
        http::uri::PathAndQuery::from_static(COMPUTE_PATH),
        RawCodec,
    )
    .await
    .map(|_| ())
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

async fn connect(addr: &str, n: usize, timeout: Duration) -> anyhow::Result<Vec<Channel>> {
    let ep = Endpoint::from_shared(addr.to_string())
        .with_context(|| format!("bad --addr {addr:?}"))?
        .timeout(timeout)
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

/// Publishes the benchmark rule set ([`SETUP_RULESET`], or [`ruleset_document`] with
/// `rules > 0`); returns the seconds it took.
async fn publish_rules(channel: Channel, rules: usize) -> anyhow::Result<f64> {
    let t = Instant::now();
    let document = if rules == 0 {
        SETUP_RULESET.to_string()
    } else {
        ruleset_document(rules)
    };
    if document.len() > crate::domain::ruleset::MAX_DOCUMENT_BYTES {
        bail!(
            "a rule set of {rules} rules is {} bytes; the server takes at most {}",
            document.len(),
            crate::domain::ruleset::MAX_DOCUMENT_BYTES
        );
    }
    let published = RuleServiceClient::new(channel)
        .publish_rule_set(pb::PublishRuleSetRequest {
            document: document.clone(),
        })
        .await
        .context("publishing the benchmark rule set")?
        .into_inner();
    let version = published.ruleset.map_or(0, |r| r.version);
    let secs = t.elapsed().as_secs_f64();
    println!(
        "setup: rule set version {version} published ({} rules, {} bytes) in {secs:.2} s",
        if rules == 0 { 2 } else { rules },
        document.len()
    );
    Ok(secs)
}

/// Imports the benchmark network: the classic one in one call, or chains of the generated
/// one from promoter `from` on, `batch` items per call. Returns the seconds it took.
async fn import_network(
    channel: Channel,
    net: Network,
    from: usize,
    batch: usize,
) -> anyhow::Result<f64> {
    let t = Instant::now();
    let mut client = NetworkServiceClient::new(channel);
    let (mut promoters, mut bindings, mut calls) = (0u64, 0u64, 0u64);
    // One call's items at a time (lazily), so a million promoters are never all in memory.
    let calls_items: Box<dyn Iterator<Item = Vec<pb::ImportNetworkRequest>> + Send> = match net {
        Network::Classic => Box::new(std::iter::once(setup_network())),
        Network::Chains { chains, depth } => Box::new(
            import_calls(chains, depth, from, batch)
                .into_iter()
                .map(move |c| network_items(c, depth)),
        ),
    };
    for items in calls_items {
        let r = client
            .import_network(futures::stream::iter(items))
            .await
            .context("importing the benchmark network")?
            .into_inner();
        promoters += r.promoters;
        bindings += r.bindings;
        calls += 1;
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "setup: imported {promoters} promoters and {bindings} bindings in {calls} calls in {secs:.2} s ({:.0} items/s)",
        (promoters + bindings) as f64 / secs.max(1e-9)
    );
    Ok(secs)
}

/// Stores `--account-orders` orders that all pay [`Network::account`], over
/// [`ACCOUNT_STREAMS`] `ComputeStream` calls side by side. Returns the seconds it took.
async fn store_account_orders(
    channels: &[Channel],
    gen: &OrderGen,
    count: u64,
) -> anyhow::Result<f64> {
    let t = Instant::now();
    let streams = ACCOUNT_STREAMS.min(count as usize).max(1);
    let mut tasks = Vec::with_capacity(streams);
    for s in 0..streams {
        let mut cm = CommissionServiceClient::new(channels[s % channels.len()].clone());
        let gen = gen.clone();
        tasks.push(tokio::spawn(async move {
            let requests =
                futures::stream::iter((s as u64..count).step_by(streams).map(move |n| {
                    pb::ComputeRequest {
                        order: Some(gen.account_order(n).order),
                    }
                }));
            let mut answers = cm.compute_stream(requests).await?.into_inner();
            let mut ok = 0u64;
            let mut failures: BTreeMap<&'static str, (u64, String)> = BTreeMap::new();
            while let Some(a) = answers.message().await? {
                if a.code == 0 {
                    ok += 1;
                } else {
                    failures
                        .entry(code_name(tonic::Code::from(a.code)))
                        .or_insert_with(|| (0, a.message.clone()))
                        .0 += 1;
                }
            }
            Ok::<_, tonic::Status>((ok, failures))
        }));
    }
    let mut stored = 0u64;
    for task in tasks {
        let (ok, failures) = task.await?.context("ComputeStream of the account orders")?;
        stored += ok;
        for (code, (n, msg)) in failures {
            eprintln!("account orders: {n} × {code} (e.g. {msg})");
        }
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "setup: stored {stored} of {count} orders paying {} in {secs:.2} s ({:.0} orders/s)",
        gen.shape.network.account(),
        stored as f64 / secs.max(1e-9)
    );
    if stored < count {
        bail!("only {stored} of {count} account orders were stored");
    }
    Ok(secs)
}

/// A gRPC message on the wire: 0 (not compressed), its length as a big-endian u32, the
/// protobuf bytes.
pub fn grpc_frame(message: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(5 + message.len());
    frame.push(0);
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(message);
    frame
}

/// The path and the framed request of the scenario's first call (operation `n`).
fn first_request(ctx: &Ctx, n: u64) -> (&'static str, Vec<u8>) {
    use prost::Message as _;
    let (path, message) = match ctx.scenario {
        Scenario::Empty => (
            "/grpc.health.v1.Health/Check",
            HealthCheckRequest {
                service: String::new(),
            }
            .encode_to_vec(),
        ),
        Scenario::Replay => (COMPUTE_PATH, ctx.replay_bodies[0].to_vec()),
        Scenario::Compute => (
            COMPUTE_PATH,
            pb::ComputeRequest {
                order: Some(ctx.gen.order(n).order),
            }
            .encode_to_vec(),
        ),
        Scenario::Preview => (
            "/prorata.v1.CommissionService/Preview",
            pb::PreviewRequest {
                order: Some(ctx.gen.order(n).order),
                ruleset_document: String::new(),
            }
            .encode_to_vec(),
        ),
        Scenario::Upline => (
            "/prorata.v1.NetworkService/GetUpline",
            pb::GetUplineRequest {
                promoter: ctx.gen.shape.network.promoter(0, ctx.upline_depth),
                max_depth: ctx.upline_depth as u32,
            }
            .encode_to_vec(),
        ),
        Scenario::ListSplits => (
            "/prorata.v1.CommissionService/ListSplits",
            ctx.list.encode_to_vec(),
        ),
    };
    (path, grpc_frame(&message))
}

/// One call before the run that checks the scenario reads what the set-up made; returns
/// what it saw.
async fn probe(ctx: &Ctx) -> anyhow::Result<Option<String>> {
    match ctx.scenario {
        Scenario::Upline => {
            let net = ctx.gen.shape.network;
            // The last chain: it exists only if the whole network was imported.
            let id = net.promoter(net.chains() - 1, ctx.upline_depth);
            let r = ctx.conns[0]
                .network
                .clone()
                .get_upline(pb::GetUplineRequest {
                    promoter: id.clone(),
                    max_depth: ctx.upline_depth as u32,
                })
                .await
                .with_context(|| {
                    format!("probe: GetUpline of {id} (is the network imported? --setup-network)")
                })?
                .into_inner();
            if r.promoters.len() != ctx.upline_depth || r.truncated {
                bail!(
                    "probe: GetUpline of {id} answered {} promoters (truncated: {}), expected {}",
                    r.promoters.len(),
                    r.truncated,
                    ctx.upline_depth
                );
            }
            Ok(Some(format!(
                "GetUpline of {id} with max_depth {} answers {} promoters",
                ctx.upline_depth,
                r.promoters.len()
            )))
        }
        Scenario::ListSplits => {
            let r = ctx.conns[0]
                .commission
                .clone()
                .list_splits(ctx.list.clone())
                .await
                .context("probe: ListSplits")?
                .into_inner();
            if r.splits.is_empty() {
                bail!(
                    "probe: account {} holds no share (store some with --account-orders)",
                    ctx.list.account
                );
            }
            Ok(Some(format!(
                "ListSplits of {} answers {} splits on its first page (more pages: {})",
                ctx.list.account,
                r.splits.len(),
                !r.next_page_token.is_empty()
            )))
        }
        _ => Ok(None),
    }
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
    if a.network % a.chain_depth != 0 {
        bail!(
            "--network ({}) must be a multiple of --chain-depth ({})",
            a.network,
            a.chain_depth
        );
    }
    if a.network_from % a.chain_depth != 0 || a.network_from > a.network {
        bail!("--network-from must be a multiple of --chain-depth, at most --network");
    }
    let depth = Network::from_size(a.network, a.chain_depth).depth();
    if let Some(l) = a.levels {
        if l as usize > depth {
            bail!("--levels {l} is deeper than the network's chains ({depth} promoters)");
        }
    }
    if a.page_size > crate::app::MAX_PAGE_SIZE {
        bail!("--page-size is at most {}", crate::app::MAX_PAGE_SIZE);
    }
    Ok(())
}

/// Runs the benchmark, prints the summary (and writes the JSON one with `--json`).
pub async fn run(args: BenchArgs) -> anyhow::Result<Summary> {
    check_args(&args)?;
    let channels = connect(&args.addr, args.connections, CALL_TIMEOUT).await?;
    let network = Network::from_size(args.network, args.chain_depth);
    let unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let gen = OrderGen {
        seed: args.seed,
        prefix: format!("bench-{unix_ms:x}-s{}", args.seed),
        refund_ratio: args.refund_ratio,
        shape: OrderShape {
            lines: args.lines.map(|n| n as usize),
            levels: args.levels.map(|n| n as usize),
            network,
            paid_at: args.paid_at,
        },
    };
    let mut setup_s = serde_json::Map::new();
    if args.setup || args.setup_rules || args.setup_network || args.account_orders > 0 {
        // Set-up calls run long: channels of their own, without the per-call deadline.
        let long = connect(&args.addr, ACCOUNT_STREAMS, SETUP_CALL_TIMEOUT).await?;
        if args.setup || args.setup_rules {
            let secs = publish_rules(long[0].clone(), args.rules as usize).await?;
            setup_s.insert("rules".into(), secs.into());
        }
        if args.setup || args.setup_network {
            let (from, batch) = (args.network_from as usize, args.import_batch as usize);
            let secs = import_network(long[0].clone(), network, from, batch).await?;
            setup_s.insert("network".into(), secs.into());
        }
        if args.account_orders > 0 {
            let secs = store_account_orders(&long, &gen, args.account_orders).await?;
            setup_s.insert("account_orders".into(), secs.into());
        }
    }
    let conns: Vec<Conn> = channels
        .iter()
        .map(|ch| Conn {
            raw: tonic::client::Grpc::new(ch.clone()),
            commission: CommissionServiceClient::new(ch.clone()),
            settlement: SettlementServiceClient::new(ch.clone()),
            health: HealthClient::new(ch.clone()),
            network: NetworkServiceClient::new(ch.clone()),
        })
        .collect();
    let replay_bodies = if args.scenario == Scenario::Replay {
        store_replay_orders(&conns, &gen, args.replay_orders, args.concurrency)
            .await?
            .into_iter()
            .map(|o| prost::Message::encode_to_vec(&pb::ComputeRequest { order: Some(o) }).into())
            .collect()
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
        upline_depth: args.levels.map_or(network.depth(), |l| l as usize),
        list: pb::ListSplitsRequest {
            account: args.account.clone().unwrap_or_else(|| network.account()),
            from: None,
            to: None,
            page_size: args.page_size,
            page_token: String::new(),
        },
        gen,
        replay_bodies,
        shards: (0..STAT_SHARDS).map(|_| Mutex::new(Stats::new())).collect(),
    });
    let probed = probe(&ctx).await?;
    if let Some(p) = &probed {
        println!("probe: {p}");
    }
    if let Some(path) = &args.body_out {
        let (rpc, body) = first_request(&ctx, first_n);
        std::fs::write(path, &body).with_context(|| format!("writing {}", path.display()))?;
        println!(
            "body: {} ({} bytes) for POST {rpc}",
            path.display(),
            body.len()
        );
    }

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
        let mut json = json_summary(
            &args,
            &ctx.gen.prefix,
            &stats,
            measured,
            dropped,
            unfinished,
            summary,
        );
        json["setup_s"] = setup_s.into();
        json["probe"] = probed.into();
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
            "setup_rules": a.setup_rules,
            "setup_network": a.setup_network,
            "lines": a.lines,
            "levels": a.levels,
            "paid_at": match a.paid_at {
                PaidAt::Live => "live",
                PaidAt::Month => "month",
            },
            "network": a.network,
            "chain_depth": a.chain_depth,
            "network_from": a.network_from,
            "import_batch": a.import_batch,
            "rules": a.rules,
            "account_orders": a.account_orders,
            "account": a.account,
            "page_size": a.page_size,
            "body_out": a.body_out,
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
            shape: OrderShape::default(),
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

    /// `live` orders are paid about in sequence (10 ms apart, less at most 5 s), `month`
    /// orders at random seconds of November 2026; the rest of each order is the same.
    #[test]
    fn paid_at_models_differ_only_in_the_payment_time() {
        let gen = |paid_at| OrderGen {
            seed: 4,
            prefix: "bench-paid".into(),
            refund_ratio: 0.1,
            shape: OrderShape {
                paid_at,
                ..OrderShape::default()
            },
        };
        let (live, month) = (gen(PaidAt::Live), gen(PaidAt::Month));
        assert_eq!(OrderShape::default().paid_at, PaidAt::Live);
        let ms = |o: &pb::Order| {
            let t = o.paid_at.expect("paid_at is set");
            assert!((0..1_000_000_000).contains(&t.nanos));
            t.seconds * 1_000 + i64::from(t.nanos) / 1_000_000
        };
        let november = PAID_AT_BASE * 1_000..(PAID_AT_BASE + 30 * 86_400) * 1_000;
        let mut out_of_order = 0;
        let mut month_seconds = std::collections::HashSet::new();
        for n in 0..2_000u64 {
            let (l, m) = (live.order(n), month.order(n));
            let (tl, tm) = (ms(&l.order), ms(&m.order));
            assert!(
                november.contains(&tl) && november.contains(&tm),
                "order {n}"
            );
            let due = PAID_AT_BASE * 1_000 + LIVE_JITTER_MS as i64 + n as i64 * LIVE_STEP_MS;
            assert!(
                (due - LIVE_JITTER_MS as i64 + 1..=due).contains(&tl),
                "order {n}: {tl}"
            );
            assert_eq!(tm % 1_000, 0, "month: whole seconds");
            month_seconds.insert(tm / 1_000);
            if n > 0 && tl < ms(&live.order(n - 1).order) {
                out_of_order += 1;
            }
            let mut m = m;
            m.order.paid_at = l.order.paid_at;
            assert_eq!(m, l, "order {n}: only paid_at differs");
        }
        // Jitter reorders neighbours, the sequence still moves forward.
        assert!(out_of_order > 100, "{out_of_order}");
        assert!(ms(&live.order(1_999).order) > ms(&live.order(0).order) + 10_000);
        // The month model spreads orders over the month.
        assert!(month_seconds.len() > 1_990, "{}", month_seconds.len());
    }

    fn chains(chains: usize, depth: usize) -> Network {
        Network::Chains { chains, depth }
    }

    #[test]
    fn fixed_lines_and_levels_shape_every_order() {
        for (lines, levels) in [(1, 1), (2, 5), (100, 10), (1000, 3)] {
            let gen = OrderGen {
                seed: 3,
                prefix: "bench-shape".into(),
                refund_ratio: 0.0,
                shape: OrderShape {
                    lines: Some(lines),
                    levels: Some(levels),
                    network: chains(1000, 10),
                    ..OrderShape::default()
                },
            };
            for n in 0..50 {
                let g = gen.order(n);
                assert_eq!(g, gen.order(n), "order {n} is reproducible");
                let raw = raw_order(&g.order).expect("converts");
                let order = Order::parse(&raw, "order")
                    .unwrap_or_else(|e| panic!("{lines} lines, order {n}: {e:?}"));
                assert_eq!(order.lines.len(), lines);
                assert_eq!(g.levels, levels);
                // net-c-CHAIN-DEPTH, bound to the promoter at that depth.
                let parts: Vec<&str> = g.order.buyer.split('-').collect();
                assert_eq!(parts[..2], ["net", "c"]);
                assert!(parts[2].parse::<usize>().unwrap() < 1000);
                assert_eq!(parts[3], levels.to_string());
                assert!(g.refund.is_none());
            }
        }
    }

    #[test]
    fn random_levels_span_the_generated_chains() {
        let gen = OrderGen {
            seed: 5,
            prefix: "bench-depth".into(),
            refund_ratio: 0.1,
            shape: OrderShape {
                network: chains(7, 10),
                ..OrderShape::default()
            },
        };
        let mut seen = [false; 11];
        for n in 0..500 {
            let g = gen.order(n);
            assert!((1..=10).contains(&g.levels));
            seen[g.levels] = true;
            assert_eq!(
                g.order.buyer.split('-').nth(3),
                Some(g.levels.to_string().as_str())
            );
        }
        assert!(seen[1..].iter().all(|&s| s), "{seen:?}");
    }

    #[test]
    fn account_orders_all_pay_the_root_of_chain_zero() {
        use crate::domain::engine::{self, Context, Inputs};
        use crate::domain::network::{NetworkSnapshot, PromoterNode, Status};
        use crate::domain::split::Account;
        for (net, doc) in [
            (Network::Classic, SETUP_RULESET.to_string()),
            (chains(100, 10), ruleset_document(20)),
        ] {
            let rs = crate::domain::ruleset::compile(&doc).ruleset.unwrap();
            let gen = OrderGen {
                seed: 1,
                prefix: "bench-acct".into(),
                refund_ratio: 0.5,
                shape: OrderShape {
                    lines: Some(2),
                    network: net,
                    ..OrderShape::default()
                },
            };
            let account = net.account();
            let mut ids = std::collections::HashSet::new();
            let mut depths = std::collections::BTreeSet::new();
            for n in 0..100 {
                let g = gen.account_order(n);
                assert!(ids.insert(g.order.id.clone()), "ids are unique");
                assert_eq!(g.order.lines.len(), 2);
                assert!(g.refund.is_none());
                depths.insert(g.levels);
                let order = Order::parse(&raw_order(&g.order).unwrap(), "order").unwrap();
                // The buyer's promoter is at depth `levels` of chain 0; the root is paid.
                assert_eq!(
                    g.order.buyer.split('-').nth(2),
                    Some(if net == Network::Classic { "000" } else { "0" })
                );
                let mut snap = NetworkSnapshot::default();
                for d in 1..=g.levels {
                    snap.insert(PromoterNode {
                        id: net.promoter(0, d),
                        parent: (d > 1).then(|| net.promoter(0, d - 1)),
                        grade: None,
                        status: Status::Active,
                    });
                }
                snap.bound = Some(net.promoter(0, g.levels));
                let inputs = Inputs {
                    network: &snap,
                    context: Context::default(),
                    ruleset_version: 1,
                    fingerprint: String::new(),
                    now: chrono::Utc::now(),
                };
                let r = engine::compute(&order, &rs, &inputs).expect("computes");
                assert!(
                    r.totals.iter().any(|t| t.account
                        == Account::Promoter(net.promoter(0, 1).into())
                        && t.amount > 0),
                    "order {n} pays {account}"
                );
            }
            assert_eq!(depths.into_iter().collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
            assert_eq!(account, format!("promoter:{}", net.promoter(0, 1)));
        }
    }

    #[test]
    fn generated_network_is_imported_in_whole_chains_parents_first() {
        // 1,000 promoters in chains of 10, from promoter 300 on, ~60 items per call.
        let calls = import_calls(100, 10, 300, 60);
        assert_eq!(calls.first(), Some(&(30..33)));
        assert_eq!(calls.last(), Some(&(99..100)));
        let covered: Vec<usize> = calls.iter().flat_map(|r| r.clone()).collect();
        assert_eq!(covered, (30..100).collect::<Vec<_>>());
        // A batch smaller than one chain still makes progress, one chain per call.
        assert_eq!(import_calls(3, 10, 0, 1), vec![0..1, 1..2, 2..3]);
        // 1M promoters at the default batch: 20 calls of 5,000 chains.
        assert_eq!(import_calls(100_000, 10, 0, 100_000).len(), 20);

        let mut promoters = std::collections::HashSet::new();
        let mut bindings = 0;
        for range in &calls {
            for it in network_items(range.clone(), 10) {
                match it.item.unwrap() {
                    pb::import_network_request::Item::Promoter(p) => {
                        let parent = p.parent.unwrap();
                        assert!(parent.is_empty() || promoters.contains(&parent));
                        assert_eq!(parent.is_empty(), p.id.ends_with("-1"));
                        promoters.insert(p.id);
                    }
                    pb::import_network_request::Item::Binding(b) => {
                        assert!(promoters.contains(&b.promoter));
                        bindings += 1;
                    }
                }
            }
        }
        assert_eq!(promoters.len(), 700);
        assert_eq!(bindings, 700);
        let net = chains(100, 10);
        assert!(promoters.contains(&net.promoter(99, 10)));
        assert!(!promoters.contains(&net.promoter(29, 10)));
    }

    #[test]
    fn generated_rule_sets_pay_every_order_by_the_default_rule() {
        use crate::domain::engine::{self, Context, Inputs};
        use crate::domain::network::{NetworkSnapshot, PromoterNode, Status};
        use crate::domain::split::Account;
        for rules in [1, 2, 20, 1000] {
            let doc = ruleset_document(rules);
            assert!(doc.len() <= crate::domain::ruleset::MAX_DOCUMENT_BYTES);
            let c = crate::domain::ruleset::compile(&doc);
            assert!(c.errors.is_empty(), "{rules} rules: {:?}", c.errors);
            let rs = c.ruleset.unwrap();
            assert_eq!(rs.rules.len(), rules);
            assert_eq!(rs.max_levels as usize, MAX_LEVELS);
            let net = chains(50, 10);
            let gen = OrderGen {
                seed: 11,
                prefix: "bench-rules".into(),
                refund_ratio: 0.0,
                shape: OrderShape {
                    lines: Some(3),
                    levels: Some(10),
                    network: net,
                    ..OrderShape::default()
                },
            };
            for n in 0..40 {
                let g = gen.order(n);
                let order = Order::parse(&raw_order(&g.order).unwrap(), "order").unwrap();
                let chain: usize = g.order.buyer.split('-').nth(2).unwrap().parse().unwrap();
                let mut snap = NetworkSnapshot::default();
                for d in 1..=10 {
                    snap.insert(PromoterNode {
                        id: net.promoter(chain, d),
                        parent: (d > 1).then(|| net.promoter(chain, d - 1)),
                        grade: None,
                        status: Status::Active,
                    });
                }
                snap.bound = Some(net.promoter(chain, 10));
                let inputs = Inputs {
                    network: &snap,
                    context: Context::default(),
                    ruleset_version: 1,
                    fingerprint: String::new(),
                    now: chrono::Utc::now(),
                };
                let r = engine::compute(&order, &rs, &inputs).expect("computes");
                let pieces: Vec<_> = r
                    .lines
                    .iter()
                    .flat_map(|l| &l.shares)
                    .flat_map(|s| &s.explanations)
                    .filter(|e| e.level >= 1)
                    .collect();
                assert!(!pieces.is_empty());
                assert!(
                    pieces.iter().all(|e| e.rule_id == "default"),
                    "{rules} rules, order {n}"
                );
                let promoters = r
                    .totals
                    .iter()
                    .filter(|t| matches!(t.account, Account::Promoter(_)))
                    .count();
                assert_eq!(promoters, 10, "ten levels paid");
            }
        }
    }

    #[test]
    fn a_grpc_frame_is_a_flag_a_big_endian_length_and_the_message() {
        use prost::Message as _;
        assert_eq!(grpc_frame(&[]), [0, 0, 0, 0, 0]);
        let req = pb::GetUplineRequest {
            promoter: "net-p-7-10".into(),
            max_depth: 10,
        };
        let frame = grpc_frame(&req.encode_to_vec());
        assert_eq!(frame[0], 0);
        let len = u32::from_be_bytes(frame[1..5].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 5);
        assert_eq!(pb::GetUplineRequest::decode(&frame[5..]).unwrap(), req);
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
