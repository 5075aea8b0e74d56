//! Won deals' attribution credits as prefix sums in close order: the attribution report over
//! any window is two binary searches per row, not a walk over the window's deals.
//!
//! Every won deal gets a position in `(close_at, lead, deal)` order. Per row, a
//! `(key, currency)` of one breakdown (channel or campaign), the positions of the deals that
//! credit it and the running sums of their credits per model; a window `[from, to)` is a range
//! of positions, and a row's credits over it are the difference of two running sums.
//!
//! The lead-local models' credits are fixed per deal, so their sums are built once per
//! snapshot, on the first question that needs them, and kept for every [`SUM_EVERY`]th deal of
//! a row only: the credits of the deals between a kept sum and a window's end are read back
//! from their leads' extras, where the engine keeps them anyway (at 1 M leads a sum per deal
//! and row took 11 MB a snapshot, a tenth of the service's budget for its indexes). Markov credits depend on the chain, and
//! the chain on `as_of`; their sums are built once per distinct chain (its transition counts,
//! from [`crate::markov::MarkovIndex`]) and kept beside the snapshot for the next question with
//! the same chain. Neither holds an answer: every question still sums its own window.
//!
//! Sums are [`MinorSum`]s (`i128`): with at most 10^15 minor units per deal they cannot
//! overflow, so a window's difference is its exact sum.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use funnel_core::attribution::{allocate, markov_weights, MarkovChain, Model};
use funnel_core::event::MinorSum;
use funnel_core::time::Micros;

use crate::dict::{Sym, NONE};
use crate::facts::Deal;
use crate::markov::Transition;
use crate::state::{Engine, LeadNo};

const MODELS: usize = Model::LEAD_LOCAL;
/// Markov credit sums kept per snapshot: one per distinct chain recently asked about.
const CHAINS_KEPT: usize = 8;
/// The channel of the one entry of a deal without touches.
const BARE: Sym = Sym::MAX;
/// A row keeps the running sums of its first `k × SUM_EVERY` deals; a window's end reads at
/// most `SUM_EVERY − 1` deals' credits back from their leads.
const SUM_EVERY: usize = 8;

/// One row's deals and running sums.
#[derive(Debug, Default)]
pub struct Row {
    pub key: Sym,
    pub currency: Sym,
    /// Positions of the deals crediting this row, increasing.
    at: Vec<u32>,
    /// `sums[k * MODELS + m]`: model `m`'s credits of the first `k × SUM_EVERY` deals of `at`.
    sums: RunningSums,
}

/// Running sums of credits, kept in `i64` when every one fits (a row's whole credits under
/// 2^63 minor units: any real one), else in `i128`. Half the memory of `i128` sums; a window's
/// difference is taken in `i128` either way, so it stays exact.
#[derive(Debug)]
enum RunningSums {
    Narrow(Vec<i64>),
    Wide(Vec<MinorSum>),
}

impl Default for RunningSums {
    fn default() -> RunningSums {
        RunningSums::Narrow(Vec::new())
    }
}

impl RunningSums {
    fn of(sums: Vec<MinorSum>) -> RunningSums {
        let mut narrow = Vec::with_capacity(sums.len());
        for sum in &sums {
            match i64::try_from(*sum) {
                Ok(sum) => narrow.push(sum),
                Err(_) => return RunningSums::Wide(sums),
            }
        }
        RunningSums::Narrow(narrow)
    }

    fn get(&self, i: usize) -> MinorSum {
        match self {
            RunningSums::Narrow(sums) => MinorSum::from(sums[i]),
            RunningSums::Wide(sums) => sums[i],
        }
    }
}

impl Row {
    /// The range of `at` inside positions `[p0, p1)`.
    fn span(&self, p0: u32, p1: u32) -> (usize, usize) {
        (
            self.at.partition_point(|p| *p < p0),
            self.at.partition_point(|p| *p < p1),
        )
    }
}

/// Deals and the lead-local models' credit sums of one breakdown.
#[derive(Debug, Default)]
pub struct CreditSums {
    /// Close time per position, sorted.
    closes: Vec<Micros>,
    /// Per position, the deal's lead and its index among the lead's deals.
    deals: Vec<(LeadNo, u32)>,
    /// What the Markov credits of each deal need, flat: its amount, and its touches' channels
    /// and rows at `touches[starts[p]..starts[p + 1]]` (a deal without touches: one entry,
    /// channel [`BARE`], its "none" row).
    amounts: Vec<i64>,
    starts: Vec<u32>,
    touches: Vec<(Sym, u32)>,
    rows: Vec<Row>,
    /// Per currency: positions of its deals and running sums of their amounts.
    totals: Vec<(Sym, Vec<u32>, Vec<MinorSum>)>,
}

