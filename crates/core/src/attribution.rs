//! Multi-touch revenue attribution, exactly as ATTRIBUTION.md states it.
//!
//! Every model turns a deal's touches into integer weights (`nums` over their sum), and one
//! allocator ([`allocate`]) turns weights into cents: floors, then the remaining units to the
//! largest remainders, ties to the earlier touch. Role models have exact integer weights;
//! `time_decay` and `markov` weights are real numbers, scaled so the largest is 2^40 and rounded,
//! which an auditor can reproduce from the `explain` output. All arithmetic on cents is integer.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::event::{Data, Money};
use crate::lead::{LeadEvent, LeadFacts, Milestone};
use crate::rules::RulesTimeline;
use crate::time::{Micros, MICROS_PER_DAY};

/// The channel (and campaign) credited with a deal that has no touches.
pub const UNATTRIBUTED: &str = "(none)";
/// Scale of quantised real weights: the largest weight of a deal becomes 2^40.
pub const REAL_WEIGHT_SCALE: f64 = 1_099_511_627_776.0;

/// Every model, in ATTRIBUTION.md's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Model {
    FirstTouch,
    LastTouch,
    LastNonDirect,
    Linear,
    PositionBased,
    JShaped,
    InverseJ,
    UShaped,
    WShaped,
    FullPath,
    TimeDecay,
    Markov,
}

impl Model {
    pub const ALL: [Model; 12] = [
        Model::FirstTouch,
        Model::LastTouch,
        Model::LastNonDirect,
        Model::Linear,
        Model::PositionBased,
        Model::JShaped,
        Model::InverseJ,
        Model::UShaped,
        Model::WShaped,
        Model::FullPath,
        Model::TimeDecay,
        Model::Markov,
    ];
    /// The models whose credits depend on the lead's own events only.
    pub const LEAD_LOCAL: usize = 11;

    pub fn as_str(self) -> &'static str {
        match self {
            Model::FirstTouch => "first_touch",
            Model::LastTouch => "last_touch",
            Model::LastNonDirect => "last_non_direct",
            Model::Linear => "linear",
            Model::PositionBased => "position_based",
            Model::JShaped => "j_shaped",
            Model::InverseJ => "inverse_j",
            Model::UShaped => "u_shaped",
            Model::WShaped => "w_shaped",
            Model::FullPath => "full_path",
            Model::TimeDecay => "time_decay",
            Model::Markov => "markov",
        }
    }

    pub fn parse(text: &str) -> Option<Model> {
        Model::ALL.into_iter().find(|m| m.as_str() == text)
    }

    /// Role weights in thousandths, and the `rest` weight shared by touches holding none of them.
    fn role_units(self) -> Option<(&'static [(Role, u128)], u128)> {
        use Role::*;
        Some(match self {
            Model::FirstTouch => (&[(First, 1000)], 0),
            Model::LastTouch => (&[(Last, 1000)], 0),
            Model::Linear => (&[], 1000),
            Model::PositionBased => (&[(First, 400), (Last, 400)], 200),
            Model::JShaped => (&[(First, 200), (Last, 600)], 200),
            Model::InverseJ => (&[(First, 600), (Last, 200)], 200),
            Model::UShaped => (&[(First, 400), (Lead, 400)], 200),
            Model::WShaped => (&[(First, 300), (Lead, 300), (Opportunity, 300)], 100),
            Model::FullPath => (&[(First, 225), (Lead, 225), (Opportunity, 225), (Close, 225)], 100),
            Model::LastNonDirect | Model::TimeDecay | Model::Markov => return None,
        })
    }
}

/// A position a touch can hold in a deal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Role {
    First,
    Last,
    Lead,
    Opportunity,
    Close,
}

impl Role {
    pub const ALL: [Role; 5] = [Role::First, Role::Last, Role::Lead, Role::Opportunity, Role::Close];
    pub fn as_str(self) -> &'static str {
        match self {
            Role::First => "first",
            Role::Last => "last",
            Role::Lead => "lead",
            Role::Opportunity => "opportunity",
            Role::Close => "close",
        }
    }
}

/// One touch of a deal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DealTouch {
    pub seq: u64,
    pub event_id: String,
    pub occurred_at: Micros,
    pub channel: String,
    pub campaign: Option<String>,
    pub roles: Vec<Role>,
}

/// One touch's weight and credit under one model: `credit_minor` is derived from `num / den`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    pub num: u128,
    pub den: u128,
    pub credit_minor: i64,
}

