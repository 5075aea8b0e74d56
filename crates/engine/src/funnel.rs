//! `GET /v1/funnel` from the maintained indexes.
//!
//! The indexes hold every lead's *final* facts (as of forever). A lead's answer as of `T`
//! differs from its final one only if something the funnel reads of it (a milestone, its
//! first touch) happens after `T`: those leads are a suffix of the `settled` index, and their
//! contribution is corrected one by one. Dashboards ask as of now, when that suffix is empty
//! or tiny; an auditor's `as_of` deep in the past costs a scan of the leads settled after it.

use std::collections::{BTreeMap, HashMap};

use funnel_core::lead::Milestone;
use funnel_core::projection::LogPosition;
use funnel_core::report::{Counts, FunnelGroup, FunnelQuery, FunnelReport};
use funnel_core::time::Micros;

use crate::dict::Sym;
use crate::facts::Facts;
use crate::state::{dim_key, Engine, DIMS};

/// Signed counts while corrections are applied.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    period: [i64; 7],
    cohort: [i64; 7],
    /// Leads in the group (a group with none is not listed).
    members: i64,
}

impl Tally {
    /// One lead's contribution as of `as_of` (the fold's `FunnelGroup::add`), times `sign`.
    fn add(&mut self, facts: &Facts, lo: Micros, hi: Micros, within: Option<Micros>, as_of: Micros, sign: i64) {
        self.members += sign;
        let reached = Milestone::ALL.map(|m| facts.milestone_at(m, as_of));
        for (m, t) in reached.iter().enumerate() {
            if t.is_some_and(|t| t >= lo && t < hi) {
                self.period[m] += sign;
            }
        }
        let Some(inquiry) = reached[0] else {
            return;
        };
        if inquiry >= lo && inquiry < hi {
            for (m, t) in reached.iter().enumerate() {
                if t.is_some_and(|t| within.is_none_or(|w| t - inquiry <= w)) {
                    self.cohort[m] += sign;
                }
            }
        }
    }

    fn group(&self, key: String) -> FunnelGroup {
        FunnelGroup {
            key,
            period: Tally::counts(&self.period),
            cohort: Tally::counts(&self.cohort),
            ..FunnelGroup::new(String::new())
        }
    }

    fn counts(v: &[i64; 7]) -> Counts {
        let c = |i: usize| u64::try_from(v[i]).expect("index count below zero: index and facts disagree");
        Counts {
            inquiry: c(0),
            mql: c(1),
            sal: c(2),
            sql: c(3),
            opportunity: c(4),
            won: c(5),
            lost: c(6),
        }
    }
}

/// The dimension of [`DIMS`] a query breaks down by.
fn dim_of(query: &FunnelQuery) -> Option<usize> {
    query.by.map(|by| DIMS.iter().position(|d| *d == Some(by)).unwrap_or(0))
}

/// The groups with members, labelled, in key order.
fn listed(engine: &Engine, tallies: impl IntoIterator<Item = (Sym, Tally)>) -> Vec<FunnelGroup> {
    let dict = engine.dict();
    let groups: BTreeMap<String, FunnelGroup> = tallies
        .into_iter()
        .filter(|(_, t)| t.members > 0)
        .map(|(g, t)| {
            let key = dict.label(g).to_owned();
            (key.clone(), t.group(key))
        })
        .collect();
    groups.into_values().collect()
}

fn bump(facts: &Facts, bounds: &[Micros], as_of: Micros, series: &mut [[i64; 7]], sign: i64) {
    for m in Milestone::ALL {
        if let Some(t) = facts.milestone_at(m, as_of) {
            let i = bounds.partition_point(|b| *b <= t);
            if i >= 1 && i < bounds.len() {
                series[i - 1][m as usize] += sign;
            }
        }
    }
}

