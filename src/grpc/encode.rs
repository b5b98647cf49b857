//! `prorata.v1.Split` written straight from a domain result.
//!
//! The bytes are exactly those of `prost::Message::encode_to_vec(&convert::split(r))`
//! (the tests compare the two on thousands of results), written without building the
//! generated message first: that builds about eighty `String`s for a 5-level, 2-line
//! result (ids, accounts, rates, amounts), and prost then measures every nested message
//! once per level above it. A fresh Compute answers with these bytes, and they are what a
//! replay or a GetSplit sends again from the result cache.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use prost::encoding::encode_varint;

use super::convert;
use crate::domain::money::{self, Currency};
use crate::domain::split::{Account, Explanation, Figure, LineSplit, Share, SplitResult};

/// Wire types of the protobuf encoding used here.
const VARINT: u32 = 0;
const LEN: u32 = 2;

/// Longest key and length prefix of a nested message: two 64-bit varints.
const HEAD_MAX: usize = 20;

/// The encoding of `convert::split(r)`.
pub fn split(r: &SplitResult) -> Bytes {
    // About 1.5 KB for a 2-line, 5-level result: one allocation in the common case.
    let mut w = Writer {
        out: Vec::with_capacity(2048),
        text: String::new(),
    };
    let exponent = Currency::parse(&r.currency).map_or(r.exponent, |c| c.exponent());
    w.str(1, &r.order_id);
    w.str(2, &r.merchant);
    w.str(3, &r.buyer);
    w.str(4, &r.currency);
    w.uint(5, u64::from(r.exponent));
    w.timestamp(6, r.paid_at);
    w.uint(7, r.ruleset_version);
    for l in &r.lines {
        w.message(8, |w| line(w, l, exponent));
    }
    for t in &r.totals {
        w.message(9, |w| {
            w.account(1, &t.account);
            w.int64(2, t.amount);
            w.decimal(3, t.amount, exponent);
        });
    }
    for c in &r.chain {
        w.message(10, |w| {
            w.uint(1, u64::from(c.level));
            w.str(2, &c.promoter);
            w.str(3, &c.status);
            w.str(4, &c.grade);
        });
    }
    for a in &r.attribution {
        w.message(11, |w| {
            w.str(1, &a.promoter);
            w.figure(2, &a.weight);
            w.boolean(3, a.primary);
        });
    }
    for n in &r.notes {
        w.element(12, n);
    }
    w.str(13, &r.fingerprint);
    w.timestamp(14, r.computed_at);
    w.int64(15, r.paid);
    Bytes::from(w.out)
}

fn line(w: &mut Writer, l: &LineSplit, exponent: u32) {
    w.str(1, &l.line_id);
    w.int64(2, l.paid);
    w.int64(3, l.base);
    for s in &l.shares {
        w.message(4, |w| share(w, s, exponent));
    }
}

fn share(w: &mut Writer, s: &Share, exponent: u32) {
    w.account(1, &s.account);
    w.int64(2, s.amount);
    w.decimal(3, s.amount, exponent);
    for e in &s.explanations {
        w.message(4, |w| explanation(w, e));
    }
}

fn explanation(w: &mut Writer, e: &Explanation) {
    // An enum is an int32 on the wire: sign-extended like prost does.
    w.uint(1, i64::from(convert::kind(e.kind)) as u64);
    w.str(2, &e.rule_id);
    w.uint(3, u64::from(e.level));
    w.int64(4, e.base);
    w.figure(5, &e.rate);
    w.figure(6, &e.weight);
    w.figure(7, &e.exact);
    w.boolean(8, e.capped);
    w.boolean(9, e.guarded);
    w.boolean(10, e.compressed);
    for a in &e.adjustments {
        w.element(11, a);
    }
    w.str(12, &e.detail);
}

/// A message being written; every method skips a field at its default value, as proto3
/// (and prost) encodes scalars and strings.
struct Writer {
    /// The message's bytes.
    out: Vec<u8>,
    /// Reused for decimal amounts.
    text: String,
}

impl Writer {
    fn key(&mut self, field: u32, wire_type: u32) {
        encode_varint(u64::from(field << 3 | wire_type), &mut self.out);
    }

    fn uint(&mut self, field: u32, v: u64) {
        if v != 0 {
            self.key(field, VARINT);
            encode_varint(v, &mut self.out);
        }
    }

    /// An int64: its two's complement as a varint (ten bytes when negative).
    fn int64(&mut self, field: u32, v: i64) {
        self.uint(field, v as u64);
    }

    fn boolean(&mut self, field: u32, v: bool) {
        if v {
            self.key(field, VARINT);
            self.out.push(1);
        }
    }

    fn str(&mut self, field: u32, s: &str) {
        if !s.is_empty() {
            self.element(field, s);
        }
    }

