//! `GET /v1/attribution` and `GET /v1/attribution/explain/{lead_id}`.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{window_fields, By, Log, Window};
use crate::attribution::{shares_under, DealCredits, MarkovChain, Model, Share, UNATTRIBUTED};
use crate::event::MinorSum;
use crate::lead::LeadFacts;
use crate::projection::{LogPosition, Projection};
use crate::time::{format_rfc3339, Micros};

/// Credits of one channel (or campaign) in one currency, per model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttributionRow {
    pub key: String,
    pub currency: String,
    pub credits_minor: BTreeMap<&'static str, MinorSum>,
}

/// Deals credited in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CurrencyTotal {
    pub currency: String,
    pub deals: u64,
    pub amount_minor: MinorSum,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttributionReport {
    pub log: Log,
    pub as_of: String,
    pub from: Option<String>,
    pub to: Option<String>,
    pub by: &'static str,
    pub models: Vec<&'static str>,
    /// Per currency: what every model's column sums to.
    pub totals: Vec<CurrencyTotal>,
    pub rows: Vec<AttributionRow>,
}

fn chain_for(projection: &Projection, models: &[Model], as_of: Micros) -> MarkovChain {
    let leads = projection
        .leads()
        .values()
        .filter_map(|s| Some((s.events.as_slice(), s.facts.as_ref()?)));
    if models.contains(&Model::Markov) {
        MarkovChain::build(leads, projection.rules(), as_of)
    } else {
        MarkovChain::build(std::iter::empty(), projection.rules(), as_of)
    }
}

/// Revenue of the deals closed in the window (by `as_of`), credited per model.
pub fn attribution(
    projection: &Projection,
    models: &[Model],
    window: Window,
    by: By,
    as_of: Micros,
) -> AttributionReport {
    let chain = chain_for(projection, models, as_of);
    let mut rows: BTreeMap<(String, String), BTreeMap<&'static str, MinorSum>> = BTreeMap::new();
    let mut totals: BTreeMap<String, CurrencyTotal> = BTreeMap::new();
    let deals = projection
        .leads()
        .values()
        .filter_map(|s| s.facts.as_ref())
        .flat_map(|f| &f.deals);
    for deal in deals.filter(|d| d.close_at <= as_of && window.contains(d.close_at)) {
        let currency = &deal.amount.currency;
        let total = totals.entry(currency.clone()).or_insert_with(|| CurrencyTotal {
            currency: currency.clone(),
            deals: 0,
            amount_minor: 0,
        });
        total.deals += 1;
        total.amount_minor += MinorSum::from(deal.amount.amount_minor);
        for model in models {
            if deal.touches.is_empty() {
                credit(
                    &mut rows,
                    models,
                    UNATTRIBUTED.to_owned(),
                    currency,
                    *model,
                    deal.amount.amount_minor,
                );
                continue;
            }
            for (touch, share) in deal.touches.iter().zip(shares_under(deal, *model, &chain)) {
                let key = match by {
                    By::Campaign => touch.campaign.clone().unwrap_or_else(|| UNATTRIBUTED.to_owned()),
                    _ => touch.channel.clone(),
                };
                credit(&mut rows, models, key, currency, *model, share.credit_minor);
            }
        }
    }
    let rows = rows
        .into_iter()
        .map(|((key, currency), credits_minor)| AttributionRow {
            key,
            currency,
            credits_minor,
        })
        .collect();
    AttributionReport::assemble(
        projection.head(),
        &window,
        by,
        models,
        as_of,
        totals.into_values().collect(),
        rows,
    )
}

impl AttributionReport {
    /// The report from its totals and rows (rows ordered by `(key, currency)`). Shared by the
    /// fold and the projection engine.
    pub fn assemble(
        head: LogPosition,
        window: &Window,
        by: By,
        models: &[Model],
        as_of: Micros,
        totals: Vec<CurrencyTotal>,
        rows: Vec<AttributionRow>,
    ) -> AttributionReport {
        let (from, to) = window_fields(window);
        AttributionReport {
            log: head.into(),
            as_of: format_rfc3339(as_of),
            from,
            to,
            by: by.as_str(),
            models: models.iter().map(|m| m.as_str()).collect(),
            totals,
            rows,
        }
    }
}

fn credit(
    rows: &mut BTreeMap<(String, String), BTreeMap<&'static str, MinorSum>>,
    models: &[Model],
    key: String,
    currency: &str,
    model: Model,
    amount: i64,
) {
    let row = rows
        .entry((key, currency.to_owned()))
        .or_insert_with(|| models.iter().map(|m| (m.as_str(), 0)).collect());
    *row.entry(model.as_str()).or_default() += MinorSum::from(amount);
}

/// One touch's weight and credit under one model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExplainedShare {
    /// `num/den` in lowest terms for role models; quantised reals for time_decay and markov.
    pub weight: String,
    pub weight_decimal: f64,
    pub credit_minor: i64,
}

