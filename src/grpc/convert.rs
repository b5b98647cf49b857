//! Conversions between proto messages and domain values. Inputs become the domain's raw
//! forms (validated by the domain, which names the field path); outputs are rendered with
//! minor units and their decimal form side by side.

use chrono::{DateTime, Utc};
use prost_types::Timestamp;

use super::pb;
use crate::domain::money::Currency;
use crate::domain::network::{PromoterNode, Status};
use crate::domain::order::{
    FieldError, Funder, RawAmount, RawCoupon, RawLine, RawOrder, RawReferral,
};
use crate::domain::ruleset::Issue;
use crate::domain::split::{self, ShareKind, SplitResult};
use crate::store::{AccountSplit, PromoterUpsert, StoredRuleSet};

/// A proto timestamp as a UTC instant.
pub fn time(path: &str, t: &Timestamp) -> Result<DateTime<Utc>, FieldError> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return Err(FieldError::new(path, "nanos must be within [0, 1e9)"));
    }
    DateTime::from_timestamp(t.seconds, t.nanos as u32)
        .ok_or_else(|| FieldError::new(path, "is out of range"))
}

/// An optional proto timestamp.
pub fn opt_time(path: &str, t: &Option<Timestamp>) -> Result<Option<DateTime<Utc>>, FieldError> {
    t.as_ref().map(|t| time(path, t)).transpose()
}

/// A UTC instant as a proto timestamp.
pub fn timestamp(t: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

fn amount(m: &Option<pb::Money>) -> RawAmount {
    match m.as_ref().and_then(|m| m.amount.as_ref()) {
        None => RawAmount::Absent,
        Some(pb::money::Amount::Minor(v)) => RawAmount::Minor(*v),
        Some(pb::money::Amount::Decimal(s)) => RawAmount::Decimal(s.clone()),
    }
}

/// A proto order as the domain's raw order (paths are checked by `Order::parse`).
pub fn raw_order(o: &pb::Order) -> Result<RawOrder, FieldError> {
    let referrals = o
        .referrals
        .iter()
        .enumerate()
        .map(|(i, r)| {
            Ok(RawReferral {
                promoter: r.promoter.clone(),
                at: opt_time(&format!("order.referrals[{i}].at"), &r.at)?,
            })
        })
        .collect::<Result<_, FieldError>>()?;
    let lines = o
        .lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let coupon = match &l.coupon {
                None => None,
                Some(c) => Some(RawCoupon {
                    amount: amount(&c.amount),
                    funded_by: match pb::Funder::try_from(c.funded_by) {
                        Ok(pb::Funder::Platform) => Some(Funder::Platform),
                        Ok(pb::Funder::Merchant) => Some(Funder::Merchant),
                        Ok(pb::Funder::Unspecified) => None,
                        Err(_) => {
                            return Err(FieldError::new(
                                format!("order.lines[{i}].coupon.funded_by"),
                                "unknown funder",
                            ))
                        }
                    },
                }),
            };
            Ok(RawLine {
                id: l.id.clone(),
                sku: l.sku.clone(),
                category: l.category.clone(),
                quantity: l.quantity,
                unit_price: amount(&l.unit_price),
                discount: amount(&l.discount),
                coupon,
                unit_cost: amount(&l.unit_cost),
                uses: l.uses,
            })
        })
        .collect::<Result<_, FieldError>>()?;
    Ok(RawOrder {
        id: o.id.clone(),
        merchant: o.merchant.clone(),
        buyer: o.buyer.clone(),
        paid_at: opt_time("order.paid_at", &o.paid_at)?,
        currency: o.currency.clone(),
        channel: o.channel.clone(),
        tags: o.tags.clone(),
        referrals,
        shipping: amount(&o.shipping),
        lines,
    })
}

/// A share kind as the proto enum's number.
pub(crate) fn kind(k: ShareKind) -> i32 {
    (match k {
        ShareKind::MerchantResidual => pb::ShareKind::MerchantResidual,
        ShareKind::ChannelFee => pb::ShareKind::ChannelFee,
        ShareKind::PlatformTake => pb::ShareKind::PlatformTake,
        ShareKind::Partner => pb::ShareKind::Partner,
        ShareKind::Commission => pb::ShareKind::Commission,
    }) as i32
}