/// A window's answer from the sums: per row with a deal in the window, its credits.
pub struct WindowCredits<'a> {
    pub rows: Vec<(&'a Row, [MinorSum; 12])>,
    /// `(currency, deals, amount)`.
    pub totals: Vec<(Sym, u64, MinorSum)>,
}

/// Model `m`'s credit of `deal` to a row: its credits to `touches` (indexes of the deal's
/// touches), or the whole amount for a deal without touches.
fn row_credit(deal: &Deal, touches: &[usize], m: usize) -> MinorSum {
    if touches.is_empty() {
        return deal.amount_minor.into();
    }
    touches
        .iter()
        .map(|t| MinorSum::from(deal.credits[m * deal.touches.len() + t]))
        .sum()
}

/// The rows a deal credits under breakdown `campaign` (else channel), each with the indexes of
/// its touches: a deal without touches credits the "none" row with its whole amount.
fn deal_rows(deal: &Deal, campaign: bool) -> Vec<(Sym, Vec<usize>)> {
    let mut rows: Vec<(Sym, Vec<usize>)> = Vec::new();
    if deal.touches.is_empty() {
        rows.push((NONE, Vec::new()));
    }
    for (i, (channel, camp)) in deal.touches.iter().enumerate() {
        let key = if campaign { *camp } else { *channel };
        match rows.iter_mut().find(|(k, _)| *k == key) {
            Some((_, touches)) => touches.push(i),
            None => rows.push((key, vec![i])),
        }
    }
    rows
}

impl CreditSums {
    pub fn build(engine: &Engine, campaign: bool) -> CreditSums {
        let _span = tracing::debug_span!("credit_sums", campaign).entered();
        // A lead with several deals is listed once per deal: each lead's extras decoded once.
        let mut nos: Vec<LeadNo> = engine.index().deals.items().into_iter().map(|(_, no)| no).collect();
        nos.sort_unstable();
        nos.dedup();
        let mut deals: Vec<(Micros, LeadNo, usize, Deal)> = Vec::new();
        for no in nos {
            let extra = engine.lead(no).and_then(|s| s.extra()).unwrap_or_default();
            let lead_deals = extra.deals.into_vec().into_iter().enumerate();
            deals.extend(lead_deals.map(|(i, d)| (d.close_at, no, i, d)));
        }
        deals.sort_unstable_by_key(|(close, no, i, _)| (*close, *no, *i));
        let mut sums = CreditSums::default();
        // Each row's kept running sums and, last, the one growing; made `RunningSums` at the
        // end.
        let mut running: Vec<Vec<MinorSum>> = Vec::new();
        let mut row_of: HashMap<(Sym, Sym), usize> = HashMap::new();
        let mut total_of: HashMap<Sym, usize> = HashMap::new();
        for (position, (close, no, index, deal)) in deals.iter().enumerate() {
            let close = *close;
            let position = position as u32;
            sums.closes.push(close);
            sums.deals.push((*no, *index as u32));
            sums.amounts.push(deal.amount_minor);
            sums.starts.push(sums.touches.len() as u32);
            let t = *total_of.entry(deal.currency).or_insert_with(|| {
                sums.totals.push((deal.currency, Vec::new(), vec![0]));
                sums.totals.len() - 1
            });
            let (_, at, amounts) = &mut sums.totals[t];
            at.push(position);
            amounts.push(amounts.last().copied().unwrap_or(0) + MinorSum::from(deal.amount_minor));
            let first = sums.touches.len();
            sums.touches.extend(deal.touches.iter().map(|(c, _)| (*c, 0)));
            for (key, touches) in deal_rows(deal, campaign) {
                let r = *row_of.entry((key, deal.currency)).or_insert_with(|| {
                    sums.rows.push(Row {
                        key,
                        currency: deal.currency,
                        at: Vec::new(),
                        sums: RunningSums::default(),
                    });
                    // The kept sum of no deals, then the one growing.
                    running.push(vec![0; 2 * MODELS]);
                    sums.rows.len() - 1
                });
                if touches.is_empty() {
                    sums.touches.push((BARE, r as u32));
                }
                for t in &touches {
                    sums.touches[first + t].1 = r as u32;
                }
                let row = &mut sums.rows[r];
                row.at.push(position);
                let row_sums = &mut running[r];
                let base = row_sums.len() - MODELS;
                for (m, sum) in row_sums[base..].iter_mut().enumerate() {
                    *sum += row_credit(deal, &touches, m);
                }
                if row.at.len().is_multiple_of(SUM_EVERY) {
                    row_sums.extend_from_within(base..);
                }
            }
        }
        for (row, mut running) in sums.rows.iter_mut().zip(running) {
            // The running sums past the last kept one are read back when asked.
            running.truncate((row.at.len() / SUM_EVERY + 1) * MODELS);
            row.sums = RunningSums::of(running);
        }
        sums.starts.push(sums.touches.len() as u32);
        sums
    }

