//! The JSON a result is stored as, written directly.
//!
//! The text is exactly `serde_json::to_string(result)` (the tests compare the two on
//! every result of the engine's pinned corpus and on unusual ones); results are still
//! read back with serde. Written by hand because serde_json checks every byte of every
//! key and value for escapes one at a time and goes through its serializer state for
//! each of a result's ~200 fields: 6.5 µs for a 5-level, 2-line result, more than the
//! engine takes to compute it (benches/RESULTS.md §17).

use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::domain::split::{
    Account, Explanation, Figure, LineSplit, Share, ShareKind, SplitResult,
};

/// `serde_json::to_string(r)`.
pub fn write(r: &SplitResult) -> String {
    // About 3 KB for a 2-line, 5-level result.
    let mut w = Json(String::with_capacity(4096));
    w.raw("{\"order_id\":");
    w.str(&r.order_id);
    w.raw(",\"merchant\":");
    w.str(&r.merchant);
    w.raw(",\"buyer\":");
    w.str(&r.buyer);
    w.raw(",\"currency\":");
    w.str(&r.currency);
    w.raw(",\"exponent\":");
    w.int(r.exponent);
    w.raw(",\"paid_at\":");
    w.time(r.paid_at);
    w.raw(",\"ruleset_version\":");
    w.int(r.ruleset_version);
    w.raw(",\"lines\":[");
    for (i, l) in r.lines.iter().enumerate() {
        w.comma(i);
        line(&mut w, l);
    }
    w.raw("],\"totals\":[");
    for (i, t) in r.totals.iter().enumerate() {
        w.comma(i);
        w.raw("{\"account\":");
        w.account(&t.account);
        w.raw(",\"amount\":");
        w.int(t.amount);
        w.raw("}");
    }
    w.raw("],\"chain\":[");
    for (i, c) in r.chain.iter().enumerate() {
        w.comma(i);
        w.raw("{\"level\":");
        w.int(c.level);
        w.raw(",\"promoter\":");
        w.str(&c.promoter);
        w.raw(",\"status\":");
        w.str(&c.status);
        if !c.grade.is_empty() {
            w.raw(",\"grade\":");
            w.str(&c.grade);
        }
        w.raw("}");
    }
    w.raw("],\"attribution\":[");
    for (i, a) in r.attribution.iter().enumerate() {
        w.comma(i);
        w.raw("{\"promoter\":");
        w.str(&a.promoter);
        w.raw(",\"weight\":");
        w.figure(&a.weight);
        w.raw(if a.primary {
            ",\"primary\":true}"
        } else {
            ",\"primary\":false}"
        });
    }
    w.raw("],\"notes\":[");
    for (i, n) in r.notes.iter().enumerate() {
        w.comma(i);
        w.str(n);
    }
    w.raw("],\"fingerprint\":");
    w.str(&r.fingerprint);
    w.raw(",\"computed_at\":");
    w.time(r.computed_at);
    w.raw(",\"paid\":");
    w.int(r.paid);
    w.raw(",\"sales\":");
    w.int(r.sales);
    if let Some(p) = &r.primary_promoter {
        w.raw(",\"primary_promoter\":");
        w.str(p);
    }
    w.raw(",\"month\":");
    w.str(&r.month);
    w.raw(",\"hold_days\":");
    w.int(r.hold_days);
    w.raw("}");
    w.0
}

fn line(w: &mut Json, l: &LineSplit) {
    w.raw("{\"line_id\":");
    w.str(&l.line_id);
    w.raw(",\"paid\":");
    w.int(l.paid);
    w.raw(",\"base\":");
    w.int(l.base);
    if let Some(u) = l.uses {
        w.raw(",\"uses\":");
        w.int(u);
    }
    w.raw(",\"shares\":[");
    for (i, s) in l.shares.iter().enumerate() {
        w.comma(i);
        share(w, s);
    }
    w.raw("]}");
}

fn share(w: &mut Json, s: &Share) {
    w.raw("{\"account\":");
    w.account(&s.account);
    w.raw(",\"amount\":");
    w.int(s.amount);
    w.raw(",\"explanations\":[");
    for (i, e) in s.explanations.iter().enumerate() {
        w.comma(i);
        explanation(w, e);
    }
    w.raw("]}");
}

/// The fields serde skips when empty, zero or false are skipped here too.
fn explanation(w: &mut Json, e: &Explanation) {
    w.raw(match e.kind {
        ShareKind::MerchantResidual => "{\"kind\":\"merchant_residual\"",
        ShareKind::ChannelFee => "{\"kind\":\"channel_fee\"",
        ShareKind::PlatformTake => "{\"kind\":\"platform_take\"",
        ShareKind::Partner => "{\"kind\":\"partner\"",
        ShareKind::Commission => "{\"kind\":\"commission\"",
    });
    w.text_field(",\"rule_id\":", &e.rule_id);
    if e.level != 0 {
        w.raw(",\"level\":");
        w.int(e.level);
    }
    w.raw(",\"base\":");
    w.int(e.base);
    w.figure_field(",\"rate\":", &e.rate);
    w.figure_field(",\"weight\":", &e.weight);
    w.figure_field(",\"exact\":", &e.exact);
    if e.capped {
        w.raw(",\"capped\":true");
    }
    if e.guarded {
        w.raw(",\"guarded\":true");
    }
    if e.compressed {
        w.raw(",\"compressed\":true");
    }
    if !e.adjustments.is_empty() {
        w.raw(",\"adjustments\":[");
        for (i, a) in e.adjustments.iter().enumerate() {
            w.comma(i);
            w.str(a);
        }
        w.raw("]");
    }
    w.text_field(",\"detail\":", &e.detail);
    w.raw("}");
}

/// JSON text being written.
struct Json(String);