/// A deal with its touches and their credits under every lead-local model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DealCredits {
    pub close_at: Micros,
    pub seq: u64,
    pub event_id: String,
    pub amount: Money,
    pub lookback_days: f64,
    pub half_life_days: f64,
    /// Milestones as of the close that the `lead` and `opportunity` roles refer to.
    pub mql_at: Option<Micros>,
    pub opportunity_at: Option<Micros>,
    pub sql_at: Option<Micros>,
    /// Ordered by `(occurred_at, seq)`. Empty: the whole amount goes to `(none)`.
    pub touches: Vec<DealTouch>,
    /// `shares[model][touch]` for the first [`Model::LEAD_LOCAL`] models.
    pub shares: Vec<Vec<Share>>,
}

/// Splits `amount` by `nums` (over their sum): floors, then one unit each to the largest
/// remainders, ties to the earlier index. The result sums to `amount` exactly.
pub fn allocate(amount: i64, nums: &[u128]) -> Vec<Share> {
    let den: u128 = nums.iter().sum();
    if den == 0 || amount < 0 {
        return nums
            .iter()
            .map(|&num| Share {
                num,
                den,
                credit_minor: 0,
            })
            .collect();
    }
    let total = amount as u128;
    let mut shares: Vec<Share> = nums
        .iter()
        .map(|&num| Share {
            num,
            den,
            credit_minor: (total * num / den) as i64,
        })
        .collect();
    let given: i64 = shares.iter().map(|s| s.credit_minor).sum();
    let mut order: Vec<usize> = (0..nums.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(total * nums[i] % den), i));
    for &i in order.iter().take((amount - given).max(0) as usize) {
        shares[i].credit_minor += 1;
    }
    shares
}

/// Scales real weights so the largest is [`REAL_WEIGHT_SCALE`] and rounds them.
pub fn quantise(weights: &[f64]) -> Vec<u128> {
    let max = weights.iter().copied().fold(0.0_f64, f64::max);
    if max <= 0.0 || !max.is_finite() {
        return vec![1; weights.len()];
    }
    weights
        .iter()
        .map(|w| (w / max * REAL_WEIGHT_SCALE).round() as u128)
        .collect()
}

fn gcd(a: u128, b: u128) -> u128 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Integer weights of a role model: role units (summed over the roles a touch holds) scaled by
/// the number of `rest` touches, and the rest units for each rest touch; roles nobody holds drop out.
fn role_weights(model: Model, touches: &[DealTouch]) -> Vec<u128> {
    let Some((roles, rest_units)) = model.role_units() else {
        return Vec::new();
    };
    let held: Vec<u128> = touches
        .iter()
        .map(|t| roles.iter().filter(|(r, _)| t.roles.contains(r)).map(|(_, u)| *u).sum())
        .collect();
    let holds = |t: &DealTouch| roles.iter().any(|(r, _)| t.roles.contains(r));
    let rest = touches.iter().filter(|t| !holds(t)).count() as u128;
    let nums: Vec<u128> = touches
        .iter()
        .zip(&held)
        .map(|(t, units)| if holds(t) { units * rest.max(1) } else { rest_units })
        .collect();
    let g = nums.iter().copied().fold(0, gcd);
    nums.into_iter().map(|n| n.checked_div(g).unwrap_or(n)).collect()
}

/// Integer weights of `model` over a deal's touches (not `markov`).
fn weights(model: Model, deal: &DealCredits) -> Vec<u128> {
    let touches = &deal.touches;
    match model {
        Model::LastNonDirect => {
            let pick = touches
                .iter()
                .rposition(|t| t.channel != "direct")
                .unwrap_or(touches.len().saturating_sub(1));
            (0..touches.len()).map(|i| u128::from(i == pick)).collect()
        }
        Model::TimeDecay => {
            let half_life = deal.half_life_days * MICROS_PER_DAY as f64;
            let decay: Vec<f64> = touches
                .iter()
                .map(|t| (-((deal.close_at - t.occurred_at) as f64) / half_life).exp2())
                .collect();
            quantise(&decay)
        }
        Model::Markov => Vec::new(),
        _ => role_weights(model, touches),
    }
}