/// `minor` in major units: with the currency's exponent when it is known, else `exponent`.
fn fmt(currency: Option<Currency>, exponent: u32, minor: i64) -> String {
    crate::domain::money::major_text(minor, currency.map_or(exponent, |c| c.exponent()))
}

/// Account amounts with their decimal rendering.
pub fn amounts(
    totals: &[split::AccountAmount],
    currency: &str,
    exponent: u32,
) -> Vec<pb::AccountAmount> {
    let cur = Currency::parse(currency);
    totals
        .iter()
        .map(|t| pb::AccountAmount {
            account: t.account.to_string(),
            amount_minor: t.amount,
            amount: fmt(cur, exponent, t.amount),
        })
        .collect()
}

/// Line splits with explanations.
pub fn lines(lines: &[split::LineSplit], currency: &str, exponent: u32) -> Vec<pb::LineSplit> {
    let cur = Currency::parse(currency);
    lines
        .iter()
        .map(|l| pb::LineSplit {
            line_id: l.line_id.to_string(),
            paid_minor: l.paid,
            base_minor: l.base,
            shares: l
                .shares
                .iter()
                .map(|s| pb::Share {
                    account: s.account.to_string(),
                    amount_minor: s.amount,
                    amount: fmt(cur, exponent, s.amount),
                    explanations: s
                        .explanations
                        .iter()
                        .map(|e| pb::Explanation {
                            kind: kind(e.kind),
                            rule_id: e.rule_id.to_string(),
                            level: e.level,
                            base_minor: e.base,
                            rate: e.rate.to_string(),
                            weight: e.weight.to_string(),
                            exact_minor: e.exact.to_string(),
                            capped: e.capped,
                            guarded: e.guarded,
                            compressed: e.compressed,
                            adjustments: e.adjustments.iter().map(|a| a.to_string()).collect(),
                            detail: e.detail.to_string(),
                        })
                        .collect(),
                })
                .collect(),
        })
        .collect()
}

/// A domain result as the proto Split. Deterministic: the same result gives the same bytes.
pub fn split(r: &SplitResult) -> pb::Split {
    pb::Split {
        order_id: r.order_id.clone(),
        merchant: r.merchant.clone(),
        buyer: r.buyer.clone(),
        currency: r.currency.to_string(),
        currency_exponent: r.exponent,
        paid_at: Some(timestamp(r.paid_at)),
        ruleset_version: r.ruleset_version,
        lines: lines(&r.lines, &r.currency, r.exponent),
        totals: amounts(&r.totals, &r.currency, r.exponent),
        chain: r
            .chain
            .iter()
            .map(|c| pb::ChainLink {
                level: c.level,
                promoter: c.promoter.to_string(),
                status: c.status.to_string(),
                grade: c.grade.to_string(),
            })
            .collect(),
        attribution: r
            .attribution
            .iter()
            .map(|w| pb::AttributionWeight {
                promoter: w.promoter.to_string(),
                weight: w.weight.to_string(),
                primary: w.primary,
            })
            .collect(),
        notes: r.notes.clone(),
        fingerprint: r.fingerprint.clone(),
        computed_at: Some(timestamp(r.computed_at)),
        paid_minor: r.paid,
    }
}

/// A listed split.
pub fn summary(s: &AccountSplit) -> pb::SplitSummary {
    let cur = Currency::parse(&s.currency);
    pb::SplitSummary {
        order_id: s.order_id.clone(),
        paid_at: Some(timestamp(s.paid_at)),
        currency: s.currency.clone(),
        amount_minor: s.amount,
        amount: fmt(cur, cur.map_or(2, |c| c.exponent()), s.amount),
        ruleset_version: s.ruleset_version,
    }
}

/// Document issues.
pub fn issues(v: &[Issue]) -> Vec<pb::Issue> {
    v.iter()
        .map(|i| pb::Issue {
            path: i.path.clone(),
            message: i.message.clone(),
        })
        .collect()
}

/// A stored version.
pub fn ruleset(s: &StoredRuleSet) -> pb::RuleSetVersion {
    pb::RuleSetVersion {
        version: s.version,
        effective_from: s.effective_from.map(timestamp),
        canary_merchants: s.canary.clone().unwrap_or_default(),
        document: s.document.clone(),
        published_at: Some(timestamp(s.published_at)),
        sha256: s.sha256.clone(),
    }
}

