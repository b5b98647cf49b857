//! Stage 1 of the split: choosing the rule-set version in effect for an order.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::ruleset::RuleSet;

/// A published version.
#[derive(Debug, Clone)]
pub struct Published {
    /// Version number (1, 2, ...).
    pub version: u64,
    /// The compiled rule set.
    pub ruleset: Arc<RuleSet>,
}

/// The version in effect at `paid_at` for `merchant`: among versions that have started
/// (no effective_from counts as the beginning of time) and that apply to the merchant
/// (no canary, or the merchant is listed), the latest start wins; equal starts go to the
/// later version.
pub fn select<'a>(
    versions: &'a [Published],
    paid_at: DateTime<Utc>,
    merchant: &str,
) -> Option<&'a Published> {
    versions
        .iter()
        .filter(|p| {
            p.ruleset.effective_from.is_none_or(|t| t <= paid_at) && p.ruleset.applies_to(merchant)
        })
        .max_by_key(|p| (p.ruleset.effective_from, p.version))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ruleset::compile;

    fn v(version: u64, doc: &str) -> Published {
        Published {
            version,
            ruleset: Arc::new(compile(doc).ruleset.unwrap()),
        }
    }

    #[test]
    fn the_latest_started_version_applies_and_canaries_only_to_their_merchants() {
        let vs = vec![
            v(1, ""),
            v(2, "effective_from: 2026-11-01T00:00:00Z\n"),
            v(
                3,
                "effective_from: 2026-11-10T00:00:00Z\ncanary: {merchants: [M7]}\n",
            ),
            v(4, "effective_from: 2026-12-01T00:00:00Z\n"),
        ];
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        assert_eq!(
            select(&vs, at("2026-10-01T00:00:00Z"), "M1")
                .unwrap()
                .version,
            1
        );
        assert_eq!(
            select(&vs, at("2026-11-15T00:00:00Z"), "M1")
                .unwrap()
                .version,
            2
        );
        assert_eq!(
            select(&vs, at("2026-11-15T00:00:00Z"), "M7")
                .unwrap()
                .version,
            3
        );
        assert_eq!(
            select(&vs, at("2026-12-02T00:00:00Z"), "M7")
                .unwrap()
                .version,
            4
        );
        assert!(select(&vs[1..2], at("2026-10-01T00:00:00Z"), "M1").is_none());
    }
}