impl From<Share> for ExplainedShare {
    fn from(s: Share) -> ExplainedShare {
        ExplainedShare {
            weight: format!("{}/{}", s.num, s.den),
            weight_decimal: if s.den == 0 { 0.0 } else { s.num as f64 / s.den as f64 },
            credit_minor: s.credit_minor,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExplainedTouch {
    pub event_id: String,
    pub seq: u64,
    pub occurred_at: String,
    pub channel: String,
    pub campaign: Option<String>,
    pub roles: Vec<&'static str>,
    pub models: BTreeMap<&'static str, ExplainedShare>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RulesAtClose {
    pub attribution_lookback_days: f64,
    pub time_decay_half_life_days: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExplainedDeal {
    pub event_id: String,
    pub seq: u64,
    pub close_at: String,
    pub amount_minor: i64,
    pub currency: String,
    pub rules_in_force: RulesAtClose,
    /// Touches count from here to `close_at`, inclusive.
    pub touches_from: String,
    /// Milestones as of the close, for the `lead` and `opportunity` roles.
    pub milestones: BTreeMap<&'static str, Option<String>>,
    pub touches: Vec<ExplainedTouch>,
    /// With no touches, the whole amount per model to `(none)`.
    pub unattributed_minor: Option<BTreeMap<&'static str, i64>>,
}

/// The Markov chain as the explanation needs it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExplainedChain {
    pub paths: u64,
    pub conversions: u64,
    pub conversion_probability: f64,
    pub removal_effects: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExplainReport {
    pub log: Log,
    pub as_of: String,
    pub lead_id: String,
    pub models: Vec<&'static str>,
    pub deals: Vec<ExplainedDeal>,
    pub markov: Option<ExplainedChain>,
}

fn explain_deal(deal: &DealCredits, models: &[Model], chain: &MarkovChain) -> ExplainedDeal {
    let shares: Vec<(Model, Vec<Share>)> = models.iter().map(|m| (*m, shares_under(deal, *m, chain))).collect();
    let lookback = (deal.lookback_days * crate::time::MICROS_PER_DAY as f64).round() as Micros;
    ExplainedDeal {
        event_id: deal.event_id.clone(),
        seq: deal.seq,
        close_at: format_rfc3339(deal.close_at),
        amount_minor: deal.amount.amount_minor,
        currency: deal.amount.currency.clone(),
        rules_in_force: RulesAtClose {
            attribution_lookback_days: deal.lookback_days,
            time_decay_half_life_days: deal.half_life_days,
        },
        touches_from: format_rfc3339(deal.close_at.saturating_sub(lookback)),
        milestones: [
            ("mql", deal.mql_at),
            ("sql", deal.sql_at),
            ("opportunity", deal.opportunity_at),
        ]
        .into_iter()
        .map(|(k, v)| (k, v.map(format_rfc3339)))
        .collect(),
        touches: deal
            .touches
            .iter()
            .enumerate()
            .map(|(i, t)| ExplainedTouch {
                event_id: t.event_id.clone(),
                seq: t.seq,
                occurred_at: format_rfc3339(t.occurred_at),
                channel: t.channel.clone(),
                campaign: t.campaign.clone(),
                roles: t.roles.iter().map(|r| r.as_str()).collect(),
                models: shares.iter().map(|(m, s)| (m.as_str(), s[i].into())).collect(),
            })
            .collect(),
        unattributed_minor: deal
            .touches
            .is_empty()
            .then(|| models.iter().map(|m| (m.as_str(), deal.amount.amount_minor)).collect()),
    }
}

/// Every deal of one lead (closed by `as_of`), every touch, every model. `None`: no such lead.
pub fn explain(projection: &Projection, lead_id: &str, models: &[Model], as_of: Micros) -> Option<ExplainReport> {
    let facts = projection.lead(lead_id)?.facts.as_ref();
    let chain = chain_for(projection, models, as_of);
    Some(explain_with(projection.head(), lead_id, facts, models, &chain, as_of))
}

/// The explanation of one lead from its facts and the Markov chain as of `as_of` (an empty
/// chain when `models` has no `markov`).
pub fn explain_with(
    head: LogPosition,
    lead_id: &str,
    facts: Option<&LeadFacts>,
    models: &[Model],
    chain: &MarkovChain,
    as_of: Micros,
) -> ExplainReport {
    let deals = facts.map_or(&[][..], |f| f.deals.as_slice());
    ExplainReport {
        log: head.into(),
        as_of: format_rfc3339(as_of),
        lead_id: lead_id.to_owned(),
        models: models.iter().map(|m| m.as_str()).collect(),
        deals: deals
            .iter()
            .filter(|d| d.close_at <= as_of)
            .map(|d| explain_deal(d, models, chain))
            .collect(),
        markov: models.contains(&Model::Markov).then(|| ExplainedChain {
            paths: chain.paths,
            conversions: chain.conversions,
            conversion_probability: chain.conversion_probability,
            removal_effects: chain.removal_effects.clone(),
        }),
    }
}