    /// How many won deals and rows.
    pub fn size(&self) -> (usize, usize) {
        (self.closes.len(), self.rows.len())
    }

    /// The positions of deals closed in `[lo, hi)`.
    fn positions(&self, lo: Micros, hi: Micros) -> (u32, u32) {
        let p0 = self.closes.partition_point(|t| *t < lo);
        let p1 = self.closes.partition_point(|t| *t < hi).max(p0);
        (p0 as u32, p1 as u32)
    }

    /// Row `r`'s credits per model from its first `j` deals: the last kept sum, and the
    /// credits of the deals after it, read back from their leads (`engine`: the snapshot these
    /// sums were built from) once per question (`read`, by position: a deal credits a few rows).
    fn prefix(&self, engine: &Engine, read: &mut HashMap<u32, Option<Deal>>, r: usize, j: usize) -> [MinorSum; MODELS] {
        let row = &self.rows[r];
        let kept = j / SUM_EVERY;
        let mut sums: [MinorSum; MODELS] = std::array::from_fn(|m| row.sums.get(kept * MODELS + m));
        for &position in &row.at[kept * SUM_EVERY..j] {
            let p = position as usize;
            let entries = &self.touches[self.starts[p] as usize..self.starts[p + 1] as usize];
            if let [(BARE, _)] = entries {
                sums.iter_mut().for_each(|sum| *sum += MinorSum::from(self.amounts[p]));
                continue;
            }
            let deal = read.entry(position).or_insert_with(|| {
                let (no, index) = self.deals[p];
                let extra = engine.lead(no).and_then(|slot| slot.extra()).unwrap_or_default();
                let deal = extra.deals.into_vec().into_iter().nth(index as usize);
                debug_assert!(deal.is_some(), "the sums' snapshot holds lead {no}'s deal {index}");
                deal
            });
            let Some(deal) = deal else {
                continue;
            };
            let touches: Vec<usize> = (entries.iter().enumerate())
                .filter(|(_, (_, row))| *row as usize == r)
                .map(|(t, _)| t)
                .collect();
            for (m, sum) in sums.iter_mut().enumerate() {
                *sum += row_credit(deal, &touches, m);
            }
        }
        sums
    }

    /// Credits per row and totals per currency of the deals closed in `[lo, hi)`; Markov
    /// credits (index 11) from `markov` if given. `engine` is the snapshot the sums were built
    /// from.
    pub fn window<'a>(
        &'a self,
        engine: &Engine,
        lo: Micros,
        hi: Micros,
        markov: Option<&MarkovSums>,
    ) -> WindowCredits<'a> {
        let (p0, p1) = self.positions(lo, hi);
        let mut rows = Vec::new();
        let mut read = HashMap::new();
        for (r, row) in self.rows.iter().enumerate() {
            let (j0, j1) = row.span(p0, p1);
            if j0 == j1 {
                continue;
            }
            let from = self.prefix(engine, &mut read, r, j0);
            let to = self.prefix(engine, &mut read, r, j1);
            let mut credits: [MinorSum; 12] = [0; 12];
            for (m, credit) in credits.iter_mut().enumerate().take(MODELS) {
                *credit = to[m] - from[m];
            }
            if let Some(markov) = markov {
                let s = &markov.sums[r];
                credits[Model::Markov as usize] = s.get(j1) - s.get(j0);
            }
            rows.push((row, credits));
        }
        let totals = self
            .totals
            .iter()
            .filter_map(|(currency, at, amounts)| {
                let (j0, j1) = (at.partition_point(|p| *p < p0), at.partition_point(|p| *p < p1));
                (j1 > j0).then(|| (*currency, (j1 - j0) as u64, amounts[j1] - amounts[j0]))
            })
            .collect();
        WindowCredits { rows, totals }
    }
}

