//! `GET /v1/plan`: work backward from a revenue target through the observed waterfall.

use serde::Serialize;

use super::{window_fields, Counts, FunnelGroup, Log, Rates, Window};
use crate::event::MinorSum;
use crate::projection::{LogPosition, Projection};
use crate::time::{format_rfc3339, Micros};

/// Fewer won deals than this in the window (in the target's currency) is too little history.
pub const PLAN_WON_DEALS_MIN: u64 = 3;

/// What must be reached to hit the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub won: u64,
    pub sql: u64,
    pub sal: u64,
    pub mql: u64,
    pub inquiry: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanReport {
    pub log: Log,
    pub as_of: String,
    pub from: Option<String>,
    pub to: Option<String>,
    pub currency: String,
    pub revenue_target_minor: i64,
    /// Won deals in the currency, closed in the window.
    pub won_deals: u64,
    pub won_revenue_minor: MinorSum,
    /// won_revenue ÷ won_deals, rounded half away from zero.
    pub average_deal_minor: Option<i64>,
    /// Milestones reached in the window: the flow the rates come from.
    pub period: Counts,
    /// Flow rates of the window (period counts): mql/inquiry, sal/mql, sql/sal, won/sql.
    pub rates: Rates,
    /// `null` when there is too little history; `insufficient` says why.
    pub needed: Option<Plan>,
    pub insufficient: Vec<String>,
}

/// ⌈a·b / c⌉ in exact integer arithmetic, `c` as wide as a money sum (`a·b` < 2^128 always;
/// saturating at `u64::MAX`, which no count reaches).
fn ceil_mul_div(a: u64, b: u64, c: u128) -> u64 {
    u64::try_from((u128::from(a) * u128::from(b)).div_ceil(c)).unwrap_or(u64::MAX)
}

pub fn plan(projection: &Projection, target_minor: i64, currency: &str, window: Window, as_of: Micros) -> PlanReport {
    let mut flow = FunnelGroup::new("(all)".into());
    let (mut won_deals, mut won_revenue) = (0u64, MinorSum::default());
    for facts in projection.leads().values().filter_map(|s| s.facts.as_ref()) {
        flow.add(facts, &window, None, as_of);
        for deal in facts
            .deals
            .iter()
            .filter(|d| d.close_at <= as_of && window.contains(d.close_at) && d.amount.currency == currency)
        {
            won_deals += 1;
            won_revenue += MinorSum::from(deal.amount.amount_minor);
        }
    }
    plan_from(
        projection.head(),
        target_minor,
        currency,
        window,
        as_of,
        flow.period,
        won_deals,
        won_revenue,
    )
}

/// The plan from the window's period counts and its won deals in `currency`.
#[allow(clippy::too_many_arguments)]
pub fn plan_from(
    head: LogPosition,
    target_minor: i64,
    currency: &str,
    window: Window,
    as_of: Micros,
    p: Counts,
    won_deals: u64,
    won_revenue: MinorSum,
) -> PlanReport {
    let mut insufficient = Vec::new();
    if won_deals < PLAN_WON_DEALS_MIN {
        insufficient.push(format!(
            "{won_deals} won deal(s) in {currency} in the window; at least {PLAN_WON_DEALS_MIN} are needed"
        ));
    }
    if won_revenue == 0 && won_deals > 0 {
        insufficient.push(format!("won deals in {currency} total 0"));
    }
    for (name, n) in [
        ("inquiries", p.inquiry),
        ("MQLs", p.mql),
        ("SALs", p.sal),
        ("SQLs", p.sql),
        ("wins", p.won),
    ] {
        if n == 0 {
            insufficient.push(format!("no {name} in the window, so that stage has no observed rate"));
        }
    }
    let needed = insufficient.is_empty().then(|| {
        // wins = ⌈target ÷ average deal⌉ = ⌈target · deals ÷ revenue⌉, then up the waterfall by the inverse rates.
        let won = ceil_mul_div(target_minor.unsigned_abs(), won_deals, won_revenue.unsigned_abs());
        let sql = ceil_mul_div(won, p.sql, u128::from(p.won));
        let sal = ceil_mul_div(sql, p.sal, u128::from(p.sql));
        let mql = ceil_mul_div(sal, p.mql, u128::from(p.sal));
        let inquiry = ceil_mul_div(mql, p.inquiry, u128::from(p.mql));
        Plan {
            won,
            sql,
            sal,
            mql,
            inquiry,
        }
    });
    let rate = |n: u64, d: u64| (d > 0).then(|| n as f64 / d as f64);
    let (from, to) = window_fields(&window);
    PlanReport {
        log: head.into(),
        as_of: format_rfc3339(as_of),
        from,
        to,
        currency: currency.to_owned(),
        revenue_target_minor: target_minor,
        won_deals,
        won_revenue_minor: won_revenue,
        average_deal_minor: (won_deals > 0).then(|| {
            let n = MinorSum::from(won_deals);
            // At most the largest amount, so it fits.
            i64::try_from((won_revenue + n / 2) / n).unwrap_or(i64::MAX)
        }),
        period: p,
        rates: Rates {
            mql_per_inquiry: rate(p.mql, p.inquiry),
            sal_per_mql: rate(p.sal, p.mql),
            sql_per_sal: rate(p.sql, p.sal),
            opportunity_per_sql: rate(p.opportunity, p.sql),
            win_rate: rate(p.won, p.sql),
            lead_to_customer: rate(p.won, p.inquiry),
        },
        needed,
        insufficient,
    }
}
