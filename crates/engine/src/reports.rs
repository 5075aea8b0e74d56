//! Every other report, over an engine snapshot: the same answers as the fold's reports in
//! `funnel_core::report`, from compact facts. Deals are found through the `deals` index; the
//! rest scan the compact facts, which fit in cache lines rather than strings.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use funnel_core::attribution::{MarkovChain, Model};
use funnel_core::event::{MinorSum, RejectionReason};
use funnel_core::lead::{LeadEvent, LeadFacts, Milestone};
use funnel_core::projection::Entry;
use funnel_core::report::{
    self, days, AttributionReport, AttributionRow, By, CostReport, CurrencyTotal, ExplainReport, FunnelQuery, LeadView,
    PlanReport, RejectionGroup, RejectionsReport, SlaReport, VelocityReport, Window,
};
use funnel_core::time::Micros;

use crate::dict::Sym;
use crate::facts::Deal;
use crate::markov::{State, Transition, CONVERSION, NULL, START};
use crate::slots::SlotView;
use crate::state::{Engine, LeadNo};

/// Live lead slots with facts.
fn leads(engine: &Engine) -> impl Iterator<Item = (LeadNo, SlotView<'_>)> + '_ {
    engine
        .leads()
        .iter()
        .enumerate()
        .map(|(i, s)| (i as LeadNo, s))
        .filter(|(_, s)| s.facts.exists())
}

/// Live leads with handoffs, rejections or deals: only their slots are decoded.
fn leads_with_extra(engine: &Engine) -> impl Iterator<Item = (LeadNo, SlotView<'_>)> + '_ {
    (engine.leads().with_extra())
        .filter_map(|no| Some((no as LeadNo, engine.lead(no as LeadNo)?)))
        .filter(|(_, s)| s.facts.exists())
}

/// Deals closed in the window and by `as_of`, with their lead, in lead order.
fn deals_in(engine: &Engine, window: &Window, as_of: Micros) -> Vec<(LeadNo, Deal)> {
    let lo = window.from.unwrap_or(Micros::MIN);
    let hi = window.to.unwrap_or(Micros::MAX).min(as_of.saturating_add(1));
    let mut nos: Vec<LeadNo> = engine
        .index()
        .deals
        .range(&(lo, 0), &(hi, 0))
        .into_iter()
        .map(|(_, no)| no)
        .collect();
    nos.sort_unstable();
    nos.dedup();
    nos.into_iter()
        .filter_map(|no| Some((no, engine.lead(no)?)))
        .flat_map(|(no, slot)| {
            let deals = slot.extra().map(|e| e.deals).unwrap_or_default();
            deals.into_vec().into_iter().map(move |d| (no, d))
        })
        .filter(|(_, d)| d.close_at <= as_of && window.contains(d.close_at))
        .collect()
}

pub fn velocity(engine: &Engine, window: Window, as_of: Micros) -> VelocityReport {
    // Every pair's sample in one pass over the leads (each slot is decoded once).
    let pairs: Vec<(Milestone, Milestone)> = std::iter::once((Milestone::Inquiry, Milestone::Won))
        .chain(report::PAIRS)
        .collect();
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); pairs.len()];
    for (_, s) in leads(engine) {
        let f = &s.facts;
        for (sample, (a, b)) in samples.iter_mut().zip(&pairs) {
            let Some(end) = f.milestone_at(*b, as_of).filter(|t| window.contains(*t)) else {
                continue;
            };
            if let Some(start) = f.milestone_at(*a, as_of) {
                sample.push(days(end - start));
            }
        }
    }
    report::velocity_of(engine.head(), window, as_of, |a, b| {
        pairs
            .iter()
            .position(|p| *p == (a, b))
            .map_or_else(Vec::new, |i| samples[i].clone())
    })
}

pub fn sla(engine: &Engine, window: Window, as_of: Micros) -> SlaReport {
    let handoffs: Vec<(LeadNo, funnel_core::lead::Handoff)> = leads_with_extra(engine)
        .flat_map(|(no, s)| {
            let handoffs = s.extra().map(|e| e.handoffs).unwrap_or_default();
            handoffs.into_vec().into_iter().map(move |h| (no, h))
        })
        .collect();
    let handoffs = handoffs.iter().map(|(no, h)| (*no, h));
    report::sla_of(engine.head(), handoffs, window, as_of, |no| {
        engine.names.name(no).unwrap_or_default()
    })
}

