//! Orders: parsed once at the boundary into values that cannot be invalid.
//!
//! [`RawOrder`] is what a caller sent, field for field; [`Order::parse`] turns it into an
//! [`Order`] or a [`FieldError`] naming the exact path of the first bad field
//! (`order.lines[2].unit_price`). Past this point no amount is negative, no line pays more
//! than it is worth, and every sum fits.

use std::collections::HashSet;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::money::{self, AmountError, Currency, MAX_ORDER_TOTAL_MINOR};

/// Most lines one order may have (PRODUCT.md §2).
pub const MAX_LINES: usize = 1000;
/// Longest id (order, merchant, buyer, promoter, line, channel, refund, ...), in bytes.
pub const MAX_ID_LEN: usize = 128;
/// Longest free-text value (sku, category, tag), in bytes.
pub const MAX_TEXT_LEN: usize = 128;
/// Most referrals one order may carry; more than this is an attribution abuse, not a sale.
pub const MAX_REFERRALS: usize = 100;
/// Most tags one order may carry.
pub const MAX_TAGS: usize = 32;
/// Largest quantity on one line.
pub const MAX_QUANTITY: i64 = 1_000_000;
/// Most uses one prepaid card may have.
pub const MAX_CARD_USES: u32 = 10_000;

/// A bad field: its path from the request root, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FieldError {
    /// `order.lines[2].unit_price`.
    pub path: String,
    /// Human explanation.
    pub message: String,
}

impl FieldError {
    /// A new error at `path`.
    pub fn new(path: impl fmt::Display, message: impl Into<String>) -> Self {
        FieldError {
            path: path.to_string(),
            message: message.into(),
        }
    }
}

/// The path of a field of an order, rendered only when an error names it (a valid order
/// builds no path strings): `{root}.{field}`, or `{root}.{list}[{index}].{field}`.
#[derive(Debug, Clone, Copy)]
struct At<'a> {
    root: &'a str,
    item: Option<(&'a str, usize)>,
    field: &'a str,
}

impl<'a> At<'a> {
    fn field(root: &'a str, field: &'a str) -> Self {
        At {
            root,
            item: None,
            field,
        }
    }

    fn item(root: &'a str, list: &'a str, index: usize) -> Self {
        At {
            root,
            item: Some((list, index)),
            field: "",
        }
    }

    /// A field of this list item.
    fn of(self, field: &'a str) -> Self {
        At { field, ..self }
    }
}

impl fmt::Display for At<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.root)?;
        if let Some((list, i)) = self.item {
            write!(f, ".{list}[{i}]")?;
        }
        if !self.field.is_empty() {
            write!(f, ".{}", self.field)?;
        }
        Ok(())
    }
}

