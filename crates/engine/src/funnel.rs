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

use funnel_ledger::Ledger;

use crate::dict::Sym;
use crate::facts::{filed, Facts};
use crate::state::{dim_key, summed, Engine, LeadNo, DIMS};
use crate::EngineError;

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
    query.by.map(|by| DIMS.iter().position(|d| *d == by).unwrap_or(0))
}

/// The counts before any lead is corrected, from per-dimension groups (the indexes or the
/// history): each group's tally in the breakdown asked, the total over all leads (the sum of
/// those groups, or of the groups of the dimension with the fewest), and per trend bucket the
/// sum over the same groups of `count(group, milestone, from, to)`.
fn counted<G>(
    groups: &[HashMap<Sym, G>; 3],
    query: &FunnelQuery,
    bounds: Option<&[Micros]>,
    tally: impl Fn(&G) -> Tally,
    count: impl Fn(&G, usize, Micros, Micros) -> i64,
) -> (HashMap<Sym, Tally>, Tally, Vec<[i64; 7]>) {
    let dim = dim_of(query);
    let tallies = |d: usize| -> HashMap<Sym, Tally> { groups[d].iter().map(|(g, gi)| (*g, tally(gi))).collect() };
    let listed = dim.map(tallies).unwrap_or_default();
    let summed_dim = summed(groups);
    let mut total = Tally::default();
    let mut add = |t: &Tally| {
        total.members += t.members;
        for m in 0..7 {
            total.period[m] += t.period[m];
            total.cohort[m] += t.cohort[m];
        }
    };
    match dim {
        Some(_) => listed.values().for_each(&mut add),
        None => tallies(summed_dim).values().for_each(&mut add),
    }
    let sum = &groups[summed_dim];
    let series = bounds.map_or_else(Vec::new, |b| {
        b.windows(2)
            .map(|w| std::array::from_fn(|m| sum.values().map(|g| count(g, m, w[0], w[1])).sum()))
            .collect()
    });
    (listed, total, series)
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

/// Counts that hold every lead's final view (as of forever), being corrected lead by lead to
/// what they are as of an earlier time.
struct Corrected<'a> {
    total: &'a mut Tally,
    groups: &'a mut HashMap<Sym, Tally>,
    series: &'a mut [[i64; 7]],
}