pub fn rejections(engine: &Engine, window: Window, by: Option<By>, as_of: Micros) -> RejectionsReport {
    let dict = engine.dict();
    let mut total = RejectionGroup::new("(all)".into());
    let mut groups: BTreeMap<String, RejectionGroup> = BTreeMap::new();
    let mut guaranteed: BTreeMap<(String, String), BTreeSet<LeadNo>> = BTreeMap::new();
    for (no, slot) in leads_with_extra(engine) {
        let facts = &slot.facts;
        let rejections = slot.extra().map(|e| e.rejections).unwrap_or_default();
        for (_, reason) in rejections.iter().filter(|(t, _)| *t <= as_of && window.contains(*t)) {
            total.add(*reason);
            if let Some(by) = by {
                let key = dict.label(facts.key(by, as_of)).to_owned();
                groups
                    .entry(key.clone())
                    .or_insert_with(|| RejectionGroup::new(key))
                    .add(*reason);
            }
            if *reason == RejectionReason::IcpMismatch {
                let channel = dict.label(facts.key(By::Channel, as_of)).to_owned();
                let campaign = dict.label(facts.key(By::Campaign, as_of)).to_owned();
                guaranteed.entry((channel, campaign)).or_default().insert(no);
            }
        }
    }
    let credits = guaranteed.into_iter().map(|(key, leads)| (key, leads.len() as u64));
    RejectionsReport::assemble(
        engine.head(),
        &window,
        by,
        as_of,
        total,
        groups.into_values().collect(),
        credits,
    )
}

#[derive(Default)]
struct Sums {
    spend: MinorSum,
    revenue: MinorSum,
    customers: BTreeSet<LeadNo>,
}

pub fn cost(engine: &Engine, window: Window, by: By, as_of: Micros) -> CostReport {
    let dict = engine.dict();
    let counts = |t: Micros| t <= as_of && window.contains(t);
    let mut sums: BTreeMap<(String, String), Sums> = BTreeMap::new();
    for spend in engine.spends().iter().filter(|s| counts(s.at)) {
        let key = match by {
            By::Campaign => spend.campaign,
            _ => spend.channel,
        };
        let s = sums
            .entry((dict.label(key).to_owned(), dict.name(spend.currency).to_owned()))
            .or_default();
        s.spend += MinorSum::from(spend.amount_minor);
    }
    for (no, deal) in deals_in(engine, &window, as_of) {
        let Some(slot) = engine.lead(no) else { continue };
        let key = dict.label(slot.facts.key(by, as_of)).to_owned();
        let s = sums.entry((key, dict.name(deal.currency).to_owned())).or_default();
        s.revenue += MinorSum::from(deal.amount_minor);
        s.customers.insert(no);
    }
    let sums = sums
        .into_iter()
        .map(|(key, s)| (key, s.spend, s.revenue, s.customers.len() as u64));
    CostReport::assemble(engine.head(), &window, by, as_of, sums)
}

pub fn plan(engine: &Engine, target_minor: i64, currency: &str, window: Window, as_of: Micros) -> PlanReport {
    let flow = crate::funnel::funnel(
        engine,
        &FunnelQuery {
            window,
            ..FunnelQuery::default()
        },
        as_of,
    );
    let sym = engine.dict().get(currency);
    let (mut won_deals, mut won_revenue) = (0u64, MinorSum::default());
    for (_, deal) in deals_in(engine, &window, as_of) {
        if Some(deal.currency) == sym {
            won_deals += 1;
            won_revenue += MinorSum::from(deal.amount_minor);
        }
    }
    report::plan_from(
        engine.head(),
        target_minor,
        currency,
        window,
        as_of,
        flow.total.period,
        won_deals,
        won_revenue,
    )
}

/// The Markov chain over every lead's path as of `as_of` ([`MarkovChain::solve`]'s counts,
/// from the maintained [`crate::markov::MarkovIndex`]): won leads up to their first won close,
/// others up to `as_of`, within lookback.
pub fn markov(engine: &Engine, as_of: Micros) -> MarkovChain {
    chain_of(engine, &engine.index().markov.counts(as_of))
}

/// The chain of these transition counts, its channels numbered by name as the fold numbers them.
fn chain_of(engine: &Engine, counts: &[(Transition, u64)]) -> MarkovChain {
    let dict = engine.dict();
    // Every channel on some path is the target of a transition.
    let mut channels: Vec<Sym> = counts.iter().map(|((_, to), _)| *to).filter(|s| *s < START).collect();
    channels.sort_unstable();
    channels.dedup();
    channels.sort_by(|a, b| dict.name(*a).cmp(dict.name(*b)));
    let n = channels.len();
    let rank: HashMap<Sym, usize> = channels.iter().enumerate().map(|(i, s)| (*s, i + 1)).collect();
    let number = |s: State| match s {
        START => 0,
        CONVERSION => n + 1,
        NULL => n + 2,
        s => rank[&s],
    };
    let paths = counts
        .iter()
        .filter(|((from, _), _)| *from == START)
        .map(|(_, c)| c)
        .sum();
    let conversions = counts
        .iter()
        .filter(|((_, to), _)| *to == CONVERSION)
        .map(|(_, c)| c)
        .sum();
    let counts: BTreeMap<(usize, usize), u64> = counts
        .iter()
        .map(|((a, b), c)| ((number(*a), number(*b)), *c))
        .collect();
    let names = channels.iter().map(|sym| dict.name(*sym).to_owned()).collect();
    MarkovChain::from_counts(names, counts, paths, conversions)
}