/// Checks an identifier: 1–128 chars of `[A-Za-z0-9._:-]`.
pub fn check_id(path: impl fmt::Display, value: &str) -> Result<(), FieldError> {
    if value.is_empty() {
        return Err(FieldError::new(path, "is required"));
    }
    if value.len() > MAX_ID_LEN {
        return Err(FieldError::new(
            path,
            format!(
                "is {} characters long; at most {MAX_ID_LEN} are allowed",
                value.len()
            ),
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
    {
        return Err(FieldError::new(
            path,
            format!("contains {c:?}; only [A-Za-z0-9._:-] is allowed"),
        ));
    }
    Ok(())
}

/// Checks free text (sku, category, tag): 1–128 bytes, no control characters.
fn check_text(path: impl fmt::Display, value: &str) -> Result<(), FieldError> {
    if value.is_empty() {
        return Err(FieldError::new(path, "is required"));
    }
    if value.len() > MAX_TEXT_LEN {
        return Err(FieldError::new(
            path,
            format!("is longer than {MAX_TEXT_LEN} bytes"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(FieldError::new(path, "contains a control character"));
    }
    Ok(())
}

/// An amount as a caller sent it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum RawAmount {
    /// Not sent.
    #[default]
    Absent,
    /// Integer minor units.
    Minor(i64),
    /// Decimal string in major units.
    Decimal(String),
}

impl RawAmount {
    /// Parses into minor units of `currency`; `Ok(None)` when absent.
    pub fn parse(
        &self,
        path: impl fmt::Display,
        currency: Currency,
    ) -> Result<Option<i64>, FieldError> {
        let r = match self {
            RawAmount::Absent => return Ok(None),
            RawAmount::Minor(m) => money::check_range(*m),
            RawAmount::Decimal(s) => money::parse_major(s, currency),
        };
        r.map(Some)
            .map_err(|e| FieldError::new(path, amount_message(e)))
    }

    /// Parses a required amount.
    pub fn require(
        &self,
        path: impl fmt::Display + Copy,
        currency: Currency,
    ) -> Result<i64, FieldError> {
        self.parse(path, currency)?
            .ok_or_else(|| FieldError::new(path, "is required"))
    }
}

fn amount_message(e: AmountError) -> String {
    e.to_string()
}

/// Who funds a coupon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Funder {
    /// The platform pays the coupon.
    Platform,
    /// The merchant pays the coupon.
    Merchant,
}

/// A coupon as sent.
#[derive(Debug, Clone, Default)]
pub struct RawCoupon {
    /// Amount off the line.
    pub amount: RawAmount,
    /// Who funds it; `None` when unspecified.
    pub funded_by: Option<Funder>,
}

/// A referral as sent.
#[derive(Debug, Clone, Default)]
pub struct RawReferral {
    /// Promoter id.
    pub promoter: String,
    /// When the link was followed.
    pub at: Option<DateTime<Utc>>,
}

/// A line as sent.
#[derive(Debug, Clone, Default)]
pub struct RawLine {
    /// Line id.
    pub id: String,
    /// SKU.
    pub sku: String,
    /// Category.
    pub category: String,
    /// Quantity.
    pub quantity: i64,
    /// Price per unit.
    pub unit_price: RawAmount,
    /// Amount off the line.
    pub discount: RawAmount,
    /// Coupon.
    pub coupon: Option<RawCoupon>,
    /// Cost per unit.
    pub unit_cost: RawAmount,
    /// Card uses (0 = not a card).
    pub uses: u32,
}

/// An order as sent.
#[derive(Debug, Clone, Default)]
pub struct RawOrder {
    /// Order id.
    pub id: String,
    /// Merchant id.
    pub merchant: String,
    /// Buyer id.
    pub buyer: String,
    /// Payment time.
    pub paid_at: Option<DateTime<Utc>>,
    /// ISO 4217 code.
    pub currency: String,
    /// Payment channel; empty for default.
    pub channel: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Referrals.
    pub referrals: Vec<RawReferral>,
    /// Shipping.
    pub shipping: RawAmount,
    /// Lines.
    pub lines: Vec<RawLine>,
}

/// A validated coupon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coupon {
    /// Minor units.
    pub amount: i64,
    /// Who funds it.
    pub funded_by: Funder,
}

/// A validated referral.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Referral {
    /// Promoter id.
    pub promoter: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// A validated line. `paid` = quantity × unit_price − discount − coupon ≥ 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    /// Line id, unique in the order.
    pub id: String,
    /// SKU.
    pub sku: String,
    /// Category.
    pub category: String,
    /// ≥ 1.
    pub quantity: i64,
    /// Minor units.
    pub unit_price: i64,
    /// Minor units.
    pub discount: i64,
    /// Coupon, if any.
    pub coupon: Option<Coupon>,
    /// Minor units per unit, if given.
    pub unit_cost: Option<i64>,
    /// Card uses (≥ 2) for prepaid cards.
    pub uses: Option<u32>,
    /// quantity × unit_price.
    pub gross: i64,
    /// What the buyer paid for the line: D.
    pub paid: i64,
}

/// A validated order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// Order id.
    pub id: String,
    /// Merchant id.
    pub merchant: String,
    /// Buyer id.
    pub buyer: String,
    /// Payment time.
    pub paid_at: DateTime<Utc>,
    /// Currency code (serialised as its code).
    #[serde(with = "currency_code")]
    pub currency: Currency,
    /// Channel id, if named.
    pub channel: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Referrals as given.
    pub referrals: Vec<Referral>,
    /// Shipping, minor units.
    pub shipping: i64,
    /// Lines.
    pub lines: Vec<Line>,
}

mod currency_code {
    use super::Currency;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(c: &Currency, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(c.code())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Currency, D::Error> {
        let code = String::deserialize(d)?;
        Currency::parse(&code).ok_or_else(|| serde::de::Error::custom("unknown currency"))
    }
}

impl Order {
    /// Validates a raw order; paths are prefixed with `root` (e.g. "order").
    pub fn parse(raw: &RawOrder, root: &str) -> Result<Order, FieldError> {
        let p = |f| At::field(root, f);
        check_id(p("id"), &raw.id)?;
        check_id(p("merchant"), &raw.merchant)?;
        check_id(p("buyer"), &raw.buyer)?;
        let paid_at = raw
            .paid_at
            .ok_or_else(|| FieldError::new(p("paid_at"), "is required"))?;
        if raw.currency.is_empty() {
            return Err(FieldError::new(p("currency"), "is required"));
        }
        let currency = Currency::parse(&raw.currency).ok_or_else(|| {
            FieldError::new(
                p("currency"),
                format!(
                    "{:?} is not an ISO 4217 currency with a minor unit",
                    raw.currency
                ),
            )
        })?;
        let channel = if raw.channel.is_empty() {
            None
        } else {
            check_id(p("channel"), &raw.channel)?;
            Some(raw.channel.clone())
        };
        if raw.tags.len() > MAX_TAGS {
            return Err(FieldError::new(
                p("tags"),
                format!("at most {MAX_TAGS} tags"),
            ));
        }
        for (i, t) in raw.tags.iter().enumerate() {
            check_text(At::item(root, "tags", i), t)?;
        }
        if raw.referrals.len() > MAX_REFERRALS {
            return Err(FieldError::new(
                p("referrals"),
                format!("at most {MAX_REFERRALS} referrals"),
            ));
        }
        let mut referrals = Vec::with_capacity(raw.referrals.len());
        for (i, r) in raw.referrals.iter().enumerate() {
            let rp = At::item(root, "referrals", i);
            check_id(rp.of("promoter"), &r.promoter)?;
            let at =
                r.at.ok_or_else(|| FieldError::new(rp.of("at"), "is required"))?;
            referrals.push(Referral {
                promoter: r.promoter.clone(),
                at,
            });
        }
        let shipping = raw.shipping.parse(p("shipping"), currency)?.unwrap_or(0);
        if raw.lines.is_empty() {
            return Err(FieldError::new(
                p("lines"),
                "an order needs at least one line",
            ));
        }
        if raw.lines.len() > MAX_LINES {
            return Err(FieldError::new(
                p("lines"),
                format!("{} lines; at most {MAX_LINES} are allowed", raw.lines.len()),
            ));
        }
        let mut seen = HashSet::with_capacity(raw.lines.len());
        let mut lines = Vec::with_capacity(raw.lines.len());
        let mut total = shipping;
        for (i, l) in raw.lines.iter().enumerate() {
            let lp = At::item(root, "lines", i);
            let line = parse_line(l, lp, currency)?;
            if !seen.insert(line.id.clone()) {
                return Err(FieldError::new(
                    lp.of("id"),
                    format!("duplicate line id {:?}", line.id),
                ));
            }
            total = total
                .checked_add(line.paid)
                .filter(|t| *t <= MAX_ORDER_TOTAL_MINOR)
                .ok_or_else(|| FieldError::new(p("lines"), "the order total is out of range"))?;
            lines.push(line);
        }
        Ok(Order {
            id: raw.id.clone(),
            merchant: raw.merchant.clone(),
            buyer: raw.buyer.clone(),
            paid_at,
            currency,
            channel,
            tags: raw.tags.clone(),
            referrals,
            shipping,
            lines,
        })
    }

    /// Σ paid over the lines, shipping excluded: the order's sales.
    pub fn sales(&self) -> i64 {
        // Bounded by MAX_ORDER_TOTAL_MINOR at parse time.
        self.lines.iter().map(|l| l.paid).sum()
    }

    /// What the buyer paid in all.
    pub fn total_paid(&self) -> i64 {
        self.sales() + self.shipping
    }

    /// The channel's account id.
    pub fn channel_id(&self) -> &str {
        self.channel.as_deref().unwrap_or("default")
    }
}

fn parse_line(l: &RawLine, lp: At<'_>, currency: Currency) -> Result<Line, FieldError> {
    check_id(lp.of("id"), &l.id)?;
    if l.id == "shipping" {
        return Err(FieldError::new(
            lp.of("id"),
            "\"shipping\" is reserved for the shipping pseudo-line",
        ));
    }
    check_text(lp.of("sku"), &l.sku)?;
    check_text(lp.of("category"), &l.category)?;
    if l.quantity < 1 || l.quantity > MAX_QUANTITY {
        return Err(FieldError::new(
            lp.of("quantity"),
            format!("must be between 1 and {MAX_QUANTITY}, got {}", l.quantity),
        ));
    }
    let unit_price = l.unit_price.require(lp.of("unit_price"), currency)?;
    let discount = l.discount.parse(lp.of("discount"), currency)?.unwrap_or(0);
    let coupon = match &l.coupon {
        None => None,
        Some(c) => {
            let amount = c.amount.require(lp.of("coupon.amount"), currency)?;
            let funded_by = c.funded_by.ok_or_else(|| {
                FieldError::new(
                    lp.of("coupon.funded_by"),
                    "is required: platform or merchant",
                )
            })?;
            Some(Coupon { amount, funded_by })
        }
    };
    let unit_cost = l.unit_cost.parse(lp.of("unit_cost"), currency)?;
    let uses = match l.uses {
        0 => None,
        1 => {
            return Err(FieldError::new(
                lp.of("uses"),
                "a prepaid card needs at least 2 uses",
            ))
        }
        n if n > MAX_CARD_USES => {
            return Err(FieldError::new(
                lp.of("uses"),
                format!("at most {MAX_CARD_USES} uses"),
            ))
        }
        n => Some(n),
    };
    let gross = l
        .quantity
        .checked_mul(unit_price)
        .filter(|g| *g <= MAX_ORDER_TOTAL_MINOR)
        .ok_or_else(|| {
            FieldError::new(lp.of("unit_price"), "quantity × unit_price is out of range")
        })?;
    let off = discount + coupon.as_ref().map_or(0, |c| c.amount); // both ≤ 10^15: no overflow
    let paid = gross - off;
    if paid < 0 {
        return Err(FieldError::new(
            lp.of("discount"),
            "discount and coupon exceed the line's gross amount (quantity × unit_price)",
        ));
    }
    Ok(Line {
        id: l.id.clone(),
        sku: l.sku.clone(),
        category: l.category.clone(),
        quantity: l.quantity,
        unit_price,
        discount,
        coupon,
        unit_cost,
        uses,
        gross,
        paid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line() -> RawLine {
        RawLine {
            id: "L1".into(),
            sku: "A".into(),
            category: "misc".into(),
            quantity: 1,
            unit_price: RawAmount::Decimal("10.00".into()),
            ..Default::default()
        }
    }

    fn order() -> RawOrder {
        RawOrder {
            id: "O-1".into(),
            merchant: "M1".into(),
            buyer: "C1".into(),
            paid_at: Some(Utc::now()),
            currency: "CNY".into(),
            lines: vec![line()],
            ..Default::default()
        }
    }

    fn err(o: RawOrder) -> FieldError {
        Order::parse(&o, "order").unwrap_err()
    }

    #[test]
    fn a_valid_order_parses_with_paid_amounts() {
        let o = Order::parse(&order(), "order").unwrap();
        assert_eq!(o.lines[0].paid, 1000);
        assert_eq!(o.sales(), 1000);
    }

    #[test]
    fn each_bad_field_is_named_by_its_path() {
        let mut o = order();
        o.id = "x".repeat(129);
        assert_eq!(err(o).path, "order.id");
        let mut o = order();
        o.id = "a b".into();
        assert_eq!(err(o).path, "order.id");
        let mut o = order();
        o.lines[0].quantity = 0;
        assert_eq!(err(o).path, "order.lines[0].quantity");
        let mut o = order();
        o.lines[0].discount = RawAmount::Decimal("10.01".into());
        assert_eq!(err(o).path, "order.lines[0].discount");
        let mut o = order();
        o.lines.push(line());
        assert_eq!(err(o).path, "order.lines[1].id");
        let mut o = order();
        o.lines = vec![line(); 1001];
        assert_eq!(err(o).path, "order.lines");
        let mut o = order();
        o.lines[0].unit_price = RawAmount::Minor(-5);
        assert_eq!(err(o).path, "order.lines[0].unit_price");
    }
}
