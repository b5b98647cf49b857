//! After the sale, end to end: a busy month of payments, refunds, redemptions and payouts
//! that reconciles to zero; concurrent payout batches and refunds; precise error codes.

use std::collections::{BTreeMap, BTreeSet};

use prorata::grpc::pb;
use prorata::grpc::pb::commission_service_client::CommissionServiceClient;
use prorata::grpc::pb::settlement_service_client::SettlementServiceClient;
use tonic::transport::Channel;
use tonic::Code;

use crate::both_backends;
use crate::helpers::{connect, dec, minor, order, ts, Backend, TestApp};

type Settle = SettlementServiceClient<Channel>;

/// xorshift64*: a deterministic pseudo-random sequence, no crate needed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in 0..n.
    fn below(&mut self, n: u64) -> u64 {
        (self.next() >> 11) % n
    }
    /// Uniform in lo..=hi.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }
    /// True with probability num/den.
    fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }
}

/// What the test knows of one line: what was paid for it, and what is left of it.
#[derive(Debug, Clone)]
struct ModelLine {
    id: String,
    card: bool,
    /// Neither redeemed nor refunded, minor units.
    remaining: i64,
    /// Card uses neither redeemed nor refunded.
    unused: u32,
}

impl ModelLine {
    /// PRODUCT.md §6: Rem × k / U rounded down; the last uses take everything left.
    fn value_of_uses(&self, k: u32) -> i64 {
        if k >= self.unused {
            self.remaining
        } else {
            (i128::from(self.remaining) * i128::from(k) / i128::from(self.unused)) as i64
        }
    }
}

/// What the order system knows of one order.
#[derive(Debug, Clone)]
struct ModelOrder {
    order: pb::Order,
    paid: i64,
    refunded: i64,
    lines: Vec<ModelLine>,
    /// Movements recorded so far (for fresh refund and redemption ids).
    moves: u32,
}

impl ModelOrder {
    fn id(&self) -> &str {
        &self.order.id
    }
    fn next_id(&mut self, prefix: &str) -> String {
        self.moves += 1;
        format!("{prefix}-{}-{}", self.order.id, self.moves)
    }
}

fn settle(ch: &Channel) -> Settle {
    SettlementServiceClient::new(ch.clone())
}

fn net(b: &pb::Balance) -> i64 {
    b.deferred_minor + b.pending_minor + b.available_minor - b.debt_minor
        + b.in_payout_minor
        + b.paid_minor
}

/// An account's CNY balance (zeros when it has no entries).
async fn balance(s: &mut Settle, account: &str) -> pb::Balance {
    let r = s
        .get_balance(pb::GetBalanceRequest {
            account: account.into(),
            as_of: None,
        })
        .await
        .unwrap_or_else(|e| panic!("balance of {account}: {e}"))
        .into_inner();
    assert_eq!(r.account, account);
    assert!(r.balances.len() <= 1, "one currency only: {:?}", r.balances);
    r.balances.into_iter().next().unwrap_or_default()
}

