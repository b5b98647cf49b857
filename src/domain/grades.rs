//! Automatic grade upgrades (RULES.md "Grades"): a promoter moves up to the highest grade
//! whose conditions all hold; grades never go down, and a grade the rule set does not list
//! (set by hand) is left alone.

use super::exact::Exact;
use super::money::Currency;
use super::ruleset::RuleSet;

/// What the upgrade conditions read about one promoter.
#[derive(Debug, Clone, Default)]
pub struct GradeFacts {
    /// Number of direct children.
    pub direct_invites: u64,
    /// This month's sales as primary promoter, per currency, minor units.
    pub month_sales: Vec<(Currency, i64)>,
}

fn month_sales_hold(rs: &RuleSet, threshold: &Exact, facts: &GradeFacts) -> bool {
    facts.month_sales.iter().any(|(cur, sales)| {
        // With a rule-set currency, only that currency's sales count; without one, the
        // threshold is read in each currency.
        rs.currency.is_none_or(|c| c == *cur)
            && Exact::int(i128::from(*sales)) >= cur.major_to_minor(threshold)
    })
}

/// The grade the promoter should move up to, if any.
pub fn upgrade(rs: &RuleSet, current: Option<&str>, facts: &GradeFacts) -> Option<String> {
    let current_rank = match current {
        None => None,
        Some(g) => Some(rs.grade_rank(g)?), // unlisted grade: leave it alone
    };
    let best = rs.grades.iter().enumerate().rev().find(|(_, g)| {
        let has_condition = g.direct_invites.is_some() || g.month_sales.is_some();
        has_condition
            && g.direct_invites.is_none_or(|n| facts.direct_invites >= n)
            && g.month_sales
                .as_ref()
                .is_none_or(|t| month_sales_hold(rs, t, facts))
    })?;
    if current_rank.is_none_or(|r| best.0 > r) {
        Some(best.1.id.clone())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ruleset::compile;

    fn rs() -> RuleSet {
        compile("grades:\n- {id: silver, upgrade: {direct_invites: 2}}\n- {id: gold, upgrade: {month_sales: '1000'}}\n")
            .ruleset
            .unwrap()
    }

    #[test]
    fn two_invites_make_silver_and_sales_make_gold() {
        let cny = Currency::parse("CNY").unwrap();
        let f = GradeFacts {
            direct_invites: 2,
            month_sales: vec![],
        };
        assert_eq!(upgrade(&rs(), None, &f).as_deref(), Some("silver"));
        assert_eq!(upgrade(&rs(), Some("silver"), &f), None);
        let f = GradeFacts {
            direct_invites: 0,
            month_sales: vec![(cny, 100_000)],
        };
        assert_eq!(upgrade(&rs(), Some("silver"), &f).as_deref(), Some("gold"));
    }

    #[test]
    fn grades_never_go_down_and_unlisted_grades_are_kept() {
        let f = GradeFacts {
            direct_invites: 5,
            month_sales: vec![],
        };
        assert_eq!(upgrade(&rs(), Some("gold"), &f), None);
        assert_eq!(upgrade(&rs(), Some("platinum"), &f), None);
    }
}