/// The deal credits of one won close, from the lead's live events (sorted) and its facts.
pub fn deal_credits(
    close: &LeadEvent,
    amount: &Money,
    events: &[LeadEvent],
    facts: &LeadFacts,
    rules: &RulesTimeline,
) -> DealCredits {
    let close_at = close.event.occurred_at;
    let in_force = rules.at(close_at);
    let lookback = (in_force.attribution_lookback_days * MICROS_PER_DAY as f64).round() as Micros;
    let from = close_at.saturating_sub(lookback);
    let mut touches: Vec<DealTouch> = events
        .iter()
        .filter(|e| (from..=close_at).contains(&e.event.occurred_at))
        .filter_map(|e| match &e.event.data {
            Data::Touch { channel, campaign, .. } => Some(DealTouch {
                seq: e.seq,
                event_id: e.event.id.clone(),
                occurred_at: e.event.occurred_at,
                channel: channel.clone(),
                campaign: campaign.clone(),
                roles: Vec::new(),
            }),
            _ => None,
        })
        .collect();
    let mql_at = facts.milestone_at(Milestone::Mql, close_at);
    let opportunity_at = facts.milestone_at(Milestone::Opportunity, close_at);
    let sql_at = facts.milestone_at(Milestone::Sql, close_at);
    let last_by = |t: Option<Micros>| t.and_then(|t| touches.iter().rposition(|x| x.occurred_at <= t));
    let n = touches.len();
    let holders = [
        (Role::First, (n > 0).then_some(0)),
        (Role::Last, n.checked_sub(1)),
        (Role::Lead, last_by(mql_at)),
        (Role::Opportunity, last_by(opportunity_at.or(sql_at))),
        (Role::Close, last_by(Some(close_at))),
    ];
    for (role, holder) in holders {
        if let Some(i) = holder {
            touches[i].roles.push(role);
        }
    }
    let mut deal = DealCredits {
        close_at,
        seq: close.seq,
        event_id: close.event.id.clone(),
        amount: amount.clone(),
        lookback_days: in_force.attribution_lookback_days,
        half_life_days: in_force.time_decay_half_life_days,
        mql_at,
        opportunity_at,
        sql_at,
        touches,
        shares: Vec::new(),
    };
    deal.shares = Model::ALL[..Model::LEAD_LOCAL]
        .iter()
        .map(|m| allocate(amount.amount_minor, &weights(*m, &deal)))
        .collect();
    deal
}

/// The first-order Markov chain over every lead's path, solved exactly.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MarkovChain {
    /// Paths used (leads with at least one touch in their window).
    pub paths: u64,
    pub conversions: u64,
    /// P(conversion) from `start`.
    pub conversion_probability: f64,
    /// `1 − P(conversion | c removed) / P(conversion)` per channel.
    pub removal_effects: BTreeMap<String, f64>,
}

/// The attribution lookback in force at `t`, in micros.
pub fn lookback_micros(rules: &RulesTimeline, t: Micros) -> Micros {
    (rules.at(t).attribution_lookback_days * MICROS_PER_DAY as f64).round() as Micros
}

/// Transition counts between states: `start`, channels, then the absorbing `conversion`, `null`.
struct Transitions {
    channels: Vec<String>,
    counts: BTreeMap<(usize, usize), u64>,
}

impl MarkovChain {
    /// Builds the chain from every lead's path as of `as_of`: won leads use the touches within
    /// lookback of their first won close and end in `conversion`; other leads use the touches
    /// within lookback of `as_of` and end in `null`.
    pub fn build<'a>(
        leads: impl IntoIterator<Item = (&'a [LeadEvent], &'a LeadFacts)>,
        rules: &RulesTimeline,
        as_of: Micros,
    ) -> MarkovChain {
        let mut paths: Vec<(Vec<&str>, bool)> = Vec::new();
        for (events, facts) in leads {
            let deal = facts.deals.iter().find(|d| d.close_at <= as_of);
            let end = deal.map_or(as_of, |d| d.close_at);
            let from = end.saturating_sub(lookback_micros(rules, end));
            let channels: Vec<&str> = events
                .iter()
                .filter(|e| (from..=end).contains(&e.event.occurred_at))
                .filter_map(|e| match &e.event.data {
                    Data::Touch { channel, .. } => Some(channel.as_str()),
                    _ => None,
                })
                .collect();
            if !channels.is_empty() {
                paths.push((channels, deal.is_some()));
            }
        }
        MarkovChain::solve(&paths)
    }

    /// Solves the chain of these paths: each a lead's channels in order, and whether it converted.
    pub fn solve(paths: &[(Vec<&str>, bool)]) -> MarkovChain {
        let channels: Vec<String> = paths
            .iter()
            .flat_map(|(p, _)| p.iter().copied())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(String::from)
            .collect();
        let index = |c: &str| channels.binary_search_by(|x| x.as_str().cmp(c)).map_or(0, |i| i + 1);
        let (conversion, null) = (channels.len() + 1, channels.len() + 2);
        let mut counts = BTreeMap::new();
        for (path, converted) in paths {
            let mut from = 0;
            for c in path {
                let to = index(c);
                *counts.entry((from, to)).or_insert(0) += 1;
                from = to;
            }
            *counts
                .entry((from, if *converted { conversion } else { null }))
                .or_insert(0) += 1;
        }
        let conversions = paths.iter().filter(|(_, c)| *c).count() as u64;
        MarkovChain::from_counts(channels, counts, paths.len() as u64, conversions)
    }

    /// Solves the chain from its transition counts: `channels` sorted by name, states numbered
    /// `0` start, `1..=n` the channels in that order, `n + 1` conversion, `n + 2` null.
    pub fn from_counts(
        channels: Vec<String>,
        counts: BTreeMap<(usize, usize), u64>,
        paths: u64,
        conversions: u64,
    ) -> MarkovChain {
        let transitions = Transitions { channels, counts };
        let base = transitions.conversion_probability(None);
        let removal_effects = transitions
            .channels
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let effect = if base > 0.0 {
                    1.0 - transitions.conversion_probability(Some(i + 1)) / base
                } else {
                    0.0
                };
                (c.clone(), effect)
            })
            .collect();
        MarkovChain {
            paths,
            conversions,
            conversion_probability: base,
            removal_effects,
        }
    }

    /// Integer weights of a deal's touches: its distinct channels in proportion to their removal
    /// effects (equally if all are zero), each channel's share split equally over its touches.
    pub fn weights(&self, touches: &[DealTouch]) -> Vec<u128> {
        let channels: Vec<&str> = touches.iter().map(|t| t.channel.as_str()).collect();
        self.weights_of(&channels)
    }

    /// [`MarkovChain::weights`] of touches given by their channels.
    pub fn weights_of(&self, channels: &[&str]) -> Vec<u128> {
        let mut names: Vec<&str> = channels.to_vec();
        names.sort_unstable();
        names.dedup();
        let effects: Vec<f64> = names
            .iter()
            .map(|c| self.removal_effects.get(*c).copied().unwrap_or(0.0))
            .collect();
        let path: Vec<usize> = channels
            .iter()
            .map(|c| names.binary_search(c).unwrap_or_default())
            .collect();
        markov_weights(&effects, &path)
    }
}