/// The funnel report; `query.bounds()` must have been checked by the caller.
pub fn funnel(engine: &Engine, query: &FunnelQuery, as_of: Micros) -> FunnelReport {
    let _span = tracing::debug_span!("funnel").entered();
    let (lo, hi) = (
        query.window.from.unwrap_or(Micros::MIN),
        query.window.to.unwrap_or(Micros::MAX),
    );
    let within = query.within();
    let days = query.within_days.unwrap_or(u32::MAX);
    let dim = dim_of(query);
    let index = engine.index();
    let from_index = |d: usize| -> HashMap<Sym, Tally> {
        index.groups[d]
            .iter()
            .map(|(g, gi)| {
                let mut t = Tally {
                    members: gi.period[0].len() as i64,
                    ..Tally::default()
                };
                for m in 0..7 {
                    t.period[m] = gi.period[m].count(&lo, &hi) as i64;
                    t.cohort[m] = gi.cohort[m].count(lo, hi, days) as i64;
                }
                t.cohort[0] = t.period[0];
                (*g, t)
            })
            .collect()
    };
    let mut total = from_index(0).remove(&0).unwrap_or_default();
    let mut groups = dim.map(from_index).unwrap_or_default();
    let bounds = query.bounds().ok().flatten();
    let mut series: Vec<[i64; 7]> = match (&bounds, index.groups[0].get(&0)) {
        (Some(b), Some(all)) => b
            .windows(2)
            .map(|w| std::array::from_fn(|m| all.period[m].count(&w[0], &w[1]) as i64))
            .collect(),
        (Some(b), None) => vec![[0; 7]; b.len() - 1],
        _ => Vec::new(),
    };
    // Leads whose answer as of `as_of` is not their final one.
    let late = index
        .settled
        .range(&(as_of.saturating_add(1), 0), &(Micros::MAX, u32::MAX));
    for (_, no) in late {
        let Some(slot) = engine.lead(no) else { continue };
        let f = &slot.facts;
        total.add(f, lo, hi, within, Micros::MAX, -1);
        total.add(f, lo, hi, within, as_of, 1);
        if let Some(d) = dim {
            groups
                .entry(dim_key(d, f, Micros::MAX))
                .or_default()
                .add(f, lo, hi, within, Micros::MAX, -1);
            groups
                .entry(dim_key(d, f, as_of))
                .or_default()
                .add(f, lo, hi, within, as_of, 1);
        }
        if let Some(b) = &bounds {
            bump(f, b, Micros::MAX, &mut series, -1);
            bump(f, b, as_of, &mut series, 1);
        }
    }
    let series = bounds
        .as_deref()
        .map(|b| (b, series.iter().map(Tally::counts).collect()));
    FunnelReport::assemble(
        engine.head(),
        query,
        as_of,
        total.group("(all)".to_owned()),
        listed(engine, groups),
        series,
    )
}

/// An upper bound on the index operations [`funnel`] performs for `query`, known before it
/// runs: about two cache misses each, so a cost of 2,000 is about 0.1 ms. `None` for a
/// conversion window (`within_days`), whose cohort counts scan blocks of points.
pub fn cost(engine: &Engine, query: &FunnelQuery, as_of: Micros) -> Option<u64> {
    if query.within_days.is_some() {
        return None;
    }
    let index = engine.index();
    let groups = 1 + dim_of(query).map_or(0, |d| index.groups[d].len()) as u64;
    let buckets = match query.bounds() {
        Ok(Some(b)) => b.len() as u64,
        Ok(None) => 0,
        Err(_) => return None,
    };
    let late = index
        .settled
        .count(&(as_of.saturating_add(1), 0), &(Micros::MAX, u32::MAX)) as u64;
    Some(groups * 26 + buckets * 14 + late * 8)
}

/// The funnel report at an earlier log position `at` (`at.seq` at most the engine's head),
/// from the history's born and died points: no replay. `None` when the history cannot answer
/// exactly and the caller must replay the prefix: a conversion window (`within_days`: a
/// three-dimensional count), an `as_of` earlier than a time some version reads, or an
/// incomplete history.
pub fn funnel_at(engine: &Engine, query: &FunnelQuery, as_of: Micros, at: LogPosition) -> Option<FunnelReport> {
    let history = engine.history();
    if query.within_days.is_some() || as_of < history.latest || !history.complete || at.seq > engine.head().seq {
        return None;
    }
    let upto = crate::history::stamp_seq(at.seq)?;
    let _span = tracing::debug_span!("funnel_at", seq = at.seq).entered();
    let (lo, hi) = (
        query.window.from.unwrap_or(Micros::MIN),
        query.window.to.unwrap_or(Micros::MAX),
    );
    let tally = |g: &crate::history::GroupHistory| -> Tally {
        let mut t = Tally {
            members: g.period[0].count(Micros::MIN, Micros::MAX, upto),
            ..Tally::default()
        };
        for m in 0..7 {
            t.period[m] = g.period[m].count(lo, hi, upto);
            t.cohort[m] = g.cohort[m].count(lo, hi, upto);
        }
        t.cohort[0] = t.period[0];
        t
    };
    let total = history.groups[0].get(&0).map(tally).unwrap_or_default();
    let dim = dim_of(query);
    let groups = dim.map(|d| history.groups[d].iter().map(|(g, gh)| (*g, tally(gh))));
    let bounds = query.bounds().ok().flatten();
    let series = bounds.as_deref().map(|b| {
        let counts = b
            .windows(2)
            .map(|w| {
                let period: [i64; 7] = std::array::from_fn(|m| {
                    history.groups[0]
                        .get(&0)
                        .map_or(0, |g| g.period[m].count(w[0], w[1], upto))
                });
                Tally::counts(&period)
            })
            .collect();
        (b, counts)
    });
    Some(FunnelReport::assemble(
        at,
        query,
        as_of,
        total.group("(all)".to_owned()),
        listed(engine, groups.into_iter().flatten()),
        series,
    ))
}