/// A promoter.
pub fn promoter(p: &PromoterNode) -> pb::Promoter {
    pb::Promoter {
        id: p.id.clone(),
        parent: p.parent.clone().unwrap_or_default(),
        grade: p.grade.clone().unwrap_or_default(),
        status: (match p.status {
            Status::Active => pb::PromoterStatus::Active,
            Status::Frozen => pb::PromoterStatus::Frozen,
            Status::Closed => pb::PromoterStatus::Closed,
        }) as i32,
    }
}

/// An upsert request; `root` prefixes field paths.
pub fn upsert(r: &pb::UpsertPromoterRequest, root: &str) -> Result<PromoterUpsert, FieldError> {
    let clearable = |v: &Option<String>| {
        v.as_ref()
            .map(|s| if s.is_empty() { None } else { Some(s.clone()) })
    };
    let status = match pb::PromoterStatus::try_from(r.status) {
        Ok(pb::PromoterStatus::Unspecified) => None,
        Ok(pb::PromoterStatus::Active) => Some(Status::Active),
        Ok(pb::PromoterStatus::Frozen) => Some(Status::Frozen),
        Ok(pb::PromoterStatus::Closed) => Some(Status::Closed),
        Err(_) => {
            return Err(FieldError::new(
                format!("{root}status"),
                format!("unknown status {}", r.status),
            ))
        }
    };
    Ok(PromoterUpsert {
        id: r.id.clone(),
        parent: clearable(&r.parent),
        grade: clearable(&r.grade),
        status,
    })
}

/// A reversal or redemption.
pub fn movement(m: &crate::domain::lifecycle::Movement) -> pb::Movement {
    let cur = Currency::parse(&m.currency);
    pb::Movement {
        id: m.id.clone(),
        order_id: m.order_id.clone(),
        currency: m.currency.clone(),
        currency_exponent: m.exponent,
        lines: m
            .lines
            .iter()
            .map(|l| pb::LineSplit {
                line_id: l.line_id.to_string(),
                paid_minor: l.amount,
                base_minor: 0,
                shares: l
                    .shares
                    .iter()
                    .map(|s| pb::Share {
                        account: s.account.to_string(),
                        amount_minor: s.amount,
                        amount: fmt(cur, m.exponent, s.amount),
                        explanations: vec![],
                    })
                    .collect(),
            })
            .collect(),
        totals: amounts(&m.totals, &m.currency, m.exponent),
    }
}

/// A payout batch.
pub fn payout(b: &crate::domain::ledger::PayoutBatch) -> pb::PayoutBatch {
    pb::PayoutBatch {
        batch_id: b.batch_id.clone(),
        as_of: Some(timestamp(b.as_of)),
        minimum_minor: b.minimum,
        instructions: b
            .instructions
            .iter()
            .map(|i| pb::PayoutInstruction {
                account: i.account.clone(),
                currency: i.currency.clone(),
                amount_minor: i.amount,
                entries: i.entries,
            })
            .collect(),
        created_at: Some(timestamp(b.created_at)),
    }
}

/// An entry.
pub fn entry(e: &crate::store::EntryRow) -> pb::Entry {
    pb::Entry {
        id: e.id,
        account: e.account.clone(),
        currency: e.currency.clone(),
        amount_minor: e.amount,
        status: e.status.to_string(),
        available_at: e.available_at.map(timestamp),
        source_kind: e.source_kind.clone(),
        source_id: e.source_id.clone(),
        order_id: e.order_id.clone(),
        created_at: Some(timestamp(e.created_at)),
    }
}

/// A refund request.
pub fn refund(r: &pb::RefundRequest) -> crate::domain::lifecycle::RawRefund {
    crate::domain::lifecycle::RawRefund {
        order_id: r.order_id.clone(),
        refund_id: r.refund_id.clone(),
        lines: r
            .lines
            .iter()
            .map(|l| crate::domain::lifecycle::RawRefundLine {
                line_id: l.line_id.to_string(),
                amount: amount(&l.amount),
                uses: l.uses,
            })
            .collect(),
        full: r.full,
    }
}