/// Markov weights of a path whose channels are given by rank in name order, with
/// `effects[rank]` each channel's removal effect: a channel's share is its effect over the
/// total of the path's distinct channels (summed in name order; equal shares if that is not
/// positive), split evenly among its touches, then quantised.
pub fn markov_weights(effects: &[f64], path: &[usize]) -> Vec<u128> {
    let mut distinct: Vec<usize> = path.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    let effect = |r: usize| effects.get(r).copied().unwrap_or(0.0).max(0.0);
    let total: f64 = distinct.iter().map(|r| effect(*r)).sum();
    let real: Vec<f64> = path
        .iter()
        .map(|r| {
            let share = if total > 0.0 {
                effect(*r) / total
            } else {
                1.0 / distinct.len() as f64
            };
            share / path.iter().filter(|p| *p == r).count() as f64
        })
        .collect();
    quantise(&real)
}

impl Transitions {
    /// P(reaching `conversion` from `start`), with state `removed` (if any) sent to `null`.
    /// Solves `p = Q p + r` over the transient states by Gaussian elimination with partial
    /// pivoting, in a fixed order: the same bits on every run.
    fn conversion_probability(&self, removed: Option<usize>) -> f64 {
        let n = self.channels.len() + 1;
        let conversion = n;
        let mut out_total = vec![0u64; n];
        for (&(from, _), &c) in &self.counts {
            out_total[from] += c;
        }
        // Rows of (I − Q) | r.
        let mut a = vec![vec![0.0_f64; n + 1]; n];
        for (i, row) in a.iter_mut().enumerate() {
            row[i] = 1.0;
        }
        for (&(from, to), &c) in &self.counts {
            if Some(from) == removed || out_total[from] == 0 {
                continue;
            }
            let p = c as f64 / out_total[from] as f64;
            if to == conversion {
                a[from][n] += p;
            } else if to < n && Some(to) != removed {
                a[from][to] -= p;
            }
        }
        for col in 0..n {
            let pivot = (col..n)
                .max_by(|&x, &y| a[x][col].abs().total_cmp(&a[y][col].abs()).then(y.cmp(&x)))
                .unwrap_or(col);
            a.swap(col, pivot);
            let p = a[col][col];
            if p == 0.0 {
                continue;
            }
            let pivot_row = a[col].clone();
            for (row, values) in a.iter_mut().enumerate() {
                if row != col && values[col] != 0.0 {
                    let factor = values[col] / p;
                    for (x, y) in values[col..].iter_mut().zip(&pivot_row[col..]) {
                        *x -= factor * y;
                    }
                }
            }
        }
        if a[0][0] == 0.0 {
            0.0
        } else {
            a[0][n] / a[0][0]
        }
    }
}

/// A deal's touch shares under `model`, computing markov from `chain`.
pub fn shares_under(deal: &DealCredits, model: Model, chain: &MarkovChain) -> Vec<Share> {
    match model {
        Model::Markov => allocate(deal.amount.amount_minor, &chain.weights(&deal.touches)),
        m => deal.shares[m as usize].clone(),
    }
}