    /// A figure as a string field, unless it is empty: a value is written here in pieces
    /// (digits, point), not rendered into a buffer first.
    fn figure(&mut self, field: u32, f: &Figure) {
        if !f.is_empty() {
            f.with_pieces(|pieces| {
                self.key(field, LEN);
                let len: usize = pieces.iter().map(|p| p.len()).sum();
                encode_varint(len as u64, &mut self.out);
                for p in pieces {
                    self.out.extend_from_slice(p.as_bytes());
                }
            });
        }
    }

    /// An element of a repeated string: written even when empty.
    fn element(&mut self, field: u32, s: &str) {
        self.key(field, LEN);
        encode_varint(s.len() as u64, &mut self.out);
        self.out.extend_from_slice(s.as_bytes());
    }

    /// A length-delimited field whose value is written by `body`, then prefixed with its
    /// key and length (moving the value, not writing it twice).
    fn message(&mut self, field: u32, body: impl FnOnce(&mut Writer)) {
        let start = self.out.len();
        body(self);
        let len = self.out.len() - start;
        let mut head = [0u8; HEAD_MAX];
        let mut h = &mut head[..];
        encode_varint(u64::from(field << 3 | LEN), &mut h);
        encode_varint(len as u64, &mut h);
        let used = HEAD_MAX - h.len();
        self.out.splice(start..start, head[..used].iter().copied());
    }

    /// A `google.protobuf.Timestamp`, always present (as `convert::timestamp` sets it).
    fn timestamp(&mut self, field: u32, t: DateTime<Utc>) {
        self.message(field, |w| {
            w.int64(1, t.timestamp());
            w.uint(2, i64::from(t.timestamp_subsec_nanos() as i32) as u64);
        });
    }

    /// An account's name (`merchant:M1`, `platform`, ...), as `Account`'s `Display`.
    fn account(&mut self, field: u32, a: &Account) {
        let (kind, id) = a.name_parts();
        self.key(field, LEN);
        encode_varint((kind.len() + id.len()) as u64, &mut self.out);
        self.out.extend_from_slice(kind.as_bytes());
        self.out.extend_from_slice(id.as_bytes());
    }

    /// Minor units as a decimal in major units (`money::push_major`).
    fn decimal(&mut self, field: u32, minor: i64, exponent: u32) {
        let mut text = std::mem::take(&mut self.text);
        text.clear();
        money::push_major(&mut text, minor, exponent);
        self.str(field, &text);
        self.text = text;
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn prost_bytes(r: &SplitResult) -> Vec<u8> {
        prost::Message::encode_to_vec(&convert::split(r))
    }

    /// Byte for byte what prost writes for the converted message, over every result of
    /// the engine's pinned corpus (thousands of rule sets, orders and networks).
    #[test]
    fn every_corpus_result_is_written_as_prost_writes_its_message() {
        let results = crate::domain::corpus::results();
        assert!(results.len() > 5000, "{} results", results.len());
        for r in results {
            assert_eq!(split(r)[..], prost_bytes(r)[..], "order {}", r.order_id);
        }
    }

    /// Fields the corpus leaves at one value: sub-second and pre-1970 times, a currency
    /// prorata does not know (its own exponent), notes, chain grades, attribution,
    /// adjustments, negative and extreme amounts, long texts (two-byte lengths).
    #[test]
    fn unusual_fields_are_written_as_prost_writes_them() {
        let base = crate::domain::corpus::unusual_result();
        let cases: Vec<fn(&mut SplitResult)> = vec![
            |_| {},
            |r| r.paid_at = Utc.timestamp_opt(1_700_000_000, 123_456_789).unwrap(),
            |r| r.computed_at = Utc.timestamp_opt(-86_400, 5).unwrap(),
            |r| {
                r.currency = "XYZ".into();
                r.exponent = 3;
            },
            |r| {
                r.currency = "JPY".into();
                r.exponent = 0;
            },
            |r| {
                r.paid = i64::MIN;
                r.totals[0].amount = -1;
                r.lines[0].shares[0].amount = i64::MAX;
                let e = &mut r.lines[0].shares[0].explanations[0];
                e.adjustments = vec!["boost".into(), "".into(), "x".repeat(300).into()];
                e.capped = true;
                e.compressed = true;
                e.level = u32::MAX;
                e.base = -5;
            },
            |r| {
                r.ruleset_version = u64::MAX;
                r.order_id = String::new();
                r.lines.clear();
            },
        ];
        for (i, change) in cases.iter().enumerate() {
            let mut r = base.clone();
            change(&mut r);
            assert_eq!(split(&r)[..], prost_bytes(&r)[..], "case {i}");
        }
    }
}