impl Corrected<'_> {
    /// Replaces the lead's final contribution (the view the counts hold) by its contribution
    /// as of `as_of`.
    fn correct(&mut self, f: &Facts, query: &FunnelQuery, bounds: Option<&[Micros]>, as_of: Micros) {
        let (lo, hi) = (
            query.window.from.unwrap_or(Micros::MIN),
            query.window.to.unwrap_or(Micros::MAX),
        );
        let within = query.within();
        self.total.add(f, lo, hi, within, Micros::MAX, -1);
        self.total.add(f, lo, hi, within, as_of, 1);
        if let Some(d) = dim_of(query) {
            (self.groups.entry(dim_key(d, f, Micros::MAX)).or_default()).add(f, lo, hi, within, Micros::MAX, -1);
            (self.groups.entry(dim_key(d, f, as_of)).or_default()).add(f, lo, hi, within, as_of, 1);
        }
        if let Some(b) = bounds {
            bump(f, b, Micros::MAX, self.series, -1);
            bump(f, b, as_of, self.series, 1);
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
    let days = query.within_days.unwrap_or(u32::MAX);
    let index = engine.index();
    let tally = |gi: &crate::state::GroupIndex| {
        let mut t = Tally {
            members: gi.period[0].len() as i64,
            ..Tally::default()
        };
        for m in 0..7 {
            t.period[m] = gi.period[m].count(&lo, &hi) as i64;
            t.cohort[m] = gi.cohort[m].count(lo, hi, days) as i64;
        }
        t.cohort[0] = t.period[0];
        t
    };
    let bounds = query.bounds().ok().flatten();
    let (mut groups, mut total, mut series) =
        counted(&index.groups, query, bounds.as_deref(), tally, |g, m, from, to| {
            g.period[m].count(&from, &to) as i64
        });
    // Leads whose answer as of `as_of` is not their final one.
    let late = index
        .settled
        .range(&(as_of.saturating_add(1), 0), &(Micros::MAX, u32::MAX));
    let mut counts = Corrected {
        total: &mut total,
        groups: &mut groups,
        series: &mut series,
    };
    for (_, no) in late {
        if let Some(slot) = engine.lead(no) {
            counts.correct(&slot.facts, query, bounds.as_deref(), as_of);
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
    let summed = index.groups[summed(&index.groups)].len() as u64;
    let groups = dim_of(query).map_or(summed, |d| index.groups[d].len() as u64);
    let buckets = match query.bounds() {
        Ok(Some(b)) => b.len() as u64 * summed,
        Ok(None) => 0,
        Err(_) => return None,
    };
    let late = index
        .settled
        .count(&(as_of.saturating_add(1), 0), &(Micros::MAX, u32::MAX)) as u64;
    Some(groups * 26 + buckets * 14 + late * 8)
}

/// Leads re-derived from their entries per [`funnel_at`] question at most; beyond, the
/// prefix is replayed (an `as_of` far in the past of a log that changed much after `at`).
pub const DERIVED_AT_MOST: usize = 2_000;

/// The funnel report at an earlier log position `at` (`at.seq` at most the engine's head),
/// from the history's born and died points: no replay. The history holds every lead's view as
/// of forever at each seq; a lead whose view as of `as_of` differs (it reads a later time:
/// the `settled` index and [`Engine::late`] list every such lead) is corrected one by one with
/// its facts at `at`: its final facts if nothing changed it after `at`, otherwise derived from
/// its entries up to `at`, read from `ledger`.
///
/// `None` when the history cannot answer exactly and the caller must replay the prefix: a
/// conversion window (`within_days`: a three-dimensional count), an incomplete history, a
/// rules change after `at` while some lead needs correcting, or more than
/// [`DERIVED_AT_MOST`] leads to re-derive.
pub fn funnel_at(
    engine: &Engine,
    query: &FunnelQuery,
    as_of: Micros,
    at: LogPosition,
    ledger: &Ledger,
) -> Result<Option<FunnelReport>, EngineError> {
    let history = engine.history();
    if query.within_days.is_some() || !history.complete || at.seq > engine.head().seq {
        return Ok(None);
    }
    let Some(upto) = crate::history::stamp_seq(at.seq) else {
        return Ok(None);
    };
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
    let bounds = query.bounds().ok().flatten();
    let (mut groups, mut total, mut series) =
        counted(&history.groups, query, bounds.as_deref(), tally, |g, m, from, to| {
            g.period[m].count(from, to, upto)
        });
    if as_of < history.latest {
        let index = engine.index();
        let mut late: Vec<LeadNo> = (index
            .settled
            .range(&(as_of.saturating_add(1), 0), &(Micros::MAX, u32::MAX)))
        .into_iter()
        .map(|(_, no)| no)
        .chain(engine.late().iter().filter(|(_, t)| **t > as_of).map(|(no, _)| *no))
        .collect();
        late.sort_unstable();
        late.dedup();
        let mut counts = Corrected {
            total: &mut total,
            groups: &mut groups,
            series: &mut series,
        };
        let mut derived = 0;
        for no in late {
            let Some(slot) = engine.lead(no) else { continue };
            let seqs = filed::seqs(slot.filed);
            if seqs.first().is_none_or(|first| *first > at.seq) {
                continue; // not yet a lead at `at`
            }
            if engine.rules_changed_at() > at.seq {
                return Ok(None);
            }
            let owned;
            let facts = if seqs.last().is_some_and(|last| *last <= at.seq) {
                &slot.facts
            } else {
                derived += 1;
                if derived > DERIVED_AT_MOST {
                    return Ok(None);
                }
                let Some(f) = engine.facts_at(no, at.seq, ledger)? else {
                    return Ok(None);
                };
                owned = f;
                &owned
            };
            if facts.exists() && facts.settled_at() > as_of {
                counts.correct(facts, query, bounds.as_deref(), as_of);
            }
        }
    }
    let series = bounds
        .as_deref()
        .map(|b| (b, series.iter().map(Tally::counts).collect()));
    Ok(Some(FunnelReport::assemble(
        at,
        query,
        as_of,
        total.group("(all)".to_owned()),
        listed(engine, groups),
        series,
    )))
}