/// Every entry of an account, oldest first, paging by 200.
async fn entries(s: &mut Settle, account: &str) -> Vec<pb::Entry> {
    let mut out: Vec<pb::Entry> = Vec::new();
    let mut token = String::new();
    loop {
        let page = s
            .list_entries(pb::ListEntriesRequest {
                account: account.into(),
                page_size: 200,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("entries of {account}: {e}"))
            .into_inner();
        assert!(page.entries.len() <= 200);
        out.extend(page.entries);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert!(
        out.windows(2).all(|w| w[0].id < w[1].id),
        "entries of {account} are oldest first, without repeats"
    );
    assert!(out.iter().all(|e| e.account == account));
    out
}

/// Lines of a movement as (line id, amount), after checking that every line's shares sum
/// to it, none is negative, and the totals sum to the lines.
fn movement_lines(m: &pb::Movement) -> Vec<(String, i64)> {
    let mut sum = 0;
    for l in &m.lines {
        let shares: i64 = l.shares.iter().map(|s| s.amount_minor).sum();
        assert_eq!(shares, l.paid_minor, "movement {} line {}", m.id, l.line_id);
        assert!(l.shares.iter().all(|s| s.amount_minor >= 0), "{m:?}");
        sum += l.paid_minor;
    }
    let totals: i64 = m.totals.iter().map(|t| t.amount_minor).sum();
    assert_eq!(totals, sum, "movement {} totals", m.id);
    m.lines
        .iter()
        .map(|l| (l.line_id.clone(), l.paid_minor))
        .collect()
}

/// One partial refund: `(line index, amount or uses)` pieces, checked against the model
/// and applied to it; the reversal's totals leave `nets`.
async fn refund_pieces(
    s: &mut Settle,
    o: &mut ModelOrder,
    pieces: &[(usize, i64)],
    nets: &mut BTreeMap<String, i64>,
) {
    let mut lines = Vec::new();
    let mut want = Vec::new();
    for &(i, q) in pieces {
        let l = &o.lines[i];
        if l.card {
            want.push((l.id.clone(), l.value_of_uses(q as u32)));
            lines.push(pb::RefundLine {
                line_id: l.id.clone(),
                amount: None,
                uses: q as u32,
            });
        } else {
            want.push((l.id.clone(), q));
            lines.push(pb::RefundLine {
                line_id: l.id.clone(),
                amount: minor(q),
                uses: 0,
            });
        }
    }
    let refund_id = o.next_id("R");
    let m = s
        .refund(pb::RefundRequest {
            order_id: o.id().into(),
            refund_id: refund_id.clone(),
            lines,
            full: false,
        })
        .await
        .unwrap_or_else(|e| panic!("refund {refund_id} {pieces:?} of {:?}: {e}", o.lines))
        .into_inner()
        .reversal
        .unwrap();
    assert_eq!(
        (m.id.as_str(), m.order_id.as_str()),
        (refund_id.as_str(), o.id())
    );
    assert_eq!(movement_lines(&m), want, "refund {refund_id}");
    for (&(i, q), (_, amount)) in pieces.iter().zip(&want) {
        let l = &mut o.lines[i];
        l.remaining -= amount;
        if l.card {
            l.unused -= q as u32;
        }
        o.refunded += amount;
    }
    for t in &m.totals {
        *nets.entry(t.account.clone()).or_default() -= t.amount_minor;
    }
}

/// A full refund: everything that remains, checked against the model.
async fn refund_all(s: &mut Settle, o: &mut ModelOrder, nets: &mut BTreeMap<String, i64>) {
    let want: Vec<(String, i64)> = o
        .lines
        .iter()
        .filter(|l| l.remaining > 0)
        .map(|l| (l.id.clone(), l.remaining))
        .collect();
    let refund_id = o.next_id("R");
    let m = s
        .refund(pb::RefundRequest {
            order_id: o.id().into(),
            refund_id: refund_id.clone(),
            lines: vec![],
            full: true,
        })
        .await
        .unwrap_or_else(|e| panic!("full refund {refund_id}: {e}"))
        .into_inner()
        .reversal
        .unwrap();
    assert_eq!(movement_lines(&m), want, "full refund {refund_id}");
    for l in &mut o.lines {
        o.refunded += l.remaining;
        l.remaining = 0;
        l.unused = 0;
    }
    for t in &m.totals {
        *nets.entry(t.account.clone()).or_default() -= t.amount_minor;
    }
}

/// Redeems some uses of a random card line that has any left.
async fn redeem_some(s: &mut Settle, o: &mut ModelOrder, rng: &mut Rng) {
    let cards: Vec<usize> = (0..o.lines.len())
        .filter(|&i| o.lines[i].card && o.lines[i].unused > 0)
        .collect();
    if cards.is_empty() {
        return;
    }
    let i = cards[rng.below(cards.len() as u64) as usize];
    let k = rng.range(1, i64::from(o.lines[i].unused)) as u32;
    let want = o.lines[i].value_of_uses(k);
    let redemption_id = o.next_id("D");
    let m = s
        .redeem(pb::RedeemRequest {
            order_id: o.id().into(),
            line_id: o.lines[i].id.clone(),
            redemption_id: redemption_id.clone(),
            uses: k,
        })
        .await
        .unwrap_or_else(|e| panic!("redemption {redemption_id}: {e}"))
        .into_inner()
        .redemption
        .unwrap();
    assert_eq!(
        movement_lines(&m),
        vec![(o.lines[i].id.clone(), want)],
        "redemption {redemption_id} of {k} uses of {:?}",
        o.lines[i]
    );
    o.lines[i].remaining -= want;
    o.lines[i].unused -= k;
}

/// Pieces of a partial refund: each strictly less than what remains of its line.
fn partial_pieces(o: &ModelOrder, rng: &mut Rng) -> Vec<(usize, i64)> {
    let candidates: Vec<usize> = (0..o.lines.len())
        .filter(|&i| {
            let l = &o.lines[i];
            if l.card {
                l.unused >= 2
            } else {
                l.remaining >= 2
            }
        })
        .collect();
    if candidates.is_empty() {
        return vec![];
    }
    let mut chosen: Vec<usize> = candidates
        .iter()
        .copied()
        .filter(|_| rng.chance(1, 2))
        .collect();
    if chosen.is_empty() {
        chosen.push(candidates[rng.below(candidates.len() as u64) as usize]);
    }
    chosen
        .into_iter()
        .map(|i| {
            let l = &o.lines[i];
            let q = if l.card {
                rng.range(1, i64::from(l.unused) - 1)
            } else {
                rng.range(1, l.remaining - 1)
            };
            (i, q)
        })
        .collect()
}

/// A random order of the busy month: 1–3 lines, some prepaid cards, some discounts, some
/// shipping, three merchants, three channels, 25 buyers (5 without a promoter).
fn busy_order(i: usize, rng: &mut Rng) -> ModelOrder {
    let start = ts("2026-11-01T00:00:00Z").unwrap().seconds;
    let mut o = pb::Order {
        id: format!("O-{i:04}"),
        merchant: format!("M{}", rng.below(3)),
        buyer: format!("C{:02}", rng.below(25)),
        paid_at: Some(prost_types::Timestamp {
            seconds: start + rng.below(20 * 86_400) as i64,
            nanos: 0,
        }),
        currency: "CNY".into(),
        channel: ["", "card", "alipay"][rng.below(3) as usize].into(),
        ..Default::default()
    };
    let mut lines = Vec::new();
    let mut paid = 0;
    for j in 0..1 + rng.below(3) {
        let card = rng.chance(1, 5);
        let quantity = if card { 1 } else { rng.range(1, 3) };
        let unit = rng.range(100, 50_000);
        let gross = quantity * unit;
        let discount = if !card && rng.chance(1, 6) {
            gross / 10
        } else {
            0
        };
        let uses = if card { rng.range(2, 10) as u32 } else { 0 };
        o.lines.push(pb::OrderLine {
            id: format!("L{j}"),
            sku: format!("SKU-{}", rng.below(40)),
            category: ["misc", "beauty", "books"][rng.below(3) as usize].into(),
            quantity,
            unit_price: minor(unit),
            discount: if discount > 0 { minor(discount) } else { None },
            uses,
            ..Default::default()
        });
        lines.push(ModelLine {
            id: format!("L{j}"),
            card,
            remaining: gross - discount,
            unused: uses,
        });
        paid += gross - discount;
    }
    if rng.chance(1, 3) {
        let shipping = rng.range(500, 2_000);
        o.shipping = minor(shipping);
        lines.push(ModelLine {
            id: "shipping".into(),
            card: false,
            remaining: shipping,
            unused: 0,
        });
        paid += shipping;
    }
    ModelOrder {
        order: o,
        paid,
        refunded: 0,
        lines,
        moves: 0,
    }
}

/// Pays a worker's orders; returns them with the per-account totals of their splits.
async fn pay_orders(
    ch: Channel,
    orders: Vec<ModelOrder>,
) -> (Vec<ModelOrder>, BTreeMap<String, i64>) {
    let mut c = CommissionServiceClient::new(ch);
    let mut nets: BTreeMap<String, i64> = BTreeMap::new();
    for o in &orders {
        let s = c
            .compute(pb::ComputeRequest {
                order: Some(o.order.clone()),
            })
            .await
            .unwrap_or_else(|e| panic!("compute {}: {e}", o.id()))
            .into_inner()
            .split
            .unwrap();
        assert_eq!(s.paid_minor, o.paid, "{}", o.id());
        let lines: Vec<(String, i64)> = s
            .lines
            .iter()
            .map(|l| (l.line_id.clone(), l.paid_minor))
            .collect();
        let want: Vec<(String, i64)> = o
            .lines
            .iter()
            .map(|l| (l.id.clone(), l.remaining))
            .collect();
        assert_eq!(lines, want, "{}", o.id());
        assert_eq!(
            s.totals.iter().map(|t| t.amount_minor).sum::<i64>(),
            o.paid,
            "{}",
            o.id()
        );
        for t in &s.totals {
            *nets.entry(t.account.clone()).or_default() += t.amount_minor;
        }
    }
    (orders, nets)
}

/// Refunds (a third of the orders, in partial pieces, some fully) and redeems card uses.
async fn settle_orders(
    ch: Channel,
    mut orders: Vec<ModelOrder>,
    seed: u64,
) -> (Vec<ModelOrder>, BTreeMap<String, i64>, usize) {
    let mut s = settle(&ch);
    let mut rng = Rng::new(seed);
    let mut nets: BTreeMap<String, i64> = BTreeMap::new();
    let mut refunded_orders = 0;
    for o in &mut orders {
        if rng.chance(1, 2) {
            redeem_some(&mut s, o, &mut rng).await;
        }
        if rng.chance(1, 3) {
            refunded_orders += 1;
            for _ in 0..rng.range(1, 3) {
                let pieces = partial_pieces(o, &mut rng);
                if !pieces.is_empty() {
                    refund_pieces(&mut s, o, &pieces, &mut nets).await;
                }
            }
            if rng.chance(1, 4) {
                refund_all(&mut s, o, &mut nets).await;
                assert!(o.lines.iter().all(|l| l.remaining == 0 && l.unused == 0));
            }
        }
        if rng.chance(1, 3) {
            redeem_some(&mut s, o, &mut rng).await;
        }
    }
    (orders, nets, refunded_orders)
}

/// What was redeemed of an order so far (paid − refunded − remaining).
fn redeemed(o: &ModelOrder) -> i64 {
    o.paid - o.refunded - o.lines.iter().map(|l| l.remaining).sum::<i64>()
}

fn merge(into: &mut BTreeMap<String, i64>, from: BTreeMap<String, i64>) {
    for (k, v) in from {
        *into.entry(k).or_default() += v;
    }
}

async fn create_payout(s: &mut Settle, batch: &str) -> pb::CreatePayoutResponse {
    s.create_payout(pb::CreatePayoutRequest {
        batch_id: batch.into(),
        as_of: None,
        minimum_minor: 0,
    })
    .await
    .unwrap_or_else(|e| panic!("payout {batch}: {e}"))
    .into_inner()
}

async fn confirm(s: &mut Settle, batch: &str, account: &str, outcome: pb::PayoutOutcome) {
    let r = s
        .confirm_payout(pb::ConfirmPayoutRequest {
            batch_id: batch.into(),
            account: account.into(),
            outcome: outcome as i32,
        })
        .await
        .unwrap_or_else(|e| panic!("confirm {batch} {account}: {e}"))
        .into_inner();
    assert!(!r.replayed);
}

fn external(orders: &[ModelOrder]) -> Vec<pb::ExternalOrder> {
    orders
        .iter()
        .map(|o| pb::ExternalOrder {
            order_id: o.id().into(),
            amount_paid_minor: o.paid,
            amount_refunded_minor: o.refunded,
        })
        .collect()
}

const BUSY_RULES: &str = "hold_days: 0
payment_fee: {default: '0.006', by_channel: {card: '0.029'}}
platform: {rate: '0.05', partners: [{id: ops, share: '0.20'}]}
rules:
- id: beauty
  priority: 10
  when: {category: [beauty]}
  levels: ['0.15', '0.08', '0.03']
- id: general
  levels: ['0.10', '0.05']
";

async fn a_busy_month_of_payments_refunds_redemptions_and_payouts_reconciles_to_zero(
    backend: Backend,
) {
    let Some(mut app) = TestApp::spawn(backend).await else {
        return;
    };
    let started = std::time::Instant::now();
    app.publish(BUSY_RULES).await;
    for (p, parent) in [
        ("P1", None),
        ("P2", Some("P1")),
        ("P3", Some("P1")),
        ("P4", Some("P2")),
        ("P5", Some("P4")),
        ("P6", Some("P3")),
    ] {
        app.promoter(p, parent).await;
    }
    // C00–C19 are bound; C20–C24 buy without a promoter.
    for c in 0..20 {
        app.bind(&format!("C{c:02}"), &format!("P{}", 1 + c % 6))
            .await;
    }
    let mut rng = Rng::new(0x5EED_2026_1101);
    let orders: Vec<ModelOrder> = (0..500).map(|i| busy_order(i, &mut rng)).collect();
    assert!(orders.iter().any(|o| o.lines.iter().any(|l| l.card)));
    assert!(orders.iter().any(|o| o.order.shipping.is_some()));

    const WORKERS: usize = 8;
    let mut channels = Vec::new();
    for _ in 0..WORKERS {
        channels.push(connect(app.addr).await);
    }
    let mut buckets: Vec<Vec<ModelOrder>> = (0..WORKERS).map(|_| Vec::new()).collect();
    for (i, o) in orders.into_iter().enumerate() {
        buckets[i % WORKERS].push(o);
    }

    // Pay 500 orders over 8 connections. `nets` is what each account should hold in the
    // end: its shares minus what reversals took back.
    let mut nets: BTreeMap<String, i64> = BTreeMap::new();
    let tasks: Vec<_> = buckets
        .into_iter()
        .enumerate()
        .map(|(w, b)| tokio::spawn(pay_orders(channels[w].clone(), b)))
        .collect();
    let mut buckets = Vec::new();
    for t in tasks {
        let (b, n) = t.await.unwrap();
        buckets.push(b);
        merge(&mut nets, n);
    }
    assert_eq!(app.count("splits").await, 500);
    let paid_at = started.elapsed();

    // Refunds and redemptions, each order's in sequence, the orders concurrently.
    let tasks: Vec<_> = buckets
        .into_iter()
        .enumerate()
        .map(|(w, b)| {
            tokio::spawn(settle_orders(
                channels[w].clone(),
                b,
                0xC0FF_EE00 + w as u64,
            ))
        })
        .collect();
    let mut orders: Vec<ModelOrder> = Vec::new();
    let mut refunded_orders = 0;
    for t in tasks {
        let (b, n, r) = t.await.unwrap();
        orders.extend(b);
        merge(&mut nets, n);
        refunded_orders += r;
    }
    orders.sort_by(|a, b| a.order.id.cmp(&b.order.id));
    assert!(
        (120..=220).contains(&refunded_orders),
        "about a third refunded: {refunded_orders}"
    );
    assert!(orders.iter().any(|o| o.refunded == 0 && redeemed(o) > 0));
    assert!(orders.iter().any(|o| o.refunded > 0 && o.refunded < o.paid));
    let fully = orders
        .iter()
        .filter(|o| o.refunded > 0 && o.lines.iter().all(|l| l.remaining == 0))
        .count();
    assert!(fully > 0, "some orders are refunded fully");
    let settled_at = started.elapsed();

    let accounts: Vec<String> = nets.keys().cloned().collect();
    let mut s = settle(&app.channel);
    let mut before: BTreeMap<String, pb::Balance> = BTreeMap::new();
    for a in &accounts {
        before.insert(a.clone(), balance(&mut s, a).await);
    }
    // Everything is past its availability time: nothing is pending, and the deferred
    // value is what remains unredeemed of card lines.
    assert!(before
        .values()
        .all(|b| b.pending_minor == 0 && b.in_payout_minor == 0));
    let deferred: i64 = before.values().map(|b| b.deferred_minor).sum();
    let unredeemed: i64 = orders
        .iter()
        .flat_map(|o| &o.lines)
        .filter(|l| l.card)
        .map(|l| l.remaining)
        .sum();
    assert_eq!(deferred, unredeemed);

    // Batch 1 pays every account with a positive available balance, exactly that.
    let b1 = create_payout(&mut s, "B1").await;
    assert!(!b1.replayed);
    let b1 = b1.batch.unwrap();
    let got: BTreeMap<String, i64> = b1
        .instructions
        .iter()
        .map(|i| (i.account.clone(), i.amount_minor))
        .collect();
    let want: BTreeMap<String, i64> = before
        .iter()
        .filter(|(_, b)| b.available_minor > 0)
        .map(|(a, b)| (a.clone(), b.available_minor))
        .collect();
    assert_eq!(got, want, "batch 1 instructions");
    assert_eq!(
        got.len(),
        b1.instructions.len(),
        "one instruction per account"
    );
    let mut failed: BTreeMap<String, pb::PayoutInstruction> = BTreeMap::new();
    let mut paid: BTreeMap<String, pb::PayoutInstruction> = BTreeMap::new();
    for (n, i) in b1.instructions.iter().enumerate() {
        assert_eq!(i.currency, "CNY");
        if n % 3 == 1 {
            confirm(&mut s, "B1", &i.account, pb::PayoutOutcome::Failed).await;
            failed.insert(i.account.clone(), i.clone());
        } else {
            confirm(&mut s, "B1", &i.account, pb::PayoutOutcome::Paid).await;
            paid.insert(i.account.clone(), i.clone());
        }
    }
    assert!(!failed.is_empty() && !paid.is_empty());
    // An identical retry (as_of left out again) replays the stored batch.
    let again = create_payout(&mut s, "B1").await;
    assert!(again.replayed);
    assert_eq!(again.batch.as_ref(), Some(&b1));

    // Batch 2: exactly the accounts whose instruction failed, for the same entries.
    let b2 = create_payout(&mut s, "B2").await.batch.unwrap();
    let got: BTreeMap<String, (i64, u64)> = b2
        .instructions
        .iter()
        .map(|i| (i.account.clone(), (i.amount_minor, i.entries)))
        .collect();
    let want: BTreeMap<String, (i64, u64)> = failed
        .iter()
        .map(|(a, i)| (a.clone(), (i.amount_minor, i.entries)))
        .collect();
    assert_eq!(got, want, "batch 2 = the failed instructions of batch 1");
    for a in &accounts {
        let list = entries(&mut s, a).await;
        let sum_of = |status: &str| -> (i64, u64) {
            let e: Vec<&pb::Entry> = list.iter().filter(|e| e.status == status).collect();
            (e.iter().map(|e| e.amount_minor).sum(), e.len() as u64)
        };
        let (paid_sum, in_payout_sum) = (sum_of("paid"), sum_of("in_payout"));
        match (paid.get(a), failed.get(a)) {
            (Some(i), _) => {
                assert_eq!(paid_sum, (i.amount_minor, i.entries), "{a}: paid entries");
                assert_eq!(in_payout_sum, (0, 0), "{a}: nothing paid is paid again");
            }
            (_, Some(i)) => {
                assert_eq!(paid_sum, (0, 0), "{a}");
                assert_eq!(in_payout_sum, (i.amount_minor, i.entries), "{a}");
            }
            _ => assert_eq!((paid_sum, in_payout_sum), ((0, 0), (0, 0)), "{a}"),
        }
        let b = balance(&mut s, a).await;
        assert_eq!(b.available_minor, 0, "{a}: {b:?}");
    }
    for i in &b2.instructions {
        confirm(&mut s, "B2", &i.account, pb::PayoutOutcome::Paid).await;
    }

    // Refunds after payout: what was paid is owed back (debt), and nets move.
    let mut late = 0;
    for o in orders.iter_mut() {
        if late == 12 {
            break;
        }
        let Some(i) = o.lines.iter().position(|l| !l.card && l.remaining >= 2) else {
            continue;
        };
        let q = o.lines[i].remaining / 2;
        refund_pieces(&mut s, o, &[(i, q)], &mut nets).await;
        late += 1;
    }
    let b3 = create_payout(&mut s, "B3").await.batch.unwrap();
    assert!(
        b3.instructions.is_empty(),
        "after late refunds nothing is available: {:?}",
        b3.instructions
    );

    // Every balance adds up to its entries, and to shares minus reversals.
    let mut debt = 0;
    for a in &accounts {
        let list = entries(&mut s, a).await;
        let b = balance(&mut s, a).await;
        let sum: i64 = list.iter().map(|e| e.amount_minor).sum();
        assert_eq!(net(&b), sum, "{a}: {b:?}");
        assert_eq!(sum, nets[a], "{a}: entries vs shares minus reversals");
        let paid_entries: i64 = list
            .iter()
            .filter(|e| e.status == "paid")
            .map(|e| e.amount_minor)
            .sum();
        assert_eq!(b.paid_minor, paid_entries, "{a}");
        let deferred_entries: i64 = list
            .iter()
            .filter(|e| e.status == "deferred")
            .map(|e| e.amount_minor)
            .sum();
        assert_eq!(b.deferred_minor, deferred_entries, "{a}");
        assert_eq!(b.in_payout_minor, 0, "{a}");
        assert!(list.iter().all(|e| e.status != "pending"), "{a}");
        debt += b.debt_minor;
    }
    assert!(debt > 0, "late refunds leave debt");

    let t0 = std::time::Instant::now();
    let mut r = s
        .reconcile(pb::ReconcileRequest {
            orders: external(&orders),
        })
        .await
        .unwrap_or_else(|e| panic!("Reconcile of 500 orders, after {:?}: {e:?}", t0.elapsed()))
        .into_inner();
    let reconciled_in = t0.elapsed();
    assert_eq!(r.discrepancies, vec![], "reconciliation");
    assert_eq!(r.orders_checked, 500);
    assert_eq!(r.accounts_checked, accounts.len() as u64);

    // One paid amount off by a minor unit, one order prorata never saw.
    let mut ext = external(&orders);
    ext[137].amount_paid_minor += 1;
    ext.push(pb::ExternalOrder {
        order_id: "O-NEVER-SEEN".into(),
        amount_paid_minor: 1_000,
        amount_refunded_minor: 0,
    });
    r = s
        .reconcile(pb::ReconcileRequest { orders: ext })
        .await
        .unwrap_or_else(|e| panic!("Reconcile of 500 orders: {e:?}"))
        .into_inner();
    let mut found: Vec<(String, String)> = r
        .discrepancies
        .iter()
        .map(|d| (d.kind.clone(), d.subject.clone()))
        .collect();
    found.sort();
    assert_eq!(
        found,
        vec![
            ("mismatched".to_string(), orders[137].id().to_string()),
            ("missing".to_string(), "O-NEVER-SEEN".to_string()),
        ],
        "{:?}",
        r.discrepancies
    );
    assert_eq!(r.orders_checked, 500);
    // And an order left out of the file is one prorata knows and the order system not.
    let mut ext = external(&orders);
    let left_out = ext.remove(250);
    r = s
        .reconcile(pb::ReconcileRequest { orders: ext })
        .await
        .unwrap_or_else(|e| panic!("Reconcile of 500 orders: {e:?}"))
        .into_inner();
    let found: Vec<(&str, &str)> = r
        .discrepancies
        .iter()
        .map(|d| (d.kind.as_str(), d.subject.as_str()))
        .collect();
    assert_eq!(found, vec![("unknown", left_out.order_id.as_str())]);
    eprintln!(
        "busy month on {backend:?}: paid 500 in {paid_at:?}, settled by {settled_at:?}, one Reconcile took {reconciled_in:?}, done in {:?}",
        started.elapsed()
    );
    app.shutdown().await;
}
both_backends!(a_busy_month_of_payments_refunds_redemptions_and_payouts_reconciles_to_zero);

async fn concurrent_payout_batches_never_pay_an_entry_twice(backend: Backend) {
    let Some(mut app) = TestApp::spawn(backend).await else {
        return;
    };
    app.publish(
        "hold_days: 0\nplatform: {rate: '0.05'}\nrules: [{id: all, levels: ['0.10', '0.05']}]\n",
    )
    .await;
    for i in 0..30 {
        let parent = (i > 0).then(|| format!("P{:02}", (i - 1) / 2));
        app.promoter(&format!("P{i:02}"), parent.as_deref()).await;
        app.bind(&format!("C{i:02}"), &format!("P{i:02}")).await;
    }
    let mut accounts = BTreeSet::new();
    for j in 0..60 {
        let o = order(
            &format!("O-{j:02}"),
            &format!("C{:02}", j % 30),
            &format!("{}.{:02}", 50 + j, (j * 37) % 100),
        );
        let s = app
            .commission
            .compute(pb::ComputeRequest { order: Some(o) })
            .await
            .unwrap()
            .into_inner()
            .split
            .unwrap();
        accounts.extend(s.totals.iter().map(|t| t.account.clone()));
    }
    assert_eq!(
        accounts.len(),
        32,
        "30 promoters, the merchant and the platform"
    );
    let mut s = settle(&app.channel);
    let mut available = 0;
    for a in &accounts {
        let b = balance(&mut s, a).await;
        assert!(b.available_minor > 0, "{a}: {b:?}");
        available += b.available_minor;
    }

    let as_of = Some(prost_types::Timestamp {
        seconds: chrono::Utc::now().timestamp(),
        nanos: 0,
    });
    let mut tasks = Vec::new();
    for k in 0..8 {
        let ch = connect(app.addr).await;
        tasks.push(tokio::spawn(async move {
            settle(&ch)
                .create_payout(pb::CreatePayoutRequest {
                    batch_id: format!("B-{k}"),
                    as_of,
                    minimum_minor: 0,
                })
                .await
                .expect("create payout")
                .into_inner()
        }));
    }
    let mut batches = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert!(!r.replayed);
        batches.push(r.batch.unwrap());
    }
    let mut seen: BTreeMap<String, (String, i64)> = BTreeMap::new();
    let (mut total, mut listed) = (0, 0);
    for b in &batches {
        for i in &b.instructions {
            assert!(
                seen.insert(i.account.clone(), (b.batch_id.clone(), i.amount_minor))
                    .is_none(),
                "{} is in two batches",
                i.account
            );
            total += i.amount_minor;
            listed += i.entries as i64;
        }
    }
    assert_eq!(
        total, available,
        "the batches pay exactly what was available"
    );
    assert_eq!(seen.len(), accounts.len());
    let mut entry_count = 0;
    for a in &accounts {
        let b = balance(&mut s, a).await;
        assert_eq!(b.available_minor, 0, "{a}: {b:?}");
        assert_eq!(b.in_payout_minor, seen[a].1, "{a}: {b:?}");
        let list = entries(&mut s, a).await;
        assert!(
            list.iter().all(|e| e.status == "in_payout"),
            "{a}: {list:?}"
        );
        entry_count += list.len() as i64;
    }
    assert_eq!(listed, entry_count, "every entry is in exactly one batch");
    assert_eq!(app.count("payout_entries").await, entry_count);
    assert_eq!(app.count("payout_batches").await, 8);

    // A replay returns the stored batch; other parameters under the same id conflict.
    let b = &batches[3];
    let again = s
        .create_payout(pb::CreatePayoutRequest {
            batch_id: b.batch_id.clone(),
            as_of,
            minimum_minor: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(again.replayed);
    assert_eq!(again.batch.as_ref(), Some(b));
    for (min, at) in [(1, as_of), (0, ts("2026-11-15T00:00:00Z"))] {
        let e = s
            .create_payout(pb::CreatePayoutRequest {
                batch_id: b.batch_id.clone(),
                as_of: at,
                minimum_minor: min,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    }
    assert_eq!(app.count("payout_entries").await, entry_count);
    assert_eq!(app.count("payout_batches").await, 8);
    // Without as_of ("now"), an identical retry is a replay too; nothing is left to pay.
    let now_batch = create_payout(&mut s, "B-NOW").await;
    assert!(!now_batch.replayed);
    let now_batch = now_batch.batch.unwrap();
    assert!(now_batch.instructions.is_empty(), "{now_batch:?}");
    let again = create_payout(&mut s, "B-NOW").await;
    assert!(again.replayed);
    assert_eq!(again.batch, Some(now_batch));
    assert_eq!(app.count("payout_batches").await, 9);
    app.shutdown().await;
}
both_backends!(concurrent_payout_batches_never_pay_an_entry_twice);

async fn concurrent_refunds_of_one_order_never_take_back_more_than_was_paid(backend: Backend) {
    let Some(mut app) = TestApp::spawn(backend).await else {
        return;
    };
    app.publish(
        "hold_days: 0\npayment_fee: {default: '0.006'}\nplatform: {rate: '0.05', partners: [{id: ops, share: '0.3'}]}\nrules: [{id: all, levels: ['0.10', '0.05', '0.02']}]\n",
    )
    .await;
    app.promoter("P1", None).await;
    app.promoter("P2", Some("P1")).await;
    app.promoter("P3", Some("P2")).await;
    app.bind("C1", "P3").await;
    let split = app
        .commission
        .compute(pb::ComputeRequest {
            order: Some(order("O-1", "C1", "100.00")),
        })
        .await
        .unwrap()
        .into_inner()
        .split
        .unwrap();
    let accounts: Vec<String> = split.totals.iter().map(|t| t.account.clone()).collect();
    assert_eq!(accounts.len(), 7, "{accounts:?}");
    let mut channels = Vec::new();
    for _ in 0..5 {
        channels.push(connect(app.addr).await);
    }
    let refund = |order_id: &str, refund_id: String| pb::RefundRequest {
        order_id: order_id.into(),
        refund_id,
        lines: vec![pb::RefundLine {
            line_id: "L1".into(),
            amount: dec("10.00"),
            uses: 0,
        }],
        full: false,
    };
    let mut tasks = Vec::new();
    for i in 0..20 {
        let mut s = settle(&channels[i % 5]);
        let req = refund("O-1", format!("R-{i}"));
        tasks.push(tokio::spawn(async move { s.refund(req).await }));
    }
    let (mut ok, mut refused, mut taken) = (0, 0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(r) => {
                ok += 1;
                let m = r.into_inner().reversal.unwrap();
                assert_eq!(movement_lines(&m), vec![("L1".to_string(), 1_000)]);
                taken += m.totals.iter().map(|t| t.amount_minor).sum::<i64>();
            }
            Err(e) if e.code() == Code::FailedPrecondition => refused += 1,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!((ok, refused), (10, 10));
    assert_eq!(taken, 10_000);
    let mut s = settle(&app.channel);
    let full = s
        .refund(pb::RefundRequest {
            order_id: "O-1".into(),
            refund_id: "R-FULL".into(),
            lines: vec![],
            full: true,
        })
        .await
        .unwrap()
        .into_inner()
        .reversal
        .unwrap();
    assert!(full.totals.is_empty() && full.lines.is_empty(), "{full:?}");
    for a in &accounts {
        let list = entries(&mut s, a).await;
        let on_order: Vec<&pb::Entry> = list.iter().filter(|e| e.order_id == "O-1").collect();
        assert!(on_order.len() >= 2, "{a}: a share and reversals");
        assert_eq!(
            on_order.iter().map(|e| e.amount_minor).sum::<i64>(),
            0,
            "{a}: {on_order:?}"
        );
        assert_eq!(net(&balance(&mut s, a).await), 0, "{a}");
    }

    // Twenty concurrent copies of one refund: one is stored, all get the same reversal.
    app.commission
        .compute(pb::ComputeRequest {
            order: Some(order("O-2", "C1", "100.00")),
        })
        .await
        .unwrap();
    let movements = app.count("movements").await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let mut s = settle(&channels[i % 5]);
        let req = refund("O-2", "R-SAME".into());
        tasks.push(tokio::spawn(async move {
            let r = s.refund(req).await.expect("replayable refund");
            let fresh = r.metadata().get("prorata-replayed").unwrap() == "false";
            (r.into_inner().reversal.unwrap(), fresh)
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    assert!(answers.iter().all(|a| a.0 == answers[0].0));
    assert_eq!(
        movement_lines(&answers[0].0),
        vec![("L1".to_string(), 1_000)]
    );
    assert_eq!(answers.iter().filter(|a| a.1).count(), 1, "one was stored");
    assert_eq!(app.count("movements").await, movements + 1);
    app.shutdown().await;
}
both_backends!(concurrent_refunds_of_one_order_never_take_back_more_than_was_paid);

async fn refund_and_redemption_errors_have_precise_codes(backend: Backend) {
    let Some(mut app) = TestApp::spawn(backend).await else {
        return;
    };
    app.publish("hold_days: 0\nplatform: {rate: '0.10'}\nrules: [{id: all, levels: ['0.10']}]\n")
        .await;
    app.promoter("P1", None).await;
    app.bind("C1", "P1").await;
    let mut o = order("O-1", "C1", "100.00");
    o.lines.push(pb::OrderLine {
        id: "CARD".into(),
        sku: "CARD-5".into(),
        category: "misc".into(),
        quantity: 1,
        unit_price: dec("50.00"),
        uses: 5,
        ..Default::default()
    });
    app.commission
        .compute(pb::ComputeRequest { order: Some(o) })
        .await
        .unwrap();
    let mut s = settle(&app.channel);
    let line = |id: &str, amount: Option<pb::Money>, uses: u32| pb::RefundLine {
        line_id: id.into(),
        amount,
        uses,
    };
    let refund = |order_id: &str, refund_id: &str, lines: Vec<pb::RefundLine>| pb::RefundRequest {
        order_id: order_id.into(),
        refund_id: refund_id.into(),
        lines,
        full: false,
    };
    s.refund(refund("O-1", "R-1", vec![line("L1", dec("10.00"), 0)]))
        .await
        .unwrap();
    let movements = app.count("movements").await;
    let entries_before = app.count("entries").await;
    assert_eq!(movements, 1);

    let cases: Vec<(pb::RefundRequest, Code, &str)> = vec![
        (
            refund("O-404", "R-2", vec![line("L1", dec("1.00"), 0)]),
            Code::NotFound,
            "",
        ),
        (
            refund("O-1", "R-2", vec![line("L9", dec("1.00"), 0)]),
            Code::InvalidArgument,
            "lines[0].line_id",
        ),
        (
            refund("O-1", "R-2", vec![line("L1", dec("0.00"), 0)]),
            Code::InvalidArgument,
            "lines[0].amount",
        ),
        (
            refund("O-1", "R-2", vec![line("L1", None, 0)]),
            Code::InvalidArgument,
            "lines[0].amount",
        ),
        (
            refund("O-1", "R-2", vec![line("L1", dec("1.001"), 0)]),
            Code::InvalidArgument,
            "lines[0].amount",
        ),
        (
            refund("O-1", "R-2", vec![line("L1", None, 2)]),
            Code::InvalidArgument,
            "lines[0].uses",
        ),
        (
            refund("O-1", "R-2", vec![line("CARD", dec("5.00"), 0)]),
            Code::InvalidArgument,
            "lines[0].uses",
        ),
        (
            refund("O-1", "R-2", vec![line("L1", dec("90.01"), 0)]),
            Code::FailedPrecondition,
            "",
        ),
        (
            refund("O-1", "R-2", vec![line("CARD", None, 6)]),
            Code::FailedPrecondition,
            "",
        ),
        (
            refund("O-1", "R-1", vec![line("L1", dec("20.00"), 0)]),
            Code::AlreadyExists,
            "",
        ),
        (refund("O-1", "R-2", vec![]), Code::InvalidArgument, "lines"),
        (
            refund("O-1", "", vec![line("L1", dec("1.00"), 0)]),
            Code::InvalidArgument,
            "refund_id",
        ),
    ];
    for (req, code, prefix) in cases {
        let e = s.refund(req.clone()).await.unwrap_err();
        assert_eq!(e.code(), code, "{req:?}: {e:?}");
        assert!(
            e.message().starts_with(prefix),
            "{req:?}: {:?} should start with {prefix:?}",
            e.message()
        );
    }
    let mut full_with_lines = refund("O-1", "R-2", vec![line("L1", dec("1.00"), 0)]);
    full_with_lines.full = true;
    let e = s.refund(full_with_lines).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().starts_with("lines"), "{}", e.message());

    let redeem = |line_id: &str, id: &str, uses: u32| pb::RedeemRequest {
        order_id: "O-1".into(),
        line_id: line_id.into(),
        redemption_id: id.into(),
        uses,
    };
    let cases: Vec<(pb::RedeemRequest, Code, &str)> = vec![
        (redeem("L1", "D-1", 1), Code::FailedPrecondition, ""),
        (redeem("CARD", "D-1", 0), Code::InvalidArgument, "uses"),
        (redeem("CARD", "D-1", 6), Code::FailedPrecondition, ""),
        (redeem("L9", "D-1", 1), Code::InvalidArgument, "line_id"),
        (
            pb::RedeemRequest {
                order_id: "O-404".into(),
                ..redeem("CARD", "D-1", 1)
            },
            Code::NotFound,
            "",
        ),
    ];
    for (req, code, prefix) in cases {
        let e = s.redeem(req.clone()).await.unwrap_err();
        assert_eq!(e.code(), code, "{req:?}: {e:?}");
        assert!(
            e.message().starts_with(prefix),
            "{req:?}: {:?} should start with {prefix:?}",
            e.message()
        );
    }
    // The same redemption id with other content conflicts.
    s.redeem(redeem("CARD", "D-1", 2)).await.unwrap();
    let e = s.redeem(redeem("CARD", "D-1", 3)).await.unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    assert_eq!(app.count("movements").await, movements + 1);
    let movements = movements + 1;

    let batch = s
        .create_payout(pb::CreatePayoutRequest {
            batch_id: "B1".into(),
            as_of: None,
            minimum_minor: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .batch
        .unwrap();
    assert!(batch
        .instructions
        .iter()
        .any(|i| i.account == "promoter:P1"));
    let confirm = |account: &str, outcome: pb::PayoutOutcome| pb::ConfirmPayoutRequest {
        batch_id: "B1".into(),
        account: account.into(),
        outcome: outcome as i32,
    };
    let e = s
        .confirm_payout(confirm("promoter:P404", pb::PayoutOutcome::Paid))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = s
        .confirm_payout(pb::ConfirmPayoutRequest {
            batch_id: "B404".into(),
            ..confirm("promoter:P1", pb::PayoutOutcome::Paid)
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = s
        .confirm_payout(confirm("promoter:P1", pb::PayoutOutcome::Unspecified))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().starts_with("outcome"), "{}", e.message());
    let r = s
        .confirm_payout(confirm("promoter:P1", pb::PayoutOutcome::Paid))
        .await
        .unwrap()
        .into_inner();
    assert!(!r.replayed);
    let r = s
        .confirm_payout(confirm("promoter:P1", pb::PayoutOutcome::Paid))
        .await
        .unwrap()
        .into_inner();
    assert!(r.replayed, "confirming again the same way is a replay");
    let e = s
        .confirm_payout(confirm("promoter:P1", pb::PayoutOutcome::Failed))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert_eq!(app.count("payout_confirmations").await, 1);
    let e = s
        .create_payout(pb::CreatePayoutRequest {
            batch_id: "B2".into(),
            as_of: None,
            minimum_minor: -1,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().starts_with("minimum_minor"), "{}", e.message());

    for bad in ["", "nobody", "promoter:", "shopper:X"] {
        let e = s
            .get_balance(pb::GetBalanceRequest {
                account: bad.into(),
                as_of: None,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{bad:?}: {e:?}");
        assert!(
            e.message().starts_with("account:"),
            "{bad:?}: {}",
            e.message()
        );
        let e = s
            .list_entries(pb::ListEntriesRequest {
                account: bad.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{bad:?}: {e:?}");
    }
    let e = s
        .list_entries(pb::ListEntriesRequest {
            account: "promoter:P1".into(),
            page_token: "not-a-token".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().starts_with("page_token"), "{}", e.message());

    // None of the failing calls stored anything.
    assert_eq!(app.count("movements").await, movements);
    // The redemption moved value from deferred to pending: two entries per account.
    let accounts_on_card = app.count("entries").await - entries_before;
    assert!(accounts_on_card > 0 && accounts_on_card % 2 == 0);
    app.shutdown().await;
}
both_backends!(refund_and_redemption_errors_have_precise_codes);