/// Markov credit running sums under one chain, per row of a [`CreditSums`] (same positions).
#[derive(Debug)]
pub struct MarkovSums {
    sums: Vec<RunningSums>,
}

impl MarkovSums {
    fn build(engine: &Engine, credit_sums: &CreditSums, chain: &MarkovChain) -> MarkovSums {
        let _span = tracing::debug_span!("markov_sums").entered();
        let dict = engine.dict();
        // Every symbol ranked by name, with its channel's removal effect.
        let mut by_name: Vec<Sym> = (0..dict.len() as Sym).collect();
        by_name.sort_by(|a, b| dict.name(*a).cmp(dict.name(*b)));
        let mut rank = vec![0usize; by_name.len()];
        for (r, sym) in by_name.iter().enumerate() {
            rank[*sym as usize] = r;
        }
        let effects: Vec<f64> = by_name
            .iter()
            .map(|sym| chain.removal_effects.get(dict.name(*sym)).copied().unwrap_or(0.0))
            .collect();
        let mut sums: Vec<Vec<MinorSum>> = vec![vec![0]; credit_sums.rows.len()];
        let mut path: Vec<usize> = Vec::new();
        for (p, amount) in credit_sums.amounts.iter().enumerate() {
            let touches = &credit_sums.touches[credit_sums.starts[p] as usize..credit_sums.starts[p + 1] as usize];
            if let [(BARE, row)] = touches {
                let s = &mut sums[*row as usize];
                s.push(s.last().copied().unwrap_or(0) + MinorSum::from(*amount));
                continue;
            }
            path.clear();
            path.extend(touches.iter().map(|(c, _)| rank.get(*c as usize).copied().unwrap_or(0)));
            let shares = allocate(*amount, &markov_weights(&effects, &path));
            // One running sum per row the deal credits, at its first touch in that row.
            for (i, (_, row)) in touches.iter().enumerate() {
                if touches[..i].iter().any(|(_, r)| r == row) {
                    continue;
                }
                let credit: MinorSum = touches
                    .iter()
                    .zip(&shares)
                    .filter(|((_, r), _)| r == row)
                    .map(|(_, share)| MinorSum::from(share.credit_minor))
                    .sum();
                let s = &mut sums[*row as usize];
                s.push(s.last().copied().unwrap_or(0) + credit);
            }
        }
        MarkovSums {
            sums: sums.into_iter().map(RunningSums::of).collect(),
        }
    }
}

/// A chain's identity: its transition counts.
type ChainKey = Vec<(Transition, u64)>;
type Shared<T> = Arc<OnceLock<Arc<T>>>;

/// What a snapshot builds on demand for attribution, shared by every question asked of it.
#[derive(Debug, Default)]
pub struct Derived {
    /// By channel, by campaign.
    credits: [OnceLock<Arc<CreditSums>>; 2],
    markov: Mutex<Vec<(bool, ChainKey, Shared<MarkovSums>)>>,
}

impl Derived {
    pub fn credit_sums(&self, engine: &Engine, campaign: bool) -> Arc<CreditSums> {
        Arc::clone(self.credits[usize::from(campaign)].get_or_init(|| Arc::new(CreditSums::build(engine, campaign))))
    }

