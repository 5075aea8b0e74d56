//! `GET /v1/cost`: spend, customers won, cost per customer, revenue and ROI, per currency.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{window_fields, By, Log, Window, NONE_KEY};
use crate::event::{Data, MinorSum};
use crate::projection::{LogPosition, Projection};
use crate::time::{format_rfc3339, Micros};

/// One channel (or campaign) in one currency. Money is integer minor units.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CostRow {
    pub key: String,
    pub currency: String,
    pub spend_minor: MinorSum,
    /// Leads sourced here with a won deal in this currency in the window.
    pub customers: u64,
    /// spend ÷ customers, rounded half away from zero; `null` with no customers.
    pub cost_per_customer_minor: Option<MinorSum>,
    /// Won deal amounts in the window.
    pub revenue_minor: MinorSum,
    /// (revenue − spend) ÷ spend; `null` with no spend.
    pub roi: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CostReport {
    pub log: Log,
    pub as_of: String,
    pub from: Option<String>,
    pub to: Option<String>,
    pub by: &'static str,
    pub rows: Vec<CostRow>,
}

#[derive(Default)]
struct Sums<'a> {
    spend: MinorSum,
    revenue: MinorSum,
    customers: BTreeSet<&'a str>,
}

/// `by` is `Channel` or `Campaign`: spend is booked to its own channel/campaign, revenue to the
/// lead's source (first touch).
pub fn cost(projection: &Projection, window: Window, by: By, as_of: Micros) -> CostReport {
    let counts = |t: Micros| t <= as_of && window.contains(t);
    let mut sums: BTreeMap<(String, String), Sums> = BTreeMap::new();
    for spend in projection.spends().values().filter(|e| counts(e.occurred_at)) {
        if let Data::Spend {
            channel,
            campaign,
            amount,
        } = &spend.data
        {
            let key = match by {
                By::Campaign => campaign.clone().unwrap_or_else(|| NONE_KEY.to_owned()),
                _ => channel.clone(),
            };
            let s = sums.entry((key, amount.currency.clone())).or_default();
            s.spend += MinorSum::from(amount.amount_minor);
        }
    }
    for (lead_id, facts) in projection
        .leads()
        .iter()
        .filter_map(|(id, s)| Some((id, s.facts.as_ref()?)))
    {
        for deal in facts.deals.iter().filter(|d| counts(d.close_at)) {
            let s = sums
                .entry((by.key(facts, as_of), deal.amount.currency.clone()))
                .or_default();
            s.revenue += MinorSum::from(deal.amount.amount_minor);
            s.customers.insert(lead_id);
        }
    }
    let sums = sums
        .into_iter()
        .map(|(key, s)| (key, s.spend, s.revenue, s.customers.len() as u64));
    CostReport::assemble(projection.head(), &window, by, as_of, sums)
}

impl CostReport {
    /// The report from its sums per `(key, currency)` in that order: `(spend, revenue,
    /// customers)`. Shared by the fold and the projection engine.
    pub fn assemble(
        head: LogPosition,
        window: &Window,
        by: By,
        as_of: Micros,
        sums: impl IntoIterator<Item = ((String, String), MinorSum, MinorSum, u64)>,
    ) -> CostReport {
        let (from, to) = window_fields(window);
        CostReport {
            log: head.into(),
            as_of: format_rfc3339(as_of),
            from,
            to,
            by: by.as_str(),
            rows: sums
                .into_iter()
                .map(|((key, currency), spend, revenue, customers)| {
                    CostRow::of(key, currency, spend, revenue, customers)
                })
                .collect(),
        }
    }
}

impl CostRow {
    /// A row from its sums: cost per customer rounded half away from zero, ROI over spend.
    pub fn of(key: String, currency: String, spend: MinorSum, revenue: MinorSum, customers: u64) -> CostRow {
        let n = MinorSum::from(customers);
        CostRow {
            key,
            currency,
            spend_minor: spend,
            customers,
            cost_per_customer_minor: (n > 0).then(|| (spend + n / 2) / n),
            revenue_minor: revenue,
            roi: (spend > 0).then(|| (revenue - spend) as f64 / spend as f64),
        }
    }
}