impl Json {
    fn raw(&mut self, s: &str) {
        self.0.push_str(s);
    }

    fn comma(&mut self, index: usize) {
        if index > 0 {
            self.0.push(',');
        }
    }

    fn int(&mut self, v: impl itoa::Integer) {
        self.0.push_str(itoa::Buffer::new().format(v));
    }

    /// `key` and the string, unless it is empty.
    fn text_field(&mut self, key: &str, s: &str) {
        if !s.is_empty() {
            self.raw(key);
            self.str(s);
        }
    }

    /// `key` and the figure, unless it is empty.
    fn figure_field(&mut self, key: &str, f: &Figure) {
        if !f.is_empty() {
            self.raw(key);
            self.figure(f);
        }
    }

    /// A figure as a JSON string: a value is written here in pieces (digits, point) that need
    /// no escape; a text is escaped like any other.
    fn figure(&mut self, f: &Figure) {
        match f {
            Figure::Text(t) => self.str(t),
            _ => {
                self.0.push('"');
                f.with_pieces(|pieces| pieces.iter().for_each(|p| self.0.push_str(p)));
                self.0.push('"');
            }
        }
    }

    /// A JSON string, escaped as serde_json escapes it: `"` and `\`, the control
    /// characters by their short escapes or `\u00XX` (lowercase hex); nothing else.
    fn str(&mut self, s: &str) {
        self.0.push('"');
        self.escaped(s);
        self.0.push('"');
    }

    /// The inside of a JSON string (see [`Json::str`]).
    fn escaped(&mut self, s: &str) {
        let bytes = s.as_bytes();
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            if b >= 0x20 && b != b'"' && b != b'\\' {
                continue;
            }
            // Every byte before `i` is copied as it is; `b` is ASCII, so `start..i` and
            // `i + 1..` are on character boundaries.
            self.0.push_str(&s[start..i]);
            match b {
                b'"' => self.0.push_str("\\\""),
                b'\\' => self.0.push_str("\\\\"),
                b'\x08' => self.0.push_str("\\b"),
                b'\x0c' => self.0.push_str("\\f"),
                b'\n' => self.0.push_str("\\n"),
                b'\r' => self.0.push_str("\\r"),
                b'\t' => self.0.push_str("\\t"),
                _ => {
                    let _ = write!(self.0, "\\u{:04x}", b);
                }
            }
            start = i + 1;
        }
        self.0.push_str(&s[start..]);
    }

    /// An account by its name (`merchant:M1`, `platform`, ...), as serde writes it.
    fn account(&mut self, a: &Account) {
        let (kind, id) = a.name_parts();
        self.0.push('"');
        self.0.push_str(kind);
        self.escaped(id);
        self.0.push('"');
    }

    /// A time as chrono serializes it: RFC 3339 in UTC with `Z`, as many fraction digits
    /// (0, 3, 6 or 9) as it needs (chrono's `Serialize` calls the same writer).
    fn time(&mut self, t: DateTime<Utc>) {
        self.0.push('"');
        self.0
            .push_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true));
        self.0.push('"');
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn serde_text(r: &SplitResult) -> String {
        serde_json::to_string(r).unwrap()
    }

    /// Byte for byte serde's text, over every result of the engine's pinned corpus.
    #[test]
    fn every_corpus_result_is_written_as_serde_writes_it() {
        let results = crate::domain::corpus::results();
        assert!(results.len() > 5000, "{} results", results.len());
        for r in results {
            assert_eq!(write(r), serde_text(r), "order {}", r.order_id);
        }
    }

    /// What the corpus leaves out: texts that need escaping (quotes, backslashes, every
    /// control character, non-ASCII), times with and without fractions and before 1970,
    /// card lines, the optional and flag fields, chain grades and attribution.
    #[test]
    fn unusual_results_are_written_as_serde_writes_them() {
        let base = crate::domain::corpus::unusual_result();
        let cases: Vec<fn(&mut SplitResult)> = vec![
            |_| {},
            |r| r.paid_at = Utc.timestamp_opt(1_700_000_000, 123_456_789).unwrap(),
            |r| r.paid_at = Utc.timestamp_opt(1_700_000_000, 120_000_000).unwrap(),
            |r| r.computed_at = Utc.timestamp_opt(-86_401, 5_000).unwrap(),
            |r| r.primary_promoter = None,
            |r| r.primary_promoter = Some("p\"1".into()),
            |r| {
                r.order_id = "o\\1\u{1}".into();
                r.lines[0].uses = Some(3);
                r.lines[0].line_id = "L\"1".into();
                r.totals[0].account = Account::Merchant("m\"\u{0}é".into());
                r.lines[0].shares[0].account = Account::Promoter("\\p".into());
                r.totals.push(crate::domain::split::AccountAmount {
                    account: Account::Platform,
                    amount: i64::MIN,
                });
                let e = &mut r.lines[0].shares[0].explanations[0];
                e.adjustments = vec!["boost".into(), "".into(), "a\tb".into()];
                e.capped = true;
                e.guarded = true;
                e.compressed = true;
                e.level = u32::MAX;
                e.rule_id = "r\u{1f}".into();
                e.detail = "d\r\n".into();
                e.base = -5;
            },
            |r| {
                r.lines.clear();
                r.totals.clear();
                r.chain.clear();
                r.attribution.clear();
                r.notes.clear();
                r.hold_days = u32::MAX;
                r.ruleset_version = u64::MAX;
            },
        ];
        for (i, change) in cases.iter().enumerate() {
            let mut r = base.clone();
            change(&mut r);
            let text = write(&r);
            assert_eq!(text, serde_text(&r), "case {i}");
            let back: SplitResult = serde_json::from_str(&text).unwrap();
            assert_eq!(back, r, "case {i} reads back");
        }
    }
}