    /// The Markov credit sums under `chain`, whose transition counts are `key`.
    pub fn markov_sums(
        &self,
        engine: &Engine,
        credit_sums: &CreditSums,
        campaign: bool,
        key: ChainKey,
        chain: &MarkovChain,
    ) -> Arc<MarkovSums> {
        let cell = {
            let mut kept = self.markov.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            match kept.iter().find(|(c, k, _)| *c == campaign && *k == key) {
                Some((_, _, cell)) => Arc::clone(cell),
                None => {
                    if kept.len() >= CHAINS_KEPT {
                        kept.remove(0);
                    }
                    let cell: Shared<MarkovSums> = Arc::default();
                    kept.push((campaign, key, Arc::clone(&cell)));
                    cell
                }
            }
        };
        Arc::clone(cell.get_or_init(|| Arc::new(MarkovSums::build(engine, credit_sums, chain))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use funnel_core::event::{Data, Event, Money, Outcome, Team};
    use funnel_ledger::{Candidate, Ledger};
    use proptest::prelude::*;

    const HOUR: i64 = 3_600_000_000;
    const BASE: i64 = 1_772_323_200_000_000;

    /// 300 leads, each with two or three touches over four channels and a won deal, closing an
    /// hour apart: rows with far more deals than [`SUM_EVERY`].
    fn engine_with_deals() -> Arc<Engine> {
        let dir = std::env::temp_dir().join(format!("funnel-engine-credits-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ledger = Ledger::open(&dir).expect("ledger");
        let channels = ["webinar", "paid_search", "direct", "referral"];
        let mut events = Vec::new();
        for i in 0..300i64 {
            let lead = Some(format!("L{i}"));
            let at = BASE + i * HOUR;
            for t in 0..(2 + i % 2) {
                events.push(Event {
                    id: format!("t{i}-{t}"),
                    lead_id: lead.clone(),
                    account_id: None,
                    occurred_at: at - (3 - t) * HOUR / 4,
                    producer: None,
                    data: Data::Touch {
                        channel: channels[((i + t * (i % 3)) % 4) as usize].into(),
                        campaign: Some(format!("c{}", (i + t) % 5)),
                        content: None,
                        team: Team::Marketing,
                    },
                });
            }
            events.push(Event {
                id: format!("w{i}"),
                lead_id: lead,
                account_id: None,
                occurred_at: at,
                producer: None,
                data: Data::Close {
                    outcome: Outcome::Won,
                    amount: Some(Money {
                        amount_minor: 1_000 + i * 7_919,
                        currency: if i % 7 == 0 { "EUR" } else { "USD" }.into(),
                    }),
                    reason: None,
                    opportunity_id: None,
                },
            });
        }
        let candidates: Vec<Candidate> = events.iter().map(Candidate::direct).collect();
        ledger.append_batch(&candidates, 0).expect("append");
        let engine = crate::replay(&ledger, None, |_| {}).expect("replay");
        drop(ledger);
        let _ = std::fs::remove_dir_all(&dir);
        engine
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// A window's credits per row, from kept sums and the deals read back past them, are
        /// the sums of its deals' own credits over the row's touches, by channel and by
        /// campaign.
        #[test]
        fn a_windows_credits_are_its_deals_credits(from in 0i64..320, hours in 0i64..320, campaign in any::<bool>()) {
            static ENGINE: std::sync::OnceLock<Arc<Engine>> = std::sync::OnceLock::new();
            let engine = ENGINE.get_or_init(engine_with_deals);
            let (lo, hi) = (BASE + (from - 10) * HOUR, BASE + (from - 10 + hours) * HOUR);
            let mut expected: HashMap<(Sym, Sym), [MinorSum; MODELS]> = HashMap::new();
            for no in 0..engine.leads.len() as LeadNo {
                let extra = engine.lead(no).and_then(|s| s.extra()).unwrap_or_default();
                for deal in extra.deals.iter().filter(|d| d.close_at >= lo && d.close_at < hi) {
                    for (t, (channel, camp)) in deal.touches.iter().enumerate() {
                        let row = expected.entry((if campaign { *camp } else { *channel }, deal.currency)).or_default();
                        for (m, sum) in row.iter_mut().enumerate() {
                            *sum += MinorSum::from(deal.credit(Model::ALL[m], t));
                        }
                    }
                }
            }
            let sums = engine.derived().credit_sums(engine, campaign);
            let got: HashMap<(Sym, Sym), [MinorSum; MODELS]> = sums
                .window(engine, lo, hi, None)
                .rows
                .into_iter()
                .map(|(row, credits)| ((row.key, row.currency), std::array::from_fn(|m| credits[m])))
                .collect();
            prop_assert!(sums.rows.iter().any(|r| r.at.len() > 2 * SUM_EVERY));
            prop_assert_eq!(got, expected);
        }
    }

    /// Sums that fit in `i64` are kept narrow, any that does not keeps them all wide, and every
    /// difference is the exact `i128` one either way.
    #[test]
    fn running_sums_are_exact_narrow_or_wide() {
        let small: Vec<MinorSum> = vec![0, 7, 1_000_000_000_000_000, i64::MAX.into()];
        let big: Vec<MinorSum> = vec![0, 5, MinorSum::from(i64::MAX) + 10, MinorSum::from(i64::MAX) * 3];
        for (sums, narrow) in [(small, true), (big, false)] {
            let kept = RunningSums::of(sums.clone());
            assert_eq!(matches!(kept, RunningSums::Narrow(_)), narrow);
            for j0 in 0..sums.len() {
                for j1 in j0..sums.len() {
                    assert_eq!(kept.get(j1) - kept.get(j0), sums[j1] - sums[j0]);
                }
            }
        }
    }
}