pub fn attribution(engine: &Engine, models: &[Model], window: Window, by: By, as_of: Micros) -> AttributionReport {
    let dict = engine.dict();
    let campaign = by == By::Campaign;
    let sums = engine.derived().credit_sums(engine, campaign);
    let markov = models.contains(&Model::Markov).then(|| {
        let counts = engine.index().markov.counts(as_of);
        let chain = chain_of(engine, &counts);
        engine.derived().markov_sums(engine, &sums, campaign, counts, &chain)
    });
    let lo = window.from.unwrap_or(Micros::MIN);
    let hi = window.to.unwrap_or(Micros::MAX).min(as_of.saturating_add(1));
    let credits = sums.window(engine, lo, hi, markov.as_deref());
    let mut rows: Vec<AttributionRow> = credits
        .rows
        .into_iter()
        .map(|(row, credits)| AttributionRow {
            key: dict.label(row.key).to_owned(),
            currency: dict.name(row.currency).to_owned(),
            credits_minor: models.iter().map(|m| (m.as_str(), credits[*m as usize])).collect(),
        })
        .collect();
    rows.sort_by(|a, b| (&a.key, &a.currency).cmp(&(&b.key, &b.currency)));
    let mut totals: Vec<CurrencyTotal> = credits
        .totals
        .into_iter()
        .map(|(currency, deals, amount)| CurrencyTotal {
            currency: dict.name(currency).to_owned(),
            deals,
            amount_minor: amount,
        })
        .collect();
    totals.sort_by(|a, b| a.currency.cmp(&b.currency));
    AttributionReport::assemble(engine.head(), &window, by, models, as_of, totals, rows)
}

/// A lead's ledger timeline up to the engine's head, its live events in `(occurred_at, seq)`
/// order, and who retracted what (the first retraction of a non-retraction event).
pub struct Timeline {
    pub entries: Vec<Entry>,
    pub live: Vec<LeadEvent>,
    pub retracted: HashMap<String, u64>,
}

impl Timeline {
    /// From every ledger entry filed under the lead (its events and retractions of them).
    pub fn of(mut entries: Vec<Entry>, upto: u64) -> Timeline {
        entries.retain(|e| e.seq <= upto);
        entries.sort_by_key(|e| e.seq);
        let is_retract = |e: &Entry| matches!(e.event.data, funnel_core::event::Data::Retract { .. });
        let retractable: BTreeSet<&str> = entries
            .iter()
            .filter(|e| !is_retract(e))
            .map(|e| e.event.id.as_str())
            .collect();
        let mut retracted: HashMap<String, u64> = HashMap::new();
        for e in &entries {
            if let funnel_core::event::Data::Retract { target_id, .. } = &e.event.data {
                if retractable.contains(target_id.as_str()) {
                    retracted.entry(target_id.clone()).or_insert(e.seq);
                }
            }
        }
        let mut live: Vec<LeadEvent> = entries
            .iter()
            .filter(|e| !is_retract(e) && !retracted.contains_key(&e.event.id))
            .map(|e| LeadEvent {
                seq: e.seq,
                event: e.event.clone(),
            })
            .collect();
        live.sort_by_key(|e| e.order_key());
        Timeline {
            entries,
            live,
            retracted,
        }
    }
}

/// `GET /v1/leads/{id}`; `None` if the lead does not exist at the engine's head.
pub fn lead(engine: &Engine, lead_id: &str, timeline: &Timeline, as_of: Micros) -> Option<LeadView> {
    engine.lead_no(lead_id)?;
    Some(report::lead_with(
        engine.head(),
        lead_id,
        &timeline.live,
        engine.rules(),
        &timeline.entries,
        |id| timeline.retracted.get(id).copied(),
        as_of,
    ))
}

/// `GET /v1/attribution/explain/{id}`; `None` if the lead does not exist at the engine's head.
pub fn explain(
    engine: &Engine,
    lead_id: &str,
    timeline: &Timeline,
    models: &[Model],
    as_of: Micros,
) -> Option<ExplainReport> {
    engine.lead_no(lead_id)?;
    let facts = LeadFacts::derive(&timeline.live, engine.rules());
    let chain = if models.contains(&Model::Markov) {
        markov(engine, as_of)
    } else {
        MarkovChain::solve(&[])
    };
    Some(report::explain_with(
        engine.head(),
        lead_id,
        facts.as_ref(),
        models,
        &chain,
        as_of,
    ))
}
